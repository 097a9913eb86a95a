"""Convert a Hugging Face checkpoint to GGUF, as llama.cpp's ``convert_hf_to_gguf.py`` does for
the architectures rllm runs (llama, qwen2, phi3, gemma3): the same metadata keys, tensor names,
shapes, types and tokenizer data, without torch or transformers.

Reads ``config.json``, ``*.safetensors`` (single or sharded with ``model.safetensors.index.json``;
parsed directly, so bf16 needs no framework), ``tokenizer.json`` / ``tokenizer_config.json`` /
``tokenizer.model`` (SentencePiece protobuf, parsed directly). The numerics (f16/bf16/Q8_0
conversion) are numpy casts and rllm's own bit-exact quantizers; the GGUF header comes from
rllm's writer.

Known differences from the reference converter: ``general.*`` descriptive keys from model cards
(author, license, tags, finetune, ...) are not written, only ``general.name`` and
``general.size_label``; tokens that ``transformers`` would re-normalize are written as stored.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from . import _rllm
from .quantize import quantize

__all__ = ["ConvertError", "convert", "SUPPORTED_ARCHITECTURES"]

PathLike = Union[str, "os.PathLike[str]"]


class ConvertError(ValueError):
    """The checkpoint cannot be converted; the message says why."""


# Hugging Face `architectures[0]` -> GGUF architecture.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "LLaMAForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Phi3ForCausalLM": "phi3",
    "Gemma3ForCausalLM": "gemma3",
    "Gemma3ForConditionalGeneration": "gemma3",
}

# --- safetensors -------------------------------------------------------------------------------

_ST_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits: widened to f32 on use
    "F64": np.dtype("<f8"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
}


@dataclass
class _Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int
    nbytes: int

    def load(self) -> np.ndarray:
        """The tensor as float32 (bf16 widened exactly), or f16 kept as f16."""
        if self.dtype not in _ST_DTYPES:
            raise ConvertError(
                f"{self.path}: {self.name}: unsupported safetensors dtype {self.dtype}"
            )
        dt = _ST_DTYPES[self.dtype]
        count = int(np.prod(self.shape)) if self.shape else 1
        if count == 0:
            return np.zeros(self.shape, np.float16 if self.dtype == "F16" else np.float32)
        raw = np.memmap(self.path, dtype=dt, mode="r", offset=self.offset, shape=(count,))
        if self.dtype == "BF16":
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
        elif self.dtype in ("F32", "F16"):
            arr = np.array(raw)
        else:
            arr = raw.astype(np.float32)
        return arr.reshape(self.shape)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file holding an object; anything else is a ConvertError naming the file."""
    try:
        value = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConvertError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ConvertError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _read_safetensors(path: Path) -> list[_Tensor]:
    """The tensors of one safetensors file (an 8-byte header length, a JSON header, the data),
    each checked to lie inside the data with as many bytes as its dtype and shape need."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ConvertError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise ConvertError(f"{path}: safetensors header of {n} bytes exceeds the file")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConvertError(f"{path}: bad safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise ConvertError(f"{path}: bad safetensors header: not a JSON object")
    data_len = size - 8 - n
    out = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        out.append(_tensor_entry(path, name, meta, 8 + n, data_len))
    # ggml's converter orders each part by name, like the safetensors package.
    return sorted(out, key=lambda t: t.name)


def _tensor_entry(path: Path, name: str, meta: Any, data_start: int, data_len: int) -> _Tensor:
    def bad(why: str) -> ConvertError:
        return ConvertError(f"{path}: tensor {name}: {why}")

    if not isinstance(meta, dict):
        raise bad("header entry is not an object")
    dtype, shape, offsets = meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")
    if not isinstance(dtype, str):
        raise bad(f"dtype {dtype!r} is not a string")
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        raise bad(f"shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_uint, offsets))):
        raise bad(f"data_offsets {offsets!r} is not [start, end]")
    start, end = offsets
    if not start <= end <= data_len:
        raise bad(f"data [{start}, {end}) lies outside the file's {data_len} data bytes")
    if dtype in _ST_DTYPES:
        need = _ST_DTYPES[dtype].itemsize * int(np.prod(shape, dtype=object))
        if end - start != need:
            raise bad(f"{end - start} data bytes, but {dtype} of shape {shape} needs {need}")
    return _Tensor(name, dtype, tuple(shape), path, data_start + start, end - start)


def _index_tensors(hf_dir: Path) -> list[_Tensor]:
    index = hf_dir / "model.safetensors.index.json"
    weight_map: dict[str, Any] = {}
    if index.is_file():
        listed = _read_json(index).get("weight_map")
        if not isinstance(listed, dict):
            raise ConvertError(f"{index}: no 'weight_map'")
        weight_map = listed
        for part in weight_map.values():
            if not isinstance(part, str) or Path(part).name != part or part in ("", ".", ".."):
                raise ConvertError(f"{index}: shard {part!r} is not a file name in the folder")
        parts = sorted(set(weight_map.values()))
    else:
        parts = sorted(
            p.name
            for p in hf_dir.iterdir()
            if p.name.startswith("model") and p.suffix == ".safetensors"
        )
    if not parts:
        raise ConvertError(f"{hf_dir}: no model*.safetensors files (pytorch .bin is not supported)")
    tensors: list[_Tensor] = []
    for part in parts:
        path = hf_dir / part
        if not path.is_file():
            raise ConvertError(f"{hf_dir}: missing shard {part}")
        tensors.extend(_read_safetensors(path))
    if index.is_file():
        missing = set(weight_map) - {t.name for t in tensors}
        if missing:
            raise ConvertError(f"{hf_dir}: tensors missing from the shards: {sorted(missing)[:5]}")
    return tensors


# --- SentencePiece tokenizer.model -----------------------------------------------------------


class _Truncated(Exception):
    """A protobuf field runs past the end of its buffer."""


class _BadWire(Exception):
    """A protobuf field of a wire type SentencePiece models do not use."""


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _Truncated
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of a protobuf message: an int for a
    varint, the field's bytes otherwise. Raises _Truncated or _BadWire."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field_no, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield field_no, wire, value
            continue
        if wire == 2:
            n, i = _varint(buf, i)
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
        else:
            raise _BadWire(wire)
        if i + n > len(buf):
            raise _Truncated
        yield field_no, wire, buf[i : i + n]
        i += n


def _read_spm(path: Path) -> list[tuple[bytes, float, int]]:
    """(piece, score, type) of each piece of a SentencePiece ModelProto (field 1, repeated
    SentencePiece {1: piece, 2: score, 3: type})."""
    pieces = []
    try:
        for field_no, wire, value in _fields(path.read_bytes()):
            if field_no == 1 and wire == 2 and isinstance(value, bytes):
                pieces.append(_read_piece(value))
    except _Truncated:
        raise ConvertError(f"{path}: truncated SentencePiece model") from None
    except _BadWire as e:
        raise ConvertError(f"{path}: not a SentencePiece model (wire type {e})") from None
    if not pieces:
        raise ConvertError(f"{path}: no pieces in SentencePiece model")
    return pieces


def _read_piece(buf: bytes) -> tuple[bytes, float, int]:
    piece, score, typ = b"", 0.0, 1
    for field_no, wire, value in _fields(buf):
        if field_no == 1 and wire == 2 and isinstance(value, bytes):
            piece = value
        elif field_no == 2 and wire == 5 and isinstance(value, bytes):
            (score,) = struct.unpack("<f", value)
        elif field_no == 3 and isinstance(value, int):
            typ = value
    return piece, score, typ


# --- metadata ----------------------------------------------------------------------------------

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = (
    1, 2, 3, 4, 5, 6,
)  # fmt: skip


@dataclass
class _Writer:
    """Key-value pairs in insertion order with their GGUF types, and tensors to write."""

    arch: str
    kv: dict[str, tuple[str, Any]] = field(default_factory=dict)
    tensors: list[tuple[str, str, list[int], Callable[[], bytes]]] = field(default_factory=list)
    n_params: int = 0

    def add(self, key: str, ty: str, value: Any) -> None:
        # As gguf-py's writer: a repeated key keeps its place and takes the new value.
        self.kv[key] = (ty, value)

    def a(self, key: str, ty: str, value: Any) -> None:
        """An `{arch}.` key."""
        self.add(f"{self.arch}.{key}", ty, value)


def _looks_special(token: str) -> bool:
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def _size_label(n: int) -> str:
    """gguf-py's `model_weight_count_rounded_notation` with 2 digits."""
    if n > 1e12:
        scaled, suffix = n * 1e-12, "T"
    elif n > 1e9:
        scaled, suffix = n * 1e-9, "B"
    elif n > 1e6:
        scaled, suffix = n * 1e-6, "M"
    else:
        scaled, suffix = n * 1e-3, "K"
    fix = max(2 - len(str(round(scaled)).lstrip("0")), 0)
    return f"{scaled:.{fix}f}{suffix}"


