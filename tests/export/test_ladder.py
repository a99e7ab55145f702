"""The ladder (issue 15, item 1): cheaper variants of a tree ensemble, exported with the model.

Real models on scikit-learn's bundled data, real ONNX Runtime. Each variant's ONNX file, fed as
the server feeds it (``Codec(card.input).onnx_feeds``) on every hold-out row, is compared with
the native model cut independently of :mod:`export.ladder`: XGBoost's ``iteration_range`` and
the mean of a forest's first trees.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import xgboost as xgb
from numpy.typing import NDArray
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.metrics import average_precision_score

from export.build import BuildSettings, build_model, fingerprint
from export.byo import convert
from export.cli import main
from export.data import Dataset
from export.evaluate import recall_at, recall_matched_threshold
from export.ladder import ladder_sizes
from export.pipeline import Candidate, Rows, publish_candidate
from export.progress import quiet
from export.recipes import RECIPES
from export.repository import load_holdout, publish
from server.columns import Codec
from server.errors import ExportError, InvalidModelCard
from server.modelcard import (
    BinaryMetrics,
    Column,
    DatasetInfo,
    ModelCard,
    MulticlassMetrics,
    OnnxInfo,
    RegressionMetrics,
    Variant,
    card_problems,
    decode_card,
    encode_card,
    load_card,
    placeholder_card,
)

BUDGET = 0.01
"""Seconds per cost measurement: the tests check the ladder, not speed."""


def _rows(frame: pd.DataFrame, target: str, index: NDArray[np.int64], dtype: Any) -> Rows:
    part = frame.iloc[index]
    return Rows(
        np.asarray(part.drop(columns=target), dtype=np.float32),
        np.asarray(part[target], dtype=dtype),
    )


def _publish(
    tmp_path: Path, name: str, model: Any, framework: str, frame: pd.DataFrame, target: str
) -> tuple[ModelCard, Path, Rows]:
    """Fit ``model`` on a third of ``frame``; publish it with its ladder (validation and test:
    the other thirds). Return the card as loaded from disk, its folder and the validation rows."""
    task = (
        "regression"
        if frame[target].dtype.kind == "f"
        else ("binary" if frame[target].nunique() == 2 else "multiclass")
    )
    order = np.random.default_rng(0).permutation(len(frame))
    train_idx, val_idx, test_idx = np.array_split(order, 3)
    dtype = np.float64 if task == "regression" else np.int64
    train = frame.iloc[train_idx]
    model.fit(train.drop(columns=target), train[target])
    classes: list[int | str] = (
        [] if task == "regression" else sorted(int(c) for c in frame[target].unique())
    )
    features = [c for c in frame.columns if c != target]
    validation = _rows(frame, target, val_idx, dtype)
    candidate = Candidate(
        model=model,
        name=name,
        framework=framework,
        recipe="test",
        description="a ladder test",
        columns=[Column(name=f) for f in features],
        reference=_rows(frame, target, train_idx, dtype),
        validation=validation,
        test=_rows(frame, target, test_idx, dtype),
        dataset=DatasetInfo(
            name=name, rows_train=len(train_idx), rows_validation=len(val_idx), rows_test=0
        ),
        fingerprint="test",
        task=task,
        classes=classes,
        positive_class=1 if task == "binary" else None,
        native_input=lambda X: pd.DataFrame(X, columns=features),
    )
    models_dir = tmp_path / "models"
    card = publish_candidate(candidate, models_dir, quiet(name), cost_budget_s=BUDGET, ladder=True)
    version_dir = models_dir / name / str(card.version)
    assert load_card(version_dir) == card  # every variant file there, each sha256 matching
    return card, version_dir, validation


def _variant_onnx(version_dir: Path, card: ModelCard, v: Variant, X: NDArray[np.float32]) -> Any:
    sess = ort.InferenceSession(str(version_dir / v.onnx.file), providers=["CPUExecutionProvider"])
    name = card.outputs.probabilities or card.outputs.value
    out = sess.run([name], Codec(card.input).onnx_feeds(X))[0]
    return np.asarray(out, dtype=np.float64).reshape(len(X), -1)


def _frame(X: NDArray[np.float32], card: ModelCard) -> pd.DataFrame:
    return pd.DataFrame(X, columns=card.input.feature_names)


def _check_ladder(
    card: ModelCard,
    version_dir: Path,
    native: Any,
    full_trees: int,
    validation: Rows,
) -> None:
    """Every variant: its own file, parity with ``native(X, trees)`` on every hold-out row,
    a validation-chosen threshold (binary), metrics of the test rows, a cost."""
    assert [v.trees for v in card.variants] == ladder_sizes(full_trees)
    assert [v.onnx.file for v in card.variants] == [
        f"variant-k{v.trees}.onnx" for v in card.variants
    ]
    X, y = load_holdout(version_dir)
    sizes = [v.onnx.size_bytes for v in card.variants] + [card.onnx.size_bytes]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)  # fewer trees, smaller file
    for v in card.variants:
        want = native(_frame(X, card), v.trees)
        got = _variant_onnx(version_dir, card, v, X)
        assert got.shape == want.shape
        diff = float(np.max(np.abs(got - want)))
        assert diff <= v.parity.tolerance and v.parity.rows == len(X)
        assert v.parity.max_abs_diff == pytest.approx(diff, abs=v.parity.tolerance)
        assert v.parity.tolerance == card.parity.tolerance
        cost = v.cost
        assert 0 < cost.us_per_row_batch512 and 0 < cost.us_per_row_batch64 and 0 < cost.us_batch1
        metrics = v.metrics
        if isinstance(metrics, BinaryMetrics):
            # The threshold comes from the validation rows only (the highest that keeps the
            # full model's recall there); the metrics from the test rows.
            # (Scores as ONNX Runtime gives them, float32: a tie at a threshold must fall as the
            # export's did.)
            y_val = (validation.y == 1).astype(np.int64)
            p_val = native(_frame(validation.X, card), v.trees)[:, 1].astype(np.float32)
            assert isinstance(card.metrics, BinaryMetrics)
            full_val = native(_frame(validation.X, card), full_trees)[:, 1].astype(np.float32)
            full_recall = recall_at(y_val, full_val, card.metrics.threshold)
            expected = recall_matched_threshold(y_val, p_val, full_recall)
            assert metrics.threshold == pytest.approx(expected, abs=1e-4)
            assert recall_at(y_val, p_val, metrics.threshold) >= full_recall - 1e-9
            assert "recall of the full model on validation" in metrics.threshold_rule
            assert metrics.pr_auc == pytest.approx(average_precision_score(y == 1, want[:, 1]))
            assert sum(map(sum, metrics.confusion_matrix)) == len(X)
        elif isinstance(metrics, MulticlassMetrics):
            accuracy = float(np.mean(np.argmax(want, axis=1) == y))
            assert metrics.accuracy == pytest.approx(accuracy)
        else:
            assert isinstance(metrics, RegressionMetrics)
            assert metrics.mae == pytest.approx(float(np.mean(np.abs(want[:, 0] - y))), rel=1e-4)


def _cancer() -> pd.DataFrame:
    data = load_breast_cancer()
    frame = pd.DataFrame(data.data[:, :8], columns=[f"c{i}" for i in range(8)])
    frame["y"] = data.target
    return frame


def test_ladder_sizes() -> None:
    assert ladder_sizes(50) == [6, 12, 25]
    assert ladder_sizes(16) == [2, 4, 8]
    assert ladder_sizes(4) == [1, 2]
    assert ladder_sizes(2) == [1]
    assert ladder_sizes(1) == []


def test_xgboost_binary_ladder(tmp_path: Path) -> None:
    model = xgb.XGBClassifier(n_estimators=16, max_depth=3, n_jobs=1)
    card, version_dir, validation = _publish(tmp_path, "xgb", model, "xgboost", _cancer(), "y")

    def native(X: pd.DataFrame, trees: int) -> Any:
        return model.predict_proba(X, iteration_range=(0, trees))

    _check_ladder(card, version_dir, native, 16, validation)
    assert [v.name for v in card.variants] == ["k2", "k4", "k8"]


def test_random_forest_binary_ladder(tmp_path: Path) -> None:
    model = RandomForestClassifier(n_estimators=16, max_depth=5, random_state=0, n_jobs=1)
    card, version_dir, validation = _publish(tmp_path, "rf", model, "sklearn", _cancer(), "y")

    def native(X: pd.DataFrame, trees: int) -> Any:
        rows = X.to_numpy()  # the trees were fitted without feature names
        return np.mean([t.predict_proba(rows) for t in model.estimators_[:trees]], axis=0)

    _check_ladder(card, version_dir, native, 16, validation)


def test_xgboost_multiclass_ladder(tmp_path: Path) -> None:
    data = load_iris()
    frame = pd.DataFrame(data.data, columns=["a", "b", "c", "d"])
    frame["y"] = data.target
    model = xgb.XGBClassifier(n_estimators=8, max_depth=2, objective="multi:softprob", n_jobs=1)
    card, version_dir, validation = _publish(tmp_path, "iris", model, "xgboost", frame, "y")

    def native(X: pd.DataFrame, trees: int) -> Any:
        return model.predict_proba(X, iteration_range=(0, trees))

    _check_ladder(card, version_dir, native, 8, validation)
    assert all(isinstance(v.metrics, MulticlassMetrics) for v in card.variants)
    assert card.cascade is None  # a cascade is for a binary model only


def test_random_forest_regression_ladder_by_convert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bring your own forest with ``tabserve export convert --ladder``; ``list --variants``."""
    import joblib

    data = load_diabetes(scaled=False)
    frame = pd.DataFrame(data.data, columns=data.feature_names)
    frame["y"] = data.target
    model = RandomForestRegressor(n_estimators=8, max_depth=4, random_state=0, n_jobs=1)
    model.fit(frame.iloc[:200].drop(columns="y"), frame.iloc[:200]["y"])
    joblib.dump(model, tmp_path / "rf.joblib")
    frame.iloc[200:].to_csv(tmp_path / "holdout.csv", index=False)
    models = tmp_path / "models"
    argv = ["convert", "--model", str(tmp_path / "rf.joblib"), "--holdout"]
    argv += [str(tmp_path / "holdout.csv"), "--label", "y", "--name", "rf"]
    argv += ["--models-dir", str(models), "--ladder"]
    assert main(argv) == 0
    card = load_card(models / "rf" / "1")

    def native(X: pd.DataFrame, trees: int) -> Any:
        rows = X.to_numpy()
        return np.mean([t.predict(rows) for t in model.estimators_[:trees]], axis=0)[:, None]

    # the validation half is not kept: no threshold to check for a regressor anyway
    _check_ladder(card, models / "rf" / "1", native, 8, Rows(np.empty((0, 10)), np.empty(0)))
    assert card.parity.relative_to is not None
    capsys.readouterr()
    assert main(["list", "--models-dir", str(models), "--variants"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[0][:4] == ["name", "version", "variant", "trees"]
    assert [row[2:5] for row in lines[1:]] == [
        ["full", "-", "RMSE"],
        ["k1", "1", "RMSE"],
        ["k2", "2", "RMSE"],
        ["k4", "4", "RMSE"],
    ]
    assert lines[2][-1] == f"{card.variants[0].parity.max_abs_diff:.1e}"
    # Without --ladder: a different conversion (a new version), with no variants.
    plain = convert(
        tmp_path / "rf.joblib", tmp_path / "holdout.csv", "y", "rf", models, cost_budget_s=BUDGET
    )
    assert plain.published and plain.card.variants == []


def test_ladder_of_a_bundled_build(small_fraud: Dataset, settings: BuildSettings) -> None:
    """No ladder unless the recipe asks for one; --ladder (settings.ladder) gives every tree
    ensemble one and changes the fingerprint; a linear model gets none."""
    assert [name for name, r in RECIPES.items() if r.ladder] == ["xgb_large"]
    forest = dataclasses.replace(
        RECIPES["random_forest"],
        params={**RECIPES["random_forest"].params, "n_estimators": 8},
        ladder=False,
    )
    assert build_model(forest, small_fraud, settings).card.variants == []
    with_ladder = dataclasses.replace(settings, ladder=True)
    assert fingerprint(forest, small_fraud, with_ladder) != fingerprint(
        forest, small_fraud, settings
    )
    laddered = build_model(forest, small_fraud, with_ladder)
    assert laddered.published and [v.trees for v in laddered.card.variants] == [1, 2, 4]
    assert build_model(RECIPES["logreg"], small_fraud, with_ladder).card.variants == []


def test_a_sibling_model_is_published_as_a_variant(
    small_fraud: Dataset, settings: BuildSettings
) -> None:
    """xgb_large names xgb_small as a sibling: trained on the same split, exported and checked
    as a variant named after its recipe, after the truncations; the sibling's recipe is part of
    the fingerprint."""
    assert RECIPES["xgb_large"].siblings == ("xgb_small",)
    big = dataclasses.replace(
        RECIPES["xgb_large"], params={**RECIPES["xgb_large"].params, "n_estimators": 24}
    )
    built = build_model(big, small_fraud, settings)
    names = [v.name for v in built.card.variants]
    assert names[-1] == "xgb_small" and names[:-1]  # after the truncations (early stopping
    assert all(n.startswith("k") for n in names[:-1])  # decides how many rounds they cut)
    sibling = built.card.variants[-1]
    assert sibling.onnx.file == "variant-xgb_small.onnx"
    assert (settings.models_dir / "xgb_large" / "1" / sibling.onnx.file).is_file()
    assert sibling.parity.max_abs_diff <= sibling.parity.tolerance
    assert isinstance(sibling.metrics, BinaryMetrics) and 0 < sibling.metrics.pr_auc <= 1
    without = dataclasses.replace(big, siblings=())
    assert fingerprint(without, small_fraud, settings) != fingerprint(big, small_fraud, settings)


# --- the card: validation, load checks, old cards ------------------------------------------


def _variant(name: str = "k2", **onnx: Any) -> Variant:
    card = placeholder_card(feature_names=["a"])
    info = OnnxInfo(file=f"variant-{name}.onnx", sha256="0" * 64, opset=15, size_bytes=10)
    return Variant(
        name=name,
        trees=2,
        onnx=msgspec.structs.replace(info, **onnx),
        metrics=card.metrics,
        parity=card.parity,
        cost=card.cost,
    )


def test_card_problems_of_variants() -> None:
    card = placeholder_card(feature_names=["a"])
    assert card_problems(msgspec.structs.replace(card, variants=[_variant()])) == []
    bad_threshold = msgspec.structs.replace(
        _variant("k4"), metrics=msgspec.structs.replace(card.metrics, threshold=1.5)
    )
    bad_parity = msgspec.structs.replace(
        _variant("k5"), parity=msgspec.structs.replace(card.parity, max_abs_diff=0.1)
    )
    regression = placeholder_card(feature_names=["a"], task="regression")
    wrong_task = msgspec.structs.replace(_variant("k6"), metrics=regression.metrics)
    problems = card_problems(
        msgspec.structs.replace(
            card,
            variants=[
                _variant(),
                _variant(),  # the same name and file twice
                _variant("k3", file="../variant-k3.onnx"),
                _variant("k7", file="model.onnx"),
                _variant("k8", sha256="X" * 64),
                bad_threshold,
                bad_parity,
                wrong_task,
            ],
        )
    )
    text = "; ".join(problems)
    for expected in (
        "duplicate names",
        "share an ONNX file",
        "'../variant-k3.onnx' must be a file in the version folder",
        "'model.onnx' must be a file",
        "variant 'k8': onnx.sha256",
        "variant 'k4': metrics.threshold 1.5 is outside [0, 1]",
        "variant 'k5': parity.max_abs_diff 0.1 exceeds",
        "variant 'k6': metrics are for a regression model",
    ):
        assert expected in text, (expected, problems)


def test_an_old_card_without_variants_still_loads_and_unknown_fields_are_refused() -> None:
    card = placeholder_card(feature_names=["a"])
    doc = json.loads(encode_card(card))
    del doc["variants"]
    old = decode_card(json.dumps(doc).encode())
    assert old.variants == [] and old == card
    doc["variants"] = [{**msgspec.to_builtins(_variant()), "speed": "fast"}]
    with pytest.raises(InvalidModelCard, match="speed"):
        decode_card(json.dumps(doc).encode())


def test_the_bundled_v1_card_loads_without_variants() -> None:
    version_dir = Path(__file__).parents[2] / "models" / "xgb_small" / "1"
    if not (version_dir / "model.json").is_file():
        pytest.skip("the bundled models are not built")
    assert load_card(version_dir, verify_sha256=False).variants == []


@pytest.fixture(scope="module")
def laddered(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelCard, Path]:
    tmp = tmp_path_factory.mktemp("laddered")
    model = xgb.XGBClassifier(n_estimators=8, max_depth=2, n_jobs=1)
    card, version_dir, _ = _publish(tmp, "m", model, "xgboost", _cancer(), "y")
    return card, version_dir


def test_a_missing_variant_file_or_a_wrong_sha256_is_refused(
    laddered: tuple[ModelCard, Path], tmp_path: Path
) -> None:
    card, source = laddered
    import shutil

    version_dir = tmp_path / "m" / "1"
    shutil.copytree(source, version_dir)
    variant = version_dir / card.variants[0].onnx.file
    data = variant.read_bytes()
    variant.write_bytes(data + b"\0")
    with pytest.raises(InvalidModelCard, match=r"sha256 .* does not match"):
        load_card(version_dir)
    assert load_card(version_dir, verify_sha256=False) == card
    variant.unlink()
    with pytest.raises(InvalidModelCard, match=f"ONNX file {variant.name} is missing"):
        load_card(version_dir, verify_sha256=False)


def test_variant_files_are_published_with_the_version_or_not_at_all(
    laddered: tuple[ModelCard, Path], tmp_path: Path
) -> None:
    card, source = laddered
    files = {v.onnx.file: (source / v.onnx.file).read_bytes() for v in card.variants}
    onnx_bytes = (source / "model.onnx").read_bytes()
    holdout = load_holdout(source)

    def card_for(version: int) -> ModelCard:
        return msgspec.structs.replace(card, version=version)

    seen: list[set[str]] = []

    def crash(tmp_dir: Path) -> None:
        seen.append({p.name for p in tmp_dir.iterdir()})
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        publish(tmp_path, "m", card_for, onnx_bytes, holdout, crash, extra_files=files)
    assert set(files) <= seen[0]
    assert list((tmp_path / "m").iterdir()) == []  # no version, no temporary folder
    version_dir = publish(tmp_path, "m", card_for, onnx_bytes, holdout, extra_files=files)
    assert {p.name for p in version_dir.iterdir()} == {
        "model.json",
        "model.onnx",
        "holdout.npz",
        *files,
    }
    assert load_card(version_dir) == card


@pytest.mark.parametrize("file_name", ["../variant-k2.onnx", "model.onnx", "sub/variant-k2.onnx"])
def test_an_extra_file_must_be_a_file_of_its_own(
    laddered: tuple[ModelCard, Path], tmp_path: Path, file_name: str
) -> None:
    card, source = laddered
    onnx_bytes = (source / "model.onnx").read_bytes()
    with pytest.raises(ExportError, match="is not a file name of its own"):
        publish(tmp_path, "m", lambda v: card, onnx_bytes, extra_files={file_name: b"x"})
    assert list((tmp_path / "m").iterdir()) == []
    assert not (tmp_path / "variant-k2.onnx").exists()
