"""The Python API and CLI: generation, streaming, stop strings, sampling, contexts, and the
clear exceptions that bad arguments raise."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rllm
from conftest import FIXTURES
from reference import LlamaHParams
from tiny_models import write_tiny_llama

TINY_WIDE = LlamaHParams(n_embd=64, n_layer=2, n_head=4, n_head_kv=4, n_ff=96)
TINY_ONE_LAYER = LlamaHParams(n_embd=64, n_layer=1, n_head=4, n_head_kv=2, n_ff=96)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
    write_tiny_llama(path, weight_type="Q8_0")
    return path


@pytest.fixture(scope="module")
def tiny_model(tiny: Path) -> rllm.Model:
    return rllm.Model(tiny, n_ctx=64, n_threads=2)


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path) -> rllm.Model:
    return rllm.Model(smollm2_path, n_ctx=512, n_threads=2)


# --- bad arguments --------------------------------------------------------------------------


def test_unknown_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        rllm.Model(tmp_path / "missing.gguf")


@pytest.mark.parametrize("kwargs", [{"n_ctx": 0}, {"n_ctx": -3}, {"n_threads": 0}])
def test_bad_model_arguments(tiny: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        rllm.Model(tiny, **kwargs)


def test_bad_context_arguments(tiny_model: rllm.Model) -> None:
    for kwargs in ({"n_ctx": 0}, {"n_ctx": -1}, {"n_threads": 0}, {"n_batch": 0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            rllm.Context(tiny_model._model, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.5}, "temperature must be >= 0"),
        ({"top_p": 1.5}, r"top_p must be in \[0, 1\]"),
        ({"top_p": -0.1}, r"top_p must be in \[0, 1\]"),
        ({"min_p": 2.0}, r"min_p must be in \[0, 1\]"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"repeat_penalty": 0.0}, "repeat_penalty must be > 0"),
        ({"max_tokens": -7}, "max_tokens"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_bad_sampling_arguments(tiny_model: rllm.Model, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_model.generate("hello", **kwargs)


def test_prompt_longer_than_the_context(tiny_model: rllm.Model) -> None:
    with pytest.raises(rllm.ContextFullError, match="65 tokens long but the context holds 64"):
        tiny_model.generate([65] * 65)
    assert issubclass(rllm.ContextFullError, ValueError)


def test_context_full_and_bad_tokens(tiny_model: rllm.Model) -> None:
    ctx = tiny_model.context(n_ctx=8)
    ctx.eval([1, 2, 3, 4, 5])
    with pytest.raises(rllm.ContextFullError, match="9 tokens needed but the context holds 8"):
        ctx.eval([1, 2, 3, 4])
    assert ctx.n_past == 5, "a failed eval leaves the context as it was"
    with pytest.raises(ValueError, match="token id 9999 is out of range"):
        ctx.eval([9999])
    with pytest.raises(ValueError, match="no tokens"):
        ctx.eval([])
    with pytest.raises(ValueError, match="cannot truncate to 6"):
        ctx.truncate(6)


# --- contexts and low-level evaluation ------------------------------------------------------


def test_eval_shapes_and_incremental_equals_batched(tiny_model: rllm.Model) -> None:
    ids = tiny_model.tokenize("Hello, world")
    ctx = tiny_model.context()
    all_logits = ctx.eval(ids, all_logits=True)
    assert all_logits.shape == (len(ids), tiny_model.n_vocab)
    assert all_logits.dtype == np.float32
    assert ctx.n_past == len(ids) and ctx.tokens == ids

    ctx.reset()
    assert ctx.n_past == 0
    ctx.eval(ids[:3])
    last = None
    for t in ids[3:]:
        last = ctx.eval([t])
    np.testing.assert_allclose(last, all_logits[-1], rtol=0, atol=1e-4)

    ctx.truncate(3)
    assert ctx.tokens == ids[:3]
    np.testing.assert_allclose(ctx.eval(ids[3:]), all_logits[-1], rtol=0, atol=1e-4)


def test_long_prompt_is_evaluated_in_batches(tiny: Path) -> None:
    model = rllm.Model(tiny, n_ctx=64)
    ids = list(range(40, 90))
    one = rllm.Context(model._model, n_ctx=64).eval(ids, all_logits=True)
    chunked = rllm.Context(model._model, n_ctx=64, n_batch=7).eval(ids, all_logits=True)
    np.testing.assert_allclose(one, chunked, rtol=0, atol=1e-4)


def test_compute_releases_the_gil(smollm2: rllm.Model) -> None:
    ctx = smollm2.context(n_ctx=512)
    ids = smollm2.tokenize("The history of the printing press " * 40)[:400]
    ticks = 0
    done = threading.Event()

    def work() -> None:
        ctx.eval(ids)
        done.set()

    thread = threading.Thread(target=work)
    start = time.perf_counter()
    thread.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    thread.join()
    elapsed = time.perf_counter() - start
    # Were the GIL held, this loop could not run while the prompt is evaluated.
    assert ticks > elapsed * 100


# --- sampling -------------------------------------------------------------------------------


def test_sampler_is_reproducible_from_a_seed() -> None:
    logits = np.random.default_rng(0).standard_normal(500).astype(np.float32)
    draws = [
        [rllm.Sampler(temperature=1.0, seed=s).sample(logits) for _ in range(1)] for s in range(8)
    ]
    a = rllm.Sampler(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=123)
    b = rllm.Sampler(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=123)
    assert [a.sample(logits) for _ in range(50)] == [b.sample(logits) for _ in range(50)]
    assert len({d[0] for d in draws}) > 1, "different seeds draw different tokens"


def test_sampler_filters() -> None:
    logits = np.array([0.0, 5.0, 4.9, -3.0, 1.0], dtype=np.float32)
    greedy = rllm.Sampler(temperature=0.0)
    assert greedy.sample(logits) == 1
    top2 = rllm.Sampler(temperature=10.0, top_k=2, top_p=1.0, min_p=0.0, seed=1)
    assert {top2.sample(logits) for _ in range(200)} == {1, 2}
    minp = rllm.Sampler(temperature=10.0, top_k=0, top_p=1.0, min_p=0.5, seed=1)
    assert {minp.sample(logits) for _ in range(200)} == {1, 2}
    penalized = rllm.Sampler(temperature=0.0, repeat_penalty=2.0)
    assert penalized.sample(logits, [1]) == 2


def test_seeded_generation_is_reproducible(tiny_model: rllm.Model) -> None:
    a = tiny_model.generate("abc", max_tokens=20, temperature=1.0, seed=5)
    b = tiny_model.generate("abc", max_tokens=20, temperature=1.0, seed=5)
    assert a == b


# --- generation -----------------------------------------------------------------------------


def test_streaming_equals_whole_text(tiny_model: rllm.Model) -> None:
    whole = tiny_model.generate("Once", max_tokens=24, temperature=0)
    pieces = list(tiny_model.generate("Once", max_tokens=24, temperature=0, stream=True))
    assert "".join(pieces) == whole
    assert all(isinstance(p, str) and p for p in pieces)
    assert tiny_model.timings.eval_tokens == 24
    assert tiny_model.timings.finish_reason == "length"


def test_stop_strings_end_generation(tiny_model: rllm.Model) -> None:
    whole = tiny_model.generate("xyz", max_tokens=30, temperature=0)
    stop = whole[5:8]
    cut = tiny_model.generate("xyz", max_tokens=30, temperature=0, stop=[stop, "never"])
    assert cut == whole[: whole.index(stop)]
    streamed = "".join(
        tiny_model.generate("xyz", max_tokens=30, temperature=0, stop=stop, stream=True)
    )
    assert streamed == cut
    assert tiny_model.timings.finish_reason == "stop"


def test_generation_stops_when_the_context_is_full(tiny: Path) -> None:
    model = rllm.Model(tiny, n_ctx=16)
    text = model.generate("abcdefgh", max_tokens=None, temperature=0)
    assert model.timings.finish_reason == "context_full"
    assert len(model.tokenize(text)) <= 16


def test_greedy_generation_follows_llama_cpp(smollm2: rllm.Model) -> None:
    """rllm's own greedy loop reproduces llama.cpp's tokens until the first near-tie."""
    fx = json.loads((FIXTURES / "parity_smollm2.json").read_text())
    for case in fx["cases"]:
        ctx = smollm2.context()
        ctx.eval(case["prompt_ids"])
        chunks = ctx.generate(rllm.Sampler(temperature=0), max_tokens=64)
        ours = [t for chunk in chunks for t in chunk.tokens]
        for step, (a, b) in enumerate(zip(ours, case["generated_ids"])):
            top = case["top"][step]
            if top[0][1] - top[1][1] < 0.5:
                break  # a near-tie: either choice is faithful, and the paths may part here
            assert a == b, (case["prompt"], step)


def test_chat_prompt_generates_coherent_text(smollm2: rllm.Model) -> None:
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    text = smollm2.generate(prompt, max_tokens=40, temperature=0)
    assert "Paris" in text
    assert smollm2.timings.finish_reason in ("stop", "length")


# --- command line ---------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rllm", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_run_streams_and_prints_timings(tiny: Path) -> None:
    out = run_cli("run", "-m", str(tiny), "-p", "Hello", "-n", "12", "--temp", "0", "-t", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Hello")
    for line in ("load time", "prompt eval time", "eval time", "12 runs", "total time"):
        assert line in out.stderr


def test_cli_mmap_flags_load_the_same_model(tiny: Path) -> None:
    """--mmap maps the file, --no-mmap copies it: the same text either way."""
    outs = {}
    for flag in ("--mmap", "--no-mmap"):
        out = run_cli("run", "-m", str(tiny), "-p", "Hello", "-n", "8", "--temp", "0", flag)
        assert out.returncode == 0, out.stderr
        outs[flag] = out.stdout
    assert outs["--mmap"] == outs["--no-mmap"]
    assert len(outs["--mmap"]) > len("Hello")


def test_cli_bad_usage_and_bad_files(tmp_path: Path) -> None:
    out = run_cli("run", "--no-such-flag")
    assert out.returncode == 2 and "unrecognized arguments" in out.stderr
    out = run_cli("run", "-m", str(tmp_path / "missing.gguf"), "-p", "x")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\x00" * 64)
    out = run_cli("run", "-m", str(junk), "-p", "x")
    assert out.returncode == 1 and "not a GGUF file" in out.stderr
    assert "Traceback" not in out.stderr


# --- context shift and saved state ----------------------------------------------------------


def test_shift_matches_evaluating_the_kept_tokens(tmp_path: Path) -> None:
    # One layer: its keys and values depend on each token and position alone, so shifting is
    # exact up to f16 rounding (deeper layers saw the discarded tokens, as in llama.cpp).
    path = tmp_path / "f32.gguf"
    write_tiny_llama(path, hp=TINY_ONE_LAYER)
    model = rllm.Model(path, n_ctx=32)
    ids = [10 + 7 * i for i in range(12)]
    ctx = model.context()
    ctx.eval(ids)
    ctx.shift(2, 5)
    kept = ids[:2] + ids[7:]
    assert ctx.tokens == kept and ctx.n_past == len(kept)
    shifted = ctx.eval([99])
    fresh = model.context().eval([*kept, 99])
    np.testing.assert_allclose(shifted, fresh, rtol=0, atol=2e-3)
    with pytest.raises(ValueError, match="cannot discard 20 tokens after 2"):
        ctx.shift(2, 20)


def test_state_round_trip(tiny_model: rllm.Model, tmp_path: Path) -> None:
    ctx = tiny_model.context()
    ctx.eval(tiny_model.tokenize("state of the art"))
    state = ctx.save_state()
    expected = ctx.eval([42])

    other = tiny_model.context()
    other.load_state(state)
    assert other.tokens == ctx.tokens[:-1]
    np.testing.assert_allclose(
        other.last_logits(),
        rllm.Context(tiny_model._model).eval(ctx.tokens[:-1]),
        rtol=0,
        atol=1e-5,
    )
    np.testing.assert_array_equal(other.eval([42]), expected)

    with pytest.raises(ValueError, match="not a saved rllm context"):
        other.load_state(b"nonsense")
    with pytest.raises(ValueError, match="truncated"):
        other.load_state(state[:-10])
    f32 = tmp_path / "other.gguf"
    write_tiny_llama(f32, hp=TINY_WIDE)
    with pytest.raises(ValueError, match="different model"):
        rllm.Context(rllm.Model(f32)._model).load_state(state)


def test_rope_overrides_change_the_logits(tiny: Path) -> None:
    ids = [5, 6, 7, 8]
    base = rllm.Model(tiny).context().eval(ids)
    moved = rllm.Model(tiny, rope_freq_base=500.0).context().eval(ids)
    assert np.abs(base - moved).max() > 1e-3
    with pytest.raises(ValueError, match="rope_freq_scale must be positive"):
        rllm.Model(tiny, rope_freq_scale=-1.0).context()


def test_a_sampler_carries_its_random_state_across_generations(tiny_model: rllm.Model) -> None:
    prompt = tiny_model.tokenize("abc")

    def draw(sampler: rllm.Sampler) -> list[int]:
        ctx = tiny_model.context()
        ctx.eval(prompt)
        return [t for chunk in ctx.generate(sampler, max_tokens=12) for t in chunk.tokens]

    shared = rllm.Sampler(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=3)
    first, second = draw(shared), draw(shared)
    fresh = rllm.Sampler(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=3)
    assert draw(fresh) == first
    assert second != first, "the shared sampler went on drawing rather than restarting"


def test_state_of_another_model_with_the_same_shape_is_refused(
    tiny_model: rllm.Model, tmp_path: Path
) -> None:
    ctx = tiny_model.context()
    ctx.eval([1, 2, 3])
    twin = tmp_path / "twin.gguf"
    write_tiny_llama(twin, weight_type="Q8_0", seed=99)  # same shape, other weights
    with pytest.raises(ValueError, match="different model"):
        rllm.Context(rllm.Model(twin)._model).load_state(ctx.save_state())
