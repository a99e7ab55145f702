"""A long soak: never-repeating rows at a steady moderate rate, the server's memory sampled.

    python -m loadtests.stress.soak --minutes 30

Starts a real ``tabserve serve`` on loopback (``loadtests.serveproc.ServeProcess``, cache on,
monitoring on, the settings' defaults unless ``--env`` changes them) and sends it, for
``--minutes``, 16-row ``POST /v1/models/{name}/predict`` bodies whose rows were never sent
before (hold-out rows with feature 0 shifted by a step per pass over the hold-out), most to
``xgb_large`` and some to ``xgb_small``, paced at ``--rate`` requests/s over a few keep-alive
connections (not maximum load: the point is time, not pressure). A few labels per second go back
by request id and by row hash, so the feedback memory's two indexes fill too.

Every ``--sample-s`` seconds it records the server's RSS (psutil, the whole process tree) and
what the server reports about its bounded structures: per model the in-process cache tier and
the response memo (``GET /v1/models/{name}``: entries, bytes and the memo's doorkeeper hashes
against their bounds), the drift window and the feedback memory (``GET
/v1/models/{name}/monitoring``), and the size of ``/metrics`` (its series count must stay
flat). The samples go to a CSV; the summary printed at the end gives RSS at minute 1, minute 10
and the end, the ratio end / minute 10 (the target: within 10%), and each structure's last size
against its bound. Everything started here is stopped by its PID in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psutil

from loadtests.holdout import latest_version_dir
from loadtests.serveproc import LOOPBACK, ServeProcess
from server.modelcard import HOLDOUT_FILE
from server.monitoring.feedback import row_hash

RSS_TARGET = 0.10
"""The issue's target: RSS at the end within 10% of RSS at minute 10."""
MAX_LABELS_DUE = 1_000
"""Labels waiting to be sent back, at most (the load generator's own memory stays bounded)."""


# --- rows that never repeat ------------------------------------------------------------------


class UniqueRows:
    """Rows no request has carried before: hold-out row ``k % n`` with feature 0 moved by
    ``step * (k // n + 1)``, so two rows from the same hold-out row always differ."""

    def __init__(self, models_dir: Path, model: str, step: float = 0.01) -> None:
        with np.load(latest_version_dir(models_dir, model) / HOLDOUT_FILE) as data:
            self.base = data["X"].astype(np.float64)
            self.labels = data["y"].astype(np.int64)
        self.step = step
        self.next = 0
        self._encode = msgspec.json.Encoder().encode

    def take(self, n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
        """A body of ``n`` fresh rows, the rows as float32 and their labels."""
        k = np.arange(self.next, self.next + n)
        self.next += n
        size = len(self.base)
        rows = self.base[k % size].copy()
        rows[:, 0] += self.step * (k // size + 1)
        rows32 = rows.astype(np.float32)
        body = self._encode({"instances": rows32.tolist()})
        return body, rows32, self.labels[k % size]


# --- a paced HTTP/1.1 client -----------------------------------------------------------------


@dataclass
class Traffic:
    """What the load generator sent and got back."""

    sent: int = 0
    ok: int = 0
    failed: dict[int, int] = field(default_factory=dict)
    """Answers other than 200, by status (0: connection error or timeout)."""
    feedback_sent: int = 0
    feedback_ok: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    """Latencies since the last sample (cleared by the sampler)."""
    labels_due: list[tuple[str, str, str, int]] = field(default_factory=list)
    """(model, "request_id" or "row_hash", key, label) waiting to be sent as feedback."""


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, wait_s: float
) -> tuple[int, dict[bytes, bytes], bytes]:
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait_s)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    body = await asyncio.wait_for(reader.readexactly(length), wait_s) if length else b""
    return status, headers, body


