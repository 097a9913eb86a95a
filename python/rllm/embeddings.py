"""Embedding inputs and responses: the shapes of OpenAI's ``/v1/embeddings``, llama-server's
``/v1/rerank`` and llama-cpp-python's ``create_embedding``. Pooling and normalization run in
Rust (``rllm._rllm.Embedder``); this module only tokenizes and arranges.

Inputs are tokenized as llama.cpp does for embeddings: special tokens added (BOS, or
``[CLS]``/``[SEP]``) and special-token text parsed.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from .tokenizer import Tokenizer

__all__ = [
    "POOLINGS",
    "embedding_data",
    "rerank_ids",
    "tokenize_inputs",
]

# llama.cpp's pooling types, by number (`<arch>.pooling_type`).
POOLINGS = ("none", "mean", "cls", "last", "rank")


def _is_ids(x: object) -> bool:
    return isinstance(x, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)


def tokenize_inputs(tokenizer: Tokenizer, input: object) -> tuple[list[list[int]], bool]:
    """Token ids of each input, and whether ``input`` was a single one.

    ``input`` is a string, a list of token ids, or a list of strings and token-id lists
    (OpenAI's shapes). Anything else raises ``TypeError`` naming ``input``.
    """
    if isinstance(input, str) or (_is_ids(input) and input):
        items: Sequence[object] = [input]
        single = True
    elif isinstance(input, (list, tuple)):
        items, single = input, False
    else:
        raise TypeError(
            f"input must be a string, a list of token ids, or a list of those, "
            f"not {type(input).__name__}"
        )
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(tokenizer.encode(item, add_special=True, parse_special=True))
        elif _is_ids(item):
            out.append(list(item))  # type: ignore[call-overload]
        else:
            raise TypeError(
                f"input[{i}] must be a string or a list of token ids, not {type(item).__name__}"
            )
    return out, single


def rerank_ids(tokenizer: Tokenizer, query: str, document: str) -> list[int]:
    """A reranker's input for one (query, document) pair, as llama-server builds it:
    ``BOS query EOS SEP document EOS`` with each special token only where the vocabulary
    adds it (``[CLS] query [SEP] document`` for bert)."""
    q = tokenizer.encode(query, add_special=False)
    d = tokenizer.encode(document, add_special=False)
    eos = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.sep_id
    ids: list[int] = []
    if tokenizer.add_bos and tokenizer.bos_id is not None:
        ids.append(tokenizer.bos_id)
    ids += q
    if tokenizer.add_eos and eos is not None:
        ids.append(eos)
    if tokenizer.add_sep and tokenizer.sep_id is not None:
        ids.append(tokenizer.sep_id)
    ids += d
    if tokenizer.add_eos and eos is not None:
        ids.append(eos)
    return ids


def embedding_data(
    vectors: np.ndarray, rows: Sequence[int], per_token: bool, encoding_format: str = "float"
) -> list[dict[str, Any]]:
    """OpenAI's ``data`` list: one ``{"object": "embedding", "index", "embedding"}`` per
    input. With ``per_token`` (pooling none) each embedding is a list of rows, one a token.
    ``encoding_format="base64"`` gives the float32 bytes, base64-encoded."""
    if encoding_format not in ("float", "base64"):
        raise ValueError(f"encoding_format must be 'float' or 'base64', not {encoding_format!r}")
    data = []
    start = 0
    for i, n in enumerate(rows):
        block = vectors[start : start + n]
        start += n
        embedding: Any
        if encoding_format == "base64":
            embedding = base64.b64encode(
                np.ascontiguousarray(block, dtype="<f4").tobytes()
            ).decode()
        elif per_token:
            embedding = block.tolist()
        else:
            embedding = block[0].tolist()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return data
