"""``rllm run``: complete a prompt, streaming, then print llama.cpp-style timings."""

from __future__ import annotations

import argparse
import sys

from ..model import Model
from .common import (
    add_context,
    add_gpu_compat,
    add_model,
    add_n_predict,
    add_prompt,
    add_rope,
    add_sampling,
    gpu_notes,
    note,
    read_prompt,
    rope_settings,
    sampling_kwargs,
)

HELP = "generate text from a prompt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_prompt(p)
    add_n_predict(p, default=128)
    add_context(p)
    add_rope(p)
    add_sampling(p)
    p.add_argument("--no-display-prompt", action="store_true", help="don't echo the prompt")
    p.add_argument("--no-timings", action="store_true", help="don't print timings")
    add_gpu_compat(p)


def main(args: argparse.Namespace) -> int:
    prompt = read_prompt(args) or ""
    for message in gpu_notes(args):
        note(message)
    rope_freq_base, rope_freq_scale = rope_settings(args)
    model = Model(
        args.model,
        n_ctx=args.ctx_size or None,
        n_threads=args.threads if args.threads and args.threads > 0 else None,
        rope_freq_base=rope_freq_base,
        rope_freq_scale=rope_freq_scale,
        use_mmap=args.use_mmap,
    )
    if args.ctx_size == 0:
        model.n_ctx = model._model.n_ctx_train
    if not args.no_display_prompt:
        sys.stdout.write(prompt)
        sys.stdout.flush()
    n_predict = args.n_predict
    pieces = model.generate(
        prompt,
        max_tokens=None if n_predict < 0 else n_predict,
        stream=True,
        **sampling_kwargs(args),
    )
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if not args.no_timings:
        print("\n" + model.timings.report(), file=sys.stderr)
    return 0
