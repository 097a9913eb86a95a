"""Continuous batching: :class:`Scheduler` hands requests to the Rust scheduler
(``rllm._rllm.Scheduler``) and their chunks to whoever asked, and :class:`BatchGenerator`
runs offline batched generation on it.

The whole token loop runs in Rust, the interpreter released: admitting requests into
sequence slots (longest cached prefix first), packing prompt pieces beside decode rows into
one forward pass, sampling, logprobs, detokenizing and every stop condition. Each step hands
back one :class:`Chunk` per sequence that produced a token; this module only routes them.
``Scheduler.start`` runs the steps on a background thread (the server); ``BatchGenerator``
runs them on the caller's thread. The forward pass is exact per sequence, so greedy output
does not depend on what else is in the batch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import _rllm
from ._rllm import Chunk, TokenLogprob
from .errors import ContextFullError, RllmError
from .model import Model

__all__ = [
    "BatchGenerator",
    "Chunk",
    "Completion",
    "QueueFullError",
    "Request",
    "SamplingParams",
    "Scheduler",
    "TokenLogprob",
]

MAX_TOP_LOGPROBS = 20


class QueueFullError(RllmError):
    """Every slot is busy and the waiting queue is at its limit."""


@dataclass
class SamplingParams:
    """How one request is sampled and when it stops. ``max_tokens`` None generates until an
    end-of-generation token, a stop string or a full context. ``logit_bias`` maps token ids to
    values added to their logits; ``ignore_eos`` forbids end-of-generation tokens.
    ``logprobs`` None reports none; ``k >= 0`` reports each chosen token's log-probability and
    the ``k`` most likely alternatives. ``grammar`` constrains the completion to its language.
    The Rust scheduler checks every field on submit."""

    max_tokens: int | None = 128
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: Sequence[str] = ()
    logit_bias: Mapping[int, float] | None = None
    ignore_eos: bool = False
    logprobs: int | None = None
    grammar: _rllm.Grammar | None = None

    def check(self, scheduler: _rllm.Scheduler) -> None:
        """Raise ValueError naming the first bad field (a grammar was checked when made)."""
        self.sampler()
        args = self.stops()
        del args["grammar"]
        scheduler.check_params(**args)

    def sampler(self) -> _rllm.Sampler:
        return _rllm.Sampler(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            typical_p=self.typical_p,
            repeat_penalty=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
        )

    def stops(self) -> dict[str, Any]:
        """The keyword arguments of ``_rllm.Scheduler.submit`` and ``Context.generate``
        besides the sampler."""
        return {
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "logit_bias": dict(self.logit_bias) if self.logit_bias else None,
            "ignore_eos": self.ignore_eos,
            "logprobs": self.logprobs,
            "grammar": self.grammar,
        }


class Request:
    """One generation: prompt ids and sampling settings in, :class:`Chunk` s out through
    ``sink``, which is called on the scheduler's thread and must not block. The counters and
    times are filled in as the request runs."""

    def __init__(
        self,
        prompt: Sequence[int],
        params: SamplingParams,
        sink: Callable[[Chunk], None],
    ) -> None:
        self.prompt = [int(t) for t in prompt]
        self.params = params
        self.sink = sink
        self.id: int | None = None  # the Rust scheduler's, once submitted
        self.scheduler: Scheduler | None = None
        self.finish_reason: str | None = None
        self.n_cached = 0  # prompt tokens found in the slot's cache
        self.n_generated = 0  # completion tokens; an ending end-of-generation token not counted
        self.t_submit = time.perf_counter()
        self.t_first: float | None = None  # first token sampled
        self.t_end: float | None = None

    def cancel(self) -> None:
        """Stop generating; safe from any thread. The last chunk says "cancelled"."""
        if self.scheduler is not None and self.finish_reason is None:
            self.scheduler.cancel(self)


class Scheduler:
    """Continuous batching of requests over ``n_slots`` sequences of ``n_ctx`` tokens each.

    ``submit`` queues a request (at most ``max_queue`` wait; None = no limit); ``step`` does one
    round of work and returns whether there was any. Either call ``step`` in a loop yourself, or
    ``start`` a background thread that does (then ``close`` stops it). ``on_finish`` is called
    on the scheduler's thread with each request that ends, for statistics."""

    def __init__(
        self,
        model: Model,
        n_slots: int = 4,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int | None = None,
        max_queue: int | None = None,
    ) -> None:
        self.model = model
        rope = {  # the model's RoPE overrides, passed only when set
            k: v
            for k, v in (
                ("rope_freq_base", model.rope_freq_base),
                ("rope_freq_scale", model.rope_freq_scale),
            )
            if v is not None
        }
        self.engine = _rllm.Scheduler(
            model._model,
            n_slots,
            n_ctx=n_ctx or model.n_ctx,
            n_threads=n_threads,
            n_batch=n_batch,
            **rope,
        )
        self.n_slots = n_slots
        self.n_ctx = self.engine.n_ctx
        self.max_queue = max_queue
        self.on_finish: Callable[[Request], None] | None = None
        self._requests: dict[int, Request] = {}  # submitted and not yet finished, by id
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False

    # --- submitting ----------------------------------------------------------------------

    def check(self, n_prompt: int, max_tokens: int | None) -> None:
        """Raise ContextFullError unless a prompt of ``n_prompt`` tokens and ``max_tokens`` new
        ones fit in a slot."""
        if n_prompt >= self.n_ctx:
            raise ContextFullError(
                f"the prompt is {n_prompt} tokens long but a sequence holds {self.n_ctx} tokens "
                "(prompt and completion together)"
            )
        if max_tokens is not None and n_prompt + max_tokens > self.n_ctx:
            raise ContextFullError(
                f"this model's context holds {self.n_ctx} tokens per sequence, but "
                f"{n_prompt + max_tokens} were requested ({n_prompt} in the prompt, "
                f"{max_tokens} in the completion); shorten the prompt or lower max_tokens"
            )

    def submit(self, req: Request) -> None:
        """Queue ``req``. Raises ValueError for an empty prompt or bad sampling settings,
        ContextFullError when it cannot fit, QueueFullError when the queue is full."""
        if not req.prompt:
            raise ValueError("the prompt is empty (and the model adds no BOS token)")
        req.params.check(self.engine)
        self.check(len(req.prompt), req.params.max_tokens)
        with self._lock:
            if self._closing:
                raise RllmError("the scheduler is closed")
            # queued requests that a free slot will take at the next step are not waiting
            waiting = self.engine.n_queued - (self.n_slots - self.engine.n_running)
            if self.max_queue is not None and waiting >= self.max_queue:
                raise QueueFullError(
                    f"all {self.n_slots} slots are busy and {waiting} requests are waiting; "
                    "try again later"
                )
            req.t_submit = time.perf_counter()
            p = req.params
            req.id = self.engine.submit(req.prompt, p.sampler(), **p.stops())
            req.scheduler = self
            self._requests[req.id] = req

    def cancel(self, req: Request) -> None:
        """Cancel ``req`` whether it waits or runs; its last chunk says "cancelled"."""
        if req.id is not None:
            self.engine.cancel(req.id)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a slot."""
        return self.engine.n_queued

    @property
    def slots_busy(self) -> int:
        return self.engine.n_running

    @property
    def idle(self) -> bool:
        return not self._requests

    @property
    def running(self) -> bool:
        """Whether the background thread of :meth:`start` is alive."""
        return self._thread is not None and self._thread.is_alive()

    # --- the loop --------------------------------------------------------------------------

    def start(self) -> None:
        """Run the steps on a background thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rllm-scheduler", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Cancel everything and stop the background thread."""
        with self._lock:
            self._closing = True
            running = list(self._requests.values())
        for req in running:
            self.cancel(req)
        if self._thread is not None:
            self.engine.wake()
            self._thread.join()
            self._thread = None
        while not self.idle:
            self.step()

    def _run(self) -> None:
        while not self._closing:
            try:
                self.step(wait=0.1)
            except Exception as e:  # a bug: end what runs rather than stop serving
                with self._lock:
                    running, self._requests = list(self._requests.values()), {}
                for req in running:
                    req.finish_reason = "error"
                    req.sink(Chunk(finish_reason="error", error=repr(e)))

    def step(self, wait: float = 0.0) -> bool:
        """One round: admit, one forward pass, one token per running sequence. With nothing to
        do, waits up to ``wait`` seconds for a request first. Returns False when there was
        nothing to do."""
        admitted, chunks = self.engine.step(wait)
        with self._lock:  # a request is in the table once its submit has returned
            for rid, n_cached in admitted:
                self._requests[rid].n_cached = n_cached
            routed = [(self._requests[rid], chunk) for rid, chunk in chunks]
            for rid, chunk in chunks:
                if chunk.finish_reason is not None:
                    del self._requests[rid]
        now = time.perf_counter()
        for req, chunk in routed:
            req.n_generated += len(chunk.tokens)
            if req.t_first is None and chunk.finish_reason not in ("cancelled", "error"):
                req.t_first = now
            if chunk.finish_reason is not None:
                req.finish_reason = chunk.finish_reason
                req.t_end = now
            try:
                req.sink(chunk)
            except Exception:  # nobody listens any more (e.g. the event loop is gone)
                self.cancel(req)
            if chunk.finish_reason is not None and self.on_finish is not None:
                self.on_finish(req)
        return bool(admitted or chunks)


