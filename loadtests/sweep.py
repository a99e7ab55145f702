"""The sweep: models x batching x cache x concurrency, each cell a bounded headless Locust run.

For each cell the sweep (re)starts the server it needs (only when the configuration changes, or
always for cache cells, which must start cold), pinned to the server CPUs; starts a
Redis-protocol server when the cell uses the Redis tier; scrapes ``/metrics`` before and after;
runs Locust pinned to the client CPUs against ``127.0.0.1`` for a fixed time and user count;
and records throughput, exact latency percentiles, error and 503 rates, accuracy under load,
the server's own figures and CPU use. Every process is stopped by PID in ``finally``.
``results.json`` is rewritten after every cell, so an interrupted sweep still has a report.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.budget import DEFAULT_BUDGET, Budget, parse_budget
from loadtests.holdout import (
    GENERATED_DATASETS,
    available_models,
    load_replay,
    offline_metrics,
    read_card,
)
from loadtests.labels import cell_label
from loadtests.overload import (
    CAPACITY_USERS,
    DEFAULT_BUDGET_MS,
    LOAD_FACTORS,
    MODES,
    OPEN_LOOP_USERS,
    ROWS_PER_REQUEST,
    capacity_of,
    server_rows,
)
from loadtests.processes import (
    LocustRun,
    RedisServer,
    ServerProcess,
    core_busy_seconds,
)
from loadtests.promscrape import Samples, difference, scrape, server_figures
from loadtests.report import recommendation_summary, render
from loadtests.results import (
    RESULTS_FILE,
    cell_record,
    cell_task,
    read_locust_stats,
    write_results,
)
from loadtests.scoring import headline
from loadtests.serveproc import pin_prefix

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
SHAPESFILE = Path(__file__).with_name("shapes.py")
CACHE_MODES = ("off", "memory", "redis", "tiered")


@dataclass(frozen=True)
class ServerConfig:
    """The server knobs a cell varies; everything else keeps its default."""

    batching: bool = True
    max_delay_ms: float = 0.0
    cache: str = "off"
    """off, memory (in-process), redis (Redis only), tiered (in-process then Redis)."""
    max_queue_rows: int | None = None
    degrade_model: str | None = None
    """A model that degrades instead of refusing (``TABSERVE_DEGRADE_OBJECTIVE_MS``)."""
    degrade_objective_ms: float = DEFAULT_BUDGET_MS
    cascade_model: str | None = None
    """A model answered through its cascade (``TABSERVE_CASCADE_MODELS``)."""

    @classmethod
    def for_overload(cls, mode: str, model: str, objective_ms: float) -> ServerConfig:
        """The server of an overload cell: cache off, and refuse only, degrade or cascade."""
        if mode not in MODES:
            raise ValueError(f"overload mode must be one of {MODES}, got {mode!r}")
        return cls(
            degrade_model=model if mode == "degrade" else None,
            degrade_objective_ms=objective_ms,
            cascade_model=model if mode == "cascade" else None,
        )

    @property
    def overload_mode(self) -> str:
        """refuse (the default: 503/504), degrade or cascade."""
        if self.degrade_model:
            return "degrade"
        return "cascade" if self.cascade_model else "refuse"

    def __post_init__(self) -> None:
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, got {self.cache!r}")

    @property
    def uses_redis(self) -> bool:
        return self.cache in ("redis", "tiered")

    def env(self) -> dict[str, str]:
        env = {
            "TABSERVE_BATCHING": "true" if self.batching else "false",
            "TABSERVE_MAX_DELAY_MS": f"{self.max_delay_ms:g}",
            "TABSERVE_CACHE": "false" if self.cache == "off" else "true",
            "TABSERVE_LOG_LEVEL": "warning",
        }
        if self.cache == "redis":
            env["TABSERVE_CACHE_MEMORY_ENTRIES"] = "0"
        if self.max_queue_rows is not None:
            env["TABSERVE_MAX_QUEUE_ROWS"] = str(self.max_queue_rows)
        if self.degrade_model:
            env["TABSERVE_DEGRADE_OBJECTIVE_MS"] = json.dumps(
                {self.degrade_model: self.degrade_objective_ms}
            )
        if self.cascade_model:
            env["TABSERVE_CASCADE_MODELS"] = json.dumps([self.cascade_model])
        return env

    @property
    def label(self) -> str:
        batching = f"batching {self.max_delay_ms:g} ms" if self.batching else "no batching"
        queue = f", queue {self.max_queue_rows}" if self.max_queue_rows is not None else ""
        return f"{batching}, cache {self.cache}{queue}{self._mode_text}"

    @property
    def _mode_text(self) -> str:
        mode = self.overload_mode
        if mode == "degrade":
            return f", degrade ({self.degrade_objective_ms:g} ms objective)"
        return ", cascade" if mode == "cascade" else ""

    @property
    def slug(self) -> str:
        b = f"b{self.max_delay_ms:g}" if self.batching else "nob"
        q = f"-q{self.max_queue_rows}" if self.max_queue_rows is not None else ""
        mode = self.overload_mode
        m = f"-degrade{self.degrade_objective_ms:g}" if mode == "degrade" else ""
        m += "-cascade" if mode == "cascade" else ""
        return f"{b}-c{self.cache}{q}{m}"


@dataclass(frozen=True)
class Cell:
    group: str
    """models, accuracy, batching, cache, spike, shifted or budget."""
    model: str
    scenario: str
    """Locust user class name(s), comma-separated."""
    users: int
    seconds: float
    server: ServerConfig = field(default_factory=ServerConfig)
    user_rate: float = 0.0
    batch_size: str = "32-256"
    zipf_s: float = 1.1
    shift: float | None = None
    spike: bool = False
    fresh_server: bool = False
    """Start a server of its own (a cold cache), even if the previous cell's would do."""
    open_rate: float = 0.0
    """OpenLoop: requests/s in total, arriving whatever the answers."""
    load_factor: float | None = None
    """An overload cell's rate as a multiple of the capacity measured by the run's last
    ``capacity`` cell of the same model (resolved into ``open_rate`` when the cell runs)."""
    budget_ms: float = DEFAULT_BUDGET_MS
    """OpenLoop: the latency budget each request carries."""

    @property
    def cell_id(self) -> str:
        scen = self.scenario.replace(",", "+")
        load = f"-x{self.load_factor:g}" if self.load_factor is not None else ""
        return f"{self.group}-{self.model}-{scen}-{self.server.slug}{load}-u{self.users}"

    @property
    def stream(self) -> str:
        return self.model if self.shift is None else f"{self.model}@shift={self.shift:g}"

    @property
    def target_rps(self) -> float | None:
        if self.open_rate > 0:
            return self.open_rate
        return self.user_rate * self.users if self.user_rate > 0 else None

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            cell_id=self.cell_id,
            stream=self.stream,
            target_rps=self.target_rps,
            server_label=self.server.label,
            batching=self.server.batching,
            max_delay_ms=self.server.max_delay_ms,
            cache=self.server.cache,
            overload_mode=self.server.overload_mode,
        )
        return out


