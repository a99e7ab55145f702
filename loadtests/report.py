"""Render a sweep's folder: ``REPORT.md`` (tables) and PNG plots, from ``results.json`` alone.

``tabserve loadtest report RUN_DIR`` re-renders an existing run (optionally answering another
``--budget``); the sweep calls :func:`render` at its end.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from loadtests.budget import Budget, answer, parse_budget
from loadtests.results import (
    model_accuracy,
    ok_cells,
    pareto_models,
    read_results,
    tradeoff_points,
)

REPORT_FILE = "REPORT.md"
NA = "-"
PLOTS = ("tradeoff.png", "throughput.png", "latency.png")


# --- formatting ----------------------------------------------------------------------------------
def _f(value: Any, digits: int = 2, scale: float = 1.0) -> str:
    if value is None:
        return NA
    try:
        x = float(value) * scale
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return NA
    return f"{x:,.{digits}f}"


def _pct(value: Any, digits: int = 1) -> str:
    return NA if value is None else f"{float(value) * 100:.{digits}f}%"


def _lat(cell: dict[str, Any], key: str) -> str:
    return _f((cell.get("latency_ms") or {}).get(key), 2)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["_(no cells)_", ""]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def _cpu(cell: dict[str, Any], who: str) -> str:
    return _f((cell.get("cpu") or {}).get(f"{who}_pct"), 0) + "%" if cell.get("cpu") else NA


def _others(cell: dict[str, Any]) -> str:
    cpu = cell.get("cpu") or {}
    a, b = cpu.get("others_server_core_pct"), cpu.get("others_client_core_pct")
    if a is None and b is None:
        return NA
    return f"{_f(a, 0)}% / {_f(b, 0)}%"


def _server(cell: dict[str, Any], key: str, digits: int = 2) -> str:
    return _f((cell.get("server") or {}).get(key), digits)


# --- sections ------------------------------------------------------------------------------------
def _budget_section(
    cells: list[dict[str, Any]], budget: Budget | None, models: list[str]
) -> list[str]:
    if budget is None:
        return []
    verdicts = answer(cells, budget, models)
    fitting = [v.model for v in verdicts if v.fits]
    lines = [f"## Which models fit `{budget}`?", ""]
    lines.append(
        "**Fits: "
        + (", ".join(f"`{m}`" for m in fitting) if fitting else "none of the models measured")
        + "**"
    )
    lines.append("")
    lines += _table(
        ["model", "fits", "how", "evidence"],
        [[f"`{v.model}`", "yes" if v.fits else "no", v.how, v.evidence] for v in verdicts],
    )
    lines.append(
        "_measured_: Locust users paced to the budget's rate in total (needs >= 95% of the "
        "rate, the latency limit, < 1% errors); _inferred_: a closed-loop one-row cell "
        "sustained at least the rate within the limit."
    )
    lines.append("")
    return lines


NOISY_OTHERS_PCT = 20.0
"""Other processes' share of a pinned core above which a cell's tail latency is called noisy."""


def _noise_warning(cells: list[dict[str, Any]]) -> list[str]:
    """A caution when other processes took a large share of the pinned cores during cells."""
    shares = [
        float(v)
        for c in cells
        for k in ("others_server_core_pct", "others_client_core_pct")
        if (v := (c.get("cpu") or {}).get(k)) is not None
    ]
    if not shares or max(shares) < NOISY_OTHERS_PCT:
        return []
    noisy = sum(
        1
        for c in cells
        if max(
            float((c.get("cpu") or {}).get(k) or 0.0)
            for k in ("others_server_core_pct", "others_client_core_pct")
        )
        >= NOISY_OTHERS_PCT
    )
    return [
        f"> **Noisy run**: in {noisy} of {len(cells)} cells other processes took "
        f">= {NOISY_OTHERS_PCT:.0f}% of a pinned core (up to {max(shares):.0f}%; see the "
        "'others' CPU' columns). Tail latencies (p95/p99) and the rankings built on them are "
        "unreliable here; p50 is less affected, and the accuracy figures not at all (they depend "
        "only on the returned scores). Re-run on a quiet machine for decisions.",
        "",
    ]


def _pareto_section(cells: list[dict[str, Any]]) -> list[str]:
    fronts = pareto_models(cells)
    if not fronts:
        return []
    lines = ["## Pareto-optimal models (PR-AUC under load vs p99 latency)", ""]
    points = tradeoff_points(cells)
    for (dataset, users), front in fronts.items():
        pts = points[(dataset, users)]
        described = ", ".join(
            f"`{m}` (p99 {pts[m][0]:.2f} ms, PR-AUC {pts[m][1]:.3f})" for m in front
        )
        lines.append(f"- **{dataset}, {users} users**: {described}")
    lines += [
        "",
        "A model is on the frontier when no other model is both at least as fast (p99) and at "
        "least as accurate (PR-AUC on its hold-out, measured through the server). Datasets are "
        "compared separately.",
        "",
    ]
    return lines


def _cards_section(facts: dict[str, Any]) -> list[str]:
    if not facts:
        return []
    rows = []
    for name, f in sorted(facts.items()):
        off = f.get("offline") or {}
        cost = f.get("cost_us") or {}
        rows.append(
            [
                f"`{name}`",
                str(f.get("version", "")),
                str(f.get("dataset", "")),
                str(f.get("estimator", "")),
                f"{f.get('rows_test', 0):,}",
                _f(off.get("pr_auc"), 4),
                _f(off.get("f1"), 4),
                _f(cost.get("batch1"), 1),
                _f(cost.get("per_row_batch64"), 2),
            ]
        )
    header = [
        "model",
        "version",
        "dataset",
        "estimator",
        "hold-out rows",
        "offline PR-AUC",
        "offline F1",
        "ONNX us, 1 row",
        "ONNX us/row, batch 64",
    ]
    return ["## Models measured (from model.json)", "", *_table(header, rows)]


def _models_section(cells: list[dict[str, Any]]) -> list[str]:
    rows = []
    for c in sorted(ok_cells(cells, "models"), key=lambda c: (c["model"], c["users"])):
        rows.append(
            [
                f"`{c['model']}`",
                str(c["users"]),
                _f(c.get("throughput_rps"), 0),
                _lat(c, "p50"),
                _lat(c, "p95"),
                _lat(c, "p99"),
                _server(c, "server_latency_p99_ms"),
                _pct(c.get("error_rate"), 2),
                _pct(c.get("rate_503"), 2),
                _server(c, "mean_batch_rows"),
                _server(c, "queue_wait_mean_ms", 3),
                _cpu(c, "server"),
                _cpu(c, "locust"),
                _others(c),
            ]
        )
    lines = ["## Models: one-row requests (batching on, cache off)", ""]
    lines += _table(
        [
            "model",
            "users",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "server p99 ms",
            "errors",
            "503",
            "mean batch rows",
            "queue wait ms",
            "server CPU",
            "Locust CPU",
            "others' CPU (server / client core)",
        ],
        rows,
    )
    return lines


def _offline_of(cells: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """The model card's offline metrics, as recorded with any of the model's cells."""
    for c in cells:
        if c.get("model") == model and isinstance(c.get("offline"), dict):
            return dict(c["offline"])
    return {}


def _accuracy_section(cells: list[dict[str, Any]], models: list[str]) -> list[str]:
    rows = []
    for model in models:
        acc = model_accuracy(cells, model)
        if acc is None:
            continue
        offline = _offline_of(cells, model)

        def pair(key: str, acc: dict[str, Any] = acc, offline: dict[str, Any] = offline) -> str:
            return f"{_f(acc.get(key), 4)} / {_f(offline.get(key), 4)}"

        rows.append(
            [
                f"`{model}`",
                f"{acc.get('rows', 0):,} ({_pct(acc.get('coverage'), 0)})",
                _f(acc.get("threshold"), 3),
                pair("precision"),
                pair("recall"),
                pair("f1"),
                pair("pr_auc"),
                pair("roc_auc"),
                _f(acc.get("max_repeat_diff"), 6),
            ]
        )
    lines = ["## Accuracy under load vs offline (same hold-out rows)", ""]
    lines += _table(
        [
            "model",
            "rows answered (coverage)",
            "threshold",
            "precision load / offline",
            "recall load / offline",
            "F1 load / offline",
            "PR-AUC load / offline",
            "ROC-AUC load / offline",
            "max repeat diff",
        ],
        rows,
    )
    lines.append(
        "Under load: the scores the server returned during the sweep, scored at the card's "
        "threshold (the cell that answered most rows). Offline: `model.json` metrics on the same "
        "hold-out split. Max repeat diff: the largest change between two answers for the same row "
        "across all cells (0 means batching and caching never mixed rows up)."
    )
    lines.append("")
    return lines


def _config_section(
    cells: list[dict[str, Any]], group: str, title: str, extra: list[str]
) -> list[str]:
    chosen = ok_cells(cells, group)
    if not chosen:
        return []
    rows = []
    for c in chosen:
        row = [
            f"`{c['model']}`",
            c.get("scenario", ""),
            c.get("server_label", ""),
            str(c.get("users")),
            _f(c.get("throughput_rps"), 0),
            _lat(c, "p50"),
            _lat(c, "p95"),
            _lat(c, "p99"),
            _pct(c.get("error_rate"), 2),
            _pct(c.get("rate_503"), 2),
        ]
        for key in extra:
            if key == "hit_ratio":
                row.append(_pct((c.get("server") or {}).get("hit_ratio")))
            elif key == "hits_by_tier":
                srv = c.get("server") or {}
                hits = srv.get("cache_hits") or {}
                parts = [f"{t} {int(v):,}" for t, v in sorted(hits.items()) if v]
                skipped = srv.get("cache_skipped") or {}
                parts += [f"{t} calls skipped {int(v):,}" for t, v in sorted(skipped.items()) if v]
                row.append(", ".join(parts) or NA)
            elif key == "cpu":
                row.append(_cpu(c, "server"))
            elif key == "others":
                row.append(_others(c))
            elif key == "p99_ok":
                row.append(_f((c.get("latency_ok_ms") or {}).get("p99"), 2))
            elif key == "rejected":
                row.append(_server(c, key, 0))
            else:
                row.append(_server(c, key, 3 if "ms" in key else 2))
        rows.append(row)
    names = {
        "mean_batch_rows": "mean batch rows",
        "queue_wait_mean_ms": "queue wait ms",
        "hit_ratio": "hit ratio",
        "hits_by_tier": "hits by tier",
        "cpu": "server CPU",
        "inference_mean_ms": "inference ms/batch",
        "server_latency_p99_ms": "server p99 ms",
        "others": "others' CPU (server / client core)",
        "p99_ok": "p99 ms of answered (200)",
        "rejected": "rejected (503, server count)",
    }
    header = [
        "model",
        "scenario",
        "server",
        "users",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "503",
    ] + [names.get(k, k) for k in extra]
    return [f"## {title}", "", *_table(header, rows)]


def _shift_section(cells: list[dict[str, Any]]) -> list[str]:
    chosen = ok_cells(cells, "shifted")
    if not chosen:
        return []
    lines = ["## Shifted traffic (data generator's `shift`)", ""]
    rows = []
    for c in chosen:
        acc = c.get("accuracy") or {}
        offline = _offline_of(cells, c["model"])
        mon = c.get("monitoring")
        if isinstance(mon, dict) and "error" not in mon:
            mon_text = _monitoring_summary(mon)
        elif isinstance(mon, dict):
            mon_text = "unavailable"
        else:
            mon_text = NA
        rows.append(
            [
                f"`{c['model']}`",
                str(c.get("dataset", "")),
                f"{acc.get('rows', 0):,}",
                f"{_f(acc.get('pr_auc'), 4)} / {_f((offline or {}).get('pr_auc'), 4)}",
                f"{_f(acc.get('f1'), 4)} / {_f((offline or {}).get('f1'), 4)}",
                _pct(acc.get("positives", 0) / acc["rows"] if acc.get("rows") else None),
                mon_text,
            ]
        )
    lines += _table(
        [
            "model",
            "rows",
            "answered",
            "PR-AUC shifted / offline",
            "F1 shifted / offline",
            "positive rate",
            "server monitoring",
        ],
        rows,
    )
    return lines


def _monitoring_summary(mon: dict[str, Any]) -> str:
    """The monitoring endpoint's verdict and the features it flags, tolerant of its shape."""
    status = str(mon.get("status", "?"))
    flagged = [
        f"{f.get('name')} (PSI {_f(f.get('psi'), 2)})"
        for f in mon.get("top_drifting") or []
        if isinstance(f, dict) and f.get("status") not in (None, "ok", "stable")
    ]
    return status + (": " + ", ".join(flagged) if flagged else "")


