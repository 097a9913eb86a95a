"""Tokenizer parity with llama.cpp: token ids and detokenized text must equal what llama.cpp
recorded in tests/fixtures/tokenizer_*.json (made by tests/fixtures/make_tokenizer_fixtures.py).

A fixture is a real model's vocabulary, possibly with some tokenizer keys overridden (the
fixture's "overrides" / "renames"), so that pre-tokenizers without a model of their own are
checked too. Model files come from conftest's ``*_path`` fixtures (skipped when missing).
The clean_spaces, error and tiny-vocabulary tests need no model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES
from gguf_meta import read_metadata
from hypothesis import given
from hypothesis import strategies as st
from rllm.tokenizer import (
    _EOT_TEXTS,
    Detokenizer,
    Tokenizer,
    TokenizerError,
    _clean_cut,
    _clean_spaces,
)
from tiny_models import tiny_bpe_metadata

FIXTURE_NAMES = sorted(p.stem.removeprefix("tokenizer_") for p in FIXTURES.glob("tokenizer_*.json"))
_JSON: dict[str, dict[str, Any]] = {
    name: json.loads((FIXTURES / f"tokenizer_{name}.json").read_text(encoding="utf-8"))
    for name in FIXTURE_NAMES
}
_METADATA: dict[Path, dict[str, Any]] = {}  # GGUFReader is slow on big vocabularies: read once


def _metadata(fx: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    path = request.getfixturevalue(f"{fx['base']}_path")  # skips when the file is missing
    if path not in _METADATA:
        _METADATA[path] = read_metadata(path)
    meta = {**_METADATA[path], **fx["overrides"]}
    if fx["renames"]:
        tokens = list(meta["tokenizer.ggml.tokens"])
        for i, text in fx["renames"].items():
            tokens[int(i)] = text
        meta["tokenizer.ggml.tokens"] = tokens
    return meta


@pytest.fixture(scope="module")
def parity(request: pytest.FixtureRequest) -> tuple[Tokenizer, dict[str, Any]]:
    """(tokenizer, fixture) for the fixture name in request.param."""
    fx = _JSON[request.param]
    return Tokenizer.from_metadata(_metadata(fx, request)), fx


# Every fixture records the same texts in the same order (and as many decode cases), so the
# case index is parametrized separately from the fixture name; that lets pytest run all tests
# of one fixture together and build each tokenizer once.
_FIRST = _JSON[FIXTURE_NAMES[0]] if FIXTURE_NAMES else {"cases": [], "decode_cases": []}
N_CASES = min((len(fx["cases"]) for fx in _JSON.values()), default=0)
N_DECODE = min((len(fx["decode_cases"]) for fx in _JSON.values()), default=0)


def _case_id(i: int) -> str:
    case = _FIRST["cases"][i]
    text = case["text"].encode("ascii", "replace").decode()
    slug = re.sub(r"[^0-9A-Za-z]+", "_", text)[:24].strip("_")
    flags = "".join("1" if case[k] else "0" for k in ("add_special", "parse_special"))
    return f"{i:03d}-{flags}-{slug}"


@pytest.mark.parametrize("parity", FIXTURE_NAMES, indirect=True)
@pytest.mark.parametrize("i", range(N_CASES), ids=_case_id)
def test_encode_decode_like_llama_cpp(parity: tuple[Tokenizer, dict[str, Any]], i: int) -> None:
    tok, fx = parity
    case = fx["cases"][i]
    assert case["text"] == _FIRST["cases"][i]["text"]
    assert tok.encode(case["text"], case["add_special"], case["parse_special"]) == case["ids"]
    assert tok.decode(case["ids"]) == case["detok"]
    assert tok.decode(case["ids"], skip_special=True) == case["detok_skip"]


@pytest.mark.parametrize("parity", FIXTURE_NAMES, indirect=True)
@pytest.mark.parametrize("i", range(N_DECODE))
def test_decode_like_llama_cpp(parity: tuple[Tokenizer, dict[str, Any]], i: int) -> None:
    tok, fx = parity
    case = fx["decode_cases"][i]
    assert tok.decode(case["ids"]) == case["detok"]
    assert tok.decode(case["ids"], skip_special=True) == case["detok_skip"]


@pytest.mark.parametrize("parity", FIXTURE_NAMES, indirect=True)
def test_vocab_like_llama_cpp(parity: tuple[Tokenizer, dict[str, Any]]) -> None:
    tok, fx = parity
    v = fx["vocab"]
    assert tok.vocab_size == v["n_tokens"]
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.add_eos) == (
        v["bos"],
        v["eos"],
        v["add_bos"],
        v["add_eos"],
    )
    assert sorted(i for i in range(tok.vocab_size) if tok.is_eog(i)) == v["eog"]
    if tok.eot_id != v["eot"]:
        # Without an eot_token_id key llama.cpp takes whichever EOT-looking token its hash map
        # yields first (SmolLM2: "<|endoftext|>" over "<|im_end|>"); we take the first in its
        # list. Either way both are EOG tokens, so generation stops on the same ids.
        texts = {tok.token_bytes(t).decode() for t in (tok.eot_id, v["eot"])}
        assert texts <= set(_EOT_TEXTS)


# --- incremental detokenizer --------------------------------------------------------------


def _stream(tok: Tokenizer, ids: list[int], skip_special: bool) -> list[str]:
    detok = Detokenizer(tok, skip_special=skip_special)
    return [detok.push(i) for i in ids] + [detok.flush()]


def _check_stream(tok: Tokenizer, ids: list[int], skip_special: bool) -> None:
    pieces = _stream(tok, ids, skip_special)
    for piece in pieces:
        piece.encode("utf-8")  # no lone surrogates
    text = tok.decode(ids, skip_special=skip_special)
    assert "".join(pieces) == text
    if "\ufffd" not in text:  # split characters are held back, never emitted half-done
        assert not any("\ufffd" in p for p in pieces)


@pytest.mark.parametrize("parity", FIXTURE_NAMES, indirect=True)
@given(data=st.data(), skip_special=st.booleans())
def test_detokenizer_random_ids(
    parity: tuple[Tokenizer, dict[str, Any]], data: st.DataObject, skip_special: bool
) -> None:
    tok, _ = parity
    specials = [t for t in (tok.bos_id, tok.eos_id, tok.eot_id) if t is not None]
    any_id = st.integers(0, tok.vocab_size - 1)
    ids = data.draw(st.lists(st.one_of(any_id, st.sampled_from(specials)), max_size=40))
    _check_stream(tok, ids, skip_special)


@pytest.mark.parametrize("parity", FIXTURE_NAMES, indirect=True)
@given(text=st.text(max_size=60), add_special=st.booleans(), skip_special=st.booleans())
def test_detokenizer_encoded_text(
    parity: tuple[Tokenizer, dict[str, Any]], text: str, add_special: bool, skip_special: bool
) -> None:
    tok, _ = parity
    _check_stream(tok, tok.encode(text, add_special=add_special), skip_special)


@pytest.mark.parametrize("parity", FIXTURE_NAMES, indirect=True)
def test_detokenizer_holds_back_split_characters(
    parity: tuple[Tokenizer, dict[str, Any]],
) -> None:
    tok, _ = parity
    text = "naïve 🦀 crab, 👨\u200d👩\u200d👧 family, 中文 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"
    ids = tok.encode(text, add_special=False)
    pieces = _stream(tok, ids, skip_special=False)
    assert "".join(pieces) == tok.decode(ids)
    assert not any("\ufffd" in p for p in pieces)
    detok = Detokenizer(tok)
    lead = tok.encode("🦀", add_special=False)
    if len(lead) > 1:  # a character split over tokens yields nothing until it is complete
        assert [detok.push(i) for i in lead[:-1]] == [""] * (len(lead) - 1)
        assert detok.push(lead[-1]).endswith("🦀")


# --- clean_spaces (llama_detokenize) ------------------------------------------------------


def _clean_spaces_c(text: bytes) -> bytes:
    """Literal transcription of llama_detokenize's three clean_spaces passes."""
    buf = bytearray(text)
    total = len(buf)
    # 1: " ?", " !", " .", " ,"
    n, total = total, 1 if total else 0
    for i in range(1, n):
        x = buf[i]
        if buf[i - 1] == 0x20 and x in b"?!.,":
            total -= 1
        buf[total] = x
        total += 1
    # 2: a single apostrophe between spaces
    n, total = total, 1 if total else 0
    i = 1
    while i < n:
        x = buf[i]
        if x == 0x27 and i + 1 < n and buf[i - 1] == 0x20 and buf[i + 1] == 0x20:
            total -= 1
            i += 1
            buf[i] = 0
        buf[total] = x
        total += 1
        i += 1
    # 3: " 's", " 'm", " 're", " 've"
    n, total = total, 1 if total else 0
    for i in range(1, n):
        x = buf[i]
        if buf[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
            x1 = buf[i + 1]
            if x1 in b"sm" or (i + 2 < n and bytes(buf[i + 1 : i + 3]) in (b"re", b"ve")):
                total -= 1
        buf[total] = x
        total += 1
    return bytes(buf[:total])


_CLEANABLE = st.lists(
    st.sampled_from(
        [b" ", b"'", b"?", b",", b"s", b"m", b"r", b"v", b"e", b"t", b"x", b"\xc3\xa9"]
    ),
    max_size=30,
).map(b"".join)


@given(_CLEANABLE)
def test_clean_spaces_matches_llama_cpp_loops(raw: bytes) -> None:
    assert _clean_spaces(raw) == _clean_spaces_c(raw)


@given(_CLEANABLE, st.lists(st.integers(0, 30), max_size=6))
def test_clean_spaces_streams(raw: bytes, cuts: list[int]) -> None:
    out, pending, start = b"", b"", 0
    for cut in sorted(min(c, len(raw)) for c in cuts) + [len(raw)]:
        pending += raw[start:cut]
        start = cut
        k = _clean_cut(pending)
        out += _clean_spaces(pending[:k])
        pending = pending[k:]
    assert out + _clean_spaces(pending) == _clean_spaces(raw)


# --- metadata errors and tiny vocabularies (no model files) -------------------------------


def _tiny_spm(**overrides: Any) -> dict[str, Any]:
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    tokens += ["▁", "a", "b", "c", "ab", "bc", "▁a", "▁abc", "abc"]
    scores = [0.0] * 259 + [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0]
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": [2, 3, 3] + [6] * 256 + [1] * 9,
    }
    meta.update(overrides)
    return meta


