"""Type stubs of the Rust extension ``rllm._rllm`` (bindings only; see rllm.Model for the
friendly API)."""

from collections.abc import Iterator
from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

_Path = str | PathLike[str]

class GGUFFile:
    """A GGUF file's header, validated but not bound to an architecture."""

    def __init__(self, path: _Path) -> None: ...
    @property
    def version(self) -> int: ...
    @property
    def alignment(self) -> int: ...
    @property
    def data_offset(self) -> int: ...
    def metadata(self) -> dict[str, Any]:
        """Metadata key -> value (arrays become lists)."""
    def tensors(self) -> list[tuple[str, str, list[int], int, int]]:
        """``(name, type, shape, n_bytes, offset)`` of each tensor; shapes in ggml order."""

class Model:
    """A GGUF model mapped into memory and validated; weights stay in the file's map."""

    def __init__(self, path: _Path) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def arch(self) -> str: ...
    @property
    def n_vocab(self) -> int: ...
    @property
    def n_ctx_train(self) -> int: ...
    @property
    def n_embd(self) -> int: ...
    @property
    def n_layer(self) -> int: ...
    @property
    def n_head(self) -> int: ...
    @property
    def n_head_kv(self) -> int: ...
    @property
    def n_params(self) -> int: ...
    @property
    def size(self) -> int:
        """Bytes of tensor data."""
    @property
    def default_n_ctx(self) -> int: ...
    @property
    def gguf_version(self) -> int: ...
    def metadata(self) -> dict[str, Any]: ...
    def tensors(self) -> list[tuple[str, str, list[int], int, int]]: ...

class Context:
    """One conversation's KV cache, position and scratch buffers."""

    def __init__(
        self,
        model: Model,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int | None = None,
        rope_freq_base: float | None = None,
        rope_freq_scale: float | None = None,
    ) -> None: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def n_past(self) -> int: ...
    @property
    def n_threads(self) -> int: ...
    @property
    def tokens(self) -> list[int]: ...
    @property
    def kv_bytes(self) -> int: ...
    def eval(self, tokens: list[int], all_logits: bool = False) -> npt.NDArray[np.float32]:
        """Logits of the last token ``[n_vocab]``, or of every token ``[n, n_vocab]``."""
    def last_logits(self) -> npt.NDArray[np.float32] | None: ...
    def reset(self) -> None: ...
    def truncate(self, n: int) -> None: ...
    def shift(self, n_keep: int, n_discard: int) -> None:
        """Drop cached tokens ``[n_keep, n_keep + n_discard)``; later ones slide down."""
    def save_state(self) -> bytes: ...
    def load_state(self, data: bytes) -> None: ...
    def generate(
        self, sampler: Sampler, max_tokens: int | None = None, stop_ids: list[int] = ...
    ) -> TokenStream: ...

class BatchEngine:
    """Several sequences (slots), each with its own KV cache, evaluated together."""

    def __init__(
        self,
        model: Model,
        n_slots: int,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int | None = None,
    ) -> None: ...
    @property
    def n_slots(self) -> int: ...
    @property
    def n_ctx(self) -> int:
        """Tokens each slot holds at most."""
    @property
    def n_batch(self) -> int: ...
    def tokens(self, slot: int) -> list[int]: ...
    def truncate(self, slot: int, n: int) -> None: ...
    def step(
        self, work: list[tuple[int, list[int]] | tuple[int, list[int], int, int]]
    ) -> list[npt.NDArray[np.float32]]:
        """Items ``(slot, tokens)`` or ``(slot, tokens, start, end)``; logits ``[rows, n_vocab]``
        of the last token, or of ``tokens[start:end]``, per item."""

class TokenStream(Iterator[int]):
    """Token ids of a running generation."""

    def __iter__(self) -> TokenStream: ...
    def __next__(self) -> int: ...
    @property
    def finish_reason(self) -> str | None:
        """``"stop"``, ``"length"`` or ``"context_full"`` once ended."""
    @property
    def n_generated(self) -> int: ...

class Sampler:
    """Penalties -> top-k -> top-p -> min-p -> temperature -> draw; temperature 0 is greedy."""

    def __init__(
        self,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int | None = None,
    ) -> None: ...
    @property
    def temperature(self) -> float: ...
    @property
    def seed(self) -> int | None: ...
    def sample(self, logits: npt.NDArray[np.float32], history: list[int] = ...) -> int: ...

def dequantize(data: bytes, type: str, n: int) -> npt.NDArray[np.float32]:
    """Dequantize ``n`` elements of ggml type ``type`` (e.g. ``"Q4_K"``)."""

def quantize_activation(x: npt.NDArray[np.float32], weight_type: str, isa: str) -> bytes:
    """Quantize activations the way the dot product for ``weight_type`` expects them."""

def vec_dot(weight_type: str, w: bytes, x: npt.NDArray[np.float32], isa: str) -> float:
    """Dot product of one weight row with activations ``x``, on kernel tier ``isa``."""

def available_isas() -> list[str]: ...
def active_isa() -> str: ...
