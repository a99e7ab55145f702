"""``tabserve export``: build the bundled models, list the repository, convert your own model."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from server.errors import TabserveError

JOBLIB_WARNING = (
    "WARNING: a joblib (pickle) file runs arbitrary code when it is loaded; convert only model "
    "files you trust. XGBoost .json/.ubj files are data only."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tabserve export",
        description="Train, evaluate, convert to ONNX, verify parity and publish models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{build,list,convert}")

    build = sub.add_parser(
        "build",
        help="build the bundled models (idempotent: unchanged inputs make no new version)",
        description="Build every bundled model into the repository. A model whose inputs "
        "(recipe, data, seed, library versions) are unchanged gets no new version.",
    )
    build.add_argument("--models-dir", type=Path, default=Path("models"))
    build.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when the repository already holds at least one valid model",
    )
    build.add_argument("--only", nargs="+", metavar="NAME", help="build only these models")
    build.add_argument("--rows", type=int, default=100_000, help="fraud data rows (default 100000)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--n-jobs", type=int, default=2, help="training threads (default 2)")

    listing = sub.add_parser("list", help="show the repository as a table")
    listing.add_argument("--models-dir", type=Path, default=Path("models"))

    convert = sub.add_parser(
        "convert",
        help="convert your own saved model (sklearn joblib or XGBoost JSON/UBJ)",
        description="Convert a saved scikit-learn classifier or Pipeline (joblib) or an XGBoost "
        "model (.json/.ubj) into a repository entry: ONNX, parity, metrics, cost and drift "
        "reference. The hold-out CSV is split in half (stratified): the validation half picks "
        "the F1-optimal threshold and gives the drift reference, the test half gives the metrics. "
        + JOBLIB_WARNING,
        epilog=JOBLIB_WARNING,
    )
    convert.add_argument(
        "--model", type=Path, required=True, help="joblib file (runs code!) or XGBoost .json/.ubj"
    )
    convert.add_argument(
        "--holdout", type=Path, required=True, help="CSV of labelled rows with a header"
    )
    convert.add_argument("--label-column", required=True, help="the CSV's 0/1 label column")
    convert.add_argument("--name", required=True, help="model name in the repository")
    convert.add_argument("--models-dir", type=Path, default=Path("models"))
    convert.add_argument("--seed", type=int, default=0, help="seed of the hold-out split")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            return _build(args)
        if args.command == "list":
            return _list(args.models_dir)
        return _convert(args)
    except TabserveError as exc:
        print(f"tabserve export: error: {exc.detail}", file=sys.stderr)
        return 1


def _build(args: argparse.Namespace) -> int:
    from export.build import BuildSettings, build_all
    from export.repository import valid_cards

    if args.if_missing and valid_cards(args.models_dir):
        print(f"{args.models_dir} already holds models; nothing to build", file=sys.stderr)
        return 0
    start = time.perf_counter()
    settings = BuildSettings(models_dir=args.models_dir, seed=args.seed, n_jobs=args.n_jobs)
    try:
        results = build_all(settings, rows=args.rows, only=args.only)
    except ValueError as exc:
        print(f"tabserve export: error: {exc}", file=sys.stderr)
        return 2
    new = sum(r.published for r in results)
    print(
        f"built {len(results)} models ({new} new versions) in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    return 0


def _list(models_dir: Path) -> int:
    from export.repository import list_versions

    cards, problems = list_versions(models_dir)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if not cards:
        print(f"no models in {models_dir}")
        return 0
    header = ["name", "version", "PR-AUC", "F1", "µs/row@64", "µs@1", "size", "parity"]
    rows = [
        [
            c.name,
            str(c.version),
            f"{c.metrics.pr_auc:.3f}",
            f"{c.metrics.f1:.3f}",
            f"{c.cost.us_per_row_batch64:.2f}",
            f"{c.cost.us_batch1:.1f}",
            _size(c.onnx.size_bytes),
            f"{c.parity.max_abs_diff:.1e}",
        ]
        for c in cards
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
    return 0


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


def _convert(args: argparse.Namespace) -> int:
    from export.byo import convert
    from export.progress import Progress

    if args.model.suffix.lower() not in (".json", ".ubj"):
        print(JOBLIB_WARNING, file=sys.stderr)
    result = convert(
        args.model,
        args.holdout,
        args.label_column,
        args.name,
        args.models_dir,
        seed=args.seed,
        progress=Progress(args.name),
    )
    card = result.card
    state = "published" if result.published else "unchanged, already"
    print(f"{state} {card.name}/{card.version} in {args.models_dir}")
    return 0
