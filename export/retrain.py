"""``tabserve retrain NAME``: retrain a bundled model on its labelled production rows, publish it
only if it beats the serving version on the newest labelled window.

1. The serving version: the routing's primary (``server.routing``), else the newest valid one.
   Its card names the recipe (``export.recipes``); a bring-your-own model has none and is refused.
2. The labelled rows: the prediction log joined to its labels (:mod:`export.prediction_log`),
   sorted by the time each row was answered. The newest ``eval_fraction`` is the evaluation
   window; the rest trains, its newest 20% held out as the validation split (early stopping, the
   binary threshold), as a build does. ``with_original`` adds the original training data,
   regenerated from the card's dataset source (older than every logged row: it only trains).
3. The candidate is trained by the recipe and goes through the build's own path
   (:func:`export.pipeline.publish_candidate`: ONNX, parity, metrics, cost) with the evaluation
   window as its test rows. Just before the new version would appear (``before_rename``), its
   card's metric on the window -- PR-AUC (binary), macro-F1 (multiclass), MAE (regression) of the
   ONNX model -- is compared with the serving version's, scored by ONNX Runtime from its own
   ``model.onnx`` through ``server.runner.Runner`` as the server scores it. Only a candidate better
   by the margin is published; before it appears, the serving version is pinned as primary when
   none is (else the newest version, the candidate, would answer at once). ``shadow`` then puts
   the candidate in shadow.

``since`` keeps only the rows answered at or after a time (the log's older concept must not
train the candidate, nor judge it). ``wait_s``: when there are too few labelled rows (or, binary,
positives) the log is read again every ``poll_s`` seconds until there are enough or the wait
ends -- labels arrive after the rows they label.

The command line is :mod:`export.retrain_cli`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from export.prediction_log import LabelledRows, read_labelled
from export.progress import Progress, quiet
from export.threads import training_threads
from server.errors import ExportError, InvalidModelCard
from server.modelcard import (
    CARD_FILE,
    BinaryMetrics,
    Metrics,
    ModelCard,
    MulticlassMetrics,
    Task,
    decode_card,
    load_card,
)
from server.routing import RoutingError, read_routing, update_routing

if TYPE_CHECKING:
    from export.data import Dataset
    from export.pipeline import Rows
    from export.recipes import Recipe

BYO_REFUSAL = (
    "bring-your-own models cannot be retrained by tabserve (no recipe): retrain yours and "
    "publish it with tabserve export convert"
)
VALIDATION_SHARE = 0.2
"""Newest share of the logged training rows held out for early stopping and the threshold."""
MIN_POSITIVES = 10
"""Binary: fewer positives in the training rows or in the window make either number noise."""
METRIC: dict[Task, str] = {"binary": "PR-AUC", "multiclass": "macro-F1", "regression": "MAE"}
ORIGINAL_DATA = "original_data"
"""Card params a retrained version carries: where the original training data came from, its
split seed and its training rows (train + validation), so that ``--with-original`` works again."""
ORIGINAL_SEED = "original_seed"
ORIGINAL_ROWS = "original_rows"
_GENERATED = re.compile(
    r"export\.data\.(?P<generator>make_fraud|pricing_dataset|returns_dataset)"
    r"\(n_rows=(?P<rows>\d+), seed=(?P<seed>-?\d+), shift=(?P<shift>[-+0-9.eE]+)\)"
)


class RetrainRefused(ExportError):
    """A retrain that cannot start or cannot be judged (a user error, exit status 2)."""


class TooFewLabels(RetrainRefused):
    """Too few labelled rows (or, binary, positives) yet: more labels may arrive."""

    def __init__(self, detail: str, waiting: str) -> None:
        super().__init__(detail)
        self.waiting = waiting
        """What is short, in a few words: ``812 of 2000 labelled rows``."""


@dataclass(frozen=True)
class RetrainSettings:
    name: str
    models_dir: Path
    log_dir: Path
    eval_fraction: float = 0.3
    min_labels: int = 200
    with_original: bool = False
    margin: float = 0.01
    """Binary: PR-AUC points; multiclass: macro-F1 points; regression: share of the serving
    version's MAE by which the candidate's must be lower."""
    shadow: bool = False
    dry_run: bool = False
    seed: int = 0
    n_jobs: int = field(default_factory=training_threads)
    cost_budget_s: float = 0.4
    """Seconds for each of the candidate's cost measurements (as a build)."""
    since: datetime | None = None
    """Only rows answered at or after this time train and evaluate (None: the whole log)."""
    wait_s: float = 0.0
    """How long to wait for enough labels, reading the log again every ``poll_s`` seconds."""
    poll_s: float = 5.0


