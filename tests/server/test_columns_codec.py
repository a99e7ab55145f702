"""``server.columns``: ``Codec.onnx_feeds`` for int categories of a float32 input (an encoder
fitted on whole-number floats, ``layout="columns"``): the category values reach ONNX Runtime as
floats, the unseen stand-in below the least category, and a missing value as NaN; never the
codes."""

from __future__ import annotations

import numpy as np

from server.columns import Codec
from server.modelcard import Column, InputSpec


def test_float_input_of_int_categories_gets_values_not_codes() -> None:
    spec = InputSpec(
        columns=[
            Column(
                name="rooms",
                kind="categorical",
                categories=[1, 2, 3],
                allow_missing=True,
                unknown="serve",
                dtype="float32",
            ),
            Column(name="area"),
        ],
        layout="columns",
    )
    codec = Codec(spec)
    raw = [2.0, 3, 7.0, None]
    rows = np.c_[codec.encode_column(0, raw), [1.0, 2.0, 3.0, 4.0]].astype(np.float32)
    assert rows[:, 0].tolist()[:3] == [1.0, 2.0, -1.0]
    feeds = codec.onnx_feeds(rows)
    rooms = feeds["rooms"]
    assert rooms.dtype == np.float32 and rooms.shape == (4, 1)
    assert rooms[:3, 0].tolist() == [2.0, 3.0, 0.0]  # 7 is unseen: one less than the least
    assert np.isnan(rooms[3, 0])
    assert feeds["area"][:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert codec.decode_column(0, rows[:, 0]).tolist() == [2, 3, 0, None]
