"""The report's overload section: refuse, degrade and cascade past capacity, as a table and a plot.

Reads only the run's records (``results.json``): the ``capacity`` cell and the open-loop
``overload`` cells written by the sweep (see :mod:`loadtests.overload`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from loadtests.labels import NA, fmt
from loadtests.overload import (
    LOAD_FACTORS,
    MODE_TITLES,
    MODES,
    client_limited,
    cpu_per_answered_row,
    overload_cells,
)
from loadtests.results import is_noisy

OVERLOAD_PLOT = "overload.png"
DEGRADE_TARGET_SHARE = 0.99
"""Issue 15: at 3x capacity with degrade on, at least this share answered within the budget,"""
DEGRADE_TARGET_RECALL_GAP = 0.03
"""... and effective recall within this of the full model's recall at 1x load."""
CASCADE_TARGET_CPU_RATIO = 2.0
"""Cascade: at least this many times fewer server CPU-seconds per row than the full model,"""
CASCADE_TARGET_PR_AUC_GAP = 0.005
"""... with PR-AUC within this of it."""


def _pct(value: Any, digits: int = 1) -> str:
    return NA if value is None else f"{float(value) * 100:.{digits}f}%"


def _acc(cell: dict[str, Any], key: str) -> float | None:
    value = ((cell.get("overload") or {}).get("accuracy") or {}).get(key)
    return None if value is None else float(value)