@dataclass(frozen=True)
class Window:
    """The evaluation window: the newest labelled rows."""

    rows: int
    positives: int | None
    """Binary: rows labelled positive; None otherwise."""
    first: str
    last: str
    """When its oldest and newest rows were answered (ISO 8601, UTC)."""


@dataclass(frozen=True)
class RetrainResult:
    name: str
    serving_version: int
    recipe: str
    metric: str
    serving: float
    """The serving version's metric on the window."""
    candidate: float
    """The candidate's metric on the window (its ONNX model's)."""
    margin: float
    better: bool
    dry_run: bool
    published_version: int | None
    reason: str
    window: Window
    train_logged: int
    """Logged rows the candidate trained on, its validation rows included."""
    validation: int
    train_original: int
    labels: int
    labelled_rows: int
    unmatched_labels: int
    superseded_labels: int
    rows_logged: int
    routing: dict[str, int | None]
    """The routing after the run (primary None: the newest version answers)."""
    notes: list[str]
    since: str | None = None
    """Only rows answered at or after this time were used (ISO 8601, UTC)."""
    waited_s: float = 0.0
    """Seconds spent waiting for enough labels."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def retrain(
    settings: RetrainSettings,
    progress: Progress | None = None,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RetrainResult:
    """Train a candidate on the labelled log, compare it with the serving version on the newest
    window, publish it when better by the margin. Raise RetrainRefused (user errors; TooFewLabels
    after ``wait_s``), PredictionLogError, and ExportError when the candidate fails its checks
    (parity...). ``monotonic`` and ``sleep`` time the wait for labels."""
    from threadpoolctl import threadpool_limits

    s = settings
    progress = progress or quiet(s.name)
    serving = serving_card(s.models_dir, s.name)
    recipe = recipe_of(serving)
    started = monotonic()
    log, y, (fit, val, test) = wait_for_labels(s, serving, progress, monotonic, sleep)
    waited = monotonic() - started
    notes = [f"skipped {line}" for line in log.skipped]
    if log.vanished_files:
        notes.append(f"{log.vanished_files} log file(s) vanished while reading (disk bound)")
    original: Rows | None = None
    if s.with_original:
        original = original_rows(serving)
    with threadpool_limits(limits=s.n_jobs):
        serving_score = score_serving(s.models_dir, serving, log.X[test], y[test], y[fit])
        outcome = _Outcome()
        try:
            published = _train_and_publish(
                s,
                serving,
                recipe,
                log,
                y,
                (fit, val, test),
                original,
                serving_score,
                outcome,
                progress,
            )
        except _Declined:
            published = None
    assert outcome.score is not None  # the gate ran: published or declined
    routing = read_routing(s.models_dir, s.name)
    return RetrainResult(
        name=s.name,
        serving_version=serving.version,
        recipe=recipe.name,
        metric=METRIC[serving.task],
        serving=serving_score,
        candidate=outcome.score,
        margin=s.margin,
        better=outcome.better,
        dry_run=s.dry_run,
        published_version=published,
        reason=outcome.reason,
        window=_window(log, y, test, serving),
        train_logged=len(fit) + len(val),
        validation=len(val),
        train_original=0 if original is None else len(original.y),
        labels=log.labels,
        labelled_rows=log.matched,
        unmatched_labels=log.unmatched,
        superseded_labels=log.superseded,
        rows_logged=log.rows_logged,
        routing={"primary": routing.primary, "shadow": routing.shadow},
        notes=notes,
        since=None if s.since is None else iso_time(s.since),
        waited_s=round(waited, 3),
    )


# --- the serving version and its recipe ------------------------------------------------------


def serving_card(models_dir: Path, name: str) -> ModelCard:
    """The card of the version that answers: the routing's primary, else the newest valid."""
    from export.repository import model_versions

    try:
        primary = read_routing(models_dir, name).primary
    except RoutingError as exc:
        raise RetrainRefused(exc.args[0]) from None
    if primary is not None:
        try:
            return load_card(models_dir / name / str(primary))
        except InvalidModelCard as exc:
            raise RetrainRefused(f"the pinned primary {name}/{primary}: {exc.detail}") from None
    for version in reversed(model_versions(models_dir, name)):
        try:
            return load_card(models_dir / name / str(version))
        except InvalidModelCard:
            continue
    raise RetrainRefused(f"no valid version of {name!r} in {models_dir}")


