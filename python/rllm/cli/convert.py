"""``rllm convert``: a Hugging Face checkpoint to GGUF, like llama.cpp's convert_hf_to_gguf.py
for the architectures rllm runs (llama, qwen2, phi3, gemma3), without torch."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..convert import SUPPORTED_ARCHITECTURES, convert

HELP = "convert a Hugging Face checkpoint to GGUF"
DESCRIPTION = """Convert a Hugging Face model folder (config.json, *.safetensors, tokenizer
files) to GGUF with the metadata, tensor names and tokenizer data llama.cpp's converter writes.
Supported: """ + ", ".join(sorted(SUPPORTED_ARCHITECTURES))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="HF_DIR", help="folder with config.json and *.safetensors")
    p.add_argument(
        "--outfile",
        metavar="OUT.gguf",
        help="file to write (default: HF_DIR/<name>-<outtype>.gguf)",
    )
    p.add_argument(
        "--outtype",
        choices=["f32", "f16", "bf16", "q8_0", "auto"],
        default="auto",
        help="tensor type: auto keeps the checkpoint's 16-bit type (default: auto)",
    )
    p.add_argument("--model-name", metavar="NAME", help="general.name (default: the folder name)")
    p.add_argument(
        "--pre-tokenizer",
        metavar="NAME",
        help="llama.cpp BPE pre-tokenizer name, when the tokenizer's fingerprint is unknown",
    )


def main(args: argparse.Namespace) -> int:
    src = Path(args.model)
    out = Path(args.outfile) if args.outfile else src / f"{src.resolve().name}-{args.outtype}.gguf"
    err = sys.stderr
    t0 = time.monotonic()

    def progress(i: int, n: int, name: str, ty: str, dims: list[int]) -> None:
        shape = ", ".join(str(d) for d in dims)
        err.write(f"[{i:4d}/{n:4d}] {name:<36} {ty:<5} {{{shape}}}\n")

    info = convert(
        src,
        out,
        args.outtype,
        pre_tokenizer=args.pre_tokenizer,
        model_name=args.model_name,
        progress=progress,
    )
    err.write(
        f"wrote {out}: {info['arch']}, {info['n_tensors']} tensors, {info['n_params']} params, "
        f"{info['outtype']} in {time.monotonic() - t0:.1f}s\n"
    )
    return 0
