"""The report's plots: accuracy against latency (with the budget's panel), throughput, and
latency per cell. Human labels, log axes ticked at 1-2-5, noisy cells hatched, and the cells where
Locust hit its one-core ceiling marked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from loadtests.budget import Budget, Recommendation, recommend
from loadtests.labels import GROUP_TITLES, cell_label, noisy_verdict
from loadtests.results import (
    LOCUST_BOUND_PCT,
    NOISY_OTHERS_PCT,
    dataset_headline,
    is_noisy,
    locust_bound,
    ok_cells,
    pareto_models,
    tradeoff_points,
)
from loadtests.scoring import Headline

PLOTS = ("tradeoff.png", "throughput.png", "latency.png")


NOISY_HATCH = "////"
_LOG_STEPS = (1.0, 2.0, 5.0)


def log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks covering [low, high] (positive), one below and one above: 0.2, 0.5, 1, ..."""
    low, high = max(low, 1e-6), max(high, low)
    ticks: list[float] = []
    exponent = math.floor(math.log10(low))
    while True:
        for step in _LOG_STEPS:
            tick = step * 10.0**exponent
            if tick <= low:
                ticks = [tick]  # the last tick at or below low
            elif not ticks or ticks[-1] < high:
                ticks.append(tick)
        if ticks and ticks[-1] >= high:
            return [float(f"{t:.6g}") for t in ticks]
        exponent += 1


def _tick_text(value: float) -> str:
    return f"{value:g}"


def _set_log_axis(ax: Any, axis: str, values: list[float]) -> None:
    """A log axis labelled at 1-2-5 steps (0.5, 1, 2, 5, 10 ...), minor ticks unlabelled."""
    from matplotlib.ticker import FixedLocator, NullFormatter

    positive = [v for v in values if v > 0] or [1.0]
    ticks = log_ticks(min(positive), max(positive))
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(FixedLocator(ticks))
    target.set_ticklabels([_tick_text(t) for t in ticks])
    target.set_minor_formatter(NullFormatter())
    (ax.set_xlim if axis == "x" else ax.set_ylim)(ticks[0], ticks[-1])


def _plot_tradeoff(plt: Any, cells: list[dict[str, Any]], budget: Budget, path: Path) -> list[str]:
    """Accuracy vs latency: first at the budget's rate (the answer), then per concurrency."""
    recs = [r for r in recommend(cells, budget) if r.ranked]
    points = tradeoff_points(cells)
    fronts = pareto_models(cells)
    panels: list[tuple[str, Any]] = [("budget", rec) for rec in recs]
    panels += [("closed", key) for key in sorted(points)]
    if not panels:
        panels = [("empty", None)]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.8 * ncols, 4.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (kind, key) in zip(axes.flat, panels, strict=False):
        if kind == "budget":
            _budget_panel(ax, key, budget)
        elif kind == "closed":
            _closed_loop_panel(ax, points[key], fronts.get(key, []), key, cells)
        else:
            ax.set_title("(no data)")
    fig.suptitle(
        "accuracy vs latency (upper left is better: error axes run downwards; hatched = noisy cell)"
    )
    fig.tight_layout()
    return _save(plt, fig, path)