def _post(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _connection(
    port: int,
    next_request: Any,
    interval_s: float,
    until: float,
    traffic: Traffic,
    timeout_s: float,
) -> None:
    """One keep-alive connection sending one request every ``interval_s`` until ``until``.

    Open loop at the connection's pace, but never more than one request in flight: a late
    answer delays the next send, and a connection that fell behind does not burst to catch up.
    """
    loop = asyncio.get_running_loop()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    due = loop.time()
    try:
        while loop.time() < until:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = max(due + interval_s, loop.time() - interval_s)
            path, body, on_answer = next_request()
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(LOOPBACK, port)
                except OSError:
                    traffic.failed[0] = traffic.failed.get(0, 0) + 1
                    continue
            assert reader is not None
            started = loop.time()
            traffic.sent += 1
            try:
                status, headers, answer = await _exchange(
                    reader, writer, _post(port, path, body), timeout_s
                )
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError):
                traffic.failed[0] = traffic.failed.get(0, 0) + 1
                writer.close()
                reader = writer = None
                continue
            traffic.latencies_ms.append((loop.time() - started) * 1000.0)
            if status == 200:
                traffic.ok += 1
                if on_answer is not None:
                    on_answer(headers, answer)
            else:
                traffic.failed[status] = traffic.failed.get(status, 0) + 1
            if headers.get(b"connection", b"").lower() == b"close":
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


# --- what the server reports -----------------------------------------------------------------


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def _metrics_shape(url: str) -> tuple[int, int]:
    """(bytes, series) of one /metrics scrape."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read()
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    return len(text), series


def server_state(url: str, models: list[str]) -> dict[str, Any]:
    """The sizes the server reports, flattened to ``<model>.<structure>.<field>`` columns."""
    out: dict[str, Any] = {}
    memory_seen = False
    for model in models:
        cache = _get_json(f"{url}/v1/models/{model}")["detail"][-1]["cache"]
        out[f"{model}.cache.enabled"] = int(bool(cache.get("enabled")))
        out[f"{model}.cache.rows_hit"] = cache.get("rows_hit", 0)
        out[f"{model}.cache.bypassed"] = int(bool(cache.get("bypassed")))
        memo = cache.get("memo") or {}
        for key in ("entries", "bytes", "seen_hashes"):
            out[f"{model}.memo.{key}"] = memo.get(key, 0)
        memory = cache.get("memory")
        if memory and not memory_seen:  # one process-wide tier, reported by every model
            memory_seen = True
            for key in ("entries", "max_entries", "bytes", "max_bytes"):
                out[f"memory.{key}"] = memory[key]
        if memo:
            out[f"{model}.memo.max_entries"] = memo["max_entries"]
            out[f"{model}.memo.max_bytes"] = memo["max_bytes"]
            out[f"{model}.memo.max_seen_hashes"] = memo["max_seen_hashes"]
        snap = _get_json(f"{url}/v1/models/{model}/monitoring")
        window, observed = snap["window"], snap["observed"]
        out[f"{model}.window.rows"] = window["rows"]
        out[f"{model}.window.max_rows"] = window["max_rows"]
        out[f"{model}.quality.labels"] = snap["quality"]["labels"]
        out[f"{model}.quality.window"] = snap["quality"]["window"]
        out[f"{model}.feedback.rows"] = observed["feedback_rows_remembered"]
        out[f"{model}.feedback.capacity"] = observed.get("feedback_capacity", 0)
        out[f"{model}.feedback.requests_indexed"] = observed.get("feedback_requests_indexed", 0)
        out[f"{model}.feedback.hashes_indexed"] = observed.get("feedback_hashes_indexed", 0)
    out["metrics.bytes"], out["metrics.series"] = _metrics_shape(url)
    return out


def tree_rss_mb(pid: int) -> tuple[float, int]:
    """RSS of a process and its descendants in MB, and their thread count."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0, 0
    rss, threads = 0, 0
    for proc in procs:
        try:
            rss += proc.memory_info().rss
            threads += proc.num_threads()
        except psutil.Error:
            continue
    return rss / 1e6, threads


# --- the soak --------------------------------------------------------------------------------


@dataclass
class SoakConfig:
    models_dir: Path
    minutes: float
    rate: float
    small_share: float
    rows: int
    connections: int
    sample_s: float
    feedback_rate: float
    csv_path: Path
    env: dict[str, str]
    cpus: str | None
    large: str = "xgb_large"
    small: str = "xgb_small"


