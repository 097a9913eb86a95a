"""Hostile input files: every kind of bad file, through every entry point that reads that kind
of file, fails with a typed error that names the file (``GGUFError`` for GGUF files), never a
Rust panic ("internal error", a backtrace on stderr) or a Python traceback. Then hypothesis
mutates small valid files (byte flips, insertions, truncations) and runs each through every
entry point. ``RLLM_HYPOTHESIS_PROFILE=slow`` explores far more examples than CI's derandomized
``fast`` profile (see conftest.py).

The table of cases (kind x entry point) is ``GGUF_CASES`` x ``GGUF_ENTRY_POINTS``,
``SPLIT_CASES`` x ``GGUF_ENTRY_POINTS``, ``IMATRIX_CASES`` x ``IMATRIX_ENTRY_POINTS``,
``KLD_CASES`` x ``KLD_ENTRY_POINTS`` and ``CONVERT_CASES`` x ``CONVERT_ENTRY_POINTS``."""

from __future__ import annotations

import json
import re
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
import rllm
from hypothesis import given
from hypothesis import strategies as st
from rllm import _rllm
from rllm.cli import main as cli_main
from rllm.perplexity import kl_divergence, perplexity
from test_convert import write_checkpoint
from test_gguf import ARCH, STRING, U32, gguf_bytes, kv, s, tensor_info
from tiny_models import write_tiny_llama

ARRAY, U64 = 9, 10
F32_ID, Q8_0_ID = 0, 8


# --- checks shared by every entry point -------------------------------------------------------


def no_crash_output(capfd: pytest.CaptureFixture[str]) -> str:
    """The captured stderr, checked for what a crash leaves there."""
    err = capfd.readouterr().err
    assert "panicked at" not in err and "stack backtrace" not in err, err
    assert "Traceback" not in err, err
    return err


def expect_error(
    error: type[Exception], call: Callable[[], object], path: Path, capfd: pytest.CaptureFixture
) -> str:
    """``call()`` raises ``error`` (not a subclass' sibling: an internal error would be a bare
    RllmError) whose message names ``path``; nothing crash-like reaches stderr."""
    with pytest.raises(error) as e:
        call()
    msg = str(e.value)
    assert "internal error" not in msg, msg
    assert str(path) in msg, f"the message names {path}: {msg}"
    no_crash_output(capfd)
    return msg


def expect_cli_error(argv: list[str], path: Path, capfd: pytest.CaptureFixture) -> str:
    """``rllm ARGV`` exits 1 with one ``rllm: error:`` line (its last) naming ``path``."""
    capfd.readouterr()
    assert cli_main(argv) == 1
    err = no_crash_output(capfd)
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("rllm: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert str(path) in errors[0], err
    return errors[0]


# --- valid files the hostile ones are made from ---------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("valid")
    paths = {"model": d / "tiny.gguf", "q8": d / "tiny-q8.gguf", "imatrix": d / "imatrix.gguf"}
    write_tiny_llama(paths["model"])
    write_tiny_llama(paths["q8"], weight_type="Q8_0")
    write_imatrix(paths["imatrix"], {"blk.0.attn_q.weight": np.ones(64, np.float32)})
    paths["text"] = d / "text.txt"
    paths["text"].write_text("hello there " * 40)
    write_tiny_llama(d / "split.gguf", split_max_tensors=8)
    paths["split"] = d / "split-00001-of-00003.gguf"
    assert paths["split"].exists()
    model = rllm.Model(paths["model"], n_threads=1)
    ids = np.random.default_rng(0).integers(0, 256, size=40).tolist()
    paths["kld"] = d / "base.kld"
    perplexity(model, ids, 16, kl_divergence_base=paths["kld"])
    write_checkpoint(d / "hf")
    paths["hf"] = d / "hf"
    write_checkpoint(d / "hf-spm", tokenizer="spm")
    paths["hf-spm"] = d / "hf-spm"
    return paths


def write_imatrix(
    path: Path,
    sums: dict[str, np.ndarray],
    counts: dict[str, np.ndarray] | None = None,
    types: dict[str, str] | None = None,
) -> None:
    """llama.cpp's imatrix GGUF: ``NAME.in_sum2`` [ne0, n_expert] and ``NAME.counts``
    [1, n_expert] per weight."""
    w = gguf.GGUFWriter(str(path), "")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["hostile.txt"])
    w.add_uint32("imatrix.chunk_count", 1)
    for name, v in sums.items():
        ty = (types or {}).get(name, "F32")
        if ty == "F16":
            w.add_tensor(f"{name}.in_sum2", v.astype(np.float16))
        else:
            w.add_tensor(f"{name}.in_sum2", v)
        c = (counts or {}).get(name, np.ones(1, np.float32))
        if c is not None:
            w.add_tensor(f"{name}.counts", c)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --- hostile GGUF files -----------------------------------------------------------------------

