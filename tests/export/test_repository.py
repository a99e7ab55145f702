"""Publishing: complete versions, increasing numbers, atomic against crashes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import pytest

from export.repository import latest_card, load_holdout, model_versions, publish
from server.errors import InvalidModelCard
from server.modelcard import (
    CARD_FILE,
    HOLDOUT_FILE,
    ONNX_FILE,
    ModelCard,
    RegressionMetrics,
    load_card,
    version_dirs,
)
from tests.support.model_repo import ALL_TEST_MODELS


def _source(
    repo: Path, name: str = "logreg"
) -> tuple[ModelCard, bytes, tuple[np.ndarray, np.ndarray]]:
    version_dir = repo / name / "1"
    card = load_card(version_dir)
    return card, (version_dir / ONNX_FILE).read_bytes(), load_holdout(version_dir)


def _card_for(card: ModelCard) -> Callable[[int], ModelCard]:
    return lambda version: msgspec.structs.replace(card, version=version)


def test_test_repo_is_complete(model_repo: Path) -> None:
    dirs = version_dirs(model_repo)
    assert [(d.parent.name, d.name) for d in dirs] == [(n, "1") for n in sorted(ALL_TEST_MODELS)]
    for version_dir in dirs:
        card = load_card(version_dir)  # validates the card, its folder and the ONNX sha256
        X, y = load_holdout(version_dir)
        assert X.dtype == np.float32
        assert X.shape == (card.dataset.rows_test, card.input.n_features)
        metrics = card.metrics
        if isinstance(metrics, RegressionMetrics):
            assert y.dtype == np.float64
            assert card.parity.relative_to is not None and card.parity.relative_to > 0
        else:
            assert y.dtype == np.int64
            assert set(np.unique(y)) <= set(range(len(card.classes)))
            assert sum(map(sum, metrics.confusion_matrix)) == len(y)
            assert card.parity.tolerance == 1e-4
        assert card.parity.max_abs_diff <= card.parity.tolerance
        assert card.cost.us_batch1 > 0 and card.cost.us_per_row_batch64 > 0
        for column, feature in zip(card.input.columns, card.reference.features, strict=True):
            counts = (
                feature.category_counts
                if column.kind == "categorical"
                else feature.histogram.counts
                if feature.histogram
                else None
            )
            assert counts is not None
            assert sum(counts) + feature.unseen + feature.missing == card.dataset.rows_train
        assert sum(card.reference.scores.counts) == card.dataset.rows_train
        assert card.fingerprint and card.onnx.opset >= 13


def test_only_positive_integer_folders_without_leading_zeros_are_versions(
    repo_copy: Path,
) -> None:
    for name in ("0", "007", "²", "٣", "-1", "2.0"):  # "٣": an Arabic-Indic three
        (repo_copy / "logreg" / name).mkdir()
    assert [d.name for d in version_dirs(repo_copy) if d.parent.name == "logreg"] == ["1"]
    assert model_versions(repo_copy, "logreg") == [1]


def test_versions_increase(repo_copy: Path) -> None:
    card, onnx_bytes, holdout = _source(repo_copy)
    second = publish(repo_copy, "logreg", _card_for(card), onnx_bytes, holdout)
    third = publish(repo_copy, "logreg", _card_for(card), onnx_bytes, holdout)
    assert (second.name, third.name) == ("2", "3")
    assert model_versions(repo_copy, "logreg") == [1, 2, 3]
    assert load_card(third).version == 3
    assert sorted(p.name for p in third.iterdir()) == sorted([CARD_FILE, ONNX_FILE, HOLDOUT_FILE])


def test_crash_before_rename_publishes_nothing(repo_copy: Path) -> None:
    card, onnx_bytes, holdout = _source(repo_copy)
    seen: list[Path] = []

    def crash(tmp_dir: Path) -> None:
        seen.append(tmp_dir)
        assert (tmp_dir / CARD_FILE).is_file() and (tmp_dir / ONNX_FILE).is_file()
        # The half-built version is already on disk but must not be visible as a version.
        assert [d.name for d in version_dirs(repo_copy) if d.parent.name == "logreg"] == ["1"]
        raise KeyboardInterrupt  # as if the process were interrupted mid-write

    with pytest.raises(KeyboardInterrupt):
        publish(repo_copy, "logreg", _card_for(card), onnx_bytes, holdout, before_rename=crash)
    assert seen and seen[0].name.startswith(".tmp-")
    assert model_versions(repo_copy, "logreg") == [1]
    assert sorted(p.name for p in (repo_copy / "logreg").iterdir()) == ["1"]  # cleaned up


def test_leftover_temp_folder_of_a_killed_writer_is_ignored(repo_copy: Path) -> None:
    card, onnx_bytes, holdout = _source(repo_copy)
    leftover = repo_copy / "logreg" / ".tmp-killed"
    leftover.mkdir()
    (leftover / ONNX_FILE).write_bytes(onnx_bytes[:10])  # truncated, no card
    assert [d.name for d in version_dirs(repo_copy) if d.parent.name == "logreg"] == ["1"]
    assert latest_card(repo_copy, "logreg") == card

    new = publish(repo_copy, "logreg", _card_for(card), onnx_bytes, holdout)
    assert new.name == "2" and load_card(new).version == 2


def test_an_invalid_card_is_never_written(repo_copy: Path) -> None:
    card, onnx_bytes, _ = _source(repo_copy)
    bad = msgspec.structs.replace(card, classes=[1])
    with pytest.raises(InvalidModelCard, match="classes"):
        publish(repo_copy, "logreg", lambda v: msgspec.structs.replace(bad, version=v), onnx_bytes)
    assert model_versions(repo_copy, "logreg") == [1]
    assert sorted(p.name for p in (repo_copy / "logreg").iterdir()) == ["1"]


def test_first_version_of_a_new_model_is_1(tmp_path: Path, model_repo: Path) -> None:
    card, onnx_bytes, holdout = _source(model_repo)
    dest = tmp_path / "fresh"
    published = publish(dest, "logreg", _card_for(card), onnx_bytes, holdout)
    assert published == dest / "logreg" / "1"
    X, y = load_holdout(published)
    assert np.array_equal(X, holdout[0]) and np.array_equal(y, holdout[1])