def _mix(cell: dict[str, Any]) -> str:
    """'full 61%, k62 39%' from the X-Model-Variant counts of the 200 answers."""
    counts = (cell.get("overload") or {}).get("variants") or {}
    total = sum(counts.values())
    if not total:
        return NA
    parts = sorted(counts.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{'(no header)' if k == '-' else k} {v / total:.0%}" for k, v in parts)
    escalated = ((cell.get("server") or {}).get("cascade_rows") or {}).get("full")
    kept = ((cell.get("server") or {}).get("cascade_rows") or {}).get("variant")
    if escalated is not None and kept is not None and escalated + kept > 0:
        text += f" (escalated to full: {escalated / (escalated + kept):.0%})"
    return text


def _flags(cell: dict[str, Any]) -> str:
    reasons = client_limited(cell)
    flags = [f"client limit ({'; '.join(reasons)})"] if reasons else []
    if is_noisy(cell):
        flags.append("noisy")
    return "; ".join(flags) or NA


def _find(cells: list[dict[str, Any]], mode: str, factor: float) -> dict[str, Any] | None:
    for c in cells:
        load = float(c.get("load_factor") or 0.0)
        if c.get("overload_mode") == mode and math.isclose(load, factor):
            return c
    return None


def _targets(cells: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, checked against the measured cells (a missed one says so)."""
    lines = []
    base = _find(cells, "refuse", 1.0)
    base_recall = _acc(base, "recall") if base else None
    top = max(LOAD_FACTORS)
    degrade = _find(cells, "degrade", top)
    if degrade is not None:
        ov = degrade["overload"]
        share = ov.get("answered_in_budget_share")
        recall = ov.get("effective_recall")
        met_share = share is not None and share >= DEGRADE_TARGET_SHARE
        gap = None if recall is None or base_recall is None else base_recall - recall
        met_recall = gap is not None and gap <= DEGRADE_TARGET_RECALL_GAP
        lines.append(
            f"- **Degrade at {top:g}x capacity**: {_pct(share)} answered within the budget "
            f"(target >= {DEGRADE_TARGET_SHARE:.0%}: {'met' if met_share else 'missed'}); "
            f"effective recall {fmt(recall, 3)} against the full model's recall "
            f"{fmt(base_recall, 3)} at 1x (refuse only), a gap of {fmt(gap, 3)} "
            f"(target <= {DEGRADE_TARGET_RECALL_GAP:g}: {'met' if met_recall else 'missed'})."
        )
    refuse_top = _find(cells, "refuse", top)
    if refuse_top is not None:
        ov = refuse_top["overload"]
        lines.append(
            f"- **Refuse only at {top:g}x**: {_pct(ov.get('answered_in_budget_share'))} answered "
            f"within the budget, effective recall {fmt(ov.get('effective_recall'), 3)}."
        )
    # Compared where both modes answer everything (0.5x), so CPU per row is like for like.
    for factor in (0.5, 1.0):
        cascade, full = _find(cells, "cascade", factor), _find(cells, "refuse", factor)
        if cascade is None or full is None:
            continue
        cpu_c, cpu_f = cpu_per_answered_row(cascade), cpu_per_answered_row(full)
        ratio = cpu_f / cpu_c if cpu_c and cpu_f else None
        pr_c, pr_f = _acc(cascade, "pr_auc"), _acc(full, "pr_auc")
        gap = None if pr_c is None or pr_f is None else pr_f - pr_c
        lines.append(
            f"- **Cascade at {factor:g}x** (same traffic as refuse only at {factor:g}x): "
            f"{fmt(ratio, 2)}x fewer server CPU-seconds per answered row "
            f"(target >= {CASCADE_TARGET_CPU_RATIO:g}x: "
            f"{'met' if ratio is not None and ratio >= CASCADE_TARGET_CPU_RATIO else 'missed'}); "
            f"PR-AUC {fmt(pr_c, 4)} against {fmt(pr_f, 4)} (gap {fmt(gap, 4)}, target <= "
            f"{CASCADE_TARGET_PR_AUC_GAP:g}: "
            f"{'met' if gap is not None and gap <= CASCADE_TARGET_PR_AUC_GAP else 'missed'})."
        )
        break
    return [*lines, ""] if lines else []


def overload_section(doc: dict[str, Any]) -> list[str]:
    """``## Overload: refuse, degrade, cascade``: the table, the targets, the plot."""
    cells: list[dict[str, Any]] = doc.get("cells", [])
    chosen = overload_cells(cells)
    failed = [c for c in cells if c.get("group") == "overload" and c.get("failed")]
    if not chosen and not failed:
        return []
    model = (chosen or failed)[0].get("model", "?")
    capacity = next(
        (c for c in reversed(cells) if c.get("group") == "capacity" and c.get("model") == model),
        None,
    )
    budget = (chosen[0].get("budget_ms") if chosen else None) or 50.0
    per_request = (chosen[0].get("overload") or {}).get("rows_per_request") if chosen else None
    rows = fmt(per_request, 0) if per_request else "?"
    lines = ["## Overload: refuse, degrade, cascade", ""]
    cap_text = "not measured"
    if capacity and capacity.get("capacity_rps"):
        p99 = fmt((capacity.get("latency_ms") or {}).get("p99"), 1)
        cap_text = (
            f"{fmt(capacity.get('capacity_rps'), 0)} req/s ({capacity.get('capacity_how')}; "
            f"closed loop, {capacity.get('users')} users, p99 {p99} ms)"
        )
    lines += [
        f"Open loop on `{model}`, cache off: requests of {rows} hold-out rows arrive at a "
        "constant rate whatever the answers, at multiples of the full model's capacity measured "
        "first "
        f"({cap_text}). Each request carries a {budget:g} ms budget (`X-Latency-Budget-Ms`, also "
        "sent as `X-Deadline-Ms`). _Refuse only_: the server as it ships (503 when the queue is "
        "full, 504 past the deadline); _degrade_: `TABSERVE_DEGRADE_OBJECTIVE_MS` (a cheaper "
        "variant answers when the full model would miss the budget); _cascade_: "
        "`TABSERVE_CASCADE_MODELS` (the card's variant answers confident rows, the full model "
        "the rest). Shares are of requests; PR-AUC, F1 and effective recall of rows.",
        "",
    ]
    facts = (doc.get("models") or {}).get(model) or {}
    present = {c.get("overload_mode") for c in chosen}
    for mode in MODES:
        if mode in present:
            continue
        if mode == "degrade" and not facts.get("variants"):
            why = "the model has no ladder of variants in its card"
        elif mode == "cascade" and not facts.get("cascade"):
            why = "the model's card records no cascade"
        else:
            why = "not in this run"
        lines += [f"- {MODE_TITLES[mode]}: not measured ({why}).", ""]
    rows = []
    for c in chosen:
        ov = c.get("overload") or {}
        cpu_row = cpu_per_answered_row(c)
        rows.append(
            [
                MODE_TITLES.get(str(c.get("overload_mode")), str(c.get("overload_mode"))),
                NA if c.get("load_factor") is None else f"{c.get('load_factor')}x",
                f"{fmt(ov.get('offered_rps'), 0)} ({fmt(ov.get('target_rps'), 0)})",
                fmt(ov.get("answered_rps"), 0),
                _pct(ov.get("answered_in_budget_share")),
                f"{_pct(ov.get('rate_503'))} / {_pct(ov.get('rate_504'))} / "
                f"{_pct(ov.get('rate_no_answer'))}",
                fmt((ov.get("latency_ok_ms") or {}).get("p99"), 1),
                fmt(_acc(c, "pr_auc"), 4),
                fmt(_acc(c, "f1"), 4),
                fmt(ov.get("effective_recall"), 3),
                _mix(c),
                fmt(None if cpu_row is None else cpu_row * 1e6, 0),
                f"{fmt((c.get('cpu') or {}).get('locust_pct'), 0)}%, "
                f"{fmt((ov.get('lag_ms') or {}).get('p99'), 1)} ms",
                _flags(c),
            ]
        )
    header = [
        "mode",
        "load",
        "offered req/s (target)",
        "answered req/s",
        "answered within budget",
        "503 / 504 / no answer",
        "p99 ms of answered",
        "PR-AUC (answered)",
        "F1 (answered)",
        "effective recall",
        "variant mix",
        "server CPU us / answered row",
        "Locust CPU, send lag p99",
        "flags",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [f"| FAILED: {str(c['failed'])[:100]} |" + " |" * (len(header) - 1) for c in failed]
    lines.append("")
    lines += _targets(chosen)
    lines += [
        f"![effective recall and answered share vs offered load]({OVERLOAD_PLOT})",
        "",
        "Latency counts from the moment a request was due in the arrival schedule (a client "
        "that falls behind cannot hide the server's queue); _answered within budget_: status "
        f"200 and that latency <= {budget:g} ms, over all requests sent; PR-AUC and F1 of the "
        "rows answered (200), F1 from each answer's own label (the threshold of whichever "
        "model or variant answered); _effective recall_: positives answered in time and called "
        "positive, over all positives sent (no answer in time is a miss); _variant mix_: the "
        "`X-Model-Variant` header of the 200 answers; server CPU per answered row: the server "
        "process's CPU seconds during the cell over its 200 answers. _Client limit_: the client "
        "offered under 95% of the target rate, its send lag p99 passed 5 ms, or Locust used "
        ">= 90% of its core; such a cell measured the load generator as much as the server.",
        "",
    ]
    return lines


def plot_overload(plt: Any, doc: dict[str, Any], path: Path) -> list[str] | None:
    """Answered share and effective recall against offered load, one line per mode; None (no
    file) when the run has no overload cells."""
    cells = overload_cells(doc.get("cells", []))
    if not cells:
        return None
    # x: the multiple of the measured capacity; the target rate when a cell was given a rate
    by_factor = all(c.get("load_factor") is not None for c in cells)

    def x_of(c: dict[str, Any]) -> float:
        return float(c["load_factor"] if by_factor else c.get("target_rps") or 0.0)

    fig, (ax_share, ax_recall) = plt.subplots(1, 2, figsize=(11, 4.4))
    limited_x: list[float] = []
    limited_y: list[float] = []
    for i, mode in enumerate(MODES):
        own = [c for c in cells if c.get("overload_mode") == mode]
        if not own:
            continue
        xs = [x_of(c) for c in own]
        share = [float((c["overload"] or {}).get("answered_in_budget_share") or 0.0) for c in own]
        recall = [float((c["overload"] or {}).get("effective_recall") or 0.0) for c in own]
        style = {"marker": "o", "color": f"C{i}", "label": MODE_TITLES[mode]}
        ax_share.plot(xs, share, **style)
        ax_recall.plot(xs, recall, **style)
        for c, x, y1, y2 in zip(own, xs, share, recall, strict=True):
            if client_limited(c):
                limited_x += [x, x]
                limited_y += [y1, y2]
                for ax, y in ((ax_share, y1), (ax_recall, y2)):
                    ax.scatter(x, y, s=170, facecolors="none", edgecolors="black", zorder=4)
    base = _find(cells, "refuse", 1.0)
    base_recall = _acc(base, "recall") if base else None
    if base_recall is not None:
        ax_recall.axhline(
            base_recall,
            color="0.4",
            linestyle="--",
            linewidth=1.0,
            label=f"full model's recall at 1x ({base_recall:.3f})",
        )
    budget = float(cells[0].get("budget_ms") or 50.0)
    ax_share.axhline(DEGRADE_TARGET_SHARE, color="C3", linestyle=":", linewidth=1.0)
    ax_share.annotate(
        f"target {DEGRADE_TARGET_SHARE:.0%}",
        (0.01, DEGRADE_TARGET_SHARE),
        xycoords=("axes fraction", "data"),
        textcoords="offset points",
        xytext=(2, -10),
        fontsize=8,
        color="C3",
    )
    factors = sorted({x_of(c) for c in cells})
    for ax, title in (
        (ax_share, f"share of requests answered within {budget:g} ms"),
        (ax_recall, "effective recall (no answer in time = missed)"),
    ):
        if by_factor:
            ax.set_xticks(factors, [f"{f:g}x" for f in factors])
            ax.set_xlabel("offered load (multiple of the full model's measured capacity)")
        else:
            ax.set_xlabel("offered load (requests/s)")
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
    ax_share.set_ylabel("share of requests sent")
    ax_recall.set_ylabel("positives caught in time / positives sent")
    if limited_x:
        ax_share.scatter([], [], s=170, facecolors="none", edgecolors="black", label="client limit")
    ax_share.legend(fontsize=8, loc="lower left")
    ax_recall.legend(fontsize=8, loc="lower left")
    model = cells[0].get("model", "?")
    fig.suptitle(f"{model} past capacity, open loop: refuse only vs degrade vs cascade")
    fig.tight_layout()
    from loadtests.plots import _save

    return _save(plt, fig, path)


__all__ = ["OVERLOAD_PLOT", "overload_section", "plot_overload"]
