"""The friendly ``rllm.Model``: a GGUF model with its tokenizer, and text generation."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _rllm
from .chat import ChatTemplate
from .embeddings import embedding_data, tokenize_inputs
from .errors import ContextFullError
from .grammar import Grammar, constraint, response_format_grammar
from .hub import download, resolve_model
from .loadlog import log_context, log_model
from .tokenizer import Tokenizer, TokenizerError
from .tools import ToolPlan, plan_tools

__all__ = ["Model", "Timings"]


@dataclass
class Timings:
    """Where the time of the last generation went, as llama.cpp reports it."""

    load_ms: float = 0.0
    prompt_ms: float = 0.0
    prompt_tokens: int = 0
    eval_ms: float = 0.0
    eval_tokens: int = 0
    finish_reason: str | None = None
    completion_tokens: int = 0  # tokens of the returned text: an ending EOG token not counted
    _marks: list[float] = field(default_factory=list, repr=False)

    def report(self) -> str:
        def rate(ms: float, n: int) -> str:
            per = ms / n if n else 0.0
            tps = 1000.0 * n / ms if ms > 0 else 0.0
            return f"({per:8.2f} ms per token, {tps:8.2f} tokens per second)"

        total = self.prompt_ms + self.eval_ms
        return "\n".join(
            [
                f"rllm_print_timings:        load time = {self.load_ms:10.2f} ms",
                f"rllm_print_timings: prompt eval time = {self.prompt_ms:10.2f} ms / "
                f"{self.prompt_tokens:5d} tokens {rate(self.prompt_ms, self.prompt_tokens)}",
                f"rllm_print_timings:        eval time = {self.eval_ms:10.2f} ms / "
                f"{self.eval_tokens:5d} runs   {rate(self.eval_ms, self.eval_tokens)}",
                f"rllm_print_timings:       total time = {total:10.2f} ms / "
                f"{self.prompt_tokens + self.eval_tokens:5d} tokens",
            ]
        )


class Model:
    """A GGUF language model on the CPU, with its tokenizer and chat template.

    >>> import rllm
    >>> model = rllm.Model("smollm2-135m")   # a short name, or a .gguf path  # doctest: +SKIP
    >>> model.generate("The capital of France is", max_tokens=8, temperature=0)
    ... # doctest: +SKIP
    ' Paris.\\n\\nThe United States has'
    >>> for piece in model.generate("Once upon a time", max_tokens=16, stream=True):
    ...     print(piece, end="")                                        # doctest: +SKIP
    >>> reply = model.chat([{"role": "user", "content": "Name three colors."}])  # doctest: +SKIP

    From the Hugging Face Hub (downloaded once into its cache, split files included):

    >>> model = rllm.Model.from_pretrained(                       # doctest: +SKIP
    ...     "Qwen/Qwen2.5-0.5B-Instruct-GGUF", filename="*q4_k_m.gguf", n_ctx=2048)

    Arguments:

    - ``path``: a ``.gguf`` file (the first file of a split model loads all of them), or a
      known short name (``"smollm2-135m"``, ``"qwen2.5-coder-0.5b"``, ``"gemma3-270m"``),
      fetched once and cached.
    - ``n_ctx``: context length in tokens; default the model's, at most 4096.
    - ``n_threads``: threads for evaluation; default all cores.
    - ``rope_freq_base`` / ``rope_freq_scale``: override the model's RoPE settings.
    - ``use_mmap``: ``True`` reads the weights from a map of the file (no copy; pages shared
      with other processes that map it). ``False`` copies them into private memory backed by
      transparent huge pages, which decode streams faster (fewer TLB misses: 5-12% on a
      1B model). ``None`` (default) copies when the machine has huge pages and the file takes
      at most half the available memory, else maps. :attr:`mapped` says which was done.
    - ``verbose``: print the load details llama.cpp prints (metadata, tensor types, buffer
      sizes) to stderr. They always go to the ``rllm`` logger at INFO; see
      :mod:`rllm.loadlog`.

    Text in, text out: :meth:`generate`, :meth:`chat`, :meth:`create_chat_completion`
    (OpenAI-shaped, as llama-cpp-python's). Tokens: :meth:`tokenize`, :meth:`detokenize`.
    Logits: :meth:`context` gives a :class:`~rllm.Context` to ``eval`` token ids. After
    each generation, :attr:`timings` says where the time went.

    Raises :class:`~rllm.GGUFError` (a ``ValueError``) for a file that is not a valid GGUF
    model, :class:`~rllm.UnsupportedArchitectureError` for an architecture rllm cannot run,
    ``FileNotFoundError`` for a missing file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        n_ctx: int | None = None,
        n_threads: int | None = None,
        rope_freq_base: float | None = None,
        rope_freq_scale: float | None = None,
        verbose: bool = False,
        use_mmap: bool | None = None,
    ) -> None:
        start = time.perf_counter()
        for name, value in (("n_ctx", n_ctx), ("n_threads", n_threads)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.path = resolve_model(path)
        self._model = _rllm.Model(self.path, use_mmap)
        log_model(self._model, verbose)
        try:
            self.tokenizer = Tokenizer.from_metadata(self._model.metadata())
        except TokenizerError as e:
            raise TokenizerError(f"{self.path}: {e}") from None
        self.n_ctx = n_ctx or self._model.default_n_ctx
        self.n_threads = n_threads
        self.rope_freq_base = rope_freq_base
        self.rope_freq_scale = rope_freq_scale
        self.verbose = verbose
        self._ctx: _rllm.Context | None = None
        self._embedder: _rllm.Embedder | None = None
        self._chat_template: ChatTemplate | None = None
        self.timings = Timings(load_ms=1000 * (time.perf_counter() - start))

    @classmethod
    def from_pretrained(
        cls,
        repo_id: str,
        filename: str = "*Q4_K_M.gguf",
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        token: str | bool | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> Model:
        """Load a GGUF model from a Hugging Face Hub repository, as llama-cpp-python's
        ``Llama.from_pretrained`` does.

        ``filename`` is a glob over the repository's files (``"*Q4_K_M.gguf"``,
        ``"*q8_0.gguf"``, ``"sub/folder/model.gguf"``), matched case-sensitively and, if
        nothing matches so, case-insensitively; it must pick one model. A split model
        (``NAME-00001-of-00003.gguf``) matches through any of its files or through
        ``NAME.gguf``, and all its files are downloaded. Files go to huggingface_hub's cache
        (``cache_dir``, default ``HF_HUB_CACHE``, ``~/.cache/huggingface/hub``) with progress
        bars, once. ``revision`` is a branch, tag or commit; ``token`` a Hub access token
        (default: ``HF_TOKEN`` or the saved login).

        Offline (``HF_HUB_OFFLINE=1``, or ``local_files_only=True``), or when the Hub cannot
        be reached, the cached files are used. Other keyword arguments go to
        :class:`Model` (``n_ctx``, ``n_threads``, ``verbose``, ...).

        Raises :class:`~rllm.ModelNotFoundError` (a ``FileNotFoundError``) listing the
        repository's GGUF files when nothing matches, ``ValueError`` when the glob matches
        several models.

        >>> model = rllm.Model.from_pretrained(                        # doctest: +SKIP
        ...     "bartowski/Llama-3.2-1B-Instruct-GGUF", "*Q4_K_M.gguf", n_ctx=4096)
        """
        path = download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
        )
        return cls(path, **kwargs)

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, arch={self.arch!r}, n_ctx={self.n_ctx})"

    @property
    def arch(self) -> str:
        """The architecture, ``general.architecture`` (``"llama"``, ``"qwen2"``, ...)."""
        return self._model.arch

    @property
    def mapped(self) -> bool:
        """Whether the weights are read from a map of the file (``False``: a private copy)."""
        return self._model.mapped

    @property
    def can_generate(self) -> bool:
        """False for embedding-only models (bert, nomic-bert): they have no output head."""
        return self._model.can_generate

    @property
    def n_vocab(self) -> int:
        """Number of tokens in the vocabulary (the length of a logits row)."""
        return self._model.n_vocab

    def metadata(self) -> dict:
        """The GGUF metadata (arrays as lists)."""
        return self._model.metadata()

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Token ids of ``text``. ``add_bos`` defaults to the model's own setting;
        ``special=True`` turns special-token text such as ``<|im_start|>`` into its id."""
        ids = self.tokenizer.encode(text, add_special=add_bos is not False, parse_special=special)
        if add_bos and self.tokenizer.bos_id is not None and ids[:1] != [self.tokenizer.bos_id]:
            ids.insert(0, self.tokenizer.bos_id)
        return ids

    def detokenize(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """The text of token ids ``ids``; ``skip_special=True`` leaves out special tokens."""
        return self.tokenizer.decode(ids, skip_special=skip_special)

    def context(self, n_ctx: int | None = None, n_threads: int | None = None) -> _rllm.Context:
        """A fresh context (KV cache) for low-level evaluation with ``Context.eval``.

        >>> ctx = model.context()                                   # doctest: +SKIP
        >>> logits = ctx.eval(model.tokenize("Hello"))              # doctest: +SKIP
        >>> logits.shape == (model.n_vocab,)                        # doctest: +SKIP
        True
        """
        ctx = _rllm.Context(
            self._model,
            n_ctx=n_ctx or self.n_ctx,
            n_threads=n_threads or self.n_threads,
            rope_freq_base=self.rope_freq_base,
            rope_freq_scale=self.rope_freq_scale,
        )
        log_context(ctx, self.verbose)
        return ctx

    @property
    def embedder(self) -> _rllm.Embedder:
        """The embedding runner (its own scratch buffers and threads), made on first use."""
        if self._embedder is None:
            self._embedder = _rllm.Embedder(self._model, n_ctx=self.n_ctx, n_threads=self.n_threads)
        return self._embedder

    @property
    def pooling(self) -> str:
        """The pooling the model file asks for (``<arch>.pooling_type``), else ``"none"``
        as in llama.cpp: ``"none"``, ``"mean"``, ``"cls"``, ``"last"`` or ``"rank"``."""
        return self.embedder.pooling

    def embed(
        self,
        input: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
        pooling: str | None = None,
        normalize: int = 2,
    ) -> np.ndarray | list[np.ndarray]:
        """Embeddings of ``input``: a float32 array ``[n, dim]`` for a list of texts, ``[dim]``
        for one text (or one list of token ids).

        - ``pooling``: ``"mean"``, ``"cls"``, ``"last"``, ``"rank"`` (a reranker's scores) or
          ``"none"`` (one vector per token: then a ``[n_tokens, dim]`` array per input, in a
          list for a list of inputs). Default: the model's own (:attr:`pooling`).
        - ``normalize``: as llama.cpp's ``--embd-normalize``: 2 euclidean (default), -1 none,
          0 max-abs scaled to int16 range, 1 taxicab, p > 2 the p-norm. Rank scores are never
          normalized.

        Texts are tokenized with special tokens (BOS, or ``[CLS]``/``[SEP]``) and run together
        in as few forward passes as fit the context, each text its own sequence. Raises
        :class:`~rllm.ContextFullError` for a text longer than ``n_ctx`` tokens, ``ValueError``
        for an empty one or an unknown pooling, ``TypeError`` for other input types.

        >>> model = rllm.Model("nomic-embed-text-v1.5.Q8_0.gguf")    # doctest: +SKIP
        >>> model.embed(["search_query: rust", "search_query: python"]).shape  # doctest: +SKIP
        (2, 768)
        """
        if isinstance(normalize, bool) or not isinstance(normalize, int):
            raise TypeError(f"normalize must be an int, not {type(normalize).__name__}")
        ids, single = tokenize_inputs(self.tokenizer, input)
        vectors, rows, _ = self.embedder.embed(ids, pooling, normalize)
        if (pooling or self.pooling) == "none":
            parts = np.split(vectors, np.cumsum(rows)[:-1]) if rows else []
            return parts[0] if single else parts
        return vectors[0] if single else vectors

    def create_embedding(
        self,
        input: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
        model: str | None = None,
        encoding_format: str = "float",
    ) -> dict[str, Any]:
        """Embeddings shaped as OpenAI's (and llama-cpp-python's) ``create_embedding``:
        ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
        "model", "usage": {"prompt_tokens", "total_tokens"}}``, with the model's pooling and
        euclidean normalization. ``encoding_format="base64"`` gives base64 float32 bytes."""
        if encoding_format not in ("float", "base64"):
            raise ValueError(
                f"encoding_format must be 'float' or 'base64', not {encoding_format!r}"
            )
        ids, _ = tokenize_inputs(self.tokenizer, input)
        vectors, rows, n_tokens = self.embedder.embed(ids, None, 2)
        per_token = self.pooling == "none"
        return {
            "object": "list",
            "data": embedding_data(vectors, rows, per_token, encoding_format),
            "model": model if model is not None else str(self.path),
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }

    def generate(
        self,
        prompt: str | Sequence[int],
        max_tokens: int | None = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        stream: bool = False,
        *,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        json_schema: Any = None,
        grammar: Grammar | str | None = None,
        regex: str | None = None,
    ) -> str | Iterator[str]:
        """Continue ``prompt`` (text, or token ids). Returns the generated text, or with
        ``stream=True`` an iterator of text pieces, each valid UTF-8. Generation ends at an
        end-of-generation token, a ``stop`` string (not included), ``max_tokens`` tokens
        (``None`` or -1: until the context is full), or a full context. The penalties look at
        the last ``repeat_last_n`` tokens (0 = none, -1 = the whole context).

        Constrained decoding (at most one): ``json_schema`` (JSON text, a dict, or a pydantic
        model class), ``grammar`` (a :class:`~rllm.Grammar`, or llama.cpp GBNF text) or
        ``regex``: every token that would leave the language is masked, and the text ends
        when the language does. An invalid schema or grammar raises ``ValueError``; one that
        cannot finish within ``max_tokens`` stops there (finish reason ``"length"``).

        >>> model.generate("Pick:", grammar='root ::= "yes" | "no"')   # doctest: +SKIP
        ' no'
        """
        constrained = constraint(json_schema, grammar, regex)
        sampler = _rllm.Sampler(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            repeat_last_n=self.n_ctx if repeat_last_n == -1 else repeat_last_n,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            seed=seed,
        )
        if max_tokens is not None and max_tokens < 0:
            if max_tokens != -1:
                raise ValueError(f"max_tokens must be >= 0 or -1, got {max_tokens}")
            max_tokens = None
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError("stop must be a non-empty string or a list of non-empty strings")
        if isinstance(prompt, str):
            ids = self.tokenize(prompt, special=True)
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise ValueError("the prompt is empty (and the model adds no BOS token)")
        if len(ids) > self.n_ctx:
            raise ContextFullError(
                f"the prompt is {len(ids)} tokens long but the context holds {self.n_ctx}"
            )
        pieces = self._stream(ids, sampler, max_tokens, stops, constrained)
        return pieces if stream else "".join(pieces)

    # --- chat ---------------------------------------------------------------------------

    @property
    def chat_template(self) -> ChatTemplate:
        """The file's ``tokenizer.chat_template``, else a built-in template guessed from the
        vocabulary. Assign a :class:`ChatTemplate` (or a built-in name / Jinja source) to
        override it."""
        if self._chat_template is None:
            self._chat_template = ChatTemplate.from_metadata(self.metadata())
        return self._chat_template

    @chat_template.setter
    def chat_template(self, value: ChatTemplate | str) -> None:
        if isinstance(value, str):
            value = ChatTemplate.from_metadata(self.metadata(), override=value)
        self._chat_template = value

    def chat_prompt(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        prefill: str = "",
    ) -> list[int]:
        """Token ids of ``messages`` rendered with :attr:`chat_template`, then ``prefill``
        (text the reply is made to begin with). BOS is added as the model asks unless the
        rendered text already starts with it."""
        text = self.chat_template.render(messages, add_generation_prompt, tools=tools) + prefill
        bos = self.chat_template.bos_token
        add_bos = self.tokenizer.add_bos and not (bos and text.startswith(bos))
        return self.tokenize(text, add_bos=add_bos, special=True)

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> str | Iterator[str]:
        """The assistant's reply to ``messages`` (``[{"role": "user", "content": "Hi"}]``),
        or with ``stream=True`` an iterator of its pieces. Other keyword arguments are those of
        :meth:`generate`; the cached prefix of the previous call is reused.

        >>> model.chat([{"role": "user", "content": "Capital of France?"}], temperature=0)
        ... # doctest: +SKIP
        'The capital of France is Paris.'
        """
        return self.generate(self.chat_prompt(messages, tools), stream=stream, **kwargs)

    def create_chat_completion(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool | None = None,
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        stream: bool = False,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        model: str | None = None,
        response_format: Mapping[str, Any] | None = None,
        grammar: Grammar | str | None = None,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """An OpenAI-style chat completion, shaped as llama-cpp-python's: a
        ``chat.completion`` dict, or with ``stream=True`` an iterator of
        ``chat.completion.chunk`` dicts (a role delta, content deltas, then an empty delta
        with the finish reason). ``max_tokens`` None or <= 0 generates until an
        end-of-generation token or a full context.

        ``tools`` are OpenAI's function descriptions. ``tool_choice`` is ``"auto"`` (the
        default with tools: the model may call them), ``"none"`` (they are not offered),
        ``"required"`` or ``{"type": "function", "function": {"name": ...}}`` (a call is
        forced, its arguments constrained to the tool's ``parameters`` schema).
        ``parallel_tool_calls=False`` keeps at most one call. Calls come back in
        ``message.tool_calls`` (streamed as ``delta.tool_calls``) with finish reason
        ``"tool_calls"``; the format follows the chat template (:mod:`rllm.tools`).
        ``tool`` messages and assistant ``tool_calls`` in ``messages`` are rendered by the
        template.

        ``response_format`` is OpenAI's (``{"type": "json_object"}``, or ``{"type":
        "json_schema", "json_schema": {"name": ..., "schema": {...}}}``) and ``grammar`` a
        :class:`~rllm.Grammar` or GBNF text, as llama-cpp-python takes them; the reply is
        constrained to that language. ValueError for an invalid one, for malformed tools,
        a ``tool_choice`` naming no given tool, or ``"required"`` without tools."""
        constrained = response_format_grammar(response_format)
        if grammar is not None:
            if constrained is not None:
                raise ValueError("give response_format or grammar, not both")
            constrained = constraint(grammar=grammar)
        plan = plan_tools(self.chat_template, tools, tool_choice, parallel_tool_calls)
        forced = plan.grammar()
        if forced is not None:
            if constrained is not None:
                raise ValueError("a forced tool call cannot also take response_format or grammar")
            constrained = forced
        ids = self.chat_prompt(plan.messages(messages), plan.template_tools(), prefill=plan.prefill)
        pieces = self.generate(
            ids,
            max_tokens=max_tokens if max_tokens is not None and max_tokens > 0 else None,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            seed=seed,
            stop=stop,
            stream=True,
            grammar=constrained,
        )
        assert not isinstance(pieces, str)
        head = {
            "id": f"chatcmpl-{uuid.uuid4()}",
            "created": int(time.time()),
            "model": model or str(self.path),
        }
        if stream:
            return self._completion_chunks(head, pieces, plan)
        reply = plan.parse("".join(pieces))
        t = self.timings
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.calls:
            message["tool_calls"] = [c.openai() for c in reply.calls]
        return {
            **head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _openai_finish(t.finish_reason, bool(reply.calls)),
                }
            ],
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": t.completion_tokens,
                "total_tokens": len(ids) + t.completion_tokens,
            },
        }

    def _completion_chunks(
        self, head: dict[str, Any], pieces: Iterator[str], plan: ToolPlan
    ) -> Iterator[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**head, "object": "chat.completion.chunk", "choices": [choice]}

        yield chunk({"role": "assistant"})
        tools = plan.stream()  # holds back text that may begin a tool call
        for piece in pieces:
            shown = tools.feed(piece)
            if shown:
                yield chunk({"content": shown})
        rest, calls = tools.finish()
        if rest:
            yield chunk({"content": rest})
        for i, call in enumerate(calls):
            for delta in call.deltas(i):
                yield chunk({"tool_calls": [delta]})
        yield chunk({}, _openai_finish(self.timings.finish_reason, bool(calls)))

    def _context_for(self, ids: list[int]) -> tuple[_rllm.Context, list[int]]:
        """The model's own context, keeping the longest cached prefix of ``ids``; returns the
        tokens still to evaluate (at least one, so that there are fresh logits)."""
        if self._ctx is None:
            self._ctx = self.context()
        ctx = self._ctx
        cached = ctx.tokens
        n = 0
        for a, b in zip(cached, ids):
            if a != b:
                break
            n += 1
        n = min(n, len(ids) - 1)
        ctx.truncate(n)
        return ctx, ids[n:]

    def _stream(
        self,
        ids: list[int],
        sampler: _rllm.Sampler,
        max_tokens: int | None,
        stops: list[str],
        grammar: Grammar | None = None,
    ) -> Iterator[str]:
        t = self.timings = Timings(load_ms=self.timings.load_ms)
        ctx, todo = self._context_for(ids)
        start = time.perf_counter()
        ctx.eval(todo)
        t.prompt_ms = 1000 * (time.perf_counter() - start)
        t.prompt_tokens = len(todo)
        if max_tokens == 0:
            t.finish_reason = "length"
            return
        stream = ctx.generate(sampler, max_tokens=max_tokens, stop=stops, grammar=grammar)
        start = time.perf_counter()
        try:
            for chunk in stream:
                if chunk.text:
                    yield chunk.text
            t.finish_reason = stream.finish_reason
        finally:
            t.eval_ms = 1000 * (time.perf_counter() - start)
            t.eval_tokens = stream.n_sampled
            t.completion_tokens = stream.n_generated


def _openai_finish(reason: str | None, tool_calls: bool = False) -> str:
    """OpenAI's finish reasons: "stop" ("tool_calls" when the reply called tools), or
    "length" for a token limit or a full context."""
    if reason != "stop":
        return "length"
    return "tool_calls" if tool_calls else "stop"
