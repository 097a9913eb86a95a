"""``rllm serve``: the real server as a subprocess on a free loopback port, driven with the
official ``openai`` package (sync and async clients) and with raw httpx for the error cases.
Most tests use the tiny random model (fast); SmolLM2 checks chat and greedy parity."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import rllm
from rllm.server.app import create_app
from rllm.server.engine import ServerConfig, ServerEngine
from server_process import ServerProcess
from tiny_models import write_tiny_llama

KEY = "test-key-0123456789abcdef"
SECRET = "zebra-marmalade-7431"  # prompt text that must never reach the log
EOS = 257  # the tiny model's <|endoftext|>
LETTERS = {ord(c): 30.0 for c in "abcdefgh "}  # logit_bias: the tiny model writes letters


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("server") / "tiny.gguf"
    write_tiny_llama(path, weight_type="Q8_0")
    return path


@pytest.fixture(scope="module")
def server(tiny_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    args = ["-m", str(tiny_path), "-c", "1024", "--parallel", "4", "-t", "2", "--alias", "tiny"]
    with ServerProcess([*args, "--api-key", KEY, "--api-key", "another-key"], log) as s:
        yield s


class SingleSequence:
    """The reference for the server's greedy output: the single-sequence path (one Context,
    the argmax of its logits each step), which shares nothing with the server's batched
    scheduler (slots, batch packing, the Rust sampler, streaming detokenization)."""

    def __init__(self, path: Path) -> None:
        self.model = rllm.Model(path, n_threads=1)

    def greedy(self, prompt: str, max_tokens: int) -> str:
        """``max_tokens`` greedy tokens with ``ignore_eos`` (llama.cpp's: EOS never chosen)."""
        ctx = self.model.context(n_ctx=256)
        logits = ctx.eval(self.model.tokenize(prompt, special=True))
        out: list[int] = []
        for _ in range(max_tokens):
            logits[EOS] = -np.inf
            out.append(int(np.argmax(logits)))
            logits = ctx.eval(out[-1:])
        return self.model.detokenize(out)


@pytest.fixture(scope="module")
def reference(tiny_path: Path) -> SingleSequence:
    return SingleSequence(tiny_path)


def client(server: ServerProcess, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1",
        api_key=key,
        max_retries=0,
        timeout=60,
        http_client=httpx.Client(trust_env=False),
    )


def async_client(server: ServerProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.url}/v1",
        api_key=KEY,
        max_retries=0,
        timeout=60,
        http_client=httpx.AsyncClient(trust_env=False),
    )


def raw(server: ServerProcess, key: str | None = KEY) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, trust_env=False, timeout=60)


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found[1])


def assert_error(r: httpx.Response, status: int, *, param: str | None = None, says: str = ""):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert says.lower() in error["message"].lower()
    if param is not None:
        assert error["param"] == param
    return error


# --- endpoints ----------------------------------------------------------------------------


def test_health_and_models(server: ServerProcess) -> None:
    with raw(server, key=None) as http:
        assert http.get("/health").json() == {"status": "ok"}
    with client(server) as c:
        models = c.models.list()
        assert [m.id for m in models.data] == ["tiny"]
        assert c.models.retrieve("tiny").id == "tiny"