@dataclass(frozen=True)
class SweepOptions:
    models_dir: Path
    out_root: Path
    mode: str = "quick"
    models: list[str] | None = None
    budget: Budget | None = None
    seconds: float | None = None
    users: list[int] | None = None
    server_cpus: str | None = "0"
    client_cpus: str | None = "1"
    workers: int = 1
    note: str = ""
    """A line for the report (what else ran on the machine, why the run was made)."""
    groups: list[str] | None = None
    """Run only these groups of cells (e.g. ``["capacity", "overload"]``); None: all."""
    budget_ms: float = DEFAULT_BUDGET_MS
    """The overload cells' per-request latency budget (and degrade objective)."""


# --- plans ---------------------------------------------------------------------------------------
def _heavy_model(models_dir: Path, models: list[str]) -> str:
    """The model with the highest single-row cost: where batching and caching matter most."""
    preferred = [m for m in ("xgb_large", "random_forest") if m in models]
    if preferred:
        return preferred[0]
    return max(models, key=lambda m: read_card(models_dir, m).cost.us_batch1)


def _fraud_models(models_dir: Path, models: list[str]) -> list[str]:
    return [m for m in models if read_card(models_dir, m).dataset.name == "fraud"]


QUICK_BINARY = 6
"""Numeric binary (fraud) models a quick sweep measures."""
QUICK_TYPED = 4
"""Bundled models with typed columns or another task a quick sweep measures besides."""


