"""The one reader of the environment: every knob, with a default that works on a laptop.

Environment variables use the prefix ``TABSERVE_`` (``TABSERVE_REDIS_URL=redis://...``);
``tabserve serve`` flags override them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TABSERVE_", frozen=True, extra="forbid", use_attribute_docstrings=True
    )

    # --- process -------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8000
    """Port to listen on."""
    grpc_port: int | None = None
    """Port of the Open Inference Protocol's gRPC service (on the same host); unset: no gRPC."""
    workers: int = 1
    """Server processes; with Redis configured they share one cache."""
    models_dir: Path = Path("models")
    """The model repository: <models_dir>/<name>/<version>/{model.onnx,model.json}."""
    log_level: str = "info"
    """Python logging level name."""
    admin_token: SecretStr | None = None
    """Bearer token for admin endpoints (reload, cache flush); unset disables them."""
    reload_interval_s: float = 0.0
    """Scan models_dir for new versions this often; 0 turns the periodic scan off."""
    bench_floor_route: bool = False
    """Serve the empty handlers `tabserve bench` measures (POST /bench/floor/{name} through
    Litestar, /bench/floor-asgi/{name} on the fast dispatch); not for production."""
    fast_dispatch: bool = True
    """Match predict and infer requests before Litestar's router (same code and answers, less
    server CPU per request); false serves them through Litestar's handlers."""

    # --- requests ------------------------------------------------------------------------------
    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body accepted; larger ones get 413."""
    max_request_rows: int = 10_000
    """Most rows one request may carry; more get 413."""
    default_deadline_ms: float = 2_000.0
    """A request not run within this many ms is answered 504; X-Deadline-Ms overrides it."""

    # --- connections ---------------------------------------------------------------------------
    header_timeout_s: float = 10.0
    """A request's line and headers must arrive within this many seconds; else 408 and close."""
    body_timeout_s: float = 10.0
    """A request body that stalls this many seconds gets 408 and the connection closes."""
    keep_alive_timeout_s: float = 5.0
    """An idle keep-alive connection is closed after this many seconds."""
    max_connections: int = 4096
    """Open connections per worker; past it a new connection is answered 503 and closed."""
    admin_auth_failures_per_minute: int = 5
    """Failed admin authentications allowed per client address per minute; then 429."""

    # --- batching ------------------------------------------------------------------------------
    batching: bool = True
    """Coalesce concurrent requests into one ONNX Runtime run."""
    max_batch_rows: int = 16
    """Most rows in one ONNX Runtime run; a larger cap means fewer, longer runs."""
    max_delay_ms: float = 0.0
    """Wait up to this long for more rows when a batch is not full; 0 never waits."""
    max_queue_rows: int = 4_096
    """Rows waiting per model version before new requests get 503 with Retry-After."""
    inline_max_cost_us: float = 60.0
    """Run inference on the event loop when the batch-1 cost is below this; else in a thread."""
    ort_intra_op_threads: int = 1
    """ONNX Runtime intra-op threads per session (1 serves small batches best)."""
    gc_young_threshold: int = Field(default=2_000, ge=1)
    """Young-generation collections of the server process start after this many more container
    allocations than deallocations (CPython's default is 700; see docs/benchmarks.md)."""
    drain_timeout_s: float = 10.0
    """On shutdown, answer queued requests for up to this long, then 503 the rest; uvicorn's
    graceful timeout is this plus 2 s."""

    # --- accuracy versus speed (the ladder of a model's cheaper variants) ---------------------
    degrade_objective_ms: dict[str, float] = Field(default_factory=dict)
    """Models that degrade instead of refuse, with their latency objective in ms, e.g.
    {"xgb_large": 50}: when the work queued on the model and its variants nears the objective,
    new requests go to the next cheaper variant of its ladder (back up once queues stay short),
    and one that would still miss its budget (X-Latency-Budget-Ms, else this objective) to a
    cheaper one still; the budget is also its deadline. Unlisted models never degrade."""
    cascade_models: list[str] = Field(default_factory=list)
    """Models answered through their cascade (recorded at export): the card's variant scores
    every row and the full model only the rows in the card's uncertainty band."""

    # --- cache ---------------------------------------------------------------------------------
    cache: bool = True
    """Answer repeated rows from the cache."""
    cache_ttl_s: float = 300.0
    """Lifetime of a cached row."""
    cache_memory_entries: int = 100_000
    """In-process cache capacity in rows; 0 turns the in-process tier off."""
    cache_memory_bytes: int = 64 * 1024 * 1024
    """In-process cache capacity in bytes held: keys, values and ~230 bytes of Python objects per
    entry."""
    cache_memo_entries: int = 10_000
    """Request bodies remembered per cached model version and answered before decoding when
    they repeat byte for byte (the response memo); 0 turns it off."""
    cache_memo_bytes: int = 16 * 1024 * 1024
    """Bytes of bodies, rows and scores the response memo may hold per cached model version."""
    redis_url: str | None = None
    """redis:// or rediss:// URL (password in the URL) of a shared cache; unset: in-process only."""
    redis_timeout_ms: float = 20.0
    """Timeout of one Redis call; a timeout counts as a miss."""
    redis_breaker_failures: int = 5
    """Consecutive Redis failures that open the circuit breaker."""
    redis_breaker_backoff_s: float = 2.0
    """How long an open breaker skips Redis before probing it again."""
    cache_model_ttl_s: dict[str, float] = Field(default_factory=dict)
    """Per-model TTL overrides, e.g. {"xgb_large": 60}; a TTL of 0 turns the cache off for it."""
    cache_generation_refresh_s: float = 1.0
    """Seconds between re-reads of a model's flush generation from Redis (flush staleness)."""
    redis_max_connections: int = 32
    """Size of the Redis connection pool per worker."""
    cache_redis_auto_skip: bool = True
    """Skip Redis for a model when computing a batch's misses costs less than a round trip."""

    # --- monitoring ----------------------------------------------------------------------------
    monitoring: bool = True
    """Track input drift, score drift and live quality per model version."""
    drift_window_rows: int = 5_000
    """Rows in the rolling drift window."""
    drift_window_s: float = 600.0
    """Oldest age of rows in the drift window."""
    psi_watch: float = 0.1
    """PSI above this puts a feature on watch."""
    psi_drift: float = 0.25
    """PSI above this flags a feature as drifting."""
    feedback_capacity: int = 100_000
    """Served rows remembered for later label feedback."""
    drift_min_rows: int = 500
    """Rows the drift window needs before any status other than "insufficient_data"."""
    quality_window_labels: int = 5_000
    """Most recent labels that live precision, recall, F1 and calibration are computed over."""

    # --- the closed loop: prediction log, shadow, promotion, retraining triggers --------------
    prediction_log_dir: Path | None = None
    """Directory of the prediction log (Parquet, by model and day: served rows, answers, request
    ids, version, time, and the labels given through feedback); unset: no log."""
    prediction_log_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    """Share of served rows written to the prediction log (0 to 1)."""
    prediction_log_rates: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=dict
    )
    """Per-model overrides of the log's sampling rate, e.g. {"xgb_small": 1.0}."""
    prediction_log_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    """Disk the prediction log may use; past it the oldest files are deleted."""
    prediction_log_file_rows: int = Field(default=50_000, ge=1)
    """Rows per Parquet file before the log starts a new one."""
    prediction_log_file_s: float = Field(default=60.0, gt=0.0)
    """Seconds a log file stays open before the log starts a new one (and rows reach disk)."""
    shadow_queue_rows: int = Field(default=4_096, ge=1)
    """Rows waiting for the shadow model; past it the shadow skips rows (counted), never the
    primary."""
    shadow_cpu_share: float = Field(default=0.03, ge=0.0, le=1.0)
    """Most of the server process's CPU time the shadow's scoring may take; past it the shadow
    skips rows (counted) and compares the models on a sample."""
    shadow_promote_after_labels: int = Field(default=0, ge=0)
    """Promote the shadow automatically once this many labelled rows were scored by both it and
    the primary and it is better on them by shadow_promote_margin; 0: promotion by admin only."""
    shadow_promote_margin: float = Field(default=0.01, ge=0.0)
    """How much better the shadow must be on the same labelled rows: PR-AUC (binary), macro-F1
    (multiclass), absolute points; regression: MAE lower by this share of the primary's."""
    retrain_command: str | None = None
    """Command run (no shell) when a retrain triggers; {model}, {version}, {reason} (drift or
    schedule) and {since} (when the drift began) are replaced, e.g. "tabserve retrain {model}
    --since {since} --shadow"; its output goes to the server's log."""
    retrain_webhook: str | None = None
    """URL that gets a JSON POST (model, version, reason, since, status, time) when a retrain
    triggers."""
    retrain_on_drift: bool = True
    """Trigger a retrain (command or webhook) when a served model's status enters drift."""
    retrain_every_s: float = Field(default=0.0, ge=0.0)
    """Also trigger a retrain of every served model on this schedule; 0: no schedule."""
    retrain_cooldown_s: float = Field(default=3_600.0, ge=0.0)
    """Least time between two triggers of one model (a flapping drift signal retrains once)."""


def settings_table() -> str:
    """The README's configuration table (Markdown), generated from the fields above.

    ``python -m server.settings`` prints it; a test keeps the README's copy current.
    """
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        shown = "unset" if default is None else str(default)
        meaning = " ".join((field.description or "").split())
        rows.append(f"| `TABSERVE_{name.upper()}` | `{shown}` | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