def _budget_panel(ax: Any, rec: Recommendation, budget: Budget) -> None:
    limit = budget.limit_ms
    shown = [r for r in rec.ranked if r.accuracy is not None and r.verdict.latency_ms is not None]
    labels: list[tuple[str, float, float, bool]] = []
    lats = [r.verdict.latency_ms or 0.0 for r in shown]
    right = max([limit, *lats]) * 1.25
    ax.axvspan(limit, right, color="0.85", zorder=0, label="over the latency limit")
    ax.axvline(limit, color="C3", linestyle="--", label=f"limit: {budget.key} {limit:g} ms")
    for r in shown:
        noisy = noisy_verdict(r)
        chosen = r is rec.choice
        ax.scatter(
            r.verdict.latency_ms,
            r.accuracy,
            s=170 if chosen else 50,
            marker="*" if chosen else "o",
            color="C2" if r.verdict.fits else "0.45",
            edgecolors="black",
            hatch=NOISY_HATCH if noisy else None,
            zorder=3,
        )
        text = r.model + (" (deploy)" if chosen else "") + (" (noisy)" if noisy else "")
        labels.append((text, float(r.verdict.latency_ms or 0.0), float(r.accuracy or 0.0), chosen))
    ax.set_xlim(0, right)
    _accuracy_axis(ax, rec.metric)
    _label_points(ax, labels)
    how = {r.verdict.how for r in shown}
    source = "paced" if how == {"measured"} else "paced or inferred from closed loop"
    ax.set_xlabel(f"{budget.key} latency, one-row requests (ms) at {budget.rate_rps:g} req/s")
    ax.set_title(
        f"{rec.dataset}: at the budget's {budget.rate_rps:g} req/s ({source})", fontsize=10
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _accuracy_axis(ax: Any, metric: Headline) -> None:
    """The y axis of a trade-off panel; an error (MAE) runs downwards, so up is better."""
    if metric.higher_is_better:
        ax.set_ylabel(f"{metric.name} under load (hold-out)")
    else:
        ax.set_ylabel(f"{metric.name} under load (hold-out; lower is better, axis reversed)")
        if not ax.yaxis_inverted():
            ax.invert_yaxis()


def _label_points(ax: Any, labels: list[tuple[str, float, float, bool]]) -> None:
    """Name each point beside it, moving a name down (with a leader line) when it would
    overlap one already placed. Call after the axis limits and scales are final."""
    ax.margins(y=0.08)
    ax.autoscale_view()
    points_per_px = 72.0 / ax.figure.dpi
    placed: list[tuple[float, float, float]] = []  # (x, y, width) of placed names, in points
    line, char = 10.0, 4.8  # one line of 8-point text; a rough character width
    ordered = sorted(labels, key=lambda lab: -ax.transData.transform((lab[1], lab[2]))[1])
    for text, x, y, bold in ordered:
        px, py = (v * points_per_px for v in ax.transData.transform((x, y)))
        lx, ly, width = px + 6.0, py + 3.0, char * len(text)
        while any(
            abs(ly - qy) < line and lx < qx + qw and qx < lx + width for qx, qy, qw in placed
        ):
            ly -= line
        placed.append((lx, ly, width))
        moved = abs(ly - (py + 3.0)) > 0.1
        ax.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(lx - px, ly - py),
            fontsize=8,
            fontweight="bold" if bold else "normal",
            arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if moved else None,
        )