F32_8 = tensor_info("t", [8], F32_ID, 0)


def _zero_tensor_in_padding() -> bytes:
    """The issue's file: one empty tensor, and the file ends inside the padding before the
    data section, so the data offset lies past the end."""
    whole = gguf_bytes([ARCH], [tensor_info("t", [0, 4], F32_ID, 0)], align=1)
    assert len(whole) % 32 != 0
    return whole + b"\0"


def _truncate(at: float | int) -> Callable[[bytes, int], bytes]:
    """Cut the valid model at an absolute offset (int) or a fraction of its data (float)."""

    def cut(model: bytes, data_offset: int) -> bytes:
        if isinstance(at, float):
            return model[: data_offset + int(at * (len(model) - data_offset))]
        return model[: at if at >= 0 else data_offset + at]

    return cut


# name -> bytes, or a function of (valid model bytes, its data offset) -> bytes
GGUF_CASES: dict[str, bytes | Callable[[bytes, int], bytes]] = {
    "empty file": b"",
    "bad magic": b"GGML" + bytes(60),
    "text file": b"hello, I am not a model\n" * 4,
    "version 0": gguf_bytes([ARCH], version=0),
    "version 4": gguf_bytes([ARCH], version=4),
    "big-endian version": gguf_bytes([ARCH], version=3 << 24),
    "tensor count huge": gguf_bytes([ARCH], n_tensors=2**63),
    "kv count huge": gguf_bytes([ARCH], n_kv=2**64 - 1),
    "kv count past the end": gguf_bytes([ARCH], n_kv=5),
    "string length huge": gguf_bytes([struct.pack("<Q", 2**60) + b"x" * 16]),
    "string length 2^64-1": gguf_bytes([kv("k", STRING, struct.pack("<Q", 2**64 - 1))]),
    "array length 2^60": gguf_bytes([kv("a", ARRAY, struct.pack("<IQ", U64, 2**60))]),
    "array of strings huge": gguf_bytes([kv("a", ARRAY, struct.pack("<IQ", STRING, 2**62))]),
    "array of arrays huge": gguf_bytes([kv("a", ARRAY, struct.pack("<IQ", ARRAY, 2**61))]),
    "arrays nested 9 deep": gguf_bytes(
        [kv("n", ARRAY, struct.pack("<IQ", ARRAY, 1) * 9 + struct.pack("<IQ", U32, 0))]
    ),
    "unknown value type": gguf_bytes([kv("k", 13, b"\0" * 8)]),
    "unknown array element type": gguf_bytes([kv("a", ARRAY, struct.pack("<IQ", 77, 1))]),
    "invalid UTF-8 string": gguf_bytes([kv("k", STRING, s(b"\xc3\x28"))]),
    "duplicate key": gguf_bytes([ARCH, kv("general.architecture", STRING, s("qwen2"))]),
    "unknown tensor type": gguf_bytes([ARCH], [tensor_info("t", [32], 4, 0)], bytes(64)),
    "tensor type 2^32-1": gguf_bytes([ARCH], [tensor_info("t", [32], 2**32 - 1, 0)], bytes(64)),
    "n_dims 5": gguf_bytes([ARCH], [tensor_info("t", [1] * 5, F32_ID, 0)], bytes(64)),
    "n_dims 2^32-1": gguf_bytes([ARCH], [s("t") + struct.pack("<I", 2**32 - 1)]),
    "dimension huge": gguf_bytes([ARCH], [tensor_info("t", [2**62], F32_ID, 0)], bytes(64)),
    "dimension product overflows": gguf_bytes(
        [ARCH], [tensor_info("t", [2**32, 2**32, 2], F32_ID, 0)], bytes(64)
    ),
    "row not a block multiple": gguf_bytes([ARCH], [tensor_info("t", [48], Q8_0_ID, 0)], bytes(64)),
    "tensor offset misaligned": gguf_bytes([ARCH], [tensor_info("t", [8], F32_ID, 8)], bytes(64)),
    "tensor offset past the end": gguf_bytes([ARCH], [tensor_info("t", [8], F32_ID, 4096)]),
    "tensor offset 2^64-32": gguf_bytes(
        [ARCH], [tensor_info("t", [8], F32_ID, 2**64 - 32)], bytes(64)
    ),
    "tensor data past the end": gguf_bytes([ARCH], [F32_8], bytes(31)),
    "overlapping tensors": gguf_bytes(
        [ARCH],
        [tensor_info("a", [16], F32_ID, 0), tensor_info("b", [16], F32_ID, 32)],
        bytes(128),
    ),
    "duplicate tensor names": gguf_bytes(
        [ARCH], [F32_8, tensor_info("t", [8], F32_ID, 32)], bytes(64)
    ),
    "tensor name too long": gguf_bytes([ARCH], [tensor_info("x" * 64, [8], 0, 0)], bytes(64)),
    "alignment 0": gguf_bytes([ARCH, kv("general.alignment", U32, struct.pack("<I", 0))]),
    "alignment 48 (not a power of two)": gguf_bytes(
        [ARCH, kv("general.alignment", U32, struct.pack("<I", 48))], [F32_8], bytes(64), align=48
    ),
    "alignment a string": gguf_bytes([ARCH, kv("general.alignment", STRING, s("32"))]),
    "alignment 2^40 (data past the end)": gguf_bytes(
        [ARCH, kv("general.alignment", U64, struct.pack("<Q", 2**40))], [F32_8], bytes(64)
    ),
    "file ends inside the padding": gguf_bytes([ARCH], [F32_8], align=1) + b"\0",
    "zero-element tensor, file ends in the padding": _zero_tensor_in_padding(),
    # The valid tiny model cut at a spread of offsets: the header, the first key, the
    # tokenizer arrays, the tensor table, the padding, and the data.
    **{f"truncated at byte {n}": _truncate(n) for n in (3, 4, 11, 19, 23, 40, 100, 3000, 9000)},
    "truncated in the tensor table": _truncate(-200),
    "truncated in the padding": _truncate(-1),
    **{f"truncated at {p:.0%} of the data": _truncate(p) for p in (0.0001, 0.5, 0.9999)},
}


