"""What llama.cpp prints while it loads a model (metadata summary, tensor types, buffer
sizes), through Python's ``logging``: the ``rllm`` logger, at INFO.

rllm is quiet by default. ``rllm.Model(path, verbose=True)`` shows these lines on stderr;
``logging.getLogger("rllm").setLevel(logging.INFO)`` with a handler of your own (or
``logging.basicConfig(level=logging.INFO)``) routes them wherever your logs go.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from . import _rllm

__all__ = ["FILE_TYPES", "logger", "log_context", "log_model"]

logger = logging.getLogger("rllm")

#: ``general.file_type`` (llama.cpp's ``llama_ftype``) -> quantization name.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}

MIB = float(1 << 20)


def _has_handler(log: logging.Logger) -> bool:
    """Whether a record of ``log`` reaches a handler that is not a NullHandler."""
    current: logging.Logger | None = log
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


@contextlib.contextmanager
def _shown(verbose: bool) -> Iterator[bool]:
    """Yields whether INFO records of the ``rllm`` logger go anywhere; with ``verbose`` they
    go to stderr when nothing else shows them."""
    if not verbose or (logger.isEnabledFor(logging.INFO) and _has_handler(logger)):
        yield logger.isEnabledFor(logging.INFO)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield True
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _value(v: Any, width: int = 60) -> tuple[str, str]:
    """(type, shown value) of a metadata value, long strings and arrays shortened."""
    if isinstance(v, list):
        kind = type(v[0]).__name__ if v else "?"
        head = ", ".join(_value(x, 24)[1] for x in v[:5])
        return f"arr[{kind},{len(v)}]", f"[{head}{', ...' if len(v) > 5 else ''}]"
    if isinstance(v, str):
        text = v.replace("\n", "\\n")
        if len(text) > width:
            text = text[: width - 3] + "..."
        return "str", f'"{text}"'
    return type(v).__name__, repr(v)


def model_lines(model: _rllm.Model) -> list[str]:
    """The load report of ``model``, in llama.cpp's order and wording where it has one."""
    meta = model.metadata()
    tensors = model.tensors()
    p = "model_loader: "
    lines = [
        f"{p}loaded meta data with {len(meta)} key-value pairs and {len(tensors)} tensors "
        f"from {model.path} (version GGUF V{model.gguf_version})",
        f"{p}Dumping metadata keys/values. Note: KV overrides do not apply in this output.",
    ]
    for i, (key, v) in enumerate(meta.items()):
        kind, shown = _value(v)
        lines.append(f"{p}- kv {i:3d}: {key:>42} {kind:<14} = {shown}")
    for ty, n in sorted(Counter(t[1] for t in tensors).items()):
        lines.append(f"{p}- type {ty.lower():>6}: {n:4d} tensors")
    n_files = meta.get("split.count", 1)
    size = model.size
    bpw = 8.0 * size / model.n_params if model.n_params else 0.0
    ftype = meta.get("general.file_type")
    info = {
        "file format": f"GGUF V{model.gguf_version}",
        "file type": FILE_TYPES.get(ftype, f"unknown ({ftype})") if ftype is not None else "?",
        "file size": f"{size / MIB:.2f} MiB ({bpw:.2f} BPW)",
        "arch": model.arch,
        "name": meta.get("general.name", "?"),
        "n_ctx_train": model.n_ctx_train,
        "n_embd": model.n_embd,
        "n_layer": model.n_layer,
        "n_head": model.n_head,
        "n_head_kv": model.n_head_kv,
        "n_vocab": model.n_vocab,
        "model params": f"{model.n_params / 1e6:.2f} M",
    }
    if n_files != 1:
        info["split files"] = n_files
    width = max(len(k) for k in info)
    lines += [f"print_info: {k:<{width}} = {v}" for k, v in info.items()]
    # llama.cpp's names: CPU_Mapped for a map of the file, CPU for a copy (--no-mmap)
    buffer = "CPU_Mapped" if model.mapped else "CPU"
    lines.append(f"load_tensors: {buffer} model buffer size = {size / MIB:10.2f} MiB")
    lines.append(
        f"load_tensors: {model.bytes_per_token / MIB:.2f} MiB of weights read per generated token"
    )
    isas = _rllm.available_isas()
    lines.append(f"system_info: kernels = {_rllm.active_isa()} (this CPU: {', '.join(isas)})")
    return lines


def context_lines(ctx: _rllm.Context) -> list[str]:
    return [
        f"llama_context: n_ctx = {ctx.n_ctx}, n_threads = {ctx.n_threads}",
        f"llama_kv_cache: CPU KV buffer size = {ctx.kv_bytes / MIB:8.2f} MiB",
    ]


def _emit(lines: Iterable[str]) -> None:
    for line in lines:
        logger.info("%s", line)


def log_model(model: _rllm.Model, verbose: bool = False) -> None:
    """Log ``model``'s load report at INFO; ``verbose`` shows it on stderr."""
    with _shown(verbose) as shown:
        if shown:
            _emit(model_lines(model))


def log_context(ctx: _rllm.Context, verbose: bool = False) -> None:
    """Log a new context's size and KV cache at INFO; ``verbose`` shows it on stderr."""
    with _shown(verbose) as shown:
        if shown:
            _emit(context_lines(ctx))
