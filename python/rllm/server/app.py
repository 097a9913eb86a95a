"""The HTTP side of ``rllm serve``: OpenAI-compatible routes on Starlette, an ASGI guard for the
API key, body size and the one log line per request, and :func:`serve`, which binds the socket,
loads the model in the background and runs uvicorn.

The log line names the method, path, status, token counts and latency, never the prompt or the
generated text.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..batch import QueueFullError, SamplingParams
from ..embeddings import embedding_data, rerank_ids, tokenize_inputs
from ..errors import ChatTemplateError, ContextFullError
from ..tools import ToolError, plan_tools
from .engine import Generation, ServerConfig, ServerEngine
from .schemas import (
    APIError,
    ChunkShaper,
    chat_logprobs,
    chat_response,
    completion_logprobs,
    completion_response,
    error_body,
    finish_reason,
    parse_chat,
    parse_completion,
    usage,
)

__all__ = ["create_app", "serve"]

log = logging.getLogger("rllm.server")

PATHS = (
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "/chat/completions",
    "/completions",
    "/tokenize",
    "/detokenize",
    "/v1/embeddings",
    "/v1/rerank",
    "/rerank",
)
OPEN_PATHS = frozenset({"/health"})


def _error(status: int, message: str, **kw: Any) -> JSONResponse:
    return JSONResponse(error_body(status, message, **kw), status_code=status)


class Guard:
    """ASGI middleware in front of every route: API key check (constant time), body size
    limit from Content-Length, metrics by path and status, and the request log line."""

    def __init__(self, app: ASGIApp, engine: ServerEngine) -> None:
        self.app = app
        self.engine = engine
        self.keys = [k.encode() for k in engine.config.api_keys]
        self.limit = engine.config.max_body_bytes

    def _authorized(self, scope: Scope) -> bool:
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        ok = False
        for key in self.keys:  # every key is compared, whichever matches
            ok |= hmac.compare_digest(token, key)
        return ok and scheme.lower() == b"bearer"

    def _reject(self, scope: Scope) -> Response | None:
        if self.keys and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            return JSONResponse(
                error_body(
                    401,
                    "invalid or missing API key: send the header 'Authorization: Bearer KEY'",
                    code="invalid_api_key",
                ),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    return _error(400, "invalid Content-Length header")
                if size > self.limit:
                    return _error(413, f"the request body is larger than {self.limit} bytes")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        info: dict[str, Any] = {}
        scope["rllm"] = info

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            reject = self._reject(scope)
            if reject is not None:
                await reject(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in PATHS else "other"
            self.engine.metrics.request(path, status)
            tokens = ""
            if "prompt_tokens" in info:
                tokens = (
                    f" prompt={info['prompt_tokens']} cached={info['cached_tokens']}"
                    f" completion={info['completion_tokens']}"
                )
            ms = 1000 * (time.perf_counter() - start)
            log.info("%s %s %d%s %.1fms", scope["method"], path, status, tokens, ms)


def _ready(request: Request) -> ServerEngine:
    engine: ServerEngine = request.app.state.engine
    if not engine.loaded:
        raise APIError(503, "the model is loading; try again shortly")
    return engine


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise APIError(413, f"the request body is larger than {limit} bytes")
        parts.append(part)
    try:
        body = json.loads(b"".join(parts))
    except ValueError:
        raise APIError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    return body


def _start(engine: ServerEngine, ids: list[int], params: SamplingParams) -> Generation:
    if engine.scheduler is None:
        raise APIError(
            501, f"this model ({engine.model_id}) only embeds: it has no output head to generate"
        )
    try:
        return engine.start(ids, params)
    except ContextFullError as e:
        raise APIError(400, str(e), param="messages", code="context_length_exceeded") from None
    except QueueFullError as e:
        raise APIError(503, str(e)) from None
    except ValueError as e:
        raise APIError(400, str(e)) from None


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _watch_disconnect(request: Request, gen: Generation) -> None:
    """Cancel ``gen`` when the client of a non-streaming request goes away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gen.cancel()
            return


class _Run:
    """A generation for one response: its chunks, with the counters kept for the log line."""

    def __init__(self, request: Request, gen: Generation) -> None:
        self.request = request
        self.gen = gen
        self.info: dict[str, Any] = request.scope.get("rllm", {})

    def record(self) -> dict[str, Any]:
        req = self.gen.request
        self.info.update(
            prompt_tokens=len(req.prompt),
            cached_tokens=req.n_cached,
            completion_tokens=req.n_generated,
        )
        return usage(len(req.prompt), req.n_generated, req.n_cached)

    async def collect(self) -> tuple[str, list[Any], str | None]:
        watcher = asyncio.ensure_future(_watch_disconnect(self.request, self.gen))
        texts, lps, reason = [], [], None
        try:
            async for chunk in self.gen.chunks():
                if chunk.error is not None:
                    raise APIError(500, f"generation failed: {chunk.error}")
                texts.append(chunk.text)
                lps.extend(chunk.logprobs)
                reason = chunk.finish_reason
        finally:
            watcher.cancel()
            self.record()
        if reason == "cancelled":
            raise APIError(503, "the generation was cancelled (the server is shutting down)")
        return "".join(texts), lps, reason