def _all_cells_section(cells: list[dict[str, Any]]) -> list[str]:
    rows = []
    for c in cells:
        if c.get("failed"):
            rows.append(
                [c.get("cell_id", "?"), "FAILED: " + str(c["failed"])[:120], "", "", "", ""]
            )
            continue
        rows.append(
            [
                c.get("cell_id", "?"),
                _f(c.get("throughput_rps"), 0),
                _lat(c, "p99"),
                _f((c.get("locust") or {}).get("p99"), 0),
                _pct(c.get("error_rate"), 2),
                _f(c.get("rows_per_s"), 0),
            ]
        )
    return [
        "## All cells",
        "",
        *_table(
            ["cell", "req/s", "p99 ms (exact)", "p99 ms (Locust, rounded)", "errors", "rows/s"],
            rows,
        ),
    ]


# --- plots ---------------------------------------------------------------------------------------
def _plots(doc: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    cells: list[dict[str, Any]] = doc.get("cells", [])
    written: list[str] = []

    # 1. accuracy vs p99 with the frontier: one panel per dataset and concurrency
    points = tradeoff_points(cells)
    fronts = pareto_models(cells)
    panels = sorted(points) or [("(no data)", 0)]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, panels, strict=False):
        pts = points.get(key, {})
        front = fronts.get(key, [])
        for model, (lat, acc) in pts.items():
            on_front = model in front
            ax.scatter(
                lat,
                acc,
                s=80 if on_front else 36,
                color="C3" if on_front else "C0",
                edgecolors="black" if on_front else "none",
                zorder=3,
            )
            ax.annotate(model, (lat, acc), textcoords="offset points", xytext=(5, 3), fontsize=8)
        if front:
            xs = [pts[m][0] for m in front]
            ys = [pts[m][1] for m in front]
            ax.step(xs, ys, where="post", color="C3", alpha=0.7, label="Pareto frontier")
            ax.legend(fontsize=8, loc="best")
        lats = [lat for lat, _ in pts.values() if lat > 0]
        log_scale = bool(lats) and max(lats) / min(lats) > 20
        if log_scale:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("p99 latency, one-row requests (ms" + (", log)" if log_scale else ")"))
        ax.set_ylabel("PR-AUC under load")
        ax.set_title(f"{key[0]}, {key[1]} users (closed loop)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("accuracy vs latency (upper left is better)")
    fig.tight_layout()
    fig.savefig(out_dir / "tradeoff.png", dpi=110)
    plt.close(fig)
    written.append("tradeoff.png")

    # 2. throughput vs concurrency per model
    fig, ax = plt.subplots(figsize=(7, 4.5))
    models_cells = ok_cells(cells, "models")
    for model in sorted({c["model"] for c in models_cells}):
        own = sorted((c for c in models_cells if c["model"] == model), key=lambda c: c["users"])
        ax.plot(
            [c["users"] for c in own],
            [c.get("throughput_rps") or 0 for c in own],
            marker="o",
            label=model,
        )
    ax.set_xscale("log", base=2)
    levels = sorted({int(c["users"]) for c in models_cells})
    if levels:
        ax.set_xticks(levels, [str(u) for u in levels])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("concurrent users (closed loop)")
    ax.set_ylabel("requests/s (one row each)")
    ax.set_title("throughput vs concurrency")
    ax.grid(True, alpha=0.3)
    if models_cells:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=110)
    plt.close(fig)
    written.append("throughput.png")

    # 3. latency percentiles per configuration
    chosen = [c for c in ok_cells(cells) if c.get("latency_ms")]
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.28 * len(chosen) + 1.2)))
    labels = [c.get("cell_id", "?") for c in chosen]
    y = list(range(len(chosen)))
    for offset, (pct, color) in zip(
        (-0.25, 0.0, 0.25), (("p50", "C0"), ("p95", "C1"), ("p99", "C3")), strict=True
    ):
        values = [max(1e-3, float(c["latency_ms"].get(pct) or 0.0)) for c in chosen]
        ax.barh([v + offset for v in y], values, height=0.25, color=color, label=pct)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log), client side")
    ax.set_title("latency percentiles per configuration")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    if chosen:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / "latency.png", dpi=110)
    plt.close(fig)
    written.append("latency.png")
    return written


