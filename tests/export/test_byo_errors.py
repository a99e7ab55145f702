"""Every ``export convert`` failure a user can cause: one clear line, exit status 2, no
traceback, nothing published."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.semi_supervised import LabelSpreading

from export.cli import main


@pytest.fixture(scope="module")
def iris() -> pd.DataFrame:
    data = load_iris()
    frame = pd.DataFrame(data.data, columns=["sl", "sw", "pl", "pw"])
    frame["kind"] = np.array(["setosa", "versicolor", "virginica"])[data.target]
    frame["colour"] = np.where(data.data[:, 2] > 3.0, "dark", "light")
    return frame


@pytest.fixture
def pipe(iris: pd.DataFrame, tmp_path: Path) -> Path:
    """A string-column pipeline (multiclass, string labels) saved with joblib."""
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("c", OneHotEncoder(), ["colour"]), ("n", StandardScaler(), ["sl", "sw"])]
                ),
            ),
            ("lr", LogisticRegression(max_iter=500)),
        ]
    )
    model.fit(iris.drop(columns="kind"), iris["kind"])
    path = tmp_path / "pipe.joblib"
    joblib.dump(model, path)
    return path


def convert_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: Path, csv: Path, *extra: str
) -> str:
    """Run ``export convert``; return the one error line (asserting exit 2 and no traceback)."""
    args = ["convert", "--model", str(model), "--holdout", str(csv), "--name", "m"]
    args += ["--models-dir", str(tmp_path / "models"), *extra]
    if "--label" not in extra:
        args += ["--label", "kind"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("tabserve export: error:")]
    assert len(errors) == 1, err
    assert not list((tmp_path / "models").glob("m/[0-9]*"))
    return errors[0]


def is_dark(x: pd.DataFrame) -> pd.DataFrame:
    return (x == "dark").astype(float)


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_missing_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame, pipe: Path
) -> None:
    csv = write(iris, tmp_path / "h.csv")
    line = convert_cli(capsys, tmp_path, tmp_path / "nope.joblib", csv)
    assert line.endswith(f"model file {tmp_path / 'nope.joblib'} does not exist")
    line = convert_cli(capsys, tmp_path, pipe, tmp_path / "nope.csv")
    assert line.endswith(f"hold-out CSV {tmp_path / 'nope.csv'} does not exist")
    (tmp_path / "junk.joblib").write_bytes(b"not a pickle")
    line = convert_cli(capsys, tmp_path, tmp_path / "junk.joblib", csv)
    assert "not a readable joblib model file" in line


def test_unknown_converter(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame
) -> None:
    model = make_pipeline(StandardScaler(), LabelSpreading(max_iter=200))
    features = iris[["sl", "sw", "pl", "pw"]]
    model.fit(features, iris["kind"])
    joblib.dump(model, tmp_path / "spread.joblib")
    csv = write(iris.drop(columns="colour"), tmp_path / "h.csv")
    line = convert_cli(capsys, tmp_path, tmp_path / "spread.joblib", csv)
    assert "no ONNX converter for sklearn.semi_supervised" in line and "LabelSpreading" in line


def test_unsupported_objective(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame
) -> None:
    X = iris[["sl", "sw", "pl", "pw"]].to_numpy(np.float32)
    dtrain = xgb.DMatrix(X, label=np.arange(len(X)) % 3, group=[len(X)])
    booster = xgb.train({"objective": "rank:pairwise", "nthread": 1}, dtrain, 2)
    booster.save_model(tmp_path / "rank.json")
    csv = write(iris.drop(columns="colour"), tmp_path / "h.csv")
    line = convert_cli(capsys, tmp_path, tmp_path / "rank.json", csv)
    assert "XGBoost objective 'rank:pairwise' is not supported" in line
    assert "count:poisson" in line


def test_label_column_absent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame, pipe: Path
) -> None:
    csv = write(iris, tmp_path / "h.csv")
    line = convert_cli(capsys, tmp_path, pipe, csv, "--label", "species")
    assert "no label column 'species' in header" in line


def test_label_value_outside_the_classes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame, pipe: Path
) -> None:
    frame = iris.copy()
    frame.loc[7, "kind"] = "daisy"
    line = convert_cli(capsys, tmp_path, pipe, write(frame, tmp_path / "h.csv"))
    assert "row 8 label \"daisy\" in 'kind' is not one of the model's classes" in line
    assert "'setosa', 'versicolor', 'virginica'" in line


def test_mixed_types_in_a_column(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame, pipe: Path
) -> None:
    frame = iris.astype({"sw": object})
    frame.loc[4, "sw"] = "wide"
    line = convert_cli(capsys, tmp_path, pipe, write(frame, tmp_path / "h.csv"))
    assert "column 'sw' mixes numbers and text (row 5 holds \"wide\"); it takes numbers" in line


def test_text_where_the_model_has_no_categories(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame
) -> None:
    """A string column that reaches no encoder: its categories are unknown, so it is refused."""
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        (
                            "c",
                            FunctionTransformer(is_dark),
                            ["colour"],
                        ),
                        ("n", StandardScaler(), ["sl"]),
                    ]
                ),
            ),
            ("lr", LogisticRegression()),
        ]
    )
    model.fit(iris[["colour", "sl"]], iris["kind"])
    joblib.dump(model, tmp_path / "f.joblib")
    line = convert_cli(capsys, tmp_path, tmp_path / "f.joblib", write(iris, tmp_path / "h.csv"))
    assert "column 'colour' holds text (row 1: \"light\") but the model has no categories" in line


def test_a_string_category_where_an_int_category_belongs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame
) -> None:
    frame = iris.assign(petals=(iris["pl"] > 4).astype(int) + 1)
    model = Pipeline(
        [
            ("prep", ColumnTransformer([("c", OneHotEncoder(), ["petals"])])),
            ("lr", LogisticRegression()),
        ]
    )
    model.fit(frame[["petals"]], frame["kind"])
    joblib.dump(model, tmp_path / "i.joblib")
    bad = frame.astype({"petals": object})
    bad.loc[2, "petals"] = "two"
    line = convert_cli(capsys, tmp_path, tmp_path / "i.joblib", write(bad, tmp_path / "h.csv"))
    assert "row 3 column 'petals' takes a whole-number category, got \"two\"" in line


def test_task_and_positive_class_mistakes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame, pipe: Path
) -> None:
    csv = write(iris, tmp_path / "h.csv")
    line = convert_cli(capsys, tmp_path, pipe, csv, "--task", "regression")
    assert "--task regression: the model is a 3-class classifier (multiclass)" in line
    line = convert_cli(capsys, tmp_path, pipe, csv, "--positive-class", "setosa")
    assert "--positive-class is for binary classifiers" in line


def test_binary_without_obvious_positive_class(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame
) -> None:
    two = iris[iris["kind"] != "setosa"]
    model = LogisticRegression(max_iter=500).fit(two[["sl", "sw"]], two["kind"])
    joblib.dump(model, tmp_path / "two.joblib")
    csv = write(two[["sl", "sw", "kind"]], tmp_path / "h.csv")
    line = convert_cli(capsys, tmp_path, tmp_path / "two.joblib", csv)
    assert "classes ['versicolor', 'virginica'] have no obvious positive class" in line
    line = convert_cli(capsys, tmp_path, tmp_path / "two.joblib", csv, "--positive-class", "rose")
    assert "--positive-class 'rose' is not one of the model's classes" in line


def test_bad_categories_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame, pipe: Path
) -> None:
    csv = write(iris, tmp_path / "h.csv")
    line = convert_cli(capsys, tmp_path, pipe, csv, "--categories", "colour")
    assert "--categories 'colour': expected COLUMN=VALUE0,VALUE1" in line
    line = convert_cli(capsys, tmp_path, pipe, csv, "--categories", "colour=dark,light")
    assert "--categories is for XGBoost models" in line
    (tmp_path / "cats.json").write_text("[1, 2]")
    line = convert_cli(
        capsys, tmp_path, pipe, csv, "--categories-file", str(tmp_path / "cats.json")
    )
    assert "expected a JSON object" in line


def test_regression_target_must_be_numbers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = load_diabetes(scaled=False)
    frame = pd.DataFrame(data.data[:, :3], columns=["age", "sex", "bmi"])
    reg = xgb.XGBRegressor(n_estimators=3, n_jobs=1).fit(frame, data.target)
    reg.save_model(tmp_path / "reg.json")
    frame["kind"] = data.target.astype(object)
    frame.loc[9, "kind"] = "high"
    line = convert_cli(capsys, tmp_path, tmp_path / "reg.json", write(frame, tmp_path / "h.csv"))
    assert (
        "row 10 label column 'kind' holds \"high\"; a regressor's target must be a number" in line
    )


def test_xgboost_categories_file_for_an_unknown_column(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris: pd.DataFrame
) -> None:
    X = iris[["sl", "sw"]]
    model = xgb.XGBClassifier(n_estimators=3, n_jobs=1).fit(
        X, iris["kind"].astype("category").cat.codes
    )
    model.save_model(tmp_path / "x.json")
    csv = write(
        iris[["sl", "sw"]].assign(kind=iris["kind"].astype("category").cat.codes),
        tmp_path / "h.csv",
    )
    (tmp_path / "cats.json").write_text(json.dumps({"petal": ["a", "b"]}))
    line = convert_cli(
        capsys, tmp_path, tmp_path / "x.json", csv, "--categories-file", str(tmp_path / "cats.json")
    )
    assert "--categories names column(s) ['petal'] the model does not have" in line