def _closed_loop_panel(
    ax: Any,
    pts: dict[str, tuple[float, float]],
    front: list[str],
    key: tuple[str, int],
    cells: list[dict[str, Any]],
) -> None:
    noisy_models = {
        c["model"]
        for c in ok_cells(cells, "models")
        if int(c["users"]) == key[1] and is_noisy(c) and str(c.get("dataset") or "?") == key[0]
    }
    labels: list[tuple[str, float, float, bool]] = []
    for model, (lat, acc) in pts.items():
        on_front = model in front
        noisy = model in noisy_models
        ax.scatter(
            lat,
            acc,
            s=80 if on_front else 36,
            color="C3" if on_front else "C0",
            edgecolors="black",
            linewidths=1.0 if on_front else 0.3,
            hatch=NOISY_HATCH if noisy else None,
            zorder=3,
        )
        labels.append((model + (" (noisy)" if noisy else ""), lat, acc, False))
    if front:
        xs = [pts[m][0] for m in front]
        ys = [pts[m][1] for m in front]
        ax.step(xs, ys, where="post", color="C3", alpha=0.7, label="Pareto frontier")
        ax.legend(fontsize=8, loc="lower right")
    lats = [lat for lat, _ in pts.values() if lat > 0]
    log_scale = bool(lats) and max(lats) / min(lats) > 20
    if log_scale:
        _set_log_axis(ax, "x", lats)
    _accuracy_axis(ax, dataset_headline(cells, key[0]))
    _label_points(ax, labels)
    ax.set_xlabel("p99 latency, one-row requests (ms" + (", log scale)" if log_scale else ")"))
    users = f"{key[1]} user" + ("" if key[1] == 1 else "s")
    ax.set_title(f"{key[0]}: {users}, closed loop (each waits for its answer)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def _plot_throughput(
    plt: Any, cells: list[dict[str, Any]], budget: Budget, path: Path
) -> list[str]:
    fig, ax = plt.subplots(figsize=(8, 5))
    models_cells = ok_cells(cells, "models")
    bound_x: list[float] = []
    bound_y: list[float] = []
    for i, model in enumerate(sorted({c["model"] for c in models_cells})):
        own = sorted((c for c in models_cells if c["model"] == model), key=lambda c: c["users"])
        xs = [float(c["users"]) for c in own]
        ys = [float(c.get("throughput_rps") or 0.0) for c in own]
        color = f"C{i % 10}"
        ax.plot(xs, ys, marker="o", color=color, label=model)
        for c, x, y in zip(own, xs, ys, strict=True):
            if is_noisy(c):
                ax.scatter(x, y, s=140, facecolors="none", edgecolors=color, hatch=NOISY_HATCH)
            if locust_bound(c):
                bound_x.append(x)
                bound_y.append(y)
    if bound_x:
        ax.scatter(
            bound_x,
            bound_y,
            s=260,
            facecolors="none",
            edgecolors="black",
            linewidths=1.5,
            zorder=4,
            label="load generator's limit",
        )
    ax.axhline(budget.rate_rps, color="C3", linestyle="--", linewidth=1.0)
    ax.annotate(
        f"budget rate {budget.rate_rps:g} req/s",
        (0.01, budget.rate_rps),
        xycoords=("axes fraction", "data"),
        textcoords="offset points",
        xytext=(2, 3),
        fontsize=8,
        color="C3",
    )
    ax.set_xscale("log", base=2)
    levels = sorted({int(c["users"]) for c in models_cells})
    if levels:
        from matplotlib.ticker import NullFormatter

        ax.set_xticks(levels, [str(u) for u in levels])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(levels[0] / 1.4, levels[-1] * 1.4)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("concurrent users (closed loop: each waits for its answer), log scale")
    ax.set_ylabel("throughput (requests/s, one row each)")
    ax.set_title("throughput vs concurrency, one-row requests (batching on, cache off)")
    ax.grid(True, alpha=0.3)
    if models_cells:
        ax.legend(fontsize=8, loc="best")
    notes = []
    if bound_x:
        notes += [
            f"Ringed: Locust used >= {LOCUST_BOUND_PCT:.0f}% of its one core, so that rate is "
            "the load generator's ceiling, not the server's (server CPU: see the report).",
            "This 2-core machine has no core left for more Locust processes.",
        ]
    if any(is_noisy(c) for c in models_cells):
        notes.append(
            f"Hatched ring: a noisy cell (other processes took >= {NOISY_OTHERS_PCT:.0f}% of a "
            "pinned core)."
        )
    if notes:
        fig.text(0.01, 0.01, "\n".join(notes), fontsize=8, va="bottom")
        fig.tight_layout(rect=(0, 0.035 * len(notes), 1, 1))
    else:
        fig.tight_layout()
    return _save(plt, fig, path)


_GROUP_ORDER = tuple(GROUP_TITLES)  # the budget's cells first


