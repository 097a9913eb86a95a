"""The REPL in a pseudo-terminal (pexpect) on SmolLM2: llama.cpp tutorial command lines,
streaming, reverse prompts, --in-prefix/--in-suffix, Ctrl-C, /reset, /save and /load, Ctrl-D;
and the command line: help, version, and one-line errors for bad flags and files.

Greedy decoding, short contexts and small -n keep them fast; timeouts are generous and nothing
asserts on timing."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
FAST = ["--temp", "0", "-c", "512", "-t", "2"]
PROMPT = r"\r\n\r\n(\x1b\[\?2004h)?> "  # the chat prompt, after a blank line


def plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


class Repl:
    """``python -m rllm.repl ARGS`` in a pty, with its whole transcript kept."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        environ = {**os.environ, "RLLM_HISTORY": "", "TERM": "xterm", "COLUMNS": "200"}
        environ.pop("NO_COLOR", None)
        environ.update(env or {})
        self.log = io.StringIO()
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "rllm.repl", *args],
            cwd=str(ROOT),
            env=environ,
            encoding="utf-8",
            codec_errors="replace",
            timeout=TIMEOUT,
            dimensions=(50, 200),
        )
        self.child.logfile_read = self.log

    @property
    def transcript(self) -> str:
        return self.log.getvalue()

    def expect(self, pattern: str, exact: bool = True) -> str:
        """Wait for ``pattern``; return the output before it."""
        if exact:
            self.child.expect_exact(pattern)
        else:
            self.child.expect(pattern)
        return self.child.before

    def say(self, line: str) -> None:
        self.child.sendline(line)
        self.expect(line)  # the terminal's echo

    def at_prompt(self) -> None:
        """Wait until a completion-mode REPL reads input: it then redraws the open line
        (e.g. "User: ") as the input prompt, after erasing it (\\r ESC [K)."""
        self.expect("\r\x1b[K")

    def ask(self, line: str) -> str:
        """Chat mode: send a message, return the reply (the text up to the next prompt)."""
        self.say(line)
        return plain(self.expect(PROMPT, exact=False)).strip()

    def wait_for_text(self) -> None:
        """Wait until the model is visibly writing (two letters or digits in a row)."""
        self.child.expect(r"(?<![\x1b\[;?0-9])[0-9A-Za-z\u4e00-\u9fff]{2}")

    def finish(self) -> int:
        """Ctrl-D, then wait for the exit; returns the exit status. A Ctrl-D typed before
        the REPL is back at its prompt (the terminal still in line mode) can be lost when
        readline takes over the terminal, so it is repeated until the REPL is gone."""
        for _ in range(TIMEOUT // 5):
            self.child.sendeof()
            if self.child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=5) == 0:
                break
        self.child.close()
        return self.child.exitstatus


@pytest.fixture
def repl_session() -> Iterator[list[Repl]]:
    sessions: list[Repl] = []
    yield sessions
    for s in sessions:  # leave no process behind, and show what happened on failure
        if s.child.isalive():
            s.child.terminate(force=True)
        print(plain(s.transcript)[-3000:])


def start(sessions: list[Repl], *args: str) -> Repl:
    s = Repl(*args)
    sessions.append(s)
    return s


# --- llama.cpp tutorial command lines, as written -------------------------------------------


def test_tutorial_chatml_command(smollm2_path: Path, repl_session: list[Repl]) -> None:
    prefix, suffix = "<|im_start|>user\\n", "<|im_end|>\\n<|im_start|>assistant\\n"
    # fmt: off
    s = start(
        repl_session,
        "-m", str(smollm2_path), "-n", "512", "-co", "-i", "-if",
        "-f", "prompts/chat-with-qwen.txt",
        "--in-prefix", prefix, "--in-suffix", suffix, "-ngl", "80", "-fa",
    )
    # fmt: on
    s.expect("-ngl 80 has no effect")
    s.expect("You are a helpful, friendly assistant.")  # the prompt file, shown
    s.expect("<|im_start|>user")  # -if: the user first, after the prefix
    s.say("What is the capital of France?")
    s.expect("<|im_start|>assistant")  # the suffix, shown after the input
    s.wait_for_text()  # the answer streams ...
    s.expect("<|im_start|>user")  # ... until <|im_end|>, which hands control back
    assert s.finish() == 0
    assert "total time" in s.transcript


