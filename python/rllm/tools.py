"""Tool calling: OpenAI's ``tools`` / ``tool_choice`` / ``parallel_tool_calls`` checked,
offered to the model the way its chat template expects, forced with a grammar when asked,
and parsed out of the reply.

Each model family writes its calls its own way. One :class:`ToolFormat` per family knows
(a) the grammar of a forced call, (b) how to parse calls out of finished text and (c) where
a call may have begun in streamed text, so that a stream holds that text back:

- ``hermes`` (Qwen2.5, Hermes 2/3; the template has ``<tool_call>``): each call is
  ``<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>``;
- ``llama3`` (Llama 3.1-3.3; ``<|start_header_id|>``): ``{"name": ..., "parameters":
  {...}}``, maybe after ``<|python_tag|>``;
- ``mistral`` (v0.3, Nemo; ``[TOOL_CALLS]``): ``[TOOL_CALLS] [{"name": ..., "arguments":
  {...}}]``;
- ``generic`` (any other template): the tools are described in a system message and the
  reply is ``{"tool_calls": [{"name": ..., "arguments": {...}}]}``.

The first three are used when the template renders ``tools`` itself; any other template gets
the generic format. A forced call (``tool_choice="required"`` or a named function) is
generated under a Lark grammar whose ``%json`` parts are the tools' parameter schemas, so its
arguments always parse and validate. ``"auto"`` generates freely and parses the reply;
``"none"`` does not offer the tools.

>>> plan = plan_tools(ChatTemplate.builtin("chatml"), [{"type": "function",
...     "function": {"name": "f", "parameters": {"type": "object"}}}], "auto")
>>> plan.format.name
'generic'
>>> reply = plan.parse('{"tool_calls": [{"name": "f", "arguments": {"x": 1}}]}')
>>> [(c.name, c.arguments) for c in reply.calls]
[('f', '{"x": 1}')]
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar

import jinja2
import jinja2.meta

from ._rllm import Grammar
from .chat import ChatTemplate

__all__ = [
    "FORMATS",
    "Reply",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolFormat",
    "ToolPlan",
    "ToolStream",
    "check_tools",
    "detect_format",
    "plan_tools",
]


class ToolError(ValueError):
    """Bad ``tools``, ``tool_choice`` or tool messages; ``param`` names the request field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


# --- what the caller gives -----------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """One function the model may call; ``parameters`` is a JSON schema of an object."""

    name: str
    description: str
    parameters: dict[str, Any]

    def openai(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.parameters
        return {"type": "function", "function": function}


_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def check_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[Tool]:
    """``tools`` as OpenAI takes them (``[{"type": "function", "function": {"name": ...,
    "description": ..., "parameters": {...}}}]``; a bare function object is accepted too).
    Raises :class:`ToolError` naming the first bad field."""
    if tools is None:
        return []
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ToolError("tools", "'tools' must be a list of tool objects")
    out: list[Tool] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise ToolError("tools", f"{where} must be an object")
        kind = tool.get("type", "function")
        if kind != "function":
            raise ToolError("tools", f"{where}.type must be 'function', got {kind!r}")
        fn = tool.get("function", tool if "name" in tool else None)
        if not isinstance(fn, Mapping):
            raise ToolError("tools", f"{where}.function must be an object")
        where = f"{where}.function"
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise ToolError("tools", f"{where}.name is missing")
        if not _NAME.match(name):
            raise ToolError(
                "tools", f"{where}.name {name!r} must be 1-64 letters, digits, '_', '.' or '-'"
            )
        if any(t.name == name for t in out):
            raise ToolError("tools", f"{where}.name {name!r} is given twice")
        description = fn.get("description") or ""
        if not isinstance(description, str):
            raise ToolError("tools", f"{where}.description must be a string")
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, Mapping):
            raise ToolError("tools", f"{where}.parameters must be a JSON schema object")
        if params.get("type", "object") != "object":
            raise ToolError(
                "tools",
                f'{where}.parameters must describe an object ("type": "object"), '
                f"got type {params.get('type')!r}",
            )
        try:
            params = json.loads(json.dumps(params))  # a plain copy of JSON data only
            Grammar.from_json_schema(params)
        except (TypeError, ValueError) as e:
            raise ToolError("tools", f"{where}.parameters: {e}") from None
        out.append(Tool(name, description, params))
    return out