def hostile_gguf(case: str, files: dict[str, Path], tmp_path: Path) -> Path:
    spec = GGUF_CASES[case]
    if callable(spec):
        good = files["model"]
        spec = spec(good.read_bytes(), _rllm.GGUFFile(good).data_offset)
    path = tmp_path / "hostile.gguf"
    path.write_bytes(spec)
    return path


# (file to open, valid files, output path, capfd, the file the error must name)
GgufEntry = Callable[[Path, dict[str, Path], Path, pytest.CaptureFixture, Path], None]


def _model(path: Path, files: dict[str, Path], out: Path, capfd, named: Path) -> None:
    expect_error(rllm.GGUFError, lambda: rllm.Model(path), named, capfd)


def _gguf_file(path: Path, files: dict[str, Path], out: Path, capfd, named: Path) -> None:
    expect_error(rllm.GGUFError, lambda: _rllm.GGUFFile(path), named, capfd)


def _info_cli(path: Path, files: dict[str, Path], out: Path, capfd, named: Path) -> None:
    expect_cli_error(["info", str(path)], named, capfd)


def _quantize_api(path: Path, files: dict[str, Path], out: Path, capfd, named: Path) -> None:
    expect_error(rllm.GGUFError, lambda: rllm.quantize_model(path, out, "Q8_0"), named, capfd)
    assert not out.exists()


def _quantize_cli(path: Path, files: dict[str, Path], out: Path, capfd, named: Path) -> None:
    expect_cli_error(["quantize", str(path), str(out), "q8_0"], named, capfd)
    assert not out.exists()


def _imatrix_api(path: Path, files: dict[str, Path], out: Path, capfd, named: Path) -> None:
    def run() -> object:
        return rllm.quantize_model(files["model"], out, "Q4_K_M", imatrix=path)

    expect_error(rllm.GGUFError, run, named, capfd)
    assert not out.exists()


def _imatrix_cli(path: Path, files: dict[str, Path], out: Path, capfd, named: Path) -> None:
    argv = ["quantize", "--imatrix", str(path), str(files["model"]), str(out), "q4_k_m"]
    expect_cli_error(argv, named, capfd)
    assert not out.exists()


def _perplexity_cli(path: Path, files: dict[str, Path], out: Path, capfd, named: Path) -> None:
    argv = ["perplexity", "-m", str(path), "-f", str(files["text"]), "-c", "16"]
    expect_cli_error(argv, named, capfd)


GGUF_ENTRY_POINTS: dict[str, GgufEntry] = {
    "rllm.Model": _model,
    "GGUFFile": _gguf_file,
    "rllm info": _info_cli,
    "quantize_model": _quantize_api,
    "rllm quantize": _quantize_cli,
    "quantize_model(imatrix=)": _imatrix_api,
    "rllm quantize --imatrix": _imatrix_cli,
    "rllm perplexity -m": _perplexity_cli,
}


