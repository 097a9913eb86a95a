"""The interactive REPL: llama-cli's completion, interactive (-i/-if) and conversation (-cnv)
modes on one rllm context.

    python -m rllm.repl -m MODEL.gguf                       # chat with the chat template
    python -m rllm.repl -m MODEL.gguf -i -r "User:" -f prompts/chat-with-bob.txt

The context holds the whole session; tokens reach it in batches (the prompt, each input) and
generation runs in Rust until an end-of-generation token, a reverse prompt, the token budget
or Ctrl-C. When the context fills up, the oldest tokens after ``--keep`` are dropped
(llama.cpp's context shift).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _rllm
from .chat import ChatSession, ChatTemplate
from .cli.common import (
    UsageError,
    gpu_notes,
    note,
    read_prompt,
    rope_settings,
    sampling_kwargs,
)
from .console import Console, use_color
from .errors import ContextFullError
from .hub import cache_dir
from .model import Model, Timings

__all__ = ["Repl", "ReplConfig", "main", "process_escapes", "run_from_args"]

SESSION_MAGIC = b"RLLM-SESSION 1\n"
_HEX = b"0123456789abcdefABCDEF"

HELP_TEXT = """\
commands:
  /help         this help
  /reset        forget the conversation (back to the initial prompt)
  /save FILE    save the conversation and the context (KV cache) to FILE
  /load FILE    restore a conversation saved with /save
  /timings      print the timings so far
  /system TEXT  set the system prompt (conversation mode)
  /quit         exit (as Ctrl-D does)
keys:
  Ctrl-C stops the generation; twice in a row, it exits. Ctrl-D exits.
  End a line with '\\' to continue on the next line, with '/' to return control.
  '//' starts a line with a literal '/'."""


def process_escapes(text: str) -> str:
    """llama.cpp's escapes: \\n \\r \\t \\' \\" \\\\ and \\xHH (a byte); others stay."""
    if "\\" not in text:
        return text
    raw = text.encode("utf-8")
    out = bytearray()
    i = 0
    simple = {ord("n"): 10, ord("r"): 13, ord("t"): 9, 39: 39, 34: 34, 92: 92}
    while i < len(raw):
        c = raw[i]
        if c == 92 and i + 1 < len(raw):
            n = raw[i + 1]
            if n in simple:
                out.append(simple[n])
                i += 2
                continue
            digits = raw[i + 2 : i + 4]
            if n == ord("x") and len(digits) == 2 and all(d in _HEX for d in digits):
                out.append(int(digits, 16))
                i += 4
                continue
            out += raw[i : i + 2]
            i += 2
            continue
        out.append(c)
        i += 1
    return out.decode("utf-8", errors="replace")


