"""The ``tabserve retrain NAME`` command line: options, exit status, the report.

The retraining itself is :mod:`export.retrain`. ``--help`` imports neither scikit-learn, XGBoost
nor pandas (they load only when a retrain runs).

Exit status: 0 published (or, with ``--dry-run``, would be), 1 not published (not better by the
margin, or the candidate failed its checks), 2 a user error (one line, no traceback), too few
labels after ``--wait-s`` included.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from export.prediction_log import PredictionLogError
from export.progress import Progress
from export.retrain import (
    MIN_POSITIVES,
    RetrainRefused,
    RetrainResult,
    RetrainSettings,
    retrain,
)
from server.errors import ExportError
from server.routing import RoutingError


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number, 0 or more, got {value}")
    return value


def _seconds(text: str) -> float:
    value = _non_negative(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``2026-12-07T15:02:11+00:00``, a trailing ``Z`` too) as an aware UTC
    datetime; one without an offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time like 2026-12-07T15:02:11+00:00, got {text!r}"
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tabserve retrain",
        description="Retrain a bundled model from its recipe on the labelled rows of its "
        "prediction log, split by time: train on the older rows, evaluate on the newest "
        "labelled window. The candidate and the serving version are compared on that window "
        "(PR-AUC for a binary classifier, macro-F1 for multiclass, MAE for a regressor), and "
        "the candidate is published as a new version only if it is better by the margin; the "
        "serving version is pinned as primary first, so the candidate does not answer until "
        "it is promoted. Exit status 0: published; 1: not published, and why; 2: a usage "
        "error, or too few labels. Bring-your-own models have no recipe and are refused.",
    )
    p.add_argument("name", metavar="NAME", help="the model to retrain")
    p.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("TABSERVE_MODELS_DIR", "models")),
        metavar="DIR",
        help="model repository (default: $TABSERVE_MODELS_DIR, else ./models)",
    )
    p.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the prediction log (default: $TABSERVE_PREDICTION_LOG_DIR; one is required)",
    )
    p.add_argument(
        "--since",
        type=parse_time,
        default=None,
        metavar="TIME",
        help="use only the rows answered at or after this ISO 8601 time, e.g. "
        "2026-12-07T15:02:11+00:00 or ...Z (no offset: UTC), to train and evaluate; older "
        "rows, and the log's days before it, are not read (default: the whole log)",
    )
    p.add_argument(
        "--eval-fraction",
        type=_fraction,
        default=0.3,
        metavar="F",
        help="newest share of the labelled rows that evaluates both models (default 0.3)",
    )
    p.add_argument(
        "--min-labels",
        type=_positive,
        default=200,
        metavar="N",
        help="refuse with fewer labelled logged rows (default 200); a binary model also "
        f"needs {MIN_POSITIVES} positives in the training rows and in the window",
    )
    p.add_argument(
        "--wait-s",
        type=_non_negative,
        default=0.0,
        metavar="S",
        help="with too few labels, read the log again every --poll-s seconds for up to S "
        "seconds until there are enough, then refuse (default 0: refuse at once)",
    )
    p.add_argument(
        "--poll-s",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="seconds between reads of the log while waiting for labels (default 5)",
    )
    p.add_argument(
        "--with-original",
        action="store_true",
        help="also train on the original training data, regenerated from the card's dataset "
        "source (the bundled generators are deterministic)",
    )
    p.add_argument(
        "--margin",
        type=_non_negative,
        default=0.01,
        help="how much better the candidate must be: PR-AUC points (binary), macro-F1 points "
        "(multiclass), or a share of the serving MAE (regression); default 0.01",
    )
    p.add_argument(
        "--shadow",
        action="store_true",
        help="put the published candidate in shadow (it scores a copy of the traffic)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="train and compare, publish nothing (exit 0 when it would publish)",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the candidate's training (default 0)"
    )
    return p


def _error(message: str) -> int:
    print(f"tabserve retrain: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    log_dir = args.log_dir or os.environ.get("TABSERVE_PREDICTION_LOG_DIR")
    if not log_dir:
        return _error("no prediction log: give --log-dir DIR or set TABSERVE_PREDICTION_LOG_DIR")
    settings = RetrainSettings(
        name=args.name,
        models_dir=args.models_dir,
        log_dir=Path(log_dir),
        eval_fraction=args.eval_fraction,
        min_labels=args.min_labels,
        with_original=args.with_original,
        margin=args.margin,
        shadow=args.shadow,
        dry_run=args.dry_run,
        seed=args.seed,
        since=args.since,
        wait_s=args.wait_s,
        poll_s=args.poll_s,
    )
    try:
        result = retrain(settings, Progress(args.name))
    except (RetrainRefused, PredictionLogError, RoutingError) as exc:
        return _error(str(exc))
    except ExportError as exc:
        print(f"tabserve retrain: not published: {exc.detail}", file=sys.stderr)
        return 1
    except OSError as exc:
        return _error(f"{exc.filename or settings.models_dir}: {exc.strerror or exc}")
    print(result.to_json() if args.json else report(result))
    return 0 if result.published_version is not None or (result.dry_run and result.better) else 1


def report(r: RetrainResult) -> str:
    """The result as a few lines of text."""
    positives = f", {r.window.positives} positive" if r.window.positives is not None else ""
    since = f" answered since {r.since}" if r.since is not None else ""
    waited = f"; waited {r.waited_s:.0f} s for labels" if r.waited_s >= 0.5 else ""
    lines = [
        f"{r.name}: serving version {r.serving_version} against a candidate from recipe {r.recipe}",
        f"labels: {r.labels} read, {r.labelled_rows} logged rows labelled, "
        f"{r.unmatched_labels} without a logged row, {r.superseded_labels} superseded by a "
        f"newer label ({r.rows_logged} rows logged{since}){waited}",
        f"training: {r.train_logged} logged rows ({r.validation} newest as validation)"
        + (f" + {r.train_original} original rows" if r.train_original else ""),
        f"evaluation window: {r.window.rows} rows{positives}, answered {r.window.first} to "
        f"{r.window.last}",
        f"{r.metric} on the window: serving {r.serving:.4f}, candidate {r.candidate:.4f}",
        *r.notes,
    ]
    if r.published_version is not None:
        shadow = f", shadow {r.routing['shadow']}" if r.routing["shadow"] is not None else ""
        lines.append(
            f"published {r.name}/{r.published_version}: {r.reason}; primary "
            f"{r.routing['primary']}{shadow} (promote it to make it answer)"
        )
    elif r.dry_run and r.better:
        lines.append(f"dry run, not published: it would be ({r.reason})")
    else:
        lines.append(f"not published: {r.reason}")
    return "\n".join(lines)