def _typed_models(models_dir: Path, models: list[str]) -> list[str]:
    """Bundled (not ``byo``) models with string/boolean columns or a task other than binary:
    the e-commerce regression and multiclass models."""
    out = []
    for m in models:
        card = read_card(models_dir, m)
        if card.recipe != "byo" and (card.task != "binary" or not card.input.numeric_only):
            out.append(m)
    return out


def budget_cells(models: list[str], budget: Budget, seconds: float) -> list[Cell]:
    users = max(4, min(128, math.ceil(budget.rate_rps / 50.0)))
    return [
        Cell("budget", m, "SteadyOneRow", users, seconds, user_rate=budget.rate_rps / users)
        for m in models
    ]


def ladder_modes(models_dir: Path, model: str) -> tuple[list[str], dict[str, str]]:
    """The overload modes ``model`` can be measured in, and why any other is left out."""
    card = read_card(models_dir, model)
    modes, skipped = ["refuse"], {}
    if card.variants:
        modes.append("degrade")
    else:
        skipped["degrade"] = f"{model} has no ladder of variants (tabserve export build --ladder)"
    if card.cascade is not None:
        modes.append("cascade")
    else:
        skipped["cascade"] = f"{model} has no cascade in its card (tabserve export build --ladder)"
    return modes, skipped


def overload_plan(
    model: str,
    modes: list[str],
    seconds: float,
    budget_ms: float = DEFAULT_BUDGET_MS,
    factors: tuple[float, ...] = LOAD_FACTORS,
) -> list[Cell]:
    """The full model's capacity (closed loop, 64 users, cache off), then open-loop traffic at
    each multiple of it, per mode (grouped by mode, so one server serves a mode); every request
    of :data:`ROWS_PER_REQUEST` rows."""
    rows = str(ROWS_PER_REQUEST)
    cells = [Cell("capacity", model, "BatchRows", CAPACITY_USERS, seconds, batch_size=rows)]
    for mode in modes:
        server = ServerConfig.for_overload(mode, model, budget_ms)
        cells += [
            Cell(
                "overload",
                model,
                "OpenLoop",
                OPEN_LOOP_USERS,
                seconds,
                server,
                load_factor=factor,
                budget_ms=budget_ms,
                batch_size=rows,
            )
            for factor in factors
        ]
    return cells


def plan(options: SweepOptions, models: list[str]) -> list[Cell]:
    """The cells of a quick or full sweep over ``models`` (in order; grouped by server).

    ``options.groups`` keeps only those groups. The overload comparison (capacity, then
    refuse / degrade / cascade at 0.5-3x of it) runs on the heavy model when it has a ladder,
    or when asked for by ``groups`` (refuse only, without a ladder).
    """
    cells = _plan_all(options, models)
    if options.groups is None:
        return cells
    return [c for c in cells if c.group in options.groups]


def _plan_all(options: SweepOptions, models: list[str]) -> list[Cell]:
    quick = options.mode == "quick"
    seconds = options.seconds or (8.0 if quick else 30.0)
    users_levels = options.users or ([1, 16] if quick else [1, 4, 16, 64])
    heavy = _heavy_model(options.models_dir, models)
    fraud = _fraud_models(options.models_dir, models)
    cells: list[Cell] = []
    base = ServerConfig()
    for m in models:
        cells += [Cell("models", m, "SteadyOneRow", u, seconds, base) for u in users_levels]
        # Fixed 256-row batches cover the whole hold-out in a few seconds: the accuracy check.
        cells.append(
            Cell("accuracy", m, "BatchRows", 2, max(4.0, seconds / 2), base, batch_size="256")
        )
    batch_models = [heavy] if quick else list(dict.fromkeys([heavy, *models[:1]]))
    delays = [0.0, 2.0] if quick else [0.0, 1.0, 2.0, 5.0]
    batch_users = [32] if quick else [16, 64]
    for m in batch_models:
        configs = [ServerConfig(batching=False)] + [ServerConfig(max_delay_ms=d) for d in delays]
        for cfg in configs:
            cells += [Cell("batching", m, "SteadyOneRow", u, seconds, cfg) for u in batch_users]
    cache_modes = ["off", "memory", "redis"] if quick else list(CACHE_MODES)
    cache_scenarios = ["ZipfRepeated"] if quick else ["ZipfRepeated", "AllUnique"]
    for m in batch_models:
        for scenario in cache_scenarios:
            for mode in cache_modes:
                cells.append(
                    Cell(
                        "cache",
                        m,
                        scenario,
                        16,
                        seconds,
                        ServerConfig(cache=mode),
                        fresh_server=True,
                    )
                )
    spike_seconds = 16.0 if quick else 60.0
    cells.append(
        Cell(
            "spike",
            heavy,
            "SteadyOneRow,BatchRows",
            16,
            spike_seconds,
            ServerConfig(max_queue_rows=256),
            batch_size="16-64",
            spike=True,
            fresh_server=True,
        )
    )
    shifted = [heavy if heavy in fraud else fraud[0]] if fraud else []
    # and one model per other generated data set (categorical drift: category shares move)
    for dataset in GENERATED_DATASETS[1:]:
        own = [m for m in models if read_card(options.models_dir, m).dataset.name == dataset]
        shifted += own[:1] if quick else own
    for m in shifted:
        cells.append(
            Cell("shifted", m, "ShiftedTraffic", 4, seconds, base, shift=1.0, fresh_server=True)
        )
    if options.budget is not None:
        cells += budget_cells(models, options.budget, seconds)
    # The overload comparison scores binary answers: the heaviest fraud model (xgb_large).
    if fraud:
        target = _heavy_model(options.models_dir, fraud)
        modes, _ = ladder_modes(options.models_dir, target)
        asked = options.groups is not None and "overload" in options.groups
        if len(modes) > 1 or asked:
            overload_seconds = options.seconds or (5.0 if quick else 20.0)
            cells += overload_plan(target, modes, overload_seconds, options.budget_ms)
    return cells


