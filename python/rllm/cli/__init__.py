"""The ``rllm`` command line: one entry point, one module per subcommand.

Each subcommand is a module of this package with ``HELP`` (one line), ``add_arguments(parser)``
and ``main(args) -> int``; adding one is adding its name to ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from .. import __version__
from .common import Parser, UsageError, resolve_hf

SUBCOMMANDS = (
    "run",
    "repl",
    "chat",
    "info",
    "bench",
    "quantize",
    "convert",
    "serve",
    "perplexity",
    "pull",
    "list",
)


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def _describe(module: ModuleType) -> dict[str, Any]:
    return {
        "description": getattr(module, "DESCRIPTION", module.HELP),
        "epilog": getattr(module, "EPILOG", None),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def build_parser() -> Parser:
    parser = Parser(
        prog="rllm",
        description="Run GGUF language models on the CPU.",
        epilog="Run 'rllm COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"rllm {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    for name in SUBCOMMANDS:
        module = _module(name)
        p = sub.add_parser(name, help=module.HELP, **_describe(module))
        module.add_arguments(p)
        p.set_defaults(_run=module.main, _parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``rllm COMMAND ...``"""
    return _dispatch(build_parser(), argv)


def run_subcommand(name: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """One subcommand as a program of its own (``python -m rllm.repl`` is ``rllm repl``)."""
    module = _module(name)
    parser = Parser(prog=prog or f"rllm {name}", **_describe(module))
    parser.add_argument("--version", action="version", version=f"rllm {__version__}")
    module.add_arguments(parser)
    parser.set_defaults(_run=module.main, _parser=parser)
    return _dispatch(parser, argv)


def _dispatch(parser: Parser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        resolve_hf(args)
        return args._run(args) or 0
    except UsageError as e:
        command: Parser = args._parser
        command.error(str(e))  # exits with 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        # Our own errors (GGUFError, ContextFullError, ...) are ValueErrors: one line, no trace.
        print(f"rllm: error: {e}", file=sys.stderr)
        return 1