def _check_choice(
    choice: Any, tools: list[Tool]
) -> tuple[str, str | None]:  # (mode, forced function name)
    if choice is None:
        return ("auto" if tools else "none"), None
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise ToolError(
                "tool_choice",
                f"tool_choice must be 'none', 'auto', 'required' or "
                f'{{"type": "function", "function": {{"name": ...}}}}, got {choice!r}',
            )
        if choice == "required" and not tools:
            raise ToolError("tool_choice", "tool_choice 'required' needs 'tools'")
        return choice, None
    if isinstance(choice, Mapping):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise ToolError(
                "tool_choice",
                'tool_choice must be {"type": "function", "function": {"name": ...}}',
            )
        if not tools:
            raise ToolError("tool_choice", f"tool_choice names {name!r} but no tools are given")
        if all(t.name != name for t in tools):
            known = ", ".join(t.name for t in tools)
            raise ToolError(
                "tool_choice", f"tool_choice names {name!r}, which is not in tools ({known})"
            )
        return "function", name
    raise ToolError("tool_choice", f"tool_choice must be a string or an object, got {choice!r}")


# --- what comes back -----------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A call the model made; ``arguments`` is JSON text, as OpenAI returns it."""

    id: str
    name: str
    arguments: str

    def openai(self) -> dict[str, Any]:
        """An entry of ``message.tool_calls``."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    def deltas(self, index: int) -> list[dict[str, Any]]:
        """The ``delta.tool_calls`` entries that stream this call as OpenAI streams one: the
        id, type and name with empty arguments, then the arguments."""
        return [
            {
                "index": index,
                "id": self.id,
                "type": "function",
                "function": {"name": self.name, "arguments": ""},
            },
            {"index": index, "function": {"arguments": self.arguments}},
        ]


@dataclass
class Reply:
    """A reply split into text and calls: ``content`` is the text outside the calls (None
    when there are calls and no other text), ``start``/``end`` where the calls lie."""

    content: str | None
    calls: list[ToolCall] = field(default_factory=list)
    start: int = 0
    end: int = 0


# --- the formats ---------------------------------------------------------------------------

_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_DECODER = json.JSONDecoder()
_FENCE = re.compile(r"```(?:json)?[ \t]*\n?")


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _json_at(text: str, i: int) -> tuple[Any, int] | None:
    """The JSON value starting at ``text[i]`` (after whitespace) and where it ends."""
    try:
        return _DECODER.raw_decode(text, _skip_space(text, i))
    except ValueError:
        return None


def _json_values(text: str, i: int) -> list[Any] | None:
    """The JSON values that make up all of ``text[i:]``, separated by ``;``, ``,`` or
    whitespace; the whole may sit in one Markdown code block. None if anything else is there."""
    i = _skip_space(text, i)
    fence = _FENCE.match(text, i)
    if fence:
        close = text.rfind("```")
        if close < fence.end() or text[close + 3 :].strip():
            return None
        text, i = text[:close], fence.end()
    values = []
    while True:
        found = _json_at(text, i)
        if found is None:
            return None
        values.append(found[0])
        i = _skip_space(text, found[1])
        if i == len(text):
            return values
        if text[i] in ";,":
            i += 1


def _lark_json(schema: Mapping[str, Any], tools: list[Tool]) -> str:
    """A Lark ``%json`` block of ``schema``, whose ``$defs`` hold each tool's arguments."""
    root = {**schema, "$defs": _arguments_defs(tools), "x-guidance": _JSON_OPTIONS}
    return "%json " + json.dumps(root, ensure_ascii=False)


def _one_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _arguments_defs(tools: list[Tool]) -> dict[str, Any]:
    """The arguments schema of ``tools[i]`` as ``$defs`` entry ``args{i}``, its own
    ``$defs`` / ``definitions`` beside it as ``args{i}.NAME``: a tool's schema is written
    for its own root (``#/$defs/...``), which is not the root of a call's grammar, so its
    local references are moved along."""
    defs: dict[str, Any] = {}
    for i, tool in enumerate(tools):
        prefix = f"args{i}"
        params = _closed(_rebased(tool.parameters, prefix))
        for key in ("$defs", "definitions"):
            for name, sub in (params.pop(key, None) or {}).items():
                defs[f"{prefix}.{name}"] = sub
        defs[prefix] = params
    return defs