def test_tutorial_reverse_prompt_command(smollm2_path: Path, repl_session: list[Repl]) -> None:
    prompt = (  # as the shell passes it: with backslash-n, not line breaks
        "User: 你好\\nAI: 你好啊，我是光屿，要聊聊吗?\\n"
        "User: 好啊!\\nAI: 你想聊聊什么话题呢？\\nUser:"
    )
    # fmt: off
    s = start(
        repl_session,
        "-m", str(smollm2_path), "-n", "-1", "-ngl", "256", "-t", "12", "--color",
        "-r", "User:", "--in-prefix", " ", "-i", "-p", prompt,
    )
    # fmt: on
    s.expect("你想聊聊什么话题呢？")  # escapes processed: one line per turn
    s.expect("User:")  # the prompt ends with the reverse prompt: the user speaks first
    s.at_prompt()
    s.say("Tell me about the sea.")
    s.wait_for_text()
    # -n -1 may go on for ever: stop it. (If the model said "User:" already, this Ctrl-C
    # lands at the prompt, where a single Ctrl-C only prints a hint.)
    s.child.sendintr()
    assert s.finish() == 0
    assert "你好啊，我是光屿" in s.transcript and "\\n" not in plain(s.transcript)


# --- interaction ---------------------------------------------------------------------------


def test_reverse_prompt_returns_control(smollm2_path: Path, repl_session: list[Repl]) -> None:
    # fmt: off
    s = start(
        repl_session, "-m", str(smollm2_path), *FAST, "--color", "off",
        "-p", "1, 2, 3, 4,", "-r", "8,", "-i", "--in-prefix", " ", "-n", "64",
    )
    # fmt: on
    out = plain(s.expect("8,"))
    assert "5, 6, 7" in out  # streamed up to the reverse prompt, where it stopped
    s.say("9, 10,")  # typed after " " (--in-prefix); generation goes on from there
    assert "11, 12" in plain(s.expect("18,"))  # and stops at the next "8,"
    assert s.finish() == 0
    assert "19," not in plain(s.transcript)


def test_in_prefix_and_suffix_reach_the_tokens(
    smollm2_path: Path, repl_session: list[Repl]
) -> None:
    # fmt: off
    s = start(
        repl_session, "-m", str(smollm2_path), *FAST, "--color", "off", "-n", "4",
        "--verbose-prompt", "-if", "-f", "prompts/chat-with-qwen.txt",
        "--in-prefix", "<|im_start|>user\\n",
        "--in-suffix", "<|im_end|>\\n<|im_start|>assistant\\n",
    )
    # fmt: on
    s.expect("number of tokens in prompt = ")
    s.expect("<|im_start|>user")
    s.say("Hi\\")  # a trailing backslash continues the input on the next line
    s.say("there")
    s.expect("number of tokens in input = ")
    s.expect("<|im_start|>user")  # -n 4: control is back
    assert s.finish() == 0
    text = plain(s.transcript)
    tokens = text[text.index("number of tokens in input") :]
    tokens = tokens[: tokens.index("<|im_start|>user")]
    ids = [int(i) for i in re.findall(r"^\s*(\d+) -> ", tokens, re.M)]
    # <|im_start|> user \n Hi \n there <|im_end|> \n <|im_start|> ass istant \n
    assert ids[:3] == [1, 4093, 198] and ids[-6:] == [2, 198, 1, 520, 9531, 198], tokens
    assert ids.count(198) == 4  # the typed line break is there too
    assert "-> 'Hi'" in tokens and "-> 'there'" in tokens


