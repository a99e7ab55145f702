"""The one model.json validator refuses malformed cards with a message that names the problem."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.errors import InvalidModelCard
from server.modelcard import CARD_FILE, ONNX_FILE, decode_card, load_card


@pytest.fixture(scope="module")
def card_json(model_repo: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((model_repo / "logreg" / "1" / CARD_FILE).read_bytes())
    return data


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            doc = doc[key]
        doc[last] = value

    return edit


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(key)


def _shorter_counts(doc: dict[str, Any]) -> None:
    doc["reference"]["features"][0]["histogram"]["counts"].pop()


def _reverse_features(doc: dict[str, Any]) -> None:
    doc["reference"]["features"].reverse()


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("missing field", _drop("metrics"), "metrics"),
    ("wrong type", _set("version", "one"), "version"),
    ("unknown field", _set("surprise", 1), "surprise"),
    ("bad name", _set("name", "Bad Name!"), "name"),
    ("threshold out of range", _set("metrics.threshold", 1.5), "threshold"),
    ("parity over tolerance", _set("parity.max_abs_diff", 0.01), "parity"),
    ("bad sha256", _set("onnx.sha256", "xyz"), "sha256"),
    ("duplicate columns", _set("input.columns", [{"name": "a"}, {"name": "a"}]), "duplicate"),
    ("one class", _set("classes", [1]), "classes"),
    ("positive class not a class", _set("positive_class", 7), "positive_class"),
    ("histogram counts", _shorter_counts, "counts"),
    ("reference order", _reverse_features, "reference.features"),
    ("unsupported dtype", _set("input.columns", [{"name": "a", "dtype": "float64"}]), "dtype"),
    (
        "string input in a matrix",
        _set(
            "input.columns",
            [{"name": "a", "kind": "categorical", "categories": ["x"], "dtype": "string"}],
        ),
        "matrix layout",
    ),
    (
        "categories mixed",
        _set("input.columns", [{"name": "a", "kind": "categorical", "categories": [1, "x"]}]),
        "mix",
    ),
    ("metrics of another task", _set("task", "regression"), "regressor"),
    ("schema version", _set("schema_version", 99), "schema_version"),
]


@pytest.mark.parametrize(("case", "edit", "mentions"), CASES, ids=[c[0] for c in CASES])
def test_malformed_card_is_rejected_with_a_clear_message(
    card_json: dict[str, Any],
    case: str,
    edit: Callable[[dict[str, Any]], None],
    mentions: str,
) -> None:
    doc = json.loads(json.dumps(card_json))
    edit(doc)
    with pytest.raises(InvalidModelCard, match=mentions.replace(".", r"\.")) as info:
        decode_card(json.dumps(doc).encode(), origin="models/logreg/1/model.json")
    assert info.value.detail.startswith("models/logreg/1/model.json: ")


def test_not_json_is_rejected(card_json: dict[str, Any]) -> None:
    with pytest.raises(InvalidModelCard, match="not valid JSON"):
        decode_card(b"{ not json", origin="x/model.json")


def test_the_valid_card_passes(card_json: dict[str, Any]) -> None:
    assert decode_card(json.dumps(card_json).encode()).name == "logreg"


def test_card_in_the_wrong_folder_is_rejected(model_repo: Path, tmp_path: Path) -> None:
    moved = tmp_path / "other" / "3"
    shutil.copytree(model_repo / "logreg" / "1", moved)
    with pytest.raises(InvalidModelCard, match="card says logreg/1, folder is other/3"):
        load_card(moved)


def test_onnx_file_that_does_not_match_its_sha256_is_rejected(
    model_repo: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "logreg" / "1"
    shutil.copytree(model_repo / "logreg" / "1", copy)
    with (copy / ONNX_FILE).open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(InvalidModelCard, match=r"does not match model\.json"):
        load_card(copy)
    (copy / ONNX_FILE).unlink()
    with pytest.raises(InvalidModelCard, match="missing"):
        load_card(copy)


def test_a_version_1_card_still_loads_as_a_binary_numeric_model(card_json: dict[str, Any]) -> None:
    """Cards written before typed columns (schema_version 1) are migrated in memory on load."""
    doc = json.loads(json.dumps(card_json))
    columns = doc["input"]["columns"]
    doc["schema_version"] = 1
    doc["input"] = {
        "name": "input",
        "feature_names": [c["name"] for c in columns],
        "dtype": "float32",
        "allow_missing": False,
    }
    del doc["task"]
    del doc["metrics"]["task"]
    card = decode_card(json.dumps(doc).encode())
    assert card.schema_version == 2
    assert card.task == "binary"
    assert card.input.layout == "matrix"
    assert card.input.feature_names == [c["name"] for c in columns]
    assert not any(c.allow_missing for c in card.input.columns)
    assert card.threshold == card_json["metrics"]["threshold"]