@pytest.mark.parametrize("entry", list(GGUF_ENTRY_POINTS))
@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_hostile_gguf(case: str, entry: str, files: dict[str, Path], tmp_path: Path, capfd) -> None:
    path = hostile_gguf(case, files, tmp_path)
    GGUF_ENTRY_POINTS[entry](path, files, tmp_path / "out.gguf", capfd, path)


def test_the_issue_s_file_names_the_problem(files: dict[str, Path], tmp_path: Path) -> None:
    path = hostile_gguf("zero-element tensor, file ends in the padding", files, tmp_path)
    with pytest.raises(rllm.GGUFError, match="past the end of the file at 111: truncated inside"):
        rllm.quantize_model(path, tmp_path / "out.gguf", "Q8_0")


def test_an_empty_tensor_at_the_end_of_a_complete_file_is_valid(tmp_path: Path) -> None:
    """The fix rejects only files that end before the data section: a complete file whose
    last tensor is empty still quantizes."""
    path = tmp_path / "empty-tensor.gguf"
    path.write_bytes(
        gguf_bytes([ARCH], [F32_8, tensor_info("e.weight", [0, 4], F32_ID, 32)], bytes(32))
    )
    summary = rllm.quantize_model(path, tmp_path / "out.gguf", "Q8_0")
    assert {t["name"]: t["new_bytes"] for t in summary["tensors"]} == {"t": 32, "e.weight": 0}
    assert [0, 4] in [t[2] for t in _rllm.GGUFFile(tmp_path / "out.gguf").tensors()]


# --- split models -----------------------------------------------------------------------------


def _patch_u16(data: bytes, key: str, value: int) -> bytes:
    """Overwrite the u16 value of metadata ``key`` (gguf-py writes split.no/count as u16)."""
    at = data.index(s(key)) + len(s(key))
    assert struct.unpack_from("<I", data, at)[0] == gguf.GGUFValueType.UINT16
    return data[: at + 4] + struct.pack("<H", value) + data[at + 6 :]


# name -> corrupt the copied shards; returns (the file to open, the file the error names)
SplitCase = Callable[[list[Path]], tuple[Path, Path]]
SPLIT_CASES: dict[str, SplitCase] = {}


def split_case(f: SplitCase) -> SplitCase:
    SPLIT_CASES[f.__name__.replace("_", " ")] = f
    return f


@split_case
def missing_shard(parts: list[Path]) -> tuple[Path, Path]:
    parts[2].unlink()
    return parts[0], parts[2]


@split_case
def shard_count_mismatch(parts: list[Path]) -> tuple[Path, Path]:
    parts[1].write_bytes(_patch_u16(parts[1].read_bytes(), "split.count", 5))
    return parts[0], parts[1]


@split_case
def shard_with_wrong_split_no(parts: list[Path]) -> tuple[Path, Path]:
    parts[2].write_bytes(_patch_u16(parts[2].read_bytes(), "split.no", 1))
    return parts[0], parts[2]


@split_case
def split_no_past_split_count(parts: list[Path]) -> tuple[Path, Path]:
    parts[0].write_bytes(_patch_u16(parts[0].read_bytes(), "split.no", 7))
    return parts[0], parts[0]


@split_case
def truncated_shard(parts: list[Path]) -> tuple[Path, Path]:
    parts[2].write_bytes(parts[2].read_bytes()[:-100])
    return parts[0], parts[2]


@split_case
def shard_that_is_not_gguf(parts: list[Path]) -> tuple[Path, Path]:
    parts[1].write_bytes(b"not a model at all")
    return parts[0], parts[1]


@split_case
def opened_through_the_second_shard(parts: list[Path]) -> tuple[Path, Path]:
    return parts[1], parts[1]


@split_case
def first_shard_misnamed(parts: list[Path]) -> tuple[Path, Path]:
    renamed = parts[0].rename(parts[0].with_name("renamed.gguf"))
    return renamed, renamed


@split_case
def tensor_in_two_shards(parts: list[Path]) -> tuple[Path, Path]:
    """A tensor of the second shard renamed to one of the third's."""
    names = [[t.name for t in gguf.GGUFReader(p).tensors] for p in parts[1:3]]
    a, b = next((a, b) for a in names[0] for b in names[1] if len(a) == len(b))
    data = parts[2].read_bytes()
    at = data.index(s(b))
    parts[2].write_bytes(data[:at] + s(a) + data[at + len(s(a)) :])
    return parts[0], parts[0]


def split_parts(files: dict[str, Path], tmp_path: Path) -> list[Path]:
    parts = []
    for src in sorted(files["split"].parent.glob("split-*-of-*.gguf")):
        parts.append(tmp_path / src.name)
        shutil.copy(src, parts[-1])
    assert len(parts) == 3
    return parts


