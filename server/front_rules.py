"""Rules every front door (/v1, /v2 JSON and binary, gRPC) applies the same way, in one place:
which values a row may hold, and which label a row's scores give.
"""

from __future__ import annotations

import math

import numpy as np

from server.modelcard import Label, ModelCard


def first_bad_value(rows: np.ndarray, allow_missing: bool | np.ndarray) -> tuple[int, int] | None:
    """(row, column) of the first value that is not finite, or None. NaN (missing) is allowed
    everywhere when ``allow_missing`` is True, or in the columns where the bool array
    ``allow_missing`` [n_columns] is True. The common case in one pass: NaN and inf make the
    float64 sum NaN or inf, and a float64 sum of float32 values cannot overflow."""
    if math.isfinite(rows.sum(dtype=np.float64)):
        return None
    bad = ~np.isfinite(rows)
    some = bool(allow_missing.any()) if isinstance(allow_missing, np.ndarray) else allow_missing
    if some:
        bad &= ~(np.isnan(rows) & allow_missing)
        if not bad.any():
            return None
    r, c = (int(i) for i in np.argwhere(bad)[0])
    return r, c


def labels_for(rows: list[list[float]], card: ModelCard) -> list[Label]:
    """Classifiers' labels, as the user's own values (ints or strings). Binary: the positive
    class when its score reaches the threshold, else the other; multiclass: the argmax (the
    first class on ties). ``rows`` is ``scores.tolist()``: on a few rows, Python over the lists
    costs ~0.1 us where numpy's column slice and argmax cost ~1 us. Not for a regressor (no
    classes)."""
    classes = card.classes
    if len(classes) == 2:
        pos = card.positive_index
        pos_class, neg_class, threshold = classes[pos], classes[1 - pos], card.threshold
        return [pos_class if row[pos] >= threshold else neg_class for row in rows]
    return [classes[max(range(len(row)), key=row.__getitem__)] for row in rows]
