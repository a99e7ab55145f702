"""Locust scenarios for tabserve: real labelled hold-out rows in, accuracy and latency out.

Run one scenario (user class) or several, with plain Locust::

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --headless -u 16 -r 16 -t 30s \
        SteadyOneRow --model xgb_small --models-dir models --scores-out accuracy.json

Scenarios (user classes): ``SteadyOneRow`` (the fraud-check path), ``BatchRows`` (32-256 rows,
offline scoring), ``ZipfRepeated`` (hot rows, exercises the cache), ``AllUnique`` (cache cold),
``MixedFleet`` (several models at once), ``ShiftedTraffic`` (drifted rows from the data
generator of a bundled model's data set, for monitoring), ``OpenLoop`` (open loop: requests of
``--batch-size`` rows at ``--open-rate`` per second whatever the answers, each with a latency
budget ``--budget-ms``; scored by ``loadtests.overload``). The ramp/spike shape lives in
``loadtests/shapes.py``; add it with ``-f loadtests/locustfile.py,loadtests/shapes.py``.

Rows go out as a client would send them: a list of numbers for an all-numeric model, an
object of raw values (strings, booleans, nulls) for a model with typed columns
(``loadtests.holdout.RowEncoder``). Every answered row is scored as it arrives (a few list
appends); each task's own metrics (binary: precision, recall, F1 at the card's threshold, PR-AUC;
multiclass: accuracy, macro-F1, log-loss; regression: MAE, RMSE, R²), error and 503 rates and
exact latency percentiles are computed once, at the end, and written to ``--scores-out`` (JSON).
In distributed mode the workers ship their raw arrays to the master with each stats report
(Locust's own ``report_to_master`` channel, flushed once more when a worker stops), and the
master writes the one file.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

import gevent.pool
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL
from locust import FastHttpUser, User, between, constant, constant_throughput, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtests.answers import AnswerReader, UnusableAnswer
from loadtests.holdout import ReplaySet, available_models, load_replay
from loadtests.overload import NO_ANSWER, OverloadLog, read_answer, summarize_overload
from loadtests.scoring import ScoreLog, summarize
from loadtests.traffic import BatchSizes, Request, SequentialPicker, UniquePicker, ZipfPicker

log = logging.getLogger("tabserve.loadtest")

__all__ = [
    "AllUnique",
    "BatchRows",
    "MixedFleet",
    "OpenLoop",
    "ShiftedTraffic",
    "SteadyOneRow",
    "ZipfRepeated",
]


# --- command line (Locust custom arguments; each also readable from an env var) ----------------
@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("tabserve", "tabserve load-test scenarios")
    group.add_argument(
        "--model",
        default="logreg",
        env_var="TABSERVE_LT_MODEL",
        help="model the single-model scenarios call",
    )
    group.add_argument(
        "--models",
        default="",
        env_var="TABSERVE_LT_MODELS",
        help="comma-separated models for MixedFleet (default: all with a hold-out)",
    )
    group.add_argument(
        "--models-dir",
        default="models",
        env_var="TABSERVE_LT_MODELS_DIR",
        help="model repository to read model.json and holdout.npz from",
    )
    group.add_argument(
        "--batch-size",
        default="32-256",
        env_var="TABSERVE_LT_BATCH_SIZE",
        help="rows per BatchRows request: N or LOW-HIGH",
    )
    group.add_argument(
        "--zipf-s",
        type=float,
        default=1.1,
        env_var="TABSERVE_LT_ZIPF_S",
        help="Zipf exponent of ZipfRepeated (larger: fewer, hotter rows)",
    )
    group.add_argument(
        "--shift",
        type=float,
        default=1.0,
        env_var="TABSERVE_LT_SHIFT",
        help="ShiftedTraffic: the data generator's shift (0 = training data)",
    )
    group.add_argument(
        "--user-rate",
        type=float,
        default=0.0,
        env_var="TABSERVE_LT_USER_RATE",
        help="requests/s per user; 0 sends as fast as answers come (closed loop)",
    )
    group.add_argument(
        "--open-rate",
        type=float,
        default=0.0,
        env_var="TABSERVE_LT_OPEN_RATE",
        help="OpenLoop: requests/s in total, arriving on schedule whatever the answers",
    )
    group.add_argument(
        "--budget-ms",
        type=float,
        default=50.0,
        env_var="TABSERVE_LT_BUDGET_MS",
        help="OpenLoop: latency budget sent as X-Latency-Budget-Ms and X-Deadline-Ms",
    )
    group.add_argument(
        "--cache-control",
        default="",
        env_var="TABSERVE_LT_CACHE_CONTROL",
        help="Cache-Control header to send (e.g. no-cache), empty for none",
    )
    group.add_argument(
        "--scores-out",
        default="tabserve-accuracy.json",
        env_var="TABSERVE_LT_SCORES_OUT",
        help="JSON file the accuracy-under-load summary is written to",
    )
    group.add_argument(
        "--spike-users",
        type=int,
        default=64,
        env_var="TABSERVE_LT_SPIKE_USERS",
        help="shapes.RampSpike: users at the top of the ramp (the spike is 3x)",
    )
    group.add_argument(
        "--spike-seconds",
        type=float,
        default=60.0,
        env_var="TABSERVE_LT_SPIKE_SECONDS",
        help="shapes.RampSpike: total duration of the shape",
    )


# --- per-process state ---------------------------------------------------------------------------
class _State:
    """Replay sets, pickers and score logs of this process, keyed by stream name.

    A stream is a model's hold-out (``"xgb_small"``) or shifted rows (``"xgb_small@shift=1"``).
    """

    def __init__(self) -> None:
        self.replays: dict[str, ReplaySet] = {}
        self.readers: dict[str, AnswerReader] = {}
        self.pickers: dict[tuple[str, str], Any] = {}
        self.logs: dict[str, ScoreLog] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.sent: dict[str, dict[str, int]] = {}
        self.started: float | None = None
        self.stopped: float | None = None
        self.cpu_started = 0.0
        self.cpu_used: float | None = None
        self.monitoring: dict[str, Any] = {}
        self.overload: dict[str, OverloadLog] = {}
        self.in_flight: dict[str, dict[int, tuple[float, list[int]]]] = {}
        """Open-loop requests sent and not answered yet: token -> (due, row labels)."""

    def reset(self) -> None:
        for score_log in self.logs.values():
            score_log.clear()
        for overload_log in self.overload.values():
            overload_log.clear()
        for pending in self.in_flight.values():
            pending.clear()
        self.sent.clear()
        self.monitoring.clear()
        self.started = time.monotonic()
        self.stopped = None
        self.cpu_started = time.process_time()
        self.cpu_used = None

    def replay(self, options: Any, model: str, shift: float | None = None) -> tuple[str, ReplaySet]:
        stream = model if shift is None else f"{model}@shift={shift:g}"
        if stream not in self.replays:
            replay = load_replay(Path(options.models_dir), model, shift=shift)
            self.replays[stream] = replay
            self.readers[stream] = AnswerReader(replay)
            self.logs.setdefault(stream, ScoreLog())
            self.meta[stream] = {
                "model": replay.model,
                "version": replay.version,
                "dataset": replay.dataset,
                "task": replay.task,
                "classes": list(replay.classes),
                "row_form": "objects" if replay.encoder is not None else "lists",
                "threshold": replay.threshold,
                "replay_rows": replay.n_rows,
                "offline": replay.offline if shift is None else None,
                "shift": shift,
            }
        return stream, self.replays[stream]

    def picker(self, stream: str, kind: str, factory: Any) -> Any:
        key = (stream, kind)
        if key not in self.pickers:
            self.pickers[key] = factory()
        return self.pickers[key]


STATE = _State()
_HEADERS_BASE = {"Content-Type": "application/json", "Accept-Encoding": "identity"}


def _process_offset(environment: Environment) -> int:
    """Distinct start offsets for workers of a distributed run (0 when running alone)."""
    return int(getattr(environment.runner, "worker_index", 0) or 0) * 7919


# --- users ---------------------------------------------------------------------------------------
class _PredictUser(FastHttpUser):
    """Sends predict requests and scores every answer; subclasses choose the rows."""

    abstract = True
    network_timeout = 10.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self._headers = dict(_HEADERS_BASE)
        if options.cache_control:
            self._headers["Cache-Control"] = options.cache_control
        self._pace = constant_throughput(options.user_rate) if options.user_rate > 0 else None

    def wait_time(self) -> float:
        return self._pace(self) if self._pace is not None else 0.0

    def predict(self, stream: str, replay: ReplaySet, request: Request, scenario: str) -> None:
        """POST one request; record latency and status, and the returned scores when 200."""
        score_log = STATE.logs[stream]
        reader = STATE.readers[stream]
        with self.client.post(
            f"/v1/models/{replay.model}/versions/{replay.version}/predict",
            data=cast(str, request.body),  # sent as the bytes they are
            headers=self._headers,
            name=f"{scenario} {stream}",
            catch_response=True,
        ) as response:
            status = response.status_code
            if status == 200:
                try:
                    scored = reader.read(response.content or b"", request.labels)
                except UnusableAnswer as exc:
                    response.failure(str(exc))
                    status = -1
                else:
                    score_log.record_rows(
                        request.keys, request.labels, scored.scores, scored.predicted
                    )
                    response.success()
            elif status in (503, 504):
                response.failure(f"{status} (overloaded or past deadline)")
            score_log.record_request(response.request_meta["response_time"], status, request.rows)


class SteadyOneRow(_PredictUser):
    """One row per request, hold-out rows in order (the fraud-check path)."""

    @task
    def one_row(self) -> None:
        stream, replay = STATE.replay(
            self.environment.parsed_options, self.environment.parsed_options.model
        )
        picker = STATE.picker(
            stream, "seq", lambda: SequentialPicker(replay, _process_offset(self.environment))
        )
        self.predict(stream, replay, picker.take(1), "one-row")


class BatchRows(_PredictUser):
    """32-256 rows per request (``--batch-size``), hold-out rows in order (offline scoring)."""

    def on_start(self) -> None:
        super().on_start()
        self._sizes = BatchSizes(self.environment.parsed_options.batch_size, seed=id(self) & 0xFFFF)

    @task
    def batch(self) -> None:
        options = self.environment.parsed_options
        stream, replay = STATE.replay(options, options.model)
        picker = STATE.picker(
            stream, "seq", lambda: SequentialPicker(replay, _process_offset(self.environment))
        )
        self.predict(stream, replay, picker.take(self._sizes.next()), "batch")


class ZipfRepeated(_PredictUser):
    """One row per request drawn from a Zipf distribution over the hold-out (``--zipf-s``)."""

    @task
    def hot_row(self) -> None:
        options = self.environment.parsed_options
        stream, replay = STATE.replay(options, options.model)
        picker = STATE.picker(
            stream,
            f"zipf{options.zipf_s}",
            lambda: ZipfPicker(replay, options.zipf_s, seed=_process_offset(self.environment)),
        )
        self.predict(stream, replay, picker.take(1), "zipf")


class AllUnique(_PredictUser):
    """One never-seen row per request (hold-out first, then perturbed copies): a cold cache."""

    @task
    def unique_row(self) -> None:
        options = self.environment.parsed_options
        stream, replay = STATE.replay(options, options.model)
        picker = STATE.picker(
            stream, "unique", lambda: UniquePicker(replay, _process_offset(self.environment))
        )
        self.predict(stream, replay, picker.take(1), "unique")


class MixedFleet(_PredictUser):
    """One-row requests spread evenly over several models (``--models``)."""

    def on_start(self) -> None:
        super().on_start()
        options = self.environment.parsed_options
        names = [m for m in options.models.split(",") if m] or available_models(
            Path(options.models_dir)
        )
        if not names:
            raise RuntimeError(f"MixedFleet: no models with a hold-out under {options.models_dir}")
        self._streams = [STATE.replay(options, name) for name in names]
        self._turn = _process_offset(self.environment) + id(self) % len(names)

    @task
    def fleet_row(self) -> None:
        self._turn += 1
        stream, replay = self._streams[self._turn % len(self._streams)]
        picker = STATE.picker(
            stream, "seq", lambda: SequentialPicker(replay, _process_offset(self.environment))
        )
        self.predict(stream, replay, picker.take(1), "fleet")


class ShiftedTraffic(_PredictUser):
    """One-row requests of freshly generated, drifted rows (``--shift``); models of a bundled
    data set with a generator only (fraud, pricing, returns).

    Pauses a little between requests: the point is a steady drifted stream for the monitor.
    """

    wait_time = between(0.0, 0.002)

    @task
    def shifted_row(self) -> None:
        options = self.environment.parsed_options
        stream, replay = STATE.replay(options, options.model, shift=options.shift)
        picker = STATE.picker(
            stream, "seq", lambda: SequentialPicker(replay, _process_offset(self.environment))
        )
        self.predict(stream, replay, picker.take(1), "shifted")


class OpenLoop(User):
    """Open loop: requests of ``--batch-size`` hold-out rows (in order) arriving at
    ``--open-rate`` per second in total (shared by the users of the run), each sent when due
    whatever the earlier ones got, with the latency budget ``--budget-ms`` as
    ``X-Latency-Budget-Ms`` and ``X-Deadline-Ms``.

    Every arrival runs in its own greenlet over the user's pool of keep-alive connections, so a
    slow answer never delays the next arrival. Latency counts from the moment a request was due;
    the send lag (due to sent) shows when the client fell behind. Requests go through
    geventhttpclient's ``HTTPClient`` directly (Locust's stats still get one event per request):
    about half the client CPU per request of ``FastHttpSession``, whose per-request bookkeeping
    would otherwise make the client the bottleneck of an open-loop run on one core. Scored by
    ``loadtests.overload``; run in one local Locust process (not distributed).
    """

    concurrency = 256
    """Keep-alive connections of this user's pool: requests in flight at once per user (1,024
    for the 4 users of a sweep cell, enough for the server to queue far past a 50 ms budget).
    A request due while all are busy waits for one, and that wait counts in its latency, as it
    would in a real client's connection pool; an unbounded pool would instead open thousands of
    connections past capacity and measure the connect storm."""
    timeout_s = 2.0
    """Connect and network timeout: a request unanswered this long counts as no answer."""
    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        if options.open_rate <= 0:
            raise RuntimeError("OpenLoop needs --open-rate > 0")
        self._stream, self._replay = STATE.replay(options, options.model)
        if self._replay.task != "binary":
            raise RuntimeError(f"OpenLoop scores binary models; {options.model} is not")
        self._picker = STATE.picker(
            self._stream,
            "seq",
            lambda: SequentialPicker(self._replay, _process_offset(self.environment)),
        )
        self._sizes = BatchSizes(options.batch_size, seed=id(self) & 0xFFFF)
        self._scores = STATE.logs[self._stream]
        self._log = STATE.overload.setdefault(self._stream, OverloadLog())
        self._pending = STATE.in_flight.setdefault(self._stream, {})
        self._budget = float(options.budget_ms)
        budget = f"{self._budget:g}"
        self._headers = dict(_HEADERS_BASE)
        self._headers["X-Latency-Budget-Ms"] = budget
        self._headers["X-Deadline-Ms"] = budget
        self._path = f"/v1/models/{self._replay.model}/versions/{self._replay.version}/predict"
        self._name = f"open-loop {self._stream}"
        positive = self._replay.positive_class
        classes = list(self._replay.classes)
        self._positive_index = classes.index(positive) if positive in classes else len(classes) - 1
        url = URL(self.host or "")
        self._http = HTTPClient(
            url.host,
            url.port,
            concurrency=self.concurrency,
            connection_timeout=self.timeout_s,
            network_timeout=self.timeout_s,
        )
        users = max(1, int(getattr(options, "num_users", 1) or 1))
        self._interval = users / float(options.open_rate)
        self._next = time.perf_counter() + random.random() * self._interval
        self._flights = gevent.pool.Pool()

    def on_stop(self) -> None:
        # Requests still in flight stay in STATE.in_flight; the results count the overdue ones.
        self._flights.kill(block=False)
        self._http.close()

    @task
    def arrive(self) -> None:
        """Send every request due by now (each in its own greenlet), else sleep until the next."""
        delay = self._next - time.perf_counter()
        if delay > 0:
            gevent.sleep(delay)
        now = time.perf_counter()
        while self._next <= now:
            self._flights.spawn(self._send, self._next, self._picker.take(self._sizes.next()))
            self._next += self._interval

    def _post(self, body: bytes) -> tuple[int, bytes, str | None, Exception | None]:
        """(status, body, X-Model-Variant, error); status NO_ANSWER when nothing came back."""
        try:
            response = self._http.post(self._path, body=body, headers=self._headers)
            try:
                status = int(response.status_code)
                content = response.read()
                header = response.get("x-model-variant")
            finally:
                response.release()
        except Exception as exc:  # a connection error or timeout: no answer
            return NO_ANSWER, b"", None, exc
        variant = header if isinstance(header, str) or header is None else ",".join(header)
        return status, content, variant, None

    def _send(self, due: float, request: Request) -> None:
        labels = [int(y) for y in request.labels]
        token = id(request)
        self._pending[token] = (due, labels)
        sent = time.perf_counter()
        status, content, variant, error = self._post(request.body)
        done = time.perf_counter()
        answers: list[tuple[float, int]] = []
        if status == 200:
            try:
                answers = read_answer(
                    content,
                    self._positive_index,
                    self._replay.positive_class,
                    self._replay.threshold,
                    len(labels),
                )
            except ValueError as exc:
                status, error = -1, exc
        elif error is None:
            error = RuntimeError(f"HTTP {status}")
        self.environment.events.request.fire(
            request_type="POST",
            name=self._name,
            response_time=(done - sent) * 1000.0,
            response_length=len(content),
            exception=error,
            context={},
            response=None,
        )
        if self._pending.pop(token, None) is None or STATE.stopped is not None:
            return  # the cell ended while this request was in flight: counted there
        latency_ms = (done - due) * 1000.0
        self._scores.record_request(latency_ms, status, len(labels))
        if answers:
            self._scores.record_rows(request.keys, request.labels, [s for s, _ in answers])
        self._log.record(
            latency_ms=latency_ms,
            lag_ms=(sent - due) * 1000.0,
            sent_at=sent,
            status=status,
            labels=labels,
            budget_ms=self._budget,
            answers=answers,
            variant=variant,
        )


# --- results: gathered on the master (or the single local process) ------------------------------
@events.test_start.add_listener  # type: ignore[untyped-decorator]
def _on_test_start(environment: Environment, **_: Any) -> None:
    STATE.reset()


@events.report_to_master.add_listener  # type: ignore[untyped-decorator]
def _on_report_to_master(client_id: str, data: dict[str, Any]) -> None:
    payload = {}
    for stream, score_log in STATE.logs.items():
        chunk = score_log.export_since(STATE.sent.setdefault(stream, {}))
        payload[stream] = {"chunk": chunk, "meta": STATE.meta[stream]}
    data["tabserve_scores"] = payload


@events.worker_report.add_listener  # type: ignore[untyped-decorator]
def _on_worker_report(client_id: str, data: dict[str, Any]) -> None:
    for stream, item in data.get("tabserve_scores", {}).items():
        STATE.logs.setdefault(stream, ScoreLog()).extend_from(item["chunk"])
        STATE.meta[stream] = item["meta"]


@events.test_stop.add_listener  # type: ignore[untyped-decorator]
def _on_test_stop(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    STATE.stopped = time.monotonic()
    STATE.cpu_used = time.process_time() - STATE.cpu_started
    _close_in_flight(environment)
    _fetch_monitoring(environment)
    _write_results(environment)


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _on_quitting(environment: Environment, **_: Any) -> None:
    # The master's test_stop fires before its workers' last reports arrive; write again, final.
    if isinstance(environment.runner, WorkerRunner) or not STATE.logs:
        return
    _write_results(environment)
    for stream, summary in results_document(environment)["streams"].items():
        log.info("tabserve %s: %s", stream, one_line(summary))


def _close_in_flight(environment: Environment) -> None:
    """Open-loop requests still unanswered when the cell ends: past their budget already, they
    are missed (no answer in time); younger ones could still make it and are left out."""
    options: Any = environment.parsed_options
    budget = float(options.budget_ms)
    now = time.perf_counter()
    for stream, pending in STATE.in_flight.items():
        overload_log = STATE.overload.setdefault(stream, OverloadLog())
        for due, labels in list(pending.values()):
            age_ms = (now - due) * 1000.0
            if age_ms > budget:
                STATE.logs.setdefault(stream, ScoreLog()).record_request(
                    age_ms, NO_ANSWER, len(labels)
                )
                overload_log.record(
                    latency_ms=age_ms,
                    lag_ms=math.nan,
                    status=NO_ANSWER,
                    labels=labels,
                    budget_ms=budget,
                )
        pending.clear()


def _fetch_monitoring(environment: Environment) -> None:
    host = environment.host or ""
    for stream, meta in STATE.meta.items():
        if meta.get("shift") is None or not host.startswith("http"):
            continue
        url = f"{host.rstrip('/')}/v1/models/{meta['model']}/monitoring"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                STATE.monitoring[stream] = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            STATE.monitoring[stream] = {"error": f"{url}: {exc}"}


def results_document(environment: Environment) -> dict[str, Any]:
    started = STATE.started or time.monotonic()
    stopped = STATE.stopped or time.monotonic()
    duration = max(stopped - started, 1e-9)
    streams: dict[str, Any] = {}
    total = ScoreLog()
    for stream, score_log in sorted(STATE.logs.items()):
        meta = STATE.meta.get(stream, {})
        summary = summarize(
            score_log,
            float(meta.get("threshold", 0.5)),
            task=str(meta.get("task", "binary")),
            duration_s=duration,
        )
        summary.update(meta)
        if stream in STATE.monitoring:
            summary["monitoring"] = STATE.monitoring[stream]
        streams[stream] = summary
        total.merge(score_log)
    options: Any = environment.parsed_options
    overload = {
        stream: summarize_overload(
            overload_log,
            budget_ms=float(options.budget_ms),
            duration_s=duration,
            target_rps=float(options.open_rate) or None,
            threshold=float(STATE.meta.get(stream, {}).get("threshold", 0.5)),
        )
        for stream, overload_log in sorted(STATE.overload.items())
        if len(overload_log)
    }
    return {
        "host": environment.host,
        "user_classes": sorted(cls.__name__ for cls in environment.user_classes),
        "distributed": isinstance(environment.runner, MasterRunner),
        "duration_s": duration,
        "client_cpu_s": STATE.cpu_used,
        "client_cpu_pct": None if STATE.cpu_used is None else 100.0 * STATE.cpu_used / duration,
        "options": {
            "model": options.model,
            "batch_size": options.batch_size,
            "zipf_s": options.zipf_s,
            "shift": options.shift,
            "user_rate": options.user_rate,
            "cache_control": options.cache_control,
            "open_rate": options.open_rate,
            "budget_ms": options.budget_ms,
        },
        "streams": streams,
        "overload": overload,
        "total": summarize(total, None, duration_s=duration),
        "locust": locust_totals(environment),
    }


def locust_totals(environment: Environment) -> dict[str, float]:
    """Locust's own aggregate, final: its ``_stats.csv`` is rewritten only once a second while
    the test runs and not at exit, so a short cell could read a snapshot taken before any
    request completed."""
    entry = environment.stats.total
    return {
        "requests": float(entry.num_requests),
        "failures": float(entry.num_failures),
        "rps": float(entry.total_rps),
        "p50": float(entry.get_response_time_percentile(0.5) or 0.0),
        "p95": float(entry.get_response_time_percentile(0.95) or 0.0),
        "p99": float(entry.get_response_time_percentile(0.99) or 0.0),
    }


def _write_results(environment: Environment) -> None:
    options: Any = environment.parsed_options
    path = Path(options.scores_out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results_document(environment), indent=2, allow_nan=True))
    tmp.replace(path)


def one_line(summary: dict[str, Any]) -> str:
    acc = summary.get("accuracy") or {}
    lat = summary.get("latency_ms") or {}
    task = summary.get("task", "binary")
    nan = float("nan")
    if task == "regression":
        quality = f"MAE {acc.get('mae', nan):.4g} RMSE {acc.get('rmse', nan):.4g}"
    elif task == "multiclass":
        quality = f"accuracy {acc.get('accuracy', nan):.4f} macro-F1 {acc.get('macro_f1', nan):.4f}"
    else:
        quality = f"PR-AUC {acc.get('pr_auc', nan):.4f} F1 {acc.get('f1', nan):.4f}"
    return (
        f"{summary['requests']} requests, errors {summary['error_rate']:.2%} "
        f"(503 {summary['rate_503']:.2%}), p50 {lat.get('p50', nan):.2f} ms "
        f"p99 {lat.get('p99', nan):.2f} ms, rows {summary.get('distinct_rows', 0)}, {quality}"
    )
