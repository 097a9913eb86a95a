"""``rllm info``: a GGUF file's metadata and tensor table, like gguf-dump."""

from __future__ import annotations

import argparse

from .. import _rllm
from ..hub import resolve_model
from .common import UsageError, add_hf

HELP = "print a GGUF file's metadata and tensors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="GGUF file or known model name")
    add_hf(p)
    p.add_argument(
        "--max-items",
        type=int,
        default=8,
        metavar="N",
        help="show at most N items of long arrays (8)",
    )
    p.add_argument("--no-tensors", action="store_true", help="metadata only")


def render(value: object, max_items: int) -> str:
    if isinstance(value, list):
        shown = ", ".join(render(v, max_items) for v in value[:max_items])
        more = f", ... ({len(value)} items)" if len(value) > max_items else ""
        return f"[{shown}{more}]"
    if isinstance(value, str):
        text = value if len(value) <= 120 else value[:117] + "..."
        return repr(text)
    return repr(value)


def main(args: argparse.Namespace) -> int:
    if args.model is None:
        raise UsageError("give a model: a GGUF file, a known model name, or -hf USER/MODEL")
    path = resolve_model(args.model)
    f = _rllm.GGUFFile(path)
    meta = f.metadata()
    tensors = f.tensors()
    print(f"* File: {path}")
    print(f"* GGUF version {f.version}, alignment {f.alignment}, data at offset {f.data_offset}")
    print(f"* {len(meta)} key/value pairs:")
    for i, (key, value) in enumerate(meta.items(), 1):
        print(f"  {i:5d}: {key} = {render(value, args.max_items)}")
    if args.no_tensors:
        return 0
    total = sum(t[3] for t in tensors)
    print(f"* {len(tensors)} tensors, {total / 2**20:.2f} MiB:")
    print(f"  {'#':>5}  {'name':<40} {'type':<8} {'shape':<24} {'bytes':>12}")
    for i, (name, ty, shape, n_bytes, _offset) in enumerate(tensors, 1):
        dims = " x ".join(str(d) for d in shape)
        print(f"  {i:5d}  {name:<40} {ty:<8} {dims:<24} {n_bytes:>12}")
    return 0
