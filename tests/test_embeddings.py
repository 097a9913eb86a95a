"""Embeddings: parity with llama.cpp's llama-embedding (fixtures made by
tests/fixtures/make_embedding_fixtures.py) on SmolLM2 and tiny bert / nomic-bert encoders,
pooling and normalization against numpy, batching, and every error path."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import rllm
from conftest import FIXTURES
from rllm import _rllm
from tiny_encoders import ENCODERS, write_encoder, write_named

MIN_COSINE = 0.999
FX = json.loads((FIXTURES / "embeddings_llama_cpp.json").read_text())


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path) -> rllm.Model:
    return rllm.Model(smollm2_path, n_ctx=FX["n_ctx"], n_threads=2)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("encoders")
    paths = {}
    for name in ENCODERS:
        paths[name] = folder / f"{name}.gguf"
        write_named(paths[name], name)
    return paths


@pytest.fixture(scope="module")
def bert(encoders: dict[str, Path]) -> rllm.Model:
    return rllm.Model(encoders["bert"], n_ctx=FX["n_ctx"], n_threads=2)


def test_smollm2_mean_pooling_matches_llama_cpp(smollm2: rllm.Model) -> None:
    case = FX["smollm2"]
    assert [smollm2.tokenize(p, special=True) for p in case["prompts"]] == case["token_ids"]
    got = smollm2.embed(case["prompts"], pooling="mean")
    assert got.shape == (8, 576) and got.dtype == np.float32
    cos = cosines(got, case["embeddings"])
    assert cos.min() >= MIN_COSINE, cos


@pytest.mark.parametrize("name", [n for n, o in ENCODERS.items() if o["pooling"] != 4])
def test_tiny_encoder_matches_llama_cpp(encoders: dict[str, Path], name: str) -> None:
    case = FX[name]
    model = rllm.Model(encoders[name], n_ctx=FX["n_ctx"], n_threads=2)
    assert model.pooling == case["pooling"]
    # WordPiece ids as llama.cpp's: [CLS] ... [SEP], lowercasing, unknown words, punctuation
    assert [model.tokenize(p, special=True) for p in case["prompts"]] == case["token_ids"]
    got = model.embed(case["prompts"])
    assert got.shape == (len(case["prompts"]), 64)
    cos = cosines(got, case["embeddings"])
    assert cos.min() >= MIN_COSINE, cos


def test_reranker_scores_match_llama_cpp(encoders: dict[str, Path]) -> None:
    case = FX["bert_rank"]
    model = rllm.Model(encoders["bert_rank"], n_ctx=FX["n_ctx"], n_threads=2)
    assert model.pooling == "rank"
    assert model.embedder.dim() == 1
    scores, rows, n_tokens = model.embedder.embed(case["token_ids"], None, -1)
    assert rows == [1] * 3 and n_tokens == sum(map(len, case["token_ids"]))
    np.testing.assert_allclose(scores[:, 0], np.ravel(case["embeddings"]), atol=5e-3)
    # rank scores are never normalized
    assert np.array_equal(model.embedder.embed(case["token_ids"], None, 2)[0], scores)


def test_batch_equals_one_at_a_time_and_packs_passes(smollm2_path: Path) -> None:
    texts = FX["smollm2"]["prompts"]
    # n_ctx 40: a few sentences per forward pass, so several passes
    model = rllm.Model(smollm2_path, n_ctx=40, n_threads=2)
    together = model.embed(texts, pooling="mean")
    alone = np.stack([model.embed(t, pooling="mean") for t in texts])
    np.testing.assert_allclose(together, alone, atol=2e-3)
    assert cosines(together, alone).min() > 0.99999


def test_encoder_batch_is_bidirectional_per_sequence(bert: rllm.Model) -> None:
    texts = FX["bert"]["prompts"]
    together = bert.embed(texts)
    alone = np.stack([bert.embed(t) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # attention is not causal: the first token's vector depends on later ones
    a = bert.embed("the cat", pooling="cls")
    b = bert.embed("the dog", pooling="cls")
    assert cosines(a, b) < 0.9999


@pytest.mark.parametrize("model_name", ["smollm2", "bert"])
def test_poolings_agree_with_token_embeddings(
    request: pytest.FixtureRequest, model_name: str
) -> None:
    model: rllm.Model = request.getfixturevalue(model_name)
    texts = ["the cat sat on the mat.", "hello world"]
    tokens = model.embed(texts, pooling="none", normalize=-1)
    assert isinstance(tokens, list) and len(tokens) == 2
    for text, rows in zip(texts, tokens):
        assert rows.shape == (len(model.tokenize(text, special=True)), model.embedder.dim())

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    for pooling, pick in (
        ("mean", lambda r: r.mean(0)),
        ("cls", lambda r: r[0]),
        ("last", lambda r: r[-1]),
    ):
        want = unit(np.stack([pick(r) for r in tokens]))
        np.testing.assert_allclose(model.embed(texts, pooling=pooling), want, atol=1e-5)
    # pooling none normalizes each token's vector
    single = model.embed("hello world", pooling="none")
    np.testing.assert_allclose(single, unit(tokens[1]), atol=1e-5)


def test_normalizations_as_llama_cpp(bert: rllm.Model) -> None:
    raw = bert.embed("the quick brown fox", normalize=-1).astype(np.float64)
    assert abs(np.linalg.norm(raw) - 1) > 0.01
    cases = {
        0: raw / np.abs(raw).max() * 32760,
        1: raw / np.abs(raw).sum(),
        2: raw / np.linalg.norm(raw),
        3: raw / (np.abs(raw) ** 3).sum() ** (1 / 3),
        6: raw / (np.abs(raw) ** 6).sum() ** (1 / 6),
    }
    for p, want in cases.items():
        got = bert.embed("the quick brown fox", normalize=p)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_create_embedding_is_openai_shaped(bert: rllm.Model) -> None:
    out = bert.create_embedding(["the cat", "hello world"], model="tiny")
    assert out["object"] == "list" and out["model"] == "tiny"
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 64 for d in out["data"])
    n = sum(len(bert.tokenize(t, special=True)) for t in ["the cat", "hello world"])
    assert out["usage"] == {"prompt_tokens": n, "total_tokens": n}
    np.testing.assert_allclose(out["data"][1]["embedding"], bert.embed("hello world"), atol=1e-6)
    packed = bert.create_embedding("the cat", encoding_format="base64")["data"][0]["embedding"]
    floats = np.frombuffer(base64.b64decode(packed), dtype="<f4")
    np.testing.assert_array_equal(floats, bert.embed("the cat"))
    # token ids are an input too
    ids = bert.tokenize("the cat", special=True)
    np.testing.assert_array_equal(bert.embed(ids), bert.embed("the cat"))
    assert bert.create_embedding(ids)["usage"]["prompt_tokens"] == len(ids)


def test_pooling_none_in_create_embedding_gives_rows(bert: rllm.Model, encoders: dict) -> None:
    path = encoders["bert"].parent / "bert_nopool.gguf"
    write_encoder(path, pooling=None)
    model = rllm.Model(path, n_threads=2)
    assert model.pooling == "none"
    out = model.create_embedding("the cat")
    rows = out["data"][0]["embedding"]
    assert len(rows) == 4 and all(len(r) == 64 for r in rows)


@pytest.mark.parametrize(
    ("input", "kwargs", "error", "match"),
    [
        (42, {}, TypeError, "input must be"),
        ([1.5], {}, TypeError, r"input\[0\] must be"),
        (["ok", None], {}, TypeError, r"input\[1\] must be"),
        ([[]], {}, ValueError, "input 0 is empty"),
        ([[5, 1 << 20]], {}, ValueError, "out of range"),
        ([[5, -1]], {}, ValueError, "out of range"),
        ("the cat", {"pooling": "max"}, ValueError, "unknown pooling 'max'"),
        ("the cat", {"normalize": -2}, ValueError, "normalize must be"),
        ("the cat", {"normalize": "2"}, TypeError, "normalize must be an int"),
        ("the " * 300, {}, rllm.ContextFullError, "256"),
    ],
)
def test_bad_input_raises_typed_errors(
    bert: rllm.Model, input: object, kwargs: dict, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        bert.embed(input, **kwargs)  # type: ignore[arg-type]


def test_create_embedding_rejects_unknown_encoding(bert: rllm.Model) -> None:
    with pytest.raises(ValueError, match="encoding_format"):
        bert.create_embedding("x", encoding_format="int8")


def test_encoder_cannot_generate(bert: rllm.Model) -> None:
    with pytest.raises(ValueError, match="embedding model with no output head"):
        bert.generate("the cat", max_tokens=2)
    with pytest.raises(ValueError, match="bert.gguf"):
        _rllm.Context(bert._model)
    with pytest.raises(ValueError, match="embedding model"):
        _rllm.Scheduler(bert._model, 1, n_ctx=64)


def test_learned_positions_bound_the_context(encoders: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="exceeds the 512 positions"):
        _rllm.Embedder(_rllm.Model(encoders["bert"]), n_ctx=1024)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"omit": ("tokenizer.ggml.token_type_count",)}, "token_type_count"),
        ({"token_type_count": 0}, "token_type_count"),
        ({"omit": ("position_embd.weight",)}, "position_embd.weight"),
        ({"omit": ("blk.1.layer_output_norm.bias",)}, "blk.1.layer_output_norm.bias"),
        ({"omit": ("bert.attention.layer_norm_epsilon",)}, "layer_norm_rms_epsilon"),
        ({"arch": "nomic-bert", "omit": ("blk.0.ffn_gate.weight",)}, "blk.0.ffn_gate.weight"),
    ],
)
def test_broken_encoder_files_name_the_problem(tmp_path: Path, options: dict, match: str) -> None:
    path = tmp_path / "broken.gguf"
    write_encoder(path, **options)
    with pytest.raises(rllm.GGUFError, match=match) as info:
        rllm.Model(path)
    assert "broken.gguf" in str(info.value)


def test_bad_pooling_type_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "pool7.gguf"
    write_encoder(path, pooling=7)
    with pytest.raises(rllm.GGUFError, match=r"pool7.gguf.*bert\.pooling_type.*7 is not a pooling"):
        rllm.Model(path)


def test_broken_wordpiece_vocabulary_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notokens.gguf"
    write_encoder(path, omit=("tokenizer.ggml.tokens",))
    with pytest.raises(rllm.GGUFError, match="notokens.gguf.*tokenizer.ggml.tokens"):
        rllm.Model(path)