def recipe_of(card: ModelCard) -> Recipe:
    """The bundled recipe that made ``card``; refuse bring-your-own models and unknown ones."""
    from export.build import FAMILIES

    if card.recipe == "byo":
        raise RetrainRefused(BYO_REFUSAL)
    recipes = {name: r for family in FAMILIES for name, r in family.recipes.items()}
    recipe = recipes.get(card.recipe)
    if recipe is None:
        raise RetrainRefused(
            f"{card.name}/{card.version} was made by recipe {card.recipe!r}, which is not a "
            f"bundled recipe ({', '.join(recipes)})"
        )
    if recipe.task != card.task or recipe.layout != card.input.layout:
        raise RetrainRefused(
            f"recipe {recipe.name} makes a {recipe.task} model of layout {recipe.layout}; "
            f"{card.name}/{card.version} is {card.task} of layout {card.input.layout}"
        )
    return recipe


# --- labels, split, checks -------------------------------------------------------------------


def targets(card: ModelCard, y: NDArray[np.float64]) -> NDArray[Any]:
    """Classifiers: int64 class indices (refused unless every label is one); regression: y."""
    if card.task == "regression":
        return np.asarray(y, dtype=np.float64)
    k = len(card.classes)
    bad = (y != np.round(y)) | (y < 0) | (y >= k)
    if bad.any():
        raise RetrainRefused(
            f"{int(bad.sum())} label(s) are not class indices 0..{k - 1} of {card.name} "
            f"(e.g. {float(y[bad][0])!r})"
        )
    return y.astype(np.int64)


Split = tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]
"""Indices of the training, validation and evaluation rows."""


def wait_for_labels(
    s: RetrainSettings,
    serving: ModelCard,
    progress: Progress,
    monotonic: Callable[[], float],
    sleep: Callable[[float], None],
) -> tuple[LabelledRows, NDArray[Any], Split]:
    """The labelled rows (since ``s.since``), their targets and their split by time, once there
    are enough of them: the log is read again every ``s.poll_s`` seconds (one progress line
    each) until there are or ``s.wait_s`` seconds have passed (then TooFewLabels)."""
    deadline = monotonic() + s.wait_s
    since = "" if s.since is None else f" since {iso_time(s.since)}"
    while True:
        log = read_labelled(s.log_dir, s.name, serving.input.feature_names, since=s.since)
        y = targets(serving, log.y)
        try:
            _check_enough(log, s.min_labels, since)
            split = split_by_time(log, y, s.eval_fraction)
            _check_classes(serving, *(y[part] for part in split))
        except TooFewLabels as short:
            left = deadline - monotonic()
            if left <= 0:
                if s.wait_s > 0:
                    raise TooFewLabels(
                        f"{short.detail} (after waiting {s.wait_s:g} s)", short.waiting
                    ) from None
                raise
            progress.say(f"waiting for labels: {short.waiting}{since}; {left:.0f} s left")
            sleep(min(s.poll_s, left))
            continue
        return log, y, split


def _check_enough(log: LabelledRows, min_labels: int, since: str = "") -> None:
    if log.matched < min_labels:
        raise TooFewLabels(
            f"only {log.matched} labelled logged rows{since} ({log.labels} labels read, "
            f"{log.unmatched} without a logged row{since}); --min-labels is {min_labels}",
            waiting=f"{log.matched} of {min_labels} labelled rows",
        )


def split_by_time(log: LabelledRows, y: NDArray[Any], eval_fraction: float) -> Split:
    """Indices of the training, validation and evaluation rows of ``log`` (sorted by time):
    the newest ``eval_fraction`` evaluates, the newest 20% of the rest validates."""
    n = len(y)
    n_eval = min(max(1, math.ceil(n * eval_fraction)), n - 2)
    n_val = max(1, math.ceil((n - n_eval) * VALIDATION_SHARE))
    n_fit = n - n_eval - n_val
    if min(n_fit, n_val, n_eval) < 1:
        raise TooFewLabels(
            f"{n} labelled rows cannot be split into training, validation and evaluation rows",
            waiting=f"{n} of 3 labelled rows",
        )
    order = np.argsort(log.time, kind="stable")
    return order[:n_fit], order[n_fit : n - n_eval], order[n - n_eval :]