async def _drive(config: SoakConfig, server: ServeProcess, writer: Any) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    models = [config.large, config.small]
    sources = {m: UniqueRows(config.models_dir, m) for m in models}
    traffic = Traffic()
    # Labels: one answer in ``feedback_every`` of each model's gets one sent back.
    feedback_every = (
        max(1, round(config.rate / config.feedback_rate)) if config.feedback_rate else 0
    )
    counter = 0
    per_model = dict.fromkeys(models, 0)
    small_due = 0.0
    hash_turn = False

    def remember_label(model: str, rows: np.ndarray, labels: np.ndarray) -> Any:
        def on_answer(headers: dict[bytes, bytes], _: bytes) -> None:
            nonlocal hash_turn
            hash_turn = not hash_turn
            if hash_turn:
                key = row_hash(rows[-1])
                traffic.labels_due.append((model, "row_hash", key, int(labels[-1])))
            else:
                key = headers.get(b"x-request-id", b"").decode()
                traffic.labels_due.append((model, "request_id", key, int(labels[0])))

        return on_answer

    def next_request() -> tuple[str, bytes, Any]:
        nonlocal counter, small_due
        counter += 1
        if traffic.labels_due and counter % 2:
            model, kind, key, label = traffic.labels_due.pop()
            traffic.feedback_sent += 1
            body = msgspec.json.encode({kind: key, "label": label})

            def counted(_h: dict[bytes, bytes], _b: bytes) -> None:
                traffic.feedback_ok += 1

            return f"/v1/models/{model}/feedback", body, counted
        small_due += config.small_share  # every 1/share-th request goes to the small model
        model = config.large
        if small_due >= 1.0:
            small_due -= 1.0
            model = config.small
        body, rows, labels = sources[model].take(config.rows)
        per_model[model] += 1
        on_answer = None
        if (
            feedback_every
            and per_model[model] % feedback_every == 0
            and len(traffic.labels_due) < MAX_LABELS_DUE
        ):
            on_answer = remember_label(model, rows, labels)
        return f"/v1/models/{model}/predict", body, on_answer

    assert server.pid is not None
    started = loop.time()
    until = started + config.minutes * 60.0
    interval = config.connections / config.rate
    conns = [
        asyncio.create_task(
            _connection(server.port, next_request, interval, until, traffic, timeout_s=10.0)
        )
        for _ in range(config.connections)
    ]
    samples: list[dict[str, Any]] = []
    last_sent, last_t = 0, started
    try:
        while True:
            now = loop.time()
            rss, threads = tree_rss_mb(server.pid)
            try:
                state = await asyncio.to_thread(server_state, server.url, models)
            except (OSError, ValueError, KeyError) as exc:  # too slow to answer: RSS only
                state = {}
                print(f"  sample at {now - started:.0f} s without server state: {exc!r}")
            lat = sorted(traffic.latencies_ms)
            traffic.latencies_ms.clear()
            sample = {
                "t_s": round(now - started, 1),
                "rss_mb": round(rss, 1),
                "threads": threads,
                "sent": traffic.sent,
                "ok": traffic.ok,
                "failed": sum(traffic.failed.values()),
                "failed_by_status": " ".join(f"{k}:{v}" for k, v in sorted(traffic.failed.items())),
                "req_per_s": (
                    round((traffic.sent - last_sent) / (now - last_t), 1)
                    if now - last_t > 0.5
                    else None
                ),
                "p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 2) if lat else None,
                "feedback_ok": traffic.feedback_ok,
                **state,
            }
            last_sent, last_t = traffic.sent, now
            samples.append(sample)
            writer.write(sample)
            if now >= until or all(c.done() for c in conns):
                break
            if server.proc is None or server.proc.poll() is not None:
                print(f"  the server exited at {now - started:.0f} s:\n{server.log_tail()}")
                break
            print(
                f"  {sample['t_s'] / 60:5.1f} min  RSS {sample['rss_mb']:6.1f} MB  "
                f"{sample['req_per_s'] or 0:6.1f} req/s  failed {sample['failed']}",
                flush=True,
            )
            await asyncio.sleep(max(0.0, min(config.sample_s, until - loop.time())))
    finally:
        for conn in conns:
            conn.cancel()
        await asyncio.gather(*conns, return_exceptions=True)
    failures = ", ".join(f"{k or 'conn'}: {v}" for k, v in sorted(traffic.failed.items()))
    print(f"  traffic: {traffic.sent} requests, {traffic.ok} ok, failed {{{failures}}}")
    return samples


