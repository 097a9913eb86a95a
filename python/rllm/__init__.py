"""rllm: run GGUF language models on the CPU from Python, with a Rust engine.

>>> import rllm
>>> model = rllm.Model("smollm2-135m")            # doctest: +SKIP
>>> print(model.generate("Once upon a time", max_tokens=32))  # doctest: +SKIP

Models: a ``.gguf`` path, a short name, or ``rllm.Model.from_pretrained(repo_id, filename)``
for a Hugging Face Hub repository. Logging goes to the ``rllm`` logger, quiet unless
configured (``rllm.Model(..., verbose=True)`` shows the load details).
"""

from __future__ import annotations

import logging

from ._rllm import Context, GGUFFile, Grammar, Sampler, TokenStream
from ._rllm import __version__ as __version__
from .batch import BatchGenerator
from .chat import ChatTemplate
from .convert import ConvertError, convert
from .errors import (
    ChatTemplateError,
    ContextFullError,
    GGUFError,
    ModelNotFoundError,
    RllmError,
    UnsupportedArchitectureError,
)
from .model import Model, Timings
from .perplexity import KLDivergenceResult, PerplexityResult, kl_divergence, perplexity
from .quantize import QUANTIZABLE_TYPES, dequantize, quantize, quantize_model
from .tokenizer import Detokenizer, Tokenizer, TokenizerError

# A library's loggers stay quiet until the application configures logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "BatchGenerator",
    "ChatTemplate",
    "ChatTemplateError",
    "Context",
    "ContextFullError",
    "ConvertError",
    "Detokenizer",
    "GGUFError",
    "GGUFFile",
    "Grammar",
    "KLDivergenceResult",
    "Model",
    "ModelNotFoundError",
    "PerplexityResult",
    "QUANTIZABLE_TYPES",
    "RllmError",
    "Sampler",
    "Timings",
    "TokenStream",
    "Tokenizer",
    "TokenizerError",
    "UnsupportedArchitectureError",
    "__version__",
    "convert",
    "dequantize",
    "kl_divergence",
    "perplexity",
    "quantize",
    "quantize_model",
]