def _check_classes(
    card: ModelCard, y_fit: NDArray[Any], y_val: NDArray[Any], y_test: NDArray[Any]
) -> None:
    if card.task == "binary":
        pos = card.positive_index
        counts = [int(np.count_nonzero(part == pos)) for part in (y_fit, y_val, y_test)]
        train, val, window = counts[0] + counts[1], counts[1], counts[2]
        if train < MIN_POSITIVES or window < MIN_POSITIVES:
            raise TooFewLabels(
                f"too few positives: {train} in the training rows and {window} in the "
                f"evaluation window (at least {MIN_POSITIVES} each)",
                waiting=f"{train} and {window} of {MIN_POSITIVES} positives in the training "
                "rows and the evaluation window",
            )
        if val == 0 or val == len(y_val) or window == len(y_test):
            raise RetrainRefused(
                "the validation split (newest 20% of the training rows) or the evaluation "
                "window holds a single class"
            )
    elif card.task == "multiclass":
        absent = [card.classes[k] for k in range(len(card.classes)) if not (y_fit == k).any()]
        if absent:
            raise RetrainRefused(f"class(es) {absent} have no labelled rows to train on")


def _window(log: LabelledRows, y: NDArray[Any], test: NDArray[np.intp], card: ModelCard) -> Window:
    times = log.time[test]
    return Window(
        rows=len(test),
        positives=int(np.count_nonzero(y[test] == card.positive_index))
        if card.task == "binary"
        else None,
        first=_iso(times.min()),
        last=_iso(times.max()),
    )


def _iso(t: np.datetime64) -> str:
    return str(np.datetime_as_string(t, unit="s")) + "Z"


def iso_time(t: datetime) -> str:
    """``t`` in UTC as ISO 8601 with a ``Z`` (a naive time is taken as UTC), to the second
    unless it has a fraction."""
    utc = t.astimezone(UTC) if t.tzinfo is not None else t
    spec = "seconds" if utc.microsecond == 0 else "microseconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


# --- the original training data ---------------------------------------------------------------


def original_info(card: ModelCard) -> tuple[str, int | None, int]:
    """(dataset source, split seed, training rows) of the data the recipe first trained on."""
    params = card.params
    if ORIGINAL_DATA in params:
        seed, rows = params.get(ORIGINAL_SEED), params.get(ORIGINAL_ROWS)
        return (
            str(params[ORIGINAL_DATA]),
            seed if isinstance(seed, int) else None,
            rows if isinstance(rows, int) else -1,
        )
    d = card.dataset
    return d.source, d.seed, d.rows_train + d.rows_validation


def original_dataset(card: ModelCard) -> Dataset:
    """The original data, regenerated from the card's dataset source (the bundled generators are
    deterministic; the breast cancer data ships with scikit-learn)."""
    from export.data import breast_cancer_dataset, fraud_dataset, pricing_dataset, returns_dataset

    source, _, _ = original_info(card)
    if source.startswith("sklearn.datasets.load_breast_cancer"):
        return breast_cancer_dataset()
    found = _GENERATED.search(source)
    if found is None:
        raise RetrainRefused(
            f"--with-original: the original training data of {card.name}/{card.version} cannot "
            f"be regenerated (its source is {source!r}, not a bundled generator)"
        )
    make = {
        "make_fraud": fraud_dataset,
        "pricing_dataset": pricing_dataset,
        "returns_dataset": returns_dataset,
    }[found["generator"]]
    return make(int(found["rows"]), int(found["seed"]), float(found["shift"]))