def testtiny_bpe_metadata() -> None:
    tok = Tokenizer.from_metadata(tiny_bpe_metadata())
    ids = tok.encode("hello hello<|im_end|>", parse_special=True)
    assert [tok.token_bytes(i) for i in ids] == [b"hello", b" hello", b"<|im_end|>"]
    assert tok.encode("<|im_end|>") != [tok.eos_id]  # not special text without parse_special
    assert tok.is_eog(tok.eos_id) and tok.eot_id == tok.eos_id
    assert tok.decode(ids) == "hello hello<|im_end|>"
    assert tok.decode(ids, skip_special=True) == "hello hello"
    assert tok.decode(tok.encode("a , b ' c 's")) == "a, b'c's"  # clean_spaces for gpt-2


def test_tiny_spm() -> None:
    tok = Tokenizer.from_metadata(_tiny_spm())
    ids = {t: i for i, t in enumerate(_tiny_spm()["tokenizer.ggml.tokens"])}
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.add_space_prefix) == (1, 2, True, True)
    # "▁abc": ab (-5) beats bc (-6) and ▁a (-7); then abc (-9), then ▁abc (-8)
    assert tok.encode("abc") == [1, ids["▁abc"]]
    assert tok.encode("ab", add_special=False) == [ids["▁"], ids["ab"]]
    assert tok.encode("cab d", add_special=False) == [
        ids["▁"],
        ids["c"],
        ids["ab"],
        ids["▁"],
        ids["<0x64>"],
    ]
    ids_abc_d = tok.encode("abc d", add_special=False)
    assert tok.decode(ids_abc_d) == "abc d"  # the first token's space is stripped
    assert tok.decode([1, *ids_abc_d]) == "<s> abc d"  # ... unless BOS comes first
    assert tok.decode([1, *ids_abc_d], skip_special=True) == " abc d"
    assert tok.token_bytes(ids["<0x0A>"]) == b"\n" and tok.token_bytes(ids["▁a"]) == b" a"


