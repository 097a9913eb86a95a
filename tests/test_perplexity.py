"""``rllm.perplexity`` / ``rllm perplexity``: llama-perplexity's method and numbers, its
KL-divergence file and statistics, and clear errors for bad input."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import rllm
from conftest import MODEL_FILES, models_dir
from rllm import _rllm
from rllm.cli import main as cli_main
from rllm.perplexity import Progress, kl_divergence, perplexity, read_text
from tiny_models import write_tiny_llama

GPL3 = Path("/usr/share/common-licenses/GPL-3")
# llama-perplexity (llama.cpp 0c1e570, x86-64 CPU) on SmolLM2-135M-Instruct Q4_1 over GPL-3,
# -c 512 -b 2048: 14 chunks, 4 per batch.
LLAMA_CPP_GPL3_PPL = 18.3459
LLAMA_CPP_GPL3_ERR = 0.86234

N_CTX = 32


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same random weights stored as F32, Q8_0 and Q4_0."""
    folder = tmp_path_factory.mktemp("ppl")
    paths = {}
    for weight_type in ("F32", "Q8_0", "Q4_0"):
        paths[weight_type] = folder / f"tiny-{weight_type}.gguf"
        write_tiny_llama(paths[weight_type], weight_type=weight_type)
    return paths


@pytest.fixture(scope="module")
def tiny(tiny_paths: dict[str, Path]) -> rllm.Model:
    return rllm.Model(tiny_paths["F32"], n_threads=2)


@pytest.fixture(scope="module")
def ids() -> list[int]:
    return np.random.default_rng(7).integers(0, 256, size=7 * N_CTX + 5).tolist()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def reference_nll(
    model: rllm.Model,
    ids: list[int],
    n_window: int,
    step: int,
    first: int,
    n_chunks: int,
    bos: int | None,
) -> np.ndarray:
    """Each window alone in a fresh Context, scoring rows [first, n_window - 1)."""
    out = []
    for c in range(n_chunks):
        window = ids[c * step : c * step + n_window]
        inputs = list(window)
        if bos is not None:
            inputs[0] = bos
        logits = _rllm.Context(model._model, n_ctx=n_window, n_threads=1).eval(inputs, True)
        lp = log_softmax(logits[first : n_window - 1])
        out.append(-lp[np.arange(len(lp)), window[first + 1 :]])
    return np.array(out)


