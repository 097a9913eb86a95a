"""Every architecture variant rllm runs, on tiny random-weight models: logits agree with
llama.cpp run on the same files (fixtures from tests/fixtures/make_tiny_fixtures.py) and with
the numpy reference forward pass in tests/reference.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from reference import llama_forward, log_softmax
from rllm import _rllm
from tiny_models import TINY, TINY_VARIANTS, write_tiny_llama, write_variant

FIXTURE = json.loads((FIXTURES / "tiny_llama_cpp.json").read_text())
IDS = FIXTURE["ids"]
# F32 weights: rllm and llama.cpp differ only by f16 rounding in the KV cache and attention.
TOL = 0.01


def rllm_log_probs(path: Path, n_ctx: int = FIXTURE["n_ctx"]) -> np.ndarray:
    model = _rllm.Model(path)
    return log_softmax(_rllm.Context(model, n_ctx=n_ctx, n_threads=2).eval(IDS, all_logits=True))


@pytest.mark.parametrize("name", sorted(TINY_VARIANTS))
def test_variant_matches_llama_cpp_and_numpy(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.gguf"
    weights, hp = write_variant(path, name)
    ours = rllm_log_probs(path)
    llama_cpp = FIXTURE[name]
    worst = max(abs(ours[i, t] - v) for i, row in enumerate(llama_cpp) for t, v in row)
    assert worst < TOL, f"{name}: max |Δ log-prob| vs llama.cpp = {worst:.4f}"
    ref = log_softmax(llama_forward(weights, hp, IDS))
    assert np.abs(ours - ref).max() < TOL


def test_longrope_switches_to_long_factors_past_the_trained_context(tmp_path: Path) -> None:
    path = tmp_path / "phi3.gguf"
    weights, hp = write_variant(path, "phi3")
    short = rllm_log_probs(path, n_ctx=512)
    long = rllm_log_probs(path, n_ctx=1024)
    assert np.abs(short - long).max() > 1e-3
    long_hp = dataclasses.replace(hp, rope_factors=[3.0 * f for f in hp.rope_factors])
    ref = log_softmax(llama_forward(weights, long_hp, IDS))
    assert np.abs(long - ref).max() < TOL


def test_mistral_style_sliding_window(tmp_path: Path) -> None:
    """A llama file with `attention.sliding_window` attends to the last 4 positions on every
    layer, as Mistral's reference does (llama.cpp's llama graph ignores the key)."""
    hp = dataclasses.replace(TINY, sliding_window=4, swa_layers=[True] * TINY.n_layer)
    path = tmp_path / "swa.gguf"
    weights = write_tiny_llama(path, hp)
    ours = rllm_log_probs(path)
    ref = log_softmax(llama_forward(weights, hp, IDS))
    assert np.abs(ours - ref).max() < TOL
    full = log_softmax(llama_forward(weights, TINY, IDS))
    assert np.abs(ours - full)[4:].max() > 0.01, "the window changes positions past it"
    assert np.abs(ours - full)[:4].max() < TOL, "and nothing before"
