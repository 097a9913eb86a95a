"""``rllm bench``: prompt-processing and generation speed, like llama-bench."""

from __future__ import annotations

import argparse
import json
import sys

from ..bench import bench, system_info
from ..hub import resolve_model
from .common import UsageError, add_hf, int_at_least

HELP = "measure prompt and generation speed (llama-bench style)"
# The columns of --profile's table, in order.
SHARES = ("matmul", "quantize", "attention", "other")


def int_list(low: int):
    one = int_at_least(low)

    def parse(text: str) -> list[int]:
        try:
            return [one(part) for part in text.split(",")]
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None

    parse.__name__ = "comma-separated integers"
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-m",
        "--model",
        action="append",
        default=[],
        help="GGUF file or known model name (repeat for several)",
    )
    add_hf(p, append=True)
    p.add_argument(
        "-p",
        "--n-prompt",
        type=int_list(0),
        default=[512],
        metavar="N[,N]",
        help="prompt lengths for ppN tests; 0 skips (512)",
    )
    p.add_argument(
        "-n",
        "--n-gen",
        type=int_list(0),
        default=[128],
        metavar="N[,N]",
        help="generation lengths for tgN tests; 0 skips (128)",
    )
    p.add_argument(
        "-t",
        "--threads",
        type=int_list(1),
        default=None,
        metavar="N[,N]",
        help="thread counts (default: all cores)",
    )
    p.add_argument(
        "-r",
        "--repetitions",
        type=int_at_least(1),
        default=5,
        metavar="N",
        help="repetitions of each test (5)",
    )
    p.add_argument("--no-roofline", action="store_true", help="skip measuring memory bandwidth")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also time the forward pass's ops (matmul, attention, the rest) per test",
    )
    p.add_argument("--json", action="store_true", help="print results as JSON")


def main(args: argparse.Namespace) -> int:
    import os

    if not args.model:
        raise UsageError("give a model with -m or -hf")
    threads = args.threads or [os.cpu_count() or 1]
    results = []
    for model in args.model:
        results += bench(
            resolve_model(model),
            n_prompt=args.n_prompt,
            n_gen=args.n_gen,
            threads=threads,
            reps=args.repetitions,
            roofline=not args.no_roofline,
            profile=args.profile,
        )
    if args.json:
        json.dump([r.as_dict() for r in results], sys.stdout, indent=1)
        print()
        return 0
    print(system_info())
    print()
    print("| model | size | params | threads | test | t/s | roofline |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        if r.skipped:
            print(f"| {r.model} | | | {r.threads} | {r.test} | skipped: {r.skipped} | |")
            continue
        fraction = r.roofline_fraction
        frac = f"{100 * fraction:.0f}% of {r.roofline_tps:.0f}" if fraction is not None else ""
        print(
            f"| {r.model} | {r.size_bytes / 2**20:.2f} MiB | {r.n_params / 1e6:.2f} M "
            f"| {r.threads} | {r.test} | {r.tps:.2f} ± {r.tps_sd:.2f} | {frac} |"
        )
    profiled = [r for r in results if r.op_shares]
    if profiled:
        print()
        print(
            "| model | threads | test | forward ms/run | matmul | (quantize) | attention | other |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in profiled:
            assert r.op_shares is not None
            shares = " | ".join(f"{100 * r.op_shares[k]:.1f}%" for k in SHARES)
            print(f"| {r.model} | {r.threads} | {r.test} | {r.forward_ms:.1f} | {shares} |")
    seen = sorted({(r.threads, r.bandwidth_gbs) for r in results if r.bandwidth_gbs})
    for t, bw in seen:
        print(f"memory bandwidth, {t} thread(s): {bw:.1f} GB/s")
    return 0
