"""Logging: quiet by default; ``verbose=True`` or the ``rllm`` logger at INFO shows the load
details llama.cpp prints (metadata, tensor types, buffer sizes, context size)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import rllm
from tiny_models import write_tiny_llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
    write_tiny_llama(path, weight_type="Q8_0")
    return path


def test_quiet_by_default(tiny: Path, capfd: pytest.CaptureFixture[str]) -> None:
    model = rllm.Model(tiny, n_ctx=16)
    model.generate("he", max_tokens=2)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_the_buffer_line_says_mapped_or_copied(
    tiny: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """llama.cpp's names: CPU_Mapped for a map of the file, CPU for a copy (--no-mmap)."""
    for use_mmap, buffer in ((True, "CPU_Mapped"), (False, "CPU")):
        rllm.Model(tiny, n_ctx=16, verbose=True, use_mmap=use_mmap)
        err = capfd.readouterr().err
        assert f"load_tensors: {buffer} model buffer size =" in err


def test_verbose_prints_the_load_details(tiny: Path, capfd: pytest.CaptureFixture[str]) -> None:
    model = rllm.Model(tiny, n_ctx=16, verbose=True, use_mmap=True)
    model.generate("he", max_tokens=2)
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("model_loader: loaded meta data with ")
    assert f"tensors from {tiny} (version GGUF V3)" in lines[0]
    assert any("general.architecture str" in line and '= "llama"' in line for line in lines)
    assert any("tokenizer.ggml.tokens arr[str,258]" in line for line in lines)
    assert "model_loader: - type    f32:    5 tensors" in lines
    assert any(line.startswith("model_loader: - type   q8_0:") for line in lines)
    assert "print_info: arch         = llama" in lines
    assert any(line.startswith("load_tensors: CPU_Mapped model buffer size =") for line in lines)
    assert "llama_context: n_ctx = 16, n_threads = " in err
    assert "llama_kv_cache: CPU KV buffer size =" in err
    assert logging.getLogger("rllm").level == logging.NOTSET  # restored


def test_the_rllm_logger_at_info(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rllm"):
        rllm.Model(tiny, n_ctx=16).context()
    messages = [r.getMessage() for r in caplog.records if r.name == "rllm"]
    assert any(m.startswith("print_info: model params") for m in messages)
    assert any(m.startswith("llama_kv_cache: CPU KV buffer size") for m in messages)


def test_verbose_does_not_repeat_what_configured_logging_shows(
    tiny: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="rllm"):
        rllm.Model(tiny, n_ctx=16, verbose=True)
    assert "print_info: arch" in caplog.text
    assert "print_info" not in capfd.readouterr().err
