"""A sweep's results as plain data: one flat record per cell, model summaries, Pareto frontier.

``results.json`` holds ``{"meta": ..., "models": {name: card facts}, "cells": [record, ...]}``.
A record merges what the cell was (model, scenario, users, server configuration) with what was
measured (client-side throughput and exact latency percentiles from the locustfile, Locust's own
rounded percentiles for cross-checking, error and 503 rates, accuracy under load, the server's
metrics and CPU use). Everything here is pure functions over those dicts, so the report can be
re-rendered from the file and the tests can feed fixed inputs.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from loadtests.scoring import Headline, headline

RESULTS_FILE = "results.json"


def read_locust_stats(csv_prefix: Path) -> dict[str, float] | None:
    """The 'Aggregated' row of Locust's ``<prefix>_stats.csv`` (its percentiles are in ms,
    rounded to whole ms below 100 ms)."""
    path = csv_prefix.parent / f"{csv_prefix.name}_stats.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    row = next((r for r in rows if r.get("Name") == "Aggregated"), rows[-1] if rows else None)
    if row is None:
        return None

    def num(key: str) -> float:
        try:
            return float(row.get(key) or "nan")
        except ValueError:
            return float("nan")

    return {
        "requests": num("Request Count"),
        "failures": num("Failure Count"),
        "rps": num("Requests/s"),
        "p50": num("50%"),
        "p95": num("95%"),
        "p99": num("99%"),
    }


def cell_record(
    cell: dict[str, Any],
    accuracy_doc: dict[str, Any] | None,
    locust_stats: dict[str, float] | None,
    server: dict[str, Any] | None,
    cpu: dict[str, Any] | None,
) -> dict[str, Any]:
    """Flatten one cell's inputs and outputs into the record the report reads."""
    record = dict(cell)
    # The locustfile's final aggregate wins over the CSV, which may be a second stale.
    record["locust"] = (accuracy_doc or {}).get("locust") or locust_stats
    record["server"] = server or {}
    record["cpu"] = cpu or {}
    if not accuracy_doc:
        record["failed"] = record.get("failed") or "no accuracy file (did Locust run?)"
        return record
    total = accuracy_doc.get("total", {})
    streams = accuracy_doc.get("streams", {})
    record["duration_measured_s"] = accuracy_doc.get("duration_s")
    for key in (
        "requests",
        "ok",
        "error_rate",
        "rate_503",
        "rate_504",
        "throughput_rps",
        "rows_per_s",
        "status_counts",
    ):
        record[key] = total.get(key)
    record["latency_ms"] = total.get("latency_ms", {})
    record["latency_ok_ms"] = total.get("latency_ok_ms", {})
    stream = streams.get(cell.get("stream") or cell["model"])
    if stream is None and len(streams) == 1:
        stream = next(iter(streams.values()))
    if stream is not None:
        record["accuracy"] = stream.get("accuracy")
        record["distinct_rows"] = stream.get("distinct_rows")
        record["replay_rows"] = stream.get("replay_rows")
        record["coverage"] = (
            min(1.0, stream["distinct_rows"] / stream["replay_rows"])
            if stream.get("replay_rows")
            else None
        )
        record["max_repeat_diff"] = stream.get("max_repeat_diff")
        record["offline"] = stream.get("offline")
        record["dataset"] = stream.get("dataset")
        record["task"] = stream.get("task", "binary")
        record["row_form"] = stream.get("row_form")
        if "monitoring" in stream:
            record["monitoring"] = stream["monitoring"]
    return record


def write_results(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=True, default=str))
    tmp.replace(path)