# --- entry points --------------------------------------------------------------------------------
def render_markdown(doc: dict[str, Any], budget: Budget | None) -> str:
    meta = doc.get("meta", {})
    cells: list[dict[str, Any]] = doc.get("cells", [])
    models = sorted({c["model"] for c in cells if c.get("model")})
    failed = [c for c in cells if c.get("failed")]
    mode, started = meta.get("mode", "?"), meta.get("started_at", "?")
    elapsed, per_cell = _f(meta.get("elapsed_s"), 0), _f(meta.get("cell_seconds"), 0)
    lines = [
        f"# tabserve load-test report ({mode} sweep, {started})",
        "",
        f"- cells: {len(cells)} ({len(failed)} failed); wall time {elapsed} s; "
        f"{per_cell} s of load per cell",
        f"- server pinned to CPU {meta.get('server_cpus', NA)}, Locust to CPU "
        f"{meta.get('client_cpus', NA)}; host: {meta.get('host', NA)}; "
        f"commit {meta.get('commit', NA)}",
        "- latency: exact client-side times recorded by the locustfile (Locust's own percentiles "
        "round to whole ms below 100 ms; they are kept in the raw CSVs and the 'All cells' table)",
        "- others' CPU: busy time of the pinned cores not used by the server (and Redis) or "
        "Locust during the cell; when it is high, other processes competed with the "
        "measurement and its tail latencies are inflated",
        "- server p99: from the server's own latency histogram (interpolated inside buckets); "
        "the gap to the client p99 is the loopback network, HTTP handling outside the handler "
        "and scheduling delays",
        "- accuracy: every answered hold-out row scored as it arrived; precision/recall/F1 at the "
        "card's threshold; PR-AUC = average precision",
    ]
    if meta.get("load_average_at_start") is not None:
        lines.append(
            f"- load average (1/5/15 min) at start {meta['load_average_at_start']}, at end "
            f"{meta.get('load_average_at_end', NA)}: above the CPU count means other processes "
            "competed for the same cores, and the figures are noisier than on an idle machine"
        )
    if meta.get("note"):
        lines.append(f"- note: {meta['note']}")
    lines.append("")
    lines += _noise_warning(cells)
    lines += _budget_section(cells, budget, models)
    lines += _cards_section(doc.get("models") or {})
    lines += _pareto_section(cells)
    lines += ["![accuracy vs p99 latency](tradeoff.png)", ""]
    lines += _models_section(cells)
    lines += ["![throughput vs concurrency](throughput.png)", ""]
    lines += _accuracy_section(cells, models)
    lines += _config_section(
        cells,
        "batching",
        "Batching (cache off)",
        ["server_latency_p99_ms", "mean_batch_rows", "queue_wait_mean_ms", "cpu", "others"],
    )
    lines += _config_section(
        cells,
        "cache",
        "Cache (Zipf-repeated rows, fresh cache per cell)",
        ["server_latency_p99_ms", "hit_ratio", "hits_by_tier", "cpu", "others"],
    )
    lines += _config_section(
        cells,
        "spike",
        "Backpressure: ramp and spike past capacity (users = ramp peak; the spike is 3x)",
        ["p99_ok", "mean_batch_rows", "rejected", "cpu", "others"],
    )
    lines += _config_section(
        cells,
        "budget",
        "Paced cells (budget rate)",
        ["server_latency_p99_ms", "mean_batch_rows", "cpu", "others"],
    )
    lines += _shift_section(cells)
    lines += ["![latency percentiles per configuration](latency.png)", ""]
    lines += _all_cells_section(cells)
    return "\n".join(lines) + "\n"


def render(run_dir: Path, budget: Budget | None = None) -> Path:
    """Write REPORT.md and the plots into ``run_dir`` from its results.json."""
    doc = read_results(run_dir)
    if budget is None and doc.get("meta", {}).get("budget"):
        budget = parse_budget(doc["meta"]["budget"])
    _plots(doc, run_dir)
    path = run_dir / REPORT_FILE
    path.write_text(render_markdown(doc, budget))
    return path
