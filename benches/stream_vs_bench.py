"""What the Python front end costs per token: ``Model.generate(stream=True)`` (sampling,
detokenizing and stop checks in Rust, one text piece handed to Python per token) against
``rllm bench``'s tg test (bare forward passes of one token) on the same model and threads.

    python benches/stream_vs_bench.py -m MODEL.gguf [-m ...] -t 2 -n 128 -r 5

Runs alternate (bench, stream, bench, stream, ...) so that drift hits both; prints medians
of tokens/s and the ratio stream / bench. Greedy decoding; the stream's rate counts the
tokens sampled after the prompt over the time from the first decode step to the last piece.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import rllm
from rllm.bench import bench, system_info

PROMPT = "Write a long story about a lighthouse keeper and the sea, in many chapters.\n\n"


def stream_tps(model: rllm.Model, n: int) -> float:
    for _ in model.generate(PROMPT, max_tokens=n, temperature=0, stream=True):
        pass
    t = model.timings
    if t.eval_tokens < n // 2:
        sys.exit(f"the model stopped after {t.eval_tokens} tokens; try another prompt")
    return t.eval_tokens / (t.eval_ms / 1000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-m", "--model", action="append", required=True, help="repeatable")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-n", type=int, default=128, help="generated tokens (128)")
    ap.add_argument("-r", type=int, default=5, help="repetitions (5)")
    args = ap.parse_args()
    print(system_info())
    print(f"| model | threads | rllm bench tg{args.n} t/s | generate(stream=True) t/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    for path in args.model:
        model = rllm.Model(path, n_threads=args.threads, n_ctx=args.n + 64)
        stream_tps(model, 8)  # warm-up
        bench_runs, stream_runs = [], []
        for _ in range(args.r):
            row = bench(
                path, n_prompt=(0,), n_gen=(args.n,), threads=(args.threads,), reps=1, roofline=False
            )[0]
            bench_runs.append(row.tps)
            stream_runs.append(stream_tps(model, args.n))
        b, s = statistics.median(bench_runs), statistics.median(stream_runs)
        name = path.rsplit("/", 1)[-1]
        print(f"| {name} | {args.threads} | {b:.1f} | {s:.1f} | {s / b:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