def estimated_seconds(cells: list[Cell]) -> float:
    overhead_locust, overhead_server = 3.0, 4.0
    servers = sum(1 for i, c in enumerate(cells) if i == 0 or _needs_new_server(cells[i - 1], c))
    return sum(c.seconds + overhead_locust for c in cells) + servers * overhead_server


def _needs_new_server(previous: Cell | None, cell: Cell) -> bool:
    return (
        previous is None
        or cell.fresh_server
        or previous.fresh_server
        or previous.model != cell.model
        or previous.server != cell.server
    )


# --- running -------------------------------------------------------------------------------------
def locust_command(
    cell: Cell, host: str, models_dir: Path, cell_dir: Path, client_cpus: str | None
) -> list[str]:
    files = f"{LOCUSTFILE},{SHAPESFILE}" if cell.spike else str(LOCUSTFILE)
    cmd = [
        *pin_prefix(client_cpus),
        sys.executable,
        "-m",
        "locust",
        "-f",
        files,
        "--headless",
        "--host",
        host,
        "--csv",
        str(cell_dir / "locust"),
        "--html",
        str(cell_dir / "locust.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "1",
        "--exit-code-on-error",
        "0",
    ]
    if cell.spike:
        cmd += [
            "-t",
            f"{cell.seconds + 5:g}s",
            "--spike-users",
            str(cell.users),
            "--spike-seconds",
            f"{cell.seconds:g}",
        ]
    else:
        # All users start within ~50 ms, so the whole run is at the cell's concurrency.
        spawn_rate = min(cell.users * 20, 1000)
        cmd += ["-u", str(cell.users), "-r", str(spawn_rate), "-t", f"{cell.seconds:g}s"]
    cmd += [
        *cell.scenario.split(","),
        "--model",
        cell.model,
        "--models-dir",
        str(models_dir),
        "--batch-size",
        cell.batch_size,
        "--zipf-s",
        f"{cell.zipf_s:g}",
        "--user-rate",
        f"{cell.user_rate:g}",
        "--scores-out",
        str(cell_dir / "accuracy.json"),
    ]
    if cell.shift is not None:
        cmd += ["--shift", f"{cell.shift:g}"]
    if cell.open_rate > 0:
        cmd += ["--open-rate", f"{cell.open_rate:.6g}", "--budget-ms", f"{cell.budget_ms:g}"]
    return cmd


def _single_model_repo(models_dir: Path, model: str, dest: Path) -> Path:
    """A repository holding only ``model`` (a symlink): the server loads just what is measured."""
    repo = dest / f"repo-{model}"
    repo.mkdir(parents=True, exist_ok=True)
    link = repo / model
    if not link.exists():
        link.symlink_to((models_dir / model).resolve(), target_is_directory=True)
    return repo


class Sweep:
    """Runs a list of cells and writes ``results.json`` after each one."""

    def __init__(
        self,
        options: SweepOptions,
        cells: list[Cell],
        run_dir: Path,
        progress: Callable[[str], None] = print,
    ) -> None:
        self.options = options
        self.cells = cells
        self.run_dir = run_dir
        self.progress = progress
        self.records: list[dict[str, Any]] = []
        self.server: ServerProcess | None = None
        self.redis: RedisServer | None = None
        self.started = time.monotonic()
        self.meta: dict[str, Any] = {}

    def run(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        models = sorted({c.model for c in self.cells})
        self.meta = {
            "mode": self.options.mode,
            "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "models_dir": str(self.options.models_dir),
            "budget": str(self.options.budget) if self.options.budget else None,
            "server_cpus": self.options.server_cpus,
            "client_cpus": self.options.client_cpus,
            "workers": self.options.workers,
            "host": _host_description(),
            "commit": _git_commit(),
            "cell_seconds": self.options.seconds or (self.cells[0].seconds if self.cells else None),
            "planned_cells": len(self.cells),
            "load_average_at_start": _load_average(),
            "estimated_s": estimated_seconds(self.cells),
            "note": self.options.note or None,
        }
        model_facts = {m: _model_facts(self.options.models_dir, m) for m in models}
        self.progress(
            f"sweep ({self.options.mode}): {len(self.cells)} cells over {len(models)} models, "
            f"about {estimated_seconds(self.cells) / 60:.1f} min; writing {self.run_dir}"
        )
        previous: Cell | None = None
        try:
            for index, cell in enumerate(self.cells, start=1):
                record = self._run_cell(cell, previous, index)
                previous = cell
                self.records.append(record)
                self.meta["elapsed_s"] = time.monotonic() - self.started
                write_results(
                    self.run_dir / RESULTS_FILE,
                    {"meta": self.meta, "models": model_facts, "cells": self.records},
                )
        finally:
            self._stop_servers()
        self.meta["elapsed_s"] = time.monotonic() - self.started
        self.meta["load_average_at_end"] = _load_average()
        write_results(
            self.run_dir / RESULTS_FILE,
            {"meta": self.meta, "models": model_facts, "cells": self.records},
        )
        budget = self.options.budget or parse_budget(DEFAULT_BUDGET)
        report = render(self.run_dir, budget)
        self.progress(f"done in {self.meta['elapsed_s']:.0f} s: {report}")
        doc = {"meta": self.meta, "models": model_facts, "cells": self.records}
        for line in recommendation_summary(doc, budget):
            self.progress(line)
        return report

    def _stop_servers(self) -> None:
        try:
            if self.server is not None:
                self.server.stop()
        finally:
            self.server = None
            if self.redis is not None:
                self.redis.stop()
            self.redis = None

    def _redis_cpu(self) -> float:
        return self.redis.cpu_seconds() if self.redis is not None else 0.0

    def _ensure_server(self, cell: Cell, previous: Cell | None, probe: bytes) -> ServerProcess:
        if self.server is not None and not _needs_new_server(previous, cell):
            return self.server
        self._stop_servers()
        opts = self.options
        if cell.server.uses_redis:
            self.redis = RedisServer(self.run_dir / "redis", cpus=opts.server_cpus)
            self.redis.start()
        repo = _single_model_repo(opts.models_dir, cell.model, self.run_dir / "repos")
        self.server = ServerProcess(
            models_dir=repo,
            log_path=self.run_dir / "server-logs" / f"{cell.cell_id}.log",
            env=cell.server.env(),
            cpus=opts.server_cpus,
            workers=opts.workers,
            redis_url=self.redis.url if self.redis is not None else None,
        )
        self.server.start_and_probe(cell.model, probe)
        if cell.group != "cache":  # a cache cell must start cold
            self.server.warm_up(cell.model, probe)
        return self.server

    def _capacity(self, model: str) -> tuple[float | None, str]:
        """The full model's capacity from the run's last capacity cell of ``model``."""
        for record in reversed(self.records):
            if record.get("group") == "capacity" and record.get("model") == model:
                return capacity_of(record)
        return None, "no capacity cell ran before it"

    def _run_cell(self, cell: Cell, previous: Cell | None, index: int) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if cell.load_factor is not None:
            capacity, how = self._capacity(cell.model)
            extra = {"capacity_rps": capacity, "capacity_how": how}
            if capacity is None:
                self.progress(f"[{index}/{len(self.cells)}] {cell.cell_id}: FAILED ({how})")
                return cell.describe() | extra | {"failed": f"no capacity: {how}"}
            cell = dataclasses.replace(cell, open_rate=capacity * cell.load_factor)
        cell_dir = self.run_dir / "cells" / cell.cell_id
        cell_dir.mkdir(parents=True, exist_ok=True)
        head = f"[{index}/{len(self.cells)}] {cell_label(cell.describe())}"
        try:
            replay = load_replay(self.options.models_dir, cell.model)
            server = self._ensure_server(cell, previous, replay.body([0]))
            before: Samples = scrape(server.base_url)
            server_cpu_before, redis_cpu_before = server.cpu_seconds(), self._redis_cpu()
            server_core_before = core_busy_seconds(self.options.server_cpus)
            client_core_before = core_busy_seconds(self.options.client_cpus)
            cmd = locust_command(
                cell, server.base_url, self.options.models_dir, cell_dir, self.options.client_cpus
            )
            (cell_dir / "command.txt").write_text(" ".join(cmd) + "\n")
            code, wall, locust_cpu = LocustRun(
                cmd, cell_dir / "locust.log", cell.seconds + 90
            ).run()
            server_cpu = server.cpu_seconds() - server_cpu_before
            redis_cpu = self._redis_cpu() - redis_cpu_before
            server_core = _delta(core_busy_seconds(self.options.server_cpus), server_core_before)
            client_core = _delta(core_busy_seconds(self.options.client_cpus), client_core_before)
            after = scrape(server.base_url)
            delta = difference(before, after)
        except Exception as exc:  # one broken cell must not lose the sweep
            self.progress(f"{head}: FAILED ({exc})")
            self._stop_servers()
            return cell.describe() | {"failed": f"{type(exc).__name__}: {exc}"}
        acc_path = cell_dir / "accuracy.json"
        accuracy = json.loads(acc_path.read_text()) if acc_path.is_file() else None
        duration = float((accuracy or {}).get("duration_s") or cell.seconds)
        cpu = {
            "server_s": server_cpu,
            "server_pct": 100.0 * server_cpu / duration,
            "locust_s": locust_cpu,
            "locust_pct": (accuracy or {}).get("client_cpu_pct") or 100.0 * locust_cpu / wall,
            "locust_wall_s": wall,
            # Busy time of the pinned cores not spent by our server (and Redis) or Locust.
            "redis_s": redis_cpu,
            "others_server_core_pct": _others_pct(server_core, server_cpu + redis_cpu, wall),
            "others_client_core_pct": _others_pct(client_core, locust_cpu, wall),
        }
        record = cell_record(
            cell.describe(),
            accuracy,
            read_locust_stats(cell_dir / "locust"),
            server_figures(delta, cell.model),
            cpu,
        )
        record.update(extra)
        if cell.group == "capacity":
            record["capacity_rps"], record["capacity_how"] = capacity_of(record)
        if cell.open_rate > 0:
            record["overload"] = ((accuracy or {}).get("overload") or {}).get(cell.stream)
            record["server"].update(server_rows(delta, cell.model))
            if record["overload"] is None and not record.get("failed"):
                record["failed"] = "no open-loop requests recorded"
        record["locust_exit_code"] = code
        if code not in (0, 1) and not record.get("failed"):
            record["failed"] = f"locust exited with {code} (see {cell_dir / 'locust.log'})"
        self.progress(
            f"{head}: {_progress_line(record)}  [{time.monotonic() - self.started:.0f} s]"
        )
        return record


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def _others_pct(core_busy: float | None, ours: float, wall: float) -> float | None:
    """Share of one pinned core that other processes used (per core when several are listed)."""
    if core_busy is None or wall <= 0:
        return None
    return max(0.0, 100.0 * (core_busy - ours) / wall)


def _progress_line(record: dict[str, Any]) -> str:
    if record.get("failed"):
        return f"FAILED ({record['failed']})"
    lat = record.get("latency_ms") or {}
    acc = record.get("accuracy") or {}
    off = record.get("offline") or {}
    server = record.get("server") or {}
    parts = [
        f"{record.get('throughput_rps') or 0:.0f} req/s",
        f"p50 {lat.get('p50', float('nan')):.2f} p99 {lat.get('p99', float('nan')):.2f} ms",
        f"err {float(record.get('error_rate') or 0):.1%}"
        f" (503 {float(record.get('rate_503') or 0):.1%})",
    ]
    if acc:
        metric = headline(cell_task(record))
        offline = off.get(metric.key)
        offline_text = "n/a" if offline is None else f"{offline:.4g}"
        parts.append(
            f"{metric.name} {acc.get(metric.key, float('nan')):.4g} (offline {offline_text},"
            f" {float(record.get('coverage') or 0):.0%} rows)"
        )
    if server.get("mean_batch_rows") is not None:
        parts.append(f"batch {server['mean_batch_rows']:.1f} rows")
    if server.get("hit_ratio") is not None:
        parts.append(f"hits {server['hit_ratio']:.0%}")
    ov = record.get("overload")
    if ov:
        parts = [
            f"offered {ov.get('offered_rps') or 0:.0f}/{ov.get('target_rps') or 0:.0f} req/s",
            f"in budget {float(ov.get('answered_in_budget_share') or 0):.1%}",
            f"503 {float(ov.get('rate_503') or 0):.1%} 504 {float(ov.get('rate_504') or 0):.1%}",
            f"effective recall {float(ov.get('effective_recall') or 0):.3f}",
            f"PR-AUC {float((ov.get('accuracy') or {}).get('pr_auc') or float('nan')):.3f}",
            f"lag p99 {float((ov.get('lag_ms') or {}).get('p99') or 0):.1f} ms",
            "variants " + (", ".join(f"{k} {v}" for k, v in (ov.get("variants") or {}).items())),
        ]
    if record.get("group") == "capacity" and record.get("capacity_rps"):
        parts.append(f"capacity {record['capacity_rps']:.0f} req/s ({record['capacity_how']})")
    return ", ".join(parts)


def _model_facts(models_dir: Path, model: str) -> dict[str, Any]:
    card = read_card(models_dir, model)
    return {
        "version": card.version,
        "dataset": card.dataset.name,
        "estimator": card.estimator,
        "task": card.task,
        "columns": _column_kinds(card.input.columns),
        "rows_test": card.dataset.rows_test,
        "offline": offline_metrics(card),
        "cost_us": {"batch1": card.cost.us_batch1, "per_row_batch64": card.cost.us_per_row_batch64},
        "variants": [v.name for v in card.variants],
        "cascade": card.cascade.variant if card.cascade is not None else None,
    }


def _column_kinds(columns: list[Any]) -> str:
    """'3 categorical + 20 numeric' (in the order kinds first appear)."""
    counts: dict[str, int] = {}
    for c in columns:
        counts[c.kind] = counts.get(c.kind, 0) + 1
    return " + ".join(f"{n} {kind}" for kind, n in counts.items())


def _load_average() -> list[float] | None:
    """1/5/15-minute load averages: above the CPU count, other work competed with the sweep."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _host_description() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs {model}".strip()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def resolve_models(options: SweepOptions) -> list[str]:
    found = available_models(options.models_dir)
    if not found:
        raise SystemExit(
            f"no models with a hold-out under {options.models_dir}: "
            "run `tabserve export build` first"
        )
    if options.models:
        missing = [m for m in options.models if m not in found]
        if missing:
            raise SystemExit(
                f"models not found under {options.models_dir}: {missing} (found {found})"
            )
        return list(options.models)
    if options.mode == "quick":
        fraud = _fraud_models(options.models_dir, found)
        typed = _typed_models(options.models_dir, found)
        return list(dict.fromkeys([*(fraud or found)[:QUICK_BINARY], *typed[:QUICK_TYPED]]))
    return found


def run(
    options: SweepOptions, *, dry_run: bool = False, progress: Callable[[str], None] = print
) -> Path | None:
    models = resolve_models(options)
    cells = plan(options, models)
    if dry_run:
        for c in cells:
            progress(f"{cell_label(c.describe())}: {c.seconds:g} s  [{c.cell_id}]")
        progress(f"{len(cells)} cells, about {estimated_seconds(cells) / 60:.1f} min")
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = options.out_root / f"{stamp}-{options.mode}"
    return Sweep(options, cells, run_dir, progress).run()


__all__ = [
    "Cell",
    "ServerConfig",
    "Sweep",
    "SweepOptions",
    "ladder_modes",
    "overload_plan",
    "plan",
    "run",
]
