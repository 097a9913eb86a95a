"""Chat templates: a model's Jinja ``tokenizer.chat_template`` rendered the way Hugging Face
transformers' ``apply_chat_template`` renders it, built-in templates for files without one, and
the incremental text a running conversation adds to a context.

The sandbox matches transformers: an ``ImmutableSandboxedEnvironment`` with ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, a ``tojson`` that does not HTML-escape,
``raise_exception`` and ``strftime_now``; ``{% generation %}`` blocks render their body.

>>> t = ChatTemplate.builtin("chatml")
>>> t.render([{"role": "user", "content": "Hi"}])
'<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ChatTemplateError

__all__ = ["BUILTIN_TEMPLATES", "ChatSession", "ChatTemplate", "guess_template_name"]

# --- built-in templates --------------------------------------------------------------------
# Each renders what the canonical Hugging Face template of its family renders for string
# contents (tests/fixtures/chat_templates.json holds transformers' output for each); list
# contents (multimodal parts) contribute their text parts.

_TEXT = r"""
{%- macro text(content) -%}
  {%- if content is string -%}{{ content }}
  {%- elif content is mapping -%}{{ content['text'] }}
  {%- elif content is iterable -%}
    {%- for part in content -%}
      {%- if part is string -%}{{ part }}
      {%- elif part is mapping and part['type'] == 'text' -%}{{ part['text'] }}
      {%- endif -%}
    {%- endfor -%}
  {%- elif content is not none -%}{{ content }}
  {%- endif -%}
{%- endmacro -%}
"""

_ALTERNATE = (
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}"
    "{%- endif -%}"
)

BUILTIN_TEMPLATES: dict[str, str] = {
    # <|im_start|>role\ncontent<|im_end|>\n (OpenAI ChatML, as Qwen, SmolLM, Hermes use it)
    "chatml": _TEXT
    + r"""
{%- for message in messages -%}
  {{- '<|im_start|>' + message['role'] + '\n' + text(message['content']) + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
""",
    # Llama 2 chat: <s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] answer </s>
    "llama2": _TEXT
    + r"""
{%- if messages and messages[0]['role'] == 'system' -%}
  {%- set system = text(messages[0]['content']) -%}
  {%- set turns = messages[1:] -%}
{%- else -%}
  {%- set system = none -%}
  {%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
  """
    + _ALTERNATE
    + r"""
  {%- set content = text(message['content']) -%}
  {%- if loop.first and system is not none -%}
    {%- set content = '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content -%}
  {%- endif -%}
  {%- if message['role'] == 'user' -%}
    {{- bos_token + '[INST] ' + content | trim + ' [/INST]' -}}
  {%- elif message['role'] == 'assistant' -%}
    {{- ' ' + content | trim + ' ' + eos_token -}}
  {%- endif -%}
{%- endfor -%}
""",
    # Llama 3: header ids around each role, <|eot_id|> after each trimmed content
    "llama3": _TEXT
    + r"""
{%- for message in messages -%}
  {%- if loop.first -%}{{- bos_token -}}{%- endif -%}
  {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' -}}
  {{- text(message['content']) | trim + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%}
""",
    # Phi-3 / Phi-3.5: <|role|>\ncontent<|end|>\n, EOS after a conversation without a prompt
    "phi3": _TEXT
    + r"""
{%- for message in messages -%}
  {%- set content = text(message['content']) -%}
  {%- if message['role'] in ('user', 'assistant') or (message['role'] == 'system' and content) -%}
    {{- '<|' + message['role'] + '|>\n' + content + '<|end|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- else -%}{{- eos_token -}}{%- endif -%}
""",
    # Gemma 3: system text opens the first user turn; the assistant is "model"
    "gemma": _TEXT
    + r"""
{{- bos_token -}}
{%- if messages and messages[0]['role'] == 'system' -%}
  {%- set prefix = text(messages[0]['content']) + '\n\n' -%}
  {%- set turns = messages[1:] -%}
{%- else -%}
  {%- set prefix = '' -%}
  {%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
  """
    + _ALTERNATE
    + r"""
  {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
  {{- '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') -}}
  {{- text(message['content']) | trim + '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}
""",
    # Mistral Instruct v0.1/v0.2 ("v1"): the system text opens the first [INST]
    "mistral": _TEXT
    + r"""
{%- if messages and messages[0]['role'] == 'system' -%}
  {%- set system = text(messages[0]['content']) -%}
  {%- set turns = messages[1:] -%}
{%- else -%}
  {%- set system = none -%}
  {%- set turns = messages -%}
{%- endif -%}
{{- bos_token -}}
{%- for message in turns -%}
  {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
    {{- raise_exception('After the optional system message, conversation roles must alternate '
        + 'user/assistant/user/assistant/...') -}}
  {%- endif -%}
  {%- if message['role'] == 'user' -%}
    {%- set head = system + '\n\n' if loop.first and system is not none else '' -%}
    {{- ' [INST] ' + head + text(message['content']) + ' [/INST]' -}}
  {%- elif message['role'] == 'assistant' -%}
    {{- ' ' + text(message['content']) + eos_token -}}
  {%- else -%}
    {{- raise_exception('Only user and assistant roles are supported, with the exception of '
        + 'an initial optional system message!') -}}
  {%- endif -%}
{%- endfor -%}
""",
    # Zephyr: <|role|>\ncontent</s>\n
    "zephyr": _TEXT
    + r"""
{%- for message in messages -%}
  {%- if message['role'] in ('user', 'system', 'assistant') -%}
    {{- '<|' + message['role'] + '|>\n' + text(message['content']) + eos_token + '\n' -}}
  {%- endif -%}
  {%- if loop.last and add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}
{%- endfor -%}
""",
}

# Special tokens whose presence in a vocabulary names the chat format, most specific first.
_VOCAB_HINTS = (
    ("<|start_header_id|>", "llama3"),
    ("<start_of_turn>", "gemma"),
    ("<|im_start|>", "chatml"),
    ("<|assistant|>", "phi3"),
    ("[INST]", "mistral"),
)


def guess_template_name(meta: Mapping[str, Any]) -> str:
    """The built-in template for a GGUF file without ``tokenizer.chat_template``, from the
    special tokens its vocabulary has; ChatML (llama.cpp's fallback) when nothing matches."""
    tokens = meta.get("tokenizer.ggml.tokens") or []
    present = {t for t in tokens if isinstance(t, str) and 3 <= len(t) <= 20 and t[0] in "<["}
    for token, name in _VOCAB_HINTS:
        if token in present:
            return name
    return "chatml"


# --- the sandbox ---------------------------------------------------------------------------


class _Generation(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask marker)."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_Generation, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _plain(value: Any, where: str) -> Any:
    """A copy made of JSON types only, so that a template sees data and nothing else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} must hold only JSON values, got {type(value).__name__}")


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise TypeError(f"messages[{i}] must be a dict with a string 'role', got {m!r}")
        out.append(_plain(m, f"messages[{i}]"))
    return out


class ChatTemplate:
    """A Jinja chat template and the special-token texts it is rendered with."""

    def __init__(
        self, source: str, bos_token: str = "", eos_token: str = "", name: str = "custom"
    ) -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.name = name
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(
                f"invalid chat template ({name}), line {e.lineno}: {e.message}"
            ) from None

    def __repr__(self) -> str:
        return f"ChatTemplate(name={self.name!r}, bos_token={self.bos_token!r})"

    @classmethod
    def builtin(cls, name: str, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
        """One of :data:`BUILTIN_TEMPLATES`."""
        if name not in BUILTIN_TEMPLATES:
            raise ValueError(
                f"unknown chat template {name!r} (built-in: {', '.join(BUILTIN_TEMPLATES)})"
            )
        return cls(BUILTIN_TEMPLATES[name], bos_token, eos_token, name=name)

    @classmethod
    def from_spec(cls, spec: str, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
        """A built-in name, or Jinja source (anything with ``{{`` or ``{%``)."""
        if spec in BUILTIN_TEMPLATES:
            return cls.builtin(spec, bos_token, eos_token)
        if "{{" in spec or "{%" in spec:
            return cls(spec, bos_token, eos_token)
        raise ValueError(
            f"unknown chat template {spec!r}: give a built-in name "
            f"({', '.join(BUILTIN_TEMPLATES)}) or Jinja source"
        )

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], override: str | None = None) -> ChatTemplate:
        """The template of a GGUF file: ``override`` (a name or Jinja source) if given, else
        ``tokenizer.chat_template``, else a built-in guessed from the vocabulary. BOS/EOS are
        the texts of the file's BOS and EOS tokens."""
        tokens = meta.get("tokenizer.ggml.tokens") or []

        def text_of(key: str) -> str:
            i = meta.get(key)
            return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else ""

        bos, eos = text_of("tokenizer.ggml.bos_token_id"), text_of("tokenizer.ggml.eos_token_id")
        if override:
            return cls.from_spec(override, bos, eos)
        source = meta.get("tokenizer.chat_template")
        if isinstance(source, str) and source.strip():
            return cls(source, bos, eos, name="gguf")
        return cls.builtin(guess_template_name(meta), bos, eos)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> str:
        """The prompt text for ``messages`` (dicts with ``role`` and ``content``). ``tools``
        (OpenAI-style JSON schemas) reach templates that use them; others ignore them. Extra
        keyword arguments become template variables (e.g. ``enable_thinking=False``)."""
        chat = _check_messages(messages)
        variables = {"bos_token": self.bos_token, "eos_token": self.eos_token}
        variables.update(_plain(kwargs, "kwargs"))
        try:
            return self._template.render(
                messages=chat,
                tools=_plain(list(tools), "tools") if tools is not None else None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except jinja2.TemplateError as e:
            raise ChatTemplateError(str(e)) from None
        except (TypeError, ValueError, LookupError, AttributeError) as e:
            raise ChatTemplateError(f"chat template ({self.name}) failed: {e}") from None


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class ChatSession:
    """A conversation held in one context, as text: which text each new message adds.

    The context holds the template's rendering of the conversation, except that each reply is
    the text the model generated (ended by its end-of-turn token). A user message adds the
    template's closing of that reply and the new turn; when the template rewrites the history
    (e.g. a new system prompt), :meth:`add_user` returns None and the caller re-renders.
    """

    def __init__(self, template: ChatTemplate, system: str | None = None) -> None:
        self.template = template
        self.messages: list[dict[str, Any]] = []
        if system is not None:
            self.messages.append({"role": "system", "content": system})
        self._base: str | None = None  # text in the context before the current reply
        self._reply: tuple[str, str] | None = None  # (content, text with special tokens)

    def start(self) -> str:
        """Text that opens the conversation (e.g. the system turn) before any user message."""
        self._reply = None
        closed = self._render(add_generation_prompt=False, strict=False)
        # the part every continuation shares, cut after a newline or a closing bracket so that
        # it never ends inside a special token's text
        try:
            probe = self.template.render(
                [*self.messages, {"role": "user", "content": "\x00"}], add_generation_prompt=True
            )
        except ChatTemplateError:
            probe = ""
        n = _common_prefix(closed, probe)
        while n > 0 and closed[n - 1] not in "\n>]":
            n -= 1
        self._base = closed[:n]
        return self._base

    def _render(self, add_generation_prompt: bool, strict: bool = True) -> str:
        try:
            return self.template.render(self.messages, add_generation_prompt)
        except ChatTemplateError:
            if strict:
                raise
            return ""

    def add_user(self, content: str) -> str | None:
        """Append a user message; return the text to evaluate after the context's current
        text, or None when the whole conversation must be re-rendered (:meth:`render`)."""
        self.messages.append({"role": "user", "content": content})
        try:
            new = self._render(add_generation_prompt=True)
        except ChatTemplateError:
            self.messages.pop()
            raise
        base, reply = self._base, self._reply
        self._base, self._reply = new, None
        if base is None or not new.startswith(base):
            return None
        rest = new[len(base) :]
        if reply is None:
            return rest
        content, generated = reply
        end = None
        for variant in (content, content.strip(), content.rstrip(), content.lstrip()):
            i = rest.find(variant)
            if i >= 0:
                end = i + len(variant)
                break
        if end is None:
            return None
        # what the template closes the reply with, less what the model already generated
        # (its end-of-turn token), which the template may put after some whitespace
        after = rest[end:]
        i = generated.find(content)
        tail = generated[i + len(content) :] if i >= 0 else ""
        for closing in (after, after.lstrip()):
            if tail and closing.startswith(tail):
                return closing[len(tail) :]
        return after

    def add_reply(self, content: str, generated: str) -> None:
        """Record the model's reply: ``content`` without special tokens, ``generated`` as the
        context holds it (e.g. ending with ``<|im_end|>``)."""
        self.messages.append({"role": "assistant", "content": content})
        self._reply = (content, generated)

    def render(self) -> str:
        """The whole conversation, with the generation prompt after a user message."""
        self._reply = None
        last_user = bool(self.messages) and self.messages[-1]["role"] == "user"
        self._base = self._render(add_generation_prompt=last_user)
        return self._base

    def set_system(self, text: str) -> None:
        """Replace (or add) the system message; the next user message re-renders."""
        if self.messages and self.messages[0]["role"] == "system":
            self.messages[0] = {"role": "system", "content": text}
        else:
            self.messages.insert(0, {"role": "system", "content": text})
        self._base = None

    def state(self) -> dict[str, Any]:
        """A JSON-able copy of the conversation, for :meth:`restore`."""
        return copy.deepcopy({"messages": self.messages, "base": self._base, "reply": self._reply})

    def restore(self, state: Mapping[str, Any]) -> None:
        self.messages = copy.deepcopy(list(state["messages"]))
        self._base = state.get("base")
        reply = state.get("reply")
        self._reply = (reply[0], reply[1]) if reply else None