def _rebased(schema: Any, prefix: str) -> Any:
    """``schema`` with its local ``$ref`` pointers moved under ``#/$defs/{prefix}``."""
    if isinstance(schema, list):
        return [_rebased(s, prefix) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("const", "enum", "default", "examples"):
            out[key] = value
        elif key == "$ref" and isinstance(value, str) and value.startswith("#"):
            pointer = value[1:]
            for defs in ("/$defs/", "/definitions/"):
                if pointer.startswith(defs):
                    out[key] = f"#/$defs/{prefix}." + pointer[len(defs) :]
                    break
            else:
                out[key] = f"#/$defs/{prefix}" + pointer
        else:
            out[key] = _rebased(value, prefix)
    return out


_SUBSCHEMA = ("items", "additionalItems", "not", "if", "then", "else", "contains")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")


def _closed(schema: Any) -> Any:
    """``schema`` with ``"additionalProperties": false`` on every object that lists its
    properties and says nothing of others, as llama.cpp's grammars assume: every output
    still validates against ``schema``, and a forced call cannot wander off into keys of
    its own."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMA:
        if key in out:
            out[key] = _closed(out[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_closed(s) for s in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: _closed(v) for k, v in out[key].items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


class ToolFormat:
    """How one family writes tool calls. A subclass sets the class attributes, writes
    :meth:`grammar` and, for calls behind a marker, :meth:`_tagged`; parsing JSON calls at
    the start of a reply (``openers``) and holding streamed text back are shared.

    Parsing is lenient, as models are: besides the family's own shape, a call may be
    ``{"name": ..., "arguments" or "parameters": ...}`` with arguments as an object or JSON
    text, ``{"tool_calls": [...]}`` or ``{"tool_call": {...}}``."""

    name: ClassVar[str]
    #: whether the chat template renders ``tools`` itself (else a system message does)
    native: ClassVar[bool] = True
    #: the key of a call's arguments (``parameters`` for Llama 3)
    args_key: ClassVar[str] = "arguments"
    #: text that begins a call anywhere in the reply
    markers: ClassVar[tuple[str, ...]] = ()
    #: how JSON that is a call begins, whitespace left out, when it opens the reply (maybe
    #: in a Markdown code block); such a reply is parsed as JSON calls
    openers: ClassVar[tuple[str, ...]] = ()
    #: a forced call: text the reply is made to begin with (put after the prompt)
    prefill: ClassVar[str] = ""

    def call_schema(self, tools: list[Tool]) -> dict[str, Any]:
        """The JSON schema of one forced call of any of ``tools``: its name, then its
        arguments (``$defs`` entries that :func:`_lark_json` adds)."""
        return _one_of(
            [
                {
                    "type": "object",
                    "properties": {
                        "name": {"const": tool.name},
                        self.args_key: {"$ref": f"#/$defs/args{i}"},
                    },
                    "required": ["name", self.args_key],
                    "additionalProperties": False,
                }
                for i, tool in enumerate(tools)
            ]
        )

    def grammar(self, tools: list[Tool], parallel: bool) -> Grammar:
        """The grammar of a reply that calls one of ``tools`` (one or more calls when
        ``parallel``), after :attr:`prefill`."""
        raise NotImplementedError

    def parse(self, text: str) -> Reply:
        """The calls in a finished reply (their ids not given yet). A reply with a malformed
        call is all content."""
        reply = self._tagged(text)
        if reply is not None:
            return reply
        if self.openers and self._opens(_squeeze(text)) == "call":
            values = _json_values(text, 0)
            calls = self._from_values(values) if values is not None else None
            if calls:
                start = _skip_space(text, 0)
                return Reply(text[:start], calls, start, len(text))
        return Reply(text)

    def hold(self, text: str) -> int:
        """How much of ``text`` (the reply so far) can be shown: all that comes before where
        a call begins or may be beginning."""
        if self.openers and self._opens(_squeeze(text)) is not None:
            return 0
        end = len(text)
        for marker in self.markers:
            i = text.find(marker)
            if i >= 0:
                end = min(end, i)
                continue
            for k in range(min(len(marker) - 1, len(text)), 0, -1):
                if text.endswith(marker[:k]):
                    end = min(end, len(text) - k)
                    break
        return end

    def _opens(self, head: str) -> str | None:
        """``"call"`` when ``head`` (the reply, whitespace left out) begins with an opener,
        ``"maybe"`` while it may still become one, else None."""
        if "```".startswith(head) and head:
            return "maybe"
        if head.startswith("```"):
            rest = head[3:]
            if "json".startswith(rest):
                return "maybe"
            head = rest[4:] if rest.startswith("json") else rest
        for opener in self.openers:
            if head.startswith(opener):
                return "call"
            if opener.startswith(head):
                return "maybe"
        return None

    def _tagged(self, text: str) -> Reply | None:
        """Calls behind this format's markers, or None when there are none."""
        return None

    def new_id(self) -> str:
        return "call_" + secrets.token_hex(12)

    def _call(self, obj: Any) -> ToolCall | None:
        """A call from a decoded JSON object, or None if it is not one."""
        if not isinstance(obj, dict):
            return None
        if isinstance(obj.get("function"), dict) and "name" not in obj:
            obj = obj["function"]
        name = obj.get("name")
        args = obj.get(self.args_key, obj.get("arguments", obj.get("parameters")))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if args is None:
            args = {}
        if not isinstance(name, str) or not isinstance(args, dict):
            return None
        return ToolCall("", name, json.dumps(args, ensure_ascii=False))

    def _from_values(self, values: list[Any]) -> list[ToolCall] | None:
        """The calls that decoded JSON values are, or None if one is not a call."""
        items: list[Any] = []
        for v in values:
            if isinstance(v, dict) and set(v) == {"tool_calls"}:
                v = v["tool_calls"]
            elif isinstance(v, dict) and set(v) == {"tool_call"}:
                v = v["tool_call"]
            items.extend(v if isinstance(v, list) else [v])
        calls = [self._call(v) for v in items]
        if not calls or any(c is None for c in calls):
            return None
        return [c for c in calls if c is not None]


class HermesFormat(ToolFormat):
    """Qwen2.5 and Hermes: each call is JSON inside ``<tool_call>`` tags. Small models often
    leave the tags out: a reply that is JSON calls (maybe in a code block) counts too."""

    name = "hermes"
    markers = ("<tool_call>",)
    openers = ('{"name"',)
    _BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)

    def grammar(self, tools: list[Tool], parallel: bool) -> Grammar:
        call = _lark_json(self.call_schema(tools), tools)
        start = 'start: call ("\\n" call)*' if parallel else "start: call"
        return Grammar.from_lark(f'{start}\ncall: "<tool_call>\\n" {call} "\\n</tool_call>"\n')

    def _tagged(self, text: str) -> Reply | None:
        blocks = list(self._BLOCK.finditer(text))
        if not blocks:
            return None
        calls = []
        for b in blocks:
            values = _json_values(b[1], 0)
            found = self._from_values(values) if values is not None else None
            if found is None:
                return Reply(text)
            calls.extend(found)
        start, end = blocks[0].start(), blocks[-1].end()
        return Reply(text[:start] + text[end:], calls, start, end)


