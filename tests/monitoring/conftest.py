"""A fraud reference card built from unshifted generator data, and a controllable clock."""

from __future__ import annotations

import numpy as np
import pytest

from export.data import make_fraud
from server.modelcard import ModelCard
from tests.monitoring.cards import card_from_data, fake_fraud_scores

REFERENCE_ROWS = 20_000


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def fraud_card() -> ModelCard:
    X, y, names = make_fraud(REFERENCE_ROWS, seed=0)
    scores = fake_fraud_scores(X, names)
    threshold = float(np.quantile(scores, 0.97))
    return card_from_data(X, y, scores, names, threshold=threshold)