@dataclass
class ReplConfig:
    """What the REPL does; :meth:`from_args` reads it from the command line."""

    model: str
    prompt: str | None = None
    system_prompt: str | None = None
    n_predict: int = -1  # -1: until end of text, -2: until the context is full
    n_ctx: int | None = None  # None: the model's default, 0: its training context
    n_threads: int | None = None
    use_mmap: bool | None = None
    n_keep: int | None = None  # None: 0 completing, the system prompt chatting; -1: all
    context_shift: bool = True
    rope_freq_base: float | None = None
    rope_freq_scale: float | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # Sampler keyword arguments
    interactive: bool = False
    interactive_first: bool = False
    conversation: bool = False
    reverse_prompts: list[str] = field(default_factory=list)
    in_prefix: str = ""
    in_suffix: str = ""
    in_prefix_bos: bool = False
    multiline: bool = False
    escape: bool = True
    chat_template: str | None = None
    color: str = "auto"
    display_prompt: bool = True
    verbose_prompt: bool = False
    timings: bool = True
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReplConfig:
        prompt = read_prompt(args)
        esc = process_escapes if args.escape else (lambda s: s)
        template = args.chat_template
        if args.chat_template_file:
            if template:
                raise UsageError("give --chat-template or --chat-template-file, not both")
            with open(args.chat_template_file, encoding="utf-8") as f:
                template = f.read()
        if template:
            try:
                ChatTemplate.from_spec(template)
            except ValueError as e:  # an unknown name, or a Jinja syntax error
                raise UsageError(str(e)) from None
        rope_freq_base, rope_freq_scale = rope_settings(args)
        cfg = cls(
            model=args.model,
            prompt=esc(prompt) if prompt is not None else None,
            system_prompt=args.system_prompt,
            n_predict=args.n_predict,
            n_ctx=args.ctx_size,
            n_threads=args.threads if args.threads and args.threads > 0 else None,
            use_mmap=args.use_mmap,
            n_keep=args.keep,
            context_shift=args.context_shift,
            rope_freq_base=rope_freq_base,
            rope_freq_scale=rope_freq_scale,
            sampling=sampling_kwargs(args),
            interactive=args.interactive,
            interactive_first=args.interactive_first,
            reverse_prompts=[esc(r) for r in args.reverse_prompt if r],
            in_prefix=esc(args.in_prefix),
            in_suffix=esc(args.in_suffix),
            in_prefix_bos=args.in_prefix_bos,
            multiline=args.multiline_input,
            escape=args.escape,
            chat_template=template,
            color=args.color,
            display_prompt=args.display_prompt,
            verbose_prompt=args.verbose_prompt,
            timings=not args.no_timings,
            notes=gpu_notes(args),
        )
        raw_cues = (
            prompt is not None
            or args.interactive
            or args.interactive_first
            or cfg.reverse_prompts
            or cfg.in_prefix
            or cfg.in_suffix
            or cfg.in_prefix_bos
        )
        conversation = args.conversation
        if conversation is None:  # llama-cli's "auto": chat unless asked to complete text
            conversation = not raw_cues
        if conversation and (cfg.in_prefix or cfg.in_suffix or cfg.in_prefix_bos):
            cfg.notes.append("--in-prefix/--in-suffix given: the chat template is not used")
            conversation = False
            cfg.interactive_first = True
        cfg.conversation = bool(conversation)
        if cfg.conversation:
            cfg.interactive = True
            cfg.interactive_first = cfg.interactive_first or prompt is None
        elif cfg.system_prompt is not None:
            cfg.notes.append("-sys has no effect without conversation mode (-cnv)")
        if cfg.interactive_first:
            cfg.interactive = True
        return cfg


