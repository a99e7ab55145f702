"""``tabserve bench --suite shadow``: what a shadow model costs the primary.

The target: shadow scoring adds at most 5% server CPU per request to the primary at the bench's
load (64 connections), and never changes a primary answer.

One-row ``POST /v1/models/{primary}/predict`` (``xgb_small`` by default), response cache off, at
each ``--concurrency`` (1 and 64), against three servers run side by side, each on a model
repository built here in a temporary folder from ``--models-dir``:

- ``off``: the primary's newest version as version 1, nothing else;
- ``shadow same``: the same, plus a copy of it as version 2 and ``routing.json``
  ``{"primary": 1, "shadow": 2}``: the shadow's own cost (its thread, its ONNX Runtime calls, its
  monitor) with a candidate as cheap as the primary;
- ``shadow large``: version 2 is the candidate (``xgb_large`` by default: the second name of
  ``--models``) under the primary's name: a costlier shadow. Skipped, with the reason printed,
  when its card cannot score the primary's rows (input columns, task or classes differ: the
  server's own check, :func:`server.shadow.extension.compatibility`).

Same harness as the serving suite (:mod:`loadtests.bench.serving`): every server pinned to one
core, the load generator on the other; the three cells of a round run back to back, ``--repeat``
rounds, so that drift in background load hits them alike. Every cell is warmed up, then the
shadow's queue is left to drain, then measured.

Server CPU per request is the whole server process's CPU (``/proc/<pid>/stat``, so the shadow
thread's counts) from the start of the measured seconds until the shadow has scored or skipped
every row offered in them, over the requests answered; the part of it the shadow's own thread
used (the server's only nice-19 thread, ``/proc/<pid>/task/*/stat``) is printed beside, so that
what the shadow adds on the event loop is the rest of the difference. The shadow's counters
(``GET /v1/models/{name}/shadow``, ``scorer``) are read around the same span: the share of the
offered rows the shadow scored and the share it skipped (it was behind, or its thread had used
its share of the process's CPU: ``TABSERVE_SHADOW_CPU_SHARE``), so it skips rows rather than slow
the primary.

Before the rounds and after them, each shadow server is asked the hold-out rows once more and its
answers are compared with the ``off`` server's: a shadow must never change one.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.bench.serving import (
    ROTATION,
    Cell,
    LoadGen,
    _rows,
    bench_server,
    cpu_seconds,
    measure,
    median_round,
)
from loadtests.holdout import latest_version_dir
from loadtests.serveproc import ServeProcess
from server.modelcard import CARD_FILE, load_card
from server.routing import ROUTING_FILE
from server.shadow.extension import compatibility

OFF, SAME, LARGE = "off", "shadow same", "shadow large"
CELLS = (OFF, SAME, LARGE)
DEFAULT_PRIMARY, DEFAULT_CANDIDATE = "xgb_small", "xgb_large"
TARGET = 1.05
"""Server CPU per request with a shadow over without, at most (the issue's 5%)."""
DRAIN_TIMEOUT_S = 15.0
"""How long a cell waits for the shadow to finish (or skip) what it was offered."""


@dataclass
class ShadowCell:
    cell: str  # off | shadow same | shadow large
    concurrency: int
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    server_cpu: float = 0.0
    """Cores the server used during the measured seconds (1.0 = one core busy)."""
    loadgen_cpu: float = 0.0
    cpu_us_per_request: float | None = None
    """Server CPU µs per request answered, the shadow's drain included."""
    shadow_thread_us_per_request: float | None = None
    """The part of it the shadow's thread (the server's nice-19 thread) used."""
    rows_offered: int = 0
    rows_scored: int = 0
    rows_skipped: int = 0
    notes: list[str] = field(default_factory=list)


# --- the repositories ----------------------------------------------------------------------------


def publish(src: Path, repo: Path, name: str, version: int) -> Path:
    """Copy the version folder ``src`` into ``repo`` as ``name``/``version`` (its card renamed)."""
    dest = repo / name / str(version)
    shutil.copytree(src, dest)
    card = json.loads((dest / CARD_FILE).read_text())
    card["name"], card["version"] = name, version
    (dest / CARD_FILE).write_text(json.dumps(card, indent=2))
    load_card(dest, verify_sha256=False)  # the server will accept it
    return dest


def build_repos(
    models_dir: Path, workdir: Path, primary: str, candidate: str | None
) -> tuple[dict[str, Path], dict[str, str]]:
    """The model repository of each cell, and the cells skipped (with why)."""
    source = latest_version_dir(models_dir, primary)
    repos: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for cell in CELLS:
        shadow_src = source
        if cell == LARGE:
            problem = _candidate_problem(models_dir, source, candidate)
            if problem is not None:
                skipped[cell] = problem
                continue
            assert candidate is not None
            shadow_src = latest_version_dir(models_dir, candidate)
        repo = workdir / "repos" / cell.replace(" ", "-")
        publish(source, repo, primary, 1)
        if cell != OFF:
            publish(shadow_src, repo, primary, 2)
            routing = {"primary": 1, "shadow": 2}
            (repo / primary / ROUTING_FILE).write_text(json.dumps(routing) + "\n")
        repos[cell] = repo
    return repos, skipped


def _candidate_problem(models_dir: Path, source: Path, candidate: str | None) -> str | None:
    if candidate is None:
        return "no candidate model named (--models PRIMARY,CANDIDATE)"
    try:
        theirs = load_card(latest_version_dir(models_dir, candidate), verify_sha256=False)
    except FileNotFoundError as exc:
        return str(exc)
    ours = load_card(source, verify_sha256=False)
    problem = compatibility(ours, theirs)
    return None if problem is None else f"{candidate} cannot shadow {ours.name}: {problem}"


# --- what a server says --------------------------------------------------------------------------


def scorer_state(port: int, model: str) -> dict[str, int]:
    """The shadow scorer's counters (``rows_offered``, ``rows_scored``, ``queued_rows``...)."""
    url = f"http://127.0.0.1:{port}/v1/models/{model}/shadow"
    with urllib.request.urlopen(url, timeout=5) as answer:
        state: dict[str, int] = json.load(answer)["scorer"]
    return state


def wait_drained(port: int, model: str, timeout_s: float = DRAIN_TIMEOUT_S) -> dict[str, int]:
    """The scorer's counters once nothing waits for the shadow (or at ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = scorer_state(port, model)
        if state["queued_rows"] == 0 or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def predictions(port: int, model: str, bodies: list[bytes]) -> list[Any]:
    """The primary's answer to each body, one request at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out: list[Any] = []
    try:
        for body in bodies:
            conn.request(
                "POST",
                f"/v1/models/{model}/predict",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            answer = conn.getresponse()
            data = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"predict answered {answer.status}: {data[:300]!r}")
            out.append(json.loads(data)["predictions"])
    finally:
        conn.close()
    return out


def changed_answers(servers: dict[str, ServeProcess], model: str, bodies: list[bytes]) -> list[int]:
    """For each shadow server, how many of ``bodies`` it answers unlike the ``off`` server."""
    reference = predictions(servers[OFF].port, model, bodies)
    counts = []
    for cell, server in servers.items():
        if cell != OFF:
            theirs = predictions(server.port, model, bodies)
            counts.append(sum(a != b for a, b in zip(reference, theirs, strict=True)))
    return counts


def nice_cpu_seconds(pid: int, nice: int = 19) -> float:
    """CPU seconds (utime + stime) of the threads of ``pid`` running at ``nice``: the shadow's
    thread is the server's only nice-19 thread."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        if int(fields[16]) == nice:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


# --- the run -------------------------------------------------------------------------------------


def measure_cell(
    server: ServeProcess,
    gen: LoadGen,
    cell: ShadowCell,
    model: str,
    bodies: list[bytes],
    seconds: float,
) -> ShadowCell:
    """Warm up, let the shadow drain, then measure; CPU until the shadow has drained again."""
    assert server.proc is not None
    path = f"/v1/models/{model}/predict"
    gen.run(server.port, path, bodies, cell.concurrency, min(1.0, seconds / 3))
    before = wait_drained(server.port, model)
    cpu0, thread0 = cpu_seconds(server.proc.pid), nice_cpu_seconds(server.proc.pid)
    measured = Cell(cell.cell, model, True, cell.concurrency)
    measure(server, gen, measured, path, bodies, seconds, warm_up=False)
    after = wait_drained(server.port, model)
    cpu = cpu_seconds(server.proc.pid) - cpu0
    thread = nice_cpu_seconds(server.proc.pid) - thread0
    if after["queued_rows"]:
        cell.notes.append(f"{after['queued_rows']} rows still queued after {DRAIN_TIMEOUT_S}s")
    cell.requests, cell.rps, cell.errors = measured.requests, measured.rps, measured.errors
    cell.p50_ms, cell.p99_ms = measured.p50_ms, measured.p99_ms
    cell.server_cpu, cell.loadgen_cpu = measured.server_cpu, measured.loadgen_cpu
    if cell.requests:
        cell.cpu_us_per_request = cpu / cell.requests * 1e6
        cell.shadow_thread_us_per_request = thread / cell.requests * 1e6
    for counter in ("rows_offered", "rows_scored", "rows_skipped"):
        setattr(cell, counter, after[counter] - before[counter])
    return cell


def median_cell(samples: list[ShadowCell]) -> ShadowCell:
    """The median-throughput round for req/s and latency; the median over rounds of the CPU per
    request (each round's own figure); the shadow's counters summed over rounds."""
    cell = median_round(samples)
    values = [s.cpu_us_per_request for s in samples if s.cpu_us_per_request is not None]
    cell.cpu_us_per_request = statistics.median(values) if values else None
    threads = [t for s in samples if (t := s.shadow_thread_us_per_request) is not None]
    cell.shadow_thread_us_per_request = statistics.median(threads) if threads else None
    cell.rows_offered = sum(s.rows_offered for s in samples)
    cell.rows_scored = sum(s.rows_scored for s in samples)
    cell.rows_skipped = sum(s.rows_skipped for s in samples)
    if len(samples) > 1:
        per_round = ", ".join(
            f"{s.rps:.0f} req/s {s.cpu_us_per_request or 0:.1f} us/req" for s in samples
        )
        cell.notes.append(f"rounds: {per_round}")
    return cell


def run_shadow(
    args: argparse.Namespace, server_cpu: int | None, client_cpu: int | None, kind: str
) -> dict[str, Any]:
    """Build the repositories, measure every (cell, concurrency), return the report."""
    models_dir = Path(args.models_dir)
    names = [m for m in args.models.split(",") if m]
    primary = names[0] if names else DEFAULT_PRIMARY
    candidate = names[1] if len(names) > 1 else None
    conc = [int(c) for c in args.concurrency.split(",")]
    vdir = latest_version_dir(models_dir, primary)
    card = load_card(vdir, verify_sha256=False)
    rows = _rows(vdir, card.input.n_features, ROTATION)
    bodies = [json.dumps({"instances": [r]}).encode() for r in rows.tolist()]
    env = {
        "TABSERVE_CACHE": "false",
        "TABSERVE_LOG_LEVEL": "warning",
        **dict(kv.split("=", 1) for kv in args.env),
    }
    cells: list[ShadowCell] = []
    changed: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="tabserve-bench-shadow-") as tmp:
        workdir = Path(tmp)
        repos, skipped = build_repos(models_dir, workdir, primary, candidate)
        gen = LoadGen(kind, client_cpu, workdir)
        servers: dict[str, ServeProcess] = {}
        try:
            # All servers run at once (an idle one costs next to nothing) and the cells of a
            # round run back to back, as in the cache suite.
            for cell, repo in repos.items():
                log = workdir / f"server-{cell.replace(' ', '-')}.log"
                servers[cell] = bench_server(repo, server_cpu, env, log)
                servers[cell].start()
            first = changed_answers(servers, primary, bodies)
            for c in conc:
                samples: dict[str, list[ShadowCell]] = {}
                for _ in range(args.repeat):
                    for name, server in servers.items():
                        sample = measure_cell(
                            server, gen, ShadowCell(name, c), primary, bodies, args.seconds
                        )
                        samples.setdefault(name, []).append(sample)
                        _progress(sample)
                cells.extend(median_cell(s) for s in samples.values())
            last = changed_answers(servers, primary, bodies)
            shadows = [cell for cell in servers if cell != OFF]
            changed = {cell: a + b for cell, a, b in zip(shadows, first, last, strict=True)}
        except Exception:
            for server in servers.values():
                print(server.log_tail(), file=sys.stderr)
            raise
        finally:
            for server in servers.values():
                server.stop()
    return {
        "loadgen": kind,
        "server_cpu": server_cpu,
        "loadgen_cpu": client_cpu,
        "seconds_per_cell": args.seconds,
        "repeat": args.repeat,
        "primary": primary,
        "candidate": candidate,
        "skipped": skipped,
        "answers_checked": 2 * len(bodies),
        "answers_changed": changed,
        "cells": [asdict(c) for c in cells],
        "ratios": shadow_ratios(cells),
    }


def shadow_ratios(cells: list[ShadowCell]) -> dict[str, float]:
    """Server CPU per request and req/s of each shadow cell over ``off``, per concurrency."""
    found = {(c.cell, c.concurrency): c for c in cells}
    out: dict[str, float] = {}
    for (name, c), cell in found.items():
        off = found.get((OFF, c))
        if name == OFF or off is None:
            continue
        if cell.cpu_us_per_request and off.cpu_us_per_request:
            key = f"c={c}: {name}/off server CPU per request (target <= {TARGET:g})"
            out[key] = round(cell.cpu_us_per_request / off.cpu_us_per_request, 3)
        if off.rps:
            out[f"c={c}: {name}/off req/s"] = round(cell.rps / off.rps, 3)
    return out


def verdicts(report: dict[str, Any]) -> list[str]:
    """One line per shadow cell and concurrency: CPU per request against the target."""
    lines = []
    for key, ratio in report["ratios"].items():
        if "target" in key:
            met = "met" if ratio <= TARGET else "MISSED"
            what = key.split(" server CPU", 1)[0]
            lines.append(f"{what}: +{(ratio - 1) * 100:.1f}% server CPU per request ({met})")
    return lines


def _progress(cell: ShadowCell) -> None:
    print(
        f"  shadow {cell.cell:<12} c={cell.concurrency:<3} {cell.rps:>9.0f} req/s "
        f"{cell.cpu_us_per_request or 0:>7.1f} us/req",
        file=sys.stderr,
        flush=True,
    )


def _share(part: int, whole: int) -> str:
    return f"{part / whole:>7.1%}" if whole else f"{'-':>7}"


def print_shadow_report(report: dict[str, Any]) -> None:
    print(
        f"\nshadow: one-row predict of {report['primary']} (version 1 answers), shadow version 2 "
        f"a copy of it (same) or {report['candidate']} (large), server pinned to cpu "
        f"{report['server_cpu']}, load generator {report['loadgen']} on cpu "
        f"{report['loadgen_cpu']}, {report['seconds_per_cell']}s per cell, median of "
        f"{report['repeat']} round(s), response cache off"
    )
    for cell, why in report["skipped"].items():
        print(f"  not measured: {cell}: {why}")
    header = (
        f"{'cell':<13} {'conc':>4} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'srv cpu':>7} "
        f"{'CPU us/req':>10} {'thread us':>9} {'gen cpu':>7} {'scored':>7} {'skipped':>7} "
        f"{'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for c in report["cells"]:
        per_request = c["cpu_us_per_request"]
        cpu_text = f"{per_request:>10.1f}" if per_request is not None else f"{'-':>10}"
        thread = c["shadow_thread_us_per_request"]
        thread_text = f"{thread:>9.1f}" if thread is not None else f"{'-':>9}"
        print(
            f"{c['cell']:<13} {c['concurrency']:>4} {c['rps']:>8.0f} {c['p50_ms']:>7.3f} "
            f"{c['p99_ms']:>7.3f} {c['server_cpu']:>7.2f} {cpu_text} {thread_text} "
            f"{c['loadgen_cpu']:>7.2f} "
            f"{_share(c['rows_scored'], c['rows_offered'])} "
            f"{_share(c['rows_skipped'], c['rows_offered'])} {c['errors']:>6}"
        )
    print(
        "(CPU us/req: the whole server process's CPU per request answered, the shadow thread's "
        "included, until the shadow had drained; median over rounds. thread us: the part the "
        "shadow's own (nice-19) thread used; the rest of any increase is on the event loop. "
        "scored/skipped: shares of the rows offered to the shadow over all rounds.)"
    )
    rounds = [c for c in report["cells"] if any(n.startswith("rounds: ") for n in c["notes"])]
    if rounds:
        print("\nrounds (in order):")
        for c in rounds:
            note = next(n for n in c["notes"] if n.startswith("rounds: "))
            print(f"  {c['cell']:<13} c={c['concurrency']:<3} {note.removeprefix('rounds: ')}")
    print("\nshadow ratios:")
    for key, value in report["ratios"].items():
        print(f"  {key}: {value}")
    for line in verdicts(report):
        print(f"  verdict {line}")
    for cell, n in report["answers_changed"].items():
        print(
            f"  primary answers changed with {cell}: {n} of {report['answers_checked']} "
            "(hold-out rows, before and after the rounds)"
        )