class Llama3Format(ToolFormat):
    """Llama 3.1-3.3 JSON tool calls: the reply is ``{"name": ..., "parameters": {...}}``,
    maybe after ``<|python_tag|>``; several are separated by ``;``."""

    name = "llama3"
    args_key = "parameters"
    markers = ("<|python_tag|>",)
    openers = ('{"name"', '{"type":"function"')

    def grammar(self, tools: list[Tool], parallel: bool) -> Grammar:
        call = _lark_json(self.call_schema(tools), tools)
        start = 'start: call ("; " call)*' if parallel else "start: call"
        return Grammar.from_lark(f"{start}\ncall: {call}\n")

    def _tagged(self, text: str) -> Reply | None:
        start = text.find("<|python_tag|>")
        if start < 0:
            return None
        values = _json_values(text, start + len("<|python_tag|>"))
        calls = self._from_values(values) if values is not None else None
        if not calls:
            return Reply(text)
        return Reply(text[:start], calls, start, len(text))


class MistralFormat(ToolFormat):
    """Mistral v0.3 / Nemo: ``[TOOL_CALLS]`` then a JSON array of calls; call ids are nine
    letters and digits, as Mistral's templates demand."""

    name = "mistral"
    markers = ("[TOOL_CALLS]",)
    prefill = "[TOOL_CALLS]"

    def grammar(self, tools: list[Tool], parallel: bool) -> Grammar:
        schema: dict[str, Any] = {
            "type": "array",
            "items": self.call_schema(tools),
            "minItems": 1,
        }
        if not parallel:
            schema["maxItems"] = 1
        return Grammar.from_lark(f'start: " "? {_lark_json(schema, tools)}\n')

    def _tagged(self, text: str) -> Reply | None:
        start = text.find("[TOOL_CALLS]")
        if start < 0:
            return None
        found = _json_at(text, start + len("[TOOL_CALLS]"))
        calls = self._from_values([found[0]]) if found is not None else None
        if found is None or not calls:
            return Reply(text)
        return Reply(text[:start] + text[found[1] :], calls, start, found[1])

    def new_id(self) -> str:
        alphabet = string.ascii_letters + string.digits
        return "".join(secrets.choice(alphabet) for _ in range(9))


