"""How the report and its plots name and flag a sweep's cells, as a person would read them."""

from __future__ import annotations

import math
from typing import Any

from loadtests.budget import Ranked
from loadtests.results import is_noisy

NA = "-"


def fmt(value: Any, digits: int = 2, scale: float = 1.0) -> str:
    if value is None:
        return NA
    try:
        x = float(value) * scale
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return NA
    return f"{x:,.{digits}f}"


def noisy_verdict(r: Ranked) -> bool:
    return r.verdict.cell is not None and is_noisy(r.verdict.cell)


_SCENARIOS = {
    "SteadyOneRow": "one row",
    "BatchRows": "row batches",
    "ZipfRepeated": "Zipf-repeated rows",
    "AllUnique": "never-repeated rows",
    "ShiftedTraffic": "shifted rows",
    "MixedFleet": "mixed models",
}
_CACHES = {
    "off": "no cache",
    "memory": "in-process cache",
    "redis": "Redis cache",
    "tiered": "in-process + Redis cache",
}
GROUP_TITLES = {
    "budget": "paced at the budget's rate",
    "models": "model comparison (closed loop)",
    "accuracy": "accuracy check (whole hold-out)",
    "batching": "batching",
    "cache": "cache",
    "spike": "overload",
    "shifted": "shifted traffic",
    "capacity": "full model's capacity (closed loop)",
    "overload": "overload: refuse, degrade, cascade (open loop)",
}
_MODES = {"refuse": "refuse only", "degrade": "degrade", "cascade": "cascade"}


def _batching(cell: dict[str, Any]) -> str:
    if cell.get("batching") is False:
        return "no batching"
    delay = float(cell.get("max_delay_ms") or 0.0)
    return f"batching, waits <= {delay:g} ms" if delay > 0 else "batching, no wait"


def cell_label(cell: dict[str, Any]) -> str:
    """A cell as a person would name it: 'xgb_large: one row, 32 users, no batching'."""
    model, group = cell.get("model", "?"), cell.get("group")
    users = f"{cell.get('users')} user" + ("" if cell.get("users") == 1 else "s")
    scenario = " + ".join(_SCENARIOS.get(s, s) for s in str(cell.get("scenario", "")).split(","))
    if group == "budget":
        rate = cell.get("target_rps")
        return f"{model}: paced at {fmt(rate, 0)} req/s ({users})"
    if group == "accuracy":
        return f"{model}: batches of {cell.get('batch_size', '?')} rows, {users}"
    if group == "batching":
        return f"{model}: one row, {users}, {_batching(cell)}"
    if group == "cache":
        cache = _CACHES.get(str(cell.get("cache")), str(cell.get("cache")))
        return f"{model}: {scenario}, {users}, {cache}"
    if group == "spike":
        label = str(cell.get("server_label", ""))
        queue = label.rsplit("queue ", 1)[1] if "queue " in label else None
        bound = f", queue up to {queue} rows" if queue else ""
        peak = int(cell.get("users") or 0)
        return f"{model}: ramp to {peak} users, spike to {3 * peak}{bound}"
    if group == "shifted":
        return f"{model}: shifted traffic, {users}"
    rows = _rows_per_request(cell)
    if group == "capacity":
        return f"{model}: capacity, {rows}, {users}, closed loop"
    if group == "overload":
        mode = _MODES.get(str(cell.get("overload_mode")), str(cell.get("overload_mode")))
        rate = cell.get("target_rps")
        at = f" ({fmt(rate, 0)} req/s of {rows})" if rate else f" ({rows})"
        return f"{model}: open loop at {cell.get('load_factor')}x capacity{at}, {mode}"
    return f"{model}: {scenario}, {users}"


def _rows_per_request(cell: dict[str, Any]) -> str:
    """'one row', or 'N-row requests' for a fixed batch size ('M-N rows' for a range)."""
    if cell.get("scenario") == "SteadyOneRow":
        return "one row"
    size = str(cell.get("batch_size") or "1")
    if size == "1":
        return "one row"
    return f"{size}-row requests" if "-" not in size else f"{size} rows per request"