def test_pasted_lines_are_one_input(smollm2_path: Path, repl_session: list[Repl]) -> None:
    s = start(repl_session, "-m", str(smollm2_path), *FAST, "--color", "off", "-n", "1")
    s.expect(PROMPT, exact=False)
    # lines written at once, as a terminal without bracketed paste passes a paste on: one
    # input, so "/system" takes all of it as its text ("first\n/system second")
    s.child.send("/system first\n/system second\n")
    s.expect("system prompt set")
    s.expect(PROMPT, exact=False)
    s.child.send("\x1b[200~/system one\n/system two\x1b[201~\n")  # a bracketed paste
    s.expect("system prompt set")
    s.say("/help")
    s.expect("/save FILE")
    assert s.finish() == 0
    assert plain(s.transcript).count("system prompt set") == 2


def test_ctrl_c_stops_generation_and_the_session_goes_on(
    smollm2_path: Path, repl_session: list[Repl]
) -> None:
    # fmt: off
    s = start(
        repl_session, "-m", str(smollm2_path), *FAST, "--color", "off",
        "-p", "1, 2, 3,", "-i", "-n", "2000", "--in-prefix", " ",
    )
    # fmt: on
    s.expect(" 14, 15,")  # counting on and on
    s.child.sendintr()
    s.at_prompt()
    s.say("100, 101,")  # control is back: type, and generation resumes from the input
    s.expect(" 103, 104,")
    s.child.sendintr()
    s.at_prompt()
    s.say("/timings")
    s.expect("eval time")
    assert s.finish() == 0


def test_ctrl_c_twice_exits(smollm2_path: Path, repl_session: list[Repl]) -> None:
    s = start(repl_session, "-m", str(smollm2_path), *FAST, "--color", "off", "-n", "8")
    s.expect(PROMPT, exact=False)
    s.child.sendintr()
    s.expect("Ctrl-C again")
    s.child.sendintr()
    s.child.expect(pexpect.EOF)
    s.child.close()
    assert s.child.exitstatus == 130
    assert "total time" in s.transcript


def test_chat_reset_save_and_load(
    smollm2_path: Path, tmp_path: Path, repl_session: list[Repl]
) -> None:
    saved = tmp_path / "chat.session"
    s = start(repl_session, "-m", str(smollm2_path), *FAST, "--color", "off", "-n", "12")
    s.expect(PROMPT, exact=False)
    first = s.ask("What is the capital of France?")
    assert first
    s.say(f"/save {saved}")
    n_saved = re.search(r"saved (\d+) tokens, 2 messages", plain(s.expect("> ")))
    assert n_saved, "the /save report"
    second = s.ask("And the capital of Italy?")
    s.say(f"/load {saved}")
    assert f"loaded {n_saved.group(1)} tokens, 2 messages" in plain(s.expect("> "))
    assert s.ask("And the capital of Italy?") == second  # the same conversation again
    s.say("/reset")
    s.expect("conversation reset")
    assert s.ask("What is the capital of France?") == first  # as on a fresh start
    s.say("/load /nonexistent/file")
    assert "cannot load" in plain(s.expect("> "))
    assert s.finish() == 0
    assert saved.stat().st_size > 1000  # the KV cache is in it


def test_colors_only_on_a_terminal(smollm2_path: Path, repl_session: list[Repl]) -> None:
    args = ["-m", str(smollm2_path), *FAST, "--color", "-p", "1, 2,", "-r", "4,"]
    s = start(repl_session, *args, "-i", "--in-prefix", " ")
    s.expect("4,")
    s.say("5,")
    s.expect("14,")
    assert s.finish() == 0
    assert "\x1b[33m1, 2," in s.transcript  # the prompt in yellow
    assert "\x1b[1;32m" in s.transcript  # the user's input in bold green
    piped = run_cli("repl", *args, "-n", "4")
    assert piped.returncode == 0, piped.stderr
    assert "\x1b[" not in piped.stdout and piped.stdout.startswith("1, 2,")


def test_context_shift_and_n_predict(smollm2_path: Path) -> None:
    base = ["repl", "-m", str(smollm2_path), "--temp", "0", "-t", "2", "-p", "1, 2, 3,"]
    out = run_cli(*base, "-c", "64", "-n", "200")  # past the context: it shifts
    assert out.returncode == 0, out.stderr
    assert "200 runs" in out.stderr
    out = run_cli(*base, "-c", "64", "-n", "-2")  # until the context is full
    assert out.returncode == 0, out.stderr
    n = int(re.search(r"/\s+(\d+) runs", out.stderr).group(1))  # type: ignore[union-attr]
    assert 50 <= n <= 64


