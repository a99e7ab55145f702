"""The summary a load-generator process writes for the bench (the HTTP and the gRPC one)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np


def run_and_summarize(load: Coroutine[Any, Any, dict[str, Any]], out_file: str) -> int:
    """Run a load generator's coroutine (on uvloop when installed) and write its summary to
    ``out_file`` as JSON: requests, seconds, errors, p50_ms, p99_ms, p999_ms and max_ms."""
    try:
        import uvloop

        result = uvloop.run(load)
    except ImportError:
        result = asyncio.run(load)
    lat = np.array(result["latencies_ns"], dtype=np.int64)
    summary = {
        "requests": len(lat),
        "seconds": result["seconds"],
        "errors": result["errors"],
        "p50_ms": float(np.percentile(lat, 50)) / 1e6 if len(lat) else 0.0,
        "p99_ms": float(np.percentile(lat, 99)) / 1e6 if len(lat) else 0.0,
        "p999_ms": float(np.percentile(lat, 99.9)) / 1e6 if len(lat) else 0.0,
        "max_ms": float(lat.max()) / 1e6 if len(lat) else 0.0,
    }
    Path(out_file).write_text(json.dumps(summary))
    return 0
