"""Constrained decoding: which :class:`Grammar` a request asks for.

A :class:`Grammar` (built in Rust on llguidance) is a JSON schema, regex, Lark or llama.cpp
GBNF grammar, checked when made; the token loop masks every token that would leave its
language. This module turns the ways a caller can ask for one (``json_schema=``,
``grammar=``, ``regex=``, OpenAI's ``response_format``) into one ``Grammar`` or ``None``.

>>> from rllm import Grammar
>>> Grammar.from_gbnf('root ::= "yes" | "no"').matches("yes")
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._rllm import Grammar

__all__ = ["Grammar", "constraint", "response_format_grammar"]


def constraint(
    json_schema: Any = None, grammar: Grammar | str | None = None, regex: str | None = None
) -> Grammar | None:
    """The one grammar asked for: ``json_schema`` (JSON text, a dict, or a pydantic model
    class), ``grammar`` (a :class:`Grammar`, or GBNF text as llama.cpp takes it) or
    ``regex``. Raises ``ValueError`` when more than one is given or one is invalid."""
    given = [
        name
        for name, v in (("json_schema", json_schema), ("grammar", grammar), ("regex", regex))
        if v is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give at most one of json_schema, grammar and regex, got {given}")
    if json_schema is not None:
        return Grammar.from_json_schema(json_schema)
    if regex is not None:
        if not isinstance(regex, str):
            raise TypeError(f"regex must be a str, got {type(regex).__name__}")
        return Grammar.from_regex(regex)
    if grammar is None or isinstance(grammar, Grammar):
        return grammar
    if isinstance(grammar, str):
        return Grammar.from_gbnf(grammar)
    raise TypeError(f"grammar must be a Grammar or GBNF text, got {type(grammar).__name__}")


def response_format_grammar(response_format: Mapping[str, Any] | None) -> Grammar | None:
    """The grammar of OpenAI's ``response_format``: ``{"type": "text"}`` (none),
    ``{"type": "json_object"}`` (any JSON object; llama-cpp-python's ``"schema"`` key
    narrows it), or ``{"type": "json_schema", "json_schema": {"name": ..., "schema":
    {...}}}``. Raises ``ValueError`` naming what is wrong."""
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise ValueError("response_format must be an object")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema")
        return Grammar.json_object() if schema is None else Grammar.from_json_schema(schema)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise ValueError("response_format.json_schema must be an object")
        schema = spec.get("schema")
        if schema is None:
            # A schema without a wrapper ({"type": "object", ...}) is taken as it is.
            schema = spec if "type" in spec or "properties" in spec else None
        if schema is None:
            raise ValueError("response_format.json_schema.schema is missing")
        if not isinstance(schema, Mapping):
            raise ValueError("response_format.json_schema.schema must be an object")
        return Grammar.from_json_schema(dict(schema))
    raise ValueError(
        f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind!r}"
    )