def original_rows(card: ModelCard) -> Rows:
    """The original training and validation rows (not its test rows), checked against the card:
    the same columns, classes and number of rows."""
    from export.build import split_rows
    from export.pipeline import Rows

    source, seed, expected = original_info(card)
    data = original_dataset(card)
    split = split_rows(data, seed or 0)
    rows = np.concatenate([split.train, split.validation])
    problem = ""
    if data.feature_names != card.input.feature_names:
        problem = "its columns differ from the card's"
    elif list(data.classes) != list(card.classes):
        problem = f"its classes {list(data.classes)} differ from the card's {card.classes}"
    elif len(rows) != expected:
        problem = f"it gives {len(rows)} training rows, the card records {expected}"
    if problem:
        raise RetrainRefused(
            f"--with-original: regenerating {source!r} does not give "
            f"{card.name}/{card.version}'s training data: {problem}"
        )
    return Rows(data.X[rows], data.y[rows])


# --- scoring and deciding --------------------------------------------------------------------


def headline(metrics: Metrics) -> float:
    """The metric retraining compares: PR-AUC, macro-F1 or MAE."""
    if isinstance(metrics, BinaryMetrics):
        return metrics.pr_auc
    if isinstance(metrics, MulticlassMetrics):
        return metrics.macro_f1
    return metrics.mae


def score_serving(
    models_dir: Path,
    card: ModelCard,
    X: NDArray[np.float32],
    y: NDArray[Any],
    y_reference: NDArray[Any],
) -> float:
    """The serving version's metric on rows ``X``, scored by ONNX Runtime from its own
    model.onnx as the server scores it (``server.runner.Runner``)."""
    from export.evaluate import holdout_metrics, multiclass_metrics, regression_metrics
    from server.runner import Runner

    version_dir = models_dir / card.name / str(card.version)
    runner = Runner(version_dir / card.onnx.file, card)
    try:
        scores = np.asarray(runner.run(X), dtype=np.float64)
    finally:
        runner.close()
    metrics: Metrics
    if card.task == "binary":
        positives = (y == card.positive_index).astype(np.int64)
        metrics = holdout_metrics(positives, scores[:, card.positive_index], card.threshold)
    elif card.task == "multiclass":
        metrics = multiclass_metrics(y, scores, y_reference)
    else:
        metrics = regression_metrics(y, scores[:, 0], y_reference)
    return headline(metrics)


def decide(task: Task, serving: float, candidate: float, margin: float) -> tuple[bool, str]:
    """Whether the candidate beats the serving version by the margin, and a line saying so."""
    name = METRIC[task]
    if task == "regression":
        gain = serving - candidate
        needed = margin * serving
        better = gain > 0 and gain >= needed
        return better, (
            f"candidate MAE {candidate:.4g} vs serving {serving:.4g}: "
            f"{'lower' if gain > 0 else 'not lower'} by {abs(gain) / serving:.1%} of the "
            f"serving MAE, {'meets' if better else 'below'} the margin {margin:.1%}"
            if serving > 0
            else f"candidate MAE {candidate:.4g} vs serving {serving:.4g} (a perfect model)"
        )
    gain = candidate - serving
    better = gain > 0 and gain >= margin
    return better, (
        f"candidate {name} {candidate:.4f} vs serving {serving:.4f}: {gain:+.4f}, "
        f"{'meets' if better else 'below'} the margin {margin:.4f}"
    )


# --- training and publishing ------------------------------------------------------------------


class _Declined(Exception):
    """Raised in ``before_rename`` to publish nothing (not better, or a dry run)."""


@dataclass
class _Outcome:
    score: float | None = None
    better: bool = False
    reason: str = ""
    pinned: bool = False


