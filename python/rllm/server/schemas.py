"""OpenAI request bodies in, OpenAI response shapes out, with no web framework: checks each
field of ``/v1/chat/completions`` and ``/v1/completions`` bodies (a clear 400 naming the
field), and builds ``chat.completion``, ``text_completion`` and their stream chunks.

Besides OpenAI's fields, llama-server's ``top_k``, ``min_p``, ``repeat_penalty`` and
``ignore_eos`` are accepted. Defaults are llama-server's (temperature 0.8, top_p 0.95, top_k 40,
min_p 0.05); ``max_tokens`` defaults to the rest of the context, except OpenAI's 16 for
``/v1/completions``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..batch import MAX_TOP_LOGPROBS, SamplingParams, TokenLogprob
from ..grammar import Grammar, response_format_grammar
from ..tokenizer import Tokenizer

__all__ = [
    "APIError",
    "ChatRequest",
    "CompletionRequest",
    "chat_response",
    "error_body",
    "parse_chat",
    "parse_completion",
]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    500: "server_error",
    501: "not_supported_error",
    503: "server_error",
}


class APIError(Exception):
    """An error answered with OpenAI's JSON shape and an HTTP status."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code)


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _bad(param: str, message: str) -> APIError:
    return APIError(400, message, param=param)


# --- field readers -------------------------------------------------------------------------


def _number(
    body: Mapping[str, Any], name: str, default: float, lo: float | None, hi: float | None
) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(name, f"'{name}' must be a number, got {type(v).__name__}")
    if (lo is not None and v < lo) or (hi is not None and v > hi) or v != v:
        raise _bad(name, f"'{name}' must be in [{lo}, {hi}], got {v}")
    return float(v)


def _int(
    body: Mapping[str, Any], name: str, default: int | None, lo: int | None, hi: int | None = None
) -> int | None:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(name, f"'{name}' must be an integer, got {type(v).__name__}")
    if lo is not None and v < lo:
        raise _bad(name, f"'{name}' must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise _bad(name, f"'{name}' must be <= {hi}, got {v}")
    return v


def _bool(body: Mapping[str, Any], name: str, default: bool = False) -> bool:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise _bad(name, f"'{name}' must be true or false, got {type(v).__name__}")
    return v


def _stop(body: Mapping[str, Any]) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    stops = [v] if isinstance(v, str) else v
    if (
        not isinstance(stops, list)
        or len(stops) > 16
        or any(not isinstance(s, str) or not s for s in stops)
    ):
        raise _bad("stop", "'stop' must be a non-empty string or a list of up to 16 of them")
    return stops


def _logit_bias(body: Mapping[str, Any], n_vocab: int) -> dict[int, float] | None:
    v = body.get("logit_bias")
    if v is None:
        return None
    if not isinstance(v, dict):
        raise _bad("logit_bias", "'logit_bias' must be an object of token id -> bias")
    out = {}
    for key, bias in v.items():
        try:
            tok = int(key)
        except ValueError:
            raise _bad("logit_bias", f"logit_bias: {key!r} is not a token id") from None
        if not 0 <= tok < n_vocab:
            raise _bad("logit_bias", f"logit_bias: token id {tok} out of range [0, {n_vocab})")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
            raise _bad("logit_bias", f"logit_bias: the bias of {key} must be in [-100, 100]")
        out[tok] = float(bias)
    return out


def _check_unsupported(body: Mapping[str, Any]) -> None:
    n = _int(body, "n", 1, 1)
    if n != 1:
        raise _bad("n", "only n=1 is supported")


def _grammar(body: Mapping[str, Any]) -> Grammar | None:
    """The constraint a request asks for: OpenAI's ``response_format``, or llama.cpp's extra
    body fields ``grammar`` (GBNF text) and ``json_schema``; at most one."""
    try:
        fmt = response_format_grammar(body.get("response_format"))
    except ValueError as e:
        raise _bad("response_format", str(e)) from None
    extra = [k for k in ("grammar", "json_schema") if body.get(k) is not None]
    if len(extra) + (fmt is not None) > 1:
        raise _bad(extra[-1], "give only one of response_format, grammar and json_schema")
    if not extra:
        return fmt
    name = extra[0]
    value = body[name]
    if name == "grammar" and not isinstance(value, str):
        raise _bad("grammar", "'grammar' must be GBNF text")
    if name == "json_schema" and not isinstance(value, dict):
        raise _bad("json_schema", "'json_schema' must be a JSON schema object")
    try:
        return Grammar.from_gbnf(value) if name == "grammar" else Grammar.from_json_schema(value)
    except ValueError as e:
        raise _bad(name, str(e)) from None


def _sampling(body: Mapping[str, Any], n_vocab: int, max_tokens: int | None) -> SamplingParams:
    seed = _int(body, "seed", None, None)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.8, 0.0, 2.0),
        top_p=_number(body, "top_p", 0.95, 0.0, 1.0),
        top_k=int(_int(body, "top_k", 40, 0) or 0),
        min_p=_number(body, "min_p", 0.05, 0.0, 1.0),
        repeat_penalty=_number(body, "repeat_penalty", 1.0, 0.0, None) or 1.0,
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        seed=None if seed is None or seed < 0 else seed % (1 << 64),
        stop=_stop(body),
        logit_bias=_logit_bias(body, n_vocab),
        ignore_eos=_bool(body, "ignore_eos"),
        grammar=_grammar(body),
    )


def _max_tokens(body: Mapping[str, Any], default: int | None) -> int | None:
    n = _int(body, "max_completion_tokens", None, 1)
    return n if n is not None else _int(body, "max_tokens", default, 1)


