"""Build the bundled models: split, train, optionally cross-validate, then publish.

Idempotent: a model's fingerprint hashes everything that determines it (recipe and parameters,
data parameters, seed, split, library versions, and the pipeline's own source code); when it
equals the latest published version's, nothing is trained and no version is written.

Cross-validation only adds a number to the card (the mean and spread over folds of the training
split of PR-AUC, macro-F1 or MAE, by task): the published model, its threshold and its hold-out
metrics are the same without it. It runs when asked (``tabserve export build --full``); a build
without it leaves the card's ``cv_*_mean`` null. A build with it replaces a current version that
lacks it; a build without it keeps a current version that has it.

The bundled models come in families, one data set each (:data:`FAMILIES`): the fraud models, the
breast cancer models, and the e-commerce models with typed columns (``pricing_*``, a demand
regression, and ``returns_*``, a 5-class return reason), each as a scikit-learn pipeline over the
raw strings and as XGBoost with native categorical features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Literal

import numpy as np
from msgspec.structs import replace
from numpy.typing import NDArray

from export.data import (
    Dataset,
    breast_cancer_dataset,
    fraud_dataset,
    pricing_dataset,
    returns_dataset,
)
from export.evaluate import cross_validated_pr_auc
from export.ladder import Truncated, tree_count
from export.pipeline import Candidate, Rows, publish_candidate
from export.progress import Progress, quiet
from export.recipes import (
    CANCER_RECIPES,
    PRICING_RECIPES,
    RECIPES,
    RETURNS_RECIPES,
    Recipe,
    TrainData,
    boosting_rounds,
)
from export.repository import latest_card
from export.splits import Split, stratified_split
from export.threads import training_threads
from server.modelcard import (
    BinaryMetrics,
    Column,
    DatasetInfo,
    Metrics,
    ModelCard,
    MulticlassMetrics,
    Task,
)

PIPELINE_MODULES: tuple[str, ...] = (
    "data",
    "splits",
    "recipes",
    "evaluate",
    "onnx_export",
    "cost",
    "reference",
    "pipeline",
    "ladder",
    "cascade",
    "build",
)
"""Modules whose source is part of the fingerprint: changing how a model is made makes a new one."""
LIBRARIES = (
    "scikit-learn",
    "xgboost-cpu",
    "skl2onnx",
    "onnxmltools",
    "onnx",
    "onnxruntime",
    "numpy",
)
VALIDATION_FRACTION = 0.2
TEST_FRACTION = 0.2
DEFAULT_ROWS = 100_000
"""Rows of the fraud data."""
PRICING_ROWS = 16_000
RETURNS_ROWS = 12_000
"""Rows of the e-commerce data: modest, so the first ``make serve`` stays fast."""


@dataclass(frozen=True)
class Family:
    """Recipes that train on one data set."""

    recipes: Mapping[str, Recipe]
    dataset: Callable[[int, int], Dataset]
    """(fraud rows, seed) -> the data set."""


FAMILIES: tuple[Family, ...] = (
    Family(RECIPES, lambda rows, seed: fraud_dataset(rows, seed)),
    Family(CANCER_RECIPES, lambda rows, seed: breast_cancer_dataset()),
    Family(PRICING_RECIPES, lambda rows, seed: pricing_dataset(PRICING_ROWS, seed)),
    Family(RETURNS_RECIPES, lambda rows, seed: returns_dataset(RETURNS_ROWS, seed)),
)
BUNDLED: tuple[str, ...] = tuple(name for family in FAMILIES for name in family.recipes)
"""Every bundled model name, in build order."""


@dataclass(frozen=True)
class BuildSettings:
    models_dir: Path
    seed: int = 0
    n_jobs: int = field(default_factory=training_threads)
    """Training threads (and OpenMP/BLAS threads while building)."""
    cross_validate: bool = False
    """Also record the cross-validated PR-AUC, macro-F1 or MAE of the training split
    (``--full``)."""
    cv_folds: int = 3
    cost_budget_s: float = 0.4
    """Seconds spent on each of the three cost measurements."""
    ladder: bool = False
    """Export the cheaper variants (:mod:`export.ladder`) of every tree ensemble, not only of
    the recipes that ask for them (``Recipe.ladder``)."""


def wants_ladder(recipe: Recipe, settings: BuildSettings) -> bool:
    return settings.ladder or recipe.ladder


@dataclass(frozen=True)
class BuildResult:
    card: ModelCard
    published: bool
    """False when an identical build was already the latest version."""


def library_versions() -> dict[str, str]:
    return {name: package_version(name) for name in LIBRARIES}


def pipeline_source_hash() -> str:
    """sha256 of the source files of :data:`PIPELINE_MODULES`."""
    digest = hashlib.sha256()
    for module in PIPELINE_MODULES:
        digest.update(Path(__file__).with_name(f"{module}.py").read_bytes())
    return digest.hexdigest()


def fingerprint(recipe: Recipe, dataset: Dataset, settings: BuildSettings) -> str:
    """Hash of everything that determines the built model."""
    inputs: dict[str, Any] = {
        "pipeline_source": pipeline_source_hash(),
        "recipe": recipe.name,
        "framework": recipe.framework,
        "params": dict(recipe.params),
        "data": dataset.params,
        "seed": settings.seed,
        "split": [VALIDATION_FRACTION, TEST_FRACTION],
        "libraries": library_versions(),
    }
    if wants_ladder(recipe, settings):  # absent otherwise: a build without a ladder is as before
        inputs["ladder"] = True
        if recipe.siblings:
            inputs["siblings"] = {s: dict(RECIPES[s].params) for s in recipe.siblings}
    if recipe.frame_input:  # trained on a pandas DataFrame
        inputs["pandas"] = package_version("pandas")
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def build_model(
    recipe: Recipe,
    dataset: Dataset,
    settings: BuildSettings,
    progress: Progress | None = None,
    before_rename: Callable[[Path], None] | None = None,
) -> BuildResult:
    """Train, evaluate and publish one recipe on one data set (or reuse an identical build).

    Every OpenMP/BLAS pool (training, and the native predictions of parity and evaluation) is
    bounded by the training threads: an unbounded pool on a busy machine spins (HistGradient-
    Boosting's per-tree predict took 10x longer at load average 5).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=settings.n_jobs):
        return _build_model(
            recipe, dataset, settings, progress or quiet(recipe.name), before_rename
        )


def _build_model(
    recipe: Recipe,
    dataset: Dataset,
    settings: BuildSettings,
    progress: Progress,
    before_rename: Callable[[Path], None] | None,
) -> BuildResult:
    if recipe.task != dataset.task:
        raise ValueError(
            f"{recipe.name} is a {recipe.task} recipe; {dataset.name} is {dataset.task}"
        )
    fp = fingerprint(recipe, dataset, settings)
    latest = latest_card(settings.models_dir, recipe.name)
    if (
        latest is not None
        and latest.fingerprint == fp
        and (has_cross_validation(latest.metrics) or not settings.cross_validate)
    ):
        progress.say(f"unchanged, version {latest.version} is current")
        return BuildResult(latest, published=False)

    split = split_rows(dataset, settings.seed)
    X, y = dataset.X, dataset.y
    train = TrainData(
        X[split.train],
        y[split.train],
        settings.seed,
        settings.n_jobs,
        X_val=X[split.validation],
        y_val=y[split.validation],
        columns=tuple(dataset.input_columns),
        classes=dataset.classes,
    )
    with progress.step(f"training {_size(recipe.params)}on {len(train.y)} rows"):
        model = recipe.fit(train)
    siblings = _siblings(recipe, train, progress) if wants_ladder(recipe, settings) else []
    rounds = boosting_rounds(model)
    native_input = recipe.native_input(dataset.input_columns)

    def fit_fold(X_fold: NDArray[np.float32], y_fold: NDArray[Any]) -> Any:
        fold = dataclasses.replace(train, X=X_fold, y=y_fold, X_val=None, y_val=None, rounds=rounds)
        return recipe.fit(fold)

    cv_scores: list[float] | None = None
    if settings.cross_validate:
        with progress.step(f"{settings.cv_folds}-fold cross-validated {CV_METRIC[dataset.task]}"):
            cv_scores = cross_validated(
                dataset.task, fit_fold, train, settings.cv_folds, native_input
            )

    params: dict[str, str | int | float | bool | None] = dict(recipe.params)
    if rounds is not None:
        params["trees_after_early_stopping"] = rounds
    binary = dataset.task == "binary"
    candidate = Candidate(
        model=model,
        name=recipe.name,
        framework=recipe.framework,
        recipe=recipe.name,
        description=recipe.description,
        columns=_candidate_columns(dataset, recipe),
        reference=Rows(train.X, train.y),
        validation=Rows(X[split.validation], y[split.validation]),
        test=Rows(X[split.test], y[split.test]),
        dataset=DatasetInfo(
            name=dataset.name,
            rows_train=len(split.train),
            rows_validation=len(split.validation),
            rows_test=len(split.test),
            positive_rate_train=float(np.mean(train.y == _positive_index(dataset)))
            if binary
            else None,
            seed=settings.seed,
            source=dataset.source,
        ),
        fingerprint=fp,
        params=params,
        cv_scores=cv_scores,
        task=dataset.task,
        classes=list(dataset.classes),
        positive_class=dataset.positive_class,
        layout=recipe.layout,
        native_input=native_input,
        siblings=siblings,
    )
    card = publish_candidate(
        candidate,
        settings.models_dir,
        progress,
        seed=settings.seed,
        cost_budget_s=settings.cost_budget_s,
        threads=settings.n_jobs,
        before_rename=before_rename,
        ladder=wants_ladder(recipe, settings),
    )
    return BuildResult(card, published=True)


def _siblings(recipe: Recipe, train: TrainData, progress: Progress) -> list[Truncated]:
    """The recipe's sibling models, trained on its training split (:attr:`Recipe.siblings`)."""
    out = []
    for name in recipe.siblings:
        sibling = RECIPES[name]
        if (sibling.framework, sibling.layout, sibling.task) != (
            recipe.framework,
            recipe.layout,
            recipe.task,
        ):
            raise ValueError(f"{recipe.name}: sibling {name} differs in framework, layout or task")
        with progress.step(f"training sibling {name} ({_size(sibling.params)})"):
            model = sibling.fit(train)
        trees = tree_count(model, sibling.framework)
        if trees is None:
            raise ValueError(f"{recipe.name}: sibling {name} is no tree ensemble")
        out.append(Truncated(name, trees, model))
    return out


def split_rows(dataset: Dataset, seed: int) -> Split:
    """Train / validation / test rows, stratified by class (by target decile for a regression,
    so every part sees the whole range of the target)."""
    strata = dataset.y if dataset.task != "regression" else target_deciles(dataset.y)
    return stratified_split(strata, seed, VALIDATION_FRACTION, TEST_FRACTION)


def target_deciles(y: NDArray[Any]) -> NDArray[np.int64]:
    """Each target's decile (0-9; fewer strata when the target has few distinct values)."""
    edges = np.unique(np.quantile(y, np.linspace(0.0, 1.0, 11)[1:-1]))
    deciles: NDArray[np.int64] = np.searchsorted(edges, y, side="right").astype(np.int64)
    return deciles


def _positive_index(dataset: Dataset) -> int:
    return (
        dataset.classes.index(dataset.positive_class)
        if dataset.positive_class in dataset.classes
        else 1
    )


def _candidate_columns(dataset: Dataset, recipe: Recipe) -> list[Column]:
    """The dataset's columns with the dtype of the recipe's layout: a ``columns`` graph takes a
    string category as a string tensor; a ``matrix`` takes every column as float32."""
    if recipe.layout == "matrix":
        return [replace(c, dtype="float32") for c in dataset.input_columns]
    return [replace(c, dtype=_column_dtype(c)) for c in dataset.input_columns]


def _column_dtype(column: Column) -> Literal["float32", "string", "int64"]:
    if column.kind != "categorical":
        return "float32"
    return "string" if isinstance(column.categories[0], str) else "int64"


CV_METRIC: dict[Task, str] = {"binary": "PR-AUC", "multiclass": "macro-F1", "regression": "MAE"}


def has_cross_validation(metrics: Metrics) -> bool:
    """Whether a card's metrics hold the cross-validated number of their task."""
    if isinstance(metrics, BinaryMetrics):
        return metrics.cv_pr_auc_mean is not None
    if isinstance(metrics, MulticlassMetrics):
        return metrics.cv_macro_f1_mean is not None
    return metrics.cv_mae_mean is not None


def cross_validated(
    task: Task,
    fit: Callable[[NDArray[np.float32], NDArray[Any]], Any],
    train: TrainData,
    folds: int,
    native_input: Callable[[NDArray[np.float32]], Any] | None = None,
) -> list[float]:
    """Per fold of the training rows: PR-AUC (binary), macro-F1 (multiclass) or MAE
    (regression) of the native model fitted on the other folds."""
    if task == "binary":
        return cross_validated_pr_auc(fit, train.X, train.y, train.seed, folds)
    from sklearn.metrics import f1_score, mean_absolute_error
    from sklearn.model_selection import StratifiedKFold

    as_input = native_input or (lambda X: X)
    strata = train.y if task == "multiclass" else target_deciles(train.y)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=train.seed)
    scores: list[float] = []
    for fit_idx, score_idx in splitter.split(train.X, strata):
        model = fit(train.X[fit_idx], train.y[fit_idx])
        rows, truth = as_input(train.X[score_idx]), train.y[score_idx]
        if task == "multiclass":
            # Probability columns follow the classes (labels or indices): argmax is the index.
            predicted = np.argmax(np.asarray(model.predict_proba(rows)), axis=1)
            scores.append(float(f1_score(truth, predicted, average="macro")))
        else:
            predicted = np.asarray(model.predict(rows), dtype=np.float64)
            scores.append(float(mean_absolute_error(truth, predicted)))
    return scores


