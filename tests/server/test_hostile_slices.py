"""Large bodies are decoded a slice of rows at a time (the event loop runs between slices): the
answer, rows or problem, is the one the whole-body decoder gives."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.errors import TabserveError
from server.large_bodies import LARGE_BODY, decode_predict_large
from server.modelcard import ModelCard, load_card
from server.oip.v2json import decode_infer, decode_infer_large
from server.payload import decode_predict

N = 3000  # rows: a body of several slices, over LARGE_BODY
ROW = [round(0.5 + i * 1.25, 3) for i in range(24)]


@pytest.fixture(scope="module")
def cards(model_repo: Path) -> dict[str, ModelCard]:
    return {name: load_card(model_repo / name / "1") for name in ("logreg", "xgb_small")}


def rows_with(at: int, value: Any, n: int = N) -> list[list[Any]]:
    rows: list[list[Any]] = [list(ROW) for _ in range(n)]
    rows[at][5] = value
    return rows


def objects(names: list[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(names, row, strict=True)) for row in rows]


def v1(rows: object) -> bytes:
    return json.dumps({"instances": rows}).encode()


def v2(data: object, n: int = N) -> bytes:
    tensor = {"name": "input", "shape": [n, 24], "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor], "id": "x"}).encode()


def flat(rows: list[list[Any]]) -> list[Any]:
    return [v for row in rows for v in row]


def v1_cases(names: list[str]) -> dict[str, bytes]:
    misspelt = objects(names, rows_with(0, 1.0))
    misspelt[2500] = {("amt" if k == "amount" else k): v for k, v in misspelt[2500].items()}
    ragged = rows_with(0, 1.0)
    ragged[2999] = ragged[2999][:-1]
    mixed: list[Any] = rows_with(0, 1.0)
    mixed[1000] = dict(zip(names, mixed[1000], strict=True))
    return {
        "lists": v1(rows_with(0, 1.0)),
        "objects": v1(objects(names, rows_with(0, 1.0))),
        "string-late": v1(rows_with(2900, "1.0")),
        "boolean-late": v1(rows_with(1700, True)),
        "null-late": v1(rows_with(2600, None)),
        "overflow-late": v1(rows_with(2100, 1e39)),
        "string-in-object-late": v1(objects(names, rows_with(2222, "x"))),
        "misspelt-late": v1(misspelt),
        "ragged-last": v1(ragged),
        "mixed-forms": v1(mixed),
        "rows-not-instances": json.dumps({"rows": rows_with(0, 1.0)}).encode(),
        "long-number-late": v1(rows_with(2800, 1.0)).replace(b"1.0", b"1" * 5000, 1),
    }


def v2_cases() -> dict[str, bytes]:
    return {
        "flat": v2(flat(rows_with(0, 1.0))),
        "nested": v2(rows_with(0, 1.0)),
        "flat-string-late": v2(flat(rows_with(2900, "nan"))),
        "flat-boolean-late": v2(flat(rows_with(2000, False))),
        "nested-string-late": v2(rows_with(2900, "1.0")),
        "flat-null-late": v2(flat(rows_with(2990, None))),
        "flat-overflow-late": v2(flat(rows_with(1500, 1e39))),
        "flat-too-few": v2(flat(rows_with(0, 1.0))[:-1]),
        "nested-ragged": v2([*rows_with(0, 1.0)[:-1], ROW[:-1]]),
        "mixed": v2([ROW, *flat(rows_with(0, 1.0, N - 1))]),
        "flat-huge-number-late": v2(flat(rows_with(2500, 1.0))).replace(
            b", 1.0,", b", " + b"9" * 100_000 + b",", 1
        ),
    }


def outcome(decode: Callable[[], Any]) -> tuple[str, Any]:
    try:
        rows = decode()
    except TabserveError as exc:
        return type(exc).__name__, exc.detail
    return "rows", rows[0] if isinstance(rows, tuple) else rows


@pytest.mark.parametrize("model", ["logreg", "xgb_small"])
def test_v1_large_bodies_decode_as_the_whole_body_does(
    cards: dict[str, ModelCard], model: str
) -> None:
    card = cards[model]
    for case_id, body in v1_cases(card.input.feature_names).items():
        assert len(body) > LARGE_BODY, case_id
        whole = outcome(lambda b=body: decode_predict(b, card, 10_000))  # type: ignore[misc]
        sliced = outcome(lambda b=body: asyncio.run(decode_predict_large(b, card, 10_000)))  # type: ignore[misc]
        assert whole[0] == sliced[0], (case_id, whole, sliced)
        if whole[0] == "rows":
            np.testing.assert_array_equal(whole[1], sliced[1])
        elif case_id != "long-number-late":  # the sliced path refuses it by its size
            assert whole[1] == sliced[1], case_id


@pytest.mark.parametrize("model", ["logreg", "xgb_small"])
def test_v2_large_bodies_decode_as_the_whole_body_does(
    cards: dict[str, ModelCard], model: str
) -> None:
    card = cards[model]
    for case_id, body in v2_cases().items():
        assert len(body) > LARGE_BODY, case_id
        whole = outcome(lambda b=body: decode_infer(b, card, 10_000))  # type: ignore[misc]
        sliced = outcome(lambda b=body: asyncio.run(decode_infer_large(b, card, 10_000)))  # type: ignore[misc]
        assert whole[0] == sliced[0], (case_id, whole, sliced)
        if whole[0] == "rows":
            np.testing.assert_array_equal(whole[1], sliced[1])
        elif case_id != "flat-huge-number-late":
            assert whole[1] == sliced[1], case_id