SPECIAL_SPLIT = json.loads((FIXTURES / "special_split.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", SPECIAL_SPLIT["cases"], ids=lambda c: repr(c["text"]))
def test_special_text_split_like_llama_cpp(case: dict[str, Any]) -> None:
    """Random special texts over a three-letter alphabet (overlapping, nested, repeated;
    control and user-defined) split out of random text exactly as llama.cpp splits them
    (tests/fixtures/make_special_split_fixtures.py recorded its token ids)."""
    base = tiny_bpe_metadata()
    tok = Tokenizer.from_metadata(
        tiny_bpe_metadata(
            **{
                "tokenizer.ggml.tokens": base["tokenizer.ggml.tokens"] + case["specials"],
                "tokenizer.ggml.token_type": base["tokenizer.ggml.token_type"] + case["types"],
            }
        )
    )
    text, parse_special = case["text"], case["parse_special"]
    assert tok.encode(text, add_special=False, parse_special=parse_special) == case["ids"]


@given(
    st.lists(st.text("αβγ", min_size=1, max_size=5), min_size=1, max_size=8, unique=True),
    st.lists(st.sampled_from([3, 4]), min_size=8, max_size=8),
    st.text("αβγ x", max_size=24),
    st.booleans(),
)
def test_special_scan_finds_every_special_text_present(
    specials: list[str], types: list[int], text: str, parse_special: bool
) -> None:
    """The one-pass scan that picks the special tokens worth splitting on finds every special
    text occurring in ``text`` (control ones only with parse_special), checked by plain
    substring search."""
    base = tiny_bpe_metadata()
    meta = tiny_bpe_metadata(
        **{
            "tokenizer.ggml.tokens": base["tokenizer.ggml.tokens"] + specials,
            "tokenizer.ggml.token_type": base["tokenizer.ggml.token_type"] + types[: len(specials)],
        }
    )
    tok = Tokenizer.from_metadata(meta)
    first = len(base["tokenizer.ggml.tokens"])
    present = {first + i for i, t in enumerate(specials) if t in text}
    assert tok._special_in(text, parse_special) == {
        i for i in present if parse_special or not tok.is_control(i)
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tokenizer.ggml.model": "t5"}, "tokenizer.ggml.model 't5'"),
        ({"tokenizer.ggml.model": None}, "tokenizer.ggml.model None"),
        ({"tokenizer.ggml.pre": "tekken"}, "tokenizer.ggml.pre 'tekken'"),
        ({"tokenizer.ggml.tokens": []}, "tokenizer.ggml.tokens"),
        ({"tokenizer.ggml.tokens": ["a", "a"]}, "duplicate token 'a'"),
        ({"tokenizer.ggml.tokens": ["a", 1]}, "tokenizer.ggml.tokens"),
        ({"tokenizer.ggml.merges": None}, "tokenizer.ggml.merges"),
        ({"tokenizer.ggml.token_type": [1]}, "tokenizer.ggml.token_type"),
        ({"tokenizer.ggml.eos_token_id": "x"}, "tokenizer.ggml.eos_token_id"),
    ],
)
def test_bad_metadata(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(TokenizerError, match=re.escape(message)):
        Tokenizer.from_metadata(tiny_bpe_metadata(**overrides))


def test_token_id_out_of_range() -> None:
    tok = Tokenizer.from_metadata(_tiny_spm())
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([tok.vocab_size])