# config.json keys the converter reads as numbers: positive integers, and positive reals.
_CONFIG_INTS = (
    "context_length dim feed_forward_length head_dim hidden_size intermediate_size "
    "max_position_embeddings n_embd n_head n_head_kv n_heads n_kv_heads n_layer n_layers "
    "n_positions num_attention_heads num_hidden_layers num_key_value_heads num_layers "
    "original_max_position_embeddings sliding_window sliding_window_pattern vocab_size"
).split()
_CONFIG_REALS = "final_logit_softcapping norm_eps rms_norm_eps rope_theta".split()


def _check_config_values(hp: dict[str, Any], path: Path) -> None:
    """Every value the converter computes with has the type it needs, so that a bad
    config.json is a ConvertError naming it rather than a TypeError deep in the conversion."""
    for key in _CONFIG_INTS + _CONFIG_REALS:
        value = hp.get(key)
        if value is None:
            continue
        ok = isinstance(value, int) and not isinstance(value, bool)
        if key in _CONFIG_REALS:
            ok = ok or isinstance(value, float) and math.isfinite(value)
        if not ok or value <= 0:
            kind = "a positive integer" if key in _CONFIG_INTS else "a positive number"
            raise ConvertError(f"{path}: {key} must be {kind}, got {value!r}")
    archs = hp.get("architectures")
    if archs is not None and not (
        isinstance(archs, list) and all(isinstance(a, str) for a in archs)
    ):
        raise ConvertError(f"{path}: architectures must be a list of names, got {archs!r}")
    for key in ("rope_parameters", "rope_scaling"):
        if hp.get(key) is not None and not isinstance(hp[key], dict):
            raise ConvertError(f"{path}: {key} must be an object, got {hp[key]!r}")


