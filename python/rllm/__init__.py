"""rllm: run GGUF language models on the CPU from Python, with a Rust engine.

>>> import rllm
>>> model = rllm.Model("smollm2-135m")            # doctest: +SKIP
>>> print(model.generate("Once upon a time", max_tokens=32))  # doctest: +SKIP
"""

from __future__ import annotations

from ._rllm import Context, GGUFFile, Sampler, TokenStream
from ._rllm import __version__ as __version__
from .chat import ChatTemplate
from .errors import (
    ChatTemplateError,
    ContextFullError,
    GGUFError,
    RllmError,
    UnsupportedArchitectureError,
)
from .model import Model, Timings
from .tokenizer import Detokenizer, Tokenizer, TokenizerError

__all__ = [
    "ChatTemplate",
    "ChatTemplateError",
    "Context",
    "ContextFullError",
    "Detokenizer",
    "GGUFError",
    "GGUFFile",
    "Model",
    "RllmError",
    "Sampler",
    "Timings",
    "TokenStream",
    "Tokenizer",
    "TokenizerError",
    "UnsupportedArchitectureError",
    "__version__",
]
