"""Several sequences in one forward pass (BatchEngine) give the logits each would get alone."""

from __future__ import annotations

import numpy as np
import pytest
import rllm
from rllm import _rllm
from tiny_models import write_tiny_llama


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> _rllm.Model:
    path = tmp_path_factory.mktemp("batch") / "tiny.gguf"
    write_tiny_llama(path, weight_type="Q8_0")
    return _rllm.Model(path)


def alone(model: _rllm.Model, ids: list[int]) -> np.ndarray:
    return _rllm.Context(model, n_ctx=64, n_threads=1).eval(ids, all_logits=True)


def test_batched_sequences_match_separate_contexts(model: _rllm.Model) -> None:
    prompts = [[10, 20, 30, 40, 50], [7, 8], [100, 101, 102, 103, 104, 105, 106, 107, 108]]
    # n_batch 6 forces sequences to be split across passes and share passes with others.
    engine = _rllm.BatchEngine(model, n_slots=3, n_ctx=64, n_threads=2, n_batch=6)
    out = engine.step([(i, p, 0, len(p)) for i, p in enumerate(prompts)])
    for i, p in enumerate(prompts):
        np.testing.assert_allclose(out[i], alone(model, p), rtol=0, atol=1e-4)
        assert engine.tokens(i) == p

    # Decode steps: sequences join and leave between steps.
    nxt = engine.step([(0, [60]), (2, [109])])
    assert [a.shape for a in nxt] == [(1, model.n_vocab)] * 2
    np.testing.assert_allclose(nxt[0][0], alone(model, prompts[0] + [60])[-1], atol=1e-4)
    np.testing.assert_allclose(nxt[1][0], alone(model, prompts[2] + [109])[-1], atol=1e-4)
    assert engine.tokens(1) == prompts[1]


def test_prefix_reuse_by_truncation(model: _rllm.Model) -> None:
    engine = _rllm.BatchEngine(model, n_slots=1, n_ctx=32)
    engine.step([(0, [1, 2, 3, 4, 5])])
    engine.truncate(0, 3)
    (logits,) = engine.step([(0, [9, 9])])
    np.testing.assert_allclose(logits[0], alone(model, [1, 2, 3, 9, 9])[-1], atol=1e-4)


def test_bad_work_is_refused_without_side_effects(model: _rllm.Model) -> None:
    engine = _rllm.BatchEngine(model, n_slots=2, n_ctx=8)
    engine.step([(0, [1, 2])])
    with pytest.raises(ValueError, match="slot 5 does not exist"):
        engine.step([(5, [1])])
    with pytest.raises(ValueError, match="appears twice"):
        engine.step([(1, [1]), (1, [2])])
    with pytest.raises(rllm.ContextFullError, match="9 tokens needed"):
        engine.step([(1, [3]), (0, [1] * 7)])
    assert engine.tokens(0) == [1, 2] and engine.tokens(1) == [], "nothing was evaluated"
    with pytest.raises(ValueError, match="out of range"):
        engine.step([(0, [10**6])])
    with pytest.raises(ValueError, match="logit rows"):
        engine.step([(0, [1, 2], 1, 5)])
    with pytest.raises(ValueError, match="n_slots must be positive"):
        _rllm.BatchEngine(model, n_slots=0)