class Repl:
    """One session: a model, its context, the conversation so far and the terminal."""

    def __init__(self, model: Model, cfg: ReplConfig, console: Console) -> None:
        self.model = model
        self.cfg = cfg
        self.console = console
        self.tok = model.tokenizer
        n_ctx = model.n_ctx if cfg.n_ctx is None else cfg.n_ctx or model._model.n_ctx_train
        self.ctx = model.context(n_ctx=max(n_ctx, 8))
        self.n_ctx = self.ctx.n_ctx
        self.tokens: list[int] = []  # the session: evaluated tokens, then pending ones
        self.timings = Timings(load_ms=model.timings.load_ms)
        self.chat: ChatSession | None = None
        if cfg.conversation:
            template = ChatTemplate.from_metadata(model.metadata(), cfg.chat_template)
            self.chat = ChatSession(template, cfg.system_prompt)
        self.n_keep = 0
        self._sampler_state: _rllm.Sampler | None = None
        self._shifted = False
        self._ctrl_c = False  # the last thing the user did was Ctrl-C
        self._start: tuple[list[int], dict[str, Any] | None] = ([], None)
        self._single_token_stops: set[int] = set()
        for r in cfg.reverse_prompts:
            ids = model.tokenize(r, add_bos=False, special=True)
            if len(ids) == 1:
                self._single_token_stops.add(ids[0])

    # --- tokens in and out ----------------------------------------------------------------
    def _tokenize(self, text: str, special: bool = True) -> list[int]:
        return self.model.tokenize(text, add_bos=False, special=special) if text else []

    def _opening(self, text: str) -> list[int]:
        """Tokens of the session's first text, with BOS if the model wants one there."""
        bos = self.tok.bos_id
        ids = self._tokenize(text)
        if self.tok.add_bos and bos is not None and ids[:1] != [bos]:
            ids.insert(0, bos)
        return ids

    def _show_tokens(self, ids: list[int], what: str) -> None:
        self.console.info(f"rllm: number of tokens in {what} = {len(ids)}")
        for i in ids:
            piece = self.tok.token_bytes(i).decode("utf-8", errors="replace")
            self.console.info(f"{i:6d} -> '{piece}'")

    def _feed(self, ids: list[int]) -> None:
        """Queue tokens after the session's; too long an input is cut as llama.cpp cuts it."""
        room = self.n_ctx - self.n_keep - 4
        if len(ids) > room:
            self.console.error(f"<<input too long: skipped {len(ids) - room} tokens>>")
            ids = ids[:room]
        self.tokens += ids

    def _evaluate(self) -> None:
        """Evaluate the pending tokens, making room first; leaves fresh logits."""
        pending = len(self.tokens) - self.ctx.n_past
        if pending == 0 and self.ctx.last_logits() is None and self.tokens:
            self.ctx.truncate(len(self.tokens) - 1)  # replay the last token for its logits
            pending = 1
        if pending == 0:
            return
        self._make_room(pending)
        todo = self.tokens[self.ctx.n_past :]
        start = time.perf_counter()
        self.ctx.eval(todo)
        self.timings.prompt_ms += 1000 * (time.perf_counter() - start)
        self.timings.prompt_tokens += len(todo)

    def _make_room(self, n_new: int) -> None:
        """Context shift: drop half of the tokens after n_keep until n_new more fit."""
        while self.ctx.n_past + n_new > self.n_ctx:
            n_discard = (self.ctx.n_past - self.n_keep) // 2
            if not self.cfg.context_shift or n_discard < 1:
                raise ContextFullError(
                    f"the context is full ({self.n_ctx} tokens)"
                    + ("" if self.cfg.context_shift else " and context shift is off")
                )
            self.ctx.shift(self.n_keep, n_discard)
            del self.tokens[self.n_keep : self.n_keep + n_discard]
            self._shifted = True
            if self.cfg.verbose_prompt:
                self.console.info(f"rllm: context shift: dropped {n_discard} tokens")

    def _sampler(self) -> _rllm.Sampler:
        """The session's sampler: one stream of draws across replies, as in llama-cli."""
        if self._sampler_state is None:
            kwargs = dict(self.cfg.sampling)
            if kwargs.get("repeat_last_n") == -1:
                kwargs["repeat_last_n"] = self.n_ctx
            self._sampler_state = _rllm.Sampler(**kwargs)
        return self._sampler_state

    def _at_reverse_prompt(self) -> bool:
        if not self.cfg.reverse_prompts or not self.tokens:
            return False
        if self.tokens[-1] in self._single_token_stops:
            return True
        tail = self.tok.decode(self.tokens[-32:])
        slack = 0 if self.cfg.interactive else 2
        return any(
            tail.find(r, max(0, len(tail) - len(r) - slack)) >= 0 for r in self.cfg.reverse_prompts
        )

    # --- generation -------------------------------------------------------------------------
    def reply(self) -> tuple[str, list[int]]:
        """Generate after the session, streaming to the console. Returns why it stopped
        ("eog", "reverse_prompt", "length", "context_full" or "interrupted") and the ids.
        Sampling, detokenizing, reverse prompts and context shifts run in Rust
        (``Context.generate``)."""
        console, cfg = self.console, self.cfg
        generated: list[int] = []
        with console.interruptible():
            self._evaluate()
            if console.interrupted:
                return "interrupted", generated
            if cfg.n_predict == 0:
                return "length", generated
            shift = cfg.context_shift and cfg.n_predict != -2
            stream = self.ctx.generate(
                self._sampler(),
                max_tokens=None if cfg.n_predict < 0 else cfg.n_predict,
                stop=cfg.reverse_prompts,
                stop_ids=sorted(self._single_token_stops),
                n_keep=self.n_keep if shift else None,
                skip_special=True,
            )
            start = time.perf_counter()
            reason = None
            discarded = 0
            for chunk in stream:
                if stream.n_discarded > discarded:  # the context shifted before this token
                    n = stream.n_discarded - discarded
                    discarded = stream.n_discarded
                    del self.tokens[self.n_keep : self.n_keep + n]
                    self._shifted = True
                    if cfg.verbose_prompt:
                        console.info(f"rllm: context shift: dropped {n} tokens")
                self.tokens += chunk.tokens
                generated += chunk.tokens
                console.write(chunk.text + (chunk.stop or ""))  # a reverse prompt is shown
                if chunk.finish_reason is None and console.interrupted:
                    reason = "interrupted"
                    break
            if reason is None:
                reason = self._finish(stream, generated)
            self.timings.eval_ms += 1000 * (time.perf_counter() - start)
            self.timings.eval_tokens += stream.n_sampled
        return reason, generated

    def _finish(self, stream: _rllm.TokenStream, generated: list[int]) -> str:
        """Why ``stream`` ended, in the REPL's terms; an end-of-generation token joins the
        session (as llama.cpp keeps it) and a reverse prompt is shown."""
        last = stream.last_token
        if stream.finish_reason == "context_full":
            return "context_full"
        if stream.finish_reason != "stop":
            return "length"
        if last is not None and self.tok.is_eog(last):
            self.tokens.append(last)
            generated.append(last)
            return "eog"
        return "reverse_prompt"

    # --- the session --------------------------------------------------------------------------
    def start(self) -> None:
        """Queue the opening (the prompt, or the chat's system turn) and show it; with -p in
        conversation mode, also the first user message."""
        cfg, console = self.cfg, self.console
        if self.chat is not None:
            opening = self.chat.start()
        else:
            opening = cfg.prompt or ""
        ids = self._opening(opening)
        if not ids and not cfg.interactive:  # generate from nothing: from BOS
            if self.tok.bos_id is None:
                raise ValueError("the prompt is empty and the model has no BOS token")
            ids = [self.tok.bos_id]
        if len(ids) > self.n_ctx - 4:
            raise ContextFullError(
                f"the prompt is too long ({len(ids)} tokens, at most {self.n_ctx - 4})"
            )
        keep = cfg.n_keep
        if keep is None:
            keep = -1 if self.chat is not None else 0
        bos = int(bool(ids) and ids[0] == self.tok.bos_id)
        self.n_keep = len(ids) if keep < 0 or keep > len(ids) else min(keep + bos, len(ids))
        if cfg.verbose_prompt:
            console.info(f"rllm: prompt: {opening!r}")
            self._show_tokens(ids, "prompt")
        self.tokens = list(ids)
        self._start = (list(ids), self.chat.state() if self.chat else None)
        if self.chat is None and cfg.display_prompt:
            shown = b"".join(self.tok.token_bytes(t) for t in ids if not self.tok.is_control(t))
            console.write(shown.decode(errors="replace"), "prompt")
        if self.chat is not None and cfg.prompt is not None:
            if cfg.display_prompt:
                console.write(f"> {cfg.prompt}\n", "prompt")
            self._chat_input(cfg.prompt)

    def _chat_input(self, text: str) -> None:
        assert self.chat is not None
        delta = self.chat.add_user(text)
        if delta is None:  # the template rewrote the history: evaluate what changed
            ids = self._opening(self.chat.render())
            if len(ids) > self.n_ctx - 4:
                raise ContextFullError(
                    f"the conversation ({len(ids)} tokens) no longer fits in the context; /reset"
                )
            n = 0
            for a, b in zip(self.tokens[: self.ctx.n_past], ids):
                if a != b:
                    break
                n += 1
            self.ctx.truncate(n)
            new = ids[n:]
            self.tokens = ids[:n]
        else:
            new = self._tokenize(delta)
            if not self.tokens:
                new = self._opening(delta)
        if self.cfg.verbose_prompt:
            self._show_tokens(new, "input")
        self._feed(new)

    def _raw_input(self, text: str) -> None:
        cfg = self.cfg
        ids: list[int] = []
        if cfg.in_prefix_bos and self.tok.bos_id is not None:
            ids.append(self.tok.bos_id)
        ids += self._tokenize(cfg.in_prefix)
        ids += self._tokenize(text, special=False)
        ids += self._tokenize(cfg.in_suffix)
        bos = self.tok.bos_id
        if not self.tokens and self.tok.add_bos and bos is not None and ids[:1] != [bos]:
            ids.insert(0, bos)
        if cfg.verbose_prompt:
            self._show_tokens(ids, "input")
        self._feed(ids)

    def _after_reply(self, reason: str, generated: list[int]) -> None:
        console = self.console
        if self.chat is not None:  # the reply as printed, and as the context holds it
            tok = self.tok
            content = b"".join(tok.token_bytes(t) for t in generated if not tok.is_control(t))
            raw = b"".join(tok.token_bytes(t) for t in generated)
            text = content.decode(errors="replace").strip()
            self.chat.add_reply(text, raw.decode(errors="replace"))
            console.newline()
            return
        if reason == "eog" and self.cfg.reverse_prompts:
            first = self.cfg.reverse_prompts[0]
            console.newline()
            console.write(first)
            self._feed(self._tokenize(first))
        elif reason in ("eog", "interrupted", "context_full"):
            console.newline()

    def run(self) -> int:
        """The whole session; returns the exit status."""
        cfg, console = self.cfg, self.console
        if cfg.interactive:
            self._banner()
        self.start()
        if not cfg.interactive:
            reason, _ = self.reply()
            console.write(" [end of text]\n" if reason == "eog" else "\n")
            self._print_timings()
            return 0 if reason != "interrupted" else 130
        # a prompt that ends with a reverse prompt gives the user the first word
        need_reply = (
            not cfg.interactive_first and bool(self.tokens) and not self._ends_with_reverse_prompt()
        )
        status = 0
        try:
            while True:
                if need_reply:
                    try:
                        reason, generated = self.reply()
                    except ContextFullError as e:  # e.g. --no-context-shift
                        console.newline()
                        console.error(f"rllm: {e}; /reset starts afresh")
                        reason, generated = "context_full", []
                    self._after_reply(reason, generated)
                    self._ctrl_c = reason == "interrupted"
                try:
                    text = self._read()
                except KeyboardInterrupt:
                    if self._ctrl_c:  # a second Ctrl-C in a row
                        raise
                    self._ctrl_c = True
                    need_reply = False
                    console.newline()
                    console.info("(Ctrl-C again, Ctrl-D or /quit to exit)")
                    continue
                self._ctrl_c = False
                if text is None:
                    break
                if text.startswith("/") and not text.startswith("//"):
                    need_reply = False
                    if self._command(text) == "quit":
                        break
                    continue
                try:
                    need_reply = self._input(text[1:] if text.startswith("//") else text)
                except ContextFullError as e:
                    console.error(f"rllm: {e}")
                    need_reply = False
        except KeyboardInterrupt:
            console.newline()
            status = 130
        finally:
            console.save_history()
        console.write("\n")
        self._print_timings()
        return status

    def _input(self, text: str) -> bool:
        """Queue what the user typed; returns whether the model should answer."""
        if self.cfg.escape:
            text = process_escapes(text)
        if self.chat is not None:
            if not text.strip():
                return False
            self._chat_input(text)
        elif text:  # an empty line returns control to the model as it is
            self.console.write(self.cfg.in_suffix)
            self._raw_input(text)
        return True

    def _ends_with_reverse_prompt(self) -> bool:
        if self.chat is not None or not self._at_reverse_prompt():
            return False
        with self.console.interruptible():
            self._evaluate()
        return True

    def _read(self) -> str | None:
        console = self.console
        if self.chat is not None:
            console.newline()
            console.write("\n")
            return console.read("> ", self.cfg.multiline)
        console.write(self.cfg.in_prefix)
        return console.read("", self.cfg.multiline)

    def _banner(self) -> None:
        info = self.console.info
        if self.chat is not None:
            name = self.chat.template.name
            origin = "the model's own" if name == "gguf" else f"{name!r}"
            info(f"rllm: chat template: {origin}")
        info("== Running in interactive mode. ==")
        info(" - Press Ctrl+C to interject at any time.")
        send = "send your message" if self.chat is not None else "return control to the AI"
        if self.cfg.multiline:
            info(f" - To {send}, end your input with '\\'.")
        else:
            info(f" - Press Return to {send}.")
            info(" - If you want to submit another line, end your input with '\\'.")
        if self.chat is None:
            info(" - To return control without starting a new line, end your input with '/'.")
        info(" - Type /help for commands; Ctrl-D or /quit exits.")
        if self.chat is not None and self.cfg.system_prompt is None:
            info(" - Not using a system message. To set one, use -sys PROMPT or /system TEXT.")
        if self.chat is None:
            info("")

    def _print_timings(self) -> None:
        if self.cfg.timings:
            self.console.info(self.timings.report())

    # --- commands -----------------------------------------------------------------------------
    def _command(self, line: str) -> str | None:
        name, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip()
        console = self.console
        if name in ("quit", "exit"):
            return "quit"
        if name == "help":
            console.info(HELP_TEXT)
        elif name == "reset":
            self.reset()
            console.info(f"rllm: conversation reset ({len(self.tokens)} tokens kept)")
        elif name == "timings":
            console.info(self.timings.report())
        elif name in ("save", "load") and not arg:
            console.error(f"rllm: /{name} needs a file name")
        elif name == "save":
            try:
                self.save(Path(arg).expanduser())
            except OSError as e:
                console.error(f"rllm: cannot save to {arg}: {e.strerror or e}")
        elif name == "load":
            try:
                self.load(Path(arg).expanduser())
            except (OSError, ValueError) as e:
                console.error(f"rllm: cannot load {arg}: {getattr(e, 'strerror', None) or e}")
        elif name == "system":
            if self.chat is None:
                console.error("rllm: /system works in conversation mode (-cnv) only")
            elif not arg:
                console.error("rllm: /system needs the text of the system prompt")
            else:
                self.chat.set_system(process_escapes(arg) if self.cfg.escape else arg)
                console.info("rllm: system prompt set; it applies from the next message")
        else:
            console.error(f"rllm: unknown command /{name} (try /help)")
        return None

    def reset(self) -> None:
        """Back to the state after the opening (system prompt or prompt)."""
        ids, chat_state = self._start
        n = len(ids)
        if self._shifted or self.ctx.n_past < n or self.ctx.tokens[:n] != ids:
            self.ctx.reset()
        else:
            self.ctx.truncate(n)
        self.tokens = list(ids)
        self._shifted = False
        self._sampler_state = None  # a reset conversation draws as a fresh one would
        if self.chat is not None and chat_state is not None:
            self.chat.restore(chat_state)

    def save(self, path: Path) -> None:
        """Write the session (tokens, conversation, KV cache) to ``path``."""
        with self.console.interruptible():
            self._evaluate()  # the pending tokens go into the saved cache
        m = self.model._model
        header = {
            "model": {"name": Path(m.path).name, "arch": m.arch, "n_vocab": m.n_vocab},
            "n_ctx": self.n_ctx,
            "tokens": self.tokens,
            "n_keep": self.n_keep,
            "shifted": self._shifted,
            "chat": self.chat.state() if self.chat is not None else None,
        }
        data = SESSION_MAGIC + json.dumps(header).encode() + b"\n" + self.ctx.save_state()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.console.info(f"rllm: saved {len(self.tokens)} tokens{self._count()} to {path}")

    def load(self, path: Path) -> None:
        """Restore a session written by :meth:`save` (same model, context large enough)."""
        data = path.read_bytes()
        if not data.startswith(SESSION_MAGIC):
            raise ValueError("not a session saved by rllm's /save")
        line, _, state = data[len(SESSION_MAGIC) :].partition(b"\n")
        header = json.loads(line)
        m, saved = self.model._model, header["model"]
        if (saved["arch"], saved["n_vocab"]) != (m.arch, m.n_vocab):
            raise ValueError(f"it was saved with another model ({saved['name']})")
        tokens = [int(t) for t in header["tokens"]]
        if len(tokens) > self.n_ctx:
            raise ValueError(f"it holds {len(tokens)} tokens, more than -c {self.n_ctx}")
        self.ctx.load_state(state)
        self.tokens = tokens
        self.n_keep = int(header["n_keep"])
        self._shifted = bool(header["shifted"])
        if self.chat is not None:
            if header.get("chat"):
                self.chat.restore(header["chat"])
            else:
                self.console.info("rllm: the file holds no chat: messages start afresh")
        self.console.info(f"rllm: loaded {len(self.tokens)} tokens{self._count()} from {path}")

    def _count(self) -> str:
        return f", {len(self.chat.messages)} messages" if self.chat is not None else ""


