"""Perplexity and KL-divergence of a model over a text, by llama-perplexity's method.

>>> result = rllm.perplexity("SmolLM2-135M-Instruct.Q4_1.gguf", text, n_ctx=512)  # doctest: +SKIP
>>> result.ppl, result.ppl_error                                             # doctest: +SKIP
(18.34, 0.86)

The method (llama.cpp ``tools/perplexity/perplexity.cpp``): tokenize the whole text (BOS as the
vocabulary asks), cut it into chunks of ``n_ctx`` tokens, evaluate each chunk from an empty
cache with its first token replaced by BOS when the vocabulary adds one, and score only the
second half of each chunk: the predictions of tokens ``n_ctx/2 + 1 .. n_ctx - 1``, so that every
scored token has at least ``n_ctx/2`` tokens of context. ``n_batch // n_ctx`` chunks share each
forward pass. PPL is ``exp`` of the mean negative log-likelihood; its error is the standard
error of that mean, times PPL.

KL-divergence: a run of the reference model with ``kl_divergence_base=FILE`` saves, for every
scored token, the log-probabilities of the whole vocabulary; :func:`kl_divergence` evaluates
another model (e.g. a quantized one) on the same tokens and compares. The file is
llama-perplexity's ``--kl-divergence-base`` format, so files written by either tool are read by
both::

    "_logits_"                   8 bytes
    n_ctx, n_vocab, n_chunk      int32 each
    tokens                       int32 [n_chunk, n_ctx]   (before the BOS replacement)
    per chunk, per scored token  uint16 [nv], nv = 2 * ceil(n_vocab / 2) + 4:
        float32 scale, float32 min_log_prob, then uint16 q[n_vocab] (zero padded), where
        log p(i) = scale * q[i] + min_log_prob over the 16 nats below the top token,
        and q[i] = 0 (log p = min_log_prob) below that.

That is 2 bytes per vocabulary entry and token (SmolLM2, 49152 tokens: 96 KiB per token,
about 24 MiB per chunk of 512): lossy only in the far tail, so the KL-divergence covers the
whole distribution rather than a top-k.

The forward passes run in Rust (``rllm._rllm.BatchEngine``); the per-token statistics are
vectorized numpy over the logits each pass returns.
"""

from __future__ import annotations

import math
import os
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO, Callable, Union

import numpy as np
import numpy.typing as npt

from . import _rllm
from .model import Model

__all__ = [
    "KLDivergenceResult",
    "PerplexityResult",
    "Progress",
    "kl_divergence",
    "perplexity",
    "read_text",
]

PathLike = Union[str, "os.PathLike[str]"]
LOGITS_MAGIC = b"_logits_"
_HEADER = struct.Struct("<8sIii")  # magic, n_ctx, n_vocab, n_chunk


# --- results ------------------------------------------------------------------------------


