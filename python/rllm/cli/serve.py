"""``rllm serve``: an OpenAI-compatible HTTP server (llama-server's flags) with continuous
batching over ``--parallel`` slots."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os

from ..chat import ChatTemplate
from .common import UsageError, add_context, add_gpu_compat, add_model, int_at_least, note

HELP = "serve a model over an OpenAI-compatible HTTP API"
DESCRIPTION = """\
Serve a model over HTTP with OpenAI's API: POST /v1/chat/completions and /v1/completions
(streaming with server-sent events), GET /v1/models, /health and /metrics (Prometheus),
POST /tokenize and /detokenize; with --embeddings, POST /v1/embeddings (and /v1/rerank for
rerankers). Up to --parallel requests are decoded together in one batch;
more wait in a queue of --max-queue, beyond which requests get 503. The context (-c) is split
evenly between the slots."""
EPILOG = """\
example:
  rllm serve -m model.gguf --port 8080 -c 4096 --parallel 4 --api-key "$(cat key.txt)"
  then point an OpenAI client at http://127.0.0.1:8080/v1 with that key.

With --api-key (or --api-key-file, or $RLLM_API_KEY) every endpoint except /health needs the
header 'Authorization: Bearer KEY'. Needs the server extra: pip install 'rllm[server]'."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    g = p.add_argument_group("server")
    g.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (127.0.0.1); 0.0.0.0 exposes the server to the network",
    )
    g.add_argument(
        "--port", type=int_at_least(0), default=8080, help="port to listen on; 0 = any free (8080)"
    )
    g.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="require 'Authorization: Bearer KEY'; may be given several times",
    )
    g.add_argument(
        "--api-key-file",
        default=None,
        metavar="FNAME",
        help="file with API keys, one per line",
    )
    g.add_argument(
        "-a",
        "--alias",
        default=None,
        metavar="NAME",
        help="model name reported by /v1/models and in responses (default: the file name)",
    )
    g.add_argument(
        "--chat-template",
        default=None,
        metavar="NAME|JINJA",
        help="chat template: a built-in name or Jinja source (default: the model's)",
    )
    g.add_argument(
        "--chat-template-file",
        default=None,
        metavar="FNAME",
        help="read the Jinja chat template from a file",
    )
    g.add_argument(
        "--max-queue",
        type=int_at_least(0),
        default=64,
        metavar="N",
        help="requests that may wait for a free slot; more get 503 (64)",
    )
    g.add_argument(
        "--max-body-bytes",
        type=int_at_least(1024),
        default=1 << 20,
        metavar="N",
        help="largest request body accepted; larger ones get 413 (1048576)",
    )
    g.add_argument(
        "--embeddings",
        "--embedding",
        action="store_true",
        help="serve POST /v1/embeddings (and /v1/rerank for rank pooling)",
    )
    g.add_argument(
        "--pooling",
        choices=("none", "mean", "cls", "last", "rank"),
        default=None,
        help="pooling of the embeddings (default: the model's, else none)",
    )
    g.add_argument(
        "--reranking",
        "--rerank",
        action="store_true",
        help="serve POST /v1/rerank: --embeddings with --pooling rank",
    )
    g = p.add_argument_group("engine")
    add_context(g)
    g.add_argument(
        "-np",
        "--parallel",
        type=int_at_least(1),
        default=1,
        metavar="N",
        help="sequences decoded together (slots); each gets -c / N tokens (1)",
    )
    g.add_argument(
        "-b",
        "--batch-size",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help="most tokens in one forward pass (512)",
    )
    add_gpu_compat(g)


def _api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    keys = list(args.api_key)
    if args.api_key_file:
        try:
            with open(args.api_key_file, encoding="utf-8") as f:
                from_file = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise OSError(f"cannot read {args.api_key_file}: {e.strerror or e}") from None
        if not from_file:
            raise UsageError(f"--api-key-file {args.api_key_file} holds no key")
        keys += from_file
    env = os.environ.get("RLLM_API_KEY", "").strip()
    if env:
        keys.append(env)
    if any(not k or any(c.isspace() for c in k) for k in keys):
        raise UsageError("an API key must be non-empty and contain no whitespace")
    return tuple(keys)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(args: argparse.Namespace) -> int:
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"rllm serve needs {' and '.join(missing)}: pip install 'rllm[server]'")
    from ..server.app import serve
    from ..server.engine import ServerConfig

    template = args.chat_template
    if args.chat_template_file:
        if template:
            raise UsageError("give --chat-template or --chat-template-file, not both")
        with open(args.chat_template_file, encoding="utf-8") as f:
            template = f.read()
    if template:
        try:
            ChatTemplate.from_spec(template)
        except ValueError as e:  # an unknown name, or a Jinja syntax error
            raise UsageError(str(e)) from None
    keys = _api_keys(args)
    if not _is_loopback(args.host) and not keys:
        note(f"listening on {args.host} without an API key: anyone who can reach it may use it")
    if args.n_gpu_layers:
        note("-ngl has no effect: rllm runs on the CPU")
    config = ServerConfig(
        model=args.model,
        host=args.host,
        port=args.port,
        n_ctx=args.ctx_size,
        n_parallel=args.parallel,
        n_threads=args.threads if args.threads and args.threads > 0 else None,
        use_mmap=args.use_mmap,
        n_batch=args.batch_size,
        api_keys=keys,
        alias=args.alias,
        chat_template=template,
        max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue,
        embeddings=args.embeddings or args.reranking,
        pooling="rank" if args.reranking else args.pooling,
    )
    return serve(config)
