"""Quantizers and ``rllm quantize``.

* Round trip: for every type rllm can produce, the error of quantize→dequantize stays within
  the per-type bound of docs/quantization.md (relative to each block's largest magnitude).
* Bit-exact with the ``gguf`` package's numpy ports of ggml's reference quantizers where it
  has them (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, TQ1_0, TQ2_0, BF16; F16 against numpy).
* Byte-identical files with llama-quantize (hashes in fixtures/llama_quantize.json, made by
  fixtures/make_quantize_fixtures.py): every preset and every ``--pure`` type on a synthetic
  model, every preset on SmolLM2 (when the model file is present).
* The CLI: progress and totals, clear errors for bad presets and non-GGUF input, no output
  file after an error or Ctrl-C.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rllm
from fixtures.make_quantize_fixtures import imatrix_file, synthetic_model
from gguf import GGMLQuantizationType
from gguf.quants import quantize as gguf_quantize
from hypothesis import given
from hypothesis import strategies as st

FIXTURES = Path(__file__).parent / "fixtures"
HASHES = json.loads((FIXTURES / "llama_quantize.json").read_text())

# Worst |error| of quantize→dequantize relative to the block's largest magnitude `amax`, and
# the block size it is measured over. Derivations in docs/quantization.md.
BOUNDS: dict[str, tuple[float, int]] = {
    "Q4_0": (0.130, 32),
    "Q4_1": (0.069, 32),
    "Q5_0": (0.0635, 32),
    "Q5_1": (0.034, 32),
    "Q8_0": (0.0045, 32),
    "Q8_1": (0.0045, 32),
    # Blocks of a few distinct values are Q2_K's worst case: llama.cpp's scale/min search (which
    # ours reproduces bit for bit) leaves 0.56 of the block's max on {0, -2888, -3385}.
    "Q2_K": (0.60, 256),
    "Q3_K": (0.34, 256),
    "Q4_K": (0.12, 256),
    "Q5_K": (0.066, 256),
    "Q6_K": (0.026, 256),
    "Q8_K": (0.0040, 256),
    "IQ4_NL": (0.15, 32),
    "IQ4_XS": (0.16, 256),
    "TQ1_0": (0.5005, 256),
    "TQ2_0": (0.5005, 256),
    "BF16": (2.0**-8, 1),
    "F16": (2.0**-11, 1),
}
# Absolute slack for blocks whose f16 scale is subnormal: largest code × scale multiplier ×
# half the smallest f16 spacing (2^-25).
FLOORS = {
    "Q4_0": 8, "Q4_1": 16, "Q5_0": 16, "Q5_1": 32, "Q8_0": 127, "Q8_1": 127, "Q2_K": 60,
    "Q3_K": 128, "Q4_K": 1008, "Q5_K": 2016, "Q6_K": 4096, "Q8_K": 0, "IQ4_NL": 127,
    "IQ4_XS": 4064, "TQ1_0": 1, "TQ2_0": 1, "BF16": 0, "F16": 1,
}  # fmt: skip
GGUF_QUANTIZERS = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0", "BF16"]


def f32s(limit: float) -> st.SearchStrategy[float]:
    return st.floats(-limit, limit, width=32, allow_subnormal=True)


@st.composite
def rows(draw: st.DrawFn, limit: float = 1e4) -> np.ndarray:
    """1 or 2 blocks of 256 values: up to 64 drawn values (ties, subnormals, extremes), spread
    over the row in a drawn order, each run of 32 times a drawn factor (zero blocks, sign flips,
    tiny and large blocks)."""
    n = 256 * draw(st.integers(1, 2))
    base = np.array(draw(st.lists(f32s(limit), min_size=1, max_size=64)), dtype=np.float32)
    order = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).permutation(n)
    x = np.resize(base, n)[order]
    factors = st.sampled_from([1.0, 1.0, 1.0, -1.0, 0.5, 0.0, 1e-3, 1e-6, 10.0])
    mult = np.array(draw(st.lists(factors, min_size=n // 32, max_size=n // 32)), np.float32)
    with np.errstate(over="ignore", under="ignore"):
        x = x * np.repeat(mult, 32)
    return np.clip(x, -limit, limit).astype(np.float32)


def test_every_type_has_a_bound() -> None:
    assert set(BOUNDS) == set(rllm.QUANTIZABLE_TYPES) - {"F32"}


@pytest.mark.parametrize("ty", sorted(BOUNDS))
@given(x=rows())
def test_round_trip_error_within_bound(ty: str, x: np.ndarray) -> None:
    limit = 65504.0 if ty == "F16" else np.inf
    x = np.clip(x, -limit, limit).astype(np.float32)
    y = rllm.dequantize(rllm.quantize(x, ty), ty, x.size)
    bound, bs = BOUNDS[ty]
    err = np.abs(x.astype(np.float64) - y).reshape(-1, bs).max(axis=1)
    ref = np.abs(x.astype(np.float64)).reshape(-1, bs).max(axis=1)
    # BF16 keeps f32's range, so its floor is half the spacing of f32 subnormals in bf16.
    floor = 2.0**-134 if ty == "BF16" else FLOORS[ty] * 2.0**-25
    tol = bound * ref + floor
    worst = int(np.argmax(err - tol))
    assert np.all(err <= tol), f"{ty} block {worst}: error {err[worst]:g} > {tol[worst]:g}"


@pytest.mark.parametrize("ty", GGUF_QUANTIZERS + ["F16"])
@given(x=rows(limit=6e4))
def test_quantize_matches_gguf(ty: str, x: np.ndarray) -> None:
    if ty == "F16":
        with np.errstate(over="ignore"):
            want = x.astype(np.float16).tobytes()
    else:
        # gguf's ports divide by the scale without guarding 1/d overflow (blocks of tiny
        # subnormals); those blocks are undefined in ggml too, so keep them out.
        bs = 32 if ty not in ("TQ1_0", "TQ2_0") else 256
        amax = np.abs(x.reshape(-1, bs)).max(axis=1)
        tiny = np.repeat((amax > 0) & (amax < 1e-30), bs)
        x = np.where(tiny, np.float32(0), x).astype(np.float32)
        # Signed zeros: ggml keeps the first of equal minima (−0 vs +0) where numpy's min may
        # not; the values are equal, only the sign bit of Q4_1/Q5_1's m could differ.
        x = (x + np.float32(0)).astype(np.float32)
        want = gguf_quantize(x.reshape(-1, 256), GGMLQuantizationType[ty]).tobytes()
        if ty in ("Q4_0", "Q5_0"):
            # ggml computes d = max / -8 (-16) with max = +0 for an all-zero block: d = -0.
            # gguf's port writes +0 there; llama-quantize writes -0 (0x8000), as rllm does.
            want = bytearray(want)
            size = {"Q4_0": 18, "Q5_0": 22}[ty]
            for b in np.flatnonzero(amax == 0):
                want[b * size + 1] |= 0x80
            want = bytes(want)
    assert rllm.quantize(x.reshape(-1, 256), ty) == want


def test_rows_and_imatrix_arguments() -> None:
    x = np.linspace(-1, 1, 512, dtype=np.float32).reshape(2, 256)
    assert rllm.quantize(x, "Q4_K") == rllm.quantize(x[0], "Q4_K") + rllm.quantize(x[1], "Q4_K")
    w = np.linspace(0.1, 2, 256, dtype=np.float32)
    assert rllm.quantize(x, "Q4_K", imatrix=w) != rllm.quantize(x, "Q4_K")
    assert rllm.quantize(x, "Q8_0", imatrix=w) == rllm.quantize(x, "Q8_0")
    with pytest.raises(ValueError, match="imatrix has 3 values"):
        rllm.quantize(x, "Q4_K", imatrix=w[:3])
    with pytest.raises(ValueError, match="whole number"):
        rllm.quantize(x[:, :100], "Q4_K")
    with pytest.raises(ValueError, match="no quantizer"):
        rllm.quantize(x, "IQ2_XXS")
    with pytest.raises(ValueError, match="unknown ggml type"):
        rllm.quantize(x, "Q4_Z")


# --- whole files against llama-quantize --------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "synthetic.gguf"
    synthetic_model(path)
    if sha256(path) != HASHES["synthetic"]["input_sha256"]:
        pytest.skip("this gguf package writes the synthetic model differently; regenerate fixtures")
    return path


@pytest.mark.parametrize("preset", sorted(HASHES["synthetic"]["presets"]))
def test_presets_byte_identical_on_synthetic_model(
    synthetic: Path, tmp_path: Path, preset: str
) -> None:
    out = tmp_path / "out.gguf"
    rllm.quantize_model(synthetic, out, preset)
    assert sha256(out) == HASHES["synthetic"]["presets"][preset]


@pytest.mark.parametrize("ty", sorted(HASHES["synthetic"]["pure"]))
def test_pure_types_byte_identical_on_synthetic_model(
    synthetic: Path, tmp_path: Path, ty: str
) -> None:
    out = tmp_path / "out.gguf"
    rllm.quantize_model(synthetic, out, ty, pure=True, n_threads=2)
    assert sha256(out) == HASHES["synthetic"]["pure"][ty]


@pytest.mark.parametrize("preset", sorted(HASHES["imatrix"]["presets"]))
def test_imatrix_presets_byte_identical(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preset: str
) -> None:
    """With llama.cpp's imatrix GGUF: the weighted quantizers and the quantize.imatrix.* keys
    (the file name as given: relative, as the fixture was made)."""
    monkeypatch.chdir(tmp_path)
    imatrix_file(Path("imatrix.gguf"), synthetic)
    if sha256(Path("imatrix.gguf")) != HASHES["imatrix"]["imatrix_sha256"]:
        pytest.skip("this gguf package writes the imatrix differently; regenerate fixtures")
    rllm.quantize_model(synthetic, "out.gguf", preset, imatrix="imatrix.gguf")
    assert sha256(Path("out.gguf")) == HASHES["imatrix"]["presets"][preset]


def test_q2_k_s_requires_an_imatrix(synthetic: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="requires an importance matrix"):
        rllm.quantize_model(synthetic, tmp_path / "out.gguf", "Q2_K_S")


SMOLLM2_REQUIRED = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_XS", "Q2_K"]


@pytest.fixture(scope="module")
def smollm2_quantized(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if sha256(smollm2_path) != HASHES["smollm2"]["input_sha256"]:
        pytest.skip("this SmolLM2 file is not the one the fixtures were made from")
    out = tmp_path_factory.mktemp("smollm2")
    for preset in SMOLLM2_REQUIRED:
        rllm.quantize_model(smollm2_path, out / f"{preset}.gguf", preset, allow_requantize=True)
    return out


@pytest.mark.parametrize("preset", SMOLLM2_REQUIRED)
def test_smollm2_requantized_byte_identical(smollm2_quantized: Path, preset: str) -> None:
    assert sha256(smollm2_quantized / f"{preset}.gguf") == HASHES["smollm2"]["presets"][preset]


@pytest.mark.parametrize("preset", SMOLLM2_REQUIRED)
def test_smollm2_requantized_generates_text(smollm2_quantized: Path, preset: str) -> None:
    model = rllm.Model(str(smollm2_quantized / f"{preset}.gguf"))
    text = model.generate("The capital of France is", max_tokens=12, temperature=0.0)
    assert "Paris" in text, f"{preset}: {text!r}"


# --- the command line ----------------------------------------------------------------------


def cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "rllm", "quantize", *args]
    return subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def test_cli_reports_tensors_and_totals(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.gguf"
    r = cli(str(synthetic), str(out), "Q4_K_M", "-t", "2")
    assert r.returncode == 0, r.stderr
    assert "blk.0.ffn_down.weight" in r.stderr and "F32 -> Q6_K" in r.stderr
    assert "quant size" in r.stderr and "BPW" in r.stderr
    assert sha256(out) == HASHES["synthetic"]["presets"]["Q4_K_M"]


def test_cli_errors(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.gguf"
    r = cli(str(synthetic), str(out), "Q9_Z")
    assert r.returncode == 2 and "unknown quantization type 'Q9_Z'" in r.stderr
    r = cli(str(synthetic), str(out), "Q4_K_M", "--output-tensor-type", "IQ2_XXS")
    assert r.returncode == 2 and "--output-tensor-type" in r.stderr
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a model file\n")
    r = cli(str(bogus), str(out), "Q4_0")
    assert r.returncode == 1 and "not a GGUF file" in r.stderr
    r = cli(str(tmp_path / "missing.gguf"), str(out), "Q4_0")
    assert r.returncode == 1 and "No such file" in r.stderr
    quantized = tmp_path / "q8.gguf"
    rllm.quantize_model(synthetic, quantized, "Q8_0")
    r = cli(str(quantized), str(out), "Q4_0")
    assert r.returncode == 1 and "--allow-requantize" in r.stderr
    assert set(tmp_path.iterdir()) == {bogus, quantized}


def test_error_in_progress_leaves_no_output(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.gguf"

    def boom(done: int, total: int, t: dict[str, object]) -> None:
        if done == 5:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        rllm.quantize_model(synthetic, out, "Q4_K_M", progress=boom)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_leaves_no_output(tmp_path: Path) -> None:
    src = tmp_path / "big.gguf"
    # 24 layers of IQ4_XS (the slowest quantizer) take seconds on one thread: the
    # interrupt lands mid-file even on a fast machine.
    synthetic_model(src, n_layer=24)
    out = tmp_path / "q.gguf"
    cmd = [sys.executable, "-m", "rllm", "quantize", str(src), str(out), "IQ4_XS", "-t", "1"]
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the banner: the work has started
        assert "rllm quantize" in line
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode in (130, -signal.SIGINT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.gguf"]


def test_same_input_and_output_is_refused(synthetic: Path) -> None:
    with pytest.raises(ValueError, match="same file"):
        rllm.quantize_model(synthetic, synthetic, "Q8_0")
