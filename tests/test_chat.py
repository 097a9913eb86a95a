"""Chat templates: the built-in templates and the test models' GGUF templates render what
Hugging Face transformers renders (tests/fixtures/chat_templates.json, made by
tests/fixtures/make_chat_fixtures.py), the sandbox, conversations held as text deltas, and
Model.chat / Model.create_chat_completion."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import rllm
from conftest import FIXTURES, MODEL_FILES, model_path
from rllm.chat import BUILTIN_TEMPLATES, ChatSession, ChatTemplate, guess_template_name
from rllm.errors import ChatTemplateError

FX = json.loads((FIXTURES / "chat_templates.json").read_text(encoding="utf-8"))
CASES: dict[str, dict[str, Any]] = FX["cases"]
FILE_MODELS = {filename: name for name, filename in MODEL_FILES.items()}


def render_case(template: ChatTemplate, case: str) -> str | dict[str, str]:
    c = CASES[case]
    try:
        return template.render(
            c["messages"], c.get("add_generation_prompt", True), tools=c.get("tools")
        )
    except ChatTemplateError as e:
        return {"error": str(e)}


def test_fixture_covers_every_builtin() -> None:
    assert {f"builtin:{name}" for name in BUILTIN_TEMPLATES} <= set(FX["templates"])


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_builtin_template_renders_as_transformers(name: str, case: str) -> None:
    fx = FX["templates"][f"builtin:{name}"]
    template = ChatTemplate.builtin(name, fx["bos_token"], fx["eos_token"])
    assert render_case(template, case) == fx["expected"][case]


@pytest.mark.parametrize(
    "key", sorted(k for k in FX["templates"] if k.startswith("gguf:")), ids=lambda k: k[5:]
)
def test_gguf_template_renders_as_transformers(key: str) -> None:
    fx = FX["templates"][key]
    path = model_path(FILE_MODELS[key[5:]])
    meta = rllm.GGUFFile(path).metadata()
    template = ChatTemplate.from_metadata(meta)
    if fx["sha256"] is None:  # no template in the file: the built-in one stands in
        assert "tokenizer.chat_template" not in meta
        assert template.name == fx["builtin"]
    else:
        assert hashlib.sha256(template.source.encode()).hexdigest() == fx["sha256"]
    assert (template.bos_token, template.eos_token) == (fx["bos_token"], fx["eos_token"])
    for case, expected in fx["expected"].items():
        assert render_case(template, case) == expected, case


def test_template_choice_and_guessing() -> None:
    meta = {
        "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "<|start_header_id|>", "hi"],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    t = ChatTemplate.from_metadata(meta)
    assert (t.name, t.bos_token, t.eos_token) == ("llama3", "<s>", "</s>")
    assert guess_template_name({"tokenizer.ggml.tokens": ["a", "b"]}) == "chatml"
    assert guess_template_name({"tokenizer.ggml.tokens": ["<start_of_turn>"]}) == "gemma"
    meta["tokenizer.chat_template"] = "{{ messages[0]['content'] }}"
    assert ChatTemplate.from_metadata(meta).name == "gguf"
    assert ChatTemplate.from_metadata(meta, override="zephyr").name == "zephyr"
    custom = ChatTemplate.from_metadata(meta, override="{{ bos_token }}!")
    assert custom.render([]) == "<s>!"
    with pytest.raises(ValueError, match="unknown chat template 'nope'"):
        ChatTemplate.from_spec("nope")


def test_sandbox_and_helpers() -> None:
    def render(source: str, **kwargs: Any) -> str:
        return ChatTemplate(source, "<s>", "</s>").render(
            [{"role": "user", "content": "<b>é</b>"}], **kwargs
        )

    # transformers' tojson keeps non-ASCII and does not HTML-escape
    assert render("{{ messages | tojson }}") == '[{"role": "user", "content": "<b>é</b>"}]'
    assert render("{{ {'a': 1} | tojson(indent=2) }}") == '{\n  "a": 1\n}'
    assert len(render("{{ strftime_now('%Y-%m-%d') }}")) == 10
    assert render("{% generation %}x{% endgeneration %}") == "x"
    assert render("{% for m in messages %}{% break %}{% endfor %}ok") == "ok"
    assert render("{{ add_generation_prompt }}", add_generation_prompt=False) == "False"
    assert render("{{ enable_thinking }}", enable_thinking=False) == "False"
    # tools reach templates that use them and are ignored by the others
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert render("{{ tools[0].function.name }}", tools=tools) == "f"
    assert render("{{ bos_token }}", tools=tools) == "<s>"
    assert render("{% if tools %}T{% endif %}none") == "none"
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        render("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(ChatTemplateError, match="line 1"):
        ChatTemplate("{% if %}")
    with pytest.raises(ChatTemplateError, match="unsafe|access"):
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ChatTemplateError):  # immutable: no mutation of the messages
        render("{{ messages.append(1) }}")
    with pytest.raises(TypeError, match=r"messages\[0\]"):
        ChatTemplate("x").render(["hello"])  # type: ignore[list-item]


# --- conversations held as text --------------------------------------------------------------

# (template, what the model generates at the end of a reply, leading space of SPM tokens)
END_OF_TURN = {
    "chatml": ("<|im_end|>", ""),
    "llama2": ("</s>", " "),
    "llama3": ("<|eot_id|>", ""),
    "phi3": ("<|end|>", ""),
    "gemma": ("<end_of_turn>", ""),
    "mistral": ("</s>", " "),
    "zephyr": ("</s>", ""),
}


@pytest.mark.parametrize("name", sorted(END_OF_TURN))
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_session_deltas_rebuild_the_conversation(name: str, system: str | None) -> None:
    """What the REPL puts in the context (opening, each delta, each generated reply) is the
    template's rendering of the whole conversation."""
    template = ChatTemplate.builtin(name, "<s>", "</s>")
    end, space = END_OF_TURN[name]

    def expected() -> str:
        text = session.render()
        if name == "llama2":  # ' ' + answer + ' ' + EOS: the model's EOS comes without the space
            text = text.replace(" </s>", "</s>")
        return text

    session = ChatSession(template, system)
    context = session.start()
    for question, answer in (("Hi there", "Hello!"), ("2+2?", "4"), ("Thanks", "Bye.")):
        delta = session.add_user(question)
        assert delta is not None
        context += delta
        assert context == expected()
        generated = space + answer + end
        context += generated
        session.add_reply(answer, generated)


