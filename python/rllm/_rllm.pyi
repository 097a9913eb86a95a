"""Type stubs of the Rust extension ``rllm._rllm`` (bindings only; see rllm.Model for the
friendly API). Checked against the built module by ``python -m mypy.stubtest rllm._rllm``."""

from collections.abc import Callable, Iterator, Mapping, Sequence
from os import PathLike
from typing import Any, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "__version__",
    "Model",
    "GGUFFile",
    "memory_bandwidth",
    "profile_ops",
    "take_op_times",
    "spm_merges",
    "Context",
    "Embedder",
    "BatchEngine",
    "TokenStream",
    "Scheduler",
    "Grammar",
    "Chunk",
    "TokenLogprob",
    "Sampler",
    "Detokenizer",
    "dequantize",
    "quantize",
    "quantize_activation",
    "vec_dot",
    "available_isas",
    "active_isa",
    "quantize_model",
    "quantize_presets",
    "gguf_header",
]

__version__: str

_Path = str | PathLike[str]
# (name, ggml type, shape in ggml order, n_bytes, offset in the data section)
_TensorRow = tuple[str, str, list[int], int, int]

@final
class GGUFFile:
    """A GGUF file's header, validated but not bound to an architecture (``rllm info``)."""

    def __new__(cls, path: _Path) -> GGUFFile: ...
    @property
    def version(self) -> int: ...
    @property
    def alignment(self) -> int: ...
    @property
    def data_offset(self) -> int: ...
    def metadata(self) -> dict[str, Any]:
        """Metadata key -> value (arrays become lists)."""
    def tensors(self) -> list[_TensorRow]:
        """``(name, type, shape, n_bytes, offset)`` of each tensor; shapes in ggml order."""

@final
class Model:
    """A GGUF model held in memory and validated: the file mapped (``use_mmap=True``) or
    copied into huge-page-backed memory (``False``); ``None`` copies where huge pages exist
    and the file takes at most half the free memory. The first file of a split model
    (``NAME-00001-of-0000N.gguf``) loads all of them."""

    def __new__(cls, path: _Path, use_mmap: bool | None = None) -> Model: ...
    @property
    def mapped(self) -> bool: ...
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
    def n_params(self) -> int:
        """Number of weights."""
    @property
    def size(self) -> int:
        """Bytes of tensor data."""
    @property
    def bytes_per_token(self) -> int:
        """Bytes of weights one decoded token reads (decode speed <= bandwidth / this)."""
    @property
    def default_n_ctx(self) -> int:
        """Context length used when none is given: the model's, capped at 4096."""
    @property
    def gguf_version(self) -> int: ...
    @property
    def can_generate(self) -> bool:
        """Whether the model has an output head: false for encoders (bert), which only embed."""
    def metadata(self) -> dict[str, Any]:
        """The GGUF metadata as a dict (arrays become lists)."""
    def tensors(self) -> list[_TensorRow]:
        """``(name, type, shape, n_bytes, offset)`` of every tensor, in file order."""

def spm_merges(texts: list[str]) -> list[tuple[str, str]]:
    """Every split ``(left, right)`` of each text into two texts of ``texts``, in the order of
    ``texts`` and then of the split point (the BPE merges that reproduce SentencePiece)."""

def memory_bandwidth(n_threads: int, mib: int = 512, reps: int = 3) -> float:
    """Read-only memory bandwidth in GB/s with ``n_threads`` threads (best of ``reps`` passes
    over ``mib`` MiB)."""

def profile_ops(on: bool) -> None:
    """Start (``True``) or stop timing the forward pass's ops, process-wide."""

def take_op_times() -> dict[str, float]:
    """Seconds spent per kind of op since the last call (which resets them): ``forward``
    (whole passes), ``matmul`` (including ``quantize``), ``quantize`` and ``attention``."""

@final
class Embedder:
    """A model's embedding runner: forward passes of whole inputs, pooled and normalized."""

    def __new__(
        cls, model: Model, n_ctx: int | None = None, n_threads: int | None = None
    ) -> Embedder: ...
    @property
    def n_ctx(self) -> int:
        """Tokens one input may have."""
    @property
    def n_threads(self) -> int: ...
    @property
    def pooling(self) -> str:
        """The model's pooling (``<arch>.pooling_type``), or ``"none"`` when it names none."""
    def dim(self, pooling: str | None = None) -> int:
        """Length of the vectors ``pooling`` gives (default: the model's pooling)."""
    def embed(
        self, inputs: list[list[int]], pooling: str | None = None, normalize: int = 2
    ) -> tuple[npt.NDArray[np.float32], list[int], int]:
        """Embed lists of token ids: ``(vectors [n, dim], rows per input, tokens evaluated)``."""