class GenericFormat(ToolFormat):
    """For templates that know no tools: a system message describes them and asks for a
    JSON object ``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` as the whole reply
    (in a code block or as a bare call object is taken too)."""

    name = "generic"
    native = False
    openers = ('{"tool_calls"', '{"tool_call"', '{"name"')

    def grammar(self, tools: list[Tool], parallel: bool) -> Grammar:
        items: dict[str, Any] = {
            "type": "array",
            "items": self.call_schema(tools),
            "minItems": 1,
        }
        if not parallel:
            items["maxItems"] = 1
        schema = {
            "type": "object",
            "properties": {"tool_calls": items},
            "required": ["tool_calls"],
            "additionalProperties": False,
        }
        return Grammar.from_lark(f"start: {_lark_json(schema, tools)}\n")

    def system_prompt(self, tools: list[Tool], must_call: bool) -> str:
        lines = [json.dumps(t.openai()["function"], ensure_ascii=False) for t in tools]
        ask = (
            "Call one or more of them now."
            if must_call
            else "When a tool would help, call it; otherwise answer normally, in plain text."
        )
        return (
            "You can call these tools (JSON schemas of their arguments):\n"
            + "\n".join(lines)
            + "\n\nTo call tools, reply with only a JSON object, and nothing else: "
            '{"tool_calls": [{"name": <tool name>, "arguments": <arguments object>}]}. '
            "The results come back in the next message. " + ask
        )


FORMATS: dict[str, ToolFormat] = {
    f.name: f for f in (HermesFormat(), Llama3Format(), MistralFormat(), GenericFormat())
}


@cache
def _renders_tools(source: str) -> bool:
    try:
        names = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(source))
    except jinja2.TemplateError:
        return False
    return "tools" in names


def detect_format(template: ChatTemplate) -> ToolFormat:
    """The tool-call format of a chat template (see the module docs)."""
    src = template.source
    if _renders_tools(src):
        if "<tool_call>" in src:
            return FORMATS["hermes"]
        if "[TOOL_CALLS]" in src:
            return FORMATS["mistral"]
        if "<|start_header_id|>" in src or "<|python_tag|>" in src:
            return FORMATS["llama3"]
    return FORMATS["generic"]


# --- one request ---------------------------------------------------------------------------