class _Converter:
    def __init__(self, hf_dir: Path, outtype: str, pre_tokenizer: str | None, name: str | None):
        self.dir = hf_dir
        cfg_path = hf_dir / "config.json"
        if not cfg_path.is_file():
            raise ConvertError(f"{hf_dir}: no config.json (is this a Hugging Face model folder?)")
        self.hp: dict[str, Any] = _read_json(cfg_path)
        if isinstance(self.hp.get("text_config"), dict):
            self.hp = {**self.hp, **self.hp["text_config"]}
        _check_config_values(self.hp, cfg_path)
        archs = self.hp.get("architectures") or []
        hf_arch = archs[0] if archs else ""
        if hf_arch not in SUPPORTED_ARCHITECTURES:
            raise ConvertError(
                f"{hf_dir}: architecture {hf_arch!r} is not supported "
                f"(supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))})"
            )
        self.arch = SUPPORTED_ARCHITECTURES[hf_arch]
        self.pre_tokenizer = pre_tokenizer
        self.name = name or hf_dir.resolve().name
        self.tensors = _index_tensors(hf_dir)
        self.n_layer = int(self._find("num_hidden_layers", "n_layers", "n_layer", "num_layers"))
        self.rope = self.hp.get("rope_parameters", self.hp.get("rope_scaling")) or {}
        if "rope_theta" not in self.rope and "rope_theta" in self.hp:
            self.rope = {**self.rope, "rope_theta": self.hp["rope_theta"]}
        if "rope_type" not in self.rope and "type" in self.rope:
            self.rope = {**self.rope, "rope_type": self.rope["type"]}
        for k in ("partial_rotary_factor", "original_max_position_embeddings"):
            if k not in self.rope and k in self.hp:
                self.rope = {**self.rope, k: self.hp[k]}
        self.outtype = self._resolve_outtype(outtype)
        self.w = _Writer(self.arch)

    def _find(self, *keys: str, optional: bool = False) -> Any:
        for k in keys:
            if k in self.hp:
                return self.hp[k]
        if optional:
            return None
        raise ConvertError(f"config.json has none of {', '.join(keys)}")

    def _resolve_outtype(self, outtype: str) -> str:
        outtype = outtype.lower()
        if outtype not in ("f32", "f16", "bf16", "q8_0", "auto"):
            raise ConvertError(f"unknown outtype {outtype!r} (expected f32, f16, bf16, q8_0, auto)")
        if outtype != "auto":
            return outtype
        for t in self.tensors:
            if len(t.shape) >= 2:
                return {"BF16": "bf16", "F16": "f16"}.get(t.dtype, "f16")
        return "f16"

    # -- tensors ------------------------------------------------------------------------------

    def _map_name(self, name: str) -> str | None:
        """GGUF name of a Hugging Face tensor, or None for tensors the converter drops (as
        `TextModel.filter_tensors`: multimodal towers and projectors)."""
        if name.endswith((".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")):
            return None
        if name.startswith(("mlp", "vit.", "vpm.", "siglip2.", "conformer.", "merger.")) or any(
            s in name
            for s in (
                "visual.", "vision.", "audio.", "vision_", "audio_", "projector.",
                "pre_mm_projector_norm", "image_newline", "patch_embed", "patch_merger.",
            )
        ):  # fmt: skip
            return None
        name = name.replace("language_model.", "")
        suffix = ""
        for s in (".weight", ".bias"):
            if name.endswith(s):
                name, suffix = name[: -len(s)], s
                break
        simple = {
            "model.embed_tokens": "token_embd",
            "model.norm": "output_norm",
            "lm_head": "output",
        }
        if name in simple:
            return simple[name] + suffix
        parts = name.split(".")
        if (
            len(parts) >= 4
            and parts[0] == "model"
            and parts[1] == "layers"
            and parts[2].isdecimal()
        ):
            rest = ".".join(parts[3:])
            per_layer = {
                "input_layernorm": "attn_norm",
                "self_attn.q_proj": "attn_q",
                "self_attn.k_proj": "attn_k",
                "self_attn.v_proj": "attn_v",
                "self_attn.o_proj": "attn_output",
                "self_attn.qkv_proj": "attn_qkv",
                "self_attn.q_norm": "attn_q_norm",
                "self_attn.k_norm": "attn_k_norm",
                "mlp.gate_proj": "ffn_gate",
                "mlp.up_proj": "ffn_up",
                "mlp.down_proj": "ffn_down",
                "mlp.gate_up_proj": "ffn_up",
            }
            if self.arch == "gemma3":
                per_layer |= {
                    "post_attention_layernorm": "post_attention_norm",
                    "pre_feedforward_layernorm": "ffn_norm",
                    "post_feedforward_layernorm": "post_ffw_norm",
                }
            else:
                per_layer["post_attention_layernorm"] = "ffn_norm"
            if rest in per_layer:
                return f"blk.{parts[2]}.{per_layer[rest]}{suffix}"
        raise ConvertError(f"cannot map tensor {name + suffix!r} of a {self.arch} model")

    @staticmethod
    def _permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
        """llama.cpp's Q/K permutation: HF's rotate-half RoPE to adjacent-pair RoPE."""
        if n_head_kv is not None and n_head != n_head_kv:
            n_head = n_head_kv
        return (
            w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape)
        )

    def _modify(self, t: _Tensor, name: str, data: np.ndarray) -> np.ndarray:
        if self.arch == "llama":
            n_head = int(self._find("num_attention_heads", "n_heads"))
            n_kv = self._find("num_key_value_heads", "n_kv_heads", optional=True)
            if t.name.endswith(("q_proj.weight", "q_proj.bias")):
                data = self._permute(data, n_head, n_head)
            elif t.name.endswith(("k_proj.weight", "k_proj.bias")):
                data = self._permute(data, n_head, n_kv)
        if self.arch == "gemma3":
            if "embed_tokens.weight" in t.name:
                data = data[: self._gemma_vocab_real()]
            if t.name.endswith("norm.weight"):
                data = data + data.dtype.type(1.0)
        return data

    def _gemma_vocab_real(self) -> int:
        if (self.dir / "tokenizer.model").is_file():
            return len(self._spm_vocab()[0])
        tj = _read_json(self.dir / "tokenizer.json")
        return len(tj["model"]["vocab"]) + len(tj.get("added_tokens", []))

    def _qtype(self, new_name: str, n_dims: int, ncols: int) -> str:
        if n_dims <= 1 or new_name.endswith("_norm.weight") or not new_name.endswith(".weight"):
            return "F32"
        qtype = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}[self.outtype]
        if qtype == "Q8_0" and ncols % 32 != 0:
            return "F16"  # the reference falls back to F16 when Q8_0 cannot hold the rows
        return qtype

    def _extra_tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """rope_freqs for Llama 3 RoPE scaling, long/short rope factors for phi3."""
        rp = self.rope
        if self.arch == "llama" and str(rp.get("rope_type", "")).lower() == "llama3":
            base = rp.get("rope_theta", 10000.0)
            dim = (
                self.hp.get("head_dim") or self.hp["hidden_size"] // self.hp["num_attention_heads"]
            )
            freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
            factor = rp.get("factor", 8.0)
            low, high = rp.get("low_freq_factor", 1.0), rp.get("high_freq_factor", 4.0)
            old_ctx = rp.get("original_max_position_embeddings", 8192)
            low_wl, high_wl = old_ctx / low, old_ctx / high
            factors = []
            for f in freqs:
                wl = 2 * math.pi / f
                if wl < high_wl:
                    factors.append(1)
                elif wl > low_wl:
                    factors.append(factor)
                else:
                    smooth = (old_ctx / wl - low) / (high - low)
                    factors.append(1 / ((1 - smooth) / factor + smooth))
            yield "rope_freqs.weight", np.array(factors, dtype=np.float32)
        if self.arch == "phi3" and rp.get("long_factor"):
            max_pos = self._find("n_positions", "max_position_embeddings")
            orig = rp["original_max_position_embeddings"]
            scale = max_pos / orig
            kind = str(rp.get("rope_type", "")).lower()
            if kind in ("su", "longrope"):
                attn = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
            elif kind == "yarn":
                attn = 0.1 * math.log(scale) + 1.0 if scale > 1.0 else 1.0
            else:
                raise ConvertError(f"phi3: rope scaling type {kind!r} is not supported")
            self.w.a("rope.scaling.attn_factor", "f32", attn)
            yield "rope_factors_long.weight", np.array(rp["long_factor"], dtype=np.float32)
            yield "rope_factors_short.weight", np.array(rp["short_factor"], dtype=np.float32)

    def _loader(self, t: _Tensor, new: str) -> Callable[[], np.ndarray]:
        """When called: tensor ``t`` as f16 or f32, with the architecture's changes applied."""

        def load() -> np.ndarray:
            data = t.load()
            if data.dtype not in (np.float16, np.float32):
                data = data.astype(np.float32)
            return self._modify(t, new, data)

        return load

    def add_tensors(self) -> None:
        # (GGUF name, loader, shape, where its values come from, for error messages)
        items: list[tuple[str, Callable[[], np.ndarray], tuple[int, ...], str]] = []
        for name, arr in self._extra_tensors():
            items.append((name, _constant(arr), arr.shape, f"tensor {name}"))
        for t in self.tensors:
            try:
                new = self._map_name(t.name)
            except ConvertError as e:  # say which file holds the tensor
                raise ConvertError(f"{t.path}: {e}") from None
            if new is None:
                continue
            shape = t.shape
            if self.arch == "gemma3" and "embed_tokens.weight" in t.name:
                shape = (self._gemma_vocab_real(), *shape[1:])

            items.append((new, self._loader(t, new), shape, f"{t.path}: tensor {t.name}"))
        for new, load, shape, source in items:
            n_dims = len(shape)
            qtype = self._qtype(new, n_dims, shape[-1] if shape else 1)
            self.w.n_params += int(np.prod(shape)) if shape else 1
            encode = self._encoder(load, qtype, source)
            self.w.tensors.append((new, qtype, list(reversed(shape)), encode))

    @staticmethod
    def _encoder(load: Callable[[], np.ndarray], qtype: str, source: str) -> Callable[[], bytes]:
        """The tensor's bytes as ``qtype``; values that are not finite, in the checkpoint or
        once rounded to the output type, are an error rather than a silently broken model."""

        def encode() -> bytes:
            data = load()
            if data.dtype.kind == "f" and not np.isfinite(data).all():
                raise ConvertError(f"{source}: holds NaN or infinite values")
            with np.errstate(over="ignore"):
                if qtype == "F32":
                    out = np.ascontiguousarray(data, dtype=np.float32)
                elif qtype == "F16":
                    out = np.ascontiguousarray(data.astype(np.float16))
                else:
                    x = np.ascontiguousarray(data, dtype=np.float32)
                    out = None
            if out is not None:
                if out.dtype.kind == "f" and not np.isfinite(out).all():
                    big = float(np.max(np.abs(data)))
                    raise ConvertError(
                        f"{source}: values up to {big:g} overflow {qtype}; "
                        "convert with --outtype f32 or bf16"
                    )
                return out.tobytes()
            if not np.isfinite(x).all():
                raise ConvertError(f"{source}: values overflow float32 before {qtype}")
            return quantize(x.reshape(-1, x.shape[-1]), qtype)

        return encode

    # -- hyper-parameters -----------------------------------------------------------------------

    def add_parameters(self) -> None:
        """`TextModel.set_gguf_parameters`, then the architecture's own keys."""
        w, hp = self.w, self.hp
        if self.arch == "phi3":
            self._phi3_parameters()
            return
        w.a("block_count", "u32", self.n_layer)
        if (
            n_ctx := self._find(
                "max_position_embeddings",
                "n_ctx",
                "n_positions",
                "max_length",
                "max_sequence_length",
                "model_max_length",
                optional=True,
            )
        ) is not None:
            w.a("context_length", "u32", n_ctx)
        if (n_embd := self._find("hidden_size", "n_embd", "dim", optional=True)) is not None:
            w.a("embedding_length", "u32", n_embd)
        if (
            n_ff := self._find(
                "prefix_dense_intermediate_size",
                "dense_intermediate_size",
                "intermediate_size",
                "n_inner",
                "hidden_dim",
                optional=True,
            )
        ) is not None:
            w.a("feed_forward_length", "u32", n_ff)
        if (
            n_head := self._find("num_attention_heads", "n_head", "n_heads", optional=True)
        ) is not None:
            w.a("attention.head_count", "u32", n_head)
        if (n_kv := self._find("num_key_value_heads", "n_kv_heads", optional=True)) is not None:
            w.a("attention.head_count_kv", "u32", n_kv)
        rp = self.rope.get("full_attention", self.rope)
        rope_type = rp.get("rope_type")
        if rope_type is not None and rp.get("factor") is not None:
            if rope_type == "linear":
                w.a("rope.scaling.type", "str", "linear")
                w.a("rope.scaling.factor", "f32", rp["factor"])
            elif rope_type == "yarn":
                w.a("rope.scaling.type", "str", "yarn")
                w.a("rope.scaling.factor", "f32", rp["factor"])
                w.a(
                    "rope.scaling.original_context_length",
                    "u32",
                    rp["original_max_position_embeddings"],
                )
        if (theta := rp.get("rope_theta")) is not None:
            w.a("rope.freq_base", "f32", theta)
        if (swa := self.rope.get("sliding_attention", {}).get("rope_theta")) is not None:
            w.a("rope.freq_base_swa", "f32", swa)
        if (eps := self._find("rms_norm_eps", "norm_eps", optional=True)) is not None:
            w.a("attention.layer_norm_rms_epsilon", "f32", eps)
        if (head_dim := hp.get("head_dim")) is not None:
            w.a("attention.key_length", "u32", head_dim)
            w.a("attention.value_length", "u32", head_dim)
        w.add("general.file_type", "u32", self._ftype_id())
        if self.arch == "llama":
            w.a("vocab_size", "u32", hp["vocab_size"])
            rope_dim = hp.get("head_dim") or hp["hidden_size"] // hp["num_attention_heads"]
            w.a("rope.dimension_count", "u32", rope_dim)
        elif self.arch == "gemma3":
            w.a("context_length", "u32", hp.get("max_position_embeddings", 131072))
            w.a("attention.head_count", "u32", hp.get("num_attention_heads", 8))
            w.a("attention.layer_norm_rms_epsilon", "f32", hp.get("rms_norm_eps", 1e-6))
            w.a("attention.key_length", "u32", hp.get("head_dim", 256))
            w.a("attention.value_length", "u32", hp.get("head_dim", 256))
            w.a("rope.freq_base", "f32", rp.get("rope_theta", 1_000_000.0))
            if cap := hp.get("final_logit_softcapping"):
                w.a("final_logit_softcapping", "f32", cap)
            if hp.get("sliding_window_pattern") != 1:
                w.a("attention.sliding_window", "u32", hp["sliding_window"])
            w.a("attention.head_count_kv", "u32", hp.get("num_key_value_heads", 4))

    def _ftype_id(self) -> int:
        return {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}[self.outtype]

    def _phi3_parameters(self) -> None:
        w, hp = self.w, self.hp
        n_embd = self._find("hidden_size", "n_embd")
        n_head = self._find("num_attention_heads", "n_head")
        n_kv = self._find("num_key_value_heads", "n_head_kv", optional=True) or n_head
        max_pos = self._find("n_positions", "max_position_embeddings")
        orig = self.rope.get(
            "original_max_position_embeddings", hp.get("original_max_position_embeddings", max_pos)
        )
        rot = self.rope.get("partial_rotary_factor", 1.0)
        w.a("context_length", "u32", max_pos)
        w.a("rope.scaling.original_context_length", "u32", orig)
        w.a("embedding_length", "u32", n_embd)
        w.a("feed_forward_length", "u32", self._find("intermediate_size"))
        w.a("block_count", "u32", self.n_layer)
        w.a("attention.head_count", "u32", n_head)
        w.a("attention.head_count_kv", "u32", n_kv)
        w.a("attention.layer_norm_rms_epsilon", "f32", self._find("rms_norm_eps"))
        w.a("rope.dimension_count", "u32", int(rot * n_embd) // n_head)
        w.a("rope.freq_base", "f32", self.rope.get("rope_theta", 10000.0))
        w.add("general.file_type", "u32", self._ftype_id())
        sliding = hp.get("sliding_window")
        if sliding is None:
            sliding = 0
        w.a("attention.sliding_window", "u32", sliding)

    # -- tokenizer ------------------------------------------------------------------------------

    def _spm_vocab(self) -> tuple[list[str], list[float], list[int]]:
        pieces = _read_spm(self.dir / "tokenizer.model")
        vocab_size = self.hp.get("vocab_size") or len(pieces)
        tokens = [f"[PAD{i}]" for i in range(vocab_size)]
        scores = [-10000.0] * vocab_size
        types = [TOKEN_UNUSED] * vocab_size
        kind = {2: TOKEN_UNKNOWN, 3: TOKEN_CONTROL, 5: TOKEN_UNUSED, 6: TOKEN_BYTE}
        for i, (piece, score, typ) in enumerate(pieces[:vocab_size]):
            tokens[i] = piece.decode("utf-8", errors="replace")
            scores[i] = score
            types[i] = kind.get(typ, TOKEN_NORMAL)
        added = self.dir / "added_tokens.json"
        if added.is_file():
            for text, tid in _read_json(added).items():
                if tid < vocab_size:
                    tokens[tid], scores[tid], types[tid] = text, -1000.0, TOKEN_USER_DEFINED
        tc = self._tokenizer_config()
        for tid_s, data in (tc.get("added_tokens_decoder") or {}).items():
            tid = int(tid_s)
            if tid >= vocab_size:
                continue
            text = data["content"]
            if self.arch == "phi3":  # Phi3MiniModel.set_vocab: no look-special or space rules
                types[tid] = TOKEN_CONTROL if data.get("special") else TOKEN_USER_DEFINED
            elif data.get("special") or _looks_special(text):
                types[tid] = TOKEN_CONTROL
            else:
                text = text.replace("\u2581", " ")
                types[tid] = TOKEN_USER_DEFINED
            scores[tid], tokens[tid] = -1000.0, text
        if self.arch == "phi3":
            for a in (self._tokenizer_json() or {}).get("added_tokens", []):
                tid = int(a["id"])
                tokens[tid], scores[tid] = a["content"], -1000.0
                types[tid] = TOKEN_CONTROL if a.get("special") else TOKEN_USER_DEFINED
        if vocab_size > len(tokens):
            for i in range(1, vocab_size - len(tokens) + 1):
                tokens.append(f"[PAD{i}]")
                scores.append(-1000.0)
                types.append(TOKEN_UNUSED)
        return tokens, scores, types

    def _tokenizer_config(self) -> dict[str, Any]:
        p = self.dir / "tokenizer_config.json"
        return _read_json(p) if p.is_file() else {}

    def _tokenizer_json(self) -> dict[str, Any] | None:
        p = self.dir / "tokenizer.json"
        return _read_json(p) if p.is_file() else None

    def _detect_pre(self) -> str:
        if self.pre_tokenizer:
            return self.pre_tokenizer
        from tokenizers import Tokenizer

        table = json.loads((Path(__file__).parent / "pre_tokenizers.json").read_text("utf-8"))
        tok = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        ids = tok.encode(table["chktxt"]).ids
        h = hashlib.sha256(str(ids).encode()).hexdigest()
        if h not in table["hashes"]:
            raise ConvertError(
                f"{self.dir}: BPE pre-tokenizer not recognized (chkhsh {h}); pass "
                "pre_tokenizer= (--pre-tokenizer) with one of llama.cpp's names, e.g. llama-bpe"
            )
        return str(table["hashes"][h])

    def _gpt2_vocab(self) -> tuple[list[str], list[int]]:
        tj = self._tokenizer_json()
        if tj is None:
            raise ConvertError(f"{self.dir}: no tokenizer.json or tokenizer.model")
        vocab: dict[str, int] = dict(tj["model"]["vocab"])
        added = {a["content"]: a for a in tj.get("added_tokens", [])}
        for text, a in added.items():
            vocab[text] = a["id"]
        reverse = {i: t for t, i in vocab.items()}
        vocab_size = self.hp.get("vocab_size", len(vocab))
        if max(vocab.values()) >= vocab_size:
            raise ConvertError(f"{self.dir}: token ids exceed vocab_size {vocab_size}")
        tokens, types = [], []
        for i in range(vocab_size):
            if i not in reverse:
                tokens.append(f"[PAD{i}]")
                types.append(TOKEN_UNUSED)
                continue
            text = reverse[i]
            if text in added:
                if added[text].get("special") or _looks_special(text):
                    types.append(TOKEN_CONTROL)
                else:
                    text = text.replace("\u2581", " ")
                    types.append(TOKEN_USER_DEFINED)
            else:
                types.append(TOKEN_NORMAL)
            tokens.append(text)
        return tokens, types

    def add_vocab(self) -> None:
        w = self.w
        tc = self._tokenizer_config()
        spm = (self.dir / "tokenizer.model").is_file()
        if self.arch == "llama" and (asp := tc.get("add_prefix_space")) is not None:
            w.add("tokenizer.ggml.add_space_prefix", "bool", asp)
        if self.arch == "phi3" and tc.get("tokenizer_class") == "GPT2Tokenizer":
            spm = False
        if spm:
            tokens, scores, types = self._spm_vocab()
            w.add("tokenizer.ggml.model", "str", "llama")
            w.add("tokenizer.ggml.pre", "str", "default")
            w.add("tokenizer.ggml.tokens", "[str]", tokens)
            w.add("tokenizer.ggml.scores", "[f32]", scores)
            w.add("tokenizer.ggml.token_type", "[i32]", types)
            self._special_vocab(len(tokens), merges=False)
            if self.arch == "gemma3":
                w.add("tokenizer.ggml.add_space_prefix", "bool", False)
        else:
            if self.arch == "phi3" and not (self.dir / "tokenizer.json").is_file():
                raise ConvertError(f"{self.dir}: phi3 needs tokenizer.model")
            tokens, types = self._gpt2_vocab()
            w.add("tokenizer.ggml.model", "str", "gpt2")
            w.add("tokenizer.ggml.pre", "str", self._detect_pre())
            w.add("tokenizer.ggml.tokens", "[str]", tokens)
            w.add("tokenizer.ggml.token_type", "[i32]", types)
            self._special_vocab(None, merges=True)
        if self.arch == "llama" and self.hp.get("vocab_size", 32000) == 49152:
            w.add("tokenizer.ggml.add_bos_token", "bool", False)
        if self.arch == "phi3":
            w.add("tokenizer.ggml.add_bos_token", "bool", False)

    def _special_vocab(self, n_vocab: int | None, merges: bool) -> None:
        """gguf-py's SpecialVocab: merges, special token ids, add-bos/eos flags, chat template."""
        w = self.w
        tj = self._tokenizer_json()
        tc = self._tokenizer_config()
        types = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"]
        ids: dict[str, int] = {}
        add: dict[str, bool] = {}

        def set_id(typ: str, tid: Any) -> None:
            if isinstance(tid, int) and tid >= 0 and (n_vocab is None or tid < n_vocab):
                ids.setdefault(typ, tid)

        if merges and tj is not None:
            m = tj.get("model", {}).get("merges") or []
            if m and isinstance(m[0], list):
                m = [
                    " ".join(
                        "".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair
                    )
                    for pair in m
                ]
            if m:
                w.add("tokenizer.ggml.merges", "[str]", list(m))
        added = (tj or {}).get("added_tokens", [])
        if tj is not None:
            pp = tj.get("post_processor") or {}
            for proc in pp.get("processors", [pp]) if pp else []:
                kind = proc.get("type")
                if kind == "ByteLevel":
                    add.setdefault("bos", False)
                    add.setdefault("eos", False)
                elif kind == "TemplateProcessing":
                    single = proc.get("single", [])
                    if len(single) > 1:
                        first = single[0].get("SpecialToken", {}).get("id")
                        last = single[-1].get("SpecialToken", {}).get("id")
                        bos = _content(tc.get("bos_token"))
                        eos = _content(tc.get("eos_token"))
                        if first:
                            add["bos"] = first == bos or first == _content(tc.get("cls_token"))
                        if last:
                            add["eos"] = last == eos
        if tc:
            for typ in types:
                entry = tc.get(f"add_{typ}_token")
                if isinstance(entry, bool) and typ not in add:
                    add[typ] = entry
                content = _content(tc.get(f"{typ}_token"))
                if content is None:
                    continue
                set_id(typ, next((a.get("id") for a in added if a.get("content") == content), None))
        for typ in types:
            set_id(typ, self.hp.get(f"{typ}_token_id"))
        for typ, tid in ids.items():
            key = (
                "padding"
                if typ == "pad"
                else "unknown"
                if typ == "unk"
                else "seperator"
                if typ == "sep"
                else typ
            )
            w.add(f"tokenizer.ggml.{key}_token_id", "u32", tid)
        for typ, v in add.items():
            if typ in ("bos", "eos", "sep"):
                w.add(f"tokenizer.ggml.add_{typ}_token", "bool", v)
        template = tc.get("chat_template")
        if template is None and (self.dir / "chat_template.jinja").is_file():
            template = (self.dir / "chat_template.jinja").read_text(encoding="utf-8")
        if isinstance(template, str):
            w.add("tokenizer.chat_template", "str", template)
        elif isinstance(template, list):
            for t in template:
                name, text = t.get("name"), t.get("template")
                if name == "default":
                    w.add("tokenizer.chat_template", "str", text)
                elif name and text:
                    w.add(f"tokenizer.chat_template.{name}", "str", text)

    # -- assembly -------------------------------------------------------------------------------

    def build(self) -> None:
        w = self.w
        w.add("general.architecture", "str", self.arch)
        self.add_tensors()
        w.add("general.type", "str", "model")
        w.add("general.name", "str", self.name)
        w.add("general.size_label", "str", _size_label(w.n_params))
        self.add_parameters()
        w.add("general.quantization_version", "u32", 2)
        self.add_vocab()


def _content(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return str(entry["content"])
    return None


ProgressFn = Callable[[int, int, str, str, list[int]], None]


def convert(
    hf_dir: PathLike,
    outfile: PathLike,
    outtype: str = "auto",
    *,
    pre_tokenizer: str | None = None,
    model_name: str | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Convert the Hugging Face checkpoint in ``hf_dir`` to the GGUF file ``outfile``.

    ``outtype``: ``f32``, ``f16``, ``bf16``, ``q8_0`` or ``auto`` (the checkpoint's 16-bit type,
    else f16), as the reference converter. ``pre_tokenizer`` names llama.cpp's BPE
    pre-tokenizer when the tokenizer's fingerprint is not one llama.cpp knows. ``progress(i, n,
    name, type, shape)`` is called after each tensor. The file is written to a temporary name
    and renamed when complete. Returns ``{"arch", "n_tensors", "n_params", "outtype"}``.
    """
    src = Path(hf_dir)
    if not src.is_dir():
        raise ConvertError(f"{src}: not a directory")
    c = _Converter(src, outtype, pre_tokenizer, model_name)
    c.build()
    w = c.w
    kv = [(k, ty, v) for k, (ty, v) in w.kv.items()]
    infos = [(name, ty, dims) for name, ty, dims, _ in w.tensors]
    header, offsets, alignment = _rllm.gguf_header(kv, infos)
    out = Path(outfile)
    tmp = out.with_name(f".{out.name}.rllm-tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            pos = 0
            for i, ((name, ty, dims, encode), offset) in enumerate(zip(w.tensors, offsets)):
                f.write(b"\0" * (offset - pos))
                data = encode()
                f.write(data)
                pos = offset + len(data)
                if progress is not None:
                    progress(i + 1, len(w.tensors), name, ty, dims)
            f.write(b"\0" * ((-pos) % alignment))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "arch": c.arch,
        "n_tensors": len(w.tensors),
        "n_params": w.n_params,
        "outtype": c.outtype,
    }


def _constant(a: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: a
