"""Tiny random-weight GGUF models written with the ``gguf`` package, for architecture and
edge-case tests that need no downloaded model. ``TINY_VARIANTS`` are the architecture variants
whose logits are also checked against llama.cpp (tests/fixtures/make_tiny_fixtures.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf.quants import dequantize, quantize
from reference import LlamaHParams

TINY = LlamaHParams(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=96)


def _variant(**kw) -> LlamaHParams:
    return dataclasses.replace(TINY, **kw)


# name -> (hyper-parameters, writer options)
TINY_VARIANTS: dict[str, tuple[LlamaHParams, dict]] = {
    "llama": (TINY, {}),
    "llama3_rope": (
        _variant(rope_factors=[1.0, 1.0, 2.0, 2.0, 8.0, 8.0, 8.0, 8.0], rope_base=500000.0),
        {"rope_freqs": True},
    ),
    "llama_yarn": (
        _variant(rope_scaling={"type": "yarn", "factor": 4.0, "orig_ctx": 32}),
        {},
    ),
    "llama_linear": (_variant(rope_scaling={"type": "linear", "factor": 2.0, "orig_ctx": 256}), {}),
    "qwen2": (_variant(arch="qwen2", rope_style="neox"), {"qkv_bias": True, "tied": False}),
    "gemma3": (
        _variant(
            arch="gemma3",
            rope_style="neox",
            key_length=32,
            rope_base=1000000.0,
            sliding_window=4,
            n_layer=3,
            swa_layers=[True, True, False],
            embd_scale=8.0,
            activation="gelu_tanh",
            attn_scale=1.0 / np.sqrt(32),
            rms_eps=1e-6,
        ),
        {"swa_pattern": 3},
    ),
    "phi3": (
        _variant(
            arch="phi3",
            rope_style="neox",
            n_head_kv=4,
            n_rot=8,
            rope_factors=[1.0, 1.5, 2.0, 4.0],
            rope_attn_factor=1.19,
            rope_scaling=None,
        ),
        # Contexts up to the trained 512 use the short factors (llama.cpp rounds its own n_ctx
        # up to 256).
        {"fused": True, "longrope": True, "n_ctx_train": 512},
    ),
}


def byte_level_vocab() -> list[str]:
    """The 256 single-byte tokens of GPT-2's byte-level BPE, in byte order."""
    visible = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in visible:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def write_tiny_llama(
    path: Path,
    hp: LlamaHParams = TINY,
    weight_type: str = "F32",
    tied: bool = True,
    seed: int = 0,
    n_ctx_train: int = 256,
    arch: str | None = None,
    omit: tuple[str, ...] = (),
    extra_tensors: dict[str, np.ndarray] | None = None,
    qkv_bias: bool = False,
    fused: bool = False,
    rope_freqs: bool = False,
    longrope: bool = False,
    swa_pattern: int | None = None,
    split_max_tensors: int = 0,
) -> dict[str, np.ndarray]:
    """Write a GGUF of ``hp.arch`` with random weights and a byte-level tokenizer (256 byte
    tokens, one merge ``he``, and ``<|endoftext|>``). Returns the weights as the file stores
    them, dequantized to float64, keyed by GGUF tensor name.

    For corrupt-file tests: ``arch`` renames the architecture, ``omit`` drops metadata keys
    (written with the ``llama.`` prefix) or tensors by name, ``extra_tensors`` adds tensors."""
    arch = arch or hp.arch
    rng = np.random.default_rng(seed)
    tokens = [*byte_level_vocab(), "he", "<|endoftext|>"]
    n_vocab = len(tokens)
    qtype = gguf.GGMLQuantizationType[weight_type]
    e, f, hd = hp.n_embd, hp.n_ff, hp.head_dim
    q_dim, kv_dim = hp.n_head * hd, hp.n_head_kv * hd
    shapes = {"token_embd.weight": (n_vocab, e)}
    for layer in range(hp.n_layer):
        p = f"blk.{layer}."
        if fused:
            shapes[p + "attn_qkv.weight"] = (q_dim + 2 * kv_dim, e)
            shapes[p + "ffn_up.weight"] = (2 * f, e)
        else:
            shapes[p + "attn_q.weight"] = (q_dim, e)
            shapes[p + "attn_k.weight"] = (kv_dim, e)
            shapes[p + "attn_v.weight"] = (kv_dim, e)
            shapes[p + "ffn_gate.weight"] = (f, e)
            shapes[p + "ffn_up.weight"] = (f, e)
        shapes[p + "attn_output.weight"] = (e, q_dim)
        shapes[p + "ffn_down.weight"] = (e, f)
    if not tied:
        shapes["output.weight"] = (n_vocab, e)

    # With split_max_tensors, the files are PATH-00001-of-0000N.gguf and so on.
    w = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(e)
    w.add_block_count(hp.n_layer)
    w.add_feed_forward_length(f)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(hp.n_head_kv)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    w.add_rope_freq_base(hp.rope_base)
    w.add_rope_dimension_count(hp.n_rot or hd)
    if hp.key_length:
        w.add_key_length(hp.key_length)
        w.add_value_length(hp.key_length)
    if hp.rope_scaling:
        sc = hp.rope_scaling
        w.add_rope_scaling_type(gguf.RopeScalingType(sc["type"]))
        w.add_rope_scaling_factor(sc["factor"])
        w.add_rope_scaling_orig_ctx_len(sc["orig_ctx"])
    if hp.rope_attn_factor != 1.0:
        w.add_rope_scaling_attn_factors(hp.rope_attn_factor)
    if hp.sliding_window:
        w.add_sliding_window(hp.sliding_window)
    if swa_pattern:
        w.add_uint32(f"{arch}.attention.sliding_window_pattern", swa_pattern)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * 257 + [3])
    w.add_token_merges(["h e"])
    w.add_bos_token_id(n_vocab - 1)
    w.add_eos_token_id(n_vocab - 1)
    w.add_add_bos_token(False)

    weights: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if name in omit:
            continue
        data = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
        stored = data if qtype == gguf.GGMLQuantizationType.F32 else quantize(data, qtype)
        w.add_tensor(name, stored, raw_dtype=qtype)
        weights[name] = dequantize(stored, qtype).reshape(shape).astype(np.float64)

    vectors: dict[str, int] = {"output_norm.weight": e}
    for layer in range(hp.n_layer):
        p = f"blk.{layer}."
        vectors |= {p + "attn_norm.weight": e, p + "ffn_norm.weight": e}
        if qkv_bias:
            vectors |= {
                p + "attn_q.bias": q_dim,
                p + "attn_k.bias": kv_dim,
                p + "attn_v.bias": kv_dim,
            }
        if arch == "gemma3":
            vectors |= {
                p + "attn_q_norm.weight": hd,
                p + "attn_k_norm.weight": hd,
                p + "post_attention_norm.weight": e,
                p + "post_ffw_norm.weight": e,
            }
    for name, n in vectors.items():
        if name in omit:
            continue
        if name.endswith(".bias"):
            data = (0.5 * rng.standard_normal(n)).astype(np.float32)
        else:
            data = (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)
        w.add_tensor(name, data)
        weights[name] = data.astype(np.float64)
    factors = np.asarray(hp.rope_factors or [], dtype=np.float32)
    if rope_freqs:
        w.add_tensor("rope_freqs.weight", factors)
    if longrope:
        # The short factors are used while the context fits the trained one (tests do).
        w.add_tensor("rope_factors_long.weight", (factors * 3.0).astype(np.float32))
        w.add_tensor("rope_factors_short.weight", factors)
    for name, data in (extra_tensors or {}).items():
        w.add_tensor(name, data)
    for key in omit:
        w.kv_data[0].pop(key.replace("llama.", f"{arch}.", 1), None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return weights


def write_variant(path: Path, name: str) -> tuple[dict[str, np.ndarray], LlamaHParams]:
    hp, options = TINY_VARIANTS[name]
    return write_tiny_llama(path, hp, **options), hp


def byte_level_chars() -> list[str]:
    """GPT-2's byte-level alphabet: the character standing for each byte 0..255."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: chr(b) for b in printable}
    extra = iter(range(256, 512))
    return [chars[b] if b in chars else chr(next(extra)) for b in range(256)]


def tiny_bpe_metadata(**overrides: Any) -> dict[str, Any]:
    """Tokenizer metadata of a tiny byte-level BPE vocabulary (a few merges, one control token)."""
    tokens = [*byte_level_chars(), "he", "ll", "hell", "hello", "Ġhello", "<|im_end|>"]
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [1] * (len(tokens) - 1) + [3],
        "tokenizer.ggml.merges": ["h e", "l l", "he ll", "hell o", "Ġ hello"],
        "tokenizer.ggml.eos_token_id": len(tokens) - 1,
    }
    meta.update(overrides)
    return meta