@pytest.mark.parametrize("entry", [e for e in GGUF_ENTRY_POINTS if "imatrix" not in e])
@pytest.mark.parametrize("case", list(SPLIT_CASES))
def test_hostile_split_model(
    case: str, entry: str, files: dict[str, Path], tmp_path: Path, capfd
) -> None:
    opened, named = SPLIT_CASES[case](split_parts(files, tmp_path))
    GGUF_ENTRY_POINTS[entry](opened, files, tmp_path / "out.gguf", capfd, named)


def test_the_intact_split_model_loads(files: dict[str, Path], tmp_path: Path) -> None:
    parts = split_parts(files, tmp_path)
    assert _rllm.Model(parts[0]).n_params == _rllm.Model(files["model"]).n_params


# --- importance matrices ----------------------------------------------------------------------

ONES = np.ones(64, np.float32)
IMATRIX_CASES: dict[str, Callable[[Path, dict[str, Path]], None]] = {
    "counts tensor missing": lambda p, f: write_imatrix(
        p, {"blk.0.attn_q.weight": ONES}, counts={"blk.0.attn_q.weight": None}
    ),
    "sums not F32": lambda p, f: write_imatrix(
        p, {"blk.0.attn_q.weight": ONES}, types={"blk.0.attn_q.weight": "F16"}
    ),
    "sums and counts disagree": lambda p, f: write_imatrix(
        p,
        {"blk.0.attn_q.weight": np.ones(63, np.float32)},
        {"blk.0.attn_q.weight": np.ones(2, np.float32)},
    ),
    "empty counts": lambda p, f: write_imatrix(
        p, {"blk.0.attn_q.weight": ONES}, {"blk.0.attn_q.weight": np.ones(0, np.float32)}
    ),
    "non-finite value": lambda p, f: write_imatrix(
        p, {"blk.0.attn_q.weight": np.full(64, np.inf, np.float32)}
    ),
    "size differs from the model's tensor": lambda p, f: write_imatrix(
        p, {"blk.0.attn_q.weight": np.ones(32, np.float32)}
    ),
    "more experts than the model's tensor": lambda p, f: write_imatrix(
        p,
        {"blk.0.ffn_down.weight": np.ones((2, 96), np.float32)},
        {"blk.0.ffn_down.weight": np.ones((2, 1), np.float32)},
    ),
    "a model, not an imatrix": lambda p, f: shutil.copy(f["model"], p),
    # The last 28 bytes are the padding after the 4-byte counts: cut into the data.
    "truncated imatrix": lambda p, f: p.write_bytes(f["imatrix"].read_bytes()[:-40]),
    "imatrix cut in its header": lambda p, f: p.write_bytes(f["imatrix"].read_bytes()[:200]),
    "legacy .dat imatrix": lambda p, f: p.write_bytes(struct.pack("<i", 1) + bytes(40)),
}
IMATRIX_ENTRY_POINTS = {k: GGUF_ENTRY_POINTS[k] for k in GGUF_ENTRY_POINTS if "imatrix" in k}


@pytest.mark.parametrize("entry", list(IMATRIX_ENTRY_POINTS))
@pytest.mark.parametrize("case", list(IMATRIX_CASES))
def test_hostile_imatrix(
    case: str, entry: str, files: dict[str, Path], tmp_path: Path, capfd
) -> None:
    path = tmp_path / "imatrix.gguf"
    IMATRIX_CASES[case](path, files)
    IMATRIX_ENTRY_POINTS[entry](path, files, tmp_path / "out.gguf", capfd, path)