def test_api_key(server: ServerProcess) -> None:
    with raw(server, key=None) as http:
        assert http.get("/health").status_code == 200  # open to load balancers
        for method, path in [
            ("GET", "/v1/models"),
            ("GET", "/metrics"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/completions"),
            ("POST", "/tokenize"),
            ("GET", "/no/such/path"),
        ]:
            r = http.request(method, path, json={})
            error = assert_error(r, 401, says="API key")
            assert error["code"] == "invalid_api_key"
            assert r.headers["www-authenticate"] == "Bearer"
        bad = http.get("/v1/models", headers={"Authorization": "Basic " + KEY})
        assert bad.status_code == 401
    for key in ("wrong-key", KEY + "x", KEY[:-1]):
        with client(server, key=key) as c, pytest.raises(openai.AuthenticationError):
            c.models.list()
    for key in (KEY, "another-key"):
        with client(server, key=key) as c:
            assert c.models.list().data


def test_completion(server: ServerProcess, reference: SingleSequence) -> None:
    prompt = "Hello there"
    want = reference.greedy(prompt, max_tokens=12)
    with client(server) as c:
        r = c.completions.create(
            model="tiny",
            prompt=prompt,
            max_tokens=12,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
    assert r.object == "text_completion" and r.model == "tiny"
    (choice,) = r.choices
    assert choice.text == want
    assert choice.finish_reason == "length"
    assert r.usage.prompt_tokens == len(reference.model.tokenize(prompt, special=True))
    assert r.usage.completion_tokens == 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_completion_stream_and_echo(server: ServerProcess) -> None:
    with client(server) as c:
        whole = c.completions.create(
            model="tiny", prompt="abc", max_tokens=10, temperature=0, echo=True
        )
        stream = c.completions.create(
            model="tiny",
            prompt="abc",
            max_tokens=10,
            temperature=0,
            echo=True,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert whole.choices[0].text.startswith("abc")
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == whole.choices[0].text
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finals[-1] == whole.choices[0].finish_reason and set(finals[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert len({ch.id for ch in chunks}) == 1


def test_chat_stream_matches_non_stream(server: ServerProcess) -> None:
    messages = [{"role": "user", "content": "Say something."}]
    kw: dict[str, Any] = {"model": "tiny", "messages": messages, "temperature": 0}
    with client(server) as c:
        whole = c.chat.completions.create(**kw, max_completion_tokens=16)
        chunks = list(
            c.chat.completions.create(
                **kw, max_tokens=16, stream=True, stream_options={"include_usage": True}
            )
        )
    assert whole.object == "chat.completion"
    message = whole.choices[0].message
    assert message.role == "assistant"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == message.content
    reasons = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert reasons[-1] == whole.choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_sampling_parameters(server: ServerProcess) -> None:
    base = {"model": "tiny", "prompt": "xyz", "max_tokens": 24, "extra_body": {}}
    with client(server) as c:
        greedy = c.completions.create(**base, temperature=0, logit_bias=LETTERS)
        text = greedy.choices[0].text
        assert text and set(text) <= set("abcdefgh "), "logit_bias steers the choice"
        # a stop sequence: the text up to it, finish_reason "stop"
        stop = text[len(text) // 2 : len(text) // 2 + 2]
        cut = c.completions.create(**base, temperature=0, logit_bias=LETTERS, stop=[stop, "@@"])
        assert cut.choices[0].text == text[: text.index(stop)]
        assert cut.choices[0].finish_reason == "stop"
        # a seed makes sampling repeatable
        sampled = [
            c.completions.create(**base, temperature=1.0, top_p=0.9, seed=7).choices[0].text
            for _ in range(2)
        ]
        assert sampled[0] == sampled[1]
        # penalties change a repetitive greedy output
        plain = c.completions.create(**base, temperature=0, logit_bias=LETTERS)
        penalized = c.completions.create(
            **base, temperature=0, logit_bias=LETTERS, frequency_penalty=2.0, presence_penalty=2.0
        )
        assert plain.choices[0].text == text != penalized.choices[0].text
        # a banned token never appears; ignore_eos generates to max_tokens
        banned = c.completions.create(
            model="tiny",
            prompt="abc",
            max_tokens=20,
            temperature=0,
            logit_bias={str(EOS): -100, str(ord("d")): -100},
            extra_body={"ignore_eos": True},
        )
        assert "d" not in banned.choices[0].text and banned.usage.completion_tokens == 20


def test_logprobs(server: ServerProcess) -> None:
    with client(server) as c:
        chat = c.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=6,
            temperature=0,
            logprobs=True,
            top_logprobs=3,
            logit_bias={str(EOS): -100},
        )
        comp = c.completions.create(
            model="tiny", prompt="hi", max_tokens=6, temperature=0, logprobs=2
        )
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens == 6
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        tops = [t.logprob for t in entry.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert entry.token == entry.top_logprobs[0].token  # greedy took the most likely
        assert math.isclose(entry.logprob, tops[0], abs_tol=1e-6)
        assert sum(math.exp(t) for t in tops) <= 1 + 1e-6
        assert isinstance(entry.bytes, list)
    lp = comp.choices[0].logprobs
    n = comp.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    assert all(len(top) <= 2 for top in lp.top_logprobs)


def test_async_client(server: ServerProcess, reference: SingleSequence) -> None:
    want = reference.greedy("async", max_tokens=8)

    async def run() -> tuple[str, str, str]:
        async with async_client(server) as c:
            extra = {"ignore_eos": True}
            whole = await c.completions.create(
                model="tiny", prompt="async", max_tokens=8, temperature=0, extra_body=extra
            )
            stream = await c.completions.create(
                model="tiny",
                prompt="async",
                max_tokens=8,
                temperature=0,
                stream=True,
                extra_body=extra,
            )
            pieces = [ch.choices[0].text async for ch in stream]
            chat_kw: dict[str, Any] = {
                "model": "tiny",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 6,
                "temperature": 0,
            }
            chat = await c.chat.completions.create(**chat_kw)
            deltas = [
                ch.choices[0].delta.content or ""
                async for ch in await c.chat.completions.create(**chat_kw, stream=True)
            ]
            assert chat.choices[0].message.content == "".join(deltas)
            return whole.choices[0].text, "".join(pieces), chat.choices[0].message.role

    whole, streamed, role = asyncio.run(run())
    assert whole == streamed == want and role == "assistant"


def test_tokenize_detokenize(server: ServerProcess) -> None:
    with raw(server) as http:
        r = http.post("/tokenize", json={"content": "hello"})
        assert r.status_code == 200
        tokens = r.json()["tokens"]
        assert tokens[:1] == [256]  # the one merge, "he"
        pieces = http.post("/tokenize", json={"content": "hello", "with_pieces": True}).json()
        assert [p["piece"] for p in pieces["tokens"]] == ["he", "l", "l", "o"]
        assert http.post("/detokenize", json={"tokens": tokens}).json() == {"content": "hello"}
        assert_error(http.post("/detokenize", json={"tokens": [10**6]}), 400, param="tokens")
        assert_error(http.post("/tokenize", json={"content": 5}), 400, param="content")


def test_errors(server: ServerProcess) -> None:
    chat = "/v1/chat/completions"
    msgs = [{"role": "user", "content": "hi"}]
    with raw(server) as http:
        assert_error(http.post(chat, content=b"{not json"), 400, says="not valid JSON")
        assert_error(http.post(chat, json=[1, 2]), 400, says="JSON object")
        assert_error(http.post(chat, json={}), 400, param="messages")
        assert_error(http.post(chat, json={"messages": "hi"}), 400, param="messages")
        for field, value in [
            ("temperature", "hot"),
            ("temperature", 3),
            ("top_p", -0.5),
            ("max_tokens", 0),
            ("max_completion_tokens", 1.5),
            ("stream", "yes"),
            ("stop", [""]),
            ("logit_bias", {"x": 1}),
            ("logit_bias", {"5": 1000}),
            ("top_logprobs", 3),
            ("n", 2),
            ("seed", "s"),
        ]:
            r = http.post(chat, json={"messages": msgs, field: value})
            assert_error(r, 400, param=field)
        for field, value, says in [
            ("response_format", {"type": "xml"}, "response_format.type must be"),
            ("response_format", {"type": "json_schema", "json_schema": {}}, "schema is missing"),
            ("response_format", "json", "must be an object"),
            ("grammar", "root ::= nowhere", "undefined rule 'nowhere'"),
            ("grammar", 5, "must be GBNF text"),
            ("json_schema", {"type": "frob"}, "invalid json_schema"),
        ]:
            r = http.post(chat, json={"messages": msgs, field: value})
            assert_error(r, 400, param=field, says=says)
            r = http.post("/v1/completions", json={"prompt": "a", field: value})
            assert_error(r, 400, param=field, says=says)
        both = {"messages": msgs, "grammar": 'root ::= "a"', "json_schema": {}}
        assert_error(http.post(chat, json=both), 400, says="only one of")
        r = http.post(chat, json={"messages": msgs, "max_tokens": 100000})
        error = assert_error(r, 400, says="256 tokens")
        assert error["code"] == "context_length_exceeded"
        r = http.post("/v1/completions", json={"prompt": "x" * 300})
        assert_error(r, 400, says="prompt is 300 tokens")
        assert_error(http.post("/v1/completions", json={"prompt": ["a", "b"]}), 400, param="prompt")
        assert_error(http.post("/v1/completions", json={"prompt": "a", "suffix": "b"}), 400)
        assert_error(http.get("/v1/nothing"), 404, says="not found")
        assert_error(http.get("/v1/models/other-model"), 404)
        assert_error(http.get(chat), 405)
        big = b'{"prompt": "' + b"a" * (1 << 20) + b'"}'
        assert_error(http.post("/v1/completions", content=big), 413, says="larger than")
        chunked = iter([b'{"prompt": "', b"a" * (1 << 20), b'"}'])  # no Content-Length
        assert_error(http.post("/v1/completions", content=chunked), 413, says="larger than")
        assert http.get("/health").status_code == 200, "still serving"


def test_prefix_reuse_across_turns(server: ServerProcess) -> None:
    first = [{"role": "user", "content": "Tell me a story about a cat and a dog."}]
    with client(server) as c:
        r1 = c.chat.completions.create(
            model="tiny", messages=first, max_tokens=8, temperature=0, logit_bias=LETTERS
        )
        follow = [
            *first,
            {"role": "assistant", "content": r1.choices[0].message.content},
            {"role": "user", "content": "And then?"},
        ]
        r2 = c.chat.completions.create(model="tiny", messages=follow, max_tokens=4)
    cached = r2.usage.prompt_tokens_details.cached_tokens
    assert cached >= r1.usage.prompt_tokens, "the second turn reuses the first from the cache"
    assert r2.usage.prompt_tokens > cached


def test_concurrent_streams_match_alone(server: ServerProcess, reference: SingleSequence) -> None:
    """--parallel 4 and 16 streaming clients at once: each gets what one sequence gets alone."""
    prompts = [f"request {i}: " + "ab" * i for i in range(16)]
    want = [reference.greedy(p, max_tokens=10) for p in prompts]

    async def one(c: openai.AsyncOpenAI, prompt: str) -> tuple[str, str | None, int]:
        stream = await c.completions.create(
            model="tiny",
            prompt=prompt,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        text, reason, n = "", None, 0
        async for ch in stream:
            if ch.choices:
                text += ch.choices[0].text
                reason = ch.choices[0].finish_reason or reason
            if ch.usage:
                n = ch.usage.completion_tokens
        return text, reason, n

    async def run() -> list[tuple[str, str | None, int]]:
        async with async_client(server) as c:
            return await asyncio.wait_for(asyncio.gather(*(one(c, p) for p in prompts)), 120)

    results = asyncio.run(run())
    assert [r[0] for r in results] == want
    assert all(r[1] == "length" and r[2] == 10 for r in results)


def test_metrics(server: ServerProcess) -> None:
    with raw(server) as http:
        http.post("/v1/completions", json={"prompt": "count me", "max_tokens": 3})
        r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert re.search(
        r'^rllm_requests_total\{path="/v1/completions",status="200"\} \d+$', text, re.M
    )
    assert metric(text, "rllm_prompt_tokens_total") >= 8
    assert metric(text, "rllm_generation_tokens_total") >= 3
    assert metric(text, "rllm_slots_total") == 4
    assert metric(text, "rllm_slots_busy") == 0 and metric(text, "rllm_queue_depth") == 0
    assert metric(text, 'rllm_time_to_first_token_seconds_bucket{le="+Inf"}') >= 1
    assert metric(text, "rllm_request_duration_seconds_count") >= 1
    assert "# TYPE rllm_time_to_first_token_seconds histogram" in text


def test_log_lines_hold_no_prompt_text(server: ServerProcess) -> None:
    with client(server) as c:
        c.completions.create(model="tiny", prompt=SECRET, max_tokens=2)
        c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": SECRET}], max_tokens=2
        )
    with raw(server) as http:
        http.post("/tokenize", json={"content": SECRET})
        http.post("/v1/completions", json={"prompt": SECRET, "max_tokens": 10**6})  # a 400
    time.sleep(0.2)
    log = server.log()
    assert SECRET not in log
    assert re.search(r"POST /v1/completions 200 prompt=\d+ cached=\d+ completion=2 [\d.]+ms", log)
    assert re.search(r"POST /v1/completions 400 [\d.]+ms", log)


# --- queue and disconnects ---------------------------------------------------------------


@pytest.fixture(scope="module")
def one_slot(tiny_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One slot with a long context, a queue of one, no API key."""
    log = tmp_path_factory.mktemp("logs") / "one_slot.log"
    args = ["-m", str(tiny_path), "-c", "32768", "--parallel", "1", "--max-queue", "1", "-t", "1"]
    with ServerProcess(args, log) as s:
        yield s


def wait_for(http: httpx.Client, condition: Any, seconds: float = 20.0) -> str:
    deadline = time.monotonic() + seconds
    while True:
        text = http.get("/metrics").text
        if condition(text):
            return text
        assert time.monotonic() < deadline, f"timed out; metrics:\n{text}"
        time.sleep(0.02)


def test_full_queue_503_and_disconnect_frees_slot(one_slot: ServerProcess) -> None:
    long = {"prompt": "go", "max_tokens": 32000, "ignore_eos": True, "stream": True}
    with raw(one_slot, key=None) as http:
        with http.stream("POST", "/v1/completions", json=long) as a:
            lines = a.iter_lines()  # keep a reference: dropping it closes the connection
            assert next(lines).startswith("data: ")
            with http.stream("POST", "/v1/completions", json=long) as b:
                assert b.status_code == 200
                wait_for(http, lambda t: metric(t, "rllm_queue_depth") == 1)
                r = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
                assert_error(r, 503, says="busy")
                assert r.json()["error"]["type"] == "server_error"
        # both clients went away mid-stream: their sequences end at once
        text = wait_for(
            http,
            lambda t: (
                metric(t, "rllm_slots_busy") == 0
                and metric(t, "rllm_queue_depth") == 0
                and metric(t, "rllm_requests_cancelled_total") == 2
            ),
        )
        assert metric(text, "rllm_generation_tokens_total") < 32000
        r = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "ignore_eos": True})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2


def test_non_streaming_disconnect_cancels(one_slot: ServerProcess) -> None:
    with raw(one_slot, key=None) as http:
        before = metric(http.get("/metrics").text, "rllm_requests_cancelled_total")
        body = {"prompt": "go", "max_tokens": 32000, "ignore_eos": True}
        with pytest.raises(httpx.ReadTimeout):
            with httpx.Client(trust_env=False, timeout=0.5) as impatient:
                impatient.post(f"{one_slot.url}/v1/completions", json=body)
        wait_for(
            http,
            lambda t: (
                metric(t, "rllm_requests_cancelled_total") == before + 1
                and metric(t, "rllm_slots_busy") == 0
            ),
        )


# --- loading, and the app without a model ------------------------------------------------


def test_health_is_503_while_loading() -> None:
    engine = ServerEngine(ServerConfig(model="not-loaded.gguf", api_keys=(KEY,)))
    app = create_app(engine)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            auth = {"Authorization": f"Bearer {KEY}"}
            return [
                await http.get("/health"),
                await http.get("/v1/models", headers=auth),
                await http.post("/v1/chat/completions", headers=auth, json={}),
            ]

    for r in asyncio.run(run()):
        assert_error(r, 503, says="loading")


def test_health_is_500_once_the_scheduler_stopped(tiny_path: Path) -> None:
    engine = ServerEngine(ServerConfig(model=str(tiny_path), n_ctx=256))
    engine.load()
    app = create_app(engine)

    async def health() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.get("/health")

    try:
        assert engine.running
        assert asyncio.run(health()).status_code == 200
        assert engine.scheduler is not None
        engine.scheduler.close()
        assert not engine.running
        assert_error(asyncio.run(health()), 500, says="the scheduler stopped")
    finally:
        engine.close()


# --- a real model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_server(
    smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "smol.log"
    args = ["-m", str(smollm2_path), "-c", "2048", "--parallel", "4", "-t", "2"]
    with ServerProcess(args, log) as s:
        yield s


def test_chat_with_smollm2(smol_server: ServerProcess, smollm2_path: Path) -> None:
    import rllm

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    want = rllm.Model(smollm2_path, n_threads=2).chat(messages, max_tokens=24, temperature=0)
    with client(smol_server, key="unused") as c:
        r = c.chat.completions.create(
            model="anything", messages=messages, max_tokens=24, temperature=0
        )
    assert r.choices[0].message.content == want and want


def test_greedy_output_is_the_same_in_a_busy_batch(
    smol_server: ServerProcess, smollm2_path: Path
) -> None:
    import rllm

    prompt = "The three primary colors are"
    want = rllm.Model(smollm2_path, n_threads=2).generate(prompt, max_tokens=20, temperature=0)
    others = ["Once upon a time", "def quicksort(xs):", "Bonjour, je m'appelle"]

    async def run() -> list[str]:
        async with async_client(smol_server) as c:

            async def one(p: str, temperature: float, max_tokens: int) -> str:
                r = await c.completions.create(
                    model="x",
                    prompt=p,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=1,
                    extra_body={"ignore_eos": temperature > 0},  # others outlast the greedy one
                )
                return r.choices[0].text

            alone = await one(prompt, 0, 20)
            jobs = [one(p, 1.0, 30) for p in others]
            jobs.insert(1, one(prompt, 0, 20))
            busy = await asyncio.wait_for(asyncio.gather(*jobs), 300)
            return [alone, busy[1]]

    alone, busy = asyncio.run(run())
    assert alone == want
    assert busy == want


# --- the command line ---------------------------------------------------------------------


def test_serve_without_the_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from rllm.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    assert main(["serve", "-m", "x.gguf"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "rllm: error: rllm serve needs uvicorn: pip install 'rllm[server]'"


def test_bad_model_stops_the_server(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    server = ServerProcess(["-m", str(bad)], tmp_path / "bad.log", timeout=60)
    with pytest.raises(RuntimeError, match="did not get ready"):
        with server:
            pass
    assert server.proc is not None and server.proc.wait(timeout=30) == 1
    assert "cannot load the model" in server.log()


def test_sse_format(server: ServerProcess) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with raw(server) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        json.loads(e[len("data: ") :])
