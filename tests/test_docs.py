"""Every command that README.md and docs/*.md show is run by this test.

Shell examples in the docs are fenced ```` ```console ```` blocks: a line ``$ command`` (with
``\\`` continuation lines) followed by the output it prints. Each command is checked one of two
ways, and a command that neither covers fails the test (nothing is skipped silently):

* **against a real server**: a command that calls ``http://127.0.0.1:8000`` runs in ``bash``
  against a real ``tabserve serve`` process on a free port (the port is substituted), serving the
  bundled ``xgb_small`` built by ``tabserve export build --only xgb_small`` (the same model
  ``make serve`` serves, so the same answers), with ``TABSERVE_ADMIN_TOKEN=change-me``. Each
  page gets a fresh server and its commands run in page order. The output must equal the shown
  output after :data:`NORMALISE` (generated request ids and dates only).
* **a cheaper but real check**, for commands that run long or need the whole machine (``make
  serve``, ``make loadtest``, ``tabserve bench``...): :data:`CHECKS` names every such command and
  how it is checked (``make -n TARGET`` names the right command; ``--help`` exits 0 and lists
  every option the docs use; or the command runs and its output is compared).

Shell code in any other fence (```` ```bash ````, ```` ```sh ````) is refused, so every command
lives in a console block. When outputs change on purpose, rewrite them from real runs:

    .venv/bin/python -m tests.test_docs --update [README.md docs/serving-api.md ...]

The settings table in docs/configuration.md is generated (``python -m server.settings``) and
checked here too.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.settings import settings_table
from tests.support.server_process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
DOC_PORT = "127.0.0.1:8000"
ADMIN_TOKEN = "change-me"
DOC_MODEL = "xgb_small"
DOC_MODELS = ("xgb_small", "pricing_xgb", "returns_sklearn")
"""The bundled models the docs call: numeric binary, regression and multiclass over strings."""
BIN = Path(sys.executable).parent

NORMALISE: list[tuple[re.Pattern[str], str]] = [
    # request ids the server generates: a per-process prefix and a counter
    (re.compile(r"\b[0-9a-f]{8}-[0-9]+\b"), "<request-id>"),
    # the Date header of `curl -i`
    (re.compile(r"(?im)^date: .*$"), "date: <date>"),
]
"""The only parts of an output that may differ from the docs: everything else must match."""


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass
class Example:
    """One ``$ command`` of a console block and the output shown under it."""

    path: Path
    line: int  # 1-based line of the ``$``
    command: str  # continuation lines joined as the shell sees them
    expected: str
    output_lines: tuple[int, int]  # [start, end) 0-based line indexes of the shown output

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def calls_server(self) -> bool:
        return f"http://{DOC_PORT}" in self.command


FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
SHELL_FENCES = {"bash", "sh", "shell", "zsh"}


def parse(path: Path) -> tuple[list[Example], list[str]]:
    """The examples of one page, and problems (shell code outside console blocks)."""
    lines = path.read_text().splitlines()
    examples: list[Example] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        lang, start = fence.group(2), i + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        if lang in SHELL_FENCES:
            problems.append(f"{path.relative_to(ROOT)}:{i + 1}: use ```console with $ prompts")
        elif lang == "console":
            examples.extend(_parse_console(path, lines, start, end, problems))
        i = end + 1
    return examples, problems


def _parse_console(
    path: Path, lines: list[str], start: int, end: int, problems: list[str]
) -> Iterator[Example]:
    j = start
    if j < end and not lines[j].startswith("$ "):
        problems.append(f"{path.relative_to(ROOT)}:{j + 1}: a console block starts with `$ `")
    while j < end:
        if not lines[j].startswith("$ "):
            j += 1
            continue
        first, parts = j, [lines[j][2:]]
        while parts[-1].endswith("\\") and j + 1 < end:
            j += 1
            parts.append(lines[j])
        j += 1
        out_start = j
        while j < end and not lines[j].startswith("$ "):
            j += 1
        yield Example(
            path,
            first + 1,
            "\n".join(parts),
            "\n".join(lines[out_start:j]),
            (out_start, j),
        )


def normalise(text: str) -> str:
    for pattern, replacement in NORMALISE:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def shell_env() -> dict[str, str]:
    """The environment of a shown command: the project's venv first on PATH (as after
    ``source .venv/bin/activate``) and no TABSERVE_* settings from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABSERVE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MAKEFLAGS", None)
    return env


