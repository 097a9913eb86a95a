"""Tool calling through ``rllm serve`` on the real Qwen2.5 model, driven with the official
``openai`` client: forced (``required`` and named) and automatic calls, streamed and not,
whose arguments validate against the tools' schemas; ``parallel_tool_calls``; a second round
with the tool's result in the history; every bad request a 400 naming the problem.

Every request is greedy (``temperature=0``), so what the model chooses is the same on every
CPU."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from server_process import ServerProcess

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
MULTIPLY = {
    "type": "function",
    "function": {
        "name": "multiply",
        "description": "Multiply two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
TOOLS: list[Any] = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME, MULTIPLY)}
PARIS = [{"role": "user", "content": "What is the weather like in Paris today?"}]
TWO = [{"role": "user", "content": "What is the weather in Paris and what time is it in Tokyo?"}]


@pytest.fixture(scope="module")
def server(qwen_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with ServerProcess(["-m", str(qwen_path), "-c", "4096", "--parallel", "2"], log) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def _checked(calls: Any, names: set[str] | None = None) -> list[tuple[str, dict]]:
    """(name, arguments) of each call, after checking ids, names and arguments."""
    assert calls
    out = []
    for call in calls:
        assert call.type == "function" and call.id
        name = call.function.name
        assert name in (names or SCHEMAS)
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, SCHEMAS[name])
        out.append((name, args))
    assert len({c.id for c in calls}) == len(calls)
    return out


def _streamed(client: openai.OpenAI, **kwargs: Any) -> tuple[Any, list[Any]]:
    """The completion the openai client assembles from a ``create(stream=True)`` stream,
    and the raw chunks."""
    state = ChatCompletionStreamState()
    chunks = []
    for chunk in client.chat.completions.create(model="qwen", stream=True, **kwargs):
        state.handle_chunk(chunk)
        chunks.append(chunk)
    return state.get_final_completion(), chunks


FORCED = {
    "required": ("required", {"get_weather", "get_time"}),
    "named": ({"type": "function", "function": {"name": "get_time"}}, {"get_time"}),
}


@pytest.mark.parametrize("how", sorted(FORCED))
def test_forced_call(client: openai.OpenAI, how: str) -> None:
    choice, names = FORCED[how]
    r = client.chat.completions.create(
        model="qwen",
        messages=PARIS,
        tools=TOOLS,
        tool_choice=choice,
        max_tokens=120,
        temperature=0,
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.content is None
    calls = _checked(c.message.tool_calls, names)
    if how == "named":
        assert calls[0][0] == "get_time"  # forced, though the question is about weather
    else:
        assert calls[0] == ("get_weather", {"city": "Paris", "unit": "celsius"})


@pytest.mark.parametrize("how", sorted(FORCED))
def test_forced_call_streamed(client: openai.OpenAI, how: str) -> None:
    choice, names = FORCED[how]
    final, chunks = _streamed(
        client, messages=PARIS, tools=TOOLS, tool_choice=choice, max_tokens=120, temperature=0
    )
    c = final.choices[0]
    assert c.finish_reason == "tool_calls"
    assert not c.message.content
    _checked(c.message.tool_calls, names)
    # OpenAI's shape: the id, type and name first with empty arguments, then the arguments
    deltas = [ch.choices[0].delta.tool_calls for ch in chunks if ch.choices[0].delta.tool_calls]
    assert deltas[0][0].id and deltas[0][0].function.name and deltas[0][0].function.arguments == ""
    assert all(d[0].index == 0 for d in deltas[:2]) and deltas[1][0].function.arguments


def test_automatic_call(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="qwen", messages=PARIS, tools=TOOLS, max_tokens=120, temperature=0
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert _checked(c.message.tool_calls) == [("get_weather", {"city": "Paris", "unit": "celsius"})]


def test_automatic_call_streamed_with_the_stream_helper(client: openai.OpenAI) -> None:
    # the client's own helper assembles the chunks (and checks them as it goes)
    with client.chat.completions.stream(
        model="qwen", messages=PARIS, tools=TOOLS, max_tokens=120, temperature=0
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_completion()
    c = final.choices[0]
    assert c.finish_reason == "tool_calls"
    assert _checked(c.message.tool_calls) == [("get_weather", {"city": "Paris", "unit": "celsius"})]
    assert "tool_calls.function.arguments.done" in events
    assert not c.message.content  # the call's JSON was never shown as text


@pytest.mark.parametrize(
    "prompt",
    [
        "Explain what a Python list is in one sentence.",
        # Qwen answers with a JSON "call" of a tool it was not given: held back while
        # streamed, then sent as text
        "Write a Python function that adds two numbers.",
    ],
)
def test_automatic_answer_without_a_call(client: openai.OpenAI, prompt: str) -> None:
    messages = [{"role": "user", "content": prompt}]
    r = client.chat.completions.create(
        model="qwen", messages=messages, tools=TOOLS, max_tokens=80, temperature=0
    )
    c = r.choices[0]
    assert c.message.tool_calls is None and c.finish_reason == "stop"
    assert c.message.content
    final, _ = _streamed(client, messages=messages, tools=TOOLS, max_tokens=80, temperature=0)
    assert final.choices[0].message.content == c.message.content  # held text is all sent
    assert not final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "stop"


def test_tool_choice_none(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="qwen", messages=PARIS, tools=TOOLS, tool_choice="none", max_tokens=40, temperature=0
    )
    c = r.choices[0]
    assert c.message.tool_calls is None and c.message.content
    assert c.finish_reason in ("stop", "length")


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_calls(client: openai.OpenAI, stream: bool) -> None:
    def calls(parallel: bool) -> list[tuple[str, dict]]:
        kwargs: dict[str, Any] = dict(
            messages=TWO,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=parallel,
            max_tokens=150,
            temperature=0,
        )
        if stream:
            final, _ = _streamed(client, **kwargs)
        else:
            final = client.chat.completions.create(model="qwen", **kwargs)
        assert final.choices[0].finish_reason == "tool_calls"
        return _checked(final.choices[0].message.tool_calls)

    both = calls(True)
    assert [name for name, _ in both] == ["get_weather", "get_time"]
    assert both[1][1]["timezone"]
    one = calls(False)
    assert one == both[:1]


def test_second_round_with_the_tool_result(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "What is 1234 times 5678?"}]
    r = client.chat.completions.create(
        model="qwen", messages=question, tools=[MULTIPLY], max_tokens=60, temperature=0
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    [(name, args)] = _checked(c.message.tool_calls)
    assert (name, args) == ("multiply", {"a": 1234, "b": 5678})
    call = c.message.tool_calls[0]
    history = [
        *question,
        # as a client sends it back: content beside the call, arguments as JSON text
        {"role": "assistant", "content": "Let me check.", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": str(args["a"] * args["b"])},
    ]
    for stream in (False, True):
        kwargs: dict[str, Any] = dict(
            messages=history, tools=[MULTIPLY], tool_choice="none", max_tokens=60, temperature=0
        )
        if stream:
            final, _ = _streamed(client, **kwargs)
        else:
            final = client.chat.completions.create(model="qwen", **kwargs)
        answer = final.choices[0]
        assert answer.finish_reason == "stop" and not answer.message.tool_calls
        assert "7006652" in (answer.message.content or "")


BAD = [
    (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
        "tool_choice names 'nope', which is not in tools",
    ),
    ({"tool_choice": "required"}, "tool_choice", "tool_choice 'required' needs 'tools'"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", "tool_choice must be"),
    (
        {"tools": [{"type": "function", "function": {"description": "x"}}]},
        "tools",
        "tools[0].function.name is missing",
    ),
    (
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
            ]
        },
        "tools",
        "tools[0].function.parameters must describe an object",
    ),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]},
        "tools",
        "tools[0].function.parameters must be a JSON schema object",
    ),
    ({"tools": "get_weather"}, "tools", "'tools' must be a list of objects"),
    ({"tools": TOOLS, "parallel_tool_calls": "no"}, "parallel_tool_calls", "must be true or false"),
    (
        {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
        "tool_choice",
        "a forced tool call cannot also take response_format",
    ),
    (
        {
            "messages": [
                *PARIS,
                {"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]},
            ]
        },
        "messages",
        "messages[1].tool_calls[0].function.name must be a string",
    ),
]


@pytest.mark.parametrize(("extra", "param", "message"), BAD)
def test_bad_tool_requests_are_400(server: ServerProcess, extra: dict, param: str, message: str):
    body = {"model": "qwen", "messages": PARIS, "max_tokens": 5, **extra}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, trust_env=False, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["param"] == param