def test_the_valid_imatrix_is_used(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    rllm.quantize_model(files["model"], out, "Q4_K_M", imatrix=files["imatrix"])
    assert _rllm.GGUFFile(out).metadata()["quantize.imatrix.entries_count"] == 1


# --- KL-divergence base files (llama-perplexity's _logits_ format, not GGUF: ValueError) ------


def _kld_header(data: bytes, **fields: int) -> bytes:
    names = ("n_ctx", "n_vocab", "n_chunk")
    values = dict(zip(names, struct.unpack_from("<Iii", data, 8)))
    values.update(fields)
    return data[:8] + struct.pack("<Iii", *(values[n] for n in names)) + data[20:]


def _kld_first_row(data: bytes, scale: float, min_log_prob: float) -> bytes:
    """Overwrite the float32 scale and minimum that open the first log-probability row."""
    n_ctx, _, n_chunk = struct.unpack_from("<Iii", data, 8)
    at = 20 + 4 * n_ctx * n_chunk
    return data[:at] + struct.pack("<ff", scale, min_log_prob) + data[at + 8 :]


KLD_CASES: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda b: b"",
    "bad magic": lambda b: b"_logitz_" + b[8:],
    "a GGUF file": lambda b: b"GGUF" + b[4:],
    "header cut": lambda b: b[:12],
    "n_ctx 2": lambda b: _kld_header(b, n_ctx=2),
    "n_ctx 2^32-1": lambda b: _kld_header(b, n_ctx=2**32 - 1),
    "n_vocab negative": lambda b: _kld_header(b, n_vocab=-5),
    "n_chunk 0": lambda b: _kld_header(b, n_chunk=0),
    "n_chunk 2^31-1": lambda b: _kld_header(b, n_chunk=2**31 - 1),
    "truncated rows": lambda b: b[:-10],
    "truncated tokens": lambda b: b[:40],
    "trailing bytes": lambda b: b + bytes(6),
    "token id past the vocabulary": lambda b: b[:20] + struct.pack("<i", 9999) + b[24:],
    "negative token id": lambda b: b[:24] + struct.pack("<i", -1) + b[28:],
    "other vocabulary": lambda b: _kld_header(b, n_vocab=1000),
    "row scale huge": lambda b: _kld_first_row(b, 1e30, -5.0),
    "row minimum NaN": lambda b: _kld_first_row(b, 1e-4, float("nan")),
}


def _kld_api(path: Path, files: dict[str, Path], capfd) -> None:
    expect_error(ValueError, lambda: kl_divergence(files["model"], path), path, capfd)


def _kld_cli(path: Path, files: dict[str, Path], capfd) -> None:
    argv = ["perplexity", "-m", str(files["model"]), "--kl-divergence"]
    expect_cli_error([*argv, "--kl-divergence-base", str(path)], path, capfd)


KLD_ENTRY_POINTS = {"kl_divergence": _kld_api, "rllm perplexity --kl-divergence": _kld_cli}


@pytest.mark.parametrize("entry", list(KLD_ENTRY_POINTS))
@pytest.mark.parametrize("case", list(KLD_CASES))
def test_hostile_kld_base(
    case: str, entry: str, files: dict[str, Path], tmp_path: Path, capfd
) -> None:
    path = tmp_path / "base.kld"
    path.write_bytes(KLD_CASES[case](files["kld"].read_bytes()))
    KLD_ENTRY_POINTS[entry](path, files, capfd)


# --- Hugging Face checkpoints for convert (ConvertError) ---------------------------------------


def _safetensors(header: object, data: bytes = b"", length: int | None = None) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def _st_entry(**meta: object) -> dict[str, object]:
    return {"model.norm.weight": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256], **meta}}


def _config_with(data: bytes, **values: object) -> bytes:
    """A valid config.json with some values replaced by ones of the wrong type or range."""
    return json.dumps({**json.loads(data), **values}).encode()


# name -> (file to replace, relative to the checkpoint, its new bytes or a function of the old)
CONVERT_CASES: dict[str, tuple[str, bytes | Callable[[bytes], bytes]]] = {
    "safetensors empty": ("model.safetensors", b""),
    "safetensors 5 bytes": ("model.safetensors", b"\1\0\0\0\0"),
    "header length huge": ("model.safetensors", _safetensors({}, length=2**63)),
    "header not JSON": ("model.safetensors", _safetensors(b"{nope")),
    "header not UTF-8": ("model.safetensors", _safetensors(b'{"\xff": 1}')),
    "header a JSON list": ("model.safetensors", _safetensors([1, 2])),
    "entry not an object": ("model.safetensors", _safetensors({"model.norm.weight": 7})),
    "data_offsets missing": ("model.safetensors", _safetensors(_st_entry(data_offsets=None))),
    "data_offsets reversed": (
        "model.safetensors",
        _safetensors(_st_entry(data_offsets=[256, 0]), bytes(256)),
    ),
    "data_offsets negative": (
        "model.safetensors",
        _safetensors(_st_entry(data_offsets=[-256, 0]), bytes(256)),
    ),
    "data past the end": ("model.safetensors", lambda b: b[:-100]),
    "size disagrees with shape": (
        "model.safetensors",
        _safetensors(_st_entry(shape=[64, 64]), bytes(256)),
    ),
    "negative dimension": ("model.safetensors", _safetensors(_st_entry(shape=[-64]), bytes(256))),
    "shape not a list": ("model.safetensors", _safetensors(_st_entry(shape="64"), bytes(256))),
    "tensor name unknown": (
        "model.safetensors",
        lambda b: b.replace(b'"model.norm.weight"', b'"model.norX.weight"', 1),
    ),
    # the last 256 bytes are model.norm.weight (F32 in the output); v_proj comes before it
    "a weight is NaN": ("model.safetensors", lambda b: b[:-4] + struct.pack("<f", float("nan"))),
    "a weight overflows f16": (
        "model.safetensors",
        lambda b: b[:-260] + struct.pack("<f", 1e30) + b[-256:],
    ),
    "dtype not a string": ("model.safetensors", _safetensors(_st_entry(dtype=4), bytes(256))),
    "config.json not JSON": ("config.json", b"{'hidden_size': 64"),
    "config.json a list": ("config.json", b"[]"),
    "config.json hidden_size a string": (
        "config.json",
        lambda b: _config_with(b, hidden_size="64"),
    ),
    "config.json head count zero": (
        "config.json",
        lambda b: _config_with(b, num_attention_heads=0),
    ),
    "config.json layers negative": ("config.json", lambda b: _config_with(b, num_hidden_layers=-2)),
    "config.json rope_theta NaN-like": ("config.json", lambda b: _config_with(b, rope_theta="nan")),
    "config.json architectures a string": (
        "config.json",
        lambda b: _config_with(b, architectures="LlamaForCausalLM"),
    ),
    "config.json rope_scaling a number": ("config.json", lambda b: _config_with(b, rope_scaling=2)),
    "index not JSON": ("model.safetensors.index.json", b"\x00\x01"),
    "index shard outside the folder": (
        "model.safetensors.index.json",
        json.dumps({"weight_map": {"model.norm.weight": "../model.safetensors"}}).encode(),
    ),
    "tokenizer_config.json not JSON": ("tokenizer_config.json", b"{"),
    "tokenizer.model truncated": ("tokenizer.model", lambda b: b[:-3]),
    "tokenizer.model varint runs off the end": ("tokenizer.model", b"\x0a\xff\xff"),
    "tokenizer.model wire type 3": ("tokenizer.model", b"\x0b"),
    "tokenizer.model score cut": ("tokenizer.model", b"\x0a\x03\x0a\x01a\x0a\x02\x15\x00"),
}


