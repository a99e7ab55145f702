"""Limits before the work they bound: a large body is counted at memory speed before it is
decoded, and one that must hold more rows than a request may carry is refused (413).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from server.errors import PayloadTooLarge
from server.modelcard import ModelCard

SCAN_FROM = 16 * 1024
"""Bodies up to this size are decoded without a pre-scan: whatever they hold, well under 1 ms."""
_SLACK = 1024
"""Commas and containers a body may hold besides its rows (keys, shape, ``parameters``, ...)."""


def bound_work(body: bytes, card: ModelCard, max_rows: int) -> None:
    """Refuse (413), before decoding, a body that holds more than ``max_rows`` rows can carry.

    Decoding costs about one step per JSON value and per array or object; a valid request holds
    at most ``max_rows`` rows of ``n_features`` values, so at most about ``max_rows *
    n_features`` commas and ``max_rows`` arrays or objects (plus what the feature names, used as
    keys, and the categories, as values, hold, and ``_SLACK``). Counting is a C loop at memory
    speed (~1 ms for 4 MB), and a body that passes costs no more to decode than the largest
    valid one."""
    if len(body) > SCAN_FROM:
        for _ in _bound_steps(body, card, max_rows):
            pass


async def bound_work_yielding(body: bytes, card: ModelCard, max_rows: int) -> None:
    """:func:`bound_work` with the event loop free between its passes over the body (each
    takes a few ms on a 4 MB body)."""
    for _ in _bound_steps(body, card, max_rows):
        await asyncio.sleep(0)


def _text(card: ModelCard) -> list[str]:
    """What a row may hold as text besides its numbers: the column names (keys of an object
    row) and, per categorical column, its category with the most of the counted characters."""
    texts = list(card.input.feature_names)
    for column in card.input.columns:
        if column.kind == "categorical":
            strings = [c for c in column.categories if isinstance(c, str)]
            if strings:
                texts.append(max(strings, key=lambda c: c.count("[") + c.count("{")))
                texts.append(max(strings, key=lambda c: c.count(",")))
    return texts


def _bound_steps(body: bytes, card: ModelCard, max_rows: int) -> Iterator[None]:
    names = card.input.feature_names if card.input.numeric_only else _text(card)
    per_row_opens = 1 + sum(name.count("[") + name.count("{") for name in names)
    opens = body.count(b"[")
    yield
    opens += body.count(b"{")
    if opens > max_rows * per_row_opens + _SLACK:
        raise PayloadTooLarge(
            f"the body holds {opens} arrays or objects: more than {max_rows} rows (the limit per "
            "request) can carry; refused before decoding"
        )
    yield
    per_row_commas = card.input.n_features + sum(name.count(",") for name in names)
    commas = body.count(b",")
    if commas > max_rows * per_row_commas + _SLACK:
        raise PayloadTooLarge(
            f"the body holds about {commas + 1} values: more than {max_rows} rows of "
            f"{card.input.n_features} features (the limit per request) can carry; refused before "
            "decoding"
        )
    yield
