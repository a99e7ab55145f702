"""tabserve loadtest: run the accuracy-versus-speed sweep, or re-render a run's report.

    tabserve loadtest sweep --quick [--budget "p99<=5ms@500rps"] [--models a,b]
    tabserve loadtest sweep --full
    tabserve loadtest sweep --quick --groups capacity,overload   (the overload comparison alone)
    tabserve loadtest report loadtests/runs/<run> [--budget "p99<=2ms@1000rps"]

Single scenarios run with plain Locust; see loadtests/locustfile.py.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from loadtests.budget import DEFAULT_BUDGET, Budget, parse_budget
from loadtests.labels import GROUP_TITLES

GROUPS = tuple(GROUP_TITLES)
"""The sweep's groups of cells (``--groups``)."""


def _budget(text: str) -> Budget | None:
    if text.strip().lower() == "none":
        return None
    try:
        return parse_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"user counts must be positive, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tabserve loadtest",
        description="Load-test the server with Locust: run the accuracy-versus-speed sweep, or "
        "re-render a finished run's report. Single scenarios run with plain Locust (see "
        "loadtests/locustfile.py).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sweep = sub.add_parser(
        "sweep",
        help="run Locust over the configuration matrix and write a report",
        description="Start a server per configuration (model, batching, cache), drive it with "
        "Locust at each concurrency, and write results.json, REPORT.md and plots into a new "
        "folder under --out. Builds the bundled models first when the repository is empty.",
    )
    mode = sweep.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="about ten minutes: up to 6 fraud models and the bundled models with string "
        "columns (pricing regression, returns multiclass) x 2 concurrencies, 8 s per cell "
        "(default)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="all models, 4 concurrencies, more batching and cache variants, 30 s per cell",
    )
    sweep.set_defaults(mode="quick")
    sweep.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("TABSERVE_MODELS_DIR", "models")),
        metavar="DIR",
        help="model repository (default: $TABSERVE_MODELS_DIR, else ./models)",
    )
    sweep.add_argument("--models", default="", help="comma-separated models (default: per mode)")
    sweep.add_argument(
        "--budget",
        type=_budget,
        default=parse_budget(DEFAULT_BUDGET),
        help="latency budget the report answers (which model to deploy), default "
        f'"{DEFAULT_BUDGET}"; adds one cell per model paced at its rate; "none": no paced '
        "cells (the report then infers the answer from the closed-loop cells)",
    )
    sweep.add_argument(
        "--note", default="", help="a line for the report, e.g. what else ran on the machine"
    )
    sweep.add_argument("--seconds", type=float, default=None, help="seconds of load per cell")
    sweep.add_argument(
        "--users", type=_int_list, default=None, help="concurrency levels, e.g. 1,16"
    )
    sweep.add_argument(
        "--out", type=Path, default=Path("loadtests/runs"), help="folder for run folders"
    )
    sweep.add_argument(
        "--server-cpus", default="0", help="taskset CPU list for the server ('' = no pin)"
    )
    sweep.add_argument(
        "--client-cpus", default="1", help="taskset CPU list for Locust ('' = no pin)"
    )
    sweep.add_argument("--workers", type=int, default=1, help="server worker processes")
    sweep.add_argument(
        "--groups",
        default="",
        help="run only these groups of cells, comma-separated, of: "
        + ", ".join(GROUPS)
        + " (default: all); e.g. capacity,overload: the overload comparison alone",
    )
    sweep.add_argument(
        "--overload-budget-ms",
        type=float,
        default=50.0,
        metavar="MS",
        help="latency budget of each overload request (X-Latency-Budget-Ms) and the degrade "
        "objective (default 50)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="print the cells and exit")

    sub.add_parser(
        "loop",
        add_help=False,
        help="the closed loop on a real server: drift, retrain, shadow, promotion (see "
        "'tabserve loadtest loop --help')",
    )
    report = sub.add_parser(
        "report",
        help="re-render REPORT.md and the plots from results.json",
        description="Re-render a finished run's REPORT.md and plots from its results.json, "
        "optionally answering another latency budget; prints the report.",
    )
    report.add_argument(
        "run_dir", type=Path, help="a run folder holding results.json, e.g. loadtests/runs/<run>"
    )
    report.add_argument("--budget", type=_budget, default=None, help="answer this budget instead")
    return parser


def main(argv: list[str]) -> int:
    if argv[:1] == ["loop"]:  # its own options (loadtests.closed_loop)
        from loadtests.closed_loop import main as loop_main

        return loop_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "report":
        from loadtests.report import render

        if not (args.run_dir / "results.json").is_file():
            return _error(f"no results.json in {args.run_dir}")
        print(render(args.run_dir, args.budget))
        return 0

    from loadtests.holdout import available_models
    from loadtests.sweep import SweepOptions, run

    if args.seconds is not None and not 1 <= args.seconds <= 3600:
        return _error("--seconds must be between 1 and 3600")
    if args.workers < 1:
        return _error("--workers must be at least 1")
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] or None
    unknown = sorted(set(groups or []) - set(GROUPS))
    if unknown:
        return _error(f"unknown groups {unknown}; choose from {', '.join(GROUPS)}")
    if not 1 <= args.overload_budget_ms <= 60_000:
        return _error("--overload-budget-ms must be between 1 and 60000")
    options = SweepOptions(
        models_dir=args.models_dir,
        out_root=args.out,
        mode=args.mode,
        models=[m for m in args.models.split(",") if m] or None,
        budget=args.budget,
        seconds=args.seconds,
        users=args.users,
        server_cpus=args.server_cpus or None,
        client_cpus=args.client_cpus or None,
        workers=args.workers,
        note=args.note,
        groups=groups,
        budget_ms=args.overload_budget_ms,
    )
    if not args.dry_run and not available_models(args.models_dir):
        # A fresh clone: build the bundled models first, as `make serve` does.
        from export.cli import main as export_main

        print(f"no models under {args.models_dir}: building the bundled models first", flush=True)
        if export_main(["build", "--models-dir", str(args.models_dir)]) != 0:
            return 2
    try:
        run(options, dry_run=args.dry_run, progress=functools.partial(print, flush=True))
    except SystemExit as exc:  # the sweep refuses a user mistake (unknown model, ...) this way
        if isinstance(exc.code, str):
            return _error(exc.code)
        raise
    return 0


def _error(message: str) -> int:
    """A user mistake: one line on stderr, exit status 2 (as argparse does for bad options)."""
    print(f"tabserve loadtest: error: {message}", file=sys.stderr)
    return 2