def read_results(run_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((run_dir / RESULTS_FILE).read_text())
    return doc


NOISY_OTHERS_PCT = 20.0
"""Other processes' share of a pinned core above which a cell's tail latency is called noisy."""
LOCUST_BOUND_PCT = 90.0
"""Locust's CPU (share of its one core) above which the load generator, not the server, set
the cell's throughput: one Locust process cannot use more than one core."""


def others_pct(cell: dict[str, Any]) -> float | None:
    """The larger share of a pinned core (server's or Locust's) that other processes took."""
    cpu = cell.get("cpu") or {}
    shares = [
        float(v)
        for k in ("others_server_core_pct", "others_client_core_pct")
        if (v := cpu.get(k)) is not None
    ]
    return max(shares) if shares else None


def is_noisy(cell: dict[str, Any]) -> bool:
    """Other processes took enough of a pinned core to inflate this cell's tail latency."""
    share = others_pct(cell)
    return share is not None and share >= NOISY_OTHERS_PCT


def locust_bound(cell: dict[str, Any]) -> bool:
    """Locust was at its one-core ceiling: the measured rate is the load generator's limit."""
    value = (cell.get("cpu") or {}).get("locust_pct")
    return value is not None and float(value) >= LOCUST_BOUND_PCT


def ok_cells(cells: list[dict[str, Any]], group: str | None = None) -> list[dict[str, Any]]:
    return [c for c in cells if not c.get("failed") and (group is None or c.get("group") == group)]


def cell_task(cell: dict[str, Any]) -> str:
    """The task of the cell's model (binary for results written before there were others)."""
    for source in (cell, cell.get("accuracy") or {}, cell.get("offline") or {}):
        task = source.get("task") if isinstance(source, dict) else None
        if task:
            return str(task)
    return "binary"


def model_headline(cells: list[dict[str, Any]], model: str) -> Headline:
    """The headline metric of ``model``'s task, from any of its cells."""
    for c in cells:
        if c.get("model") == model and not c.get("failed"):
            return headline(cell_task(c))
    return headline("binary")


def model_accuracy(cells: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    """The model's accuracy under load on its hold-out: from the cell that answered most rows.

    Shifted-traffic cells are excluded (different rows), and so are the open-loop overload
    cells (their answers may come from cheaper variants). The record carries ``coverage``, the
    share of hold-out rows answered, next to the metrics.
    """
    candidates = [
        c
        for c in ok_cells(cells)
        if c.get("model") == model
        and c.get("accuracy")
        and c.get("offline") is not None
        and c.get("group") != "overload"
    ]
    if not candidates:
        return None
    best = max(candidates, key=lambda c: (c.get("distinct_rows") or 0, -(c.get("error_rate") or 0)))
    out = dict(best["accuracy"])
    out["coverage"] = best.get("coverage")
    out["max_repeat_diff"] = max(float(c.get("max_repeat_diff") or 0.0) for c in candidates)
    out["cell"] = best.get("cell_id")
    return out


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` = (latency, accuracy) is as fast and as accurate as ``b``, and better in one."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def pareto_front(
    points: dict[str, tuple[float, float]], *, higher_is_better: bool = True
) -> list[str]:
    """Names of the non-dominated points (lower latency, better accuracy), fastest first.

    With ``higher_is_better=False`` (an error such as MAE) a lower second coordinate is better.
    Points with a NaN coordinate are left out.
    """
    sign = 1.0 if higher_is_better else -1.0
    clean = {
        k: (v[0], sign * v[1])
        for k, v in points.items()
        if not (math.isnan(v[0]) or math.isnan(v[1]))
    }
    front = [
        k for k, v in clean.items() if not any(dominates(w, v) for j, w in clean.items() if j != k)
    ]
    return sorted(front, key=lambda k: (clean[k][0], -clean[k][1]))


def tradeoff_points(
    cells: list[dict[str, Any]], latency_key: str = "p99", metric: str | None = None
) -> dict[tuple[str, int], dict[str, tuple[float, float]]]:
    """(dataset, users) -> {model: (latency, accuracy)} over the model-comparison cells.

    Accuracy is each model's accuracy under load on its whole hold-out (see
    :func:`model_accuracy`), by ``metric`` or else the headline metric of the model's task
    (PR-AUC, macro-F1, MAE); latency is the one-row cell's client-side percentile at that
    concurrency. Datasets are kept apart: accuracy on different data is not comparable.
    """
    out: dict[tuple[str, int], dict[str, tuple[float, float]]] = {}
    for c in ok_cells(cells, "models"):
        if c.get("scenario") != "SteadyOneRow":
            continue
        acc = model_accuracy(cells, c["model"])
        lat = (c.get("latency_ms") or {}).get(latency_key)
        if acc is None or lat is None:
            continue
        key = (str(c.get("dataset") or "?"), int(c["users"]))
        value = acc.get(metric or headline(cell_task(c)).key)
        accuracy = float("nan") if value is None else float(value)
        out.setdefault(key, {})[c["model"]] = (float(lat), accuracy)
    return out


def dataset_headline(cells: list[dict[str, Any]], dataset: str) -> Headline:
    """The headline metric of a dataset's models (one task per dataset)."""
    for c in ok_cells(cells):
        if str(c.get("dataset") or "?") == dataset:
            return headline(cell_task(c))
    return headline("binary")


def pareto_models(cells: list[dict[str, Any]]) -> dict[tuple[str, int], list[str]]:
    """(dataset, users) -> the Pareto-optimal models, fastest first."""
    return {
        key: pareto_front(points, higher_is_better=dataset_headline(cells, key[0]).higher_is_better)
        for key, points in sorted(tradeoff_points(cells).items())
    }