def hostile_checkpoint(case: str, files: dict[str, Path], tmp_path: Path) -> Path:
    name, spec = CONVERT_CASES[case]
    src = files["hf-spm"] if name == "tokenizer.model" else files["hf"]
    d = tmp_path / "hf"
    shutil.copytree(src, d)
    path = d / name
    path.write_bytes(spec(path.read_bytes()) if callable(spec) else spec)
    return path


def _convert_api(path: Path, out: Path, capfd) -> None:
    def run() -> object:
        return rllm.convert(path.parent, out, pre_tokenizer="llama-bpe")

    expect_error(rllm.ConvertError, run, path, capfd)
    assert not out.exists()


def _convert_cli(path: Path, out: Path, capfd) -> None:
    argv = ["convert", str(path.parent), "--outfile", str(out), "--pre-tokenizer", "llama-bpe"]
    expect_cli_error(argv, path, capfd)
    assert not out.exists()


CONVERT_ENTRY_POINTS = {"rllm.convert": _convert_api, "rllm convert": _convert_cli}


@pytest.mark.parametrize("entry", list(CONVERT_ENTRY_POINTS))
@pytest.mark.parametrize("case", list(CONVERT_CASES))
def test_hostile_checkpoint(
    case: str, entry: str, files: dict[str, Path], tmp_path: Path, capfd
) -> None:
    path = hostile_checkpoint(case, files, tmp_path)
    CONVERT_ENTRY_POINTS[entry](path, tmp_path / "out.gguf", capfd)


# What the message says is wrong, for the convert checks (the table above checks the file).
CONVERT_MESSAGES = {
    "tensor name unknown": r"cannot map tensor 'model\.norX\.weight' of a llama model",
    "a weight is NaN": r"tensor model\.norm\.weight: holds NaN or infinite values",
    "a weight overflows f16": r"v_proj\.weight: values up to 1e\+30 overflow F16; convert with "
    r"--outtype f32 or bf16",
    "config.json hidden_size a string": r"hidden_size must be a positive integer, got '64'",
    "config.json head count zero": r"num_attention_heads must be a positive integer, got 0",
    "config.json layers negative": r"num_hidden_layers must be a positive integer, got -2",
    "config.json rope_theta NaN-like": r"rope_theta must be a positive number, got 'nan'",
    "config.json architectures a string": r"architectures must be a list of names",
    "config.json rope_scaling a number": r"rope_scaling must be an object, got 2",
    "tokenizer.model truncated": r"truncated SentencePiece model",
    "tokenizer.model wire type 3": r"not a SentencePiece model \(wire type 3\)",
}


