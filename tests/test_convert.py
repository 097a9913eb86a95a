"""``rllm convert``: tiny random-weight Hugging Face checkpoints (written here with numpy and
safetensors) become GGUF files with llama.cpp's converter layout, load, and compute the same
logits as a numpy forward pass written in the Hugging Face convention (rotate-half RoPE on the
unpermuted weights, so the test also checks the Q/K permutation)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import rllm
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

N_EMBD, N_FF, N_LAYER, N_HEAD, N_HEAD_KV = 64, 96, 2, 4, 2
HEAD_DIM = N_EMBD // N_HEAD

# --- checkpoint writers ----------------------------------------------------------------------


def byte_level_tokenizer() -> tuple[Tokenizer, int]:
    """GPT-2 byte-level BPE: 256 byte tokens, two merges, and three special tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["he"] = len(vocab)
    vocab["Ġt"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("h", "e"), ("Ġ", "t")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return tok, tok.get_vocab_size()


def write_bpe_tokenizer(d: Path) -> int:
    tok, n = byte_level_tokenizer()
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
                "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
            }
        )
    )
    return n


def _pb_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _pb_piece(piece: str, score: float, typ: int) -> bytes:
    p = piece.encode()
    body = b"\x0a" + _pb_varint(len(p)) + p + b"\x15" + struct.pack("<f", score)
    body += b"\x18" + _pb_varint(typ)
    return b"\x0a" + _pb_varint(len(body)) + body


SPM_PIECES = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
SPM_PIECES += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
SPM_PIECES += [("▁the", -1.0, 1), ("▁a", -2.0, 1), ("he", -3.0, 1), ("<extra>", 0.0, 4)]


def write_spm_tokenizer(d: Path) -> int:
    """A SentencePiece ModelProto with byte fallback pieces, written field by field."""
    (d / "tokenizer.model").write_bytes(b"".join(_pb_piece(*p) for p in SPM_PIECES))
    (d / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True})
    )
    return len(SPM_PIECES)


