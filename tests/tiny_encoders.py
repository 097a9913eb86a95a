"""Tiny random-weight embedding models (``bert``, ``nomic-bert``) written with the ``gguf``
package, with a small WordPiece vocabulary. Deterministic, so the llama.cpp fixtures made from
them (tests/fixtures/make_embedding_fixtures.py) stay valid."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

# [PAD] [UNK] [CLS] [SEP] [MASK], word-initial pieces (with "▁"), continuation pieces.
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORDS = "the cat sat on mat dog run hello world rust fast embed quick brown fox a is".split()
PUNCT = list(".,!?'-")
VOCAB = [
    *SPECIAL,
    *("\u2581" + w for w in WORDS),
    *("\u2581" + c for c in LETTERS + "0123456789"),
    *("\u2581" + p for p in PUNCT),
    *LETTERS,
    *"0123456789",
    "ing",
    "ed",
    "s",
    "ly",
]
VOCAB = list(dict.fromkeys(VOCAB))  # "s" is also a letter

# name -> (architecture, writer options)
ENCODERS: dict[str, dict] = {
    # bert: learned positions, GELU FFN with biases, lowercasing tokenizer, mean pooling.
    "bert": {"arch": "bert", "pooling": gguf.PoolingType.MEAN, "lowercase": True},
    # bert with CLS pooling, fused QKV, and case kept.
    "bert_cls": {
        "arch": "bert",
        "pooling": gguf.PoolingType.CLS,
        "fused": True,
        "lowercase": False,
    },
    # nomic-bert: rotary positions, SwiGLU FFN, no biases on the FFN.
    "nomic_bert": {"arch": "nomic-bert", "pooling": gguf.PoolingType.MEAN, "lowercase": True},
    # A reranker: rank pooling through the classifier head.
    "bert_rank": {"arch": "bert", "pooling": gguf.PoolingType.RANK, "lowercase": True, "cls": True},
}

N_EMBD, N_HEAD, N_FF, N_LAYER, N_CTX_TRAIN = 64, 4, 128, 2, 512


def write_encoder(
    path: Path,
    arch: str = "bert",
    pooling: int | None = gguf.PoolingType.MEAN,
    lowercase: bool = True,
    fused: bool = False,
    cls: bool = False,
    seed: int = 0,
    omit: tuple[str, ...] = (),
    token_type_count: int = 2,
) -> None:
    """Write a tiny ``arch`` encoder. ``omit`` drops tensors or metadata keys (for tests of
    broken files)."""
    rng = np.random.default_rng(seed)
    e, f, n_vocab = N_EMBD, N_FF, len(VOCAB)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(e)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(f)
    w.add_head_count(N_HEAD)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    if pooling is not None:  # any number, for tests of bad files
        w.add_uint32(f"{arch}.pooling_type", int(pooling))
    if arch == "nomic-bert":
        w.add_rope_freq_base(1000.0)
    w.add_tokenizer_model("bert")
    w.add_token_list(VOCAB)
    w.add_token_types([3 if t in SPECIAL else 1 for t in VOCAB])
    w.add_token_type_count(token_type_count)
    w.add_pad_token_id(0)
    w.add_unk_token_id(1)
    w.add_bos_token_id(2)
    w.add_sep_token_id(3)
    w.add_mask_token_id(4)
    if not lowercase:  # llama.cpp lowercases unless told not to
        w.add_bool("tokenizer.ggml.normalizer.lowercase", False)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def vec(n: int, around: float, scale: float) -> np.ndarray:
        return (around + scale * rng.standard_normal(n)).astype(np.float32)

    tensors: dict[str, np.ndarray] = {
        "token_embd.weight": mat(n_vocab, e) * 4,
        "token_types.weight": mat(2, e),
        "token_embd_norm.weight": vec(e, 1.0, 0.1),
        "token_embd_norm.bias": vec(e, 0.0, 0.1),
    }
    if arch == "bert":
        tensors["position_embd.weight"] = mat(N_CTX_TRAIN, e)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        if fused:
            tensors[p + "attn_qkv.weight"] = mat(3 * e, e)
            tensors[p + "attn_qkv.bias"] = vec(3 * e, 0.0, 0.1)
        else:
            for x in "qkv":
                tensors[p + f"attn_{x}.weight"] = mat(e, e)
                tensors[p + f"attn_{x}.bias"] = vec(e, 0.0, 0.1)
        tensors[p + "attn_output.weight"] = mat(e, e)
        tensors[p + "attn_output.bias"] = vec(e, 0.0, 0.1)
        tensors[p + "attn_output_norm.weight"] = vec(e, 1.0, 0.1)
        tensors[p + "attn_output_norm.bias"] = vec(e, 0.0, 0.1)
        tensors[p + "ffn_up.weight"] = mat(f, e)
        tensors[p + "ffn_down.weight"] = mat(e, f)
        if arch == "bert":
            tensors[p + "ffn_up.bias"] = vec(f, 0.0, 0.1)
            tensors[p + "ffn_down.bias"] = vec(e, 0.0, 0.1)
        else:
            tensors[p + "ffn_gate.weight"] = mat(f, e)
        tensors[p + "layer_output_norm.weight"] = vec(e, 1.0, 0.1)
        tensors[p + "layer_output_norm.bias"] = vec(e, 0.0, 0.1)
    if cls:
        tensors["cls.weight"] = mat(e, e)
        tensors["cls.bias"] = vec(e, 0.0, 0.1)
        tensors["cls.output.weight"] = mat(1, e)
        tensors["cls.output.bias"] = vec(1, 0.0, 0.1)
    for name, data in tensors.items():
        if name not in omit:
            w.add_tensor(name, data)
    for key in omit:
        w.kv_data[0].pop(key, None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_named(path: Path, name: str) -> None:
    write_encoder(path, **ENCODERS[name])
