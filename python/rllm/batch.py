"""Continuous batching over the Rust ``BatchEngine``: a :class:`Scheduler` that admits requests
into sequence slots, samples one token per running sequence per step and hands text pieces
back, and :class:`BatchGenerator`, offline batched generation on that scheduler.

Each step of the scheduler:

1. drops cancelled sequences (their slot is free for the next step);
2. admits queued requests into free slots, choosing the slot whose cached tokens share the
   longest prefix with the prompt, so that a follow-up chat turn only evaluates what is new;
3. builds one batch: the last sampled token of every decoding sequence, then pieces of the
   prompts still being evaluated, up to ``n_batch`` tokens in all;
4. runs ``BatchEngine.step`` once (one forward pass, the GIL released);
5. samples one token for each sequence whose logits came back, detokenizes it, checks
   end-of-generation ids, stop strings and limits, and hands the request a :class:`Chunk`.

The Rust forward pass is exact per sequence, so greedy output does not depend on what else is
in the batch. ``Scheduler.start`` runs the steps on a background thread (the server);
``BatchGenerator`` runs them on the caller's thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _rllm
from .errors import ContextFullError, RllmError
from .model import Model, _find_stop, _partial_stop
from .tokenizer import Detokenizer

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
    the ``k`` most likely alternatives."""

    max_tokens: int | None = 128
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: Sequence[str] = ()
    logit_bias: Mapping[int, float] | None = None
    ignore_eos: bool = False
    logprobs: int | None = None

    def check(self, n_vocab: int) -> None:
        """Raise ValueError naming the first bad field."""
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.repeat_last_n < 0:
            raise ValueError(f"repeat_last_n must be >= 0, got {self.repeat_last_n}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop must be a list of non-empty strings")
        for tok, bias in (self.logit_bias or {}).items():
            if not 0 <= tok < n_vocab:
                raise ValueError(f"logit_bias: token id {tok} out of range [0, {n_vocab})")
            if math.isnan(bias):
                raise ValueError(f"logit_bias: the bias of token {tok} is NaN")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.logprobs}")
        self.sampler()  # the Rust sampler checks the rest

    def sampler(self) -> _rllm.Sampler:
        return _rllm.Sampler(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
        )

    @property
    def penalized(self) -> bool:
        """Whether the penalties change anything (else no history is passed to the sampler)."""
        on = self.repeat_penalty != 1.0 or self.presence_penalty or self.frequency_penalty
        return bool(on) and self.repeat_last_n > 0


