"""The ``rllm`` command line: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from . import info, run

SUBCOMMANDS = {"run": run, "info": info}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rllm", description="Run GGUF language models on the CPU."
    )
    parser.add_argument("--version", action="version", version=f"rllm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args._run(args) or 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        # Our own errors (GGUFError, ContextFullError, ...) are ValueErrors: one line, no trace.
        print(f"rllm: error: {e}", file=sys.stderr)
        return 1
