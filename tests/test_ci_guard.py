"""CI's guard against untested claims (conftest.py): with ``RLLM_REQUIRE_MODELS=1`` a missing
real model fails its test and any skip fails the run; without it both are skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SUITE = """
import pytest
from conftest import model_path

def test_needs_a_model():
    model_path("smollm2-135m")

def test_skips():
    pytest.skip("a reason")

def test_passes():
    pass
"""


def run_suite(tmp_path: Path, require: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_suite.py").write_text(SUITE)
    env = {**os.environ, "RLLM_TEST_MODELS": str(tmp_path / "no-models")}
    env.pop("RLLM_REQUIRE_MODELS", None)
    if require:
        env["RLLM_REQUIRE_MODELS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_suite.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_the_guard_missing_models_skip(tmp_path: Path) -> None:
    done = run_suite(tmp_path, require=False)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 2 skipped" in done.stdout
    assert "rllm: 2 tests skipped" in done.stdout


def test_with_the_guard_a_missing_model_fails_and_a_skip_fails_the_run(tmp_path: Path) -> None:
    done = run_suite(tmp_path, require=True)
    assert done.returncode == 1, done.stdout
    assert "no-models/SmolLM2-135M-Instruct.Q4_1.gguf is missing" in done.stdout
    assert "RLLM_REQUIRE_MODELS=1: no real-model test may skip" in done.stdout
    assert "skipped: test_suite.py::test_skips: Skipped: a reason" in done.stdout
    assert "RLLM_REQUIRE_MODELS=1: no test may skip in CI" in done.stdout
    assert "1 failed, 1 passed, 1 skipped" in done.stdout
