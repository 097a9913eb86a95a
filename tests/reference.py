"""A plain numpy (float64) forward pass of the llama architecture: the oracle that rllm's
logits are checked against on tiny random-weight models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LlamaHParams:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    rms_eps: float = 1e-5
    rope_base: float = 10000.0
    n_rot: int | None = None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope_norm(x: np.ndarray, pos: np.ndarray, n_rot: int, base: float) -> np.ndarray:
    """Rotate adjacent pairs (x[2i], x[2i+1]) of the first n_rot dims; x: [n, heads, head_dim]."""
    i = np.arange(n_rot // 2)
    theta = pos[:, None] * base ** (-2.0 * i / n_rot)
    c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    out = x.copy()
    a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
    out[..., 0:n_rot:2] = a * c - b * s
    out[..., 1:n_rot:2] = a * s + b * c
    return out


def llama_forward(w: dict[str, np.ndarray], hp: LlamaHParams, ids: list[int]) -> np.ndarray:
    """Logits ``[len(ids), n_vocab]`` for ``ids`` at positions 0.. (causal attention)."""
    n, hd = len(ids), hp.head_dim
    n_rot = hp.n_rot or hd
    pos = np.arange(n, dtype=np.float64)
    x = w["token_embd.weight"][ids].astype(np.float64)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for layer in range(hp.n_layer):
        p = f"blk.{layer}."
        h = rms_norm(x, w[p + "attn_norm.weight"], hp.rms_eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(n, hp.n_head, hd)
        k = (h @ w[p + "attn_k.weight"].T).reshape(n, hp.n_head_kv, hd)
        v = (h @ w[p + "attn_v.weight"].T).reshape(n, hp.n_head_kv, hd)
        q = rope_norm(q, pos, n_rot, hp.rope_base)
        k = rope_norm(k, pos, n_rot, hp.rope_base)
        group = hp.n_head // hp.n_head_kv
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        att = np.einsum("hqk,khd->qhd", scores, v).reshape(n, hp.n_head * hd)
        x = x + att @ w[p + "attn_output.weight"].T
        h = rms_norm(x, w[p + "ffn_norm.weight"], hp.rms_eps)
        gate = h @ w[p + "ffn_gate.weight"].T
        up = h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1.0 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    x = rms_norm(x, w["output_norm.weight"], hp.rms_eps)
    out = w.get("output.weight", w["token_embd.weight"])
    return x @ out.T


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
