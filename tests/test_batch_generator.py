"""rllm.BatchGenerator and the continuous-batching scheduler under it: batched greedy output
equals each prompt decoded alone, prompts are evaluated in pieces beside running sequences,
slots reuse cached prefixes, and cancelled sequences free their slots."""

from __future__ import annotations

from pathlib import Path

import pytest
import rllm
from rllm.batch import BatchGenerator, Chunk, QueueFullError, Request, SamplingParams, Scheduler
from tiny_models import write_tiny_llama

PROMPTS = ["Hello", "abc", "xyz xyz", "the end", "1, 2, 3", "hehehe", "a longer prompt, this one"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> rllm.Model:
    path = tmp_path_factory.mktemp("batchgen") / "tiny.gguf"
    write_tiny_llama(path, weight_type="Q8_0")
    return rllm.Model(path, n_ctx=128, n_threads=2)


@pytest.mark.parametrize("n_parallel, n_batch", [(3, None), (4, 5), (1, None)])
def test_greedy_batched_equals_alone(tiny: rllm.Model, n_parallel: int, n_batch: int) -> None:
    alone = [tiny.generate(p, max_tokens=16, temperature=0) for p in PROMPTS]
    # n_batch 5: prompts are evaluated a few tokens per step, beside decoding sequences
    gen = BatchGenerator(tiny, n_parallel=n_parallel, n_batch=n_batch)
    assert gen.generate(PROMPTS, max_tokens=16, temperature=0) == alone
    sched = gen.scheduler
    assert sched.idle
    prompt_ids = [tiny.tokenize(p, special=True) for p in PROMPTS]
    for slot in range(n_parallel):  # each slot keeps a prompt and part of its completion
        cached = sched.engine.cached_tokens(slot)
        assert any(cached[: len(p)] == p and len(cached) > len(p) for p in prompt_ids)


def test_completions_stream_and_options(tiny: rllm.Model) -> None:
    gen = BatchGenerator(tiny, n_parallel=2)
    done = gen.complete(PROMPTS[:3], max_tokens=8, temperature=0, ignore_eos=True)
    assert [c.finish_reason for c in done] == ["length"] * 3
    assert [c.completion_tokens for c in done] == [8] * 3
    assert [c.prompt_tokens for c in done] == [len(tiny.tokenize(p)) for p in PROMPTS[:3]]

    pieces: dict[int, list[Chunk]] = {}
    for i, chunk in gen.stream(PROMPTS[:3], max_tokens=8, temperature=0, ignore_eos=True):
        pieces.setdefault(i, []).append(chunk)
    for i, chunks in pieces.items():
        assert "".join(c.text for c in chunks) == done[i].text
        assert [c.finish_reason for c in chunks][-1] == "length"
        assert sum(len(c.tokens) for c in chunks) == 8

    letters = {ord(c): 30.0 for c in "abcd"}
    text = gen.generate(["xyz"], max_tokens=20, temperature=0, logit_bias=letters)[0]
    assert text and set(text) <= set("abcd")
    stop = text[5:7]
    (cut,) = gen.complete(["xyz"], max_tokens=20, temperature=0, logit_bias=letters, stop=stop)
    assert cut.text == text[: text.index(stop)] and cut.finish_reason == "stop"

    # with a seed, prompt i is sampled with seed + i: repeatable, and not all alike
    kw = {"max_tokens": 12, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    twice = [gen.generate(["same"] * 3, seed=5, **kw) for _ in range(2)]
    assert twice[0] == twice[1] and len(set(twice[0])) > 1


def test_prefix_reuse_and_cancel(tiny: rllm.Model) -> None:
    gen = BatchGenerator(tiny, n_parallel=2)
    first = "a prompt that the next one extends"
    gen.generate([first], max_tokens=4, temperature=0)
    (c,) = gen.complete([first + " further"], max_tokens=4, temperature=0)
    n_first = len(tiny.tokenize(first))
    assert n_first <= c.cached_tokens < c.prompt_tokens

    # leaving the stream early cancels what is left and frees the slots
    stream = gen.stream(PROMPTS, max_tokens=50, temperature=0, ignore_eos=True)
    next(stream)
    stream.close()
    assert gen.scheduler.idle
    assert {r.finish_reason for r in gen.last_requests} == {"cancelled"}
    assert gen.generate(["after"], max_tokens=3, temperature=0, ignore_eos=True)[0]


def test_bad_requests_are_refused_up_front(tiny: rllm.Model) -> None:
    gen = BatchGenerator(tiny, n_parallel=2)
    with pytest.raises(rllm.ContextFullError, match="128 tokens"):
        gen.generate(["x" * 200], max_tokens=4)
    with pytest.raises(rllm.ContextFullError, match="requested"):
        gen.generate(["ok", "x"], max_tokens=200)
    with pytest.raises(ValueError, match="temperature"):
        gen.generate(["x"], temperature=-1)
    with pytest.raises(ValueError, match="logit_bias"):
        gen.generate(["x"], logit_bias={10**6: 1.0})
    with pytest.raises(ValueError, match="empty"):
        gen.generate([[]])
    assert gen.scheduler.idle


def test_scheduler_queue_limit(tiny: rllm.Model) -> None:
    sched = Scheduler(tiny, n_slots=1, n_ctx=64, max_queue=1)
    got: list[Chunk] = []
    params = SamplingParams(max_tokens=4, temperature=0)
    a, b, c = (Request([1, 2, 3], params, got.append) for _ in range(3))
    sched.submit(a)  # takes the free slot at the next step: not counted as waiting
    sched.submit(b)
    with pytest.raises(QueueFullError, match="busy"):
        sched.submit(c)
    sched.step()
    assert sched.slots_busy == 1 and sched.queue_depth == 1
    with pytest.raises(QueueFullError, match="busy"):
        sched.submit(c)
    sched.cancel(b)  # reported by the next step
    assert b.finish_reason is None
    sched.step()
    assert b.finish_reason == "cancelled" and sched.queue_depth == 0
    assert got.count(Chunk(finish_reason="cancelled")) == 1
    while sched.step():
        pass
    assert a.finish_reason in ("stop", "length") and sched.idle


def test_greedy_batched_equals_alone_smollm2(smollm2_path: Path) -> None:
    model = rllm.Model(smollm2_path, n_ctx=256, n_threads=2)
    prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "1, 2, 3,"]
    alone = [model.generate(p, max_tokens=10, temperature=0) for p in prompts]
    gen = BatchGenerator(model, n_parallel=3, n_threads=2)
    assert gen.generate(prompts, max_tokens=10, temperature=0) == alone
