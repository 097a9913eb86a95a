"""``rllm quantize``: llama-quantize's command, same presets, same per-tensor choices and the
same output bytes."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from ..quantize import PRESETS, QUANTIZABLE_TYPES, quantize_model
from .common import UsageError, int_at_least

HELP = "quantize a GGUF model (llama-quantize presets)"
DESCRIPTION = """Quantize a GGUF model to one of llama-quantize's presets, with the same per-tensor
type mixture and fallbacks, so the output equals llama-quantize's byte for byte.
The output is written to a temporary file and renamed when complete."""
EPILOG = "presets: " + ", ".join(PRESETS)

MIB = 1024.0 * 1024.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN.gguf", help="model to quantize")
    p.add_argument("output", metavar="OUT.gguf", help="file to write")
    p.add_argument("type", metavar="TYPE", help="preset, e.g. Q4_K_M, Q8_0, IQ4_XS, COPY")
    p.add_argument(
        "nthreads",
        nargs="?",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help="threads (as llama-quantize's trailing argument)",
    )
    p.add_argument(
        "--allow-requantize",
        action="store_true",
        help="allow requantizing tensors that are already quantized (lowers quality)",
    )
    p.add_argument(
        "--leave-output-tensor",
        action="store_true",
        help="leave output.weight unquantized",
    )
    p.add_argument(
        "--pure",
        action="store_true",
        help="every tensor gets the preset's base type (no k-quant mixture)",
    )
    p.add_argument("--output-tensor-type", metavar="T", help="type of output.weight")
    p.add_argument("--token-embedding-type", metavar="T", help="type of token_embd.weight")
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix (llama.cpp imatrix GGUF)")
    p.add_argument(
        "-t",
        "--threads",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help="threads (default: all cores)",
    )


def _check_type(value: str | None, flag: str) -> str | None:
    if value is None:
        return None
    name = value.upper()
    if name not in QUANTIZABLE_TYPES:
        raise UsageError(
            f"{flag}: unknown or unsupported type {value!r} "
            f"(expected one of {', '.join(QUANTIZABLE_TYPES)})"
        )
    return name


def _shape(dims: list[int]) -> str:
    return "[" + ", ".join(f"{d:5d}" for d in dims) + "]"


class Progress:
    """One line per tensor, and on a terminal a bar under them that redraws in place."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int, t: dict[str, Any]) -> None:
        if self.tty:
            self.out.write("\r\033[K")
        old, new = t["old_type"], t["new_type"]
        size = f"{t['old_bytes'] / MIB:8.2f} MiB"
        if old != new:
            size += f" -> {t['new_bytes'] / MIB:8.2f} MiB"
        note = f" (fallback from {t['fallback_from']})" if t["fallback_from"] else ""
        self.out.write(
            f"[{done:4d}/{total:4d}] {t['name']:<36} {_shape(t['shape']):<22} "
            f"{old:>7} -> {new:<7} {size}{note}\n"
        )
        if self.tty:
            width = 30
            fill = done * width // max(total, 1)
            elapsed = time.monotonic() - self.t0
            self.out.write(f"[{'#' * fill}{'.' * (width - fill)}] {done}/{total} {elapsed:.1f}s")
            if done == total:
                self.out.write("\r\033[K")
        self.out.flush()


def main(args: argparse.Namespace) -> int:
    ftype = args.type.upper()
    if ftype not in PRESETS:
        raise UsageError(f"unknown quantization type {args.type!r} (expected one of {EPILOG[9:]})")
    out_type = _check_type(args.output_tensor_type, "--output-tensor-type")
    embd_type = _check_type(args.token_embedding_type, "--token-embedding-type")
    threads = args.threads or args.nthreads
    err = sys.stderr
    err.write(f"rllm quantize: '{args.input}' -> '{args.output}' as {ftype}")
    err.write(f" using {threads} threads\n" if threads else "\n")
    t0 = time.monotonic()
    summary = quantize_model(
        args.input,
        args.output,
        ftype,
        allow_requantize=args.allow_requantize,
        pure=args.pure,
        output_tensor_type=out_type,
        token_embedding_type=embd_type,
        leave_output_tensor=args.leave_output_tensor,
        imatrix=args.imatrix,
        n_threads=threads,
        progress=Progress(err),
    )
    n = max(summary["n_elements"], 1)
    old, new = summary["old_bytes"], summary["new_bytes"]
    err.write(f"model size  = {old / MIB:8.2f} MiB ({old * 8.0 / n:.2f} BPW)\n")
    err.write(f"quant size  = {new / MIB:8.2f} MiB ({new * 8.0 / n:.2f} BPW)\n")
    if summary["n_fallback"]:
        err.write(
            f"warning: {summary['n_fallback']} of {len(summary['tensors'])} tensor(s) "
            "required fallback quantization\n"
        )
    err.write(f"quantize time = {(time.monotonic() - t0) * 1000:.2f} ms\n")
    return 0
