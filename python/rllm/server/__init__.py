"""``rllm serve``: an OpenAI-compatible HTTP server with continuous batching.

``app`` (Starlette routes), ``schemas`` (OpenAI request and response shapes), ``engine`` (the
bridge to the batch scheduler) and ``metrics`` (Prometheus text). Needs the ``server`` extra
(``pip install 'rllm[server]'``); importing this package alone does not.
"""

from __future__ import annotations