@dataclass
class Completion:
    """The result of one prompt of :meth:`BatchGenerator.complete`."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


class BatchGenerator:
    """Offline batched generation: many prompts decoded ``n_parallel`` at a time in shared
    forward passes, each new prompt joining as soon as a sequence ends.

    >>> gen = rllm.BatchGenerator("smollm2-135m", n_parallel=4)       # doctest: +SKIP
    >>> gen.generate(["The capital of France is", "1, 2, 3,"], max_tokens=8, temperature=0)
    ... # doctest: +SKIP
    [' Paris.\\n\\nThe capital of', ' 4, 5, 6, 7']

    ``model`` is an :class:`rllm.Model` or what ``Model()`` accepts; ``n_ctx`` is the context of
    each sequence (default: the model's). Sampling keyword arguments are those of
    :meth:`rllm.Model.generate`, plus ``logit_bias`` and ``ignore_eos``; with a ``seed``,
    prompt ``i`` is sampled with ``seed + i``. Greedy output is the same as
    ``Model.generate`` gives for each prompt alone.
    """

    def __init__(
        self,
        model: Model | str | Any,
        n_parallel: int = 4,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int | None = None,
    ) -> None:
        self.model = model if isinstance(model, Model) else Model(model, n_threads=n_threads)
        self.scheduler = Scheduler(
            self.model,
            n_slots=n_parallel,
            n_ctx=n_ctx or self.model.n_ctx,
            n_threads=n_threads or self.model.n_threads,
            n_batch=n_batch,
        )
        self.last_requests: list[Request] = []  # those of the latest call, with their counters

    def __repr__(self) -> str:
        s = self.scheduler
        return f"BatchGenerator({str(self.model.path)!r}, n_parallel={s.n_slots}, n_ctx={s.n_ctx})"

    def _params(self, i: int, kw: dict[str, Any]) -> SamplingParams:
        kw = dict(kw)
        stop = kw.pop("stop", None)
        kw["stop"] = [stop] if isinstance(stop, str) else list(stop or [])
        if kw.get("seed") is not None:
            kw["seed"] = kw["seed"] + i
        if kw.get("max_tokens") == -1:
            kw["max_tokens"] = None
        return SamplingParams(**kw)

    def stream(
        self, prompts: Sequence[str | Sequence[int]], **sampling: Any
    ) -> Iterator[tuple[int, Chunk]]:
        """``(prompt index, chunk)`` as the sequences run; each prompt's last chunk has its
        ``finish_reason``. Stopping the iteration early cancels what is left."""
        sched = self.scheduler
        out: deque[tuple[int, Chunk]] = deque()
        reqs = []
        for i, prompt in enumerate(prompts):
            ids = (
                self.model.tokenize(prompt, special=True)
                if isinstance(prompt, str)
                else [int(t) for t in prompt]
            )
            reqs.append(Request(ids, self._params(i, sampling), _appender(out, i)))
        for req in reqs:
            req.params.check(sched.engine)
            sched.check(len(req.prompt), req.params.max_tokens)
        try:
            for req in reqs:
                sched.submit(req)
            left = len(reqs)
            while left:
                if not sched.step() and not out:
                    raise RllmError("the scheduler stalled")  # cannot happen: a bug
                while out:
                    item = out.popleft()
                    if item[1].finish_reason is not None:
                        left -= 1
                    yield item
        finally:
            for req in reqs:
                req.cancel()
            while not sched.idle:
                sched.step()
            self.last_requests = reqs

    def complete(self, prompts: Sequence[str | Sequence[int]], **sampling: Any) -> list[Completion]:
        """One :class:`Completion` (text, finish reason, token counts) per prompt."""
        texts: list[list[str]] = [[] for _ in prompts]
        for i, chunk in self.stream(prompts, **sampling):
            texts[i].append(chunk.text)
        return [
            Completion(
                text="".join(t),
                finish_reason=r.finish_reason,
                prompt_tokens=len(r.prompt),
                completion_tokens=r.n_generated,
                cached_tokens=r.n_cached,
            )
            for t, r in zip(texts, self.last_requests)
        ]

    def generate(self, prompts: Sequence[str | Sequence[int]], **sampling: Any) -> list[str]:
        """The generated text of each prompt, in order."""
        return [c.text for c in self.complete(prompts, **sampling)]

    def chat(
        self, conversations: Sequence[Sequence[Mapping[str, Any]]], **sampling: Any
    ) -> list[str]:
        """The assistant's reply to each conversation (a list of messages)."""
        return self.generate([self.model.chat_prompt(c) for c in conversations], **sampling)


def _appender(out: deque[tuple[int, Chunk]], i: int) -> Callable[[Chunk], None]:
    return lambda chunk: out.append((i, chunk))