# --- routes --------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    engine: ServerEngine = request.app.state.engine
    if engine.error is not None:
        return _error(500, "the model failed to load")
    if not engine.loaded:
        return _error(503, "the model is loading")
    if not engine.running:
        return _error(500, "the scheduler stopped")
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    engine: ServerEngine = request.app.state.engine
    return PlainTextResponse(
        engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


def _model_card(engine: ServerEngine) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": engine.model_id,
        "object": "model",
        "created": engine.created,
        "owned_by": "rllm",
    }
    if engine.scheduler is not None:
        s = engine.scheduler
        card["meta"] = {"n_ctx_slot": s.n_ctx, "n_parallel": s.n_slots, "n_vocab": s.model.n_vocab}
    return card


async def models(request: Request) -> Response:
    engine = _ready(request)
    return JSONResponse({"object": "list", "data": [_model_card(engine)]})


async def model(request: Request) -> Response:
    engine = _ready(request)
    if request.path_params["name"] != engine.model_id:
        raise APIError(404, f"the model {request.path_params['name']!r} does not exist")
    return JSONResponse(_model_card(engine))


async def chat_completions(request: Request) -> Response:
    engine = _ready(request)
    body = await _json_body(request, engine.config.max_body_bytes)
    model = engine.model
    assert model is not None
    req = parse_chat(body, model.n_vocab)
    try:
        plan = plan_tools(model.chat_template, req.tools, req.tool_choice, req.parallel_tool_calls)
        messages = plan.messages(req.messages)
        forced = plan.grammar()
    except ToolError as e:
        raise APIError(400, str(e), param=e.param) from None
    if forced is not None:
        if req.params.grammar is not None:
            raise APIError(
                400,
                "a forced tool call cannot also take response_format, grammar or json_schema",
                param="tool_choice",
            )
        req.params.grammar = forced
    try:
        ids = model.chat_prompt(messages, plan.template_tools(), prefill=plan.prefill)
    except (ChatTemplateError, TypeError, ValueError) as e:
        raise APIError(400, f"the chat template refused the messages: {e}") from None
    run = _Run(request, _start(engine, ids, req.params))
    tok = model.tokenizer
    if req.stream:

        async def events() -> AsyncIterator[str]:
            shaper = ChunkShaper(engine.model_id, chat=True, include_usage=req.include_usage)
            tools = plan.stream()  # holds back text that may begin a tool call
            try:
                yield _sse(shaper.chunk("", role=True))
                async for chunk in run.gen.chunks():
                    if chunk.error is not None or chunk.finish_reason == "cancelled":
                        yield _sse(error_body(500, f"generation failed: {chunk.error}"))
                        break
                    lp = chat_logprobs(tok, chunk.logprobs) if req.logprobs else None
                    shown = tools.feed(chunk.text)
                    if shown or chunk.logprobs:
                        yield _sse(shaper.chunk(shown, lp))
                    if chunk.finish_reason is not None:
                        rest, calls = tools.finish()
                        if rest:
                            yield _sse(shaper.chunk(rest))
                        for i, call in enumerate(calls):
                            for delta in call.deltas(i):
                                yield _sse(shaper.chunk(None, tool_calls=[delta]))
                        reason = finish_reason(chunk.finish_reason, bool(calls))
                        yield _sse(shaper.chunk(None, reason=reason))
                use = run.record()
                if req.include_usage:
                    yield _sse(shaper.usage_chunk(use))
                yield "data: [DONE]\n\n"
            finally:
                run.record()

        return StreamingResponse(events(), media_type="text/event-stream", headers=_SSE_HEADERS)
    text, lps, reason = await run.collect()
    lp = chat_logprobs(tok, lps) if req.logprobs else None
    reply = plan.parse(text)
    calls = [c.openai() for c in reply.calls]
    return JSONResponse(
        chat_response(engine.model_id, reply.content, reason, lp, run.record(), calls)
    )


