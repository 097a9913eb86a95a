"""rllm on a Ray cluster: :func:`app` serves ``rllm serve``'s OpenAI-compatible routes from N
Ray Serve replicas, and :class:`Generate` runs offline generation over a Ray Data dataset.

Each replica, and each Ray Data actor, is one process with one rllm engine (its own mmap of the
model and its own continuous batching); Ray only routes requests and rows between them. The
HTTP routes are those of :func:`rllm.server.app.create_app`, mounted as the replica's ASGI app.
Needs the ``ray`` extra (``pip install 'rllm[ray]'``); ``import rllm`` never imports ray.

    serve run rllm.ray:app model=smollm2-135m num_replicas=2 threads=1 parallel=4

See docs/scale-out.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    from ray import serve
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"rllm.ray needs Ray Serve: pip install 'rllm[ray]' ({e})") from None
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .batch import BatchGenerator
from .chat import ChatTemplate
from .hub import download, parse_hf_spec
from .model import Model
from .server.app import create_app
from .server.engine import ServerConfig, ServerEngine

POOLINGS = ("none", "mean", "cls", "last", "rank")  # as `rllm serve --pooling`

__all__ = ["Generate", "app"]

REPLICA_HEADER = "x-rllm-replica"  # names the Serve replica that answered

# The arguments of `app`, as `rllm serve` spells its flags (value type, default).
_ARGS: dict[str, tuple[type, Any]] = {
    "model": (str, None),
    "hf_repo": (str, None),
    "hf_file": (str, None),
    "hf_token": (str, None),
    "threads": (int, 1),
    "parallel": (int, 4),
    "ctx_size": (int, None),
    "batch_size": (int, None),
    "api_key": (str, None),
    "alias": (str, None),
    "chat_template": (str, None),
    "max_body_bytes": (int, 1 << 20),
    "embeddings": (bool, False),
    "pooling": (str, None),
    "reranking": (bool, False),
    "num_replicas": (int, 1),
    "autoscaling_config": (dict, None),
}


# --- Ray Serve ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _HFModel:
    """A model of ``hf_repo``, as ``rllm serve -hf`` names it."""

    repo_id: str
    quant: str | None
    filename: str | None
    token: str | None


# The ASGI app of this process's replica. A Serve replica is one Ray actor, so one process
# holds at most one; the deployment class sets it once its engine is loaded.
_replica_app: ASGIApp | None = None


class _ReplicaApp:
    """The ASGI app given to ``serve.ingress``: Serve copies it to every replica, where it
    forwards to that replica's own app (built over its own engine, which cannot be pickled)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _replica_app is None:
            raise RuntimeError("the rllm replica has no engine")
        await _replica_app(scope, receive, send)


class _ReplicaHeader:
    """ASGI middleware that adds the replica's id to every HTTP response."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


class _Replica:
    """One replica: an rllm engine (model and scheduler) behind ``rllm serve``'s routes.

    The constructor loads the model and raises rllm's own error when it cannot (Serve shows
    it in the deployment's status); ``check_health`` fails once the scheduler has stopped."""

    def __init__(self, config: ServerConfig, hf: _HFModel | None) -> None:
        global _replica_app
        if hf is not None:  # downloaded on this node, into its Hugging Face cache
            path = download(hf.repo_id, hf.filename, quant=hf.quant, token=hf.token)
            config.model = str(path)
        self.engine = ServerEngine(config)
        self.engine.load()
        if self.engine.error is not None:
            raise self.engine.error
        replica = serve.get_replica_context().replica_tag
        _replica_app = _ReplicaHeader(create_app(self.engine), replica)

    def check_health(self) -> None:
        if not self.engine.running:
            raise RuntimeError("rllm: the scheduler of this replica stopped")

    def __del__(self) -> None:
        self.engine.close()


# Decorated by call, not by `@`: `_Replica` stays importable, so Ray pickles it by reference
# and its methods set this module's `_replica_app` in the replica, not a copy of it.
RllmReplica: serve.Deployment = serve.deployment(name="rllm")(
    serve.ingress(_ReplicaApp())(_Replica)
)


def _value(name: str, value: Any) -> Any:
    """``value`` of argument ``name`` as its type (`serve run` passes every value as text)."""
    kind, _ = _ARGS[name]
    if value is None or isinstance(value, kind) and not isinstance(value, bool):
        return value
    if kind is bool and isinstance(value, (bool, str)):
        text = str(value).lower()
        if text in ("true", "1", "yes", "false", "0", "no"):
            return text in ("true", "1", "yes")
    elif kind is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    elif kind is dict and isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    elif kind is str and name == "api_key" and isinstance(value, (list, tuple)):
        return value
    raise ValueError(f"rllm.ray: {name} must be {kind.__name__}, got {value!r}")