def history_file() -> Path | None:
    """$RLLM_HISTORY (empty: no history), else repl_history in rllm's cache folder."""
    env = os.environ.get("RLLM_HISTORY")
    if env is not None:
        return Path(env).expanduser() if env else None
    return cache_dir() / "repl_history"


def run_from_args(args: argparse.Namespace) -> int:
    """``rllm repl`` / ``rllm chat`` / ``python -m rllm.repl`` once the options are parsed."""
    cfg = ReplConfig.from_args(args)
    try:  # bad sampling values are usage errors, found before the model loads
        _rllm.Sampler(**{**cfg.sampling, "repeat_last_n": max(cfg.sampling["repeat_last_n"], 0)})
    except ValueError as e:
        raise UsageError(str(e)) from None
    console = Console(color=use_color(cfg.color, sys.stdout), history=history_file())
    for message in cfg.notes:
        note(message)
    with console.spinner(f"rllm: loading {Path(str(cfg.model)).name}"):
        model = Model(
            cfg.model,
            n_threads=cfg.n_threads,
            rope_freq_base=cfg.rope_freq_base,
            rope_freq_scale=cfg.rope_freq_scale,
            use_mmap=cfg.use_mmap,
        )
    m = model._model
    repl = Repl(model, cfg, console)
    console.info(
        f"rllm: {model.path.name}: {m.arch}, {m.n_params / 1e6:.1f}M parameters, "
        f"{m.size / 2**20:.1f} MiB | n_ctx = {repl.n_ctx}, threads = {repl.ctx.n_threads}"
    )
    return repl.run()


def main(argv: list[str] | None = None) -> int:
    """``python -m rllm.repl``: the ``rllm repl`` subcommand."""
    from .cli import run_subcommand

    return run_subcommand("repl", argv, prog="python -m rllm.repl")


if __name__ == "__main__":
    sys.exit(main())