def run_shell(command: str, port: int | None = None, timeout: float = 30.0) -> tuple[int, str]:
    if port is not None:
        command = command.replace(DOC_PORT, f"127.0.0.1:{port}")
    proc = subprocess.run(
        ["bash", "-c", "set -o pipefail\n" + command],
        cwd=ROOT,
        env=shell_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


# ---- cheap but real checks for commands that do not call the doc server ----------------------


@functools.cache
def help_text(command: str) -> tuple[int, str]:
    """``run_shell`` of a command without side effects (``--help``, ``--list``), run once."""
    return run_shell(command, timeout=60)


Check = Callable[[str], str | None]
"""Takes the command as shown; returns a problem, or None when the check passed."""


def make_dry_run(*names: str) -> Check:
    """The shown ``make`` command with ``-n -B`` succeeds, and what it would run includes each of
    ``names`` (``-B``: as on a fresh clone, where nothing is installed or built yet; without it
    a current install stamp makes ``make -n install`` print nothing)."""

    def check(command: str) -> str | None:
        dry = command.replace("make ", "make -n -B ", 1)
        code, out = run_shell(dry)
        if code != 0:
            return f"`{dry}` exited {code}:\n{out}"
        missing = [name for name in names if name not in out]
        if missing:
            return f"`{dry}` does not run {missing}:\n{out}"
        return None

    return check


def help_lists_options(cli: str) -> Check:
    """``CLI --help`` exits 0 and names every ``--option`` the shown command uses."""

    def check(command: str) -> str | None:
        code, out = help_text(f"{cli} --help")
        if code != 0:
            return f"`{cli} --help` exited {code}:\n{out}"
        used = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", command)) - {"--help"}
        missing = sorted(opt for opt in used if opt not in out)
        return f"`{cli} --help` lacks {missing}" if missing else None

    return check


@dataclass(frozen=True)
class Runs:
    """The command runs here, exits 0, and prints what the docs show (when they show output)."""

    timeout: float = 60.0


def locust_scenario(command: str) -> str | None:
    """The locustfile loads and offers the scenario; every option used is Locust's or ours."""
    code, out = help_text("locust -f loadtests/locustfile.py --list")
    if code != 0:
        return f"`locust --list` exited {code}:\n{out}"
    scenario = next(w for w in command.split() if w[:1].isupper())
    if scenario not in out:
        return f"the locustfile has no user class {scenario}"
    _, locust_help = help_text("locust --help")
    ours = (ROOT / "loadtests" / "locustfile.py").read_text()
    used = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", command))
    unknown = sorted(o for o in used if o not in locust_help and f'"{o}"' not in ours)
    return f"unknown options {unknown}" if unknown else None


def file_exists(relative: str) -> Check:
    def check(command: str) -> str | None:
        path = Path(sys.prefix) / relative
        return None if path.exists() else f"{path} does not exist"

    return check


def settings_table_prints(command: str) -> str | None:
    code, out = run_shell(command)
    if code != 0 or out.strip() != settings_table():
        return f"`{command}` exited {code} or did not print the settings table"
    return None


CHECKS: dict[str, Check | Runs] = {
    # the two commands, and the token for the admin endpoints
    "make serve": make_dry_run("bin/tabserve serve"),
    f"TABSERVE_ADMIN_TOKEN={ADMIN_TOKEN} make serve": make_dry_run("admin routes on"),
    "make serve ADMIN_TOKEN_FILE=admin-token": make_dry_run("--admin-token-file admin-token"),
    "make serve PORT=8001": make_dry_run("serve --port 8001"),
    "make test": make_dry_run("pytest"),
    "make install": make_dry_run("pip install"),
    "make lint": make_dry_run("ruff check"),
    "make typecheck": make_dry_run("mypy"),
    "make bench": make_dry_run("bin/tabserve bench"),
    "make loadtest": make_dry_run("tabserve loadtest sweep --quick"),
    "make loop": make_dry_run("tabserve loadtest loop"),
    "python -m loadtests.bench.profile --model xgb_small --concurrency 64 --seconds 5": (
        help_lists_options("python -m loadtests.bench.profile")
    ),
    "python -m loadtests.bench.profile --env TABSERVE_GC_YOUNG_THRESHOLD=700": help_lists_options(
        "python -m loadtests.bench.profile"
    ),
    "python -m loadtests.bench.tail_timeline --model xgb_small --concurrency 64 --rounds 5": (
        help_lists_options("python -m loadtests.bench.tail_timeline")
    ),
    "python -m loadtests.bench.profile --route floor-asgi": help_lists_options(
        "python -m loadtests.bench.profile"
    ),
    "python -m loadtests.bench.profile --model xgb_large --env TABSERVE_CACHE=true": (
        help_lists_options("python -m loadtests.bench.profile")
    ),
    "tabserve bench --suite serving --open-share 0.25 --tail-seconds 20": help_lists_options(
        "tabserve bench"
    ),
    "tabserve loadtest loop --model xgb_large --before-rows 40000": help_lists_options(
        "tabserve loadtest loop"
    ),
    "make -n serve PORT=8001 ADMIN_TOKEN_FILE=admin-token": make_dry_run(
        "serve --port 8001 --admin-token-file admin-token"
    ),
    "make stress": make_dry_run(
        "-m loadtests.stress.overload --repeat 3", "-m loadtests.stress.stall --cpus 0 --rounds 5"
    ),
    "make fuzz": make_dry_run("-m loadtests.stress.fuzz --max-time 120"),
    "make soak": make_dry_run("-m loadtests.stress.soak --minutes 30"),
    "source .venv/bin/activate": file_exists("bin/activate"),
    "tabserve --help": Runs(),
    "python -m server.settings": settings_table_prints,
    # the server and the model repository
    f"TABSERVE_ADMIN_TOKEN={ADMIN_TOKEN} tabserve serve": help_lists_options("tabserve serve"),
    "tabserve serve --workers 2 --redis-url redis://127.0.0.1:6379/0": help_lists_options(
        "tabserve serve"
    ),
    "tabserve serve --admin-token-file /run/secrets/tabserve-admin": help_lists_options(
        "tabserve serve"
    ),
    "tabserve export build": help_lists_options("tabserve export build"),
    "tabserve export build --only xgb_small logreg": help_lists_options("tabserve export build"),
    "tabserve export list": help_lists_options("tabserve export list"),
    "tabserve export build --ladder": help_lists_options("tabserve export build"),
    "tabserve export list --variants": help_lists_options("tabserve export list"),
    "tabserve export convert --model my_pipeline.joblib --holdout rows.csv "
    "--label-column is_fraud --name my_model": help_lists_options("tabserve export convert"),
    "tabserve export convert --model booster.json --holdout rows.csv "
    "--label-column y --name my_xgb": help_lists_options("tabserve export convert"),
    "python -m export.example_default --out /tmp/default": help_lists_options(
        "python -m export.example_default"
    ),
    "tabserve export convert --model /tmp/default/default.joblib --holdout "
    "/tmp/default/default.csv --label default --name default": help_lists_options(
        "tabserve export convert"
    ),
    # measurement: minutes of load on both cores
    "tabserve bench": help_lists_options("tabserve bench"),
    "tabserve bench --suite serving --seconds 4 --repeat 3 --json serving.json": (
        help_lists_options("tabserve bench")
    ),
    "tabserve bench --suite cache --models xgb_large --repeat 3": help_lists_options(
        "tabserve bench"
    ),
    "python -m loadtests.bench.cache_costs --features 24": help_lists_options(
        "python -m loadtests.bench.cache_costs"
    ),
    "tabserve loadtest sweep --quick": help_lists_options("tabserve loadtest sweep"),
    'tabserve loadtest sweep --quick --budget "p99<=5ms@500rps"': help_lists_options(
        "tabserve loadtest sweep"
    ),
    "tabserve loadtest sweep --full": help_lists_options("tabserve loadtest sweep"),
    "tabserve loadtest sweep --dry-run": help_lists_options("tabserve loadtest sweep"),
    # run end to end (bounded) by tests/loadtests/test_e2e_overload.py
    "tabserve loadtest sweep --quick --groups capacity,overload": help_lists_options(
        "tabserve loadtest sweep"
    ),
    'tabserve loadtest report loadtests/runs/RUN --budget "p99<=2ms@1000rps"': (
        help_lists_options("tabserve loadtest report")
    ),
    "locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --headless "
    "-u 16 -r 16 -t 30s \\\n    SteadyOneRow --model xgb_small --models-dir models "
    "--scores-out accuracy.json": locust_scenario,
    "python -m loadtests.bench.monitor_snapshots --model xgb_small --rows 3000": (
        help_lists_options("python -m loadtests.bench.monitor_snapshots")
    ),
    # stress scripts: minutes each, and the whole machine
    "python -m loadtests.stress.overload --repeat 3": help_lists_options(
        "python -m loadtests.stress.overload"
    ),
    "python -m loadtests.stress.stall --cpus 0 --rounds 5": help_lists_options(
        "python -m loadtests.stress.stall"
    ),
    "python -m loadtests.stress.fuzz --examples 20 --seed 1 --quiet": help_lists_options(
        "python -m loadtests.stress.fuzz"
    ),
    "python -m loadtests.stress.soak --minutes 30": help_lists_options(
        "python -m loadtests.stress.soak"
    ),
    # this test's own update mode
    "python -m tests.test_docs --help": help_lists_options("python -m tests.test_docs"),
}
"""Every command the docs show that does not call the doc server, and how it is checked."""


# ---- running a page ---------------------------------------------------------------------------


@dataclass
class Outcome:
    example: Example
    actual: str | None  # what a run printed (None: checked without comparing output)
    problem: str | None


def run_examples(examples: list[Example], port: int | None) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for ex in examples:
        if ex.calls_server and ex.command not in CHECKS:
            assert port is not None
            code, out = run_shell(ex.command, port)
            problem = None if code == 0 else f"exited {code}"
            if normalise(out) != normalise(ex.expected):
                problem = "output differs"
            outcomes.append(Outcome(ex, out, problem))
            continue
        check = CHECKS.get(ex.command)
        if check is None:
            outcomes.append(Outcome(ex, None, "no check: add the command to CHECKS"))
        elif isinstance(check, Runs):
            code, out = run_shell(ex.command, timeout=check.timeout)
            problem = None if code == 0 else f"exited {code}"
            if ex.expected.strip() and normalise(out) != normalise(ex.expected):
                problem = "output differs"
            outcomes.append(Outcome(ex, out if ex.expected.strip() else None, problem))
        else:
            outcomes.append(Outcome(ex, None, check(ex.command)))
    return outcomes


def build_doc_models(dest: Path) -> Path:
    """The bundled :data:`DOC_MODELS` and the bring-your-own example ``default`` (a scikit-learn
    pipeline over a string column with Yes/No labels), made by the real CLI as the docs show
    (seconds each, more on a busy machine)."""
    where = shlex.quote(str(dest))
    example = shlex.quote(str(dest.parent / "default-example"))
    for command in (
        f"tabserve export build --only {' '.join(DOC_MODELS)} --n-jobs 1 --models-dir {where}",
        f"{BIN}/python -m export.example_default --out {example}",
        f"tabserve export convert --model {example}/default.joblib --holdout "
        f"{example}/default.csv --label default --name default --models-dir {where}",
    ):
        code, out = run_shell(command, timeout=300)
        if code != 0:
            raise RuntimeError(f"building the docs' models failed:\n$ {command}\n{out}")
    return dest


def doc_server(models_dir: Path) -> ServerProcess:
    return ServerProcess(models_dir, env={"TABSERVE_ADMIN_TOKEN": ADMIN_TOKEN})


def report(outcomes: list[Outcome]) -> str:
    parts = []
    for o in outcomes:
        if o.problem is None:
            continue
        text = f"{o.example.where}: {o.problem}\n  $ {o.example.command}"
        if o.actual is not None:
            text += f"\n  shown:\n{_indent(o.example.expected)}\n  printed:\n{_indent(o.actual)}"
        parts.append(text)
    if any(o.problem == "output differs" for o in outcomes):
        parts.append("if the new outputs are right: .venv/bin/python -m tests.test_docs --update")
    return "\n\n".join(parts)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.strip("\n").splitlines())