@final
class Context:
    """One conversation's KV cache, position and scratch buffers."""

    def __new__(
        cls,
        model: Model,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int | None = None,
        rope_freq_base: float | None = None,
        rope_freq_scale: float | None = None,
    ) -> Context: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def n_past(self) -> int: ...
    @property
    def n_threads(self) -> int: ...
    @property
    def tokens(self) -> list[int]: ...
    @property
    def kv_bytes(self) -> int:
        """Bytes of the KV cache."""
    def eval(self, tokens: Sequence[int], all_logits: bool = False) -> npt.NDArray[np.float32]:
        """Logits of the last token ``[n_vocab]``, or of every token ``[n, n_vocab]``."""
    def last_logits(self) -> npt.NDArray[np.float32] | None: ...
    def reset(self) -> None: ...
    def truncate(self, n: int) -> None: ...
    def shift(self, n_keep: int, n_discard: int) -> None:
        """Drop cached tokens ``[n_keep, n_keep + n_discard)``; later ones slide down."""
    def save_state(self) -> bytes: ...
    def load_state(self, data: bytes) -> None: ...
    def generate(
        self,
        sampler: Sampler,
        max_tokens: int | None = None,
        stop: Sequence[str] = ...,
        logit_bias: dict[int, float] | None = None,
        ignore_eos: bool = False,
        logprobs: int | None = None,
        n_keep: int | None = None,
        stop_ids: Sequence[int] = ...,
        skip_special: bool = False,
        grammar: Grammar | None = None,
    ) -> TokenStream:
        """Chunks of a generation after the evaluated prompt, one per token: sampling,
        detokenizing and stops in Rust; ``n_keep`` turns on context shift."""

@final
class BatchEngine:
    """Several sequences (slots), each with its own KV cache, evaluated together."""

    def __new__(
        cls,
        model: Model,
        n_slots: int,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int | None = None,
        rope_freq_base: float | None = None,
        rope_freq_scale: float | None = None,
    ) -> BatchEngine: ...
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
        self, work: Sequence[tuple[int, Sequence[int]] | tuple[int, Sequence[int], int, int]]
    ) -> list[npt.NDArray[np.float32]]:
        """Items ``(slot, tokens)`` or ``(slot, tokens, start, end)``; logits ``[rows, n_vocab]``
        of the last token, or of ``tokens[start:end]``, per item."""

@final
class TokenLogprob:
    """A chosen token, its log-probability, and the most likely tokens at its position."""

    @property
    def token(self) -> int: ...
    @property
    def logprob(self) -> float: ...
    @property
    def top(self) -> list[tuple[int, float]]: ...

@final
class Chunk:
    """What one token step produced; the last chunk of a generation has ``finish_reason``."""

    def __new__(
        cls,
        text: str = ...,
        tokens: Sequence[int] = ...,
        finish_reason: str | None = None,
        error: str | None = None,
    ) -> Chunk: ...
    @property
    def text(self) -> str: ...
    @property
    def tokens(self) -> list[int]: ...
    @property
    def logprobs(self) -> list[TokenLogprob]: ...
    @property
    def finish_reason(self) -> str | None:
        """``"stop"``, ``"length"``, ``"context_full"``, ``"cancelled"`` or ``"error"``."""
    @property
    def stop(self) -> str | None:
        """The stop string that ended the generation."""
    @property
    def error(self) -> str | None: ...

@final
class TokenStream(Iterator[Chunk]):
    """The chunks of a running generation (made by ``Context.generate``)."""

    def __iter__(self) -> TokenStream: ...
    def __next__(self) -> Chunk: ...
    @property
    def finish_reason(self) -> str | None:
        """``"stop"``, ``"length"`` or ``"context_full"`` once ended."""
    @property
    def n_generated(self) -> int: ...
    @property
    def n_sampled(self) -> int: ...
    @property
    def last_token(self) -> int | None: ...
    @property
    def n_discarded(self) -> int: ...

@final
class Scheduler:
    """Continuous batching with the whole token loop in Rust; any thread may submit."""

    def __new__(
        cls,
        model: Model,
        n_slots: int,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int | None = None,
        rope_freq_base: float | None = None,
        rope_freq_scale: float | None = None,
    ) -> Scheduler: ...
    @property
    def n_slots(self) -> int: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def n_batch(self) -> int: ...
    @property
    def n_queued(self) -> int: ...
    @property
    def n_running(self) -> int: ...
    def cached_tokens(self, slot: int) -> list[int]: ...
    def submit(
        self,
        prompt: Sequence[int],
        sampler: Sampler,
        max_tokens: int | None = None,
        stop: Sequence[str] = ...,
        logit_bias: dict[int, float] | None = None,
        ignore_eos: bool = False,
        logprobs: int | None = None,
        grammar: Grammar | None = None,
    ) -> int: ...
    def check_params(
        self,
        max_tokens: int | None = None,
        stop: Sequence[str] = ...,
        logit_bias: dict[int, float] | None = None,
        ignore_eos: bool = False,
        logprobs: int | None = None,
    ) -> None: ...
    def cancel(self, id: int) -> None: ...
    def wake(self) -> None: ...
    def step(self, wait: float = 0.0) -> tuple[list[tuple[int, int]], list[tuple[int, Chunk]]]:
        """``(admitted [(id, cached prompt tokens)], chunks [(id, Chunk)])``."""

