"""The GGUF loader: hand-made corrupt files each fail with a specific GGUFError, random byte
mutations of a valid file never crash, and `rllm info` prints the file."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rllm
from hypothesis import given
from hypothesis import strategies as st
from rllm import _rllm
from tiny_models import TINY, write_tiny_llama

# --- a minimal hand-written GGUF builder, so each field can be corrupted on purpose ----------

U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def tensor_info(name: str, dims: list[int], ggml_type: int, offset: int) -> bytes:
    out = s(name) + struct.pack("<I", len(dims))
    out += b"".join(struct.pack("<Q", d) for d in dims)
    return out + struct.pack("<IQ", ggml_type, offset)


def gguf_bytes(
    kvs: list[bytes],
    tensors: list[bytes] = (),
    data: bytes = b"",
    version: int = 3,
    magic: bytes = b"GGUF",
    n_kv: int | None = None,
    n_tensors: int | None = None,
    align: int = 32,
) -> bytes:
    head = magic + struct.pack("<I", version)
    head += struct.pack(
        "<QQ", len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    head += b"".join(kvs) + b"".join(tensors)
    head += b"\0" * (-len(head) % align)
    return head + data


ARCH = kv("general.architecture", STRING, s("llama"))
F32_TENSOR = tensor_info("t", [8], 0, 0)

CORRUPT = {
    "empty file": (b"", "truncated: magic at offset 0"),
    "wrong magic": (b"GGUX" + b"\0" * 20, "not a GGUF file"),
    "version 1": (gguf_bytes([], version=1), "version 1 is not supported"),
    "version 4": (gguf_bytes([], version=4), "version 4 is not supported"),
    "big-endian": (gguf_bytes([], version=3 << 24), "big-endian"),
    "truncated header": (gguf_bytes([ARCH])[:14], "truncated: tensor count"),
    "huge kv count": (gguf_bytes([ARCH], n_kv=2**62), "metadata count at offset 16 claims"),
    "huge tensor count": (gguf_bytes([ARCH], n_tensors=2**40), "tensor count at offset 8 claims"),
    "huge string length": (
        gguf_bytes([struct.pack("<Q", 2**60) + b"\0" * 16]),
        "metadata key length at offset 24 claims",
    ),
    "huge array count": (
        gguf_bytes([kv("a", ARRAY, struct.pack("<IQ", U32, 2**50))]),
        "array length of metadata key 'a'",
    ),
    "invalid utf-8 key": (gguf_bytes([kv(b"\xff\xfe", U32, b"\0" * 4)]), "not valid UTF-8"),
    "unknown value type": (gguf_bytes([kv("k", 99, b"\0" * 8)]), "unknown value type 99"),
    "bad bool": (gguf_bytes([kv("k", BOOL, b"\x02")] + [ARCH]), "neither 0 nor 1"),
    "duplicate key": (gguf_bytes([ARCH, ARCH]), "duplicate metadata key 'general.architecture'"),
    "alignment not a power of two": (
        gguf_bytes([kv("general.alignment", U32, struct.pack("<I", 24))]),
        "general.alignment = 24 is not a power of two",
    ),
    "deeply nested arrays": (
        gguf_bytes([kv("n", ARRAY, struct.pack("<IQ", ARRAY, 1) * 9 + struct.pack("<IQ", U32, 0))]),
        "nests arrays deeper than 8",
    ),
    "unknown tensor type": (
        gguf_bytes([ARCH], [tensor_info("t", [32], 4, 0)], b"\0" * 64),
        "tensor 't' has unknown ggml type id 4",
    ),
    "too many dims": (
        gguf_bytes([ARCH], [tensor_info("t", [1] * 5, 0, 0)], b"\0" * 64),
        "5 dimensions (at most 4",
    ),
    "dims overflow": (
        gguf_bytes([ARCH], [tensor_info("t", [2**40, 2**40], 0, 0)], b"\0" * 64),
        "element count overflows",
    ),
    "row not a block multiple": (
        gguf_bytes([ARCH], [tensor_info("t", [33, 2], 2, 0)], b"\0" * 128),
        "row length 33 is not a multiple of the Q4_0 block size 32",
    ),
    "tensor data outside the file": (
        gguf_bytes([ARCH], [tensor_info("t", [8], 0, 64)], b"\0" * 64),
        "data [64, 96) lies outside the file's data section of 64 bytes",
    ),
    "misaligned tensor": (
        gguf_bytes([ARCH], [tensor_info("t", [8], 0, 4)], b"\0" * 64),
        "offset 4 is not a multiple of the alignment 32",
    ),
    "duplicate tensor": (
        gguf_bytes([ARCH], [F32_TENSOR, F32_TENSOR], b"\0" * 64),
        "duplicate tensor name 't'",
    ),
    "overlapping tensors": (
        gguf_bytes(
            [ARCH], [tensor_info("a", [16], 0, 0), tensor_info("b", [8], 0, 32)], b"\0" * 128
        ),
        "tensors 'a' and 'b' overlap",
    ),
    "tensor name too long": (
        gguf_bytes([ARCH], [tensor_info("x" * 64, [8], 0, 0)], b"\0" * 64),
        "64 bytes long (at most 63 allowed)",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_file_raises_a_specific_gguf_error(tmp_path: Path, case: str) -> None:
    data, message = CORRUPT[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    copied = lambda p: _rllm.Model(p, use_mmap=False)  # noqa: E731
    for load in (_rllm.GGUFFile, _rllm.Model, copied):
        with pytest.raises(rllm.GGUFError) as err:
            load(path)
        assert message in str(err.value)
        assert str(path) in str(err.value), "the message names the file"
    assert issubclass(rllm.GGUFError, ValueError)


@pytest.mark.parametrize("cut", [0.0001, 0.001, 0.01, 0.3, 0.999])
def test_truncated_model_is_rejected(tmp_path: Path, cut: float) -> None:
    good = tmp_path / "good.gguf"
    write_tiny_llama(good)
    data = good.read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(rllm.GGUFError, match="truncated|outside the file|claims"):
        _rllm.Model(bad)


def _model_error(tmp_path: Path, **kwargs) -> str:
    path = tmp_path / "m.gguf"
    write_tiny_llama(path, **kwargs)
    with pytest.raises(rllm.GGUFError) as err:
        _rllm.Model(path)
    return str(err.value)


def test_missing_key_is_named(tmp_path: Path) -> None:
    assert "missing metadata key 'llama.block_count'" in _model_error(
        tmp_path, omit=("llama.block_count",)
    )


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    msg = _model_error(tmp_path, omit=("blk.1.attn_q.weight",))
    assert "missing tensor 'blk.1.attn_q.weight'" in msg


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    msg = _model_error(
        tmp_path,
        omit=("output_norm.weight",),
        extra_tensors={"output_norm.weight": np.ones(32, np.float32)},
    )
    assert "tensor 'output_norm.weight' has shape [32], expected [64]" in msg


def test_unknown_tensor_is_rejected(tmp_path: Path) -> None:
    msg = _model_error(tmp_path, extra_tensors={"blk.0.mystery.weight": np.ones(8, np.float32)})
    assert "'blk.0.mystery.weight' is not used by the llama architecture" in msg


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    write_tiny_llama(path, arch="mamba9")
    expected = "'mamba9'.*supported: bert, gemma3, llama, nomic-bert, phi3, qwen2"
    with pytest.raises(rllm.UnsupportedArchitectureError, match=expected):
        _rllm.Model(path)
    assert issubclass(rllm.UnsupportedArchitectureError, rllm.GGUFError)


def test_missing_and_non_file_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        _rllm.Model(tmp_path / "nope.gguf")
    with pytest.raises(OSError, match="directory"):
        _rllm.Model(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not a model\n" * 4)
    with pytest.raises(rllm.GGUFError, match="not a GGUF file"):
        rllm.Model(text)


# --- random corruption never crashes --------------------------------------------------------


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
    write_tiny_llama(path, weight_type="Q8_0")
    return path.read_bytes()


@given(data=st.data())
def test_mutated_file_loads_cleanly_or_raises_gguf_error(
    small_gguf: bytes, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    buf = bytearray(small_gguf)
    header_end = 8 * 1024  # most of the structure lives in the first few KiB
    n = data.draw(st.integers(1, 8), label="n_mutations")
    for _ in range(n):
        pos = data.draw(
            st.one_of(st.integers(0, header_end), st.integers(0, len(buf) - 1)), label="pos"
        )
        buf[pos] = data.draw(st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="truncate"):
        buf = buf[: data.draw(st.integers(0, len(buf)), label="length")]
    path = tmp_path_factory.mktemp("mut") / "m.gguf"
    path.write_bytes(bytes(buf))
    try:
        model = _rllm.Model(path)
    except rllm.GGUFError:
        return
    # A clean load must also evaluate without crashing (garbage numbers are acceptable here).
    ctx = _rllm.Context(model, n_ctx=8, n_threads=1)
    logits = ctx.eval([1, 2, 3])
    assert logits.shape == (model.n_vocab,)


# --- rllm info ------------------------------------------------------------------------------


def test_info_prints_metadata_and_tensors(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    write_tiny_llama(path)
    out = subprocess.run(
        [sys.executable, "-m", "rllm", "info", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "general.architecture = 'llama'" in out.stdout
    assert "llama.block_count = 2" in out.stdout
    assert "... (258 items)" in out.stdout, "long arrays are abbreviated"
    assert "blk.0.attn_q.weight" in out.stdout
    assert f"F32      {TINY.n_embd} x {TINY.n_embd}" in out.stdout


def test_info_on_a_corrupt_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGUF\x09\0\0\0")
    out = subprocess.run(
        [sys.executable, "-m", "rllm", "info", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "version 9 is not supported" in out.stderr


# --- split models ---------------------------------------------------------------------------


def test_copied_weights_equal_mapped_ones(tmp_path: Path) -> None:
    """use_mmap=False copies the file into private (huge-page) memory: the same logits."""
    path = tmp_path / "m.gguf"
    write_tiny_llama(path, split_max_tensors=8)
    write_tiny_llama(path)
    ids = [5, 6, 7, 8]
    mapped = _rllm.Model(path, use_mmap=True)
    assert mapped.mapped
    expected = _rllm.Context(mapped, n_ctx=8).eval(ids)
    for first in (path, sorted(tmp_path.glob("m-*-of-*.gguf"))[0]):
        copied = _rllm.Model(first, use_mmap=False)
        assert not copied.mapped
        np.testing.assert_array_equal(_rllm.Context(copied, n_ctx=8).eval(ids), expected)
    assert rllm.Model(path, use_mmap=False).mapped is False
    with pytest.raises(TypeError, match="use_mmap"):
        rllm.Model(path, use_mmap="no")  # type: ignore[arg-type]


def test_split_model_loads_as_one(tmp_path: Path) -> None:
    whole = tmp_path / "whole.gguf"
    write_tiny_llama(whole)
    write_tiny_llama(tmp_path / "split.gguf", split_max_tensors=8)
    parts = sorted(tmp_path.glob("split-*-of-*.gguf"))
    assert len(parts) >= 3
    ids = [5, 6, 7, 8]
    expected = _rllm.Context(_rllm.Model(whole), n_ctx=8).eval(ids)
    model = _rllm.Model(parts[0])
    assert model.n_params == _rllm.Model(whole).n_params
    np.testing.assert_array_equal(_rllm.Context(model, n_ctx=8).eval(ids), expected)

    with pytest.raises(rllm.GGUFError, match="file 2 of a .*open the first file"):
        _rllm.Model(parts[1])
    parts[-1].unlink()
    with pytest.raises(rllm.GGUFError, match=f"split model, .*{parts[-1].name}, is missing"):
        _rllm.Model(parts[0])