def test_completion_options(smollm2_path: Path) -> None:
    base = ["repl", "-m", str(smollm2_path), "-t", "2", "-c", "128", "-p", "Once upon a time"]
    sampled = [run_cli(*base, "-n", "8", "--temp", "1", "-s", "42") for _ in range(2)]
    assert sampled[0].returncode == 0, sampled[0].stderr
    assert sampled[0].stdout == sampled[1].stdout  # a seed makes sampling reproducible
    # fmt: off
    out = run_cli(
        *base, "-n", "8", "--temp", "0", "--no-display-prompt", "--keep", "-1",
        "--rope-freq-base", "10000", "--rope-scale", "1", "--repeat-last-n", "-1",
        "--presence-penalty", "0.5", "--frequency-penalty", "0.5", "-e", "--no-timings",
    )
    # fmt: on
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() and not out.stdout.startswith("Once upon")
    assert "total time" not in out.stderr


# --- the command line ----------------------------------------------------------------------


def run_cli(*args: str, module: str = "rllm.repl") -> subprocess.CompletedProcess[str]:
    if args and args[0] in ("repl", "chat", "run", "info") and module == "rllm.repl":
        module = "rllm"
    env = {**os.environ, "RLLM_HISTORY": ""}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(ROOT),
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_help_and_version() -> None:
    out = run_cli("--help", module="rllm")
    assert out.returncode == 0
    for name in ("run", "repl", "chat", "info"):
        assert re.search(rf"^\s+{name}\s+\S", out.stdout, re.M), name
    for sub in ("repl", "chat"):
        out = run_cli(sub, "--help")
        assert out.returncode == 0
        for flag in ("-cnv", "--in-prefix", "--reverse-prompt", "--keep", "-ngl", "/save"):
            assert flag in out.stdout, (sub, flag)
    out = run_cli("--help")  # python -m rllm.repl
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m rllm.repl")
    version = run_cli("--version", module="rllm")
    assert version.returncode == 0 and version.stdout.startswith("rllm ")
    assert run_cli("--version").stdout == version.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["-n", "-3"], "must be >= -2"),
        (["-c", "many"], "invalid integer"),
        (["--color", "purple"], "invalid choice"),
        (["--top-p", "1.5"], "top_p must be in [0, 1]"),
        (["--chat-template", "nonsense"], "unknown chat template 'nonsense'"),
        (["-p", "x", "-f", "y.txt"], "not both"),
    ],
)
def test_bad_flags_are_usage_errors(args: list[str], message: str) -> None:
    for command in (["repl"], ["chat"], []):
        out = run_cli(*command, "-m", "whatever.gguf", *args)
        assert out.returncode == 2, (command, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr
        assert out.stderr.strip().count("\n") == 0, out.stderr


def test_bad_files_are_one_line_errors(tmp_path: Path, smollm2_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\x00" * 64)
    cases = [
        (["-m", str(tmp_path / "missing.gguf")], "missing.gguf"),
        (["-m", str(junk)], "not a GGUF file"),
        (["-m", str(smollm2_path), "-f", str(tmp_path / "none.txt")], "cannot read prompt file"),
    ]
    for args, message in cases:
        for command in (["repl"], ["chat"], []):
            out = run_cli(*command, *args)
            assert out.returncode == 1, (args, out.stderr)
            assert message in out.stderr and "Traceback" not in out.stderr
            assert out.stderr.strip().count("\n") == 0, out.stderr


def test_prompt_files_ship_with_the_package() -> None:
    from rllm.cli.common import PROMPTS

    shipped = sorted(p.name for p in PROMPTS.glob("*.txt"))
    assert "chat-with-qwen.txt" in shipped and len(shipped) >= 4
    assert sorted(p.name for p in (ROOT / "prompts").glob("*.txt")) == shipped
