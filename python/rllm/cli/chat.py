"""``rllm chat``: the REPL in conversation mode (``rllm repl -cnv``)."""

from __future__ import annotations

import argparse

from . import repl

HELP = "chat with a model through its chat template (= repl -cnv)"
DESCRIPTION = """\
Chat with a model: each input is a user message, rendered with the model's chat template
(or --chat-template), and the model answers. The options are those of 'rllm repl'."""
EPILOG = repl.EPILOG


def add_arguments(p: argparse.ArgumentParser) -> None:
    repl.add_arguments(p)
    p.set_defaults(conversation=True)


main = repl.main