async def completions(request: Request) -> Response:
    engine = _ready(request)
    body = await _json_body(request, engine.config.max_body_bytes)
    model = engine.model
    assert model is not None
    req = parse_completion(body, model.n_vocab)
    if isinstance(req.prompt, str):
        ids = model.tokenize(req.prompt, special=True)
        prompt_text = req.prompt
    else:
        ids = list(req.prompt)
        prompt_text = model.detokenize(ids) if req.echo else ""
    run = _Run(request, _start(engine, ids, req.params))
    tok = model.tokenizer
    echo = prompt_text if req.echo else ""
    if req.stream:

        async def events() -> AsyncIterator[str]:
            shaper = ChunkShaper(engine.model_id, chat=False, include_usage=req.include_usage)
            offset = len(echo)
            try:
                if echo:
                    yield _sse(shaper.chunk(echo))
                async for chunk in run.gen.chunks():
                    if chunk.error is not None or chunk.finish_reason == "cancelled":
                        yield _sse(error_body(500, f"generation failed: {chunk.error}"))
                        break
                    lp = None
                    if req.logprobs is not None:
                        lp = completion_logprobs(tok, chunk.logprobs, offset)
                    offset += len(chunk.text)
                    reason = chunk.finish_reason and finish_reason(chunk.finish_reason)
                    if chunk.text or chunk.logprobs or reason:
                        yield _sse(shaper.chunk(chunk.text, lp, reason))
                use = run.record()
                if req.include_usage:
                    yield _sse(shaper.usage_chunk(use))
                yield "data: [DONE]\n\n"
            finally:
                run.record()

        return StreamingResponse(events(), media_type="text/event-stream", headers=_SSE_HEADERS)
    text, lps, reason = await run.collect()
    lp = completion_logprobs(tok, lps, len(echo)) if req.logprobs is not None else None
    return JSONResponse(completion_response(engine.model_id, echo + text, reason, lp, run.record()))


async def tokenize(request: Request) -> Response:
    engine = _ready(request)
    body = await _json_body(request, engine.config.max_body_bytes)
    model = engine.model
    assert model is not None
    content = body.get("content")
    if not isinstance(content, str):
        raise APIError(400, "'content' must be a string", param="content")
    flags = {}
    for name, default in (("add_special", False), ("parse_special", True), ("with_pieces", False)):
        value = body.get(name, default)
        if not isinstance(value, bool):
            raise APIError(400, f"'{name}' must be true or false", param=name)
        flags[name] = value
    ids = model.tokenize(content, add_bos=flags["add_special"], special=flags["parse_special"])
    if flags["with_pieces"]:
        pieces = [
            {"id": t, "piece": model.tokenizer.token_bytes(t).decode("utf-8", "replace")}
            for t in ids
        ]
        return JSONResponse({"tokens": pieces})
    return JSONResponse({"tokens": ids})


async def detokenize(request: Request) -> Response:
    engine = _ready(request)
    body = await _json_body(request, engine.config.max_body_bytes)
    model = engine.model
    assert model is not None
    ids = body.get("tokens")
    n_vocab = model.n_vocab
    if not isinstance(ids, list) or any(
        isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n_vocab for t in ids
    ):
        raise APIError(
            400, f"'tokens' must be a list of token ids in [0, {n_vocab})", param="tokens"
        )
    return JSONResponse({"content": model.detokenize(ids)})


def _log_tokens(request: Request, n_tokens: int) -> None:
    request.scope["rllm"].update(prompt_tokens=n_tokens, cached_tokens=0, completion_tokens=0)


async def _embed(
    engine: ServerEngine, ids: list[list[int]], pooling: str, normalize: int
) -> tuple[Any, list[int], int]:
    try:
        return await asyncio.to_thread(engine.embed, ids, pooling, normalize)
    except ContextFullError as e:
        message = f"an input is too long for the context size {engine.model.n_ctx}: {e}"  # type: ignore[union-attr]
        raise APIError(400, message, param="input", code="context_length_exceeded") from None
    except ValueError as e:
        raise APIError(400, str(e), param="input") from None


def _embedding_engine(request: Request) -> ServerEngine:
    engine = _ready(request)
    if not engine.config.embeddings:
        raise APIError(501, "This server does not support embeddings. Start it with `--embeddings`")
    return engine


async def embeddings(request: Request) -> Response:
    """OpenAI's POST /v1/embeddings: ``input`` a string, token ids, or a list of those."""
    engine = _embedding_engine(request)
    if engine.pooling == "none":
        raise APIError(
            400, "Pooling type 'none' is not OAI compatible. Please use a different pooling type"
        )
    body = await _json_body(request, engine.config.max_body_bytes)
    model = engine.model
    assert model is not None
    if "input" not in body:
        raise APIError(400, "'input' must be provided", param="input")
    if body["input"] == [] or body["input"] == "":
        raise APIError(400, "'input' must not be empty", param="input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise APIError(
            400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
        )
    normalize = body.get("embd_normalize", 2)
    if isinstance(normalize, bool) or not isinstance(normalize, int):
        raise APIError(400, "'embd_normalize' must be an integer", param="embd_normalize")
    try:
        ids, _ = tokenize_inputs(model.tokenizer, body["input"])
    except TypeError as e:
        raise APIError(400, str(e), param="input") from None
    vectors, rows, n_tokens = await _embed(engine, ids, engine.pooling, normalize)
    _log_tokens(request, n_tokens)
    return JSONResponse(
        {
            "object": "list",
            "data": embedding_data(vectors, rows, False, fmt),
            "model": engine.model_id,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }
    )