def _train_and_publish(
    s: RetrainSettings,
    serving: ModelCard,
    recipe: Recipe,
    log: LabelledRows,
    y: NDArray[Any],
    parts: tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]],
    original: Rows | None,
    serving_score: float,
    outcome: _Outcome,
    progress: Progress,
) -> int | None:
    from export.build import library_versions, pipeline_source_hash
    from export.pipeline import Candidate, Rows, publish_candidate
    from export.recipes import TrainData, boosting_rounds
    from server.modelcard import DatasetInfo

    fit, val, test = parts
    X_fit, y_fit = log.X[fit], y[fit]
    if original is not None:
        X_fit = np.concatenate([original.X, X_fit])
        y_fit = np.concatenate([np.asarray(original.y, dtype=y.dtype), y_fit])
    columns = list(serving.input.columns)
    train = TrainData(
        X_fit,
        y_fit,
        s.seed,
        s.n_jobs,
        X_val=log.X[val],
        y_val=y[val],
        columns=tuple(columns),
        classes=tuple(serving.classes),
    )
    with progress.step(f"training recipe {recipe.name} on {len(y_fit)} rows"):
        model = recipe.fit(train)
    source, original_seed, original_count = original_info(serving)
    params: dict[str, str | int | float | bool | None] = dict(recipe.params)
    rounds = boosting_rounds(model)
    if rounds is not None:
        params["trees_after_early_stopping"] = rounds
    params |= {
        "retrained_from": serving.version,
        "retrained_with_original": original is not None,
        ORIGINAL_DATA: source,
        ORIGINAL_SEED: original_seed,
        ORIGINAL_ROWS: original_count,
    }
    window = _window(log, y, test, serving)
    train_times = log.time[np.concatenate([fit, val])]
    described = (
        f"prediction log {s.log_dir / s.name}: {len(fit) + len(val)} labelled rows answered "
        f"{_iso(train_times.min())} to {_iso(train_times.max())} "
        f"({len(val)} newest as validation)"
        + (f", only rows answered since {iso_time(s.since)}" if s.since is not None else "")
        + (f" + {len(original.y)} original rows ({source})" if original is not None else "")
        + f"; evaluated on the newest {window.rows} labelled rows, answered {window.first} to "
        f"{window.last}"
    )
    binary = serving.task == "binary"
    digest = hashlib.sha256()
    for array in (X_fit, y_fit, log.X[val], y[val], log.X[test], y[test]):
        digest.update(np.ascontiguousarray(array).tobytes())
    fingerprint_inputs = {
        "pipeline_source": pipeline_source_hash(),
        "recipe": recipe.name,
        "params": params,
        "data": digest.hexdigest(),
        "seed": s.seed,
        "libraries": library_versions(),
    }
    candidate = Candidate(
        model=model,
        name=serving.name,
        framework=recipe.framework,
        recipe=recipe.name,
        description=recipe.description,
        columns=columns,
        reference=Rows(X_fit, y_fit),
        validation=Rows(log.X[val], y[val]),
        test=Rows(log.X[test], y[test]),
        dataset=DatasetInfo(
            name=f"{serving.dataset.name} (prediction log)",
            rows_train=len(y_fit),
            rows_validation=len(val),
            rows_test=len(test),
            positive_rate_train=float(np.mean(y_fit == serving.positive_index)) if binary else None,
            seed=s.seed,
            source=described,
        ),
        fingerprint=hashlib.sha256(
            json.dumps(fingerprint_inputs, sort_keys=True, default=str).encode()
        ).hexdigest(),
        params=params,
        task=serving.task,
        classes=list(serving.classes),
        positive_class=serving.positive_class,
        layout=recipe.layout,
        native_input=recipe.native_input(columns),
    )

    def gate(tmp_dir: Path) -> None:
        """Compare the card about to appear with the serving version; pin before it appears."""
        card = decode_card((tmp_dir / CARD_FILE).read_bytes(), origin=str(tmp_dir))
        outcome.score = headline(card.metrics)
        outcome.better, outcome.reason = decide(
            serving.task, serving_score, outcome.score, s.margin
        )
        if s.dry_run or not outcome.better:
            raise _Declined
        if not outcome.pinned:
            _pin(s, serving)
            outcome.pinned = True

    budget = min(s.cost_budget_s, 0.02) if s.dry_run else s.cost_budget_s
    card = publish_candidate(
        candidate,
        s.models_dir,
        progress,
        seed=s.seed,
        cost_budget_s=budget,
        threads=s.n_jobs,
        before_rename=gate,
    )
    if s.shadow:
        update_routing(
            s.models_dir,
            s.name,
            lambda r: r.with_shadow(card.version),
            action="shadow",
            by="retrain",
            reason=f"retrained from version {serving.version}: {outcome.reason}",
        )
    return card.version


def _pin(s: RetrainSettings, serving: ModelCard) -> None:
    """Pin the serving version as primary unless one is pinned: without a pin the newest
    version answers, and the candidate about to appear would answer at once."""
    if read_routing(s.models_dir, s.name).primary is not None:
        return
    update_routing(
        s.models_dir,
        s.name,
        lambda r: r if r.primary is not None else r.pinned(serving.version),
        action="pin",
        by="retrain",
        reason=f"keep version {serving.version} answering while a retrained candidate is published",
    )
