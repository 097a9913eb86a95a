"""The terminal side of the REPL: colors, line editing and history (readline when the
platform has it), multi-line input, a loading spinner and Ctrl-C handling.

Colors follow llama.cpp's console: the prompt yellow, user input bold green, generated text in
the terminal's own color, errors bold red.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Console", "use_color"]

COLORS = {
    "prompt": "\x1b[33m",
    "input": "\x1b[1;32m",
    "error": "\x1b[1;31m",
    "info": "\x1b[35m",
    "reset": "\x1b[0m",
}


def use_color(when: str, stream: TextIO) -> bool:
    """``on``/``off``, or ``auto``: on when ``stream`` is a terminal and NO_COLOR is unset."""
    if when in ("on", "always", "yes", "true", "1"):
        return True
    if when in ("off", "never", "no", "false", "0"):
        return False
    return _isatty(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Console:
    """Writes model text to stdout and messages to stderr; reads user input."""

    def __init__(
        self,
        color: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
        inp: TextIO | None = None,
        history: Path | None = None,
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.inp = inp or sys.stdin
        self.color = color
        self.interactive = _isatty(self.inp) and _isatty(self.out)
        self.line = ""  # text written since the last newline on stdout, for the input prompt
        self._kind: str | None = None
        self._readline: Any = None
        self._history = history
        self.interrupted = False  # set by Ctrl-C while generating

    # --- output ---------------------------------------------------------------------------
    def write(self, text: str, kind: str | None = None) -> None:
        """Model or prompt text on stdout; ``kind`` "prompt" or "input" colors it."""
        if not text:
            return
        self._set(kind)
        self.out.write(text)
        self.out.flush()
        self.line = (self.line + text).rsplit("\n", 1)[-1]

    def _set(self, kind: str | None) -> None:
        if self.color and kind != self._kind:
            self.out.write(COLORS[kind or "reset"])
            self._kind = kind

    def info(self, text: str) -> None:
        """A message on stderr."""
        self._set(None)
        self.out.flush()
        self.err.write(text + "\n")
        self.err.flush()

    def error(self, text: str) -> None:
        self._set(None)
        self.out.flush()
        if self.color and _isatty(self.err):
            text = f"{COLORS['error']}{text}{COLORS['reset']}"
        self.err.write(text + "\n")
        self.err.flush()

    def newline(self) -> None:
        """End the current line of output, if one is open."""
        if self.line:
            self.write("\n")

    @contextmanager
    def spinner(self, text: str) -> Iterator[None]:
        """A spinner on stderr while the body runs (only when stderr is a terminal)."""
        if not _isatty(self.err):
            yield
            return
        stop = threading.Event()

        def spin() -> None:
            frames, i = "|/-\\", 0
            while True:
                self.err.write(f"\r{text} {frames[i % 4]}")
                self.err.flush()
                i += 1
                if stop.wait(0.1):
                    break

        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.err.write("\r\x1b[K")
            self.err.flush()

    # --- input ----------------------------------------------------------------------------
    def _setup_readline(self) -> None:
        if self._readline is not None or not self.interactive:
            return
        try:
            import readline
        except ImportError:  # Windows: plain input()
            self._readline = False
            return
        self._readline = readline
        # Python turns bracketed paste off; on, a pasted block arrives as one input
        readline.parse_and_bind("set enable-bracketed-paste on")
        if self._history is not None:
            try:
                readline.read_history_file(self._history)
            except OSError:
                pass
            readline.set_history_length(1000)

    def save_history(self) -> None:
        if self._readline and self._history is not None:
            try:
                self._history.parent.mkdir(parents=True, exist_ok=True)
                self._readline.write_history_file(self._history)
            except OSError:
                pass

    def _pending_input(self) -> bool:
        """More input already waiting on a terminal: the rest of a pasted block."""
        if not self.interactive:
            return False
        try:
            return bool(select.select([self.inp], [], [], 0.02)[0])
        except (OSError, ValueError):
            return False

    def _input(self, prompt: str) -> str:
        if self.inp is sys.stdin and self.out is sys.stdout:
            return input(prompt)
        self.out.write(prompt)
        self.out.flush()
        line = self.inp.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    def read(self, prompt: str = "", multiline: bool = False) -> str | None:
        """A user input, or None at end of input (Ctrl-D). As in llama.cpp: a line ending in
        ``\\`` continues on the next line (with ``multiline``, it ends the input instead); a
        line ending in ``/`` ends the input. Lines pasted together form one input. Raises
        KeyboardInterrupt on Ctrl-C."""
        self._setup_readline()
        if not prompt and self.line and self.interactive and self._readline:
            # hand the open line to readline as its prompt, so that editing redraws it
            if self.line.isprintable() and len(self.line) < 60:
                prompt = self.line
                self.out.write("\r\x1b[K")
        if self.color:
            self._kind = None
            reset, green = COLORS["reset"], COLORS["input"]
            if self._readline:  # \001 \002 tell readline which prompt bytes take no room
                reset, green = f"\001{reset}\002", f"\001{green}\002"
            prompt = f"{reset}{prompt}{green}"
        lines: list[str] = []
        pasted: list[bool] = []  # whether each line was read only because more input waited
        next_pasted = False
        try:
            while True:
                try:
                    line = self._input(prompt if not lines else "")
                except EOFError:
                    if not lines:
                        return None
                    break
                pasted.append(next_pasted)
                next_pasted = False
                if line.endswith("/"):
                    lines.append(line[:-1])
                    break
                if line.endswith("\\"):
                    lines.append(line[:-1])
                    if not multiline:
                        continue
                    break
                lines.append(line)
                if multiline:
                    continue
                if not self._pending_input():
                    break
                next_pasted = True
        finally:
            if self.color:
                self.out.write(COLORS["reset"])
                self.out.flush()
            self.line = ""
        while len(lines) > 1 and not lines[-1] and pasted[-1]:  # a paste's last line breaks
            lines.pop()
            pasted.pop()
        return "\n".join(lines)

    # --- Ctrl-C -----------------------------------------------------------------------------
    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """While the body runs, a first Ctrl-C sets :attr:`interrupted` (the caller stops and
        returns to the prompt); a second one raises KeyboardInterrupt."""
        self.interrupted = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