@dataclass
class TokenLogprob:
    """A chosen token, its log-probability, and the most likely tokens at its position."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Chunk:
    """What one step produced for a request: text (possibly empty while bytes of a character
    or a possible stop string are held back), the completion token sampled (none for an
    end-of-generation token), its log-probability when asked for, and on the last chunk the
    finish reason: ``"stop"`` (end-of-generation token or stop string), ``"length"``
    (max_tokens or a full context), ``"cancelled"`` or ``"error"`` (then ``error`` says what
    went wrong)."""

    text: str = ""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None


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
        self.cancelled = False
        self.finish_reason: str | None = None
        self.n_cached = 0  # prompt tokens found in the slot's cache
        self.n_generated = 0  # completion tokens; an ending end-of-generation token not counted
        self.t_submit = time.perf_counter()
        self.t_first: float | None = None  # first token sampled
        self.t_end: float | None = None

    def cancel(self) -> None:
        """Stop generating; safe from any thread. The slot is freed at the next step."""
        self.cancelled = True


class _Seq:
    """A request running in a slot."""

    def __init__(self, req: Request, slot: int, todo: list[int], scheduler: Scheduler) -> None:
        p = req.params
        self.req = req
        self.slot = slot
        self.todo = todo  # prompt tokens still to evaluate
        self.next: int | None = None  # sampled token to evaluate in the next step
        self.history = list(req.prompt)  # prompt and generated tokens, for the penalties
        self.sampler = p.sampler()
        self.detok = Detokenizer(scheduler.tokenizer)
        self.held = ""  # text that may be the start of a stop string
        self.stops = list(p.stop)
        limit = scheduler.n_ctx - len(req.prompt)
        self.limit = min(p.max_tokens, limit) if p.max_tokens is not None else limit
        self.bias: tuple[np.ndarray, np.ndarray] | None = None
        bias = dict(p.logit_bias or {})
        if p.ignore_eos:
            bias.update(dict.fromkeys(scheduler.tokenizer.eog_ids, -math.inf))
        if bias:
            ids = np.fromiter(bias, dtype=np.int64, count=len(bias))
            values = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
            self.bias = (ids, values)


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
        self.tokenizer = model.tokenizer
        rope = {  # the model's RoPE overrides, passed only when set
            k: v
            for k, v in (
                ("rope_freq_base", model.rope_freq_base),
                ("rope_freq_scale", model.rope_freq_scale),
            )
            if v is not None
        }
        self.engine = _rllm.BatchEngine(
            model._model,
            n_slots,
            n_ctx=n_ctx or model.n_ctx,
            n_threads=n_threads,
            n_batch=n_batch,
            **rope,
        )
        self.n_slots = n_slots
        self.n_ctx = self.engine.n_ctx
        # Every decoding sequence needs one token of the batch.
        self.n_batch = max(self.engine.n_batch, n_slots)
        self.max_queue = max_queue
        self.on_finish: Callable[[Request], None] | None = None
        self._slots: list[_Seq | None] = [None] * n_slots
        self._cached: list[list[int]] = [[] for _ in range(n_slots)]  # mirror of the slots' caches
        self._last_used = [0.0] * n_slots
        self._queue: deque[Request] = deque()
        self._cond = threading.Condition()
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
        req.params.check(self.model.n_vocab)
        self.check(len(req.prompt), req.params.max_tokens)
        with self._cond:
            if self._closing:
                raise RllmError("the scheduler is closed")
            # queued requests that a free slot will take at the next step are not waiting
            waiting = len(self._queue) - self._slots.count(None)
            if self.max_queue is not None and waiting >= self.max_queue:
                raise QueueFullError(
                    f"all {self.n_slots} slots are busy and {waiting} requests are waiting; "
                    "try again later"
                )
            req.t_submit = time.perf_counter()
            self._queue.append(req)
            self._cond.notify()

    def cancel(self, req: Request) -> None:
        """Cancel ``req`` whether it waits or runs; its slot is free at the next step."""
        req.cancel()
        with self._cond:
            try:
                self._queue.remove(req)
            except ValueError:
                pass  # running (or done): the loop frees it
            else:
                self._finish_queued(req)
            self._cond.notify()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a slot."""
        return len(self._queue)

    @property
    def slots_busy(self) -> int:
        return sum(s is not None for s in self._slots)

    @property
    def idle(self) -> bool:
        return not self._queue and self.slots_busy == 0

    # --- the loop --------------------------------------------------------------------------

    def start(self) -> None:
        """Run the steps on a background thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rllm-scheduler", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Cancel everything and stop the background thread."""
        with self._cond:
            self._closing = True
            queued, self._queue = list(self._queue), deque()
            self._cond.notify()
        for req in queued:
            req.cancel()
            self._finish_queued(req)
        for seq in self._slots:
            if seq is not None:
                seq.req.cancel()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._drop_cancelled()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and self.idle:
                    self._cond.wait()
                if self._closing:
                    return
            try:
                self.step()
            except Exception as e:  # a bug: end what runs rather than stop serving
                for seq in self._slots:
                    if seq is not None:
                        self._end(seq, Chunk(finish_reason="error", error=repr(e)))

    def step(self) -> bool:
        """One round: admit, one forward pass, one token per running sequence. Returns False
        when there was nothing to do."""
        self._drop_cancelled()
        self._admit()
        work: list[tuple[int, list[int], int, int]] = []
        budget = self.n_batch
        for seq in self._slots:
            if seq is not None and seq.next is not None:
                work.append((seq.slot, [seq.next], 0, 1))
                budget -= 1
        for seq in self._slots:
            if seq is None or seq.next is not None or budget <= 0:
                continue
            piece = seq.todo[:budget]
            last = len(piece) == len(seq.todo)
            work.append(
                (seq.slot, piece, len(piece) - 1, len(piece)) if last else (seq.slot, piece, 0, 0)
            )
            budget -= len(piece)
        if not work:
            return False
        try:
            logits = self.engine.step(work)
        except Exception as e:  # the engine checks everything before evaluating anything
            for slot, *_ in work:
                seq = self._slots[slot]
                if seq is not None:
                    self._end(seq, Chunk(finish_reason="error", error=str(e)))
            return True
        for (slot, tokens, start, end), rows in zip(work, logits):
            self._cached[slot].extend(tokens)
            seq = self._slots[slot]
            assert seq is not None
            if seq.next is None:
                del seq.todo[: len(tokens)]
            else:
                seq.next = None
            if end > start and not seq.req.cancelled:
                self._sample(seq, rows[-1])
        return True

    def _drop_cancelled(self) -> None:
        for seq in self._slots:
            if seq is not None and seq.req.cancelled:
                self._end(seq, Chunk(finish_reason="cancelled"))

    def _admit(self) -> None:
        with self._cond:
            while self._queue and None in self._slots:
                req = self._queue.popleft()
                slot, n = self._pick_slot(req.prompt)
                self._cached[slot] = self._cached[slot][:n]
                self.engine.truncate(slot, n)
                req.n_cached = n
                self._slots[slot] = _Seq(req, slot, req.prompt[n:], self)

    def _pick_slot(self, prompt: list[int]) -> tuple[int, int]:
        """The free slot whose cache shares the longest prefix with ``prompt`` (the least
        recently used on a tie), and how many tokens to keep: at least one prompt token is
        evaluated again so that there are fresh logits."""
        best: tuple[int, float, int] | None = None  # (kept, -last used, slot)
        for slot, seq in enumerate(self._slots):
            if seq is not None:
                continue
            kept = min(_common_prefix(self._cached[slot], prompt), len(prompt) - 1)
            key = (kept, -self._last_used[slot], slot)
            if best is None or key[:2] > best[:2]:
                best = key
        assert best is not None
        return best[2], best[0]

    def _sample(self, seq: _Seq, row: np.ndarray) -> None:
        req, p = seq.req, seq.req.params
        if seq.bias is not None:
            row = row.copy()
            np.add.at(row, seq.bias[0], seq.bias[1])
        history = seq.history[-p.repeat_last_n :] if p.penalized else []
        tok = seq.sampler.sample(row, history)
        if req.t_first is None:
            req.t_first = time.perf_counter()
        chunk = Chunk()
        if self.tokenizer.is_eog(tok):
            seq.held += seq.detok.flush()
            cut = _find_stop(seq.held, seq.stops)
            chunk.text = seq.held[:cut]
            chunk.finish_reason = "stop"
            self._end(seq, chunk)
            return
        req.n_generated += 1
        chunk.tokens.append(tok)
        if p.logprobs is not None:
            chunk.logprobs.append(_logprob(row, tok, p.logprobs))
        seq.history.append(tok)
        seq.held += seq.detok.push(tok)
        cut = _find_stop(seq.held, seq.stops)
        if cut is None and req.n_generated >= seq.limit:
            seq.held += seq.detok.flush()
            cut = _find_stop(seq.held, seq.stops)
            chunk.text = seq.held[:cut]
            chunk.finish_reason = "stop" if cut is not None else "length"
            self._end(seq, chunk)
            return
        if cut is not None:
            chunk.text = seq.held[:cut]
            chunk.finish_reason = "stop"
            self._end(seq, chunk)
            return
        safe = len(seq.held) - _partial_stop(seq.held, seq.stops)
        chunk.text, seq.held = seq.held[:safe], seq.held[safe:]
        seq.next = tok
        self._emit(req, chunk)

    def _emit(self, req: Request, chunk: Chunk) -> None:
        try:
            req.sink(chunk)
        except Exception:  # nobody listens any more (e.g. the event loop is gone)
            req.cancel()

    def _end(self, seq: _Seq, chunk: Chunk) -> None:
        req = seq.req
        req.finish_reason = chunk.finish_reason
        req.t_end = time.perf_counter()
        self._slots[seq.slot] = None
        self._last_used[seq.slot] = req.t_end
        if chunk.finish_reason == "error":
            self._cached[seq.slot] = []
            self.engine.truncate(seq.slot, 0)
        self._emit(req, chunk)
        if self.on_finish is not None:
            self.on_finish(req)

    def _finish_queued(self, req: Request) -> None:
        req.finish_reason = "cancelled"
        req.t_end = time.perf_counter()
        self._emit(req, Chunk(finish_reason="cancelled"))
        if self.on_finish is not None:
            self.on_finish(req)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _logprob(row: np.ndarray, tok: int, k: int) -> TokenLogprob:
    """Log-softmax of ``row`` at ``tok``, and the ``k`` largest entries (most likely first)."""
    top = float(row.max())
    lse = top + math.log(float(np.exp(row - top, dtype=np.float64).sum()))
    entry = TokenLogprob(tok, float(row[tok]) - lse)
    if k:
        idx = np.argpartition(-row, k - 1)[:k]
        idx = idx[np.argsort(-row[idx], kind="stable")]
        entry.top = [(int(i), float(row[i]) - lse) for i in idx]
    return entry


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
            req.params.check(self.model.n_vocab)
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
                if req.finish_reason is None:
                    sched.cancel(req)
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
