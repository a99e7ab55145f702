"""Bring your own model: joblib Pipelines and XGBoost JSON files become repository entries."""

from __future__ import annotations

import csv
from pathlib import Path

import joblib
import numpy as np
import pytest
import xgboost as xgb
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelSpreading

from export.byo import convert
from export.cli import main
from export.data import Dataset
from export.repository import load_holdout
from export.splits import stratified_split
from server.errors import ExportError, UnsupportedEstimator
from server.modelcard import load_card


@pytest.fixture
def parts(small_fraud: Dataset) -> tuple[Dataset, np.ndarray, np.ndarray]:
    split = stratified_split(small_fraud.y, seed=0)
    return small_fraud, split.train, np.concatenate([split.validation, split.test])


def _write_csv(path: Path, names: list[str], X: np.ndarray, y: np.ndarray, label: str) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*names, label])
        for row, target in zip(X.tolist(), y.tolist(), strict=True):
            writer.writerow([*(repr(v) for v in row), target])
    return path


def test_joblib_pipeline(parts: tuple[Dataset, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    data, train, holdout = parts
    model = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=500, class_weight="balanced")
    )
    model.fit(data.X[train], data.y[train])
    model_path = tmp_path / "pipe.joblib"
    joblib.dump(model, model_path)
    csv_path = _write_csv(
        tmp_path / "holdout.csv", data.feature_names, data.X[holdout], data.y[holdout], "is_fraud"
    )
    models = tmp_path / "models"

    result = convert(model_path, csv_path, "is_fraud", "my_pipe", models, cost_budget_s=0.02)
    card = load_card(models / "my_pipe" / "1")
    assert result.published and card == result.card
    assert card.recipe == "byo" and card.estimator == "sklearn.pipeline.Pipeline"
    assert card.input.feature_names == data.feature_names and not card.input.allow_missing
    assert card.parity.max_abs_diff <= 1e-4
    assert card.dataset.rows_train == 0
    assert card.dataset.rows_validation + card.dataset.rows_test == len(holdout)
    assert "validation half" in card.dataset.source
    assert card.metrics.pr_auc > 2 * card.metrics.positive_rate_test  # better than chance
    _, y_test = load_holdout(models / "my_pipe" / "1")
    assert len(y_test) == card.dataset.rows_test
    assert sum(card.reference.scores.counts) == card.dataset.rows_validation

    again = convert(model_path, csv_path, "is_fraud", "my_pipe", models, cost_budget_s=0.02)
    assert not again.published and again.card.version == 1


