"""The bridge between the HTTP handlers (asyncio) and the batch scheduler (its own thread): the
server's settings, the model loaded in the background, and async generations whose chunks
arrive on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..batch import Chunk, Request, SamplingParams, Scheduler
from ..model import Model
from .metrics import Metrics

__all__ = ["Generation", "ServerConfig", "ServerEngine"]


@dataclass
class ServerConfig:
    """What ``rllm serve`` was asked for. ``n_ctx`` is the context of all slots together
    (None: the model's default, 0: its training context); each of the ``n_parallel`` slots
    gets ``n_ctx // n_parallel`` tokens, as llama-server splits it."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8080
    n_ctx: int | None = None
    n_parallel: int = 1
    n_threads: int | None = None
    # Model(use_mmap=): None copies the weights where huge pages make decode faster
    use_mmap: bool | None = None
    n_batch: int | None = None
    api_keys: tuple[str, ...] = ()
    alias: str | None = None
    chat_template: str | None = None
    max_body_bytes: int = 1 << 20
    max_queue: int = 64
    # /v1/embeddings and /v1/rerank (llama-server's --embeddings), with this pooling (None:
    # the model's)
    embeddings: bool = False
    pooling: str | None = None


class Generation:
    """One request running on the scheduler, read as an async iterator of chunks on the event
    loop that created it. ``cancel`` (or leaving the iteration early) frees its slot."""

    def __init__(self, scheduler: Scheduler, prompt: Sequence[int], params: SamplingParams):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Chunk] = asyncio.Queue()
        self._scheduler = scheduler
        self.request = Request(prompt, params, self._sink)

    def _sink(self, chunk: Chunk) -> None:  # the scheduler's thread
        self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)

    def cancel(self) -> None:
        if self.request.finish_reason is None:
            self._scheduler.cancel(self.request)

    async def chunks(self) -> AsyncIterator[Chunk]:
        try:
            while True:
                chunk = await self._queue.get()
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            self.cancel()


class ServerEngine:
    """The model and its scheduler. :meth:`load` runs on a background thread while the server
    already answers (``ready`` tells when it is done; ``error`` holds why it failed)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.model: Model | None = None
        # None for a model that only embeds (bert)
        self.scheduler: Scheduler | None = None
        self.pooling = "none"
        self.model_id = config.alias or Path(config.model).name
        self.created = int(time.time())
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.metrics = Metrics(self._gauges)

    def _gauges(self) -> tuple[int, int, int]:
        s = self.scheduler
        if s is None:
            return 0, 0, self.config.n_parallel
        return s.queue_depth, s.slots_busy, s.n_slots

    def load(self) -> None:
        """Load the model and start the scheduler; errors are kept in ``error``."""
        cfg = self.config
        try:
            model = Model(cfg.model, n_threads=cfg.n_threads, use_mmap=cfg.use_mmap)
            if cfg.chat_template:
                model.chat_template = cfg.chat_template
            total = cfg.n_ctx if cfg.n_ctx else model.n_ctx
            if cfg.n_ctx == 0:
                total = model._model.n_ctx_train
            per_slot = total // cfg.n_parallel
            if per_slot < 16:
                raise ValueError(
                    f"a context of {total} tokens split over {cfg.n_parallel} slots leaves "
                    f"{per_slot} tokens each; raise -c or lower --parallel"
                )
            model.n_ctx = per_slot
            if cfg.embeddings:
                # Embeddings take whole inputs: their own runner with the whole context.
                model.n_ctx = total
                self.pooling = cfg.pooling or model.pooling
                model.embedder.dim(self.pooling)  # an unknown pooling fails here
                model.n_ctx = per_slot
                if not model.can_generate:
                    self.model = model
                    return
            scheduler = Scheduler(
                model,
                n_slots=cfg.n_parallel,
                n_ctx=per_slot,
                n_threads=cfg.n_threads,
                n_batch=cfg.n_batch,
                max_queue=cfg.max_queue,
            )
            scheduler.on_finish = self._finished
            scheduler.start()
            self.model, self.scheduler = model, scheduler
        except BaseException as e:  # reported by the caller; the server stops
            self.error = e
        finally:
            self.ready.set()

    @property
    def loaded(self) -> bool:
        return self.model is not None

    @property
    def running(self) -> bool:
        """Loaded, and the scheduler's thread still steps (``/health`` and Ray Serve's
        ``check_health`` both ask this)."""
        return self.scheduler is not None and self.scheduler.running

    def _finished(self, req: Request) -> None:
        end = req.t_end or time.perf_counter()
        self.metrics.generation(
            prompt=len(req.prompt),
            cached=req.n_cached,
            generated=req.n_generated,
            ttft=None if req.t_first is None else req.t_first - req.t_submit,
            latency=end - req.t_submit,
            cancelled=req.finish_reason == "cancelled",
        )

    def embed(
        self, inputs: list[list[int]], pooling: str, normalize: int
    ) -> tuple[np.ndarray, list[int], int]:
        """Embeddings of token-id inputs (blocking; the model's embedder releases the GIL)."""
        assert self.model is not None
        return self.model.embedder.embed(inputs, pooling, normalize)

    def start(self, prompt: Sequence[int], params: SamplingParams) -> Generation:
        """Queue a generation (raises ValueError, ContextFullError or QueueFullError)."""
        assert self.scheduler is not None
        gen = Generation(self.scheduler, prompt, params)
        self.scheduler.submit(gen.request)
        return gen

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
