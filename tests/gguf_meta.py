"""Read GGUF metadata into the ``{key: python value}`` dict that ``Tokenizer.from_metadata``
takes, through rllm's own GGUF reader (arrays become lists, strings str)."""

from __future__ import annotations

import os
from typing import Any

from rllm import _rllm


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """All key/value pairs of a GGUF file."""
    return _rllm.GGUFFile(path).metadata()
