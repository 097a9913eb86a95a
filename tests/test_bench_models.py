"""benches/make_models.py: the real shapes have their published parameter counts, and the
tiny shape is written, quantized and run by the engine."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import rllm
from conftest import model_path

SCRIPT = Path(__file__).parent.parent / "benches" / "make_models.py"


@pytest.fixture(scope="module")
def mm():
    spec = importlib.util.spec_from_file_location("make_models", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_models"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["make_models"]


# The parameter counts of the Hugging Face checkpoints (safetensors metadata).
PUBLISHED = {
    "Llama-3.2-1B": 1_235_814_400,
    "Llama-3.2-3B": 3_212_749_824,
    "Llama-3.1-8B": 8_030_261_248,
    "Qwen2.5-7B": 7_615_616_512,
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_real_shapes_have_published_sizes(mm, name):
    s = mm.SHAPES[name]
    plan = mm.tensor_plan(s, s.n_vocab)
    # rope_freqs is computed from the config, not a checkpoint tensor
    assert sum(t.n_elements for t in plan if t.init != "rope_freqs") == PUBLISHED[name]
    assert len({t.name for t in plan}) == len(plan)


def test_tiny_llama_loads_and_generates(mm, tmp_path, capsys):
    smollm = model_path("smollm2-135m")
    argv = ["--shape", "tiny-llama", "--types", "Q8_0", "--out-dir", str(tmp_path)]
    assert mm.main([*argv, "--tokenizer-from", str(smollm)]) == 0
    out = tmp_path / "tiny-llama-random.Q8_0.gguf"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # base deleted
    model = rllm.Model(out, n_ctx=64)
    assert model.n_vocab == 49152
    assert model.metadata()["tokenizer.ggml.pre"] == "smollm"
    names = {row[0] for row in rllm.GGUFFile(out).tensors()}
    assert "rope_freqs.weight" in names and "output.weight" not in names
    ids = model.tokenize("Hello")
    text = model.generate(ids, max_tokens=4, temperature=0)
    assert isinstance(text, str)
    # a second run finds the file and writes nothing
    capsys.readouterr()
    assert mm.main([*argv, "--tokenizer-from", str(smollm)]) == 0
    assert "exists, skipped" in capsys.readouterr().out