def test_session_interrupted_reply_is_closed_by_the_template() -> None:
    session = ChatSession(ChatTemplate.builtin("chatml"))
    context = session.start() + session.add_user("Tell me a story")  # type: ignore[operator]
    context += "Once upon"  # Ctrl-C: no end-of-turn token
    session.add_reply("Once upon", "Once upon")
    context += session.add_user("Stop.")  # type: ignore[operator]
    assert context == session.render()
    assert "Once upon<|im_end|>\n<|im_start|>user\nStop." in context


def test_session_system_change_rerenders() -> None:
    session = ChatSession(ChatTemplate.builtin("llama3", "<s>"), "A")
    session.start()
    session.add_user("q")
    session.add_reply("a", "a<|eot_id|>")
    session.set_system("B")
    assert session.add_user("q2") is None
    assert session.render().startswith("<s><|start_header_id|>system<|end_header_id|>\n\nB")
    state = json.loads(json.dumps(session.state()))
    other = ChatSession(session.template)
    other.restore(state)
    assert other.messages == session.messages and other.render() == session.render()


# --- Model.chat and create_chat_completion ------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path) -> rllm.Model:
    return rllm.Model(smollm2_path, n_ctx=512, n_threads=2)


def test_model_chat(smollm2: rllm.Model) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    ids = smollm2.chat_prompt(messages)
    assert smollm2.detokenize(ids) == smollm2.chat_template.render(messages)
    text = smollm2.chat(messages, temperature=0, max_tokens=24)
    assert "Paris" in text
    assert "".join(smollm2.chat(messages, temperature=0, max_tokens=24, stream=True)) == text
    smollm2.chat_template = "zephyr"
    try:
        assert smollm2.chat_template.name == "zephyr"
    finally:
        smollm2.chat_template = ChatTemplate.from_metadata(smollm2.metadata())


def test_create_chat_completion(smollm2: rllm.Model) -> None:
    messages = [{"role": "user", "content": "Say hello."}]
    out = smollm2.create_chat_completion(messages, temperature=0, max_tokens=12, seed=1)
    assert isinstance(out, dict)
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    (choice,) = out["choices"]
    assert choice["message"]["role"] == "assistant" and choice["index"] == 0
    assert choice["finish_reason"] in ("stop", "length")
    usage = out["usage"]
    assert usage["prompt_tokens"] == len(smollm2.chat_prompt(messages))
    assert 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    chunks = list(
        smollm2.create_chat_completion(messages, temperature=0, max_tokens=12, stream=True)
    )
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert content == choice["message"]["content"]
    assert len({c["id"] for c in chunks}) == 1


def test_generate_takes_llama_cpp_penalties(smollm2: rllm.Model) -> None:
    plain = smollm2.generate("1, 2, 3,", max_tokens=16, temperature=0)
    penalized = smollm2.generate(
        "1, 2, 3,",
        max_tokens=16,
        temperature=0,
        frequency_penalty=5.0,
        presence_penalty=5.0,
        repeat_last_n=-1,
    )
    assert plain != penalized  # ", " may not repeat any more
