"""Schema-driven fuzzing: Schemathesis against a real ``tabserve serve``, from its own OpenAPI.

Starts a real ``tabserve serve`` on loopback (``ServeProcess``) with an admin token, so the admin
routes are reachable, and runs Schemathesis (``python -m schemathesis.cli run``) against
``/schema/openapi.json``: every operation, valid and invalid data (``--mode all``), the examples,
coverage, fuzzing and stateful phases, with these checks on every answer:

- ``not_a_server_error``: no 5xx;
- ``status_code_conformance``: the status is documented for the operation;
- ``content_type_conformance``: the Content-Type is documented for that status;
- ``response_headers_conformance``: documented headers are present and valid;
- ``response_schema_conformance``: the body matches the documented schema.

The model name and version path parameters come from the served models most of the time (a
Schemathesis dictionary, probability ``--known-names``), so the predict, infer and feedback
bodies reach the validation and inference code instead of stopping at a 404. The admin token
is a Schemathesis auth for the ``adminBearer`` scheme, so it goes to the admin routes only.

Prints a summary from the run's NDJSON event log: requests sent, answers by status, 5xx
answers, failing test cases by check and operation, and a few failing requests. Exit code 0 when
no check failed, no answer was a 5xx and the fuzzer reported no error.

    python -m loadtests.stress.fuzz --examples 20
    python -m loadtests.stress.fuzz --examples 100 --max-time 300 --seed 1

The run is bounded by ``--examples`` (test cases per operation and phase) and by
``--timeout`` (the fuzzer process is stopped by its PID when it is over); ``--max-time``
instead gives Schemathesis a time budget that its fuzzing and stateful phases fill.
The server and the fuzzer are stopped by the PIDs they were started with.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.serveproc import ServeProcess, stop_process

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
PHASES = ("examples", "coverage", "fuzzing", "stateful")
TOKEN_ENV = "TABSERVE_FUZZ_ADMIN_TOKEN"
OPERATION = re.compile(r"^[A-Z]+ /")
DOCUMENTED_CHECK = "documented_answer"
"""Our own check over every answer of the run (see :func:`check_documented`)."""
HTTP_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}
PROBLEM_JSON = "application/problem+json"


@dataclass
class Failure:
    """One failing check on one request."""

    check: str
    operation: str
    request: str
    status: int | None
    content_type: str
    message: str


@dataclass
class FuzzSummary:
    """What one fuzzing run sent and found (read from its NDJSON event log)."""

    requests: int = 0
    test_cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Failing test cases, by (check, operation)."""
    samples: list[Failure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """Errors the fuzzer reported (schema problems, network errors, crashes)."""
    operations: set[str] = field(default_factory=set)
    exit_code: int | None = None
    finished: bool = False
    """The fuzzer's run ended on its own (it was not stopped at ``--timeout``)."""
    elapsed_s: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def failure_count(self) -> int:
        return sum(self.failures.values())

    @property
    def ok(self) -> bool:
        return self.finished and not self.failures and not self.server_errors and not self.errors


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
        return body


def served_versions(base_url: str) -> dict[str, list[int]]:
    """Every served model and its versions (``GET /v1/models``)."""
    models: list[dict[str, Any]] = json.loads(_get(base_url + "/v1/models"))
    return {m["name"]: [int(v) for v in m["versions"]] for m in models}


def _toml_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def schemathesis_config(models: dict[str, list[int]], known_names: float) -> str:
    """A ``schemathesis.toml``: the admin auth (from the environment) and the dictionaries of
    served names and versions for the path parameters."""
    versions = sorted({str(v) for vs in models.values() for v in vs})
    return "\n".join(
        [
            "[auth.openapi.adminBearer]",
            f'bearer = "${{{TOKEN_ENV}}}"',
            "",
            "[dictionaries.models]",
            f"values = {_toml_list(sorted(models))}",
            "",
            "[dictionaries.versions]",
            f"values = {_toml_list(versions)}",
            "",
            "[parameters]",
            f'"path.name" = {{ dictionary = "models", probability = {known_names} }}',
            f'"path.version" = {{ dictionary = "versions", probability = {known_names} }}',
            "",
        ]
    )


def fuzz_command(
    schema: str,
    base_url: str,
    config: Path,
    events: Path,
    *,
    examples: int,
    seed: int | None,
    workers: int,
    phases: Sequence[str],
    max_time: int | None,
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "--no-color",
        "run",
        schema,
        "--url",
        base_url,
        "--checks",
        ",".join(CHECKS),
        "--mode",
        "all",
        "--phases",
        ",".join(phases),
        "--max-examples",
        str(examples),
        "--workers",
        str(workers),
        "--generation-database",
        "none",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(events),
        "--request-timeout",
        "30",
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    if max_time is not None:
        command += ["--max-time", str(max_time)]
    return command


def _events(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    if not path.exists():
        return
    with path.open() as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # the last line of a run stopped at --timeout
                continue
            yield from event.items()


@dataclass(frozen=True)
class Route:
    """One documented operation: the answers (status -> media types) its document lists."""

    method: str
    template: str
    pattern: re.Pattern[str]
    answers: dict[str, frozenset[str]]

    @property
    def label(self) -> str:
        return f"{self.method} {self.template}"


def _media(content_type: str) -> str:
    """The media type without its parameters (``text/plain; version=1.0.0`` -> ``text/plain``)."""
    return content_type.split(";")[0].strip().lower()


def documented_routes(schema: dict[str, Any]) -> list[Route]:
    """Every operation of an OpenAPI document, most literal path first (so ``/versions/{v}``
    is not taken for a name)."""
    routes = []
    for template, item in schema.get("paths", {}).items():
        parts = re.split(r"\{[^}/]+\}", template)
        pattern = re.compile("^" + "[^/]+".join(re.escape(part) for part in parts) + "$")
        for method, operation in item.items():
            if method.upper() not in HTTP_METHODS or not isinstance(operation, dict):
                continue
            answers = {
                status: frozenset(_media(key) for key in response.get("content") or {})
                for status, response in operation.get("responses", {}).items()
            }
            routes.append(Route(method.upper(), template, pattern, answers))
    routes.sort(key=lambda r: -len(re.sub(r"\{[^}]+\}", "", r.template)))
    return routes


def check_documented(
    routes: Sequence[Route], method: str, uri: str, status: int, content_type: str
) -> tuple[str, str] | None:
    """``(operation, what is wrong)`` when an answer is not documented, else None.

    Schemathesis checks the status and Content-Type of the answers to the requests it generates
    from an operation, but only ``not_a_server_error`` on its Content-Type probes (a text/plain
    or a broken multipart body), and it matches the answers of other methods to no operation.
    This check covers every answer: the status must be listed for the operation (or ``NXX``, or
    ``default``) with the answer's media type; a method the path does not have must get a
    problem+json 405 (or OPTIONS its 204).
    """
    path = urllib.parse.urlsplit(uri).path
    on_path = [r for r in routes if r.pattern.match(path)]
    if not on_path:
        return None  # not an operation's URL (Schemathesis's own probes)
    route = next((r for r in on_path if r.method == method), None)
    media = _media(content_type)
    if route is None:
        label = f"{method} {on_path[0].template}"
        if (method == "OPTIONS" and status == 204) or (status == 405 and media == PROBLEM_JSON):
            return None
        return label, f"method not in the document answered {status} {content_type!r}"
    key = str(status)
    documented = route.answers.get(key)
    if documented is None:
        documented = route.answers.get(f"{key[0]}XX", route.answers.get("default"))
    if documented is None:
        return route.label, f"status {status} not documented ({sorted(route.answers)})"
    if documented and media not in documented:
        return route.label, f"{status} answered {content_type!r}, documented {sorted(documented)}"
    return None


def read_events(
    path: Path, summary: FuzzSummary, routes: Sequence[Route] = (), max_samples: int = 10
) -> None:
    """Add the requests, answers, failures and errors of the NDJSON event log to ``summary``;
    with ``routes``, every answer is also checked by :func:`check_documented`."""
    for kind, payload in _events(path):
        if kind in {"NonFatalError", "FatalError"}:
            label = payload.get("label") or ""
            summary.errors.append(f"{kind} {label}: {payload.get('value') or payload}"[:500])
        elif kind == "EngineFinished":
            summary.finished = True
        if kind != "ScenarioFinished":
            continue
        recorder = payload["recorder"]
        if OPERATION.match(recorder["label"]):
            summary.operations.add(recorder["label"])
        summary.test_cases += len(recorder.get("cases", {}))
        interactions = recorder.get("interactions", {})
        for interaction in interactions.values():
            summary.requests += 1
            response = interaction.get("response")
            if response is None:
                continue
            status = int(response["status_code"])
            summary.statuses[status] += 1
            request = interaction["request"]
            content_type = ",".join(response.get("headers", {}).get("content-type", []))
            method, uri = request["method"], request["uri"]
            wrong = check_documented(routes, method, uri, status, content_type)
            if wrong is not None:
                summary.failures[(DOCUMENTED_CHECK, wrong[0])] += 1
                if len(summary.samples) < max_samples:
                    summary.samples.append(
                        Failure(
                            check=DOCUMENTED_CHECK,
                            operation=wrong[0],
                            request=f"{method} {uri}",
                            status=status,
                            content_type=content_type,
                            message=wrong[1],
                        )
                    )
        for checks in recorder.get("checks", {}).values():
            failed = {c["name"]: c for c in checks if c.get("status") == "failure"}
            for name, check in failed.items():
                summary.failures[(name, recorder["label"])] += 1
                if len(summary.samples) < max_samples:
                    summary.samples.append(_failure(name, recorder["label"], check, interactions))


def _failure(
    check: str, operation: str, result: dict[str, Any], interactions: dict[str, Any]
) -> Failure:
    info = result.get("failure_info") or {}
    case_id = (info.get("case") or {}).get("id") if isinstance(info, dict) else None
    interaction = interactions.get(case_id or "", {})
    request = interaction.get("request", {})
    response = interaction.get("response") or {}
    content_type = ",".join(response.get("headers", {}).get("content-type", []))
    failure = info.get("failure", {}) if isinstance(info, dict) else {}
    message = failure.get("title", "") + ": " + str(failure.get("message", ""))
    return Failure(
        check=check,
        operation=operation,
        request=f"{request.get('method', '?')} {request.get('uri', '?')}",
        status=response.get("status_code"),
        content_type=content_type,
        message=message.strip(": ")[:400],
    )


def fuzz(
    models_dir: Path,
    *,
    examples: int = 20,
    seed: int | None = None,
    workers: int = 1,
    phases: Sequence[str] = PHASES,
    max_time: int | None = None,
    timeout: float = 600.0,
    known_names: float = 0.8,
    admin_failures_per_minute: int = 100_000,
    work_dir: Path | None = None,
    schema: Path | None = None,
    env: dict[str, str] | None = None,
    quiet: bool = False,
) -> FuzzSummary:
    """Serve ``models_dir`` and fuzz it; the summary of the run. Nothing is left running.

    The operations and the answers they may give come from the server's ``/schema/openapi.json``
    or, when given, from the OpenAPI document in the file ``schema`` (an edited copy, say).
    """
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="tabserve-fuzz-") as tmp:
        work = work_dir if work_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        events = work / "events.ndjson"
        events.unlink(missing_ok=True)
        output = work / "schemathesis.log"
        summary = FuzzSummary()
        server_env = {
            "TABSERVE_ADMIN_TOKEN": token,
            "TABSERVE_ADMIN_AUTH_FAILURES_PER_MINUTE": str(admin_failures_per_minute),
            **(env or {}),
        }
        # A copy: the admin routes the fuzzer calls may write (a model's routing.json).
        served = work / "models"
        shutil.rmtree(served, ignore_errors=True)
        shutil.copytree(models_dir, served)
        with ServeProcess(served, env=server_env, log_path=work / "server.log") as server:
            schema_text = (
                schema.read_text()
                if schema is not None
                else _get(server.url + "/schema/openapi.json").decode()
            )
            routes = documented_routes(json.loads(schema_text))
            config = work / "schemathesis.toml"
            config.write_text(schemathesis_config(served_versions(server.url), known_names))
            command = fuzz_command(
                str(schema) if schema is not None else server.url + "/schema/openapi.json",
                server.url,
                config,
                events,
                examples=examples,
                seed=seed,
                workers=workers,
                phases=phases,
                max_time=max_time,
            )
            started = time.monotonic()
            with output.open("wb") as out:
                proc = subprocess.Popen(
                    command,
                    env={**os.environ, TOKEN_ENV: token},
                    stdout=None if not quiet else out,
                    stderr=subprocess.STDOUT if quiet else None,
                    start_new_session=True,
                )
                try:
                    summary.exit_code = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    summary.errors.append(f"fuzzer stopped after --timeout {timeout:g} s")
                finally:
                    stop_process(proc, 10.0, group=True)
            summary.elapsed_s = time.monotonic() - started
        read_events(events, summary, routes)
        if summary.exit_code not in (0, None) and not summary.failures and not summary.errors:
            tail = output.read_text(errors="replace")[-2000:] if quiet else ""
            summary.errors.append(f"fuzzer exited with {summary.exit_code} {tail}".strip())
    return summary


def format_summary(summary: FuzzSummary) -> str:
    lines = [
        f"operations: {len(summary.operations)}   test cases: {summary.test_cases}   "
        f"requests: {summary.requests}   5xx: {summary.server_errors}   "
        f"failing checks: {summary.failure_count}   errors: {len(summary.errors)}   "
        f"time: {summary.elapsed_s:.1f} s",
        "answers by status: "
        + ", ".join(f"{status}: {n}" for status, n in sorted(summary.statuses.items())),
    ]
    if summary.failures:
        lines.append("failing test cases by check and operation:")
        for (check, operation), n in sorted(summary.failures.items()):
            lines.append(f"  {check:30} {operation:50} {n}")
    else:
        checks = (*CHECKS, DOCUMENTED_CHECK)
        lines.append("failing test cases by check: " + ", ".join(f"{c}: 0" for c in checks))
    for sample in summary.samples:
        lines.append(
            f"  e.g. [{sample.check}] {sample.request} -> {sample.status} "
            f"{sample.content_type}: {sample.message}"
        )
    lines += [f"error: {e}" for e in summary.errors]
    lines.append("result: " + ("PASS" if summary.ok else "FAIL"))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.stress.fuzz",
        description="Fuzz a real tabserve server from its OpenAPI document with Schemathesis "
        "(valid and invalid data, every operation, response conformance checks on).",
    )
    p.add_argument(
        "--models-dir",
        default=os.environ.get("TABSERVE_MODELS_DIR", "models"),
        help="model repository the server serves (default: ./models)",
    )
    p.add_argument(
        "--examples",
        type=int,
        default=20,
        help="test cases per operation and phase (Schemathesis --max-examples)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")
    p.add_argument("--workers", type=int, default=1, help="concurrent fuzzer workers")
    p.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated Schemathesis phases to run (default: {','.join(PHASES)})",
    )
    p.add_argument(
        "--max-time",
        type=int,
        default=None,
        help="time budget in seconds that Schemathesis fills by repeating its fuzzing and "
        "stateful phases (default: none, the run ends after --examples)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="hard limit in seconds: the fuzzer is stopped (by PID) when it runs longer",
    )
    p.add_argument(
        "--known-names",
        type=float,
        default=0.8,
        help="probability that a model name or version path parameter is a served one "
        "rather than a generated string",
    )
    p.add_argument(
        "--admin-failures-per-minute",
        type=int,
        default=100_000,
        help="the server's failed admin authentications allowed per client and minute: the "
        "fuzzer sends many (missing or wrong tokens), and past the limit every admin request "
        "is a 429 that never reaches the route (default: high enough not to be reached)",
    )
    p.add_argument(
        "--schema",
        type=Path,
        default=None,
        help="fuzz from this OpenAPI document (a JSON file) instead of the server's "
        "/schema/openapi.json",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the event log, the Schemathesis config and the server log here "
        "(default: a temporary directory, removed after the run)",
    )
    p.add_argument(
        "--quiet", action="store_true", help="hide Schemathesis's own output (summary only)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser().error(f"unknown phases: {sorted(unknown)}")
    summary = fuzz(
        Path(args.models_dir),
        examples=args.examples,
        seed=args.seed,
        workers=args.workers,
        phases=phases,
        max_time=args.max_time,
        timeout=args.timeout,
        known_names=args.known_names,
        admin_failures_per_minute=args.admin_failures_per_minute,
        work_dir=args.work_dir,
        schema=args.schema,
        quiet=args.quiet,
    )
    print(format_summary(summary))
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