class _CsvSink:
    """Writes samples as they come (a killed soak still leaves its rows); columns from the
    first sample, later keys that were not there are dropped."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", newline="")
        self._writer: csv.DictWriter[str] | None = None

    def write(self, sample: dict[str, Any]) -> None:
        if self._writer is None:
            self._writer = csv.DictWriter(
                self._file, fieldnames=list(sample), extrasaction="ignore"
            )
            self._writer.writeheader()
        self._writer.writerow(sample)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def rss_at(samples: list[dict[str, Any]], t_s: float) -> float | None:
    """RSS of the first sample at or after ``t_s`` (None when the soak ended before)."""
    for sample in samples:
        if sample["t_s"] >= t_s:
            return float(sample["rss_mb"])
    return None


def bounded_structures(last: dict[str, Any], models: list[str]) -> list[tuple[str, int, int]]:
    """(name, size, bound) of every bounded structure the last sample reports."""
    columns = [("cache memory tier: entries", "memory.entries", "memory.max_entries")]
    columns.append(("cache memory tier: bytes", "memory.bytes", "memory.max_bytes"))
    for m in models:
        columns += [
            (f"{m} memo: entries", f"{m}.memo.entries", f"{m}.memo.max_entries"),
            (f"{m} memo: bytes", f"{m}.memo.bytes", f"{m}.memo.max_bytes"),
            (f"{m} memo: doorkeeper hashes", f"{m}.memo.seen_hashes", f"{m}.memo.max_seen_hashes"),
            (f"{m} drift window: rows", f"{m}.window.rows", f"{m}.window.max_rows"),
            (f"{m} feedback: rows", f"{m}.feedback.rows", f"{m}.feedback.capacity"),
            (
                f"{m} feedback: request ids",
                f"{m}.feedback.requests_indexed",
                f"{m}.feedback.capacity",
            ),
            (f"{m} feedback: row hashes", f"{m}.feedback.hashes_indexed", f"{m}.feedback.capacity"),
            (f"{m} quality window: labels", f"{m}.quality.labels", f"{m}.quality.window"),
        ]
    # a model without a cache (or a memo) reports no bound for it: left out
    return [(name, last[size], last[bound]) for name, size, bound in columns if bound in last]


def summarize(samples: list[dict[str, Any]], models: list[str]) -> dict[str, Any]:
    """The figures the summary prints (also returned for tests and scripts)."""
    last = samples[-1]
    minute10 = rss_at(samples, 600.0)
    ratio = last["rss_mb"] / minute10 if minute10 else None
    # label sets appear with the first requests of each kind: compared from minute 1 on
    settled = next((s for s in samples if s["t_s"] >= 60.0 and "metrics.series" in s), last)
    return {
        "minutes": last["t_s"] / 60.0,
        "rss_start_mb": samples[0]["rss_mb"],
        "rss_minute1_mb": rss_at(samples, 60.0),
        "rss_minute10_mb": minute10,
        "rss_end_mb": last["rss_mb"],
        "rss_max_mb": max(s["rss_mb"] for s in samples),
        "end_over_minute10": ratio,
        "target_met": None if ratio is None else abs(ratio - 1.0) <= RSS_TARGET,
        "requests": last["sent"],
        "failed": last["failed"],
        "failed_by_status": last["failed_by_status"],
        "metrics_series": (settled.get("metrics.series"), last.get("metrics.series")),
        "structures": bounded_structures(last, models),
    }


def print_summary(summary: dict[str, Any], csv_path: Path) -> None:
    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} MB"

    print(f"\nsoak summary ({summary['minutes']:.1f} min, samples in {csv_path})")
    failed = f" ({summary['failed_by_status']}; status 0: no answer)" if summary["failed"] else ""
    print(f"  requests {summary['requests']}, failed {summary['failed']}{failed}")
    print(f"  RSS start      {mb(summary['rss_start_mb'])}")
    print(f"  RSS minute 1   {mb(summary['rss_minute1_mb'])}")
    print(f"  RSS minute 10  {mb(summary['rss_minute10_mb'])}")
    print(f"  RSS end        {mb(summary['rss_end_mb'])}  (max {mb(summary['rss_max_mb'])})")
    ratio = summary["end_over_minute10"]
    if ratio is None:
        print("  end / minute 10: - (the soak was shorter than 10 minutes)")
    else:
        verdict = "met" if summary["target_met"] else "MISSED"
        print(f"  end / minute 10: {ratio:.3f}  (target within {RSS_TARGET:.0%}: {verdict})")
    first, last = summary["metrics_series"]
    print(f"  /metrics series: {first} at minute 1, {last} at the end")
    print("  bounded structures (last sample):")
    width = max(len(name) for name, _, _ in summary["structures"])
    for name, size, bound in summary["structures"]:
        share = f"{size / bound:6.1%}" if bound else "     -"
        flag = "  OVER" if bound and size > bound else ""
        print(f"    {name:<{width}}  {size:>10,} / {bound:>10,}  {share}{flag}")


def parse_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env wants NAME=VALUE, got {item!r}")
        env[name] = value
    return env


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.stress.soak",
        description=(
            "Soak a real tabserve server with never-repeating 16-row requests at a steady rate, "
            "sample its RSS and the sizes of its bounded structures, write them to a CSV and "
            "print RSS at minute 1, 10 and the end against the target (within 10% of minute 10)."
        ),
    )
    p.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    p.add_argument(
        "--rate", type=float, default=300.0, help="requests per second, all models (default 300)"
    )
    p.add_argument(
        "--small-share",
        type=float,
        default=0.2,
        help="share of the requests sent to xgb_small, the rest to xgb_large (default 0.2)",
    )
    p.add_argument(
        "--large-model", default="xgb_large", help="the model most requests go to (xgb_large)"
    )
    p.add_argument(
        "--small-model", default="xgb_small", help="the model the --small-share goes to (xgb_small)"
    )
    p.add_argument("--rows", type=int, default=16, help="rows per request (default 16)")
    p.add_argument(
        "--connections",
        type=int,
        default=32,
        help="keep-alive connections, at most one request in flight on each (default 32)",
    )
    p.add_argument(
        "--sample-s", type=float, default=5.0, help="seconds between samples (default 5)"
    )
    p.add_argument(
        "--feedback-rate",
        type=float,
        default=2.0,
        help="labels sent back per second, by request id and by row hash in turn (default 2)",
    )
    p.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("TABSERVE_MODELS_DIR", "models")),
        help="model repository to serve (default: $TABSERVE_MODELS_DIR or ./models)",
    )
    p.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="CSV of the samples (default: loadtests/runs/soak/soak-<time>.csv, git-ignored)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=(
            "extra environment for the server, repeatable: TABSERVE_* settings "
            "(TABSERVE_CACHE_MEMORY_ENTRIES=20000) or allocator knobs (MALLOC_ARENA_MAX=2)"
        ),
    )
    p.add_argument(
        "--cpus", default=None, help="pin the server to these CPUs with taskset (e.g. 0)"
    )
    return p


def run(config: SoakConfig) -> dict[str, Any]:
    """Start the server, soak it, stop it; the summary (also printed)."""
    env = {"TABSERVE_CACHE": "true", "TABSERVE_MONITORING": "true", **config.env}
    log_path = config.csv_path.with_suffix(".server.log")
    server = ServeProcess(config.models_dir, env=env, cpus=config.cpus, log_path=log_path)
    sink = _CsvSink(config.csv_path)
    models = [config.large, config.small]
    print(
        f"soak: {config.minutes:g} min, {config.rate:g} req/s of {config.rows}-row unique bodies "
        f"({1 - config.small_share:.0%} {config.large}, {config.small_share:.0%} {config.small}), "
        f"{config.connections} connections, env {env}",
        flush=True,
    )
    try:
        server.start()
        print(f"  server pid {server.pid} on {server.url}, log {log_path}", flush=True)
        samples = asyncio.run(_drive(config, server, sink))
    finally:
        sink.close()
        server.stop()
    summary = summarize(samples, models)
    print_summary(summary, config.csv_path)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.rows < 1 or args.connections < 1:
        raise SystemExit("--minutes, --rate, --rows and --connections must be positive")
    if not 0.0 <= args.small_share <= 1.0:
        raise SystemExit("--small-share must be between 0 and 1")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    csv_path = args.csv or Path("loadtests/runs/soak") / f"soak-{stamp}.csv"
    config = SoakConfig(
        models_dir=args.models_dir,
        minutes=args.minutes,
        rate=args.rate,
        small_share=args.small_share,
        rows=args.rows,
        connections=args.connections,
        sample_s=args.sample_s,
        feedback_rate=args.feedback_rate,
        csv_path=csv_path,
        env=parse_env(args.env),
        cpus=args.cpus,
        large=args.large_model,
        small=args.small_model,
    )
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
