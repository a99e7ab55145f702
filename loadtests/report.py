"""Render a sweep's folder: ``REPORT.md`` (tables) and PNG plots, from ``results.json`` alone.

``tabserve loadtest report RUN_DIR`` re-renders an existing run (optionally answering another
``--budget``); the sweep calls :func:`render` at its end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtests.budget import (
    DEFAULT_BUDGET,
    Budget,
    Recommendation,
    parse_budget,
    recommend,
)
from loadtests.labels import NA, cell_label, fmt, noisy_verdict
from loadtests.overload_report import overload_section
from loadtests.plots import draw_plots
from loadtests.results import (
    LOCUST_BOUND_PCT,
    NOISY_OTHERS_PCT,
    cell_task,
    dataset_headline,
    is_noisy,
    locust_bound,
    model_accuracy,
    ok_cells,
    others_pct,
    pareto_models,
    read_results,
    tradeoff_points,
)
from loadtests.scoring import Headline

REPORT_FILE = "REPORT.md"


# --- formatting ----------------------------------------------------------------------------------
def _pct(value: Any, digits: int = 1) -> str:
    return NA if value is None else f"{float(value) * 100:.{digits}f}%"


def _lat(cell: dict[str, Any], key: str) -> str:
    return fmt((cell.get("latency_ms") or {}).get(key), 2)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["_(no cells)_", ""]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def _cpu(cell: dict[str, Any], who: str) -> str:
    if not cell.get("cpu"):
        return NA
    text = fmt((cell.get("cpu") or {}).get(f"{who}_pct"), 0) + "%"
    return text + " (limit)" if who == "locust" and locust_bound(cell) else text


def _others(cell: dict[str, Any]) -> str:
    cpu = cell.get("cpu") or {}
    a, b = cpu.get("others_server_core_pct"), cpu.get("others_client_core_pct")
    if a is None and b is None:
        return NA
    return f"{fmt(a, 0)}% / {fmt(b, 0)}%"


def _server(cell: dict[str, Any], key: str, digits: int = 2) -> str:
    return fmt((cell.get("server") or {}).get(key), digits)


# --- sections ------------------------------------------------------------------------------------
def _accuracy_text(value: float | None, metric: Headline | None = None) -> str:
    """A headline value: scores in [0, 1] to 3 decimals, errors (MAE) to 4 significant digits."""
    if value is None:
        return NA
    return f"{value:.3f}" if metric is None or metric.higher_is_better else f"{value:.4g}"


def _recommendation_lines(rec: Recommendation, cells: list[dict[str, Any]]) -> list[str]:
    budget, choice = rec.budget, rec.choice
    n_fit, n_all = len(rec.fitting), len(rec.ranked)
    metric = rec.metric.name

    def text(value: float | None) -> str:
        return _accuracy_text(value, rec.metric)

    if choice is None:
        lines = [f"**No {rec.dataset} model fits {budget.describe()}** (none of {n_all} measured)."]
        near = rec.closest
        if near is not None and near.verdict.latency_ms is not None:
            lines.append(
                f"Closest: `{near.model}` ({budget.key} {near.verdict.latency_ms:.2f} ms at "
                f"{near.verdict.rate_rps or 0:.0f} req/s, {metric} "
                f"{text(near.accuracy)}). Relax the budget, or give the server more "
                "cores (`--workers`, `--server-cpus`) and measure again."
            )
        return [" ".join(lines), ""]
    v = choice.verdict
    rows = _answered_rows(cells, choice.model)
    others = [r for r in rec.fitting if r is not choice]
    runner = others[0] if others else None
    accuracy = f"{metric} {text(choice.accuracy)} under load" + (
        f" on {rows:,} hold-out rows" if rows else ""
    )
    models = f"{rec.dataset} model{'s' if n_all != 1 else ''} measured"
    if n_fit == 1:
        why = f"Only it, of the {n_all} {models}, meets {budget.describe()}: {accuracy}"
    else:
        share = f"All {n_all}" if n_fit == n_all else f"{n_fit} of the {n_all}"
        why = (
            f"{share} {models} meet {budget.describe()}; `{choice.model}` is the most "
            f"accurate of them: {accuracy}"
        )
    reason = f"**Deploy `{choice.model}`** ({rec.dataset}). {why}"
    if runner is not None:
        reason += f" (next: `{runner.model}`, {text(runner.accuracy)})"
    lat = v.latency_ms
    if v.how == "measured" and lat is not None:
        reason += (
            f". Paced at {budget.rate_rps:g} req/s it answered {v.rate_rps or 0:.0f} req/s with "
            f"{budget.key} {lat:.2f} ms, {budget.limit_ms - lat:.2f} ms inside the "
            f"{budget.limit_ms:g} ms limit."
        )
    elif lat is not None:
        reason += (
            f". No cell was paced at {budget.rate_rps:g} req/s; a closed-loop cell sustained "
            f"{v.rate_rps or 0:.0f} req/s with {budget.key} {lat:.2f} ms, so a lower rate fits "
            "(inferred; run the sweep with this `--budget` to measure it)."
        )
    lines = [reason]
    better = rec.more_accurate_over_budget
    if better:
        lines.append(
            "More accurate but over budget: "
            + "; ".join(
                f"`{r.model}` ({metric} {text(r.accuracy)}, {r.verdict.evidence}"
                + ("; a noisy cell: it may fit on a quiet machine)" if noisy_verdict(r) else ")")
                for r in better
            )
            + "."
        )
    if v.cell is not None and is_noisy(v.cell):
        lines.append(
            f"Caution: during that cell other processes took {others_pct(v.cell):.0f}% of a "
            "pinned core, so its tail latency is likely inflated; re-run on a quiet machine to "
            "confirm the margin."
        )
    return [" ".join(lines), ""]


def _answered_rows(cells: list[dict[str, Any]], model: str) -> int | None:
    acc = model_accuracy(cells, model)
    return int(acc["rows"]) if acc and acc.get("rows") else None


def _recommendation_section(cells: list[dict[str, Any]], budget: Budget) -> list[str]:
    recs = recommend(cells, budget)
    lines = [f"## Which model to deploy for {budget.describe()}", ""]
    if not recs:
        return [*lines, "_(no model cells)_", ""]
    for rec in recs:
        lines += _recommendation_lines(rec, cells)
    rows = [
        [
            rec.dataset,
            rec.metric.name,
            f"`{r.model}`" + (" (deploy)" if r is rec.choice else ""),
            _accuracy_text(r.accuracy, rec.metric),
            "yes" if r.verdict.fits else "no",
            r.verdict.how,
            r.verdict.evidence + (" (noisy)" if noisy_verdict(r) else ""),
        ]
        for rec in recs
        for r in rec.ranked
    ]
    lines += _table(
        ["dataset", "metric", "model", "accuracy under load", "fits", "how", "evidence"], rows
    )
    lines += [
        f"The rule: among the models that fit `{budget}`, the most accurate by the dataset's "
        "task, on the model's hold-out, scored from the server's own answers during the sweep "
        "(binary: the highest PR-AUC, average precision of the positive class; multiclass: the "
        "highest macro-F1; regression: the lowest MAE); a tie goes to the faster. _measured_: "
        "Locust users paced to "
        "the budget's rate in total (needs >= 95% of the rate, the latency limit, < 1% errors); "
        "_inferred_: no paced cell, but a closed-loop one-row cell sustained at least the rate "
        "within the limit. Another budget: `tabserve loadtest sweep --quick --budget "
        '"p99<=2ms@1000rps"`, or `tabserve loadtest report <run folder> --budget ...` to '
        "re-answer from a run's cells.",
        "",
    ]
    return lines


def _locust_limit_section(cells: list[dict[str, Any]], budget: Budget) -> list[str]:
    """Say where the load generator, not the server, set the measured rate."""
    bound = [c for c in ok_cells(cells) if locust_bound(c)]
    if not bound:
        return []
    one_row = [c for c in bound if c.get("group") == "models"]
    server = [
        float(v) for c in one_row if (v := (c.get("cpu") or {}).get("server_pct")) is not None
    ]
    lowest = min((float(c.get("throughput_rps") or 0.0) for c in bound), default=0.0)
    text = (
        f"> **Load generator limit**: in {len(bound)} of {len(ok_cells(cells))} cells Locust "
        f"used >= {LOCUST_BOUND_PCT:.0f}% of its one core (one Locust process cannot use more); "
        "their req/s is the load generator's ceiling, not the server's"
    )
    if server:
        text += (
            f" (in the one-row cells among them the server used {min(server):.0f}-"
            f"{max(server):.0f}% of its core)"
        )
    text += (
        ". They are ringed in the throughput plot and marked in the tables. This 2-core machine "
        "has one core for the server and one for Locust, so more Locust processes would only "
        "take the server's core; on a bigger machine run Locust distributed over more cores."
    )
    if lowest > budget.rate_rps:
        text += (
            f" The budget's {budget.rate_rps:g} req/s is below every such ceiling (lowest "
            f"{lowest:,.0f} req/s), so the answer above does not depend on them."
        )
    return [text, ""]


def _noise_warning(cells: list[dict[str, Any]]) -> list[str]:
    """A caution when other processes took a large share of the pinned cores during cells."""
    shares = [share for c in cells if (share := others_pct(c)) is not None]
    noisy = sum(1 for c in cells if is_noisy(c))
    if not noisy:
        return []
    return [
        f"> **Noisy run**: in {noisy} of {len(cells)} cells other processes took "
        f">= {NOISY_OTHERS_PCT:.0f}% of a pinned core (up to {max(shares):.0f}%; see the "
        "'others' CPU' columns; the plots mark these cells). Tail latencies (p95/p99) and the "
        "rankings built on them are unreliable here; p50 is less affected, and the accuracy "
        "figures not at all (they depend only on the returned scores). Re-run on a quiet "
        "machine for decisions.",
        "",
    ]


def _pareto_section(cells: list[dict[str, Any]]) -> list[str]:
    fronts = pareto_models(cells)
    if not fronts:
        return []
    lines = ["## Pareto-optimal models (accuracy under load vs p99 latency)", ""]
    points = tradeoff_points(cells)
    for (dataset, users), front in fronts.items():
        pts = points[(dataset, users)]
        metric = dataset_headline(cells, dataset)
        described = ", ".join(
            f"`{m}` (p99 {pts[m][0]:.2f} ms, {metric.name} {_accuracy_text(pts[m][1], metric)})"
            for m in front
        )
        who = f"{users} user" + ("" if users == 1 else "s")
        lines.append(f"- **{dataset}, {who}**: {described}")
    lines += [
        "",
        "A model is on the frontier when no other model is both at least as fast (p99) and at "
        "least as accurate on its hold-out, measured through the server (PR-AUC for binary, "
        "macro-F1 for multiclass, MAE for regression models). Datasets are compared separately.",
        "",
    ]
    return lines


_QUALITY_KEYS: dict[str, tuple[tuple[str, str, int], ...]] = {
    "binary": (("PR-AUC", "pr_auc", 4), ("F1", "f1", 4)),
    "multiclass": (("macro-F1", "macro_f1", 4), ("accuracy", "accuracy", 4)),
    "regression": (("MAE", "mae", 4), ("RMSE", "rmse", 4), ("R²", "r2", 3)),
}


def _quality_text(task: str, metrics: dict[str, Any]) -> str:
    """A model's main figures for its task: 'PR-AUC 0.8123, F1 0.7012', 'MAE 3.2100, ...'."""
    keys = _QUALITY_KEYS.get(task, _QUALITY_KEYS["binary"])
    return ", ".join(f"{name} {fmt(metrics.get(key), digits)}" for name, key, digits in keys)


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
                str(f.get("columns") or NA),
                f"{f.get('rows_test', 0):,}",
                str(f.get("task") or off.get("task") or "binary"),
                _quality_text(str(f.get("task") or off.get("task") or "binary"), off),
                fmt(cost.get("batch1"), 1),
                fmt(cost.get("per_row_batch64"), 2),
            ]
        )
    header = [
        "model",
        "version",
        "dataset",
        "estimator",
        "input columns",
        "hold-out rows",
        "task",
        "offline quality (hold-out)",
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
                fmt(c.get("throughput_rps"), 0),
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


def _accuracy_rows(
    cells: list[dict[str, Any]], models: list[str], task: str
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(model, accuracy under load, offline metrics) of the models of ``task``."""
    out = []
    for model in models:
        acc = model_accuracy(cells, model)
        if acc is None or cell_task(acc) != task:
            continue
        out.append((model, acc, _offline_of(cells, model)))
    return out


def _pair(acc: dict[str, Any], offline: dict[str, Any], key: str, digits: int = 4) -> str:
    return f"{fmt(acc.get(key), digits)} / {fmt(offline.get(key), digits)}"


def _rows_text(acc: dict[str, Any]) -> str:
    return f"{acc.get('rows', 0):,} ({_pct(acc.get('coverage'), 0)})"


def _binary_accuracy(cells: list[dict[str, Any]], models: list[str]) -> list[str]:
    rows = [
        [
            f"`{model}`",
            _rows_text(acc),
            fmt(acc.get("threshold"), 3),
            _pair(acc, offline, "precision"),
            _pair(acc, offline, "recall"),
            _pair(acc, offline, "f1"),
            _pair(acc, offline, "pr_auc"),
            _pair(acc, offline, "roc_auc"),
            fmt(acc.get("max_repeat_diff"), 6),
        ]
        for model, acc, offline in _accuracy_rows(cells, models, "binary")
    ]
    if not rows:
        return []
    header = [
        "model",
        "rows answered (coverage)",
        "threshold",
        "precision load / offline",
        "recall load / offline",
        "F1 load / offline",
        "PR-AUC load / offline",
        "ROC-AUC load / offline",
        "max repeat diff",
    ]
    return ["### Binary classifiers", "", *_table(header, rows)]


def _multiclass_accuracy(cells: list[dict[str, Any]], models: list[str]) -> list[str]:
    rows = [
        [
            f"`{model}`",
            _rows_text(acc),
            _pair(acc, offline, "accuracy"),
            fmt(offline.get("baseline_accuracy"), 4),
            _pair(acc, offline, "macro_f1"),
            _pair(acc, offline, "weighted_f1"),
            _pair(acc, offline, "log_loss"),
            fmt(acc.get("max_repeat_diff"), 6),
        ]
        for model, acc, offline in _accuracy_rows(cells, models, "multiclass")
    ]
    if not rows:
        return []
    header = [
        "model",
        "rows answered (coverage)",
        "accuracy load / offline",
        "majority-class accuracy",
        "macro-F1 load / offline",
        "weighted F1 load / offline",
        "log-loss load / offline",
        "max repeat diff",
    ]
    return ["### Multiclass classifiers", "", *_table(header, rows)]


def _regression_accuracy(cells: list[dict[str, Any]], models: list[str]) -> list[str]:
    rows = [
        [
            f"`{model}`",
            _rows_text(acc),
            _pair(acc, offline, "mae"),
            fmt(offline.get("baseline_mae"), 4),
            _pair(acc, offline, "rmse"),
            _pair(acc, offline, "r2"),
            _pair(acc, offline, "mape"),
            fmt(acc.get("bias"), 4),
            fmt(acc.get("max_repeat_diff"), 6),
        ]
        for model, acc, offline in _accuracy_rows(cells, models, "regression")
    ]
    if not rows:
        return []
    header = [
        "model",
        "rows answered (coverage)",
        "MAE load / offline",
        "MAE of the median",
        "RMSE load / offline",
        "R² load / offline",
        "MAPE load / offline",
        "mean residual (load)",
        "max repeat diff",
    ]
    return ["### Regressors", "", *_table(header, rows)]


def _accuracy_section(cells: list[dict[str, Any]], models: list[str]) -> list[str]:
    lines = ["## Accuracy under load vs offline (same hold-out rows)", ""]
    parts = (
        _binary_accuracy(cells, models)
        + _multiclass_accuracy(cells, models)
        + _regression_accuracy(cells, models)
    )
    lines += parts or ["_(no cells)_", ""]
    lines.append(
        "Under load: what the server answered during the sweep, scored by each task's own "
        "metrics (the cell that answered most rows): binary at the card's threshold; multiclass "
        "from the answer's label (accuracy, macro/weighted F1) and the score of the true class "
        "(log-loss); regression from the answer's `value` against the target. Offline: "
        "`model.json` metrics on the same hold-out split. Max repeat diff: the largest change "
        "between two answers for the same row across all cells (a changed multiclass label "
        "counts 1; 0 means batching and caching never mixed rows up)."
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
            fmt(c.get("throughput_rps"), 0),
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
                row.append(fmt((c.get("latency_ok_ms") or {}).get("p99"), 2))
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


def _label_mix(task: str, acc: dict[str, Any]) -> str:
    """What the shifted rows' labels look like: the positive rate, the most common class's
    share, or the mean target."""
    rows = acc.get("rows")
    if task == "regression":
        return f"mean target {fmt(acc.get('target_mean'), 3)}"
    if task == "multiclass":
        return f"largest class {_pct(acc.get('majority_share'))}"
    return "positive rate " + _pct(acc.get("positives", 0) / rows if rows else None)


def _shift_section(cells: list[dict[str, Any]]) -> list[str]:
    chosen = ok_cells(cells, "shifted")
    if not chosen:
        return []
    lines = ["## Shifted traffic (data generator's `shift`)", ""]
    rows = []
    for c in chosen:
        acc = c.get("accuracy") or {}
        offline = _offline_of(cells, c["model"])
        task = cell_task(c)
        keys = _QUALITY_KEYS.get(task, _QUALITY_KEYS["binary"])
        quality = ", ".join(
            f"{name} {fmt(acc.get(key), digits)} / {fmt(offline.get(key), digits)}"
            for name, key, digits in keys[:2]
        )
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
                quality,
                _label_mix(task, acc),
                mon_text,
            ]
        )
    lines += _table(
        [
            "model",
            "rows",
            "answered",
            "shifted / offline",
            "labels",
            "server monitoring",
        ],
        rows,
    )
    return lines


def _monitoring_summary(mon: dict[str, Any]) -> str:
    """The monitoring endpoint's verdict, the features it flags (a categorical one with its
    unseen share) and the predictions' drift, tolerant of its shape."""
    status = str(mon.get("status", "?"))
    unseen = {
        f.get("name"): f.get("unseen_rate")
        for f in mon.get("features") or []
        if isinstance(f, dict) and f.get("unseen_rate")
    }
    flagged = [
        f"{f.get('name')} (PSI {fmt(f.get('psi'), 2)}"
        + (f", unseen {_pct(unseen[f.get('name')])}" if f.get("name") in unseen else "")
        + ")"
        for f in mon.get("top_drifting") or []
        if isinstance(f, dict) and f.get("status") not in (None, "ok", "stable")
    ]
    text = status + (": " + ", ".join(flagged) if flagged else "")
    scores = mon.get("scores")
    if isinstance(scores, dict) and scores.get("psi") is not None:
        text += f"; predictions PSI {fmt(scores.get('psi'), 2)} ({scores.get('status', '?')})"
    return text


def _all_cells_section(cells: list[dict[str, Any]]) -> list[str]:
    rows = []
    for c in cells:
        label, cell_id = cell_label(c), f"`{c.get('cell_id', '?')}`"
        if c.get("failed"):
            rows.append([label, cell_id, "FAILED: " + str(c["failed"])[:120], "", "", "", "", ""])
            continue
        flags = [
            *(["noisy"] if is_noisy(c) else []),
            *(["Locust limit"] if locust_bound(c) else []),
        ]
        rows.append(
            [
                label,
                cell_id,
                fmt(c.get("throughput_rps"), 0),
                _lat(c, "p99"),
                fmt((c.get("locust") or {}).get("p99"), 0),
                _pct(c.get("error_rate"), 2),
                fmt(c.get("rows_per_s"), 0),
                ", ".join(flags) or NA,
            ]
        )
    header = [
        "cell",
        "folder under cells/",
        "req/s",
        "p99 ms (exact)",
        "p99 ms (Locust, rounded)",
        "errors",
        "rows/s",
        "flags",
    ]
    return ["## All cells", "", *_table(header, rows)]


# --- entry points --------------------------------------------------------------------------------
def render_markdown(doc: dict[str, Any], budget: Budget) -> str:
    meta = doc.get("meta", {})
    cells: list[dict[str, Any]] = doc.get("cells", [])
    models = sorted({c["model"] for c in cells if c.get("model")})
    failed = [c for c in cells if c.get("failed")]
    mode, started = meta.get("mode", "?"), meta.get("started_at", "?")
    elapsed, per_cell = fmt(meta.get("elapsed_s"), 0), fmt(meta.get("cell_seconds"), 0)
    lines = [f"# tabserve load-test report ({mode} sweep, {started})", ""]
    lines += _recommendation_section(cells, budget)
    lines += _noise_warning(cells)
    lines += _locust_limit_section(cells, budget)
    lines += [
        "## How this was measured",
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
        f"measurement and its tail latencies are inflated (>= {NOISY_OTHERS_PCT:.0f}%: "
        "'noisy', hatched in the plots)",
        f"- Locust CPU: its share of its one core; >= {LOCUST_BOUND_PCT:.0f}% means the load "
        "generator, not the server, set the cell's rate ('limit')",
        "- server p99: from the server's own latency histogram (interpolated inside buckets); "
        "the gap to the client p99 is the loopback network, HTTP handling outside the handler "
        "and scheduling delays",
        "- accuracy: every answered hold-out row scored as it arrived, by its task's own metrics: "
        "binary precision/recall/F1 at the card's threshold and PR-AUC (average precision); "
        "multiclass accuracy and macro-F1 of the answered label; regression MAE and RMSE of the "
        "answered value. Rows of models with typed columns are sent as objects of raw values "
        "(strings, booleans), the others as lists of numbers",
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
    lines += overload_section(doc)
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


def recommendation_summary(doc: dict[str, Any], budget: Budget) -> list[str]:
    """One plain line per dataset: the model to deploy under the budget (for the terminal)."""
    out = []
    for rec in recommend(doc.get("cells", []), budget):
        choice = rec.choice
        if choice is None:
            out.append(f"{rec.dataset}: no model meets {budget.describe()}")
            continue
        v = choice.verdict
        latency = NA if v.latency_ms is None else f"{v.latency_ms:.2f} ms"
        out.append(
            f"{rec.dataset}: deploy {choice.model}, the most accurate of the "
            f"{len(rec.fitting)} model(s) that meet {budget.describe()} ({rec.metric.name} "
            f"{_accuracy_text(choice.accuracy, rec.metric)} under load; {budget.key} {latency} at "
            f"{v.rate_rps or 0:.0f} req/s, {v.how})"
        )
    return out


def render(run_dir: Path, budget: Budget | None = None) -> Path:
    """Write REPORT.md and the plots into ``run_dir`` from its results.json.

    The budget answered: ``budget``, else the one the sweep ran with, else the default.
    """
    doc = read_results(run_dir)
    if budget is None:
        budget = parse_budget(doc.get("meta", {}).get("budget") or DEFAULT_BUDGET)
    draw_plots(doc, run_dir, budget)
    path = run_dir / REPORT_FILE
    path.write_text(render_markdown(doc, budget))
    return path