# ---- the tests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def doc_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_doc_models(tmp_path_factory.mktemp("doc-models"))


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_of_the_page_runs(page: Path, doc_models: Path) -> None:
    examples, problems = parse(page)
    assert not problems, "\n".join(problems)
    if any(ex.calls_server and ex.command not in CHECKS for ex in examples):
        with doc_server(doc_models) as server:
            outcomes = run_examples(examples, server.port)
    else:
        outcomes = run_examples(examples, None)
    failed = report(outcomes)
    assert not failed, failed


def test_every_check_is_used() -> None:
    shown = {ex.command for page in doc_files() for ex in parse(page)[0]}
    unused = sorted(set(CHECKS) - shown)
    assert not unused, f"CHECKS names commands no page shows any more: {unused}"


SETTINGS_PAGE = ROOT / "docs" / "configuration.md"
SETTINGS_BEGIN, SETTINGS_END = "<!-- settings:begin -->\n", "<!-- settings:end -->"


def settings_span(page: str) -> tuple[int, int]:
    return page.index(SETTINGS_BEGIN) + len(SETTINGS_BEGIN), page.index(SETTINGS_END)


def test_settings_table_is_current() -> None:
    page = SETTINGS_PAGE.read_text()
    start, end = settings_span(page)
    assert page[start:end].strip() == settings_table(), (
        "the settings changed: python -m tests.test_docs --update docs/configuration.md"
    )


