"""``tabserve bench --suite cache``: the response cache's benchmark (issue #4).

For the small and the large XGBoost model, one-row ``POST /v1/models/{name}/predict`` with

* **zipf**: rows drawn Zipf (exponent ``--zipf-s``, seeded) over 10k distinct hold-out rows, so
  some rows repeat often and most rarely, as real traffic does;
* **unique**: every request a row never sent before (hold-out rows, then copies with feature 0
  shifted): a 0% hit ratio, the cache's pure cost;

against four servers: cache **off**, **memory** (in-process only, the embedded default),
**memory+redis** (a local Redis-protocol server started here, with the default per-model policy:
Redis is skipped for a model whose batch of misses computes faster than one round trip; a model
whose one-row inference costs no more than a cache miss adds is not cached at all), and
**memory,forced** (every model given a TTL, which overrides that last rule). It prints
throughput, p50/p99 and the measured hit ratio side by side, and the issue's two targets: on the
large model with zipf traffic, memory+redis >= 3x the throughput of cache off; on the small
model, the cache on costs <= 5% throughput at any hit ratio (the forced column shows what
caching it regardless would cost).

Same harness as the serving suite (:mod:`loadtests.bench.serving`): one worker pinned to one
core, the load generator (and Redis) on another, every process stopped by PID in ``finally``. The
hit ratio is read from the server (``GET /v1/models/{name}``), over the measured seconds only.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.bench.serving import (
    Cell,
    LoadGen,
    _latest_dir,
    bench_server,
    measure,
    median_round,
)
from loadtests.redisproc import RedisProcess, find_redis_binary
from loadtests.serveproc import ServeProcess, free_port
from server.modelcard import HOLDOUT_FILE, load_card

DISTINCT = 10_000
"""Distinct hold-out rows the zipf workload draws from."""
ZIPF_BODIES = 200_000
"""Requests in the zipf sequence (the load generator cycles through it)."""
UNIQUE_BODIES = 100_000
"""Distinct rows per unique cell (more than one cell sends); each cell has its own rows."""
CONFIGS = ("off", "memory", "memory+redis", "memory,forced")
"""``memory,forced``: in-process cache with a TTL set for every model, which overrides the rule
that does not cache a model cheaper than a cache miss: what caching such a model would cost."""


@dataclass
class CacheCell:
    model: str
    workload: str  # zipf | unique
    config: str  # off | memory | memory+redis
    concurrency: int
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    hit_ratio: float | None = None
    errors: int = 0
    server_cpu: float = 0.0
    cpu_us_per_request: float = 0.0
    """Server CPU per request (µs): what one request costs, much less sensitive than throughput
    to other processes taking turns on a shared machine."""
    redis: str = "-"
    """The model's Redis policy as the server reports it (on / skipped / off)."""
    rounds_rps: list[float] = field(default_factory=list)
    """req/s of every round when the cell ran more than once (the median one is shown)."""


def holdout_rows(models_dir: Path, name: str) -> np.ndarray:
    vdir = _latest_dir(models_dir, name)
    with np.load(vdir / HOLDOUT_FILE) as data:
        rows: np.ndarray = data["X"].astype(np.float32)
    return rows


def zipf_bodies(rows: np.ndarray, n: int, s: float, seed: int, draw: int) -> list[bytes]:
    """``n`` one-row bodies, rows drawn Zipf(s) over ``DISTINCT`` rows (rank order shuffled).

    ``seed`` picks the rows and their ranks, ``draw`` the sequence: the warm-up draws from the
    same distribution as the measured run, but not the same sequence.
    """
    pool = rows[np.random.default_rng(seed).permutation(len(rows))[:DISTINCT]]
    weights = 1.0 / np.arange(1, len(pool) + 1) ** s
    rng = np.random.default_rng([seed, draw])
    picks = rng.choice(len(pool), size=n, p=weights / weights.sum())
    encoded = [json.dumps({"instances": [row]}).encode() for row in pool.tolist()]
    return [encoded[i] for i in picks]


