"""The exceptions rllm raises. The Rust extension raises these same classes."""

from __future__ import annotations

__all__ = [
    "RllmError",
    "GGUFError",
    "UnsupportedArchitectureError",
    "ContextFullError",
    "ChatTemplateError",
    "ModelNotFoundError",
]


class RllmError(Exception):
    """Base class of rllm's own errors."""


class GGUFError(RllmError, ValueError):
    """A file is not a valid GGUF model; the message names the file and what is wrong."""


class UnsupportedArchitectureError(GGUFError):
    """The file is valid GGUF, but its architecture is not one rllm can run."""


class ContextFullError(RllmError, ValueError):
    """More tokens than the context holds (e.g. a prompt longer than ``n_ctx``)."""


class ChatTemplateError(RllmError, ValueError):
    """A chat template is invalid, or refuses the messages (its ``raise_exception``)."""


class ModelNotFoundError(RllmError, FileNotFoundError):
    """No model file answers a name: a Hub repository holds no file matching the glob or
    quantization asked for (the message lists the GGUF files it has), a file is missing from
    the local cache in offline mode, or a known model could be fetched from no source."""
