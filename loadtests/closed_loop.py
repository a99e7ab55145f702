"""The closed loop, end to end on a real server: drift, retrain, shadow, promote.

``tabserve loadtest loop`` (``make loop``) serves a copy of one fraud model with the prediction
log on, a retrain command and automatic promotion configured, and sends labelled traffic through
it in four phases:

1. **before**: the training distribution; every row labelled through ``POST .../feedback``;
2. **shifted**: the season changes and fraudsters adapt (``make_fraud(shift, concept)``): the
   features drift (the monitor flags it, which triggers ``tabserve retrain`` with ``--since``
   the drift's start) and the fraud patterns change (only labels show it). Traffic goes on, with
   labels, until the retrained candidate is published and put in shadow;
3. **shadow**: the candidate scores a copy of the traffic, never answering; labels pair both
   models' answers until the automatic rule promotes it;
4. **after**: fresh shifted rows no model trained on, answered by the promoted version.

Live PR-AUC is computed here, from the scores the server answered and the truth of each row;
the report sets it against the target: the promoted model recovers at least half of the PR-AUC
the shift took (``(after - shifted) / (before - shifted) >= 0.5``), with no failed request
during the swap. Every non-200 answer is counted. The server (and the retrain it starts) is
stopped by its PID at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from export.data import make_fraud
from loadtests.serveproc import ServeProcess
from server.shadow.compare import average_precision

PHASES = ("before", "shifted", "shadow", "after")
WATCH_S = 0.25
"""Between two polls of the server's views: the shifted phase ends at the first poll after the
candidate entered shadow, and its rows must all be answered before the promotion, which the
automatic rule can make within a second or two of it."""


class _Stopped(Exception):
    """The loop cannot go on (the retrain published nothing)."""


@dataclass(frozen=True)
class LoopOptions:
    models_dir: Path
    out: Path
    model: str = "xgb_small"
    before_rows: int = 20_000
    after_rows: int = 20_000
    min_labels: int = 15_000
    """Labelled shifted rows the retrain waits for (since the drift began): 70% train the
    candidate, the newest 30% compare it with the serving model (a few thousand rows are too
    few for a candidate to beat a model trained on 100,000)."""
    promote_after: int = 2_000
    """Labelled rows both models answered before the automatic rule may promote."""
    shift: float = 1.0
    concept: float = 1.0
    request_rows: int = 16
    concurrency: int = 16
    max_phase_rows: int = 400_000
    """A shifted or shadow phase that has not ended by then stops the run (a failure)."""
    timeout_s: float = 1_200.0
    seed: int = 0
    work: Path | None = None
    """Where the served repository, the prediction log and the server's log go (kept); None:
    a temporary folder, removed at the end."""


@dataclass
class Answer:
    phase: str
    t: float
    version: int
    score: float
    truth: int


@dataclass
class Timeline:
    events: list[dict[str, Any]] = field(default_factory=list)
    drift_at: float | None = None
    retrain_failed: str | None = None
    """The retrain's outcome when it did not publish (the loop cannot go on)."""
    shadow_version: int | None = None
    promoted_at: float | None = None

    def add(self, t: float, what: str, **detail: Any) -> None:
        self.events.append({"t": round(t, 2), "event": what, **detail})


def _rows(seed: int, options: LoopOptions, shifted: bool) -> Iterator[tuple[NDArray[Any], int]]:
    """Endless rows of one distribution, in chunks of fresh seeds (no row repeats)."""
    for k in itertools.count():
        X, y, _ = make_fraud(
            10_000,
            seed=seed + k,
            shift=options.shift if shifted else 0.0,
            concept=options.concept if shifted else 0.0,
        )
        yield from zip(X, y.tolist(), strict=True)


