"""Tiny random-weight GGUF models written with the ``gguf`` package, for architecture and
edge-case tests that need no downloaded model."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from gguf.quants import dequantize, quantize
from reference import LlamaHParams

TINY = LlamaHParams(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=96)


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
    arch: str = "llama",
    omit: tuple[str, ...] = (),
    extra_tensors: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Write a llama GGUF with random weights and a byte-level tokenizer (256 byte tokens, one
    merge ``he``, and ``<|endoftext|>``). Returns the weights as the file stores them,
    dequantized to float64.

    For corrupt-file tests: ``arch`` renames the architecture, ``omit`` drops metadata keys
    (written with the ``llama.`` prefix) or tensors by name, ``extra_tensors`` adds tensors."""
    rng = np.random.default_rng(seed)
    tokens = [*byte_level_vocab(), "he", "<|endoftext|>"]
    n_vocab = len(tokens)
    qtype = gguf.GGMLQuantizationType[weight_type]
    e, f, hd = hp.n_embd, hp.n_ff, hp.head_dim
    shapes = {"token_embd.weight": (n_vocab, e)}
    for layer in range(hp.n_layer):
        p = f"blk.{layer}."
        shapes |= {
            p + "attn_q.weight": (hp.n_head * hd, e),
            p + "attn_k.weight": (hp.n_head_kv * hd, e),
            p + "attn_v.weight": (hp.n_head_kv * hd, e),
            p + "attn_output.weight": (e, hp.n_head * hd),
            p + "ffn_gate.weight": (f, e),
            p + "ffn_up.weight": (f, e),
            p + "ffn_down.weight": (e, f),
        }
    if not tied:
        shapes["output.weight"] = (n_vocab, e)

    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(e)
    w.add_block_count(hp.n_layer)
    w.add_feed_forward_length(f)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(hp.n_head_kv)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    w.add_rope_freq_base(hp.rope_base)
    w.add_rope_dimension_count(hp.n_rot or hd)
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
        if qtype == gguf.GGMLQuantizationType.F32:
            stored = data
        else:
            stored = quantize(data, qtype)
        w.add_tensor(name, stored, raw_dtype=qtype)
        weights[name] = dequantize(stored, qtype).reshape(shape).astype(np.float64)
    norms = [f"blk.{i}.{n}" for i in range(hp.n_layer) for n in ("attn_norm", "ffn_norm")]
    for name in [*norms, "output_norm"]:
        if name + ".weight" in omit:
            continue
        data = (1.0 + 0.1 * rng.standard_normal(e)).astype(np.float32)
        w.add_tensor(name + ".weight", data)
        weights[name + ".weight"] = data.astype(np.float64)
    for name, data in (extra_tensors or {}).items():
        w.add_tensor(name, data)
    for key in omit:
        w.kv_data[0].pop(key.replace("llama.", f"{arch}.", 1), None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return weights
