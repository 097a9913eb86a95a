"""Constrained decoding from Python: the Grammar class, Model.generate's json_schema /
grammar / regex, and llama.cpp's GBNF examples constraining a real model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import rllm
from conftest import FIXTURES
from rllm import Grammar, _rllm
from rllm.grammar import constraint, response_format_grammar
from tiny_models import write_tiny_llama

GBNF = FIXTURES / "gbnf"

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "address", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> rllm.Model:
    path = tmp_path_factory.mktemp("grammar") / "tiny.gguf"
    write_tiny_llama(path, weight_type="Q8_0")
    return rllm.Model(path, n_ctx=256, n_threads=2)


@pytest.fixture(scope="module")
def qwen(qwen_path: Path) -> rllm.Model:
    return rllm.Model(qwen_path, n_ctx=2048)


def test_grammar_constructors_and_properties() -> None:
    g = Grammar.from_gbnf('root ::= "yes" | "no"')
    assert (g.kind, g.source) == ("gbnf", 'root ::= "yes" | "no"')
    assert g.lark is not None and g.lark.startswith("start: root")
    assert g.matches("yes") and g.matches("no") and not g.matches("maybe")
    assert repr(g).startswith("Grammar.gbnf(")
    s = Grammar.from_json_schema(PERSON)
    assert s.kind == "json_schema" and s.lark is None
    assert json.loads(s.source) == PERSON
    good = {"name": "A", "age": 3, "address": {"city": "B", "zip": "12345"}, "tags": []}
    assert s.matches(json.dumps(good))
    assert not s.matches(json.dumps({**good, "age": -1}))
    assert Grammar.from_regex("[0-9]+").matches("123")
    assert not Grammar.from_regex("[0-9]+").matches("12a")
    assert Grammar.from_lark('start: "a"+').matches("aaa")
    assert Grammar.json_object().matches('{"a": [1, 2]}')
    assert not Grammar.json_object().matches("[1]")


def test_grammar_from_pydantic_model() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Point(pydantic.BaseModel):
        x: int
        y: int

    g = Grammar.from_json_schema(Point)
    assert g.matches('{"x": 1, "y": 2}')
    assert not g.matches('{"x": 1}')


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Grammar.from_json_schema("{"), "invalid json_schema: not JSON"),
        (lambda: Grammar.from_json_schema("[1, 2]"), "must be a JSON object"),
        (lambda: Grammar.from_json_schema({"type": "frob"}), "invalid json_schema"),
        (lambda: Grammar.from_regex("(a"), "unclosed group"),
        (lambda: Grammar.from_regex(""), "empty regular expression"),
        (lambda: Grammar.from_lark("start: nothing"), "invalid lark"),
        (lambda: Grammar.from_gbnf("root ::= missing"), "undefined rule 'missing'"),
        (lambda: Grammar.from_gbnf('item ::= "x"'), "no 'root' rule"),
        (lambda: Grammar.from_gbnf('root ::= "x'), "line 1: unterminated string"),
        (lambda: constraint(json_schema={}, regex="a"), "at most one of"),
        (lambda: response_format_grammar({"type": "xml"}), "response_format.type must be"),
        (
            lambda: response_format_grammar({"type": "json_schema", "json_schema": {"name": "x"}}),
            "json_schema.schema is missing",
        ),
        (
            lambda: response_format_grammar({"type": "json_schema", "json_schema": 3}),
            "json_schema must be an object",
        ),
    ],
)
def test_bad_grammars_raise_value_error(make, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_constraint_types() -> None:
    with pytest.raises(TypeError, match="grammar must be a Grammar or GBNF text"):
        constraint(grammar=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="regex must be a str"):
        constraint(regex=3)  # type: ignore[arg-type]
    assert constraint() is None
    assert constraint(grammar='root ::= "a"') is not None
    assert response_format_grammar(None) is None
    assert response_format_grammar({"type": "text"}) is None
    obj = response_format_grammar({"type": "json_object"})
    assert obj is not None and obj.matches("{}") and not obj.matches("[]")
    narrowed = response_format_grammar(
        {"type": "json_object", "schema": {"type": "object", "required": ["a"]}}
    )
    assert narrowed is not None and not narrowed.matches("{}")
    wrapped = response_format_grammar(
        {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON, "strict": True}}
    )
    assert wrapped is not None and wrapped.source == json.dumps(PERSON)


def test_tiny_model_output_stays_in_the_language(tiny: rllm.Model) -> None:
    # Random weights: without the mask this text is noise; with it, it must match.
    for seed in range(4):
        text = tiny.generate("hello", max_tokens=40, seed=seed, regex="[a-f]{2,6}-[0-9]{2}")
        assert re.fullmatch("[a-f]{2,6}-[0-9]{2}", text), text
        assert tiny.timings.finish_reason == "stop"
        out = tiny.generate("hello", max_tokens=120, seed=seed, json_schema=PERSON)
        assert isinstance(out, str)
        if tiny.timings.finish_reason == "stop":
            jsonschema.validate(json.loads(out), PERSON)
        else:
            assert PERSON_PREFIX.match(out), out


PERSON_PREFIX = re.compile(r'\{("name": )?')


def test_unsatisfiable_within_max_tokens_ends_with_length(tiny: rllm.Model) -> None:
    out = tiny.generate("hello", max_tokens=5, temperature=0, regex="x{40}")
    assert out == "x" * 5 or set(out) == {"x"}
    assert tiny.timings.finish_reason == "length"
    chunks = list(tiny.generate("hello", max_tokens=5, regex="x{40}", stream=True))
    assert set("".join(chunks)) == {"x"}


def test_scheduler_mixes_constrained_and_free_sequences(tiny: rllm.Model) -> None:
    sched = _rllm.Scheduler(tiny._model, 2, n_ctx=128)
    sampler = _rllm.Sampler(temperature=1.0, seed=1)
    prompt = tiny.tokenize("hello")
    g = Grammar.from_regex("(ab|cd){3}")
    a = sched.submit(prompt, sampler, max_tokens=20, grammar=g)
    b = sched.submit(prompt, sampler, max_tokens=20)
    text = {a: "", b: ""}
    finish = {}
    while len(finish) < 2:
        for sid, chunk in sched.step()[1]:
            text[sid] += chunk.text
            if chunk.finish_reason:
                finish[sid] = chunk.finish_reason
    assert re.fullmatch("(ab|cd){3}", text[a]), text[a]
    assert finish[a] == "stop"
    assert not re.fullmatch("(ab|cd){3}", text[b])


# --- the real model --------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_json_schema_on_qwen_parses_and_validates(qwen: rllm.Model, seed: int) -> None:
    msgs = [{"role": "user", "content": "Make up a person record as JSON."}]
    out = qwen.chat(msgs, json_schema=PERSON, max_tokens=160, temperature=0.8, seed=seed)
    assert qwen.timings.finish_reason == "stop", out
    assert isinstance(out, str)
    jsonschema.validate(json.loads(out), PERSON)


# Each example: a prompt, and characters its language is made of (checked on any output,
# finished or cut at max_tokens); a finished output must also be a whole sentence.
EXAMPLES = {
    "json": ("Describe a cat as a JSON object.", None),
    "json_arr": ("List three fruits as a JSON array.", None),
    "arithmetic": ("Write two sums, like 1+2= 3.", r"[a-z0-9_()+\-*/= \t\n]*"),
    # A cut at max_tokens may end anywhere in an item, even right after its "-".
    "list": ("Write a shopping list.", r"(- [^\r\n]+\n)*(-( [^\r\n]*)?)?"),
    "chess": ("Write the first moves of a chess game.", r"1\. [a-hKQRBNOx1-8=+#\- \n.0-9]*"),
    "c": ("Write a C function that adds two ints.", None),
    "english": ("Say hello.", r"[a-zA-Z0-9!-/:-@\[-`{-~ \t\n]*"),
    "japanese": (
        "Say hello in Japanese.",
        "[\u3041-\u309f\u30a1-\u30ff\u3001-\u303e\u4e00-\u9fff \t\n]*",
    ),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_gbnf_examples_constrain_qwen(qwen: rllm.Model, name: str) -> None:
    src = (GBNF / f"{name}.gbnf").read_text()
    prompt, chars = EXAMPLES[name]
    out = qwen.chat(
        [{"role": "user", "content": prompt}], grammar=src, max_tokens=60, temperature=0
    )
    assert isinstance(out, str) and out
    if chars is not None:
        assert re.fullmatch(chars, out), out
    if qwen.timings.finish_reason == "stop":
        assert Grammar.from_gbnf(src).matches(out), out
        if name.startswith("json"):
            json.loads(out)
    else:
        assert qwen.timings.finish_reason == "length"


def test_create_chat_completion_response_format(qwen: rllm.Model) -> None:
    msgs = [{"role": "user", "content": "Give a person record."}]
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    out = qwen.create_chat_completion(msgs, response_format=fmt, max_tokens=160, seed=0)
    assert isinstance(out, dict)
    jsonschema.validate(json.loads(out["choices"][0]["message"]["content"]), PERSON)
    out = qwen.create_chat_completion(
        msgs, response_format={"type": "json_object"}, max_tokens=160, seed=0
    )
    assert isinstance(out, dict)
    assert isinstance(json.loads(out["choices"][0]["message"]["content"]), dict)
    with pytest.raises(ValueError, match="not both"):
        qwen.create_chat_completion(msgs, response_format=fmt, grammar='root ::= "a"')
    with pytest.raises(ValueError, match="response_format.type"):
        qwen.create_chat_completion(msgs, response_format={"type": "yaml"})


# --- Gemma 3: a SentencePiece vocabulary (▁ for spaces, <0xNN> byte-fallback tokens) ---------


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> rllm.Model:
    return rllm.Model(gemma_path, n_ctx=1024)


RARE = "\ua66e"  # ꙮ: not in Gemma's vocabulary, so written with three byte tokens
GEMMA_REGEX = RARE + r"{1,2} [a-z]{2,8}( [a-z]{2,8}){1,3}\."
SMALL = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "legs": {"type": "integer", "minimum": 0, "maximum": 8},
        "colors": {"type": "array", "items": {"enum": ["black", "white", "orange"]}, "maxItems": 2},
    },
    "required": ["name", "legs", "colors"],
    "additionalProperties": False,
}


def test_gemma_regex_with_spaces_and_byte_fallback(gemma: rllm.Model) -> None:
    pieces = [gemma.tokenizer.token_bytes(t) for t in gemma.tokenize(RARE, add_bos=False)]
    assert pieces == [bytes([b]) for b in RARE.encode()]  # byte-fallback tokens
    msgs = [{"role": "user", "content": "Describe the sea in a few words."}]
    out = gemma.chat(msgs, regex=GEMMA_REGEX, max_tokens=40, temperature=0)
    assert isinstance(out, str) and re.fullmatch(GEMMA_REGEX, out), out
    assert gemma.timings.finish_reason == "stop"
    for seed in range(3):  # sampled: whatever is drawn stays in the language
        out = gemma.chat(msgs, regex=GEMMA_REGEX, max_tokens=40, temperature=1.0, seed=seed)
        assert isinstance(out, str)
        if gemma.timings.finish_reason == "stop":
            assert re.fullmatch(GEMMA_REGEX, out), out
        else:
            assert out.startswith(RARE) and re.fullmatch(f"[{RARE} a-z.]*", out), out


def test_gemma_json_schema(gemma: rllm.Model) -> None:
    msgs = [{"role": "user", "content": "Describe a cat as JSON."}]
    out = gemma.chat(msgs, json_schema=SMALL, max_tokens=80, temperature=0)
    assert gemma.timings.finish_reason == "stop", out
    assert isinstance(out, str)
    jsonschema.validate(json.loads(out), SMALL)