def unique_bodies(rows: np.ndarray, n: int, offset: int) -> list[bytes]:
    """``n`` bodies of distinct rows: copies of the hold-out rows with feature 0 shifted by
    ``1e-3 * copy`` (copies ``offset``.., never 0: the zipf rows are the unshifted ones), so no
    two bodies share a row, and calls with disjoint copy ranges share none either."""
    assert offset >= 1
    copies = -(-n // len(rows))
    out = np.concatenate(
        [
            rows + np.float32(1e-3 * (offset + c)) * (np.arange(rows.shape[1]) == 0)
            for c in range(copies)
        ]
    )[:n].astype(np.float32)
    return [json.dumps({"instances": [row]}).encode() for row in out.tolist()]


def cache_state(port: int, model: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/{model}", timeout=5) as r:
        detail: dict[str, Any] = json.load(r)["detail"][-1]["cache"]
    return detail


def run_cache(
    args: Any, server_cpu: int | None, client_cpu: int | None, kind: str
) -> dict[str, Any]:
    models_dir = Path(args.models_dir)
    models = [m for m in args.models.split(",") if (models_dir / m).is_dir()]
    conc = [int(c) for c in args.concurrency.split(",")]
    # (model, workload, concurrency) -> round -> (measured bodies, warm-up bodies). Zipf warms up
    # on the same distribution (steady state) and every round replays it; each unique cell and
    # round, and its warm-up, has rows of its own (made when the round runs: ~50 MB a set).
    rounds = max(1, getattr(args, "repeat", 1))
    workloads: dict[tuple[str, str, int], Callable[[int], tuple[list[bytes], list[bytes]]]] = {}
    for i, m in enumerate(models):
        load_card(_latest_dir(models_dir, m), verify_sha256=False)
        rows = holdout_rows(models_dir, m)
        zipf = zipf_bodies(rows, ZIPF_BODIES, args.zipf_s, seed=i, draw=0)
        zipf_warm = zipf_bodies(rows, ZIPF_BODIES // 10, args.zipf_s, seed=i, draw=1)
        for c in conc:
            workloads[(m, "zipf", c)] = partial(_same_round, zipf, zipf_warm)
        copies = -(-UNIQUE_BODIES // len(rows))
        per_set = copies + -(-(UNIQUE_BODIES // 10) // len(rows)) + 1
        for j, c in enumerate(conc):
            first = 1 + j * rounds * per_set
            workloads[(m, "unique", c)] = partial(_unique_round, rows, first, per_set, copies)
    cells: list[CacheCell] = []
    base_env = {
        "TABSERVE_LOG_LEVEL": "warning",
        "TABSERVE_CACHE_TTL_S": "3600",
        **dict(kv.split("=", 1) for kv in args.env),
    }
    binary = find_redis_binary()
    with tempfile.TemporaryDirectory(prefix="tabserve-bench-cache-") as tmp:
        workdir = Path(tmp)
        gen = LoadGen(kind, client_cpu, workdir)
        redis: RedisProcess | None = None
        servers: dict[str, ServeProcess] = {}
        try:
            # All three servers run at once (idle ones cost nothing) and each cell measures the
            # three configurations back to back: on a shared machine, drift in background load
            # then hits the three alike instead of whichever configuration ran last.
            for config in CONFIGS:
                env = {**base_env, "TABSERVE_CACHE": str(config != "off").lower()}
                if config == "memory,forced":
                    ttl = dict.fromkeys(models, 3600)
                    env["TABSERVE_CACHE_MODEL_TTL_S"] = json.dumps(ttl)
                if config == "memory+redis":
                    if binary is None:
                        print("no redis/valkey server found: memory+redis skipped", file=sys.stderr)
                        continue
                    redis = RedisProcess(binary, workdir / "redis", port=free_port())
                    redis.start()
                    if client_cpu is not None and redis.proc is not None:
                        os.sched_setaffinity(redis.proc.pid, {client_cpu})
                    env["TABSERVE_REDIS_URL"] = redis.url
                log = workdir / f"server-{config.replace('+', '-')}.log"
                servers[config] = bench_server(models_dir, server_cpu, env, log)
                servers[config].start()
            for (m, workload, c), make in workloads.items():
                samples: dict[str, list[CacheCell]] = {}
                for r in range(rounds):
                    bodies, warm = make(r)
                    for config, server in servers.items():
                        cell = _cell(server, gen, m, workload, config, c, bodies, warm, args)
                        samples.setdefault(config, []).append(cell)
                        _progress(cell)
                cells.extend(_median(s) for s in samples.values())
        except Exception:
            for server in servers.values():
                print(server.log_tail(), file=sys.stderr)
            raise
        finally:
            for server in servers.values():
                server.stop()
            if redis is not None:
                redis.stop()
    return {
        "loadgen": kind,
        "server_cpu": server_cpu,
        "loadgen_cpu": client_cpu,
        "seconds_per_cell": args.seconds,
        "repeat": rounds,
        "zipf_s": args.zipf_s,
        "distinct_rows": DISTINCT,
        "cells": [asdict(c) for c in cells],
        "ratios": cache_ratios(cells),
    }


def _cell(
    server: ServeProcess,
    gen: LoadGen,
    model: str,
    workload: str,
    config: str,
    concurrency: int,
    bodies: list[bytes],
    warm: list[bytes],
    args: Any,
) -> CacheCell:
    path = f"/v1/models/{model}/predict"
    gen.run(server.port, path, warm, concurrency, min(1.0, args.seconds / 3))
    before = cache_state(server.port, model)
    cell = measure(
        server,
        gen,
        Cell("predict", model, True, concurrency),
        path,
        bodies,
        args.seconds,
        warm_up=False,
    )
    after = cache_state(server.port, model)
    out = CacheCell(
        model,
        workload,
        config,
        concurrency,
        cell.rps,
        cell.p50_ms,
        cell.p99_ms,
        errors=cell.errors,
        server_cpu=cell.server_cpu,
        cpu_us_per_request=cell.server_cpu / cell.rps * 1e6 if cell.rps else 0.0,
    )
    if config != "off" and not after.get("enabled"):
        out.redis = "not cached"
    if after.get("enabled"):
        looked = after["rows_looked_up"] - before["rows_looked_up"]
        out.hit_ratio = (after["rows_hit"] - before["rows_hit"]) / looked if looked else None
        out.redis = str(after["redis"]).split(":")[0]
    return out


def _same_round(bodies: list[bytes], warm: list[bytes], _: int) -> tuple[list[bytes], list[bytes]]:
    return bodies, warm


def _unique_round(
    rows: np.ndarray, first: int, per_set: int, copies: int, r: int
) -> tuple[list[bytes], list[bytes]]:
    """Round ``r``'s unique rows: copies of their own, measured then warm-up."""
    offset = first + r * per_set
    measured = unique_bodies(rows, UNIQUE_BODIES, offset=offset)
    return measured, unique_bodies(rows, UNIQUE_BODIES // 10, offset=offset + copies)


def _median(samples: list[CacheCell]) -> CacheCell:
    """The median round stands for the cell; every round's req/s is kept."""
    cell = median_round(samples)
    cell.rounds_rps = [s.rps for s in samples]
    return cell


def _progress(cell: CacheCell) -> None:
    hit = "-" if cell.hit_ratio is None else f"{cell.hit_ratio:.0%}"
    print(
        f"  cache {cell.model:<10} {cell.workload:<6} {cell.config:<12} c={cell.concurrency:<3} "
        f"{cell.rps:>9.0f} req/s hit {hit}",
        file=sys.stderr,
        flush=True,
    )


def cache_ratios(cells: list[CacheCell]) -> dict[str, Any]:
    by = {(c.model, c.workload, c.config, c.concurrency): c for c in cells}
    out: dict[str, Any] = {}
    large = [k for k in by if k[0] == "xgb_large" and k[1] == "zipf" and k[2] == "off"]
    for model, workload, _, c in large:
        off, on = by[(model, workload, "off", c)], by.get((model, workload, "memory+redis", c))
        if on and off.rps:
            key = f"xgb_large zipf c={c}: memory+redis / off throughput (target >= 3)"
            out[key] = round(on.rps / off.rps, 2)
        if on and on.cpu_us_per_request:
            key = f"xgb_large zipf c={c}: memory+redis / off, by server CPU per request"
            out[key] = round(off.cpu_us_per_request / on.cpu_us_per_request, 2)
    small = [k for k in by if k[0] == "xgb_small" and k[2] == "off"]
    for model, workload, _, c in small:
        off = by[(model, workload, "off", c)]
        for config in ("memory", "memory+redis", "memory,forced"):
            on = by.get((model, workload, config, c))
            if on and off.rps and on.cpu_us_per_request:
                key = f"xgb_small {workload} c={c}: {config} / off (target >= 0.95)"
                out[key] = (
                    f"throughput {on.rps / off.rps:.2f}, by server CPU per request "
                    f"{off.cpu_us_per_request / on.cpu_us_per_request:.2f}"
                )
    return out


def print_cache_report(report: dict[str, Any]) -> None:
    print(
        f"\ntabserve bench --suite cache: load generator {report['loadgen']} (and Redis) pinned "
        f"to cpu {report['loadgen_cpu']}, server pinned to cpu {report['server_cpu']}, "
        f"{report['seconds_per_cell']}s per cell, median of {report.get('repeat', 1)} round(s), "
        f"one worker; zipf s={report['zipf_s']} over "
        f"{report['distinct_rows']} distinct hold-out rows; unique = no row sent twice"
    )
    cells = report["cells"]
    keys = sorted(
        {(c["model"], c["workload"], c["concurrency"]) for c in cells},
        key=lambda k: (k[0], k[1] != "zipf", -k[2]),
    )
    configs = [cfg for cfg in CONFIGS if any(c["config"] == cfg for c in cells)]
    header = f"{'model':<10} {'traffic':<7} {'conc':>4} " + " ".join(
        f"| {cfg:^42}" for cfg in configs
    )
    sub = f"{'':<10} {'':<7} {'':>4} " + " ".join(
        f"| {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'cpu us':>7} {'hit':>4} {'redis':>4}"
        for _ in configs
    )
    print(header)
    print(sub)
    print("-" * len(sub))
    by = {(c["model"], c["workload"], c["concurrency"], c["config"]): c for c in cells}
    for model, workload, conc in keys:
        parts = []
        for cfg in configs:
            c = by.get((model, workload, conc, cfg))
            if c is None:
                parts.append(f"| {'-':>42}")
                continue
            hit = "-" if c["hit_ratio"] is None else f"{c['hit_ratio']:.0%}"
            redis = {"on": "on", "skipped": "skip", "not cached": "n/c"}.get(c["redis"], "-")
            err = f" E{c['errors']}" if c["errors"] else ""
            parts.append(
                f"| {c['rps']:>8.0f} {c['p50_ms']:>7.3f} {c['p99_ms']:>7.3f} "
                f"{c['cpu_us_per_request']:>7.1f} {hit:>4} "
                f"{redis:>4}{err}"
            )
        print(f"{model:<10} {workload:<7} {conc:>4} " + " ".join(parts))
    print("(cpu us: server CPU per request; hit: rows answered from the cache over the measured")
    print(" seconds; redis: the model's Redis policy,")
    print(" 'skip' = inference is cheaper than a round trip, so Redis is not asked;")
    print(" n/c = not cached: one-row inference costs no more than a cache miss adds; 'forced':")
    print(" a TTL set for every model overrides that rule)")
    if report.get("repeat", 1) > 1:
        print("\nrounds (req/s of each round, configurations measured in turn within a round):")
        for model, workload, conc in keys:
            line = "; ".join(
                f"{cfg} "
                + ", ".join(f"{r:.0f}" for r in by[(model, workload, conc, cfg)]["rounds_rps"])
                for cfg in configs
                if (model, workload, conc, cfg) in by
            )
            print(f"  {model} {workload} c={conc}: {line}")
    print("\ncache ratios:")
    for k, v in report["ratios"].items():
        print(f"  {k}: {v}")