@pytest.mark.parametrize("case", list(CONVERT_MESSAGES))
def test_convert_says_what_is_wrong(
    case: str, files: dict[str, Path], tmp_path: Path, capfd
) -> None:
    path = hostile_checkpoint(case, files, tmp_path)
    out = tmp_path / "out.gguf"
    msg = expect_error(
        rllm.ConvertError,
        lambda: rllm.convert(path.parent, out, pre_tokenizer="llama-bpe"),
        path,
        capfd,
    )
    assert re.search(CONVERT_MESSAGES[case], msg), msg


# --- random mutations (hypothesis) ------------------------------------------------------------


@st.composite
def mutations(draw: st.DrawFn, data: bytes, hot: int) -> bytes:
    """``data`` with a few bytes overwritten, inserted or deleted (mostly in its first ``hot``
    bytes, where the structure lives), then perhaps truncated."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 8), label="n_mutations")):
        # Positions are drawn independently of the current length (then wrapped), so that
        # hypothesis can shrink each draw on its own.
        pos = draw(st.one_of(st.integers(0, hot), st.integers(0, 2**24)), label="pos")
        pos %= len(buf)
        op = draw(st.sampled_from(["set", "insert", "delete", "u64"]), label="op")
        if op == "set":
            buf[pos] = draw(st.integers(0, 255), label="byte")
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8), label="bytes")
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 8), label="n")]
        else:  # a plausible-looking count or offset: small, a power of two, or huge
            v = draw(st.one_of(st.integers(0, 300), st.sampled_from([2**k for k in range(64)])))
            buf[pos : pos + 8] = struct.pack("<Q", v)
        if not buf:
            buf = bytearray(b"G")
    if draw(st.booleans(), label="truncate"):
        buf = buf[: draw(st.integers(0, 2**24), label="length") % (len(buf) + 1)]
    return bytes(buf)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("small")
    write_tiny_llama(d / "m.gguf", weight_type="Q8_0")
    write_imatrix(d / "i.gguf", {"blk.0.attn_q.weight": ONES, "blk.1.ffn_down.weight": ONES})
    return {"model": (d / "m.gguf").read_bytes(), "imatrix": (d / "i.gguf").read_bytes()}


def mutated_model_through_every_entry_point(path: Path, out: Path) -> None:
    def clean(e: Exception) -> None:
        assert str(path) in str(e) and "internal error" not in str(e), e

    try:
        f = _rllm.GGUFFile(path)
    except rllm.GGUFError as e:
        clean(e)
    else:
        f.metadata(), f.tensors()
    for ftype in ("COPY", "Q4_0"):
        try:
            rllm.quantize_model(path, out, ftype, allow_requantize=True)
        except rllm.GGUFError as e:
            clean(e)
        except ValueError as e:  # a valid file may ask for an impossible plan
            assert "internal error" not in str(e), e
    try:
        rllm.Model(path)
        model = _rllm.Model(path)
    except rllm.GGUFError as e:
        clean(e)
        return
    # A clean load must also evaluate (garbage numbers are acceptable here).
    ctx = _rllm.Context(model, n_ctx=8, n_threads=1)
    assert ctx.eval([1, 2, 3]).shape == (model.n_vocab,)


@given(data=st.data())
def test_mutated_model(
    small: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    d = tmp_path_factory.mktemp("mut")
    (d / "m.gguf").write_bytes(data.draw(mutations(small["model"], 8 * 1024)))
    mutated_model_through_every_entry_point(d / "m.gguf", d / "out.gguf")


@given(data=st.data())
def test_mutated_imatrix(
    small: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    d = tmp_path_factory.mktemp("mut")
    (d / "m.gguf").write_bytes(small["model"])
    (d / "i.gguf").write_bytes(data.draw(mutations(small["imatrix"], 1024)))
    try:
        rllm.quantize_model(
            d / "m.gguf", d / "o.gguf", "Q4_0", allow_requantize=True, imatrix=d / "i.gguf"
        )
    except rllm.GGUFError as e:
        assert str(d / "i.gguf") in str(e)


@given(data=st.data())
def test_mutated_kld_base(
    files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("mut") / "base.kld"
    path.write_bytes(data.draw(mutations(files["kld"].read_bytes(), 256)))
    try:
        kl_divergence(files["model"], path)
    except ValueError as e:
        assert str(path) in str(e) and "internal error" not in str(e)


@given(data=st.data())
def test_mutated_safetensors(
    files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    d = tmp_path_factory.mktemp("mut") / "hf"
    shutil.copytree(files["hf"], d)
    st_path = d / "model.safetensors"
    st_path.write_bytes(data.draw(mutations(st_path.read_bytes(), 2048)))
    try:
        rllm.convert(d, d / "out.gguf", pre_tokenizer="llama-bpe")
    except rllm.ConvertError as e:
        assert str(d) in str(e)
