"""``/v2`` JSON decoding of one input per column (``server.oip.v2json`` through
``server.oip.typed``), in process: the large-body path gives the small one's answers with the
event loop free between slices, and a one-tensor model takes its columns one input each."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.columns import UNSEEN
from server.errors import InvalidInput, PayloadTooLarge
from server.modelcard import ModelCard, load_card, placeholder_card
from server.oip.typed import SLICE_VALUES, value_count
from server.oip.v2json import decode_infer, decode_infer_large
from tests.oip.typed_models import COLUMNS, frame

MAX_ROWS = 10_000


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return placeholder_card("typed", columns=list(COLUMNS), layout="columns")


def body_of(columns: dict[str, tuple[str, list[Any]]]) -> bytes:
    inputs = [
        {"name": name, "datatype": datatype, "shape": [len(data), 1], "data": data}
        for name, (datatype, data) in columns.items()
    ]
    return json.dumps({"inputs": inputs}).encode()


def typed_body(n: int) -> bytes:
    df = frame(n, seed=3)
    return body_of(
        {
            "region": ("BYTES", df["region"].tolist()),
            "amount": ("FP64", df["amount"].tolist()),
            "member": ("BOOL", df["member"].tolist()),
            "tier": ("INT64", df["tier"].tolist()),
        }
    )


def test_codes_are_the_row_matrix(card: ModelCard) -> None:
    body = body_of(
        {
            "region": ("BYTES", ["north", "mars", "east"]),
            "amount": ("FP32", [1.5, -2.0, 3]),
            "member": ("BOOL", [True, False, True]),
            "tier": ("INT64", [3, 1, 2]),
        }
    )
    rows, _ = decode_infer(body, card, MAX_ROWS)
    expected = [[1.0, 1.5, 1.0, 2.0], [UNSEEN, -2.0, 0.0, 0.0], [0.0, 3.0, 1.0, 1.0]]
    np.testing.assert_array_equal(rows, np.array(expected, dtype=np.float32))


def test_large_body_is_sliced_with_the_same_answer(card: ModelCard) -> None:
    n = 3 * SLICE_VALUES + 5
    body = typed_body(n)
    small, _ = decode_infer(body, card, MAX_ROWS)

    async def sliced() -> tuple[np.ndarray, int]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        try:
            rows, _ = await decode_infer_large(body, card, MAX_ROWS)
        finally:
            done = True
            await task
        return rows, ticks

    rows, ticks = asyncio.run(sliced())
    np.testing.assert_array_equal(rows, small)
    # the loop ran other tasks after each input's decoding and each slice of every input
    assert ticks >= len(COLUMNS) * 4


def test_large_body_errors_are_the_small_ones(card: ModelCard) -> None:
    body = typed_body(3 * SLICE_VALUES).replace(b'"east"', b'"east", 7', 1)
    with pytest.raises(InvalidInput) as small:
        decode_infer(body, card, MAX_ROWS)
    with pytest.raises(InvalidInput) as large:
        asyncio.run(decode_infer_large(body, card, MAX_ROWS))
    assert small.value.detail == large.value.detail
    assert "input `region`" in small.value.detail


def test_rows_beyond_the_limit_are_refused_before_decoding(card: ModelCard) -> None:
    datatypes = {"region": "BYTES", "amount": "FP32", "member": "BOOL", "tier": "INT64"}
    body = body_of({name: (datatype, []) for name, datatype in datatypes.items()})
    body = body.replace(b"[0, 1]", b"[20000, 1]")
    with pytest.raises(PayloadTooLarge):
        decode_infer(body, card, MAX_ROWS)


def test_a_numeric_model_takes_one_input_per_column(model_repo: Path) -> None:
    """A one-tensor model sent its columns as PandasCodec sends them decodes to the same rows."""
    numeric = load_card(model_repo / "xgb_small" / "1")
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        x = data["X"][:5].astype(np.float32)
    matrix = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}
        ]
    }
    columns = body_of(
        {
            n: ("FP64", x[:, j].astype(np.float64).tolist())
            for j, n in enumerate(numeric.input.feature_names)
        }
    )
    expected, _ = decode_infer(json.dumps(matrix).encode(), numeric, MAX_ROWS)
    rows, _ = decode_infer(columns, numeric, MAX_ROWS)
    np.testing.assert_array_equal(rows, expected)
    wrong = columns.replace(b'"name": "amount"', b'"name": "amt"')
    if wrong != columns:
        with pytest.raises(InvalidInput, match="did you mean `amount`"):
            decode_infer(wrong, numeric, MAX_ROWS)


@pytest.mark.parametrize(
    "values",
    [
        ["a", "b"],
        [None, None, 'x"y'],
        ["a,b", "c"],
        ["x\\", None],
        [None] * 5 + ['"'],
        ['\\"', None],
        [["a"], ["b,c"], [None]],
    ],
)
def test_values_are_counted_at_memory_speed_escapes_and_all(values: list[Any]) -> None:
    """The count before decoding is exact for strings with escaped quotes and backslashes, so a
    body of many nulls and one escaped quote is refused by the count, not after decoding."""
    assert value_count(json.dumps(values).encode(), rows=10) == len(values)
    hostile = b"[" + b"null," * 100_000 + b'"\\""]'
    assert value_count(hostile, rows=1_000) == 100_001