def _mean_and_error(values: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Mean and its standard error, as llama-perplexity computes them (no error for 10 values
    or fewer)."""
    n = values.size
    if n == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    var = float(np.mean(values * values)) - mean * mean
    return mean, math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0


def _covariance(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """Covariance of the means of ``a`` and ``b`` (llama-perplexity's, 0 below 10 values)."""
    n = a.size
    if n < 10:
        return 0.0
    return (float(np.mean(a * b)) - float(a.mean()) * float(b.mean())) / (n - 1)


@dataclass(frozen=True)
class PerplexityResult:
    """The outcome of :func:`perplexity`.

    ``nll[i, j]`` is the negative log-likelihood (nats) of the j-th scored token of chunk i;
    every statistic derives from it."""

    nll: npt.NDArray[np.float64]  # [n_chunks, n_scored]
    n_ctx: int
    n_tokens: int  # tokens of the whole text
    seconds: float  # wall time of the evaluation (tokenization excluded)

    @property
    def n_chunks(self) -> int:
        return int(self.nll.shape[0])

    @property
    def ppl(self) -> float:
        """The final estimate: exp of the mean negative log-likelihood."""
        return math.exp(float(self.nll.mean())) if self.nll.size else math.nan

    @property
    def ppl_error(self) -> float:
        """Standard error of :attr:`ppl` (llama-perplexity's ``+/-``)."""
        v = self.nll.ravel()
        if v.size < 2:
            return math.nan
        mean = float(v.mean())
        var = float(np.mean(v * v)) - mean * mean
        return math.sqrt(var / (v.size - 1)) * math.exp(mean) if var > 0 else math.nan

    @property
    def estimates(self) -> npt.NDArray[np.float64]:
        """The running estimate after each chunk (llama-perplexity's ``[1]16.32,[2]17.72,...``);
        the last one is :attr:`ppl`."""
        counts = np.arange(1, self.n_chunks + 1) * self.nll.shape[1]
        running: npt.NDArray[np.float64] = np.cumsum(self.nll.sum(axis=1)) / np.maximum(counts, 1)
        return np.exp(running)

    @property
    def chunk_ppl(self) -> npt.NDArray[np.float64]:
        """Each chunk's own perplexity."""
        mean: npt.NDArray[np.float64] = self.nll.mean(axis=1)
        return np.exp(mean)

    def __repr__(self) -> str:
        return (
            f"PerplexityResult(ppl={self.ppl:.4f}, ppl_error={self.ppl_error:.5f}, "
            f"n_chunks={self.n_chunks}, n_ctx={self.n_ctx})"
        )


_KLD_LEVELS = (0.999, 0.99, 0.95, 0.90)
_P_DIFF_LEVELS = (0.999, 0.99, 0.95, 0.90, 0.75)


@dataclass(frozen=True)
class KLDivergenceResult:
    """The outcome of :func:`kl_divergence`: model Q measured against the base file.

    Per scored token (``[n_chunks, n_scored]`` arrays): ``nll`` and ``nll_base`` (negative
    log-likelihood under Q and under the base), ``kld`` (KL(base || Q) in nats), ``p_diff``
    (probability of the right token under Q minus under the base), ``same_top`` (both put the
    same token first). Percentiles and medians use linear interpolation, as llama.cpp does."""

    nll: npt.NDArray[np.float64]
    nll_base: npt.NDArray[np.float64]
    kld: npt.NDArray[np.float64]
    p_diff: npt.NDArray[np.float64]
    same_top: npt.NDArray[np.bool_]
    n_ctx: int
    seconds: float
    _sorted: dict[str, npt.NDArray[np.float64]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def n_chunks(self) -> int:
        return int(self.nll.shape[0])

    @property
    def count(self) -> int:
        """Scored tokens."""
        return int(self.nll.size)

    @cached_property
    def _log_ppl(self) -> tuple[float, float]:
        return _mean_and_error(self.nll.ravel())

    @cached_property
    def _log_ppl_base(self) -> tuple[float, float]:
        return _mean_and_error(self.nll_base.ravel())

    @cached_property
    def _log_ppl_cov(self) -> float:
        return _covariance(self.nll.ravel(), self.nll_base.ravel())

    @property
    def ppl(self) -> float:
        return math.exp(self._log_ppl[0])

    @property
    def ppl_error(self) -> float:
        return self.ppl * self._log_ppl[1]

    @property
    def ppl_base(self) -> float:
        return math.exp(self._log_ppl_base[0])

    @property
    def ppl_base_error(self) -> float:
        return self.ppl_base * self._log_ppl_base[1]

    @property
    def ppl_correlation(self) -> float:
        """Correlation of ln PPL(Q) and ln PPL(base)."""
        denom = self._log_ppl[1] * self._log_ppl_base[1]
        return self._log_ppl_cov / denom if denom else math.nan

    @property
    def ln_ppl_ratio(self) -> float:
        """ln(PPL(Q) / PPL(base))."""
        return self._log_ppl[0] - self._log_ppl_base[0]

    @property
    def ln_ppl_ratio_error(self) -> float:
        var = self._log_ppl[1] ** 2 + self._log_ppl_base[1] ** 2 - 2.0 * self._log_ppl_cov
        return math.sqrt(max(var, 0.0))

    @property
    def ppl_ratio(self) -> float:
        return math.exp(self.ln_ppl_ratio)

    @property
    def ppl_ratio_error(self) -> float:
        return self.ppl_ratio * self.ln_ppl_ratio_error

    @property
    def ppl_diff(self) -> float:
        return self.ppl - self.ppl_base

    @property
    def ppl_diff_error(self) -> float:
        cov = self.ppl * self.ppl_base * self._log_ppl_cov
        var = self.ppl_error**2 + self.ppl_base_error**2 - 2.0 * cov
        return math.sqrt(max(var, 0.0))

    @property
    def kld_mean(self) -> float:
        return _mean_and_error(self.kld.ravel())[0]

    @property
    def kld_error(self) -> float:
        return _mean_and_error(self.kld.ravel())[1]

    def _sorted_values(self, name: str) -> npt.NDArray[np.float64]:
        if name not in self._sorted:
            self._sorted[name] = np.sort(getattr(self, name).ravel())
        return self._sorted[name]

    def kld_quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the per-token KL-divergence; 0.5 is the median."""
        return float(np.quantile(self._sorted_values("kld"), q))

    def p_diff_quantile(self, q: float) -> float:
        return float(np.quantile(self._sorted_values("p_diff"), q))

    @property
    def kld_median(self) -> float:
        return self.kld_quantile(0.5)

    @property
    def p_diff_mean(self) -> float:
        return _mean_and_error(self.p_diff.ravel())[0]

    @property
    def p_diff_error(self) -> float:
        return _mean_and_error(self.p_diff.ravel())[1]

    @cached_property
    def _p_diff_mse(self) -> tuple[float, float]:
        return _mean_and_error(self.p_diff.ravel() ** 2)

    @property
    def p_diff_rms(self) -> float:
        """Root mean square of :attr:`p_diff`."""
        return math.sqrt(self._p_diff_mse[0])

    @property
    def p_diff_rms_error(self) -> float:
        rms = self.p_diff_rms
        return 0.5 / rms * self._p_diff_mse[1] if rms else 0.0

    @property
    def same_top_p(self) -> float:
        """Fraction of scored tokens where Q and the base agree on the most likely token."""
        return float(self.same_top.mean()) if self.count else math.nan

    @property
    def same_top_p_error(self) -> float:
        p, n = self.same_top_p, self.count
        return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else math.nan

    def table_row(self) -> str:
        """The running line llama-perplexity prints after each chunk."""
        return (
            f"{self.n_chunks:4d}"
            f"    {self.ppl:9.4f} ± {self.ppl_error:9.4f}"
            f"    {self.ln_ppl_ratio:10.5f} ± {self.ln_ppl_ratio_error:10.5f}"
            f"    {self.kld_mean:10.5f} ± {self.kld_error:10.5f}"
            f"    {100 * self.p_diff_rms:6.3f} ± {100 * self.p_diff_rms_error:6.3f} %"
            f"    {100 * self.same_top_p:6.3f} ± {100 * self.same_top_p_error:6.3f} %"
        )

    TABLE_HEADER = (
        "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence"
        "              Δp RMS            Same top p"
    )

    def report(self) -> str:
        """llama-perplexity's closing statistics (perplexity, KL-divergence, token probability)."""
        pct = 100.0
        lines = [
            "====== Perplexity statistics ======",
            f"Mean PPL(Q)                   : {self.ppl:10.6f} ± {self.ppl_error:10.6f}",
            f"Mean PPL(base)                : {self.ppl_base:10.6f} ± {self.ppl_base_error:10.6f}",
            f"Cor(ln(PPL(Q)), ln(PPL(base))): {pct * self.ppl_correlation:6.2f}%",
            f"Mean ln(PPL(Q)/PPL(base))     : {self.ln_ppl_ratio:10.6f} ± "
            f"{self.ln_ppl_ratio_error:10.6f}",
            f"Mean PPL(Q)/PPL(base)         : {self.ppl_ratio:10.6f} ± "
            f"{self.ppl_ratio_error:10.6f}",
            f"Mean PPL(Q)-PPL(base)         : {self.ppl_diff:10.6f} ± {self.ppl_diff_error:10.6f}",
            "",
            "====== KL divergence statistics ======",
            f"Mean    KLD: {self.kld_mean:10.6f} ± {self.kld_error:10.6f}",
            f"Maximum KLD: {self.kld_quantile(1.0):10.6f}",
        ]
        lines += [f"{pct * q:4.1f}%   KLD: {self.kld_quantile(q):10.6f}" for q in _KLD_LEVELS]
        lines.append(f"Median  KLD: {self.kld_median:10.6f}")
        lines += [f"{pct * q:4.1f}%   KLD: {self.kld_quantile(q):10.6f}" for q in (0.1, 0.05)]
        lines += [f"{pct * q:4.1f}%   KLD: {self.kld_quantile(q):10.6f}" for q in (0.01, 0.001)]
        lines += [
            f"Minimum KLD: {self.kld_quantile(0.0):10.6f}",
            "",
            "====== Token probability statistics ======",
            f"Mean    Δp: {pct * self.p_diff_mean:6.3f} ± {pct * self.p_diff_error:5.3f} %",
            f"Maximum Δp: {pct * self.p_diff_quantile(1.0):6.3f}%",
        ]
        lines += [
            f"{pct * q:4.1f}%   Δp: {pct * self.p_diff_quantile(q):6.3f}%" for q in _P_DIFF_LEVELS
        ]
        lines.append(f"Median  Δp: {pct * self.p_diff_quantile(0.5):6.3f}%")
        lines += [
            f"{pct * q:4.1f}%   Δp: {pct * self.p_diff_quantile(q):6.3f}%"
            for q in (0.25, 0.10, 0.05, 0.01, 0.001)
        ]
        lines += [
            f"Minimum Δp: {pct * self.p_diff_quantile(0.0):6.3f}%",
            f"RMS Δp    : {pct * self.p_diff_rms:6.3f} ± {pct * self.p_diff_rms_error:5.3f} %",
            f"Same top p: {pct * self.same_top_p:6.3f} ± {pct * self.same_top_p_error:5.3f} %",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"KLDivergenceResult(kld_mean={self.kld_mean:.6f}, ppl={self.ppl:.4f}, "
            f"ppl_base={self.ppl_base:.4f}, same_top_p={self.same_top_p:.4f}, "
            f"n_chunks={self.n_chunks})"
        )


@dataclass(frozen=True)
class Progress:
    """Where a run stands, for the ``progress`` callback: called once with ``done == 0`` before
    the first forward pass, then after each chunk is scored with the result so far."""

    done: int  # chunks scored
    n_chunks: int
    n_ctx: int  # tokens per chunk (per window in strided mode)
    n_seq: int  # chunks per forward batch
    n_batch: int  # tokens per forward pass
    n_tokens: int  # tokens of the text (or of the base file)
    pass_seconds: float  # wall time of the first forward batch; 0 before it ran
    result: PerplexityResult | KLDivergenceResult | None

    @property
    def eta_seconds(self) -> float:
        """llama-perplexity's estimate of the whole run: the first batch's time per batch."""
        return self.pass_seconds * self.n_chunks / self.n_seq


ProgressFn = Callable[[Progress], None]


# --- reading the text ---------------------------------------------------------------------


def read_text(path: PathLike) -> str:
    """The text of ``path`` as llama-perplexity's ``-f`` reads it (one trailing newline
    dropped). A missing file raises OSError; a binary (NUL bytes, not UTF-8) one ValueError."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise OSError(f"cannot read text file {os.fspath(path)}: {e.strerror or e}") from None
    if b"\0" in data:
        raise ValueError(f"{os.fspath(path)} is a binary file, not text (it holds NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{os.fspath(path)} is not UTF-8 text (bad byte at offset {e.start})"
        ) from None
    return text[:-1] if text.endswith("\n") else text


# --- evaluation ---------------------------------------------------------------------------


def _as_model(model: Model | PathLike, n_threads: int | None) -> Model:
    if isinstance(model, Model):
        return model
    return Model(model, n_threads=n_threads)


def _positive(name: str, value: int | None, low: int = 1) -> None:
    if value is not None and (not isinstance(value, int) or value < low):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass
class _Plan:
    """How a run cuts its tokens: windows of ``n_window`` tokens starting ``step`` apart, each
    scoring the logits of rows ``[first, last)``; ``n_seq`` windows per forward batch."""

    n_window: int
    step: int
    first: int
    last: int
    n_chunks: int
    n_seq: int
    n_batch: int
    bos: int | None  # replaces each window's first token, when the vocabulary adds BOS


def _engine(model: Model, plan: _Plan, n_threads: int | None) -> _rllm.BatchEngine:
    n_slots = min(plan.n_seq, plan.n_chunks)  # no cache for slots that would stay empty
    return _rllm.BatchEngine(
        model._model,
        n_slots=n_slots,
        n_ctx=plan.n_window,
        n_threads=n_threads or model.n_threads,
        n_batch=min(plan.n_batch, n_slots * plan.n_window),
        rope_freq_base=model.rope_freq_base,
        rope_freq_scale=model.rope_freq_scale,
    )


def _windows(
    engine: _rllm.BatchEngine, tokens: npt.NDArray[np.int32], plan: _Plan
) -> Iterator[tuple[int, npt.NDArray[np.float32], float]]:
    """``(chunk, logits [last - first, n_vocab], seconds of its forward batch)`` per chunk, in
    order; ``plan.n_seq`` chunks share each batch, each from an empty cache."""
    for i in range(0, plan.n_chunks, plan.n_seq):
        work = []
        for slot, chunk in enumerate(range(i, min(i + plan.n_seq, plan.n_chunks))):
            start = chunk * plan.step
            ids = tokens[start : start + plan.n_window].tolist()
            if plan.bos is not None:
                ids[0] = plan.bos
            engine.truncate(slot, 0)
            work.append((slot, ids, plan.first, plan.last))
        t0 = time.perf_counter()
        out = engine.step(work)
        seconds = time.perf_counter() - t0
        for k, logits in enumerate(out):
            yield i + k, logits, seconds


def _targets(tokens: npt.NDArray[np.int32], plan: _Plan, chunk: int) -> npt.NDArray[np.intp]:
    """The tokens the scored rows predict: each row's next token."""
    start = chunk * plan.step
    return tokens[start + plan.first + 1 : start + plan.last + 1].astype(np.intp)


def _log_softmax_parts(
    logits: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Per row: the largest logit, and log of sum(exp(logit - largest)) (summed in float64,
    as llama.cpp does)."""
    top = logits.max(axis=1)
    shifted = logits - top[:, None]
    np.exp(shifted, out=shifted)
    return top, np.log(shifted.sum(axis=1, dtype=np.float64))


def _nll(logits: npt.NDArray[np.float32], targets: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    top, lse = _log_softmax_parts(logits)
    picked = logits[np.arange(len(targets)), targets] - top
    return lse - picked.astype(np.float64)


def _quantize_log_probs(logits: npt.NDArray[np.float32], nv: int) -> npt.NDArray[np.uint16]:
    """Rows of the base file: llama-perplexity's 16-bit log-probabilities of ``logits``."""
    rows, n_vocab = logits.shape
    top, lse = _log_softmax_parts(logits)
    low = np.maximum(logits.min(axis=1), top - np.float32(16))
    scale = (top - low) / np.float32(65535)
    min_log_prob = low - top - lse.astype(np.float32)
    out = np.zeros((rows, nv), dtype=np.uint16)
    out[:, :4] = np.stack([scale, min_log_prob], axis=1).astype(np.float32).view(np.uint16)
    with np.errstate(divide="ignore"):
        inv = np.where(scale > 0, np.float32(1) / scale, np.float32(0)).astype(np.float32)
    q = np.rint(inv[:, None] * (logits - low[:, None]))  # round half to even, like ggml
    np.clip(q, 0, 65535, out=q)
    q[logits <= low[:, None]] = 0
    out[:, 4 : 4 + n_vocab] = q
    return out


def _compare(
    logits: npt.NDArray[np.float32], targets: npt.NDArray[np.intp], base: npt.NDArray[np.uint16]
) -> tuple[np.ndarray, ...]:
    """Per row: nll under Q, nll under the base, KL(base || Q), Δp, same top token."""
    rows, n_vocab = logits.shape
    r = np.arange(rows)
    top, lse64 = _log_softmax_parts(logits)
    lse = lse64.astype(np.float32)
    nll = top + lse - logits[r, targets]
    head = np.ascontiguousarray(base[:, :4]).view(np.float32)
    scale, min_log_prob = head[:, 0:1], head[:, 1:2]
    log_p_base = base[:, 4 : 4 + n_vocab] * scale + min_log_prob  # float32 [rows, n_vocab]
    nll_base = -log_p_base[r, targets]
    same_top = logits.argmax(axis=1) == log_p_base.argmax(axis=1)
    # KL(base || Q) = sum p_base * (log p_base - log q), over tokens the base gives > e^-16.
    terms = (log_p_base - logits) + (top + lse)[:, None]
    keep = log_p_base > -16
    np.exp(log_p_base, out=log_p_base)
    terms *= log_p_base
    terms[~keep] = 0
    kld = terms.sum(axis=1, dtype=np.float64)
    p_diff = np.exp(-nll) - np.exp(-nll_base)
    return (
        nll.astype(np.float64),
        nll_base.astype(np.float64),
        kld,
        p_diff.astype(np.float64),
        same_top,
    )


def _check_base_rows(rows: npt.NDArray[np.uint16], name: str, chunk: int) -> None:
    """Each row of a base file starts with its float32 scale and minimum log-probability;
    llama-perplexity writes a scale of at most 16 / 65535 (log-probabilities within e^-16 of
    the top one) and a minimum <= 0. Anything else is a corrupt file, which would otherwise
    turn into overflows and NaNs."""
    head = np.ascontiguousarray(rows[:, :4]).view(np.float32)
    scale, min_log_prob = head[:, 0], head[:, 1]
    with np.errstate(invalid="ignore"):
        ok = (scale >= 0) & (scale <= 1e-3) & (min_log_prob <= 0) & (min_log_prob >= -1e4)
    if not ok.all():
        row = int(np.argmin(ok))
        raise ValueError(
            f"{name}: row {row} of chunk {chunk} has scale {scale[row]} and minimum "
            f"{min_log_prob[row]}, not a log-probability row: corrupt file"
        )


def _n_seq_and_batch(n_batch: int, n_window: int) -> tuple[int, int]:
    """llama-perplexity's sequences per batch and effective batch size."""
    n_seq = max(1, n_batch // n_window)
    return n_seq, min(n_batch, n_seq * n_window)


def perplexity(
    model: Model | PathLike,
    text: str | Sequence[int],
    n_ctx: int = 512,
    *,
    n_batch: int = 2048,
    n_chunks: int | None = None,
    n_threads: int | None = None,
    ppl_stride: int = 0,
    kl_divergence_base: PathLike | None = None,
    progress: ProgressFn | None = None,
) -> PerplexityResult:
    """The perplexity of ``model`` (an :class:`rllm.Model` or a GGUF path) over ``text``, by
    llama-perplexity's method (see the module's doc); ``text`` may also be token ids, used as
    they are.

    ``n_batch // n_ctx`` chunks share each forward pass (``n_batch`` tokens); ``n_chunks``
    limits the chunks (default: all whole chunks). ``ppl_stride > 0`` is llama-perplexity's
    strided mode: windows of ``n_ctx + ppl_stride // 2`` tokens rounded up to a multiple of
    256, ``ppl_stride`` apart, each scoring its last ``ppl_stride`` tokens (no BOS
    replacement), as llama-perplexity does with ``-b`` no larger than ``-c`` (a larger ``-b``
    makes its windows ``-b / -c`` times longer; rllm's do not change with ``n_batch``).

    ``kl_divergence_base`` saves the log-probabilities of every scored token there, for
    :func:`kl_divergence`. ``progress(Progress)`` is called before the first pass and after
    each chunk.

    A text of fewer than ``2 * n_ctx`` tokens (2 windows in strided mode) raises ValueError, as
    llama-perplexity refuses it.
    """
    _positive("n_ctx", n_ctx, 4)
    _positive("n_batch", n_batch)
    _positive("n_chunks", n_chunks)
    _positive("n_threads", n_threads)
    _positive("ppl_stride", ppl_stride, 0)
    if ppl_stride > n_ctx:
        raise ValueError(f"ppl_stride must be at most n_ctx ({n_ctx}), got {ppl_stride}")
    if ppl_stride and kl_divergence_base is not None:
        raise ValueError("kl_divergence_base cannot be saved in strided mode (ppl_stride > 0)")
    model = _as_model(model, n_threads)
    tok = model.tokenizer
    if isinstance(text, str):
        ids = tok.encode(text, add_special=True, parse_special=False)
    else:
        ids = [int(t) for t in text]
    tokens = np.asarray(ids, dtype=np.int32)
    # Strided windows are llama-perplexity's context: n_ctx + stride/2, padded as llama.cpp
    # pads every context, to a multiple of 256.
    n_window = -(-(n_ctx + ppl_stride // 2) // 256) * 256 if ppl_stride else n_ctx
    if len(tokens) < 2 * n_window:
        raise ValueError(
            f"you need at least {2 * n_window} tokens to evaluate perplexity with a context of "
            f"{n_window}; the text tokenizes to only {len(tokens)} tokens"
        )
    if ppl_stride:
        most = (len(tokens) - n_window + ppl_stride - 1) // ppl_stride
        first, last, step, bos = n_window - ppl_stride - 1, n_window - 1, ppl_stride, None
    else:
        most = len(tokens) // n_ctx
        first, last, step = n_ctx // 2, n_ctx - 1, n_ctx
        bos = tok.bos_id if tok.add_bos else None
    n_seq, batch = _n_seq_and_batch(n_batch, n_window)
    plan = _Plan(n_window, step, first, last, min(most, n_chunks or most), n_seq, batch, bos)
    engine = _engine(model, plan, n_threads)

    out: BinaryIO | None = None
    nv = 2 * ((model.n_vocab + 1) // 2) + 4
    if kl_divergence_base is not None:
        try:
            out = open(kl_divergence_base, "wb")  # closed below
        except OSError as e:
            raise OSError(f"cannot write {os.fspath(kl_divergence_base)}: {e.strerror}") from None
        out.write(_HEADER.pack(LOGITS_MAGIC, n_ctx, model.n_vocab, plan.n_chunks))
        out.write(tokens[: plan.n_chunks * n_ctx].astype("<i4").tobytes())
    nll = np.empty((plan.n_chunks, last - first), dtype=np.float64)
    start = time.perf_counter()
    report = _reporter(progress, plan, len(tokens))
    try:
        report(0, 0.0, None)
        for chunk, logits, seconds in _windows(engine, tokens, plan):
            if out is not None:
                out.write(_quantize_log_probs(logits, nv).tobytes())
            nll[chunk] = _nll(logits, _targets(tokens, plan, chunk))
            if progress is not None:
                partial = PerplexityResult(
                    nll[: chunk + 1], n_ctx, len(tokens), time.perf_counter() - start
                )
                report(chunk + 1, seconds, partial)
    finally:
        if out is not None:
            out.close()
    return PerplexityResult(nll, n_ctx, len(tokens), time.perf_counter() - start)


def _reporter(
    progress: ProgressFn | None, plan: _Plan, n_tokens: int
) -> Callable[[int, float, PerplexityResult | KLDivergenceResult | None], None]:
    first_pass = [0.0]

    def report(
        done: int, seconds: float, result: PerplexityResult | KLDivergenceResult | None
    ) -> None:
        if done and not first_pass[0]:
            first_pass[0] = seconds
        if progress is not None:
            progress(
                Progress(
                    done,
                    plan.n_chunks,
                    plan.n_window,
                    plan.n_seq,
                    plan.n_batch,
                    n_tokens,
                    first_pass[0],
                    result,
                )
            )

    return report


def _read_base(path: PathLike) -> tuple[int, int, npt.NDArray[np.int32], np.memmap]:
    """``(n_ctx, n_vocab, tokens [n_chunk, n_ctx], log-prob rows [n_chunk, n_rows, nv])`` of a
    base file, after checking that its size matches its header."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise OSError(f"cannot read KL-divergence base file {name}: {e.strerror or e}") from None
    if len(head) < _HEADER.size or head[:8] != LOGITS_MAGIC:
        raise ValueError(f"{name} does not look like a file of log-probabilities (no _logits_)")
    _, n_ctx, n_vocab, n_chunk = _HEADER.unpack(head)
    if n_ctx < 4 or n_vocab < 1 or n_chunk < 1:
        raise ValueError(
            f"{name}: bad header (n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk})"
        )
    nv = 2 * ((n_vocab + 1) // 2) + 4
    n_rows = n_ctx - 1 - n_ctx // 2
    body = _HEADER.size + 4 * n_ctx * n_chunk
    expected = body + 2 * n_chunk * n_rows * nv
    if size != expected:
        raise ValueError(
            f"{name} holds {size} bytes, but its header (n_ctx {n_ctx}, n_vocab {n_vocab}, "
            f"{n_chunk} chunks) needs {expected}: truncated or not a log-probability file"
        )
    tokens = np.fromfile(name, dtype="<i4", count=n_ctx * n_chunk, offset=_HEADER.size)
    outside = (tokens < 0) | (tokens >= n_vocab)
    if outside.any():
        at = int(np.argmax(outside))
        raise ValueError(
            f"{name}: token {at} is id {int(tokens[at])}, outside its vocabulary of {n_vocab}: "
            "corrupt or not a log-probability file"
        )
    rows = np.memmap(name, dtype="<u2", mode="r", offset=body, shape=(n_chunk, n_rows, nv))
    return n_ctx, n_vocab, tokens.astype(np.int32), rows


def kl_divergence(
    model: Model | PathLike,
    base: PathLike,
    *,
    n_batch: int = 2048,
    n_chunks: int | None = None,
    n_threads: int | None = None,
    progress: ProgressFn | None = None,
) -> KLDivergenceResult:
    """Compare ``model`` with the reference run saved in ``base`` (by :func:`perplexity` with
    ``kl_divergence_base``, or llama-perplexity's ``--kl-divergence-base``) on the same tokens
    and chunks (``n_ctx`` comes from the file). ``n_chunks`` limits the chunks compared."""
    _positive("n_batch", n_batch)
    _positive("n_chunks", n_chunks)
    _positive("n_threads", n_threads)
    n_ctx, n_vocab, tokens, rows = _read_base(base)
    model = _as_model(model, n_threads)
    if n_vocab != model.n_vocab:
        raise ValueError(
            f"{os.fspath(base)} was made with a vocabulary of {n_vocab} tokens, the model has "
            f"{model.n_vocab}: not the same tokenizer"
        )
    n_file = rows.shape[0]
    n_seq, batch = _n_seq_and_batch(n_batch, n_ctx)
    tok = model.tokenizer
    bos = tok.bos_id if tok.add_bos else None
    n_chunks = min(n_file, n_chunks or n_file)
    plan = _Plan(n_ctx, n_ctx, n_ctx // 2, n_ctx - 1, n_chunks, n_seq, batch, bos)
    engine = _engine(model, plan, n_threads)
    shape = (plan.n_chunks, plan.last - plan.first)
    parts = [np.empty(shape) for _ in range(4)]
    same_top = np.empty(shape, dtype=np.bool_)
    start = time.perf_counter()
    report = _reporter(progress, plan, len(tokens))

    def result(n: int) -> KLDivergenceResult:
        nll, nll_base, kld, p_diff = (a[:n] for a in parts)
        return KLDivergenceResult(
            nll, nll_base, kld, p_diff, same_top[:n], n_ctx, time.perf_counter() - start
        )

    report(0, 0.0, None)
    for chunk, logits, seconds in _windows(engine, tokens, plan):
        base_rows = np.asarray(rows[chunk])
        _check_base_rows(base_rows, os.fspath(base), chunk)
        values = _compare(logits, _targets(tokens, plan, chunk), base_rows)
        for dest, v in zip(parts, values[:4]):
            dest[chunk] = v
        same_top[chunk] = values[4]
        if progress is not None:
            report(chunk + 1, seconds, result(chunk + 1))
    return result(plan.n_chunks)
