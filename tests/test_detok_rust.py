"""The Rust detokenizer (``rllm._rllm.Detokenizer``, crates/core/src/detok.rs) against
llama.cpp: every tokenizer fixture's cases and decode cases (tests/fixtures/tokenizer_*.json,
built as tests/test_tokenizer.py builds them), whole and streamed one id at a time; and, on the
three real vocabularies, random ids streamed vs decoded whole vs the Python decoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gguf_meta import read_metadata
from hypothesis import given
from hypothesis import strategies as st
from rllm import _rllm
from rllm.tokenizer import Tokenizer
from test_tokenizer import _JSON, FIXTURE_NAMES, _metadata

Pair = tuple[_rllm.Detokenizer, _rllm.Detokenizer]  # (render special, skip special)


def _stream(d: _rllm.Detokenizer, ids: list[int]) -> list[str]:
    pieces = [d.push(i) for i in ids]
    pieces.append(d.flush())
    return pieces


@pytest.fixture(scope="module")
def rust_parity(request: pytest.FixtureRequest) -> tuple[Pair, dict[str, Any]]:
    fx = _JSON[request.param]
    meta = _metadata(fx, request)
    pair = (
        _rllm.Detokenizer.from_metadata(meta),
        _rllm.Detokenizer.from_metadata(meta, skip_special=True),
    )
    return pair, fx


@pytest.mark.parametrize("rust_parity", FIXTURE_NAMES, indirect=True)
def test_decode_like_llama_cpp(rust_parity: tuple[Pair, dict[str, Any]]) -> None:
    """Whole and streamed text equal llama.cpp's, for every case and decode case."""
    (d, ds), fx = rust_parity
    cases = [*fx["cases"], *fx["decode_cases"]]
    assert cases
    wrong = []
    for k, case in enumerate(cases):
        for det, want in ((d, case["detok"]), (ds, case["detok_skip"])):
            whole = det.decode(case["ids"])
            # the pieces are str, so none splits a character; equal concatenation puts any
            # U+FFFD exactly where the whole decode has it
            streamed = "".join(_stream(det, case["ids"]))
            if whole != want or streamed != want:
                wrong.append((k, det.skip_special, want, whole, streamed))
    assert not wrong, wrong[:5]


_REAL = {"smollm2": "smollm2_path", "qwen": "qwen_path", "gemma": "gemma_path"}


@pytest.fixture(scope="module")
def real(request: pytest.FixtureRequest) -> tuple[Pair, Tokenizer]:
    path: Path = request.getfixturevalue(_REAL[request.param])
    meta = read_metadata(path)
    pair = (
        _rllm.Detokenizer.from_metadata(meta),
        _rllm.Detokenizer.from_metadata(meta, skip_special=True),
    )
    return pair, Tokenizer.from_metadata(meta)


@pytest.mark.parametrize("real", list(_REAL), indirect=True)
@given(data=st.data())
def test_stream_equals_whole_decode(real: tuple[Pair, Tokenizer], data: st.DataObject) -> None:
    """Random ids (biased to the low ids, where byte and control tokens live)."""
    (d, ds), tok = real
    n = d.n_vocab
    ids = data.draw(st.lists(st.integers(0, n - 1) | st.integers(0, 600), max_size=40))
    for det in (d, ds):
        whole = det.decode(ids)
        assert "".join(_stream(det, ids)) == whole
        assert whole == tok.decode(ids, skip_special=det.skip_special)


def test_from_model(smollm2_path: Path) -> None:
    d = _rllm.Detokenizer(_rllm.Model(smollm2_path))
    ref = _rllm.Detokenizer.from_metadata(read_metadata(smollm2_path))
    ids = list(range(0, d.n_vocab, 97))
    assert d.n_vocab == ref.n_vocab
    assert d.decode(ids) == ref.decode(ids)
    assert not d.skip_special


def test_out_of_range_ids(smollm2_path: Path) -> None:
    d = _rllm.Detokenizer.from_metadata(read_metadata(smollm2_path))
    n = d.n_vocab
    for bad in (n, -1, 2**40):
        with pytest.raises(ValueError, match="out of range"):
            d.push(bad)
        with pytest.raises(ValueError, match="out of range"):
            d.decode([1, bad])
    assert d.push(28) + d.flush() == d.decode([28])  # a failed push changes nothing


def test_bad_metadata() -> None:
    with pytest.raises(ValueError, match="tokenizer.ggml.model"):
        _rllm.Detokenizer.from_metadata({"tokenizer.ggml.model": "bert"})
    with pytest.raises(TypeError, match="unsupported value"):
        _rllm.Detokenizer.from_metadata({"tokenizer.ggml.tokens": [1.5]})
