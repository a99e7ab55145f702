"""``tabserve``: one command, subcommands imported only when used.

The server's own subcommands never import scikit-learn or XGBoost; ``export`` does, and only
when it is the subcommand asked for.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with ``main(argv: list[str]) -> int``, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("server.serve", "run the inference server (uvicorn, uvloop, httptools)"),
    "bench": ("loadtests.bench.cli", "benchmark the serving path on loopback, pinned cores"),
    "export": (
        "export.cli",
        "train, evaluate, convert to ONNX and publish models (build, list, convert)",
    ),
    "loadtest": ("loadtests.cli", "Locust sweeps and the accuracy-versus-speed report"),
    "retrain": (
        "export.retrain_cli",
        "retrain a bundled model on its labelled prediction log; publish it if better",
    ),
}


def usage() -> str:
    lines = ["usage: tabserve <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run 'tabserve <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"tabserve: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(command[0])
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