def _size(params: Mapping[str, object]) -> str:
    for key in ("n_estimators", "max_iter"):
        if key in params:
            return f"({params[key]} {'trees' if key == 'n_estimators' else 'iterations'} max) "
    return ""


def build_all(
    settings: BuildSettings,
    rows: int = DEFAULT_ROWS,
    only: list[str] | None = None,
) -> list[BuildResult]:
    """Build the bundled models (or those named in ``only``) into ``settings.models_dir``."""
    names = list(only) if only else list(BUNDLED)
    unknown = sorted(set(names) - set(BUNDLED))
    if unknown:
        raise ValueError(f"unknown bundled model(s) {unknown}; choose from {list(BUNDLED)}")
    from threadpoolctl import threadpool_limits

    # Every OpenMP/BLAS pool (training, and the native predictions of parity and evaluation)
    # gets the same bound as the training threads.
    with threadpool_limits(limits=settings.n_jobs):
        datasets: dict[int, Dataset] = {}
        results: list[BuildResult] = []
        for index, name in enumerate(names, start=1):
            at = next(i for i, family in enumerate(FAMILIES) if name in family.recipes)
            if at not in datasets:  # each data set is made once, when first needed
                datasets[at] = FAMILIES[at].dataset(rows, settings.seed)
            progress = Progress(name, index, len(names))
            recipe = FAMILIES[at].recipes[name]
            results.append(build_model(recipe, datasets[at], settings, progress))
    return results
