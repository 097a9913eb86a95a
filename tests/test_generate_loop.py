"""The one token loop (Rust ``SeqDecoder``, driven by ``Context.generate`` and the
``Scheduler``) behind every front end: greedy output as before it moved into Rust, the same
from ``Model.generate`` as from a slot of a busy batch, stop strings that straddle tokens and
characters, logprobs, logit bias, cancellation and threads."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
import rllm
from conftest import FIXTURES, model_path
from rllm import _rllm
from rllm.batch import BatchGenerator, Request, SamplingParams, Scheduler
from tiny_models import write_tiny_llama

GREEDY = json.loads((FIXTURES / "greedy_outputs.json").read_text())
REAL = list(GREEDY["models"])


@pytest.fixture(scope="module", params=REAL)
def real(request: pytest.FixtureRequest) -> tuple[rllm.Model, list[dict]]:
    model = rllm.Model(model_path(request.param), n_ctx=256, n_threads=2)
    return model, GREEDY["models"][request.param]


def _prompts(model: rllm.Model) -> list[str | list[int]]:
    chats = [model.chat_prompt([{"role": "user", "content": c}]) for c in GREEDY["chats"]]
    return GREEDY["prompts"] + chats


# Nats between the top two log-probabilities below which another kernel tier may flip a greedy
# choice. The tiers sum in other orders, and a last-bit change can move an activation to the
# next Q8 code: teacher-forced on these prompts, AVX2 and AVX-512 moved the top-two gap by up
# to 0.72 (SmolLM2), 0.43 (Qwen2.5) and 1.41 nats (Gemma 3), as far as the scalar reference
# is from either. A broken kernel changes tokens the fixture chose by a wide margin.
NEAR_TIE = 1.5


def _greedy(model: rllm.Model, prompt: str | list[int], n: int) -> list[_rllm.Chunk]:
    """Greedy chunks (one per token) from the Rust stream of one Context."""
    ctx = model.context(n_ctx=256)
    ctx.eval(prompt if isinstance(prompt, list) else model.tokenize(prompt, special=True))
    return list(ctx.generate(_rllm.Sampler(temperature=0), max_tokens=n, logprobs=1))


def test_greedy_output_matches_the_fixture_up_to_near_ties(
    real: tuple[rllm.Model, list[dict]],
) -> None:
    """The greedy tokens are the fixture's, up to the first step where the fixture's top two
    candidates were within NEAR_TIE of each other; past such a step the text may differ."""
    model, expected = real
    for prompt, want in zip(_prompts(model), expected):
        chunks = _greedy(model, prompt, GREEDY["max_tokens"])
        ids = [lp.token for c in chunks for lp in c.logprobs]
        flip = next((i for i, (a, b) in enumerate(zip(ids, want["ids"])) if a != b), None)
        if flip is None:
            assert ids == want["ids"]
            assert "".join(c.text for c in chunks) == want["text"]
            assert chunks[-1].finish_reason == want["finish"]
        else:
            gap = want["gaps"][flip]
            assert gap < NEAR_TIE, f"{prompt!r}: token {flip} changed where the gap was {gap}"


def test_every_front_end_gives_the_same_greedy_output(
    real: tuple[rllm.Model, list[dict]],
) -> None:
    """Model.generate (Context), alone in the scheduler, and in a busy batch of every prompt
    (the prompt GEMM beside decode rows): the same text, token count and finish reason."""
    model, _ = real
    n = GREEDY["max_tokens"]
    prompts = _prompts(model)
    want = []
    for prompt in prompts:
        pieces = list(model.generate(prompt, max_tokens=n, temperature=0, stream=True))
        assert all(pieces), "no empty pieces are streamed"
        t = model.timings
        want.append(("".join(pieces), t.completion_tokens, t.finish_reason))
        chunks = _greedy(model, prompt, n)
        assert "".join(c.text for c in chunks) == want[-1][0]
    alone = BatchGenerator(model, n_parallel=1, n_threads=2)
    busy = BatchGenerator(model, n_parallel=4, n_threads=2, n_batch=16)
    for gen in (alone, busy):
        done = gen.complete(prompts, max_tokens=n, temperature=0)
        assert [(c.text, c.completion_tokens, c.finish_reason) for c in done] == want


def _token_texts(model: rllm.Model, prompt: str, n: int) -> list[str]:
    """The text each generated token adds, from the Rust stream (one chunk per token)."""
    return [c.text for c in _greedy(model, prompt, n)]


def test_stop_strings_across_tokens_and_characters(real: tuple[rllm.Model, list[dict]]) -> None:
    model, _ = real
    for prompt in GREEDY["prompts"]:
        pieces = _token_texts(model, prompt, GREEDY["max_tokens"])
        text = "".join(pieces)
        # straddle a token boundary: the last character of a piece and the first of the next,
        # where that pair first occurs
        ends = [sum(len(p) for p in pieces[: i + 1]) for i in range(len(pieces))]
        at = next(
            i
            for i in range(len(pieces) - 1)
            if pieces[i]
            and pieces[i + 1]
            and text.find(pieces[i][-1] + pieces[i + 1][0]) == ends[i] - 1
        )
        stop = pieces[at][-1] + pieces[at + 1][0]
        cut = ends[at] - 1
        for stream in (False, True):
            out = model.generate(prompt, max_tokens=40, temperature=0, stop=stop, stream=stream)
            assert "".join(out) == text[:cut], (prompt, stop)
            assert model.timings.finish_reason == "stop"
        gen = BatchGenerator(model, n_parallel=2)
        (c,) = gen.complete([prompt], max_tokens=40, temperature=0, stop=[stop, "never"])
        assert c.text == text[:cut] and c.finish_reason == "stop"
        # a stop string that is one non-ASCII character, wherever one is generated
        wide = next((ch for ch in text if ord(ch) > 127), None)
        if wide is not None:
            out = model.generate(prompt, max_tokens=40, temperature=0, stop=wide)
            assert out == text[: text.find(wide)]
        assert "\ufffd" not in "".join(pieces) or "\ufffd" in text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> rllm.Model:
    path = tmp_path_factory.mktemp("loop") / "tiny.gguf"
    write_tiny_llama(path, weight_type="Q8_0")
    return rllm.Model(path, n_ctx=128, n_threads=2)


def _run(sched: Scheduler, reqs: list[Request]) -> None:
    for r in reqs:
        sched.submit(r)
    while not sched.idle:
        sched.step()


def test_logprobs_and_logit_bias_in_rust(tiny: rllm.Model) -> None:
    sched = Scheduler(tiny, n_slots=2, n_ctx=64)
    prompt = tiny.tokenize("hello")
    got: list[rllm.batch.Chunk] = []
    params = SamplingParams(max_tokens=6, temperature=0, logprobs=3, ignore_eos=True)
    _run(sched, [Request(prompt, params, got.append)])
    toks = [t for c in got for t in c.tokens]
    lps = [lp for c in got for lp in c.logprobs]
    assert len(toks) == 6 and [lp.token for lp in lps] == toks
    ctx = tiny.context(n_ctx=64)
    logits = ctx.eval(prompt).astype("float64")
    z = logits.max() + math.log(sum(math.exp(v - logits.max()) for v in logits))
    first = lps[0]
    assert first.logprob == pytest.approx(logits[toks[0]] - z, abs=1e-4)
    assert [t for t, _ in first.top] == sorted(range(len(logits)), key=lambda i: -logits[i])[:3]
    assert first.top[0][0] == toks[0], "greedy picks the most likely token"
    # a large bias forces a token, a -inf one forbids the greedy choice
    forced: list[rllm.batch.Chunk] = []
    bias = SamplingParams(max_tokens=3, temperature=0, logit_bias={7: 100.0}, ignore_eos=True)
    banned: list[rllm.batch.Chunk] = []
    ban = SamplingParams(max_tokens=1, temperature=0, logit_bias={toks[0]: float("-inf")})
    _run(sched, [Request(prompt, bias, forced.append), Request(prompt, ban, banned.append)])
    assert [t for c in forced for t in c.tokens] == [7, 7, 7]
    assert [t for c in banned for t in c.tokens] != [toks[0]]


def test_cancel_queued_and_running(tiny: rllm.Model) -> None:
    sched = Scheduler(tiny, n_slots=1, n_ctx=64)
    a_out: list[rllm.batch.Chunk] = []
    b_out: list[rllm.batch.Chunk] = []
    p = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
    a = Request(tiny.tokenize("one"), p, a_out.append)
    b = Request(tiny.tokenize("two"), p, b_out.append)
    sched.submit(a)
    sched.submit(b)
    sched.step()
    sched.step()
    a.cancel()  # running
    b.cancel()  # queued
    while not sched.idle:
        sched.step()
    assert a.finish_reason == b.finish_reason == "cancelled"
    assert [c.finish_reason for c in b_out] == ["cancelled"]
    assert a_out[-1].finish_reason == "cancelled" and 1 <= a.n_generated < 40


def test_bad_arguments_name_the_field(tiny: rllm.Model) -> None:
    sched = _rllm.Scheduler(tiny._model, 1, n_ctx=32)
    s = _rllm.Sampler(temperature=0)
    for kwargs, match in [
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": [""]}, "stop"),
        ({"logit_bias": {10**9: 1.0}}, "logit_bias"),
        ({"logit_bias": {1: float("nan")}}, "NaN"),
        ({"logit_bias": {-1: 1.0}}, "logit_bias: token id -1"),
        ({"logprobs": 21}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
    ]:
        with pytest.raises(ValueError, match=match):
            sched.submit([1, 2], s, **kwargs)
    with pytest.raises(ValueError, match="empty"):
        sched.submit([], s)
    with pytest.raises(ValueError, match="out of range"):
        sched.submit([10**6], s)
    with pytest.raises(rllm.ContextFullError):
        sched.submit([1] * 20, s, max_tokens=20)
    with pytest.raises(ValueError, match="wait"):
        sched.step(-1.0)
    with pytest.raises(ValueError, match="finish_reason"):
        _rllm.Chunk(finish_reason="done")
    assert sched.n_queued == 0 and sched.step() == ([], [])
    ctx = tiny.context(n_ctx=32)
    ctx.eval([1, 2])
    with pytest.raises(ValueError, match="stop id 1000000 out of range"):
        ctx.generate(s, stop_ids=[10**6])


def test_threads_generate_at_once(tiny: rllm.Model, tmp_path: Path) -> None:
    """Separate contexts generate from several Python threads together (the interpreter is
    released for each step) and each gets what it gets alone."""
    prompts = ["alpha", "beta", "gamma", "delta"]
    alone = [tiny.generate(p, max_tokens=12, temperature=0) for p in prompts]
    models = [rllm.Model(tiny.path, n_ctx=64, n_threads=1) for _ in prompts]
    out: dict[int, str] = {}

    def work(i: int) -> None:
        out[i] = models[i].generate(prompts[i], max_tokens=12, temperature=0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [out[i] for i in range(len(prompts))] == alone
