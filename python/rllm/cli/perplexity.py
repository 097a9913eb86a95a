"""``rllm perplexity``: llama-perplexity's measurement of a model over a text, and its
KL-divergence comparison of two models (e.g. a quantization against its original)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from ..hub import resolve_model
from ..model import Model
from ..perplexity import (
    KLDivergenceResult,
    PerplexityResult,
    Progress,
    kl_divergence,
    perplexity,
    read_text,
)
from .common import UsageError, add_gpu_compat, add_model, gpu_notes, int_at_least, note

HELP = "perplexity of a model over a text file, or KL-divergence to a reference (llama-perplexity)"
DESCRIPTION = """Perplexity over a text file, by llama-perplexity's method and with its numbers:
the text is cut into chunks of -c tokens, each evaluated from scratch, and the second half of
each chunk is scored. -b / -c chunks share each forward pass.

KL-divergence: run the reference model with --kl-divergence-base FILE to save its
log-probabilities (llama-perplexity's file format: 16-bit log-probabilities of the whole
vocabulary, about 2 x n_vocab bytes per scored token), then run the other model with
--kl-divergence --kl-divergence-base FILE (no -f: the tokens come from the file)."""
EPILOG = """examples:
  rllm perplexity -m model.gguf -f wiki.test.raw
  rllm perplexity -m model-f16.gguf -f wiki.test.raw --kl-divergence-base base.kld
  rllm perplexity -m model-q4_k_m.gguf --kl-divergence --kl-divergence-base base.kld"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument("-f", "--file", metavar="FNAME", help="text file to measure over")
    p.add_argument(
        "-c",
        "--ctx-size",
        type=int_at_least(0),
        default=512,
        metavar="N",
        help="tokens per chunk (512)",
    )
    p.add_argument(
        "-b",
        "--batch-size",
        type=int_at_least(1),
        default=2048,
        metavar="N",
        help="tokens per forward pass; -b / -c chunks share each pass (2048)",
    )
    p.add_argument(
        "--chunks",
        type=int_at_least(-1),
        default=-1,
        metavar="N",
        help="chunks to evaluate at most; -1 = all (-1)",
    )
    p.add_argument(
        "-t",
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="threads to use; -1 = all cores (default: all cores)",
    )
    p.add_argument(
        "--ppl-stride",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="strided perplexity: windows of c + N/2 tokens (rounded up to a multiple of 256), "
        "N apart, scoring the last N; 0 = off (0)",
    )
    p.add_argument(
        "--kl-divergence-base",
        "--save-all-logits",
        metavar="FNAME",
        help="file of the reference run's log-probabilities: written by a perplexity run, "
        "read with --kl-divergence",
    )
    p.add_argument(
        "--kl-divergence",
        action="store_true",
        help="compare the model with the log-probabilities in --kl-divergence-base",
    )
    add_gpu_compat(p)


def _eta(seconds: float) -> str:
    total = int(seconds)
    hours = f"{total // 3600} hours " if total >= 3600 else ""
    return f"{hours}{total % 3600 / 60.0:.2f} minutes"


def _info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(tag: str, what: str) -> Callable[[Progress], None]:
    """The callback that prints llama-perplexity's progress lines."""

    def show(p: Progress) -> None:
        if p.done == 0:
            _info(
                f"{tag}: {what} over {p.n_chunks} chunks, n_ctx={p.n_ctx}, "
                f"batch_size={p.n_batch}, n_seq={p.n_seq}"
            )
            return
        if p.done == 1:  # the whole first batch has run
            _info(f"{tag}: {p.pass_seconds:.2f} seconds per pass - ETA {_eta(p.eta_seconds)}")
            if isinstance(p.result, KLDivergenceResult):
                print(f"\n{KLDivergenceResult.TABLE_HEADER}", flush=True)
        if isinstance(p.result, PerplexityResult):
            print(f"[{p.done}]{p.result.estimates[-1]:.4f},", end="", flush=True)
        elif isinstance(p.result, KLDivergenceResult):
            print(p.result.table_row(), flush=True)

    return show


def main(args: argparse.Namespace) -> int:
    if args.ctx_size == 0:
        raise UsageError("perplexity needs --ctx-size > 0")
    if args.kl_divergence and not args.kl_divergence_base:
        raise UsageError("--kl-divergence needs --kl-divergence-base FNAME (the reference run)")
    if args.kl_divergence_base and args.ppl_stride:
        raise UsageError("--kl-divergence-base cannot be combined with --ppl-stride")
    if args.ppl_stride > args.ctx_size:
        raise UsageError(f"--ppl-stride must be at most --ctx-size ({args.ctx_size})")
    if not args.kl_divergence and args.file is None:
        raise UsageError("give the text to measure over with -f FNAME")
    for message in gpu_notes(args):
        note(message)
    n_threads = args.threads if args.threads and args.threads > 0 else None
    n_chunks = args.chunks if args.chunks > 0 else None
    if args.chunks == 0:
        raise UsageError("--chunks must be -1 (all) or at least 1")

    text = None
    if not args.kl_divergence:
        text = read_text(args.file)  # before loading the model: a bad file fails fast
    elif args.file is not None:
        note("-f is ignored with --kl-divergence: the tokens come from the base file")
    model = Model(resolve_model(args.model), n_threads=n_threads)
    if args.ctx_size > model._model.n_ctx_train:
        note(
            f"the model was trained on only {model._model.n_ctx_train} context tokens "
            f"({args.ctx_size} specified)"
        )

    if args.kl_divergence:
        kld = kl_divergence(
            model,
            args.kl_divergence_base,
            n_batch=args.batch_size,
            n_chunks=n_chunks,
            n_threads=n_threads,
            progress=_progress("kl_divergence", "computing"),
        )
        print()
        if kld.count >= 100:  # too few values for statistics, as llama-perplexity says
            print(kld.report())
        _info(f"kl_divergence: total time = {kld.seconds:.2f} s over {kld.n_chunks} chunks")
        return 0

    assert text is not None
    _info("perplexity: tokenizing the input ..")
    start = time.perf_counter()
    ids = model.tokenizer.encode(text, add_special=True, parse_special=False)
    _info(f"perplexity: tokenization took {1000 * (time.perf_counter() - start):.3f} ms")
    if args.kl_divergence_base:
        _info(f"perplexity: saving all logits to {args.kl_divergence_base}")
    show = _progress("perplexity", "calculating perplexity")
    window = [args.ctx_size]

    def track(p: Progress) -> None:
        window[0] = p.n_ctx  # the strided window can be longer than -c
        show(p)

    result = perplexity(
        model,
        ids,
        args.ctx_size,
        n_batch=args.batch_size,
        n_chunks=n_chunks,
        n_threads=n_threads,
        ppl_stride=args.ppl_stride,
        kl_divergence_base=args.kl_divergence_base,
        progress=track,
    )
    print()
    print(f"Final estimate: PPL = {result.ppl:.4f} +/- {result.ppl_error:.5f}")
    n_eval = result.n_chunks * window[0]
    _info(
        f"perplexity: total time = {result.seconds:.2f} s / {n_eval} tokens "
        f"({n_eval / result.seconds:.2f} tokens per second)"
    )
    return 0
