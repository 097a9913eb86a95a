"""Embedding throughput, rllm beside llama.cpp's llama-embedding: sentences per second for a
batch of short texts on the same GGUF file, thread count, context and pooling.

    python benches/embed_speed.py -m MODEL.gguf --llama-embedding PATH/llama-embedding \\
        -t 2 -n 256 -r 3 --pooling mean

rllm's time is ``Model.embed`` on the whole list (tokenizing, forward passes, pooling,
normalization), after a warm-up call; llama.cpp's is the wall time of llama-embedding over
all texts less its wall time over one (start-up and model load left out).
Repetitions alternate the two; medians are printed with the ratio rllm / llama.cpp.
llama-embedding comes from a llama.cpp build and is never a dependency of rllm.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import rllm
from rllm.bench import system_info

TOPICS = "cats rust rivers music bread chess rain trains tea maps clocks bees".split()


def texts(n: int) -> list[str]:
    """``n`` short, distinct sentences (8 to 14 tokens)."""
    return [
        f"Sentence {i} is a short note about {TOPICS[i % len(TOPICS)]} and "
        f"{TOPICS[(i * 7 + 3) % len(TOPICS)]}."
        for i in range(n)
    ]


def run_llama(
    binary: str, model: str, prompts: list[str], t: int, n_ctx: int, pooling: str
) -> float:
    """Wall seconds of one llama-embedding process over ``prompts``."""
    cmd = [binary, "-m", model, "-t", str(t), "-c", str(n_ctx), "--pooling", pooling]
    cmd += ["-p", "\n".join(prompts), "--embd-output-format", "array"]
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - start


def llama_rate(
    binary: str, model: str, prompts: list[str], t: int, n_ctx: int, pooling: str
) -> float:
    """llama-embedding's sentences/s: the run over all prompts less a run over one, so that
    its start-up and model load are left out (it reports no timings of its own)."""
    full = run_llama(binary, model, prompts, t, n_ctx, pooling)
    one = run_llama(binary, model, prompts[:1], t, n_ctx, pooling)
    return (len(prompts) - 1) / max(full - one, 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--llama-embedding", required=True, help="path of llama-embedding")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-n", "--n-texts", type=int, default=256)
    ap.add_argument("-c", "--ctx-size", type=int, default=4096)
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("--pooling", default="mean")
    args = ap.parse_args()

    prompts = texts(args.n_texts)
    model = rllm.Model(args.model, n_ctx=args.ctx_size, n_threads=args.threads)
    n_tokens = sum(len(model.tokenize(p, special=True)) for p in prompts)
    model.embed(prompts[:8], pooling=args.pooling)  # warm-up
    ours, theirs = [], []
    for _ in range(args.reps):
        start = time.perf_counter()
        model.embed(prompts, pooling=args.pooling)
        ours.append(len(prompts) / (time.perf_counter() - start))
        theirs.append(
            llama_rate(
                args.llama_embedding, args.model, prompts, args.threads, args.ctx_size, args.pooling
            )
        )
    a, b = statistics.median(ours), statistics.median(theirs)
    print(system_info())
    print(
        f"model: {args.model}; {len(prompts)} texts, {n_tokens} tokens; "
        f"{args.threads} threads; pooling {args.pooling}; median of {args.reps}"
    )
    print(f"rllm       {a:9.1f} sentences/s  (runs: {', '.join(f'{x:.1f}' for x in ours)})")
    print(f"llama.cpp  {b:9.1f} sentences/s  (runs: {', '.join(f'{x:.1f}' for x in theirs)})")
    print(f"ratio rllm / llama.cpp: {a / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
