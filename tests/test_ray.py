"""``rllm.ray`` on a real local Ray cluster (loopback only, 2 CPUs): two Ray Serve replicas of
SmolLM2 driven with the official ``openai`` client, and offline generation with Ray Data.

Greedy output is checked against :class:`rllm.BatchGenerator` in this process: the forward
pass is exact per sequence, so neither the replica nor the batch may change it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import rllm
from conftest import REQUIRE_MODELS

try:
    with warnings.catch_warnings():  # Ray's own deprecation warnings (pydantic v1 idioms)
        warnings.simplefilter("ignore", DeprecationWarning)
        import ray
        import rllm.ray
        from ray import serve
except ImportError:
    if REQUIRE_MODELS:
        raise
    pytest.skip("ray is not installed: pip install 'rllm[ray]'", allow_module_level=True)

# Ray warns about its own deprecated settings while it runs; those are not rllm's to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")

KEY = "ray-test-key-0123456789"
PROMPTS = [
    "The capital of France is",
    "1, 2, 3, 4,",
    "The opposite of hot is",
    "Water is made of",
]
MAX_TOKENS = 12


def test_import_rllm_does_not_import_ray() -> None:
    code = "import rllm, sys; assert 'ray' not in sys.modules, 'rllm imported ray'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({}, "give model=PATH_OR_NAME or hf_repo"),
        ({"model": "m.gguf", "hf_repo": "user/model"}, "model or hf_repo, not both"),
        ({"hf_repo": "no-slash"}, "not a Hugging Face repository"),
        ({"model": "m.gguf", "threads": "two"}, "threads must be int, got 'two'"),
        ({"model": "m.gguf", "parallel": "0"}, "parallel must be at least 1"),
        ({"model": "m.gguf", "autoscaling_config": "[1]"}, "autoscaling_config must be dict"),
        (
            {"model": "m.gguf", "num_replicas": 2, "autoscaling_config": "{}"},
            "num_replicas or autoscaling_config, not both",
        ),
        ({"model": "m.gguf", "api_key": "two words"}, "api_key must be non-empty"),
        ({"model": "m.gguf", "chat_template": "no-such-template"}, "no-such-template"),
        ({"model": "m.gguf", "embeddings": "maybe"}, "embeddings must be bool, got 'maybe'"),
        ({"model": "m.gguf", "pooling": "max"}, "pooling must be one of"),
        ({"model": "m.gguf", "slots": "4"}, r"unknown arguments \['slots'\]"),
    ],
)
def test_app_arguments_are_checked(args: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        rllm.ray.app(args)


def test_app_takes_text_as_serve_run_passes_it() -> None:
    scaling = '{"min_replicas": 1, "max_replicas": 3}'
    built = rllm.ray.app({"model": "m.gguf", "threads": "2", "autoscaling_config": scaling})
    assert isinstance(built, serve.Application)


@pytest.fixture(scope="module")
def reference(smollm2_path: Path) -> list[str]:
    gen = rllm.BatchGenerator(str(smollm2_path), n_parallel=4, n_threads=1)
    return gen.generate(PROMPTS, max_tokens=MAX_TOKENS, temperature=0)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("RAY_USAGE_STATS_ENABLED",)}
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage report leaves the machine
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TestServe:
    """Two replicas, one thread and two slots each, behind Serve's proxy on loopback."""

    @pytest.fixture(scope="class")
    @classmethod
    def url(cls, cluster: None, smollm2_path: Path) -> Iterator[str]:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = {
            "model": str(smollm2_path),
            "num_replicas": "2",  # as `serve run` passes them: text
            "threads": "1",
            "parallel": "2",
            "ctx_size": "1024",
            "api_key": KEY,
            "alias": "smol",
            "embeddings": "true",
            "pooling": "mean",
        }
        try:
            serve.run(rllm.ray.app(args), name="rllm", route_prefix="/")
            yield f"http://127.0.0.1:{port}"
        finally:
            serve.shutdown()

    @pytest.fixture(scope="class")
    @classmethod
    def client(cls, url: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)

    def test_concurrent_requests_reach_both_replicas(
        self, client: openai.OpenAI, reference: list[str]
    ) -> None:
        def complete(prompt: str) -> tuple[str, str]:
            raw = client.completions.with_raw_response.create(
                model="smol", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0
            )
            return raw.parse().choices[0].text, raw.headers[rllm.ray.REPLICA_HEADER]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(complete, PROMPTS * 2))
        texts = [t for t, _ in results]
        assert texts == reference * 2
        replicas = {r for _, r in results}
        assert len(replicas) == 2, f"one replica served all 8 requests: {replicas}"

    def test_streaming_chat(self, client: openai.OpenAI) -> None:
        messages: Any = [{"role": "user", "content": "Name three colors."}]
        # 6 tokens end the reply mid-list ("1. Red\n2. Blue\n3. Green" is 11 and then the end
        # of turn), so both forms must report "length".
        n = 6
        whole = client.chat.completions.create(
            model="smol", messages=messages, max_tokens=n, temperature=0
        )
        pieces, reasons = [], []
        for chunk in client.chat.completions.create(
            model="smol", messages=messages, max_tokens=n, temperature=0, stream=True
        ):
            pieces.append(chunk.choices[0].delta.content or "")
            reasons.append(chunk.choices[0].finish_reason)
        assert len([p for p in pieces if p]) > 1, "the reply came in one piece, not streamed"
        assert "".join(pieces) == whole.choices[0].message.content
        assert reasons[-1] == whole.choices[0].finish_reason == "length"

    def test_embeddings(self, client: openai.OpenAI, smollm2_path: Path) -> None:
        texts = ["The cat sat on the mat.", "Rust and Python"]
        got = client.embeddings.create(model="smol", input=texts).data
        want = rllm.Model(str(smollm2_path), n_threads=1).embed(texts, pooling="mean")
        assert len(got) == 2
        for item, vector in zip(got, want):
            assert np.allclose(item.embedding, vector, atol=1e-5)

    def test_models_health_and_api_key(self, url: str, client: openai.OpenAI) -> None:
        assert [m.id for m in client.models.list()] == ["smol"]
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
            health = http.get("/health")
            assert health.status_code == 200, health.text
            assert health.headers[rllm.ray.REPLICA_HEADER]
            denied = http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 1})
            assert denied.status_code == 401
            assert denied.json()["error"]["code"] == "invalid_api_key"


