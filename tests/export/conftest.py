"""Fixtures for the export tests: small data sets so that real training takes seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from export.build import BuildSettings
from export.data import Dataset, fraud_dataset

SMALL_ROWS = 3_000


@pytest.fixture(scope="session")
def small_fraud() -> Dataset:
    return fraud_dataset(SMALL_ROWS, seed=0)


@pytest.fixture
def settings(tmp_path: Path) -> BuildSettings:
    """Fast build settings into an empty repository of the test's own."""
    return BuildSettings(models_dir=tmp_path / "models", n_jobs=1, cost_budget_s=0.02)


@pytest.fixture
def repo_copy(model_repo: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's small model repository."""
    dest = tmp_path / "repo"
    shutil.copytree(model_repo, dest)
    return dest