@pytest.mark.parametrize("n_batch", [N_CTX // 2, N_CTX, 3 * N_CTX, 16 * N_CTX])
def test_method_matches_chunk_by_chunk_reference(
    tiny: rllm.Model, ids: list[int], n_batch: int
) -> None:
    # Any batch size (chunks split over passes, 3 chunks per pass with a partial last group,
    # or all at once) gives the numbers of evaluating each chunk alone.
    result = perplexity(tiny, ids, N_CTX, n_batch=n_batch)
    want = reference_nll(tiny, ids, N_CTX, N_CTX, N_CTX // 2, 7, bos=None)
    assert result.nll.shape == (7, N_CTX - 1 - N_CTX // 2)
    np.testing.assert_allclose(result.nll, want, rtol=0, atol=2e-4)
    assert result.n_chunks == 7 and result.n_tokens == len(ids) and result.n_ctx == N_CTX


def test_bos_replaces_the_first_token_of_each_chunk(
    tiny_paths: dict[str, Path], ids: list[int]
) -> None:
    model = rllm.Model(tiny_paths["F32"], n_threads=2)
    model.tokenizer.add_bos = True  # as for a vocabulary that adds BOS (llama, gemma)
    bos = model.tokenizer.bos_id
    result = perplexity(model, ids, N_CTX, n_batch=2 * N_CTX, n_chunks=3)
    want = reference_nll(model, ids, N_CTX, N_CTX, N_CTX // 2, 3, bos=bos)
    np.testing.assert_allclose(result.nll, want, rtol=0, atol=2e-4)
    without = reference_nll(model, ids, N_CTX, N_CTX, N_CTX // 2, 3, bos=None)
    assert np.abs(result.nll - without).max() > 1e-3, "the replacement changes the numbers"


def test_statistics_are_llama_perplexity_s(tiny: rllm.Model, ids: list[int]) -> None:
    seen: list[Progress] = []
    result = perplexity(tiny, ids, N_CTX, n_batch=2 * N_CTX, progress=seen.append)
    # llama.cpp's running sums: nll, nll^2 over every scored token so far.
    v = result.nll.ravel()
    mean = v.mean()
    err = math.sqrt((np.mean(v * v) - mean * mean) / (v.size - 1)) * math.exp(mean)
    assert result.ppl == pytest.approx(math.exp(mean), rel=1e-12)
    assert result.ppl_error == pytest.approx(err, rel=1e-9)
    per_row = result.nll.shape[1]
    running = [math.exp(result.nll[: i + 1].mean()) for i in range(7)]
    np.testing.assert_allclose(result.estimates, running, rtol=1e-12)
    np.testing.assert_allclose(result.chunk_ppl, np.exp(result.nll.mean(axis=1)), rtol=1e-12)
    assert per_row == N_CTX // 2 - 1
    # Progress: once before the first pass, then once per chunk with the running result.
    assert [p.done for p in seen] == list(range(8))
    assert seen[0].result is None and seen[0].n_seq == 2 and seen[0].n_chunks == 7
    assert seen[1].pass_seconds > 0 and seen[1].eta_seconds > 0
    assert isinstance(seen[3].result, rllm.PerplexityResult)
    assert seen[3].result.estimates[-1] == pytest.approx(running[2], rel=1e-12)


def test_strided_windows(tiny: rllm.Model) -> None:
    # Windows of n_ctx + stride/2 tokens padded to 256 (llama.cpp's context), stride apart.
    ids = np.random.default_rng(8).integers(0, 256, size=600).tolist()
    n_ctx, stride, window = 64, 32, 256
    result = perplexity(tiny, ids, n_ctx, n_batch=2 * window, ppl_stride=stride)
    n_chunks = (len(ids) - window + stride - 1) // stride
    assert n_chunks == 11
    want = reference_nll(tiny, ids, window, stride, window - stride - 1, n_chunks, bos=None)
    assert result.nll.shape == (n_chunks, stride)
    np.testing.assert_allclose(result.nll, want, rtol=0, atol=2e-4)


def test_text_is_tokenized_like_llama_perplexity(tiny: rllm.Model) -> None:
    text = "hello there, " * 40
    by_text = perplexity(tiny, text, N_CTX, n_chunks=2)
    ids = tiny.tokenizer.encode(text, add_special=True, parse_special=False)
    by_ids = perplexity(tiny, ids, N_CTX, n_chunks=2)
    np.testing.assert_array_equal(by_text.nll, by_ids.nll)
    assert by_text.n_tokens == len(ids)


def test_short_text_is_refused_like_llama_perplexity(tiny: rllm.Model) -> None:
    with pytest.raises(ValueError, match=r"at least 64 tokens .* context of 32; .* only 63"):
        perplexity(tiny, list(range(63)), N_CTX)
    with pytest.raises(ValueError, match="n_ctx must be an integer >= 4"):
        perplexity(tiny, list(range(100)), 0)
    with pytest.raises(ValueError, match="ppl_stride must be at most n_ctx"):
        perplexity(tiny, list(range(100)), N_CTX, ppl_stride=33)
    with pytest.raises(ValueError, match="at least 512 tokens .* context of 256; .* only 300"):
        perplexity(tiny, list(range(300)), N_CTX, ppl_stride=8)


def test_read_text(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("two lines\nof text\n")
    assert read_text(tmp_path / "a.txt") == "two lines\nof text"  # like llama.cpp's -f
    with pytest.raises(OSError, match="cannot read text file .*missing.txt"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "zeros.bin").write_bytes(bytes(100))
    with pytest.raises(ValueError, match="binary file"):
        read_text(tmp_path / "zeros.bin")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(ValueError, match="not UTF-8 text .*offset 3"):
        read_text(tmp_path / "latin1.txt")


# --- KL-divergence --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_file(
    tiny: rllm.Model, ids: list[int], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, rllm.PerplexityResult]:
    path = tmp_path_factory.mktemp("kld") / "base.kld"
    result = perplexity(tiny, ids, N_CTX, n_batch=3 * N_CTX, kl_divergence_base=path)
    return path, result


def test_base_file_is_llama_perplexity_s_format(
    tiny: rllm.Model, ids: list[int], base_file: tuple[Path, rllm.PerplexityResult]
) -> None:
    path, _ = base_file
    data = path.read_bytes()
    n_vocab, rows = tiny.n_vocab, N_CTX - 1 - N_CTX // 2
    nv = 2 * ((n_vocab + 1) // 2) + 4
    assert data[:8] == b"_logits_"
    assert struct.unpack("<Iii", data[8:20]) == (N_CTX, n_vocab, 7)
    tokens = np.frombuffer(data, "<i4", count=7 * N_CTX, offset=20)
    np.testing.assert_array_equal(tokens, ids[: 7 * N_CTX])
    body = np.frombuffer(data, "<u2", offset=20 + 4 * 7 * N_CTX).reshape(7, rows, nv)
    assert len(data) == 20 + 4 * 7 * N_CTX + 2 * body.size
    # Each row decodes to the log-softmax within half a quantization step, over the 16 nats
    # below the top token.
    logits = _rllm.Context(tiny._model, n_ctx=N_CTX, n_threads=1).eval(ids[N_CTX:][:N_CTX], True)
    want = log_softmax(logits[N_CTX // 2 : N_CTX - 1])
    head = np.ascontiguousarray(body[1, :, :4]).view(np.float32)
    got = body[1, :, 4 : 4 + n_vocab] * head[:, :1].astype(np.float64) + head[:, 1:2]
    above = want > want.max(axis=1, keepdims=True) - 16
    bound = np.broadcast_to(0.5 * head[:, :1].astype(np.float64) + 1e-4, got.shape)
    assert np.all(np.abs(got - want)[above] <= bound[above])


def test_same_model_has_no_divergence(
    tiny: rllm.Model, base_file: tuple[Path, rllm.PerplexityResult]
) -> None:
    path, base = base_file
    k = kl_divergence(tiny, path, n_batch=2 * N_CTX)
    assert k.n_chunks == 7 and k.count == base.nll.size
    assert abs(k.kld_mean) < 1e-6 and abs(k.kld_quantile(0.0)) < 1e-5
    assert k.same_top_p == 1.0
    assert k.ppl == pytest.approx(base.ppl, rel=1e-5)
    assert k.ppl_base == pytest.approx(base.ppl, rel=1e-3)  # 16-bit log-probabilities
    assert abs(k.ln_ppl_ratio) < 1e-3 and k.ppl_correlation > 0.999


def test_divergence_of_quantized_weights(
    tiny_paths: dict[str, Path],
    tiny: rllm.Model,
    ids: list[int],
    base_file: tuple[Path, rllm.PerplexityResult],
) -> None:
    path, base = base_file
    q8 = kl_divergence(tiny_paths["Q8_0"], path, n_batch=4 * N_CTX, n_threads=2)
    q4 = kl_divergence(tiny_paths["Q4_0"], path, n_batch=4 * N_CTX, n_threads=2)
    assert 0 < q8.kld_mean < q4.kld_mean
    # Against KL(p || q) computed in float64 from both models' logits, chunk 3.
    chunk = ids[3 * N_CTX : 4 * N_CTX]
    p = log_softmax(_rllm.Context(tiny._model, n_ctx=N_CTX).eval(chunk, True))
    q4_model = _rllm.Model(tiny_paths["Q4_0"])
    q = log_softmax(_rllm.Context(q4_model, n_ctx=N_CTX).eval(chunk, True))
    rows = slice(N_CTX // 2, N_CTX - 1)
    exact = (np.exp(p[rows]) * (p[rows] - q[rows])).sum(axis=1)
    np.testing.assert_allclose(q4.kld[3], exact, rtol=1e-3, atol=1e-5)
    targets = chunk[N_CTX // 2 + 1 :]
    np.testing.assert_allclose(q4.nll[3], -q[rows][np.arange(len(targets)), targets], atol=2e-4)
    np.testing.assert_allclose(
        q4.p_diff[3], np.exp(-q4.nll[3]) - np.exp(-q4.nll_base[3]), rtol=1e-6, atol=1e-7
    )
    assert q4.same_top[3].tolist() == (p[rows].argmax(1) == q[rows].argmax(1)).tolist()
    # Statistics as llama-perplexity derives them.
    assert q4.kld_median == pytest.approx(float(np.median(q4.kld)))
    assert q4.ppl_ratio == pytest.approx(q4.ppl / q4.ppl_base)
    assert q4.ppl_base == pytest.approx(base.ppl, rel=1e-3)
    report = q4.report()
    assert f"Mean    KLD: {q4.kld_mean:10.6f} ± {q4.kld_error:10.6f}" in report
    assert f"Same top p: {100 * q4.same_top_p:6.3f}" in report
    assert "99.9%   KLD:" in report and " 0.1%   Δp:" in report


def test_bad_base_files(tmp_path: Path, tiny: rllm.Model, base_file) -> None:
    path, _ = base_file
    with pytest.raises(OSError, match="cannot read KL-divergence base file"):
        kl_divergence(tiny, tmp_path / "missing.kld")
    (tmp_path / "other.kld").write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(ValueError, match="does not look like a file of log-probabilities"):
        kl_divergence(tiny, tmp_path / "other.kld")
    (tmp_path / "cut.kld").write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated or not a log-probability file"):
        kl_divergence(tiny, tmp_path / "cut.kld")
    # A well-formed file made with another vocabulary: 1 chunk of 8 tokens, 3 scored rows.
    n_vocab = 1000
    rows = bytes(2 * 3 * (n_vocab + 4))
    other = b"_logits_" + struct.pack("<Iii", 8, n_vocab, 1) + bytes(4 * 8) + rows
    (tmp_path / "vocab.kld").write_bytes(other)
    with pytest.raises(ValueError, match="vocabulary of 1000 tokens, the model has 258"):
        kl_divergence(tiny, tmp_path / "vocab.kld")


# --- command line ---------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli_main(["perplexity", *argv])
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_output(tmp_path: Path, tiny_paths: dict[str, Path], capsys) -> None:
    text = tmp_path / "text.txt"
    text.write_text("".join(chr(97 + i % 26) + " " * (i % 3 == 0) for i in range(200)) + "\n")
    model = str(tiny_paths["F32"])
    code, out, err = run_cli(capsys, "-m", model, "-f", str(text), "-c", "32", "-b", "64")
    assert code == 0, err
    assert "calculating perplexity over" in err and "n_seq=2" in err
    assert "seconds per pass - ETA" in err
    lines = out.splitlines()
    assert lines[0].startswith("[1]") and lines[0].endswith(",")
    assert lines[-1].startswith("Final estimate: PPL = ") and " +/- " in lines[-1]
    want = perplexity(model, read_text(text), 32, n_batch=64)
    assert f"Final estimate: PPL = {want.ppl:.4f} +/- {want.ppl_error:.5f}" == lines[-1]

    base = tmp_path / "base.kld"
    code, out, err = run_cli(
        capsys, "-m", model, "-f", str(text), "-c", "32", "--save-all-logits", str(base)
    )
    assert code == 0 and base.exists(), err
    code, out, err = run_cli(
        capsys, "-m", str(tiny_paths["Q4_0"]), "--kl-divergence-base", str(base), "--kl-divergence"
    )
    assert code == 0, err
    assert "n_ctx=32" in err, "the chunk size comes from the base file, not -c"
    assert "chunk             PPL" in out and "Mean    KLD:" in out and "Same top p:" in out


def test_cli_errors(tmp_path: Path, tiny_paths: dict[str, Path], capsys) -> None:
    model = str(tiny_paths["F32"])
    code, _, err = run_cli(capsys, "-m", model, "-f", str(tmp_path / "nope.txt"))
    assert code == 1 and "cannot read text file" in err and "No such file" in err
    (tmp_path / "model.bin").write_bytes(Path(model).read_bytes()[:4096])
    code, _, err = run_cli(capsys, "-m", model, "-f", str(tmp_path / "model.bin"))
    assert code == 1 and "is a binary file, not text" in err
    (tmp_path / "short.txt").write_text("far too short")
    code, _, err = run_cli(capsys, "-m", model, "-f", str(tmp_path / "short.txt"), "-c", "32")
    assert code == 1
    assert "you need at least 64 tokens to evaluate perplexity with a context of 32" in err
    code, _, err = run_cli(capsys, "-m", model, "--kl-divergence")
    assert code == 2 and "--kl-divergence needs --kl-divergence-base" in err
    code, _, err = run_cli(capsys, "-m", model)
    assert code == 2 and "-f FNAME" in err


# --- real models ----------------------------------------------------------------------------


def test_gpl3_matches_llama_perplexity(smollm2_path: Path) -> None:
    result = perplexity(smollm2_path, read_text(GPL3), 512, n_batch=2048, n_threads=2)
    assert result.n_chunks == 14
    assert result.ppl == pytest.approx(LLAMA_CPP_GPL3_PPL, rel=0.01)
    assert result.ppl_error == pytest.approx(LLAMA_CPP_GPL3_ERR, rel=0.02)
    assert result.estimates.shape == result.chunk_ppl.shape == (14,)
    assert result.estimates[-1] == pytest.approx(result.ppl)


REQUANT = ("Q8_0", "Q6_K", "Q4_K_M", "Q2_K")


@pytest.fixture(scope="module")
def smollm2_requants(smollm2_path: Path) -> dict[str, Path]:
    """SmolLM2 requantized from its Q4_1 file, made once and kept beside the test models."""
    paths = {}
    for preset in REQUANT:
        name = MODEL_FILES["smollm2-135m"].replace(".gguf", f"-requant-{preset}.gguf")
        path = models_dir() / name
        if not path.exists():
            rllm.quantize_model(smollm2_path, path, preset, allow_requantize=True)
        paths[preset] = path
    return paths


def test_kl_divergence_orders_quant_levels(
    smollm2_requants: dict[str, Path], tmp_path: Path
) -> None:
    base = tmp_path / "q8_0.kld"
    text = read_text(GPL3)
    perplexity(
        smollm2_requants["Q8_0"],
        text,
        256,
        n_batch=768,
        n_chunks=3,
        n_threads=2,
        kl_divergence_base=base,
    )
    kld = {
        preset: kl_divergence(smollm2_requants[preset], base, n_batch=768, n_threads=2)
        for preset in ("Q6_K", "Q4_K_M", "Q2_K")
    }
    means = {p: k.kld_mean for p, k in kld.items()}
    assert means["Q6_K"] < means["Q4_K_M"] < means["Q2_K"], means
    # Well apart: each step is many standard errors.
    assert means["Q4_K_M"] - means["Q6_K"] > 5 * kld["Q4_K_M"].kld_error, means
    assert kld["Q6_K"].same_top_p > kld["Q4_K_M"].same_top_p > kld["Q2_K"].same_top_p
    assert 1 < kld["Q4_K_M"].ppl_ratio < kld["Q2_K"].ppl_ratio
