"""tabserve export: build the bundled models, list the repository, convert your own model."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from server.errors import ExportError, TabserveError
from server.modelcard import BinaryMetrics, Label, Metrics, ModelCard, MulticlassMetrics

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
        "--ladder",
        action="store_true",
        help="also export every tree ensemble's cheaper variants (its first 1/8, 1/4 and 1/2 of "
        "the boosting rounds or trees), each parity-checked, evaluated and costed, recorded in "
        "the card's variants",
    )
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
        description="Show the latest version of every model in the repository: its task and "
        "headline metric on the hold-out split (PR-AUC for binary classifiers, macro-F1 for "
        "multiclass, RMSE for regressors), ONNX Runtime cost per row at batch 64 and per call "
        "at batch 1, file size and the ONNX-versus-native parity. Broken versions are listed "
        "on stderr.",
    )
    _models_dir_option(listing)
    listing.add_argument(
        "--variants",
        action="store_true",
        help="show the ladder instead: each model version that has cheaper variants, one row "
        "per variant (its trees, metric, cost, size and parity) under the full model's row",
    )

    convert = sub.add_parser(
        "convert",
        help="convert your own saved model (scikit-learn joblib or XGBoost JSON/UBJ)",
        description="Convert a saved scikit-learn classifier, regressor or Pipeline (joblib) or "
        "an XGBoost model (.json/.ubj) into a repository entry: ONNX, parity, metrics, cost and "
        "drift reference. The task comes from the model (a classifier's classes, or a "
        "regressor). The CSV holds raw values: numbers, true/false, and category values as the "
        "model was trained on them (strings for a string column). It is split in half "
        "(stratified by class for a classifier): the validation half picks a binary "
        "classifier's F1-optimal threshold and gives the drift reference, the test half gives "
        "the metrics and the parity check.",
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
    convert.add_argument(
        "--label",
        "--label-column",
        dest="label_column",
        required=True,
        metavar="COLUMN",
        help="the CSV's label column: the class (as the model's classes are spelled) or a "
        "regressor's target",
    )
    convert.add_argument(
        "--task",
        choices=["binary", "multiclass", "regression"],
        help="check that the model is this kind (the task is read from the model)",
    )
    convert.add_argument(
        "--positive-class",
        metavar="CLASS",
        help="a binary classifier's positive class, as the CSV spells it; needed unless the "
        "classes are 0/1, false/true, no/yes, n/y, negative/positive or neg/pos",
    )
    convert.add_argument(
        "--categories",
        action="append",
        default=[],
        metavar="COLUMN=V0,V1,...",
        help="an XGBoost categorical feature's categories in code order, for a model trained on "
        "category codes (a model fitted on a DataFrame with category columns records them)",
    )
    convert.add_argument(
        "--categories-file",
        type=Path,
        metavar="FILE",
        help='the same for many columns: a JSON object {"column": ["v0", "v1", ...], ...}',
    )
    convert.add_argument(
        "--ladder",
        action="store_true",
        help="also export the cheaper variants of an XGBoost model or a random forest (its "
        "first 1/8, 1/4 and 1/2 of the boosting rounds or trees), each parity-checked, "
        "evaluated and costed, recorded in the card's variants; other models get none",
    )
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
            return _list(args.models_dir, variants=args.variants)
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
        models_dir=args.models_dir,
        seed=args.seed,
        n_jobs=n_jobs,
        cross_validate=args.full,
        ladder=args.ladder,
    )
    results = build_all(settings, rows=args.rows, only=args.only)
    new = sum(r.published for r in results)
    print(
        f"built {len(results)} models ({new} new versions) in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    return 0


def _list(models_dir: Path, *, variants: bool = False) -> int:
    from export.repository import list_versions

    cards, problems = list_versions(models_dir)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if not cards:
        print(f"no models in {models_dir}")
        return 0
    if variants:
        return _list_variants(cards, models_dir)
    header = ["name", "version", "task", "metric", "value", "µs/row@64", "µs@1", "size", "parity"]
    rows = [
        [
            c.name,
            str(c.version),
            c.task,
            *_headline(c.metrics),
            f"{c.cost.us_per_row_batch64:.2f}",
            f"{c.cost.us_batch1:.1f}",
            _size(c.onnx.size_bytes),
            f"{c.parity.max_abs_diff:.1e}",
        ]
        for c in cards
    ]
    _print_table(header, rows)
    return 0


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))


def _list_variants(cards: list[ModelCard], models_dir: Path) -> int:
    """The ladder of every version that has one: the full model's row, then its variants'."""
    laddered = [c for c in cards if c.variants]
    if not laddered:
        print(f"no model in {models_dir} has variants")
        return 0
    header = ["name", "version", "variant", "trees", "metric", "value", "µs/row@64", "µs@1"]
    header += ["size", "parity"]
    rows: list[list[str]] = []
    for c in laddered:
        trees = c.params.get("trees_after_early_stopping", c.params.get("n_estimators", "-"))
        entries = [("full", str(trees), c.metrics, c.cost, c.onnx.size_bytes, c.parity)]
        entries += [
            (v.name, str(v.trees), v.metrics, v.cost, v.onnx.size_bytes, v.parity)
            for v in c.variants
        ]
        rows += [
            [
                c.name,
                str(c.version),
                name,
                n,
                *_headline(metrics),
                f"{cost.us_per_row_batch64:.2f}",
                f"{cost.us_batch1:.1f}",
                _size(size),
                f"{parity.max_abs_diff:.1e}",
            ]
            for name, n, metrics, cost, size, parity in entries
        ]
        if c.cascade is not None:
            cascade = c.cascade
            cost = f"{cascade.us_per_row_batch64:.2f}"
            used = f"{cascade.variant}+full"
            headline = _headline(cascade.metrics)
            rows.append([c.name, str(c.version), "cascade", used, *headline, cost, "-", "-", "-"])
    _print_table(header, rows)
    for c in laddered:
        if c.cascade is not None:
            print(
                f"{c.name} {c.version} cascade: {c.cascade.variant} answers every row, the full "
                f"model the rows {c.cascade.variant} scores in [{c.cascade.low:.4f}, "
                f"{c.cascade.high:.4f}] ({c.cascade.escalated_share:.1%} of the hold-out rows)"
            )
    return 0


def _headline(metrics: Metrics) -> list[str]:
    """The metric a table shows for a task: PR-AUC, macro-F1 or RMSE (hold-out test rows)."""
    if isinstance(metrics, BinaryMetrics):
        return ["PR-AUC", f"{metrics.pr_auc:.3f}"]
    if isinstance(metrics, MulticlassMetrics):
        return ["macro-F1", f"{metrics.macro_f1:.3f}"]
    return ["RMSE", f"{metrics.rmse:.4g}"]


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


def _convert(args: argparse.Namespace) -> int:
    from export.byo import convert
    from export.progress import Progress

    categories = _categories(args.categories, args.categories_file)
    if args.model.is_file() and args.model.suffix.lower() not in (".json", ".ubj"):
        print(JOBLIB_WARNING, file=sys.stderr)
    try:
        result = convert(
            args.model,
            args.holdout,
            args.label_column,
            args.name,
            args.models_dir,
            seed=args.seed,
            progress=Progress(args.name),
            positive_class=args.positive_class,
            task=args.task,
            categories=categories,
            ladder=args.ladder,
        )
    except OSError as exc:
        return _error(f"{exc.filename or args.models_dir}: {exc.strerror or exc}")
    card = result.card
    state = "published" if result.published else "unchanged, already"
    print(f"{state} {card.name}/{card.version} in {args.models_dir}")
    return 0


def _categories(options: list[str], path: Path | None) -> dict[str, list[Label]]:
    """``--categories COLUMN=V0,V1,...`` and ``--categories-file`` as column → categories
    (ints when every value is a whole number, else strings)."""
    import json

    raw: dict[str, list[str]] = {}
    if path is not None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ExportError(f"categories file {path}: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ExportError(f"categories file {path}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or not all(
            isinstance(v, list) and v and all(isinstance(x, (str, int)) for x in v)
            for v in doc.values()
        ):
            raise ExportError(
                f"categories file {path}: expected a JSON object of non-empty lists of strings "
                "or ints per column"
            )
        raw.update({str(k): [str(x) for x in v] for k, v in doc.items()})
    for option in options:
        column, sep, values = option.partition("=")
        items = [v.strip() for v in values.split(",")]
        if not sep or not column.strip() or not all(items):
            raise ExportError(f"--categories {option!r}: expected COLUMN=VALUE0,VALUE1,...")
        raw[column.strip()] = items
    out: dict[str, list[Label]] = {}
    for column, items in raw.items():
        if len(set(items)) != len(items):
            raise ExportError(f"categories of {column!r} repeat a value: {items}")
        whole = all(item.lstrip("-").isdigit() for item in items)
        out[column] = [int(item) for item in items] if whole else list(items)
    return out