def _plot_latency(plt: Any, cells: list[dict[str, Any]], budget: Budget, path: Path) -> list[str]:
    """Latency percentiles per cell, grouped under headings, rows named as a person would."""
    chosen = [c for c in ok_cells(cells) if c.get("latency_ms")]
    order = {g: i for i, g in enumerate(_GROUP_ORDER)}
    chosen.sort(key=lambda c: order.get(str(c.get("group")), len(order)))
    rows: list[tuple[str, dict[str, Any] | None]] = []
    for c in chosen:
        group = str(c.get("group"))
        if not rows or rows[-1][0] != group:
            rows.append((group, None))
        rows.append((group, c))
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.3 * len(rows) + 1.6)))
    y = list(range(len(rows)))
    first = next((i for i, r in enumerate(rows) if r[1] is not None), -1)
    values_all: list[float] = []
    for offset, (pct, color) in zip(
        (-0.25, 0.0, 0.25), (("p50", "C0"), ("p95", "C1"), ("p99", "C3")), strict=True
    ):
        for yi, (_, cell) in zip(y, rows, strict=True):
            if cell is None:
                continue
            value = max(1e-3, float(cell["latency_ms"].get(pct) or 0.0))
            values_all.append(value)
            ax.barh(
                yi + offset,
                value,
                height=0.25,
                color=color,
                hatch=NOISY_HATCH if is_noisy(cell) else None,
                edgecolor="white" if is_noisy(cell) else None,
                label=pct if yi == first else None,
            )
    labels = [
        GROUP_TITLES.get(g, g).upper()
        if cell is None
        else cell_label(cell)
        + ("  [noisy]" if is_noisy(cell) else "")
        + ("  [Locust limit]" if locust_bound(cell) else "")
        for g, cell in rows
    ]
    ax.set_yticks(y, labels, fontsize=7)
    for tick, (_, cell) in zip(ax.get_yticklabels(), rows, strict=True):
        if cell is None:
            tick.set_fontweight("bold")
        elif is_noisy(cell):
            tick.set_color("C3")
    ax.invert_yaxis()
    if values_all:
        _set_log_axis(ax, "x", [*values_all, budget.limit_ms])
    ax.axvline(budget.limit_ms, color="black", linestyle="--", linewidth=1.0)
    ax.annotate(
        f"budget {budget.key} {budget.limit_ms:g} ms",
        (budget.limit_ms, 0),
        xycoords=("data", "axes fraction"),
        textcoords="offset points",
        xytext=(3, 3),
        fontsize=7,
    )
    ax.set_xlabel("client-side latency (ms, log scale)")
    ax.annotate(
        f"[noisy] (hatched, red): other processes took >= {NOISY_OTHERS_PCT:.0f}% of a pinned "
        f"core.\n[Locust limit]: the load generator was at >= {LOCUST_BOUND_PCT:.0f}% of its "
        "core, so these times include its own delays.",
        (0, 0),
        xycoords="axes fraction",
        textcoords="offset points",
        xytext=(0, -42),
        va="top",
        fontsize=8,
    )
    ax.set_title("latency percentiles per cell")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    if chosen:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: Path) -> list[str]:
    """Write the figure; return every piece of text a reader sees on it."""
    from matplotlib.text import Text

    fig.savefig(path, dpi=110, bbox_inches="tight")
    texts = [
        str(t.get_text())
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text() and (t.axes is None or t.axes.get_visible())
    ]
    plt.close(fig)
    return texts


def draw_plots(doc: dict[str, Any], out_dir: Path, budget: Budget) -> dict[str, list[str]]:
    """Write the three plots (and the overload plot, when the run has overload cells) into
    ``out_dir``; return each file's visible text (for checks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from loadtests.overload_report import OVERLOAD_PLOT, plot_overload

    cells: list[dict[str, Any]] = doc.get("cells", [])
    texts = {
        "tradeoff.png": _plot_tradeoff(plt, cells, budget, out_dir / "tradeoff.png"),
        "throughput.png": _plot_throughput(plt, cells, budget, out_dir / "throughput.png"),
        "latency.png": _plot_latency(plt, cells, budget, out_dir / "latency.png"),
    }
    overload = plot_overload(plt, doc, out_dir / OVERLOAD_PLOT)
    if overload is not None:
        texts[OVERLOAD_PLOT] = overload
    return texts
