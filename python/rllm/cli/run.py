"""``rllm run``: complete a prompt, streaming, then print llama.cpp-style timings."""

from __future__ import annotations

import argparse
import sys

from ..model import Model
from .common import add_context, add_model, add_sampling

HELP = "generate text from a prompt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument("-p", "--prompt", default="", help="prompt text")
    p.add_argument("-f", "--file", default=None, help="read the prompt from a file")
    p.add_argument(
        "-n",
        "--n-predict",
        type=int,
        default=128,
        metavar="N",
        help="tokens to generate; -1 = until end of text or context full (128)",
    )
    add_context(p)
    add_sampling(p)
    p.add_argument("--no-display-prompt", action="store_true", help="don't echo the prompt")
    p.add_argument("--no-timings", action="store_true", help="don't print timings")


def main(args: argparse.Namespace) -> int:
    prompt = args.prompt
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            prompt = f.read()
    model = Model(args.model, n_ctx=args.ctx_size, n_threads=args.threads)
    if not args.no_display_prompt:
        sys.stdout.write(prompt)
        sys.stdout.flush()
    pieces = model.generate(
        prompt,
        max_tokens=args.n_predict,
        temperature=args.temp,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        seed=args.seed,
        stream=True,
    )
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if not args.no_timings:
        print("\n" + model.timings.report(), file=sys.stderr)
    return 0
