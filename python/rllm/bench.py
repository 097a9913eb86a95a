"""Prompt-processing and generation speed, measured the way llama-bench measures it.

``ppN``: one batch of N prompt tokens into an empty context. ``tgN``: N single-token decodes
from an empty context. Each test runs once to warm up, then ``reps`` times; t/s is reported as
mean ± standard deviation. For generation, the memory-bandwidth roofline (bandwidth ÷ bytes of
weights read per token) says how close decoding comes to the machine's limit.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from . import _rllm

__all__ = ["BenchResult", "bench", "cpu_name", "memory_bandwidth", "system_info"]


@dataclass
class BenchResult:
    model: str
    arch: str
    size_bytes: int
    n_params: int
    threads: int
    test: str
    n_tokens: int
    samples: list[float]
    bandwidth_gbs: float | None = None
    roofline_tps: float | None = None
    # Why the test did not run (e.g. longer than the model's context), if it did not.
    skipped: str | None = None
    # With ``profile``: milliseconds per run in the forward pass, and the share of that time
    # in each kind of op ("matmul" includes "quantize"; "other" is the rest).
    forward_ms: float | None = None
    op_shares: dict[str, float] | None = None

    @property
    def tps(self) -> float:
        return statistics.fmean(self.samples) if self.samples else 0.0

    @property
    def tps_sd(self) -> float:
        return statistics.stdev(self.samples) if len(self.samples) > 1 else 0.0

    @property
    def roofline_fraction(self) -> float | None:
        return self.tps / self.roofline_tps if self.roofline_tps else None

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(tps=self.tps, tps_sd=self.tps_sd, roofline_fraction=self.roofline_fraction)
        d.update(cpu=cpu_name(), isa=_rllm.active_isa())
        return d


@functools.cache
def cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo, else what the platform says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def system_info() -> str:
    """One line for every benchmark table: the CPU, its core count, and rllm's kernel tier
    (the ISA the kernels run; ``RLLM_ISA`` forces one) with the tiers this CPU supports."""
    isas = ", ".join(_rllm.available_isas())
    return (
        f"CPU: {cpu_name()} ({os.cpu_count()} logical cores); "
        f"rllm kernels: {_rllm.active_isa()} (this CPU supports: {isas})"
    )


def memory_bandwidth(n_threads: int) -> float:
    """Read-only memory bandwidth of this machine in GB/s with ``n_threads`` threads."""
    return _rllm.memory_bandwidth(n_threads)


def _check(name: str, values: Sequence[int], minimum: int) -> None:
    if not values:
        raise ValueError(f"{name}: give at least one value")
    for v in values:
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {v}")


def bench(
    path: str | os.PathLike[str],
    n_prompt: Sequence[int] = (512,),
    n_gen: Sequence[int] = (128,),
    threads: Sequence[int] = (os.cpu_count() or 1,),
    reps: int = 5,
    roofline: bool = True,
    profile: bool = False,
) -> list[BenchResult]:
    """Run every ppN and tgN test at every thread count on the model at ``path``; with
    ``profile``, also time the forward pass's ops over the timed runs."""
    _check("n_prompt", n_prompt, 0)
    _check("n_gen", n_gen, 0)
    _check("threads", threads, 1)
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    model = _rllm.Model(path)
    rng = np.random.default_rng(0)
    tests = [("pp", n) for n in n_prompt if n > 0] + [("tg", n) for n in n_gen if n > 0]
    results = []
    for t in threads:
        bandwidth = memory_bandwidth(t) if roofline else None
        for kind, n in tests:
            row = BenchResult(
                model=os.path.basename(os.fspath(path)),
                arch=model.arch,
                size_bytes=model.size,
                n_params=model.n_params,
                threads=t,
                test=f"{kind}{n}",
                n_tokens=n,
                samples=[],
                bandwidth_gbs=bandwidth,
            )
            results.append(row)
            if n > model.n_ctx_train:
                row.skipped = f"{n} tokens exceed the model's context of {model.n_ctx_train}"
                continue
            ids = rng.integers(0, model.n_vocab, size=n).tolist()
            ctx = _rllm.Context(model, n_ctx=n, n_threads=t, n_batch=n if kind == "pp" else 1)
            run = _time_prompt if kind == "pp" else _time_generation
            run(ctx, ids[: min(n, 16)])  # warm-up
            if profile:
                _rllm.take_op_times()
                _rllm.profile_ops(True)
            try:
                row.samples = [n / run(ctx, ids) for _ in range(reps)]
            finally:
                _rllm.profile_ops(False)
            if profile:
                _profile_row(row, _rllm.take_op_times(), reps)
            if bandwidth and kind == "tg":
                row.roofline_tps = bandwidth * 1e9 / model.bytes_per_token
    return results


def _profile_row(row: BenchResult, secs: dict[str, float], reps: int) -> None:
    forward = secs["forward"]
    if forward <= 0:
        return
    row.forward_ms = 1e3 * forward / reps
    rest = forward - secs["matmul"] - secs["attention"]
    shares = {k: secs[k] for k in ("matmul", "quantize", "attention")} | {"other": rest}
    row.op_shares = {k: v / forward for k, v in shares.items()}


def _time_prompt(ctx: _rllm.Context, ids: list[int]) -> float:
    ctx.reset()
    start = time.perf_counter()
    ctx.eval(ids)
    return time.perf_counter() - start


def _time_generation(ctx: _rllm.Context, ids: list[int]) -> float:
    ctx.reset()
    start = time.perf_counter()
    for tok in ids:
        ctx.eval([tok])
    return time.perf_counter() - start