@final
class Grammar:
    """The language a completion must be in: a JSON schema, regex, Lark or GBNF grammar,
    checked when made (ValueError naming the problem)."""

    @staticmethod
    def from_json_schema(schema: str | Mapping[str, Any] | type) -> Grammar: ...
    @staticmethod
    def json_object() -> Grammar: ...
    @staticmethod
    def from_regex(pattern: str) -> Grammar: ...
    @staticmethod
    def from_lark(grammar: str) -> Grammar: ...
    @staticmethod
    def from_gbnf(grammar: str) -> Grammar: ...
    @property
    def kind(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def lark(self) -> str | None: ...
    def matches(self, text: str) -> bool: ...

@final
class Sampler:
    """Penalties -> top-k -> typical -> top-p -> min-p -> temperature -> draw; temperature 0
    is greedy."""

    def __new__(
        cls,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int | None = None,
        typical_p: float = 1.0,
    ) -> Sampler: ...
    @property
    def temperature(self) -> float: ...
    @property
    def seed(self) -> int | None: ...
    def sample(self, logits: npt.NDArray[np.float32], history: Sequence[int] = ...) -> int: ...

@final
class Detokenizer:
    """Token ids -> text as llama.cpp's llama_detokenize, incrementally: ``push`` returns only
    complete UTF-8 text, and the pieces (with ``flush``'s) concatenate to ``decode(ids)``.
    The same detokenizer the token loop uses."""

    def __new__(cls, model: Model, skip_special: bool = False) -> Detokenizer: ...
    @staticmethod
    def from_metadata(meta: dict[str, Any], skip_special: bool = False) -> Detokenizer:
        """From GGUF metadata as a dict (as ``Tokenizer.from_metadata``)."""
    @property
    def n_vocab(self) -> int: ...
    @property
    def skip_special(self) -> bool: ...
    def push(self, id: int) -> str:
        """The text ``id`` completes (maybe empty); an out-of-range id raises ValueError."""
    def flush(self) -> str:
        """The text still held back; the detokenizer starts over afterwards."""
    def decode(self, ids: Sequence[int]) -> str:
        """The whole text of ``ids``; does not touch the incremental state."""

def dequantize(data: bytes, type: str, n: int) -> npt.NDArray[np.float32]:
    """Dequantize ``n`` elements of ggml type ``type`` (e.g. ``"Q4_K"``)."""

def quantize(
    x: npt.NDArray[np.float32], type: str, imatrix: npt.NDArray[np.float32] | None = None
) -> bytes:
    """Quantize float32 rows (the last axis) to ggml type ``type``, as llama-quantize does;
    ``imatrix`` holds one importance weight per column."""

def quantize_activation(x: npt.NDArray[np.float32], weight_type: str, isa: str) -> bytes:
    """Quantize activations the way the dot product for ``weight_type`` expects them."""

def vec_dot(weight_type: str, w: bytes, x: npt.NDArray[np.float32], isa: str) -> float:
    """Dot product of one weight row with activations ``x``, on kernel tier ``isa``."""

def available_isas() -> list[str]:
    """The kernel tiers this CPU can run, ``"scalar"`` first."""

def active_isa() -> str:
    """The tier the model code runs on (detected once; ``RLLM_ISA`` forces one)."""

def quantize_model(
    input: _Path,
    output: _Path,
    ftype: str,
    *,
    allow_requantize: bool = False,
    pure: bool = False,
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
    leave_output_tensor: bool = False,
    imatrix: _Path | None = None,
    n_threads: int | None = None,
    progress: Callable[[int, int, dict[str, Any]], object] | None = None,
) -> dict[str, Any]:
    """Quantize the GGUF file ``input`` into ``output`` with llama-quantize's preset ``ftype``
    (or ``"COPY"``); ``progress(done, total, tensor)`` is called after each tensor. Returns
    the summary dict (tensors, sizes, file type)."""

def quantize_presets() -> list[str]:
    """The preset names ``quantize_model`` accepts, then ``"COPY"``."""

def gguf_header(
    kv: Sequence[tuple[str, str, Any]], tensors: Sequence[tuple[str, str, Sequence[int]]]
) -> tuple[bytes, list[int], int]:
    """The header bytes of a GGUF v3 file holding ``kv`` (``(key, type, value)``, types such
    as ``"u32"``, ``"str"``, ``"[f32]"``) and ``tensors`` (``(name, ggml type, shape in ggml
    order)``), padded to the alignment; with each tensor's data offset from the end of the
    header, and the alignment."""
