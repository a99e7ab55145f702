"""``tabserve bench``: options, and the suites they select."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from loadtests.bench.cache import print_cache_report, run_cache
from loadtests.bench.serving import DEFAULT_MODELS, placement, print_report, run
from loadtests.bench.shadow import print_shadow_report, run_shadow
from loadtests.bench.typed import print_typed_report, run_typed


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tabserve bench",
        description=(
            "Measure the serving path on loopback: one server pinned to one core, the load "
            "generator (wrk if installed, else a built-in client) on the other. Prints req/s, "
            "p50/p99 latency, CPU per request and the ratios between cells."
        ),
    )
    p.add_argument(
        "--models-dir",
        default=os.environ.get("TABSERVE_MODELS_DIR", "models"),
        help="model repository to serve (default: $TABSERVE_MODELS_DIR or ./models)",
    )
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    p.add_argument("--concurrency", default="1,64", help="comma-separated connection counts")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds per cell (the cells of a round alternate); the median round is shown",
    )
    p.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator: wrk, the built-in asyncio client, or wrk when installed (auto)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin server and load generator")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="TABSERVE_X=V",
        help="extra server settings, e.g. TABSERVE_MAX_DELAY_MS=0.5 (repeatable)",
    )
    p.add_argument(
        "--open-share",
        type=float,
        default=0.5,
        help="the serving suite's open-loop tail cells send one-row predict at this share of "
        "the closed loop's req/s (latency from each request's scheduled time); 0: none",
    )
    p.add_argument(
        "--tail-seconds",
        type=float,
        default=10.0,
        help="seconds per round of an open-loop tail cell (enough requests for a p99.9)",
    )
    p.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    p.add_argument(
        "--suite",
        choices=["all", "serving", "cache", "typed", "shadow"],
        default="all",
        help="serving (floors, predict, batching, ONNX Runtime alone), cache, typed (3 string "
        "+ 20 numeric columns against 23 numeric: server CPU per request), shadow (what a "
        "shadow model costs the primary: the first of --models answers, the second is the "
        "costlier shadow), or all four",
    )
    p.add_argument("--zipf-s", type=float, default=1.0, help="Zipf exponent of the cache suite")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    report: dict[str, Any] = {}
    if args.suite in ("all", "serving"):
        report = run(args)
        print_report(report)
    if args.suite in ("all", "cache"):
        report["cache"] = run_cache(args, *placement(args))
        print_cache_report(report["cache"])
    if args.suite in ("all", "typed"):
        report["typed"] = run_typed(args, *placement(args))
        print_typed_report(report["typed"])
    if args.suite in ("all", "shadow"):
        report["shadow"] = run_shadow(args, *placement(args))
        print_shadow_report(report["shadow"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0
