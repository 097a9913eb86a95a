"""``rllm serve --embeddings``: OpenAI's /v1/embeddings through the official ``openai``
client against SmolLM2 (checked against llama.cpp's fixture), llama-server's /v1/rerank on a
tiny reranker, encoder-only models, and every error path (raw httpx, in-process for the
small models)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import rllm
from conftest import FIXTURES
from rllm.cli.serve import add_arguments
from rllm.embeddings import rerank_ids
from rllm.server.app import create_app
from rllm.server.engine import ServerConfig, ServerEngine
from server_process import ServerProcess
from tiny_encoders import write_encoder, write_named
from tiny_models import write_tiny_llama

FX = json.loads((FIXTURES / "embeddings_llama_cpp.json").read_text())


def cosines(a: Any, b: Any) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def smollm2_server(
    smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "embed.log"
    args = ["-m", str(smollm2_path), "-c", "256", "-t", "2", "--embeddings", "--pooling", "mean"]
    with ServerProcess([*args, "--alias", "smol"], log) as s:
        yield s


def openai_client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1",
        api_key="none",
        max_retries=0,
        timeout=60,
        http_client=httpx.Client(trust_env=False),
    )


def test_openai_client_embeddings_match_llama_cpp(smollm2_server: ServerProcess) -> None:
    case = FX["smollm2"]
    with openai_client(smollm2_server) as c:
        # the client asks for base64 by default and decodes it
        out = c.embeddings.create(model="smol", input=case["prompts"])
        floats = c.embeddings.create(model="smol", input=case["prompts"], encoding_format="float")
        one = c.embeddings.create(model="smol", input=case["prompts"][2])
        by_ids = c.embeddings.create(model="smol", input=case["token_ids"][2])
    got = np.array([d.embedding for d in out.data])
    assert got.shape == (8, 576) and [d.index for d in out.data] == list(range(8))
    assert cosines(got, case["embeddings"]).min() >= 0.999
    np.testing.assert_allclose([d.embedding for d in floats.data], got, atol=1e-6)
    n = sum(map(len, case["token_ids"]))
    assert out.usage.prompt_tokens == n and out.usage.total_tokens == n
    assert out.model == "smol"
    np.testing.assert_allclose(one.data[0].embedding, got[2], atol=1e-5)
    np.testing.assert_allclose(by_ids.data[0].embedding, got[2], atol=1e-5)
    assert by_ids.usage.prompt_tokens == len(case["token_ids"][2])


def test_generation_still_served_beside_embeddings(smollm2_server: ServerProcess) -> None:
    with openai_client(smollm2_server) as c:
        out = c.completions.create(model="smol", prompt="Hello", max_tokens=2, temperature=0)
    assert out.usage.completion_tokens == 2


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({}, "'input' must be provided"),
        ({"input": []}, "'input' must not be empty"),
        ({"input": ""}, "'input' must not be empty"),
        ({"input": 3}, "input must be"),
        ({"input": ["ok", {"a": 1}]}, r"input\[1\] must be"),
        ({"input": [[1, 2], []]}, "input 1 is empty"),
        ({"input": [1, 10**9]}, "out of range"),
        ({"input": "x", "encoding_format": "int8"}, "'encoding_format' must be"),
        ({"input": "x", "embd_normalize": "2"}, "'embd_normalize' must be an integer"),
        ({"input": "x", "embd_normalize": -5}, "normalize must be"),
        ({"input": "word " * 300}, "context size 256"),
    ],
)
def test_embedding_errors_are_400(smollm2_server: ServerProcess, body: dict, match: str) -> None:
    r = httpx.post(f"{smollm2_server.url}/v1/embeddings", json=body, trust_env=False, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert re.search(match, r.json()["error"]["message"]), r.json()


def test_rerank_needs_a_reranker(smollm2_server: ServerProcess) -> None:
    body = {"query": "a", "documents": ["b"]}
    r = httpx.post(f"{smollm2_server.url}/v1/rerank", json=body, trust_env=False)
    assert r.status_code == 501 and "reranking" in r.json()["error"]["message"]


# --- in process, on tiny models ------------------------------------------------------------


def call(engine: ServerEngine, *requests: tuple[str, str, Any]) -> list[httpx.Response]:
    """Load ``engine`` and send ``(method, path, json)`` requests to its app."""
    engine.load()
    if engine.error is not None:
        raise engine.error
    app = create_app(engine)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return [await http.request(m, p, json=j) for m, p, j in requests]

    try:
        return asyncio.run(run())
    finally:
        engine.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny")
    paths = {name: folder / f"{name}.gguf" for name in ("bert", "bert_rank")}
    for name, path in paths.items():
        write_named(path, name)
    paths["nopool"] = folder / "nopool.gguf"
    write_encoder(paths["nopool"], pooling=None)
    paths["llama"] = folder / "llama.gguf"
    write_tiny_llama(paths["llama"])
    return paths


def test_encoder_server_embeds_and_refuses_generation(tiny: dict[str, Path]) -> None:
    engine = ServerEngine(ServerConfig(model=str(tiny["bert"]), embeddings=True, n_threads=2))
    emb, chat, rank = call(
        engine,
        ("POST", "/v1/embeddings", {"input": ["the cat", "hello world"]}),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("POST", "/v1/rerank", {"query": "a", "documents": ["b"]}),
    )
    assert emb.status_code == 200, emb.text
    model = rllm.Model(tiny["bert"], n_threads=2)
    want = model.embed(["the cat", "hello world"])
    np.testing.assert_allclose([d["embedding"] for d in emb.json()["data"]], want, atol=1e-6)
    assert chat.status_code == 501 and "only embeds" in chat.json()["error"]["message"]
    assert chat.json()["error"]["type"] == "not_supported_error"
    assert rank.status_code == 501


def test_rerank_shape_and_scores(tiny: dict[str, Path]) -> None:
    engine = ServerEngine(ServerConfig(model=str(tiny["bert_rank"]), embeddings=True))
    docs = ["the cat sat on the mat.", "a quick brown fox", "rust is fast", "the cat"]
    ok, top2, *bad = call(
        engine,
        ("POST", "/v1/rerank", {"query": "the cat", "documents": docs}),
        ("POST", "/rerank", {"query": "the cat", "documents": docs, "top_n": 2}),
        ("POST", "/v1/rerank", {"documents": docs}),
        ("POST", "/v1/rerank", {"query": "x", "documents": []}),
        ("POST", "/v1/rerank", {"query": "x", "documents": ["a", 1]}),
        ("POST", "/v1/rerank", {"query": "x", "documents": ["a"], "top_n": -1}),
        ("POST", "/v1/embeddings", {"input": "the cat"}),
    )
    assert ok.status_code == 200, ok.text
    body = ok.json()
    model = rllm.Model(tiny["bert_rank"], n_threads=2)
    ids = [rerank_ids(model.tokenizer, "the cat", d) for d in docs]
    assert ids[0][:4] == [2, 5, 6, 3]  # [CLS] the cat [SEP] ...
    scores = model.embedder.embed(ids, "rank", -1)[0][:, 0]
    order = np.argsort(-scores, kind="stable")
    assert [r["index"] for r in body["results"]] == order.tolist()
    np.testing.assert_allclose(
        [r["relevance_score"] for r in body["results"]], scores[order], atol=1e-6
    )
    assert body["usage"]["prompt_tokens"] == sum(map(len, ids))
    assert top2.json()["results"] == body["results"][:2]
    for r, param in zip(bad[:4], ["query", "documents", "documents", "top_n"]):
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    # a reranker's rank pooling gives scores, not embeddings: OpenAI's route still answers
    assert bad[4].status_code == 200 and len(bad[4].json()["data"][0]["embedding"]) == 1


def test_pooling_none_is_not_openai_compatible(tiny: dict[str, Path]) -> None:
    engine = ServerEngine(ServerConfig(model=str(tiny["nopool"]), embeddings=True))
    (r,) = call(engine, ("POST", "/v1/embeddings", {"input": "the cat"}))
    assert r.status_code == 400 and "not OAI compatible" in r.json()["error"]["message"]


def test_embeddings_route_without_the_flag_is_501(tiny: dict[str, Path]) -> None:
    engine = ServerEngine(ServerConfig(model=str(tiny["llama"])))
    emb, rank = call(
        engine,
        ("POST", "/v1/embeddings", {"input": "x"}),
        ("POST", "/v1/rerank", {"query": "x", "documents": ["y"]}),
    )
    for r in (emb, rank):
        assert r.status_code == 501
        assert "Start it with `--embeddings`" in r.json()["error"]["message"]
        assert r.json()["error"]["type"] == "not_supported_error"


def test_unknown_pooling_fails_the_load(tiny: dict[str, Path]) -> None:
    engine = ServerEngine(ServerConfig(model=str(tiny["bert"]), embeddings=True, pooling="max"))
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        call(engine)


def test_cli_flags(tiny: dict[str, Path]) -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["-m", "x.gguf", "--reranking"])
    assert args.reranking and not args.embeddings
    args = p.parse_args(["-m", "x.gguf", "--embeddings", "--pooling", "last"])
    assert args.embeddings and args.pooling == "last"
    with pytest.raises(SystemExit):
        p.parse_args(["-m", "x.gguf", "--pooling", "max"])