def test_a_replica_that_cannot_load_says_why(cluster: None, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"this is not a GGUF file")
    serve.start(http_options={"host": "127.0.0.1", "port": _free_port()})
    try:
        with pytest.raises(RuntimeError, match="Deploying application bad failed"):
            serve.run(rllm.ray.app({"model": str(bad)}), name="bad", route_prefix="/")
        status = serve.status().applications["bad"].deployments["rllm"]
        assert status.status == "DEPLOY_FAILED"
        assert "GGUFError" in status.message
        assert "not-a-model.gguf" in status.message
    finally:
        serve.shutdown()


def test_ray_data_generate(cluster: None, smollm2_path: Path, reference: list[str]) -> None:
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items([{"id": i, "prompt": p} for i, p in enumerate(PROMPTS * 2)])
    out = ds.map_batches(
        rllm.ray.Generate,
        fn_constructor_kwargs={
            "model": str(smollm2_path),
            "n_parallel": 4,
            "n_threads": 1,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
        },
        compute=ray.data.ActorPoolStrategy(size=2),  # `concurrency=2` before Ray 2.51
        num_cpus=1,
        batch_size=4,
    )
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    assert [r["text"] for r in rows] == reference * 2
    assert {r["finish_reason"] for r in rows} == {"length"}
    assert [r["completion_tokens"] for r in rows] == [MAX_TOKENS] * len(rows)
