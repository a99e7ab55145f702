"""tabserve export: build the bundled models, list the repository, convert your own model."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from server.errors import TabserveError

JOBLIB_WARNING = (
    "WARNING: a joblib (pickle) file runs arbitrary code when it is loaded; convert only model "
    "files you trust. XGBoost .json/.ubj files are data only."
)
MIN_ROWS = 2_000
"""Fewer fraud rows leave too few positives to split, stop early and evaluate."""


def _positive_int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _models_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("TABSERVE_MODELS_DIR", "models")),
        metavar="DIR",
        help="model repository (default: $TABSERVE_MODELS_DIR, else ./models)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tabserve export",
        description="Train, evaluate, convert to ONNX, verify parity and publish models.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{build,list,convert}")

    build = sub.add_parser(
        "build",
        help="build the bundled models (unchanged inputs make no new version)",
        description="Build every bundled model into the repository: train, convert to ONNX, "
        "check parity, evaluate on the hold-out split, measure the inference cost and publish. "
        "A model whose inputs (recipe, data, seed, library versions) are unchanged gets no new "
        "version. Cross-validation is skipped unless --full is given; the model card then "
        "records no cross-validated PR-AUC (null) rather than a guess.",
    )
    _models_dir_option(build)
    build.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when the repository already holds at least one valid model",
    )
    build.add_argument(
        "--full",
        action="store_true",
        help="also run 3-fold cross-validation of every model and record its PR-AUC in the card "
        "(about 30 s more on 2 idle cores)",
    )
    build.add_argument("--only", nargs="+", metavar="NAME", help="build only these models")
    build.add_argument(
        "--rows",
        type=_positive_int(MIN_ROWS),
        default=100_000,
        help="rows of the synthetic fraud data (default 100000)",
    )
    build.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data, the splits and the training (default 0)",
    )
    build.add_argument(
        "--n-jobs",
        type=_positive_int(1),
        default=None,
        metavar="N",
        help="training threads (default: the usable cores minus those the load average says "
        "are busy, at least 1)",
    )

    listing = sub.add_parser(
        "list",
        help="show the repository as a table",
        description="Show the latest version of every model in the repository: PR-AUC and F1 "
        "on the hold-out split, ONNX Runtime cost per row at batch 64 and per call at batch 1, "
        "file size and the ONNX-versus-native parity. Broken versions are listed on stderr.",
    )
    _models_dir_option(listing)

    convert = sub.add_parser(
        "convert",
        help="convert your own saved model (scikit-learn joblib or XGBoost JSON/UBJ)",
        description="Convert a saved scikit-learn classifier or Pipeline (joblib) or an XGBoost "
        "model (.json/.ubj) into a repository entry: ONNX, parity, metrics, cost and drift "
        "reference. The hold-out CSV is split in half (stratified): the validation half picks "
        "the F1-optimal threshold and gives the drift reference, the test half gives the metrics.",
        epilog=JOBLIB_WARNING,
    )
    convert.add_argument(
        "--model",
        type=Path,
        required=True,
        metavar="FILE",
        help="joblib file (runs code when loaded) or XGBoost .json/.ubj file",
    )
    convert.add_argument(
        "--holdout",
        type=Path,
        required=True,
        metavar="CSV",
        help="CSV of labelled rows with a header row",
    )
    convert.add_argument("--label-column", required=True, help="the CSV's 0/1 label column")
    convert.add_argument("--name", required=True, help="model name in the repository")
    _models_dir_option(convert)
    convert.add_argument(
        "--seed", type=int, default=0, help="seed of the hold-out split in half (default 0)"
    )
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "build":
            return _build(args)
        if args.command == "list":
            return _list(args.models_dir)
        return _convert(args)
    except TabserveError as exc:
        return _error(exc.detail)


def _error(message: str) -> int:
    """A user mistake: one line on stderr, exit status 2 (as argparse does for bad options)."""
    print(f"tabserve export: error: {message}", file=sys.stderr)
    return 2


def _build(args: argparse.Namespace) -> int:
    from export.build import BUNDLED, BuildSettings, build_all
    from export.repository import valid_cards
    from export.threads import training_threads

    unknown = sorted(set(args.only or []) - set(BUNDLED))
    if unknown:
        return _error(f"unknown bundled model(s) {unknown}; choose from {list(BUNDLED)}")
    if args.if_missing and valid_cards(args.models_dir):
        print(f"{args.models_dir} already holds models; nothing to build", file=sys.stderr)
        return 0
    n_jobs = args.n_jobs or training_threads()
    names = args.only or list(BUNDLED)
    cv = "with 3-fold cross-validation" if args.full else "cross-validation off (--full runs it)"
    print(
        f"building {len(names)} models into {args.models_dir} with {n_jobs} training "
        f"thread{'s' if n_jobs > 1 else ''}, {cv}",
        file=sys.stderr,
        flush=True,
    )
    start = time.perf_counter()
    settings = BuildSettings(
        models_dir=args.models_dir, seed=args.seed, n_jobs=n_jobs, cross_validate=args.full
    )
    results = build_all(settings, rows=args.rows, only=args.only)
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

    if args.model.is_file() and args.model.suffix.lower() not in (".json", ".ubj"):
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