def _stream_usage(body: Mapping[str, Any]) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict):
        raise _bad("stream_options", "'stream_options' must be an object")
    return _bool(opts, "include_usage")


# --- requests ------------------------------------------------------------------------------


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    params: SamplingParams
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False


@dataclass
class CompletionRequest:
    prompt: str | list[int]
    params: SamplingParams
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    logprobs: int | None = None


def parse_chat(body: Mapping[str, Any], n_vocab: int) -> ChatRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "'messages' must be a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _bad(f"messages[{i}]", f"messages[{i}] must be an object with a string 'role'")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _bad(f"messages[{i}].content", f"messages[{i}].content must be text or parts")
    tools = body.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
    ):
        raise _bad("tools", "'tools' must be a list of objects")
    _check_unsupported(body)
    logprobs = _bool(body, "logprobs")
    top = _int(body, "top_logprobs", None, 0, MAX_TOP_LOGPROBS)
    if top is not None and not logprobs:
        raise _bad("top_logprobs", "'top_logprobs' needs 'logprobs': true")
    params = _sampling(body, n_vocab, _max_tokens(body, None))
    params.logprobs = (top or 0) if logprobs else None
    return ChatRequest(
        messages=messages,
        tools=tools,
        params=params,
        tool_choice=body.get("tool_choice"),
        parallel_tool_calls=_bool(body, "parallel_tool_calls", True),
        stream=_bool(body, "stream"),
        include_usage=_stream_usage(body),
        logprobs=logprobs,
    )


def parse_completion(body: Mapping[str, Any], n_vocab: int) -> CompletionRequest:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # one prompt in a batch of one
    if isinstance(prompt, list):
        if not prompt or any(isinstance(t, bool) or not isinstance(t, int) for t in prompt):
            raise _bad(
                "prompt",
                "'prompt' must be a string or a list of token ids (one prompt per request)",
            )
        if any(not 0 <= t < n_vocab for t in prompt):
            raise _bad("prompt", f"'prompt' has token ids outside [0, {n_vocab})")
    elif not isinstance(prompt, str):
        raise _bad("prompt", "'prompt' must be a string or a list of token ids")
    if body.get("suffix"):
        raise _bad("suffix", "'suffix' (fill-in-the-middle) is not supported")
    if _int(body, "best_of", 1, 1) != 1:
        raise _bad("best_of", "only best_of=1 is supported")
    _check_unsupported(body)
    logprobs = _int(body, "logprobs", None, 0, MAX_TOP_LOGPROBS)
    params = _sampling(body, n_vocab, _max_tokens(body, 16))
    params.logprobs = logprobs
    return CompletionRequest(
        prompt=prompt,
        params=params,
        stream=_bool(body, "stream"),
        include_usage=_stream_usage(body),
        echo=_bool(body, "echo"),
        logprobs=logprobs,
    )


# --- responses -----------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def finish_reason(reason: str | None, tool_calls: bool = False) -> str:
    """OpenAI's: "stop" ("tool_calls" when the reply called tools), or "length" for a token
    limit or a full context."""
    if reason != "stop":
        return "length"
    return "tool_calls" if tool_calls else "stop"


def usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _token(tok: Tokenizer, id: int) -> tuple[str, list[int]]:
    raw = tok.token_bytes(id)
    return raw.decode("utf-8", errors="replace"), list(raw)


def chat_logprobs(tok: Tokenizer, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """``choices[].logprobs`` of a chat completion."""
    content = []
    for e in entries:
        text, raw = _token(tok, e.token)
        top = []
        for t, lp in e.top:
            t_text, t_raw = _token(tok, t)
            top.append({"token": t_text, "logprob": lp, "bytes": t_raw})
        content.append({"token": text, "logprob": e.logprob, "bytes": raw, "top_logprobs": top})
    return {"content": content, "refusal": None}


def completion_logprobs(
    tok: Tokenizer, entries: Sequence[TokenLogprob], offset: int
) -> dict[str, Any]:
    """``choices[].logprobs`` of a text completion; ``offset`` is where the first token's text
    starts in the returned text."""
    tokens, lps, tops, offsets = [], [], [], []
    for e in entries:
        text, _ = _token(tok, e.token)
        tokens.append(text)
        lps.append(e.logprob)
        tops.append({_token(tok, t)[0]: lp for t, lp in e.top})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def chat_response(
    model: str,
    text: str | None,
    reason: str | None,
    logprobs: dict[str, Any] | None,
    use: dict[str, Any],
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": finish_reason(reason, bool(tool_calls)),
            }
        ],
        "usage": use,
    }


def completion_response(
    model: str,
    text: str,
    reason: str | None,
    logprobs: dict[str, Any] | None,
    use: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason(reason)}
        ],
        "usage": use,
    }


class ChunkShaper:
    """The stream chunks of one response, all with the same id and creation time."""

    def __init__(self, model: str, chat: bool, include_usage: bool) -> None:
        self.chat = chat
        self.include_usage = include_usage
        self.head = {
            "id": new_id("chatcmpl" if chat else "cmpl"),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }

    def chunk(
        self,
        text: str | None,
        logprobs: dict[str, Any] | None = None,
        reason: str | None = None,
        role: bool = False,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            if tool_calls is not None:
                delta["tool_calls"] = tool_calls
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": logprobs, "finish_reason": reason}
        out = {**self.head, "choices": [choice]}
        if self.include_usage:
            out["usage"] = None
        return out

    def usage_chunk(self, use: dict[str, Any]) -> dict[str, Any]:
        return {**self.head, "choices": [], "usage": use}
