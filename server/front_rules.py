"""Rules every front door (/v1, /v2 JSON and binary, gRPC) applies the same way, in one place:
which values a row may hold, and which label a row's scores give.
"""

from __future__ import annotations

import math

import numpy as np

from server.modelcard import ModelCard


def first_bad_value(rows: np.ndarray, allow_missing: bool) -> tuple[int, int] | None:
    """(row, column) of the first value that is not finite (NaN allowed when ``allow_missing``),
    or None. The common case in one pass: NaN and inf make the float64 sum NaN or inf, and a
    float64 sum of float32 values cannot overflow."""
    if math.isfinite(rows.sum(dtype=np.float64)):
        return None
    bad = ~np.isfinite(rows)
    if allow_missing:
        bad &= ~np.isnan(rows)
        if not bad.any():
            return None
    r, c = (int(i) for i in np.argwhere(bad)[0])
    return r, c


def labels_for(rows: list[list[float]], card: ModelCard) -> list[int]:
    """Binary: the positive class when its score reaches the threshold; otherwise the argmax
    (the first class on ties). ``rows`` is ``scores.tolist()``: on a few rows, Python over the
    lists costs ~0.1 us where numpy's column slice and argmax cost ~1 us."""
    classes = card.classes
    if len(classes) == 2:
        pos = card.positive_index
        pos_class, neg_class, threshold = card.positive_class, classes[1 - pos], card.threshold
        return [pos_class if row[pos] >= threshold else neg_class for row in rows]
    return [classes[max(range(len(row)), key=row.__getitem__)] for row in rows]