def test_readme_two_commands_and_ci() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "$ make serve" in readme and "$ make test" in readme
    assert "\nmake test\n" in (ROOT / ".ci" / "run").read_text()


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; reference belongs in docs/"


def test_links_between_pages_resolve() -> None:
    broken = []
    for page in doc_files():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


# ---- python -m tests.test_docs --update -------------------------------------------------------


def update(pages: list[Path]) -> int:
    """Rewrite the shown output of every compared command from a real run."""
    if SETTINGS_PAGE in pages:
        text = SETTINGS_PAGE.read_text()
        start, end = settings_span(text)
        SETTINGS_PAGE.write_text(text[:start] + settings_table() + "\n" + text[end:])
    with tempfile.TemporaryDirectory() as tmp:
        models = build_doc_models(Path(tmp))
        for page in pages:
            examples, problems = parse(page)
            for problem in problems:
                print(problem, file=sys.stderr)
            if any(ex.calls_server for ex in examples):
                with doc_server(models) as server:
                    outcomes = run_examples(examples, server.port)
            else:
                outcomes = run_examples(examples, None)
            lines = page.read_text().splitlines()
            changed = 0
            for o in reversed(outcomes):
                if o.actual is None:
                    continue
                if normalise(o.actual) != normalise(o.example.expected):
                    start, end = o.example.output_lines
                    lines[start:end] = o.actual.strip("\n").splitlines()
                    changed += 1
            if changed:
                page.write_text("\n".join(lines) + "\n")
            print(f"{page.relative_to(ROOT)}: {changed} outputs rewritten")
            report_text = report([o for o in outcomes if o.actual is None])
            if report_text:
                print(report_text, file=sys.stderr)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    usage = (
        "usage: python -m tests.test_docs --update [PAGE.md ...]\n\n"
        "--update  rewrite the shown output of every compared command in README.md and\n"
        "          docs/*.md (or the pages named) from a real run; review with git diff"
    )
    if args in (["--help"], ["-h"]):
        print(usage)
        sys.exit(0)
    if not args or args[0] != "--update":
        sys.exit(usage)
    chosen = [ROOT / a for a in args[1:]] or doc_files()
    if shutil.which("bash") is None:
        sys.exit("bash is needed")
    sys.exit(update(chosen))