class Traffic:
    """Labelled requests from ``concurrency`` clients; every answer and failure recorded."""

    def __init__(self, options: LoopOptions) -> None:
        self.options = options
        self.answers: list[Answer] = []
        self.failures: dict[str, int] = {}
        self.requests = 0
        self.labels = 0
        self.started = time.monotonic()
        self._ids = itertools.count()

    def _fail(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1

    async def run(
        self,
        client: httpx.AsyncClient,
        phase: str,
        rows: Iterator[tuple[NDArray[Any], int]],
        limit: int,
        until: Callable[[], bool] = lambda: False,
    ) -> int:
        """Send up to ``limit`` rows (or until ``until()``); the rows sent."""
        sent = 0
        k = self.options.request_rows
        model = self.options.model

        async def worker() -> None:
            nonlocal sent
            while sent < limit and not until():
                chunk = list(itertools.islice(rows, min(k, limit - sent)))
                if not chunk:
                    return
                sent += len(chunk)
                request_id = f"{phase}-{next(self._ids)}"
                X = np.stack([x for x, _ in chunk])
                try:
                    got = await client.post(
                        f"/v1/models/{model}/predict",
                        json={"instances": X.tolist()},
                        headers={"X-Request-ID": request_id},
                    )
                except httpx.HTTPError as exc:
                    self._fail(f"predict {type(exc).__name__}")
                    continue
                self.requests += 1
                if got.status_code != 200:
                    self._fail(f"predict {got.status_code}")
                    continue
                answer = got.json()
                t = time.monotonic() - self.started
                for row, (prediction, (_, truth)) in enumerate(
                    zip(answer["predictions"], chunk, strict=True)
                ):
                    self.answers.append(
                        Answer(phase, t, answer["version"], prediction["scores"][1], truth)
                    )
                    try:
                        labelled = await client.post(
                            f"/v1/models/{model}/feedback",
                            json={"request_id": request_id, "row": row, "label": truth},
                        )
                    except httpx.HTTPError as exc:
                        self._fail(f"feedback {type(exc).__name__}")
                        continue
                    if labelled.status_code != 200:
                        self._fail(f"feedback {labelled.status_code}")
                    else:
                        self.labels += 1

        await asyncio.gather(*(worker() for _ in range(self.options.concurrency)))
        return sent


async def _watch(
    client: httpx.AsyncClient, model: str, timeline: Timeline, started: float, stop: asyncio.Event
) -> None:
    """Poll the model's monitoring, shadow view and routing log every ``WATCH_S`` into
    ``timeline``.

    The candidate's shadow and its promotion come from the routing log (``routing_events`` of
    ``GET /v1/models/{model}``), not from the shadow view's state: the automatic rule can promote
    a candidate less than a second after it entered shadow, between two polls, and a loop that
    waited to *see* the shadow state would then send shifted rows until its timeout."""
    seen_trigger: dict[str, Any] | None = None
    finished_for: str | None = None
    seen_events: set[tuple[str, str]] = set()
    while not stop.is_set():
        t = time.monotonic() - started
        try:
            monitoring = (await client.get(f"/v1/models/{model}/monitoring")).json()
            shadow = (await client.get(f"/v1/models/{model}/shadow")).json()
            events = (await client.get(f"/v1/models/{model}")).json().get("routing_events", [])
        except (httpx.HTTPError, ValueError):
            monitoring, shadow, events = {}, {}, []
        if monitoring.get("status") == "drift" and timeline.drift_at is None:
            timeline.drift_at = t
            top = monitoring.get("top_drifting", [])
            drifting = [f["name"] for f in top if f.get("status") == "drift"]
            timeline.add(t, "drift flagged", features=drifting[:4])
        trigger = shadow.get("last_retrain_trigger")
        if trigger and trigger != seen_trigger:
            if seen_trigger is None or trigger["time"] != seen_trigger["time"]:
                reason, since = trigger["reason"], trigger["since"]
                timeline.add(t, "retrain triggered", reason=reason, since=since)
            # a run that started and ended between two polls is seen ended at once
            if trigger["outcome"] != "started" and finished_for != trigger["time"]:
                finished_for = trigger["time"]
                timeline.add(t, "retrain finished", outcome=trigger["outcome"])
                if trigger["outcome"] != "exit code 0":
                    timeline.retrain_failed = trigger["outcome"]
            seen_trigger = trigger
        # the log's latest events, oldest first; each is read once
        for event in events:
            key = (event["time"], event["action"])
            if key in seen_events:
                continue
            seen_events.add(key)
            if event["action"] == "shadow" and timeline.shadow_version is None:
                timeline.shadow_version = event["shadow"]
                timeline.add(t, "candidate in shadow", version=event["shadow"])
            elif event["action"] == "promote" and timeline.promoted_at is None:
                timeline.promoted_at = t
                timeline.add(t, "promoted", version=event["primary"])
        try:
            await asyncio.wait_for(stop.wait(), WATCH_S)
        except TimeoutError:
            pass


def server_env(options: LoopOptions, repo: Path, log_dir: Path) -> dict[str, str]:
    retrain = [
        sys.executable,
        "-m",
        "server.cli",
        "retrain",
        "{model}",
        "--models-dir",
        str(repo),
        "--log-dir",
        str(log_dir),
        "--since",
        "{since}",
        "--wait-s",
        str(int(options.timeout_s)),
        "--poll-s",
        "2",
        "--min-labels",
        str(options.min_labels),
        "--shadow",
        "--seed",
        str(options.seed),
    ]
    return {
        "TABSERVE_CACHE": "false",
        "TABSERVE_PREDICTION_LOG_DIR": str(log_dir),
        "TABSERVE_PREDICTION_LOG_RATES": json.dumps({options.model: 1.0}),
        "TABSERVE_PREDICTION_LOG_FILE_S": "1",
        "TABSERVE_RELOAD_INTERVAL_S": "1",
        "TABSERVE_RETRAIN_COMMAND": " ".join(retrain),
        "TABSERVE_RETRAIN_COOLDOWN_S": "3600",
        "TABSERVE_SHADOW_PROMOTE_AFTER_LABELS": str(options.promote_after),
        "TABSERVE_SHADOW_PROMOTE_MARGIN": "0.01",
    }


def pr_auc(answers: list[Answer]) -> float | None:
    if not answers:
        return None
    y = np.asarray([a.truth for a in answers])
    score = np.asarray([a.score for a in answers])
    return average_precision(y, score)


def run_loop(options: LoopOptions, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the four phases against a fresh server; the results (also written as JSON)."""
    work = options.work or Path(tempfile.mkdtemp(prefix="tabserve-loop-"))
    shutil.rmtree(work, ignore_errors=True)
    repo, log_dir = work / "models", work / "log"
    source = options.models_dir / options.model
    if not source.is_dir():
        raise SystemExit(f"no model {options.model!r} under {options.models_dir}")
    shutil.copytree(source, repo / options.model, ignore=shutil.ignore_patterns(".*", "routing*"))
    server = ServeProcess(
        repo, env=server_env(options, repo, log_dir), log_path=work / "server.log"
    )
    server.start()
    try:
        results = asyncio.run(_drive(server.url, options, progress))
    finally:
        server.stop()
    results["retrain_output"] = [
        line.split("line=", 1)[1]
        for line in (work / "server.log").read_text(errors="replace").splitlines()
        if "event=retrain_output" in line
    ]
    if options.work is None:
        shutil.rmtree(work, ignore_errors=True)
    (options.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


async def _drive(url: str, options: LoopOptions, progress: Callable[[str], None]) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=options.concurrency + 4)
    timeline = Timeline()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        traffic = Traffic(options)
        stop = asyncio.Event()
        watcher = asyncio.create_task(
            _watch(client, options.model, timeline, traffic.started, stop)
        )
        deadline = traffic.started + options.timeout_s

        def late() -> bool:
            return time.monotonic() > deadline

        seed = options.seed * 1_000 + 100
        sent: dict[str, int] = {}
        stopped: str | None = None
        try:
            progress(f"before: {options.before_rows} rows of the training distribution")
            sent["before"] = await traffic.run(
                client, "before", _rows(seed, options, False), options.before_rows, late
            )
            progress("shifted: until the retrained candidate is in shadow")
            sent["shifted"] = await traffic.run(
                client,
                "shifted",
                _rows(seed + 100, options, True),
                options.max_phase_rows,
                lambda: (
                    timeline.shadow_version is not None
                    or timeline.retrain_failed is not None
                    or late()
                ),
            )
            if timeline.shadow_version is None:
                raise _Stopped(f"no candidate in shadow (retrain: {timeline.retrain_failed})")
            progress(f"shadow: until version {timeline.shadow_version} is promoted")
            sent["shadow"] = await traffic.run(
                client,
                "shadow",
                _rows(seed + 200, options, True),
                options.max_phase_rows,
                lambda: timeline.promoted_at is not None or late(),
            )
            progress(f"after: {options.after_rows} fresh shifted rows")
            sent["after"] = await traffic.run(
                client, "after", _rows(seed + 300, options, True), options.after_rows, late
            )
        except _Stopped as exc:
            progress(f"stopped: {exc}")
            stopped = str(exc)
        finally:
            stop.set()
            await watcher
        shadow_view = (await client.get(f"/v1/models/{options.model}/shadow")).json()
        detail = (await client.get(f"/v1/models/{options.model}")).json()
    by_phase = {p: [a for a in traffic.answers if a.phase == p] for p in PHASES}
    quality = {p: pr_auc(by_phase[p]) for p in PHASES}
    before, shifted, after = quality["before"], quality["shifted"], quality["after"]
    recovered = None
    if before is not None and shifted is not None and after is not None and before != shifted:
        recovered = (after - shifted) / (before - shifted)
    versions = {p: sorted({a.version for a in by_phase[p]}) for p in PHASES}
    return {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "rows": sent,
        "requests": traffic.requests,
        "labels": traffic.labels,
        "failures": traffic.failures,
        "pr_auc": quality,
        "positive_rate": {
            p: (float(np.mean([a.truth for a in by_phase[p]])) if by_phase[p] else None)
            for p in PHASES
        },
        "versions": versions,
        "recovered": recovered,
        "timeline": timeline.events,
        "finished": timeline.promoted_at is not None and not late(),
        "stopped": stopped,
        "elapsed_s": round(time.monotonic() - traffic.started, 1),
        "shadow_view": shadow_view,
        "routing_events": detail.get("routing_events", []),
        "rolling": _rolling(traffic.answers),
    }


def _rolling(answers: list[Answer], window: int = 3_000, step: int = 1_000) -> list[dict[str, Any]]:
    """Live PR-AUC over windows of answered rows, each window inside one phase (a phase shorter
    than a window gets one point, over all its rows): for the plot."""
    out = []
    offset = 0
    for phase in PHASES:
        rows = [a for a in answers if a.phase == phase]
        ends = list(range(min(window, len(rows)), len(rows) + 1, step)) if rows else []
        for end in ends:
            part = rows[max(0, end - window) : end]
            out.append(
                {
                    "row": offset + end,
                    "t": round(part[-1].t, 1),
                    "pr_auc": pr_auc(part),
                    "phase": phase,
                    "version": part[-1].version,
                }
            )
        offset += len(rows)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="tabserve loadtest loop",
        description="The closed loop on a real server: shifted labelled traffic, drift, "
        "retrain, shadow, promotion; writes REPORT.md, results.json and loop.png.",
    )
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--model", default="xgb_small")
    p.add_argument("--out", type=Path, default=Path("loadtests/reports/loop"))
    p.add_argument("--before-rows", type=int, default=20_000)
    p.add_argument("--after-rows", type=int, default=20_000)
    p.add_argument("--min-labels", type=int, default=15_000)
    p.add_argument("--promote-after", type=int, default=2_000)
    p.add_argument("--timeout-s", type=float, default=1_200.0)
    args = p.parse_args(argv)
    options = LoopOptions(
        models_dir=args.models_dir,
        out=args.out,
        model=args.model,
        before_rows=args.before_rows,
        after_rows=args.after_rows,
        min_labels=args.min_labels,
        promote_after=args.promote_after,
        timeout_s=args.timeout_s,
    )
    options.out.mkdir(parents=True, exist_ok=True)

    def interrupted(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through run_loop: the server is stopped

    signal.signal(signal.SIGTERM, interrupted)
    results = run_loop(options, progress=lambda m: print(m, flush=True))
    from loadtests.loop_report import write_report

    print(write_report(options.out, results))
    return 0 if results["finished"] and not results["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
