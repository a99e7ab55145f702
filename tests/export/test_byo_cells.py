"""`export convert` reading hold-out CSV cells: an empty cell in a column the model reads as
strings (or whole numbers), one ONNX input per column, is refused in one clear line (it once
crashed with an IndexError from the row-matrix feeds); categories and classes spelled with
spaces around them are read as written (they were stripped, and the column refused); an
encoder's whole-number float categories are typed as categories (served as numbers they reached
ONNX Runtime cast to int64: wrong answers, or a failed batch)."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from export.cli import main
from export.repository import load_holdout
from server.columns import Codec
from server.errors import InvalidInput
from server.modelcard import load_card
from server.payload import decode_predict


def default_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "student": rng.choice(["Yes", "No"], n),
            "tier": rng.choice([1, 2, 3], n),
            "balance": rng.normal(800.0, 400.0, n).round(2),
        }
    )
    score = frame["balance"] + (frame["student"] == "Yes") * 200 + frame["tier"] * 50
    frame["default"] = np.where(score > 1000, "Yes", "No")
    return frame


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = default_frame()
    pre = ColumnTransformer(
        [
            ("c", OneHotEncoder(handle_unknown="ignore"), ["student", "tier"]),
            ("n", StandardScaler(), ["balance"]),
        ]
    )
    model = Pipeline([("pre", pre), ("lr", LogisticRegression(max_iter=500))])
    model.fit(frame.drop(columns="default"), frame["default"])
    path = tmp_path_factory.mktemp("model") / "m.joblib"
    joblib.dump(model, path)
    return path


@pytest.mark.parametrize(
    ("column", "words"), [("student", "as strings"), ("tier", "as whole numbers")]
)
def test_an_empty_cell_in_a_string_or_int_category_column_is_one_clear_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    model_file: Path,
    column: str,
    words: str,
) -> None:
    frame = default_frame().astype({column: object})
    frame.loc[3, column] = None  # an empty cell in the CSV
    csv = tmp_path / "h.csv"
    frame.to_csv(csv, index=False)
    args = ["convert", "--model", str(model_file), "--holdout", str(csv), "--name", "m"]
    args += ["--label", "default", "--models-dir", str(tmp_path / "models")]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert f"row 4 column {column!r} is empty, but the model reads the column {words}" in err
    assert not list((tmp_path / "models").glob("m/[0-9]*"))


def test_categories_and_classes_spelled_with_spaces_convert(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """UCI Adult as ``pandas.read_csv`` reads it: categories and labels with a leading space
    (" Private", " >50K"). The CSV holds exactly the training values; convert once stripped
    every cell and refused the column as "not the model's categories"."""
    rng = np.random.default_rng(1)
    n = 300
    frame = pd.DataFrame(
        {
            "workclass": rng.choice([" Private", " State-gov", " Self-emp"], n),
            "age": rng.integers(18, 80, n).astype(float),
        }
    )
    frame["income"] = np.where(
        (frame["age"] > 40) ^ (frame["workclass"] == " Private"), " >50K", " <=50K"
    )
    pre = ColumnTransformer(
        [
            ("c", OneHotEncoder(handle_unknown="ignore"), ["workclass"]),
            ("n", StandardScaler(), ["age"]),
        ]
    )
    model = Pipeline([("pre", pre), ("lr", LogisticRegression(max_iter=500))])
    model.fit(frame.drop(columns="income"), frame["income"])
    joblib.dump(model, tmp_path / "adult.joblib")
    frame.to_csv(tmp_path / "h.csv", index=False)
    args = ["convert", "--model", str(tmp_path / "adult.joblib"), "--holdout"]
    args += [str(tmp_path / "h.csv"), "--name", "adult", "--label", "income"]
    args += ["--positive-class", " >50K", "--models-dir", str(tmp_path / "models")]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 0, err
    card = load_card(tmp_path / "models" / "adult" / "1")
    assert card.classes == [" <=50K", " >50K"]
    assert card.positive_class == " >50K"
    assert card.input.columns[0].categories == [" Private", " Self-emp", " State-gov"]
    # the hold-out rows were read as the training values, not as unseen categories
    X, _ = load_holdout(tmp_path / "models" / "adult" / "1")
    assert not (X[:, 0] == -1.0).any()


@pytest.mark.parametrize("handle_unknown", ["ignore", "error"])
def test_whole_number_float_categories_are_typed_as_categories(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, handle_unknown: str
) -> None:
    """An encoder fitted on whole-number floats (an int column pandas read as float): the ONNX
    graph casts the column to int64 for its encoder, so typed as a plain number the server
    served 2.5 as category 2 (native: unknown) and an unknown value failed inside ONNX Runtime
    (a 500 for every request in the batch) where the encoder refuses unknown values. Typed as
    int categories of a float32 input, the server refuses 2.5 and serves or refuses 4.0 as the
    native encoder does, with served == native on what it serves."""
    rng = np.random.default_rng(2)
    n = 300
    frame = pd.DataFrame(
        {"rooms": rng.choice([1.0, 2.0, 3.0], n), "area": rng.normal(80, 20, n).round(1)}
    )
    frame["big"] = np.where(frame["area"] / 40 + frame["rooms"] > 4, 1, 0)
    pre = ColumnTransformer(
        [
            ("c", OneHotEncoder(handle_unknown=handle_unknown), ["rooms"]),
            ("n", StandardScaler(), ["area"]),
        ]
    )
    model = Pipeline([("pre", pre), ("lr", LogisticRegression(max_iter=500))])
    model.fit(frame[["rooms", "area"]], frame["big"])
    joblib.dump(model, tmp_path / "rooms.joblib")
    frame.to_csv(tmp_path / "h.csv", index=False)
    args = ["convert", "--model", str(tmp_path / "rooms.joblib"), "--holdout"]
    args += [str(tmp_path / "h.csv"), "--name", "rooms", "--label", "big"]
    args += ["--models-dir", str(tmp_path / "models")]
    assert main(args) == 0, capsys.readouterr().err
    version = tmp_path / "models" / "rooms" / "1"
    card = load_card(version)
    rooms = card.input.columns[0]
    assert (rooms.kind, rooms.categories, rooms.dtype) == ("categorical", [1, 2, 3], "float32")
    assert rooms.unknown == ("serve" if handle_unknown == "ignore" else "refuse")
    session = ort.InferenceSession(str(version / "model.onnx"))
    codec = Codec(card.input)

    def served(value: float) -> float:
        body = json.dumps({"instances": [{"rooms": value, "area": 80.0}]}).encode()
        feeds = codec.onnx_feeds(decode_predict(body, card, 10))
        return float(session.run([card.outputs.probabilities], feeds)[0][0, 1])

    def native(value: float) -> float:
        return float(model.predict_proba(pd.DataFrame({"rooms": [value], "area": [80.0]}))[0, 1])

    assert served(2.0) == pytest.approx(native(2.0), abs=1e-4)
    with pytest.raises(InvalidInput, match="takes a category"):
        served(2.5)
    if handle_unknown == "ignore":
        assert served(4.0) == pytest.approx(native(4.0), abs=1e-4)
    else:
        with pytest.raises(InvalidInput, match="not a known category"):
            served(4.0)