def save_bf16(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file of bf16 tensors (the numpy API has no bf16), truncating f32."""
    header: dict[str, Any] = {}
    blobs, offset = [], 0
    for name, arr in tensors.items():
        bits = (np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32) >> 16).astype("<u2")
        blob = bits.tobytes()
        header[name] = {
            "dtype": "BF16",
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def hf_weights(arch: str, n_vocab: int, seed: int = 0, tied: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(n_vocab, N_EMBD)}
    for i in range(N_LAYER):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(N_EMBD)).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(N_EMBD)).astype(
            np.float32
        )
        w[p + "self_attn.q_proj.weight"] = mat(N_HEAD * HEAD_DIM, N_EMBD)
        w[p + "self_attn.k_proj.weight"] = mat(N_HEAD_KV * HEAD_DIM, N_EMBD)
        w[p + "self_attn.v_proj.weight"] = mat(N_HEAD_KV * HEAD_DIM, N_EMBD)
        w[p + "self_attn.o_proj.weight"] = mat(N_EMBD, N_HEAD * HEAD_DIM)
        w[p + "mlp.gate_proj.weight"] = mat(N_FF, N_EMBD)
        w[p + "mlp.up_proj.weight"] = mat(N_FF, N_EMBD)
        w[p + "mlp.down_proj.weight"] = mat(N_EMBD, N_FF)
        if arch == "qwen2":
            for proj, n in (("q", N_HEAD), ("k", N_HEAD_KV), ("v", N_HEAD_KV)):
                w[p + f"self_attn.{proj}_proj.bias"] = (
                    0.1 * rng.standard_normal(n * HEAD_DIM)
                ).astype(np.float32)
    w["model.norm.weight"] = (1 + 0.1 * rng.standard_normal(N_EMBD)).astype(np.float32)
    if not tied:
        w["lm_head.weight"] = mat(n_vocab, N_EMBD)
    return w


def write_checkpoint(
    d: Path,
    arch: str = "llama",
    dtype: str = "F32",
    tokenizer: str = "bpe",
    shards: int = 1,
    tied: bool = True,
) -> dict[str, np.ndarray]:
    d.mkdir(parents=True, exist_ok=True)
    n_vocab = write_bpe_tokenizer(d) if tokenizer == "bpe" else write_spm_tokenizer(d)
    w = hf_weights(arch, n_vocab, tied=tied)
    cfg = {
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
        "model_type": arch,
        "hidden_size": N_EMBD,
        "intermediate_size": N_FF,
        "num_hidden_layers": N_LAYER,
        "num_attention_heads": N_HEAD,
        "num_key_value_heads": N_HEAD_KV,
        "vocab_size": n_vocab,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tied,
        "bos_token_id": 1 if tokenizer == "spm" else n_vocab - 2,
        "eos_token_id": 2 if tokenizer == "spm" else n_vocab - 1,
    }
    (d / "config.json").write_text(json.dumps(cfg))
    names = sorted(w)
    parts = [names[i::shards] for i in range(shards)]
    weight_map = {}
    for k, part in enumerate(parts):
        fname = (
            "model.safetensors" if shards == 1 else f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        )
        tensors = {n: w[n] for n in part}
        if dtype == "BF16":
            save_bf16(d / fname, tensors)
        else:
            save_file(
                {
                    n: t.astype(np.float16 if dtype == "F16" else np.float32)
                    for n, t in tensors.items()
                },
                str(d / fname),
            )
        weight_map |= {n: fname for n in part}
    if shards > 1:
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    if dtype == "BF16":
        w = {n: (t.view(np.uint32) & 0xFFFF0000).view(np.float32) for n, t in w.items()}
    elif dtype == "F16":
        w = {n: t.astype(np.float16).astype(np.float32) for n, t in w.items()}
    return w


# --- numpy reference in the Hugging Face convention ------------------------------------------


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope_neox(x: np.ndarray, pos: np.ndarray, base: float = 10000.0) -> np.ndarray:
    """Rotate-half RoPE as in transformers' `apply_rotary_pos_emb`; x: [n, heads, head_dim]."""
    hd = x.shape[-1]
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = pos[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
    rot = np.concatenate([-x[..., hd // 2 :], x[..., : hd // 2]], -1)
    return x * cos + rot * sin


def hf_forward(w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    w = {k: v.astype(np.float64) for k, v in w.items()}
    n = len(ids)
    pos = np.arange(n, dtype=np.float64)
    x = w["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(N_LAYER):
        p = f"model.layers.{i}."

        def proj(name: str, h: np.ndarray, p: str = p) -> np.ndarray:
            y = h @ w[p + name + ".weight"].T
            return y + w[p + name + ".bias"] if p + name + ".bias" in w else y

        h = rms_norm(x, w[p + "input_layernorm.weight"])
        q = rope_neox(proj("self_attn.q_proj", h).reshape(n, N_HEAD, HEAD_DIM), pos)
        k = rope_neox(proj("self_attn.k_proj", h).reshape(n, N_HEAD_KV, HEAD_DIM), pos)
        v = proj("self_attn.v_proj", h).reshape(n, N_HEAD_KV, HEAD_DIM)
        g = N_HEAD // N_HEAD_KV
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(HEAD_DIM) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + proj("self_attn.o_proj", np.einsum("hqk,khd->qhd", s, v).reshape(n, -1))
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"])
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"])
    return x @ w.get("lm_head.weight", w["model.embed_tokens.weight"]).T


def rllm_logits(path: Path, ids: list[int]) -> np.ndarray:
    model = rllm.Model(path, n_ctx=64, n_threads=2)
    return rllm.Context(model._model, n_ctx=64).eval(ids, all_logits=True)


def read(path: Path) -> tuple[dict[str, Any], dict[str, tuple[str, list[int]]]]:
    r = gguf.GGUFReader(path)
    kv = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type.name, [int(d) for d in t.shape]) for t in r.tensors}
    return kv, tensors


IDS = [5, 70, 256, 3, 99, 150, 257, 12]

# --- llama -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "outtype", "tol"),
    [("F32", "f32", 1e-3), ("F16", "auto", 3e-3), ("BF16", "auto", 1.5e-2), ("F32", "q8_0", 5e-2)],
)
def test_llama_converts_and_matches_reference(
    tmp_path: Path, dtype: str, outtype: str, tol: float
) -> None:
    """Tolerances: rllm keeps the KV cache in f16, and multiplies F16/BF16 weights with
    activations rounded to the same type (as ggml does)."""
    w = write_checkpoint(tmp_path / "hf", dtype=dtype, shards=2 if dtype == "F16" else 1)
    out = tmp_path / "m.gguf"
    info = rllm.convert(tmp_path / "hf", out, outtype, pre_tokenizer="llama-bpe")
    assert info["arch"] == "llama"
    kv, tensors = read(out)
    want_type = {"f32": "F32", "q8_0": "Q8_0"}.get(outtype, dtype)
    assert tensors["blk.0.attn_q.weight"] == (want_type, [N_EMBD, N_EMBD])
    assert tensors["blk.0.attn_norm.weight"] == ("F32", [N_EMBD])
    assert kv["general.file_type"] == {"F32": 0, "F16": 1, "BF16": 32, "Q8_0": 7}[want_type]
    got = rllm_logits(out, IDS)
    want = hf_forward(w, IDS)
    err = np.abs(got - want).max()
    assert err <= tol * np.abs(want).max(), f"max logit error {err}"


def test_llama_metadata_follows_the_reference_converter(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "hf", tied=False)
    out = tmp_path / "m.gguf"
    rllm.convert(tmp_path / "hf", out, "f16", pre_tokenizer="llama-bpe", model_name="Tiny")
    kv, tensors = read(out)
    assert list(kv)[:4] == [
        "general.architecture",
        "general.type",
        "general.name",
        "general.size_label",
    ]
    arch_keys = [k for k in kv if k.startswith("llama.") or k == "general.file_type"]
    assert arch_keys == [
        "llama.block_count", "llama.context_length", "llama.embedding_length",
        "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
        "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "general.file_type",
        "llama.vocab_size", "llama.rope.dimension_count",
    ]  # fmt: skip
    assert kv["general.name"] == "Tiny" and kv["llama.rope.dimension_count"] == HEAD_DIM
    tok, n_vocab = byte_level_tokenizer()
    assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "llama-bpe"
    vocab = {i: t for t, i in tok.get_vocab().items()}
    assert kv["tokenizer.ggml.tokens"] == [vocab[i] for i in range(n_vocab)]
    assert kv["tokenizer.ggml.merges"] == ["h e", "Ġ t"]
    assert kv["tokenizer.ggml.token_type"][-3:] == [3, 3, 3]  # special tokens are CONTROL
    assert kv["tokenizer.ggml.bos_token_id"] == n_vocab - 2
    assert kv["tokenizer.ggml.eos_token_id"] == n_vocab - 1
    assert kv["tokenizer.chat_template"].startswith("{% for m in messages %}")
    # Tensors in the reference converter's order (names sorted per shard) and shapes.
    assert list(tensors)[:3] == ["output.weight", "token_embd.weight", "blk.0.attn_norm.weight"]
    assert tensors["output.weight"] == ("F16", [N_EMBD, n_vocab])
    assert tensors["blk.1.ffn_down.weight"] == ("F16", [N_FF, N_EMBD])
    assert tensors["blk.0.attn_k.weight"] == ("F16", [N_EMBD, N_HEAD_KV * HEAD_DIM])


def test_llama_with_sentencepiece_tokenizer(tmp_path: Path) -> None:
    w = write_checkpoint(tmp_path / "hf", tokenizer="spm")
    out = tmp_path / "m.gguf"
    rllm.convert(tmp_path / "hf", out, "f32")
    kv, _ = read(out)
    assert kv["tokenizer.ggml.model"] == "llama" and kv["tokenizer.ggml.pre"] == "default"
    assert kv["tokenizer.ggml.tokens"] == [p for p, _, _ in SPM_PIECES]
    assert kv["tokenizer.ggml.scores"][-4:] == [-1.0, -2.0, -3.0, 0.0]
    # unknown, control, byte, normal; SentencePiece's user-defined pieces count as normal.
    types = kv["tokenizer.ggml.token_type"]
    assert types[:3] == [2, 3, 3] and types[3] == 6 and types[-4:] == [1, 1, 1, 1]
    assert kv["tokenizer.ggml.bos_token_id"] == 1 and kv["tokenizer.ggml.add_bos_token"] is True
    ids = [1, 259, 260, 40, 100]
    np.testing.assert_allclose(rllm_logits(out, ids), hf_forward(w, ids), atol=5e-3, rtol=0)


# --- qwen2 -------------------------------------------------------------------------------------


def test_qwen2_conversion(tmp_path: Path) -> None:
    w = write_checkpoint(tmp_path / "hf", arch="qwen2")
    out = tmp_path / "q.gguf"
    rllm.convert(tmp_path / "hf", out, "f32", pre_tokenizer="qwen2")
    kv, tensors = read(out)
    assert kv["general.architecture"] == "qwen2"
    assert "qwen2.rope.dimension_count" not in kv and "qwen2.vocab_size" not in kv
    assert tensors["blk.0.attn_q.bias"] == ("F32", [N_EMBD])
    assert tensors["blk.1.attn_k.bias"] == ("F32", [N_HEAD_KV * HEAD_DIM])
    # qwen2 uses NEOX RoPE: its Q/K are stored unpermuted.
    q = gguf.GGUFReader(out).get_tensor(
        [t.name for t in gguf.GGUFReader(out).tensors].index("blk.0.attn_q.weight")
    )
    np.testing.assert_array_equal(np.asarray(q.data), w["model.layers.0.self_attn.q_proj.weight"])
    got = rllm_logits(out, IDS)
    np.testing.assert_allclose(got, hf_forward(w, IDS), atol=5e-3, rtol=0)


# --- the keys of real llama.cpp conversions ----------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_keys_match_files_made_by_llama_cpp(
    tmp_path: Path, arch: str, request: pytest.FixtureRequest
) -> None:
    real = request.getfixturevalue("smollm2_path" if arch == "llama" else "qwen_path")
    write_checkpoint(tmp_path / "hf", arch=arch)
    out = tmp_path / "m.gguf"
    rllm.convert(tmp_path / "hf", out, "f16", pre_tokenizer="llama-bpe")
    ours, _ = read(out)
    theirs = [k for k in rllm.GGUFFile(real).metadata() if k.startswith(f"{arch}.")]
    assert [k for k in ours if k.startswith(f"{arch}.")] == theirs


# --- other architectures: metadata and tensor layout only --------------------------------------


def test_gemma3_layout(tmp_path: Path, gemma_path: Path) -> None:
    d = tmp_path / "hf"
    d.mkdir()
    n_vocab = write_bpe_tokenizer(d)
    rng = np.random.default_rng(1)
    w: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.standard_normal((n_vocab + 3, N_EMBD)).astype(np.float32)
    }
    for i in range(N_LAYER):
        p = f"model.layers.{i}."
        for n in (
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ):
            w[p + n + ".weight"] = np.zeros(N_EMBD, np.float32)
        for n in ("q_norm", "k_norm"):
            w[p + f"self_attn.{n}.weight"] = np.zeros(HEAD_DIM, np.float32)
        for n, shape in (
            ("self_attn.q_proj", (N_EMBD, N_EMBD)),
            ("self_attn.k_proj", (32, N_EMBD)),
            ("self_attn.v_proj", (32, N_EMBD)),
            ("self_attn.o_proj", (N_EMBD, N_EMBD)),
            ("mlp.gate_proj", (N_FF, N_EMBD)),
            ("mlp.up_proj", (N_FF, N_EMBD)),
            ("mlp.down_proj", (N_EMBD, N_FF)),
        ):
            w[p + n + ".weight"] = rng.standard_normal(shape).astype(np.float32)
    w["model.norm.weight"] = np.zeros(N_EMBD, np.float32)
    save_file(w, str(d / "model.safetensors"))
    cfg = {
        "architectures": ["Gemma3ForCausalLM"],
        "hidden_size": N_EMBD,
        "intermediate_size": N_FF,
        "num_hidden_layers": N_LAYER,
        "num_attention_heads": N_HEAD,
        "num_key_value_heads": 2,
        "head_dim": HEAD_DIM,
        "vocab_size": n_vocab + 3,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "sliding_window": 512,
        "query_pre_attn_scalar": 256,
    }
    (d / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "g.gguf"
    rllm.convert(d, out, "bf16", pre_tokenizer="default")
    kv, tensors = read(out)
    theirs = rllm.GGUFFile(gemma_path)
    blk0 = sorted(t[0] for t in theirs.tensors() if t[0].startswith("blk.0."))
    assert sorted(n for n in tensors if n.startswith("blk.0.")) == blk0
    assert tensors["token_embd.weight"][1] == [N_EMBD, n_vocab]  # out-of-vocabulary rows dropped
    assert set(k for k in theirs.metadata() if k.startswith("gemma3.")) <= set(kv)
    r = gguf.GGUFReader(out)
    norm = r.tensors[[t.name for t in r.tensors].index("blk.0.attn_q_norm.weight")]
    assert np.all(np.asarray(norm.data) == 1.0), "Gemma's norms are stored as 1 + w"


def test_phi3_layout(tmp_path: Path) -> None:
    d = tmp_path / "hf"
    d.mkdir()
    write_spm_tokenizer(d)
    n_vocab = len(SPM_PIECES)
    rng = np.random.default_rng(2)
    w = {
        "model.embed_tokens.weight": rng.standard_normal((n_vocab, N_EMBD)).astype(np.float32),
        "lm_head.weight": rng.standard_normal((n_vocab, N_EMBD)).astype(np.float32),
        "model.norm.weight": np.ones(N_EMBD, np.float32),
    }
    for i in range(N_LAYER):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = np.ones(N_EMBD, np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(N_EMBD, np.float32)
        w[p + "self_attn.qkv_proj.weight"] = rng.standard_normal((3 * N_EMBD, N_EMBD)).astype(
            np.float32
        )
        w[p + "self_attn.o_proj.weight"] = rng.standard_normal((N_EMBD, N_EMBD)).astype(np.float32)
        w[p + "mlp.gate_up_proj.weight"] = rng.standard_normal((2 * N_FF, N_EMBD)).astype(
            np.float32
        )
        w[p + "mlp.down_proj.weight"] = rng.standard_normal((N_EMBD, N_FF)).astype(np.float32)
    save_file(w, str(d / "model.safetensors"))
    cfg = {
        "architectures": ["Phi3ForCausalLM"],
        "hidden_size": N_EMBD,
        "intermediate_size": N_FF,
        "num_hidden_layers": N_LAYER,
        "num_attention_heads": N_HEAD,
        "num_key_value_heads": N_HEAD,
        "vocab_size": n_vocab,
        "max_position_embeddings": 4096,
        "original_max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "sliding_window": 2047,
    }
    (d / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "p.gguf"
    rllm.convert(d, out, "f16")
    kv, tensors = read(out)
    assert [k for k in kv if k.startswith("phi3.")] == [
        "phi3.context_length", "phi3.rope.scaling.original_context_length", "phi3.embedding_length",
        "phi3.feed_forward_length", "phi3.block_count", "phi3.attention.head_count",
        "phi3.attention.head_count_kv", "phi3.attention.layer_norm_rms_epsilon",
        "phi3.rope.dimension_count", "phi3.rope.freq_base", "phi3.attention.sliding_window",
    ]  # fmt: skip
    assert tensors["blk.0.attn_qkv.weight"] == ("F16", [N_EMBD, 3 * N_EMBD])
    assert tensors["blk.0.ffn_up.weight"] == ("F16", [N_EMBD, 2 * N_FF])
    assert kv["tokenizer.ggml.add_bos_token"] is False


# --- errors and the command line ---------------------------------------------------------------


def test_errors_are_clear_and_leave_no_file(tmp_path: Path) -> None:
    d = tmp_path / "hf"
    write_checkpoint(d)
    out = tmp_path / "m.gguf"
    with pytest.raises(rllm.ConvertError, match="pre-tokenizer not recognized"):
        rllm.convert(d, out)
    with pytest.raises(rllm.ConvertError, match="unknown outtype"):
        rllm.convert(d, out, "q4_0", pre_tokenizer="llama-bpe")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPTBigCodeForCausalLM"]}))
    with pytest.raises(rllm.ConvertError, match="not supported"):
        rllm.convert(d, out)
    (d / "config.json").unlink()
    with pytest.raises(rllm.ConvertError, match="no config.json"):
        rllm.convert(d, out)
    (d / "config.json").write_text(json.dumps(cfg))
    st = d / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(rllm.ConvertError, match="outside the file"):
        rllm.convert(d, out, pre_tokenizer="llama-bpe")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_cli(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "hf")
    out = tmp_path / "m.gguf"
    cmd = [
        sys.executable,
        "-m",
        "rllm",
        "convert",
        str(tmp_path / "hf"),
        "--outfile",
        str(out),
        "--outtype",
        "q8_0",
        "--pre-tokenizer",
        "llama-bpe",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "blk.0.attn_q.weight" in r.stderr and "Q8_0" in r.stderr
    assert read(out)[1]["blk.0.ffn_up.weight"][0] == "Q8_0"
    r = subprocess.run([*cmd[:4], str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 1 and "not a directory" in r.stderr
