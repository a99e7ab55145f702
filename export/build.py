"""Build the bundled models: split, train, optionally cross-validate, then publish.

Idempotent: a model's fingerprint hashes everything that determines it (recipe and parameters,
data parameters, seed, split, library versions, and the pipeline's own source code); when it
equals the latest published version's, nothing is trained and no version is written.

Cross-validation only adds a number to the card (the mean and spread of PR-AUC over folds of the
training split): the published model, its threshold and its hold-out metrics are the same without
it. It runs when asked (``tabserve export build --full``); a build without it leaves the card's
``cv_pr_auc_mean`` null. A build with it replaces a current version that lacks it; a build without
it keeps a current version that has it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.data import Dataset, breast_cancer_dataset, fraud_dataset
from export.evaluate import cross_validated_pr_auc
from export.pipeline import Candidate, Rows, publish_candidate
from export.progress import Progress, quiet
from export.recipes import CANCER_RECIPES, RECIPES, Recipe, TrainData, boosting_rounds
from export.repository import latest_card
from export.splits import stratified_split
from export.threads import training_threads
from server.modelcard import DatasetInfo, ModelCard

PIPELINE_MODULES: tuple[str, ...] = (
    "data",
    "splits",
    "recipes",
    "evaluate",
    "onnx_export",
    "cost",
    "reference",
    "pipeline",
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
BUNDLED: tuple[str, ...] = (*RECIPES, *CANCER_RECIPES)
"""Every bundled model name, in build order."""


@dataclass(frozen=True)
class BuildSettings:
    models_dir: Path
    seed: int = 0
    n_jobs: int = field(default_factory=training_threads)
    """Training threads (and OpenMP/BLAS threads while building)."""
    cross_validate: bool = False
    """Also record the cross-validated PR-AUC of the training split (``--full``)."""
    cv_folds: int = 3
    cost_budget_s: float = 0.4
    """Seconds spent on each of the three cost measurements."""


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
    inputs = {
        "pipeline_source": pipeline_source_hash(),
        "recipe": recipe.name,
        "framework": recipe.framework,
        "params": dict(recipe.params),
        "data": dataset.params,
        "seed": settings.seed,
        "split": [VALIDATION_FRACTION, TEST_FRACTION],
        "libraries": library_versions(),
    }
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def build_model(
    recipe: Recipe,
    dataset: Dataset,
    settings: BuildSettings,
    progress: Progress | None = None,
    before_rename: Callable[[Path], None] | None = None,
) -> BuildResult:
    """Train, evaluate and publish one recipe on one data set (or reuse an identical build)."""
    progress = progress or quiet(recipe.name)
    fp = fingerprint(recipe, dataset, settings)
    latest = latest_card(settings.models_dir, recipe.name)
    if (
        latest is not None
        and latest.fingerprint == fp
        and (latest.metrics.cv_pr_auc_mean is not None or not settings.cross_validate)
    ):
        progress.say(f"unchanged, version {latest.version} is current")
        return BuildResult(latest, published=False)

    split = stratified_split(dataset.y, settings.seed, VALIDATION_FRACTION, TEST_FRACTION)
    X, y = dataset.X, dataset.y
    train = TrainData(
        X[split.train],
        y[split.train],
        settings.seed,
        settings.n_jobs,
        X_val=X[split.validation],
        y_val=y[split.validation],
    )
    with progress.step(f"training {_size(recipe.params)}on {len(train.y)} rows"):
        model = recipe.fit(train)
    rounds = boosting_rounds(model)

    def fit_fold(X_fold: NDArray[np.float32], y_fold: NDArray[np.int64]) -> Any:
        fold = TrainData(X_fold, y_fold, settings.seed, settings.n_jobs, rounds=rounds)
        return recipe.fit(fold)

    cv_scores: list[float] | None = None
    if settings.cross_validate:
        with progress.step(f"{settings.cv_folds}-fold cross-validated PR-AUC"):
            cv_scores = cross_validated_pr_auc(
                fit_fold, train.X, train.y, settings.seed, settings.cv_folds
            )

    params: dict[str, str | int | float | bool | None] = dict(recipe.params)
    if rounds is not None:
        params["trees_after_early_stopping"] = rounds
    candidate = Candidate(
        model=model,
        name=recipe.name,
        framework=recipe.framework,
        recipe=recipe.name,
        description=recipe.description,
        feature_names=dataset.feature_names,
        reference=Rows(train.X, train.y),
        validation=Rows(X[split.validation], y[split.validation]),
        test=Rows(X[split.test], y[split.test]),
        dataset=DatasetInfo(
            name=dataset.name,
            rows_train=len(split.train),
            rows_validation=len(split.validation),
            rows_test=len(split.test),
            positive_rate_train=float(train.y.mean()),
            seed=settings.seed,
            source=dataset.source,
        ),
        fingerprint=fp,
        params=params,
        cv_scores=cv_scores,
    )
    card = publish_candidate(
        candidate,
        settings.models_dir,
        progress,
        seed=settings.seed,
        cost_budget_s=settings.cost_budget_s,
        threads=settings.n_jobs,
        before_rename=before_rename,
    )
    return BuildResult(card, published=True)


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
        fraud = fraud_dataset(rows, settings.seed) if any(n in RECIPES for n in names) else None
        cancer = breast_cancer_dataset() if any(n in CANCER_RECIPES for n in names) else None
        results: list[BuildResult] = []
        for index, name in enumerate(names, start=1):
            if name in RECIPES:
                assert fraud is not None
                recipe, dataset = RECIPES[name], fraud
            else:
                assert cancer is not None
                recipe, dataset = CANCER_RECIPES[name], cancer
            progress = Progress(name, index, len(names))
            results.append(build_model(recipe, dataset, settings, progress))
    return results