def app(args: Mapping[str, Any]) -> serve.Application:
    """The Ray Serve application: ``num_replicas`` replicas, each serving the model with
    ``threads`` threads (its ``num_cpus``) and ``parallel`` slots (its
    ``max_ongoing_requests``; further requests wait in Serve's queue).

    ``args`` as ``serve run rllm.ray:app KEY=VALUE ...`` or a Serve config's ``args`` give
    them: ``model`` (a .gguf path that exists on every node, or a known name) or ``hf_repo``
    (``USER/MODEL[:QUANT]``, with ``hf_file`` and ``hf_token``), downloaded by each replica;
    ``ctx_size`` (all slots of a replica together, as ``rllm serve -c``), ``batch_size``,
    ``api_key`` (one key, or a list in a config file), ``alias``, ``chat_template``,
    ``max_body_bytes``; ``embeddings`` (serve /v1/embeddings), ``pooling`` and
    ``reranking`` (/v1/rerank) as ``rllm serve``'s flags; and Serve's ``num_replicas`` or
    ``autoscaling_config`` (a mapping, or its JSON on the command line)."""
    unknown = sorted(set(args) - set(_ARGS))
    if unknown:
        raise ValueError(f"rllm.ray: unknown arguments {unknown}; known: {sorted(_ARGS)}")
    a = {name: _value(name, args.get(name, default)) for name, (_, default) in _ARGS.items()}
    for name in ("threads", "parallel", "num_replicas", "max_body_bytes"):
        if a[name] < 1:
            raise ValueError(f"rllm.ray: {name} must be at least 1, got {a[name]}")
    hf = None
    if a["hf_repo"] is not None:
        if a["model"] is not None:
            raise ValueError("rllm.ray: give model or hf_repo, not both")
        repo, quant = parse_hf_spec(a["hf_repo"])
        if quant and a["hf_file"]:
            raise ValueError("rllm.ray: give the file with hf_repo=USER/MODEL:QUANT or hf_file")
        hf = _HFModel(repo, quant, a["hf_file"], a["hf_token"])
    elif a["model"] is None:
        raise ValueError("rllm.ray: give model=PATH_OR_NAME or hf_repo=USER/MODEL[:QUANT]")
    keys = a["api_key"]
    keys = [keys] if isinstance(keys, str) else list(keys or ())
    if any(not isinstance(k, str) or not k or any(c.isspace() for c in k) for k in keys):
        raise ValueError("rllm.ray: an api_key must be non-empty text without whitespace")
    if a["pooling"] not in (None, *POOLINGS):
        raise ValueError(f"rllm.ray: pooling must be one of {POOLINGS}, got {a['pooling']!r}")
    if a["chat_template"] is not None:
        ChatTemplate.from_spec(a["chat_template"])  # a bad name or Jinja fails here, not per node
    config = ServerConfig(
        model=a["model"] or "",
        n_ctx=a["ctx_size"],
        n_parallel=a["parallel"],
        n_threads=a["threads"],
        use_mmap=True,  # replicas on one node share the file's pages instead of a copy each
        n_batch=a["batch_size"],
        api_keys=tuple(keys),
        alias=a["alias"],
        chat_template=a["chat_template"],
        max_body_bytes=a["max_body_bytes"],
        embeddings=a["embeddings"] or a["reranking"],
        pooling="rank" if a["reranking"] else a["pooling"],
    )
    options: dict[str, Any] = {
        "max_ongoing_requests": a["parallel"],
        "ray_actor_options": {"num_cpus": a["threads"]},
    }
    if a["autoscaling_config"] is not None:
        if "num_replicas" in args:
            raise ValueError("rllm.ray: give num_replicas or autoscaling_config, not both")
        options["autoscaling_config"] = a["autoscaling_config"]
    else:
        options["num_replicas"] = a["num_replicas"]
    return RllmReplica.options(**options).bind(config, hf)


# --- Ray Data -------------------------------------------------------------------------------


class Generate:
    """Offline generation over a Ray Data dataset, one engine per actor:

    >>> ds = ray.data.from_items([{"prompt": "The capital of France is"}])  # doctest: +SKIP
    >>> ds = ds.map_batches(                                                  # doctest: +SKIP
    ...     rllm.ray.Generate,
    ...     fn_constructor_kwargs={"model": "smollm2-135m", "n_threads": 1, "max_tokens": 32},
    ...     concurrency=2, num_cpus=1, batch_size=16)

    Each batch's ``prompt_column`` goes through :class:`rllm.BatchGenerator` (``n_parallel``
    sequences decoded together); the batch comes back with ``text_column`` (the completion),
    ``finish_reason`` and ``completion_tokens`` added. ``chat=True`` sends each prompt as one
    user message through the model's chat template. ``model``, ``n_parallel``, ``n_ctx``
    (per sequence), ``n_threads`` and ``n_batch`` are :class:`rllm.BatchGenerator`'s; the
    other keyword arguments are its sampling arguments. Batches are dicts of numpy arrays
    (Ray Data's default) or pandas DataFrames.
    """

    def __init__(
        self,
        model: str,
        *,
        prompt_column: str = "prompt",
        text_column: str = "text",
        chat: bool = False,
        n_parallel: int = 4,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int | None = None,
        **sampling: Any,
    ) -> None:
        # Mapped: the actors on one node share the file's pages instead of a copy each.
        self.generator = BatchGenerator(
            Model(model, n_threads=n_threads, use_mmap=True),
            n_parallel=n_parallel,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_batch=n_batch,
        )
        self.prompt_column = prompt_column
        self.text_column = text_column
        self.chat = chat
        self.sampling = sampling

    def __call__(self, batch: Any) -> Any:
        texts = [str(p) for p in batch[self.prompt_column]]
        prompts: Sequence[str | Sequence[int]] = texts
        if self.chat:
            model = self.generator.model
            prompts = [model.chat_prompt([{"role": "user", "content": t}]) for t in texts]
        done = self.generator.complete(prompts, **self.sampling)
        batch[self.text_column] = np.array([c.text for c in done], dtype=object)
        batch["finish_reason"] = np.array([c.finish_reason for c in done], dtype=object)
        batch["completion_tokens"] = np.array([c.completion_tokens for c in done])
        return batch
