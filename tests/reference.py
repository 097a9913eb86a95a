"""A plain numpy (float64) forward pass of the decoder architectures rllm runs: the oracle that
rllm's logits are checked against on tiny random-weight models. Written from the model
definitions (Hugging Face's llama / qwen2 / gemma3 / phi3, ggml's rope), not from rllm."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LlamaHParams:
    """Everything a tiny model varies. Defaults describe a plain llama."""

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    rms_eps: float = 1e-5
    rope_base: float = 10000.0
    n_rot: int | None = None
    key_length: int | None = None
    arch: str = "llama"
    # "norm" rotates adjacent pairs (llama), "neox" the two halves (qwen2, gemma3, phi3).
    rope_style: str = "norm"
    # Rope scaling: None, or {"type": "linear" | "yarn", "factor": f, "orig_ctx": n}.
    rope_scaling: dict | None = None
    # Per-pair divisors of the rotation frequencies (llama3 rope_freqs / LongRoPE factors).
    rope_factors: list[float] | None = None
    rope_attn_factor: float = 1.0
    # Sliding window: size, and which layers use it (and rope base swa_rope_base).
    sliding_window: int | None = None
    swa_layers: list[bool] = field(default_factory=list)
    swa_rope_base: float = 10000.0
    embd_scale: float | None = None
    activation: str = "silu"  # or "gelu_tanh"
    attn_scale: float | None = None

    @property
    def head_dim(self) -> int:
        return self.key_length or self.n_embd // self.n_head


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope_angles(hp: LlamaHParams, pos: np.ndarray, base: float, scaled: bool) -> np.ndarray:
    """Rotation angles [n, n_rot/2] and the magnitude scale, as ggml's rope defines them."""
    n_rot = hp.n_rot or hp.head_dim
    i = np.arange(n_rot // 2)
    inv_freq = base ** (-2.0 * i / n_rot)
    if scaled and hp.rope_factors is not None:
        inv_freq = inv_freq / np.asarray(hp.rope_factors)
    extrap = pos[:, None] * inv_freq
    mscale = hp.rope_attn_factor if scaled else 1.0
    sc = hp.rope_scaling if scaled else None
    if sc is None:
        return extrap, mscale
    freq_scale = 1.0 / sc["factor"]
    interp = freq_scale * extrap
    if sc["type"] == "linear":
        return interp, mscale

    # YaRN: blend interpolation and extrapolation over a ramp of dimension pairs, and scale
    # magnitudes by 1 + 0.1 ln(factor).
    def corr_dim(beta: float) -> float:
        return n_rot * np.log(sc["orig_ctx"] / (beta * 2 * np.pi)) / (2 * np.log(base))

    low, high = max(0.0, np.floor(corr_dim(32.0))), min(n_rot - 1.0, np.ceil(corr_dim(1.0)))
    ramp = 1.0 - np.clip((i - low) / max(0.001, high - low), 0.0, 1.0)
    theta = interp * (1 - ramp) + extrap * ramp
    return theta, mscale * (1.0 + 0.1 * np.log(sc["factor"]))


def rope(x: np.ndarray, theta: np.ndarray, mscale: float, n_rot: int, style: str) -> np.ndarray:
    """Rotate the first n_rot dims of x [n, heads, head_dim] by theta [n, n_rot/2]."""
    c, s = np.cos(theta)[:, None, :] * mscale, np.sin(theta)[:, None, :] * mscale
    out = x.copy()
    if style == "norm":
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = a * c - b * s
        out[..., 1:n_rot:2] = a * s + b * c
    else:
        h = n_rot // 2
        a, b = x[..., :h], x[..., h:n_rot]
        out[..., :h] = a * c - b * s
        out[..., h:n_rot] = a * s + b * c
    return out


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def llama_forward(w: dict[str, np.ndarray], hp: LlamaHParams, ids: list[int]) -> np.ndarray:
    """Logits ``[len(ids), n_vocab]`` for ``ids`` at positions 0.. (causal attention)."""
    n, hd = len(ids), hp.head_dim
    n_rot = hp.n_rot or hd
    q_dim, kv_dim = hp.n_head * hd, hp.n_head_kv * hd
    pos = np.arange(n, dtype=np.float64)
    x = w["token_embd.weight"][ids].astype(np.float64)
    if hp.embd_scale:
        x = x * hp.embd_scale
    causal = np.triu(np.full((n, n), -np.inf), 1)
    scale = hp.attn_scale or 1.0 / np.sqrt(hd)
    for layer in range(hp.n_layer):
        p = f"blk.{layer}."
        swa = bool(hp.swa_layers and hp.swa_layers[layer])
        h = rms_norm(x, w[p + "attn_norm.weight"], hp.rms_eps)
        if p + "attn_qkv.weight" in w:
            qkv = h @ w[p + "attn_qkv.weight"].T
            q, k, v = qkv[:, :q_dim], qkv[:, q_dim : q_dim + kv_dim], qkv[:, q_dim + kv_dim :]
        else:
            q = h @ w[p + "attn_q.weight"].T
            k = h @ w[p + "attn_k.weight"].T
            v = h @ w[p + "attn_v.weight"].T
        for name, t in (("attn_q.bias", "q"), ("attn_k.bias", "k"), ("attn_v.bias", "v")):
            if p + name in w:
                if t == "q":
                    q = q + w[p + name]
                elif t == "k":
                    k = k + w[p + name]
                else:
                    v = v + w[p + name]
        q = q.reshape(n, hp.n_head, hd)
        k = k.reshape(n, hp.n_head_kv, hd)
        v = v.reshape(n, hp.n_head_kv, hd)
        if p + "attn_q_norm.weight" in w:
            q = rms_norm(q, w[p + "attn_q_norm.weight"], hp.rms_eps)
            k = rms_norm(k, w[p + "attn_k_norm.weight"], hp.rms_eps)
        base = hp.swa_rope_base if swa else hp.rope_base
        theta, mscale = rope_angles(hp, pos, base, scaled=not swa)
        q = rope(q, theta, mscale, n_rot, hp.rope_style)
        k = rope(k, theta, mscale, n_rot, hp.rope_style)
        group = hp.n_head // hp.n_head_kv
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        mask = causal.copy()
        if swa and hp.sliding_window:
            dist = np.arange(n)[:, None] - np.arange(n)[None, :]
            mask[dist >= hp.sliding_window] = -np.inf
        scores = np.einsum("qhd,khd->hqk", q, k) * scale + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        att = np.einsum("hqk,khd->qhd", scores, v).reshape(n, q_dim)
        o = att @ w[p + "attn_output.weight"].T
        if p + "post_attention_norm.weight" in w:
            o = rms_norm(o, w[p + "post_attention_norm.weight"], hp.rms_eps)
        x = x + o
        h = rms_norm(x, w[p + "ffn_norm.weight"], hp.rms_eps)
        if p + "ffn_gate.weight" in w:
            gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        else:
            gate, up = np.split(h @ w[p + "ffn_up.weight"].T, 2, axis=-1)
        act = gelu_tanh(gate) if hp.activation == "gelu_tanh" else gate / (1.0 + np.exp(-gate))
        f = (act * up) @ w[p + "ffn_down.weight"].T
        if p + "post_ffw_norm.weight" in w:
            f = rms_norm(f, w[p + "post_ffw_norm.weight"], hp.rms_eps)
        x = x + f
    x = rms_norm(x, w["output_norm.weight"], hp.rms_eps)
    out = w.get("output.weight", w["token_embd.weight"])
    return x @ out.T


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
