"""Structured output through ``rllm serve`` on the real Qwen2.5 model, driven with the
official ``openai`` client: json_schema responses that validate, ``chat.completions.parse``
with a pydantic model, ``json_object``, and GBNF ``grammar`` as an extra body field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import openai
import pydantic
import pytest
from server_process import ServerProcess

SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "email": {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.com$"},
        },
        "required": ["name", "age", "email"],
        "additionalProperties": False,
    },
    "order": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "maxLength": 10},
                        "qty": {"type": "integer", "minimum": 1, "maximum": 9},
                    },
                    "required": ["sku", "qty"],
                    "additionalProperties": False,
                },
            },
            "status": {"enum": ["open", "paid", "shipped"]},
        },
        "required": ["id", "items", "status"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def server(qwen_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with ServerProcess(["-m", str(qwen_path), "-c", "4096", "--parallel", "2"], log) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize("seed", [1, 2])
def test_json_schema_responses_validate(client: openai.OpenAI, name: str, seed: int) -> None:
    schema = SCHEMAS[name]
    r = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": f"Make up an example {name} as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        },
        max_tokens=200,
        seed=seed,
        temperature=0.7,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content or ""), schema)


def test_streamed_json_schema(client: openai.OpenAI) -> None:
    schema = SCHEMAS["order"]
    stream = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "An order as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": schema}},
        max_tokens=200,
        stream=True,
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    jsonschema.validate(json.loads(text), schema)


class Step(pydantic.BaseModel):
    explanation: str
    output: str


class MathReasoning(pydantic.BaseModel):
    steps: list[Step]
    final_answer: str


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    r = client.chat.completions.parse(
        model="qwen",
        messages=[{"role": "user", "content": "Solve 8x + 7 = -23 step by step."}],
        response_format=MathReasoning,
        max_tokens=400,
        temperature=0,
    )
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, MathReasoning)
    assert parsed.final_answer


def test_json_object_and_grammar_extra_body(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "Give a dog's name and age as a JSON object."}],
        response_format={"type": "json_object"},
        max_tokens=300,
        temperature=0,
    )
    # Greedy, short prompt: the object closes well inside max_tokens on every CPU tier.
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)
    yes_no = 'root ::= ("yes" | "no") "."'
    r = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "Is the sky blue?"}],
        extra_body={"grammar": yes_no},
        max_tokens=10,
    )
    assert r.choices[0].message.content in ("yes.", "no.")
    c = client.completions.create(
        model="qwen", prompt="The answer is", extra_body={"grammar": yes_no}, max_tokens=10
    )
    assert c.choices[0].text in ("yes.", "no.")


def test_invalid_schema_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="invalid json_schema"):
        client.chat.completions.create(
            model="qwen",
            messages=[{"role": "user", "content": "hi"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "bad", "schema": {"type": "nonsense"}},
            },
        )