def test_xgboost_json_with_feature_names_in_another_order(
    parts: tuple[Dataset, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    data, train, holdout = parts
    model = xgb.XGBClassifier(n_estimators=30, max_depth=3, n_jobs=1)
    model.fit(data.X[train], data.y[train])
    model.get_booster().feature_names = data.feature_names
    model_path = tmp_path / "model.json"
    model.save_model(model_path)
    order = list(reversed(range(len(data.feature_names))))  # the CSV lists columns reversed
    csv_path = _write_csv(
        tmp_path / "rows.csv",
        [data.feature_names[j] for j in order],
        data.X[holdout][:, order],
        data.y[holdout],
        "label",
    )
    models = tmp_path / "models"
    assert (
        main(
            [
                "convert",
                *("--model", str(model_path), "--holdout", str(csv_path)),
                *("--label-column", "label", "--name", "fraud_xgb", "--models-dir", str(models)),
            ]
        )
        == 0
    )

    card = load_card(models / "fraud_xgb" / "1")
    assert card.framework == "xgboost" and card.estimator == "xgboost.XGBClassifier"
    assert card.input.feature_names == data.feature_names  # the model's order, not the CSV's
    assert card.input.allow_missing and card.parity.max_abs_diff <= 1e-4
    X_test, _ = load_holdout(models / "fraud_xgb" / "1")
    assert np.isin(X_test[:, 0], data.X[holdout][:, 0]).all()  # column 0 is "amount" again


def test_unsupported_estimator_is_named(
    parts: tuple[Dataset, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    data, train, holdout = parts
    csv_path = _write_csv(
        tmp_path / "h.csv", data.feature_names, data.X[holdout], data.y[holdout], "y"
    )
    model = make_pipeline(StandardScaler(), LabelSpreading(max_iter=5))
    model.fit(data.X[train][:300], data.y[train][:300])
    joblib.dump(model, tmp_path / "spread.joblib")
    with pytest.raises(UnsupportedEstimator, match=r"sklearn\.semi_supervised\.LabelSpreading"):
        convert(tmp_path / "spread.joblib", csv_path, "y", "spread", tmp_path / "models")

    clusters = KMeans(n_clusters=2, n_init=1, random_state=0).fit(data.X[train])
    joblib.dump(clusters, tmp_path / "kmeans.joblib")
    with pytest.raises(
        UnsupportedEstimator,
        match=r"sklearn\.cluster\.KMeans is neither a classifier with predict_proba nor a "
        "regressor",
    ):
        convert(tmp_path / "kmeans.joblib", csv_path, "y", "kmeans", tmp_path / "models")
    assert not (tmp_path / "models" / "spread").exists() or not any(
        p.name.isdigit() for p in (tmp_path / "models" / "spread").iterdir()
    )


def test_unsupported_estimator_via_cli(
    parts: tuple[Dataset, np.ndarray, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, train, holdout = parts
    csv_path = _write_csv(
        tmp_path / "h.csv", data.feature_names, data.X[holdout], data.y[holdout], "y"
    )
    clusters = KMeans(n_clusters=2, n_init=1, random_state=0).fit(data.X[train])
    joblib.dump(clusters, tmp_path / "kmeans.joblib")
    code = main(
        [
            "convert",
            *("--model", str(tmp_path / "kmeans.joblib"), "--holdout", str(csv_path)),
            *("--label-column", "y", "--name", "kmeans", "--models-dir", str(tmp_path)),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "KMeans" in err and err.count("runs arbitrary code") == 1
    assert "Traceback" not in err


def test_bad_csv_is_refused(tmp_path: Path, parts: tuple[Dataset, np.ndarray, np.ndarray]) -> None:
    data, train, _ = parts
    model = xgb.XGBClassifier(n_estimators=5, n_jobs=1).fit(data.X[train], data.y[train])
    model.save_model(tmp_path / "m.ubj")
    (tmp_path / "h.csv").write_text("a,b\n1,0\n")
    with pytest.raises(ExportError, match="no label column 'label'"):
        convert(tmp_path / "m.ubj", tmp_path / "h.csv", "label", "m", tmp_path / "models")
    (tmp_path / "h.csv").write_text("a,label\n1,0\n2,1\n")
    with pytest.raises(ExportError, match="takes 24 features, the CSV has 1"):
        convert(tmp_path / "m.ubj", tmp_path / "h.csv", "label", "m", tmp_path / "models")


def test_raw_xgboost_booster_files(
    parts: tuple[Dataset, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    data, train, holdout = parts
    dtrain = xgb.DMatrix(data.X[train], label=data.y[train])
    params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1}
    xgb.train(params, dtrain, num_boost_round=20).save_model(tmp_path / "booster.ubj")
    csv_path = _write_csv(
        tmp_path / "h.csv", data.feature_names, data.X[holdout], data.y[holdout], "y"
    )
    card = convert(
        tmp_path / "booster.ubj", csv_path, "y", "raw", tmp_path / "models", cost_budget_s=0.02
    ).card
    assert card.framework == "xgboost" and card.parity.max_abs_diff <= 1e-4

    hinge = {"objective": "binary:hinge", "max_depth": 2, "nthread": 1}
    xgb.train(hinge, dtrain, num_boost_round=3).save_model(tmp_path / "hinge.json")
    with pytest.raises(UnsupportedEstimator, match="objective 'binary:hinge' is not supported"):
        convert(tmp_path / "hinge.json", csv_path, "y", "hinge", tmp_path / "models")

    regression = {"objective": "reg:squarederror", "max_depth": 2, "nthread": 1}
    xgb.train(regression, dtrain, num_boost_round=3).save_model(tmp_path / "reg.json")
    reg = convert(
        tmp_path / "reg.json", csv_path, "y", "reg", tmp_path / "models", cost_budget_s=0.02
    ).card
    assert reg.task == "regression" and reg.estimator == "xgboost.XGBRegressor"
