"""Quantization from Python: arrays to ggml blocks and back, and whole GGUF files.

>>> import numpy as np, rllm
>>> x = np.linspace(-1, 1, 256, dtype=np.float32)
>>> blocks = rllm.quantize(x, "Q4_K")          # the bytes llama.cpp would write
>>> len(blocks)
144
>>> y = rllm.dequantize(blocks, "Q4_K", 256)
>>> float(np.abs(x - y).max()) < 0.01
True

The numerics run in Rust (``rllm._rllm``); this module checks arguments and shapes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from . import _rllm

__all__ = [
    "PRESETS",
    "QUANTIZABLE_TYPES",
    "dequantize",
    "quantize",
    "quantize_model",
]

PathLike = Union[str, "os.PathLike[str]"]

#: llama-quantize preset names that :func:`quantize_model` accepts, ``COPY`` last.
PRESETS: tuple[str, ...] = tuple(_rllm.quantize_presets())

#: ggml types :func:`quantize` can produce (the grid i-quants need an importance matrix and a
#: lattice search that rllm does not implement; rllm still reads and runs them).
QUANTIZABLE_TYPES: tuple[str, ...] = (
    "F32",
    "F16",
    "BF16",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q8_1",
    "Q8_K",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "IQ4_NL",
    "IQ4_XS",
    "TQ1_0",
    "TQ2_0",
)


def quantize(x: npt.ArrayLike, type: str, imatrix: npt.ArrayLike | None = None) -> bytes:
    """Quantize ``x`` to ggml type ``type`` (e.g. ``"Q4_K"``), bit-exact with llama-quantize.

    ``x`` is converted to float32; its last axis is the row (a 1-D array is one row) and must
    be a multiple of the type's block size (32 or 256). ``imatrix`` gives one importance weight
    per column, as llama.cpp's imatrix does; it changes the K, legacy 4/5-bit and IQ4 types.
    """
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim == 0:
        raise ValueError("quantize: x must have at least one dimension")
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
    return _rllm.quantize(arr, type, im)


def dequantize(data: bytes, type: str, n: int) -> npt.NDArray[np.float32]:
    """The ``n`` float32 values held by the raw ggml blocks ``data`` of type ``type``."""
    return _rllm.dequantize(bytes(data), type, int(n))


ProgressFn = Callable[[int, int, dict[str, Any]], None]


def quantize_model(
    input: PathLike,
    output: PathLike,
    type: str,
    *,
    allow_requantize: bool = False,
    pure: bool = False,
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
    leave_output_tensor: bool = False,
    imatrix: PathLike | None = None,
    n_threads: int | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Quantize the GGUF file ``input`` into ``output`` with llama-quantize's preset ``type``
    (``"Q4_K_M"``, ``"Q8_0"``, ..., or ``"COPY"``), choosing per-tensor types as it does; the
    result is byte-identical to llama-quantize's for the same input and options.

    ``progress(done, total, tensor)`` is called after each tensor (a dict with ``name``,
    ``shape``, ``old_type``, ``new_type``, ``old_bytes``, ``new_bytes``, ``fallback_from``).
    An exception it raises, or Ctrl-C, stops the work; ``output`` is written only once
    complete (through a temporary file beside it), so it never holds a partial file.

    Returns a summary dict: ``tensors`` (the per-tensor dicts), ``file_type``, ``n_elements``,
    ``old_bytes``, ``new_bytes``, ``n_fallback``.
    """
    return _rllm.quantize_model(
        os.fspath(input),
        os.fspath(output),
        type,
        allow_requantize=allow_requantize,
        pure=pure,
        output_tensor_type=output_tensor_type,
        token_embedding_type=token_embedding_type,
        leave_output_tensor=leave_output_tensor,
        imatrix=None if imatrix is None else os.fspath(imatrix),
        n_threads=n_threads,
        progress=progress,
    )
