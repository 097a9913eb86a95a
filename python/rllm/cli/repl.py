"""``rllm repl`` (also ``python -m rllm.repl``): llama-cli's interactive and conversation
modes, with its options."""

from __future__ import annotations

import argparse

from ..chat import BUILTIN_TEMPLATES
from .common import (
    add_context,
    add_gpu_compat,
    add_model,
    add_n_predict,
    add_prompt,
    add_rope,
    add_sampling,
)

HELP = "interactive text completion and chat, with llama-cli's options"
DESCRIPTION = """\
Complete a prompt, talk with a model, or chat with it through its chat template, as llama.cpp's
llama-cli does, with the same options.

Without -p/-f/-i/-if/-r/--in-prefix/--in-suffix it starts a chat (-cnv) using the model's chat
template; with them it completes text, and -i/-if hand control to you in between."""
EPILOG = """\
interaction:
  Ctrl-C stops the generation and returns to the prompt; a second Ctrl-C in a row, Ctrl-D
  or /quit exits. End a line with '\\' to continue on the next one; end it with '/' to return
  control without a newline; an empty line lets the model continue (completion mode).
  Commands: /help /reset /save FILE /load FILE /timings /system TEXT /quit ('//' starts a
  line with a literal '/').

examples:
  rllm repl -m model.gguf -sys "You are a helpful assistant"
  rllm repl -m model.gguf -n 256 -co -i -r "User:" -f prompts/chat-with-bob.txt
  rllm repl -m model.gguf -p "Once upon a time" -n 128"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and context")
    add_model(g)
    add_context(g)
    add_rope(g)
    g.add_argument(
        "--keep",
        type=int,
        default=None,
        metavar="N",
        help="tokens of the initial prompt kept when the context fills up; -1 = all "
        "(default: 0 when completing, the system prompt when chatting)",
    )
    g.add_argument(
        "--no-context-shift",
        dest="context_shift",
        action="store_false",
        help="stop generating when the context is full, instead of dropping old tokens",
    )

    g = p.add_argument_group("prompt")
    add_prompt(g)
    g.add_argument(
        "-sys",
        "--system-prompt",
        default=None,
        metavar="PROMPT",
        help="system prompt (conversation mode)",
    )
    add_n_predict(g, default=-1)
    g.add_argument(
        "-e",
        "--escape",
        dest="escape",
        action="store_true",
        default=True,
        help="process escapes (\\n, \\r, \\t, \\', \\\", \\\\, \\xHH) in the prompt, "
        "--in-prefix/--in-suffix, reverse prompts and input (default)",
    )
    g.add_argument("--no-escape", dest="escape", action="store_false", help="take them literally")

    g = p.add_argument_group("interaction")
    g.add_argument(
        "-i", "--interactive", action="store_true", help="hand control to the user in between"
    )
    g.add_argument(
        "-if",
        "--interactive-first",
        action="store_true",
        help="interactive, waiting for input before generating",
    )
    g.add_argument(
        "-cnv",
        "--conversation",
        dest="conversation",
        action="store_const",
        const=True,
        default=None,
        help="chat using the model's chat template (implies -if, or -i with a prompt)",
    )
    g.add_argument(
        "-no-cnv",
        "--no-conversation",
        dest="conversation",
        action="store_const",
        const=False,
        help="complete text, never chat",
    )
    g.add_argument(
        "-r",
        "--reverse-prompt",
        action="append",
        default=[],
        metavar="PROMPT",
        help="stop generating at PROMPT and return control (repeatable)",
    )
    g.add_argument("--in-prefix", default="", metavar="STRING", help="text before each input")
    g.add_argument("--in-suffix", default="", metavar="STRING", help="text after each input")
    g.add_argument(
        "--in-prefix-bos", action="store_true", help="a BOS token before each input's prefix"
    )
    g.add_argument(
        "-mli",
        "--multiline-input",
        action="store_true",
        help="input continues over lines until one ends with '\\' or '/'",
    )
    g.add_argument(
        "--chat-template",
        default=None,
        metavar="NAME|JINJA",
        help=f"chat template: a built-in name ({', '.join(BUILTIN_TEMPLATES)}) or Jinja "
        "source (default: the model's, else one guessed from its vocabulary)",
    )
    g.add_argument(
        "--chat-template-file",
        default=None,
        metavar="FNAME",
        help="read the Jinja chat template from a file",
    )

    g = p.add_argument_group("sampling")
    add_sampling(g)

    g = p.add_argument_group("display")
    g.add_argument(
        "-co",
        "--color",
        nargs="?",
        const="auto",
        default="auto",
        choices=["on", "off", "auto"],
        metavar="on|off|auto",
        help="colors for prompt, input and generation: auto = when stdout is a terminal and "
        "NO_COLOR is unset (default: auto)",
    )
    g.add_argument(
        "--display-prompt",
        dest="display_prompt",
        action="store_true",
        default=True,
        help="print the prompt before generating (default)",
    )
    g.add_argument("--no-display-prompt", dest="display_prompt", action="store_false", help="don't")
    g.add_argument(
        "--verbose-prompt",
        action="store_true",
        help="print the tokens of the prompt and of each input",
    )
    g.add_argument("--no-timings", action="store_true", help="don't print timings at exit")

    g = p.add_argument_group("llama.cpp compatibility (no effect)")
    add_gpu_compat(g)


def main(args: argparse.Namespace) -> int:
    from ..repl import run_from_args

    return run_from_args(args)