def _arguments(value: Any, where: str) -> Any:
    """Arguments as templates expect them: a dict, decoded from OpenAI's JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ToolError("messages", f"{where} is not valid JSON") from None
    return {} if value is None else value


def _history_call(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, Mapping):
        raise ToolError("messages", f"{where} must be an object")
    fn = call.get("function")
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise ToolError("messages", f"{where}.function.name must be a string")
    out = dict(call)
    out.setdefault("type", "function")
    out["function"] = {
        "name": fn["name"],
        "arguments": _arguments(fn.get("arguments"), f"{where}.function.arguments"),
    }
    return out


@dataclass
class ToolPlan:
    """What one chat request does with tools: the format, the tools offered (none for
    ``tool_choice="none"``), and whether a call is forced (``forced``: every tool for
    ``"required"``, or the one named)."""

    format: ToolFormat
    tools: list[Tool]
    offered: bool
    forced: list[Tool] | None
    parallel: bool

    def template_tools(self) -> list[dict[str, Any]] | None:
        """``tools`` for the chat template (None when it does not render them)."""
        if not self.offered or not self.format.native:
            return None
        return [t.openai() for t in self.tools]

    def messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``messages`` ready for the template: assistant ``tool_calls`` with their
        arguments as dicts, ``content`` None as ``""``; for the generic format, calls and
        ``tool`` results written as text and the tools described in a system message."""
        out: list[dict[str, Any]] = []
        for i, m in enumerate(messages):
            m = dict(m)
            if m.get("content") is None and m.get("role") in ("assistant", "tool"):
                m["content"] = ""
            calls = m.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list):
                    raise ToolError("messages", f"messages[{i}].tool_calls must be a list")
                m["tool_calls"] = [
                    _history_call(c, f"messages[{i}].tool_calls[{j}]") for j, c in enumerate(calls)
                ]
                if not m["tool_calls"]:
                    del m["tool_calls"]
            if m.get("role") == "tool" and not isinstance(m.get("content"), (str, list)):
                raise ToolError("messages", f"messages[{i}].content of a tool message must be text")
            out.append(m)
        if self.format.native:
            return out
        return self._as_text(out)

    def _as_text(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for m in messages:
            if m.get("tool_calls"):
                calls = [
                    {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                    for c in m["tool_calls"]
                ]
                text = json.dumps({"tool_calls": calls}, ensure_ascii=False)
                head = m.get("content")
                content = f"{head}\n{text}" if isinstance(head, str) and head else text
                out.append({"role": "assistant", "content": content})
            elif m.get("role") == "tool":
                content = m["content"]
                if not isinstance(content, str):
                    content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
                who = m.get("name") or m.get("tool_call_id") or "tool"
                line = f"Result of {who}: {content}"
                if out and out[-1].get("_tool"):
                    out[-1]["content"] += "\n" + line
                else:
                    out.append({"role": "user", "content": line, "_tool": True})
            else:
                out.append(m)
        for m in out:
            m.pop("_tool", None)
        if self.offered:
            fmt = self.format
            assert isinstance(fmt, GenericFormat)
            prompt = fmt.system_prompt(self.tools, self.forced is not None)
            if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
                out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + prompt}
            else:
                out.insert(0, {"role": "system", "content": prompt})
        return out

    def grammar(self) -> Grammar | None:
        """The grammar of a forced call, or None."""
        if self.forced is None:
            return None
        return self.format.grammar(self.forced, self.parallel)

    @property
    def prefill(self) -> str:
        """Text a forced reply begins with, after the prompt."""
        return self.format.prefill if self.forced is not None else ""

    def parse(self, text: str) -> Reply:
        """``text`` (the generated reply, :attr:`prefill` not included) as content and
        calls. Calls of tools not offered make the whole reply text; without
        ``parallel``, only the first call is kept."""
        whole = self.prefill + text
        if not self.offered:
            return Reply(text)
        reply = self.format.parse(whole)
        names = {t.name for t in self.tools}
        if not reply.calls or any(c.name not in names for c in reply.calls):
            return Reply(text)
        calls = reply.calls if self.parallel else reply.calls[:1]
        content = (reply.content or "").strip() or None
        return Reply(
            content,
            [ToolCall(self.format.new_id(), c.name, c.arguments) for c in calls],
            reply.start,
            reply.end,
        )

    def stream(self) -> ToolStream:
        return ToolStream(self)


class ToolStream:
    """A streamed reply: :meth:`feed` each piece of text and send what it returns as
    content; :meth:`finish` gives the rest of the content and the calls."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.text = plan.prefill
        self.sent = len(self.text)

    def feed(self, piece: str) -> str:
        self.text += piece
        if not self.plan.offered:
            out, self.sent = self.text[self.sent :], len(self.text)
            return out
        end = self.plan.format.hold(self.text)
        if end <= self.sent:
            return ""
        out, self.sent = self.text[self.sent : end], end
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The content not sent yet, and the calls."""
        n = len(self.plan.prefill)
        reply = self.plan.parse(self.text[n:])
        if not reply.calls:
            return self.text[self.sent :], []
        start, end = reply.start, reply.end
        rest = self.text[self.sent : start] if self.sent < start else ""
        return (rest.rstrip() + self.text[end:].rstrip()), reply.calls


def plan_tools(
    template: ChatTemplate,
    tools: Sequence[Mapping[str, Any]] | None,
    tool_choice: Any = None,
    parallel_tool_calls: bool | None = None,
) -> ToolPlan:
    """The :class:`ToolPlan` of a request. Raises :class:`ToolError` (a ``ValueError``)
    naming a malformed tool, an unknown tool in ``tool_choice``, or ``"required"`` without
    tools."""
    checked = check_tools(tools)
    mode, name = _check_choice(tool_choice, checked)
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise ToolError("parallel_tool_calls", "parallel_tool_calls must be true or false")
    forced = None
    if mode == "required":
        forced = checked
    elif mode == "function":
        forced = [t for t in checked if t.name == name]
    return ToolPlan(
        format=detect_format(template),
        tools=checked,
        offered=mode != "none" and bool(checked),
        forced=forced,
        parallel=parallel_tool_calls is not False,
    )