async def rerank(request: Request) -> Response:
    """llama-server's POST /v1/rerank: ``query``, ``documents``, ``top_n`` -> ``results`` of
    ``index`` and ``relevance_score``, best first."""
    engine = _embedding_engine(request)
    if engine.pooling != "rank":
        raise APIError(
            501,
            "This server does not support reranking. Start it with `--reranking` "
            "and a reranker model",
        )
    body = await _json_body(request, engine.config.max_body_bytes)
    model = engine.model
    assert model is not None
    query = body.get("query")
    if not isinstance(query, str):
        raise APIError(400, "'query' must be a string", param="query")
    docs = body.get("documents", body.get("texts"))
    if not isinstance(docs, list) or not docs or not all(isinstance(d, str) for d in docs):
        raise APIError(400, "'documents' must be a non-empty list of strings", param="documents")
    top_n = body.get("top_n", len(docs))
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0:
        raise APIError(400, "'top_n' must be a non-negative integer", param="top_n")
    ids = [rerank_ids(model.tokenizer, query, d) for d in docs]
    scores, _, n_tokens = await _embed(engine, ids, "rank", -1)
    results = [{"index": i, "relevance_score": float(scores[i, 0])} for i in range(len(docs))]
    results.sort(key=lambda r: -r["relevance_score"])
    _log_tokens(request, n_tokens)
    return JSONResponse(
        {
            "model": body.get("model", engine.model_id),
            "object": "list",
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
            "results": results[:top_n],
        }
    )


# --- the application -----------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return _error(exc.status_code, f"{message}: {request.method} {request.url.path}")


async def _internal_error(request: Request, exc: Exception) -> Response:
    # The message may quote the request, so only the type is logged.
    log.error("internal error on %s: %s", request.url.path, type(exc).__name__)
    return _error(500, "internal server error")


def create_app(engine: ServerEngine) -> ASGIApp:
    """The ASGI application over ``engine`` (which may still be loading)."""
    post = ["POST"]
    routes = [
        Route("/health", health),
        Route("/metrics", metrics),
        Route("/v1/models", models),
        Route("/models", models),
        Route("/v1/models/{name:path}", model),
        Route("/v1/chat/completions", chat_completions, methods=post),
        Route("/chat/completions", chat_completions, methods=post),
        Route("/v1/completions", completions, methods=post),
        Route("/completions", completions, methods=post),
        Route("/tokenize", tokenize, methods=post),
        Route("/detokenize", detokenize, methods=post),
        Route("/v1/embeddings", embeddings, methods=post),
        Route("/embeddings", embeddings, methods=post),
        Route("/v1/rerank", rerank, methods=post),
        Route("/rerank", rerank, methods=post),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        APIError: _api_error,
        HTTPException: _http_error,
        Exception: _internal_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.engine = engine
    return Guard(app, engine)


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in ("rllm.server", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    logging.getLogger("rllm.server").setLevel(logging.INFO)
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True  # it would log query strings


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(config: ServerConfig) -> int:
    """Bind ``config.host:config.port`` (port 0: any free port), load the model in the
    background (``/health`` answers 503 meanwhile) and serve until interrupted. Prints
    ``listening on http://HOST:PORT`` on stdout once the socket is bound."""
    import uvicorn

    _setup_logging()
    engine = ServerEngine(config)
    sock = _bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    print(f"rllm: listening on http://{url_host}:{port}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(engine),
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=3,
        )
    )

    def load() -> None:
        engine.load()
        if engine.error is not None:
            log.error("cannot load the model: %s", engine.error)
            server.should_exit = True
            return
        s = engine.scheduler
        slots = f"{s.n_slots} slots of {s.n_ctx} tokens" if s else "embeddings only"
        if config.embeddings:
            slots += f", embeddings ({engine.pooling} pooling)"
        log.info(
            "model %s ready: %s, %s",
            engine.model_id,
            slots,
            "API key required" if config.api_keys else "no API key",
        )

    threading.Thread(target=load, name="rllm-load", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        engine.close()
        sock.close()
    if engine.error is not None:
        print(f"rllm: error: {engine.error}", file=sys.stderr)
        return 1
    return 0
