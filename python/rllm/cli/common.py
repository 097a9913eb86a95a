"""Arguments shared by subcommands, spelled as llama.cpp spells them, and the parser class
that reports a usage error on one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Protocol

from ..hub import DEFAULT_MODEL, DEFAULT_QUANT, KNOWN_MODELS, download, parse_hf_spec

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"  # prompt files shipped with rllm


class Options(Protocol):
    """Where options go: a parser, or one of its argument groups."""

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action: ...


class UsageError(Exception):
    """A bad combination or value of options: reported like an argparse error (exit 2)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block) and exit with 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def add_model(p: Options, required: bool = False) -> None:
    names = ", ".join(KNOWN_MODELS)
    p.add_argument(
        "-m",
        "--model",
        default=None if required else DEFAULT_MODEL,
        required=required,
        metavar="FNAME",
        help=f"GGUF file, or a known model name ({names}); default {DEFAULT_MODEL}",
    )
    add_hf(p)


def add_hf(p: Options, append: bool = False) -> None:
    """llama.cpp's -hf / -hff / -hft: a model from a Hugging Face repository, downloaded
    into the Hugging Face cache before the command runs (see :func:`resolve_hf`)."""
    p.add_argument(
        "-hf",
        "-hfr",
        "--hf-repo",
        dest="hf_repo",
        action="append" if append else "store",
        default=None,
        metavar="USER/MODEL[:QUANT]",
        help=f"model from a Hugging Face repository (instead of -m); QUANT picks the file, "
        f"case-insensitive, default {DEFAULT_QUANT}, else the first GGUF file"
        + (" (repeatable)" if append else ""),
    )
    p.add_argument(
        "-hff",
        "--hf-file",
        dest="hf_file",
        default=None,
        metavar="FILE",
        help="file (or glob) in the -hf repository, instead of QUANT",
    )
    p.add_argument(
        "-hft",
        "--hf-token",
        dest="hf_token",
        default=None,
        metavar="TOKEN",
        help="Hugging Face access token (default: HF_TOKEN, or the saved login)",
    )


def resolve_hf(args: argparse.Namespace) -> None:
    """Download the model of -hf (every shard of a split one; offline mode and the cache as
    huggingface_hub has them) and put its local path in ``args.model``, so that subcommands
    only ever see -m. Does nothing for commands without -hf."""
    specs = getattr(args, "hf_repo", None)
    if not specs:
        if getattr(args, "hf_file", None):
            raise UsageError("-hff names a file of the -hf repository; give -hf too")
        return
    paths = []
    for spec in specs if isinstance(specs, list) else [specs]:
        try:
            repo_id, quant = parse_hf_spec(spec)
        except ValueError as e:
            raise UsageError(f"-hf: {e}") from None
        if quant and args.hf_file:
            raise UsageError("give the file with -hf USER/MODEL:QUANT or with -hff, not both")
        paths.append(str(download(repo_id, args.hf_file, quant=quant, token=args.hf_token)))
    args.model = [*(args.model or []), *paths] if isinstance(specs, list) else paths[0]


def add_prompt(p: Options) -> None:
    p.add_argument("-p", "--prompt", default=None, help="prompt to start generation with")
    p.add_argument(
        "-f", "--file", default=None, metavar="FNAME", help="read the prompt from a file"
    )


def add_n_predict(p: Options, default: int) -> None:
    p.add_argument(
        "-n",
        "--n-predict",
        type=int_at_least(-2),
        default=default,
        metavar="N",
        help=f"tokens to predict; -1 = until end of text, -2 = until the context is full "
        f"({default})",
    )


def add_context(p: Options) -> None:
    p.add_argument(
        "-c",
        "--ctx-size",
        type=int_at_least(0),
        default=None,
        metavar="N",
        help="context size in tokens; 0 = the model's training context "
        "(default: the model's, at most 4096)",
    )
    p.add_argument(
        "-t",
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="threads to use; -1 = all cores (default: all cores)",
    )
    p.add_argument(
        "--mmap",
        action=argparse.BooleanOptionalAction,
        default=None,
        dest="use_mmap",
        help="read the weights from a map of the file (--mmap: no copy, pages shared between "
        "processes) or a private huge-page copy (--no-mmap: faster decode); default: copy "
        "when the machine has huge pages and the file takes at most half the free memory",
    )


def add_rope(p: Options) -> None:
    p.add_argument(
        "--rope-scale",
        type=float,
        default=None,
        metavar="N",
        help="RoPE context scaling factor: expands the context by N (= --rope-freq-scale 1/N)",
    )
    p.add_argument(
        "--rope-freq-base",
        type=float,
        default=None,
        metavar="N",
        help="RoPE base frequency (default: the model's)",
    )
    p.add_argument(
        "--rope-freq-scale",
        type=float,
        default=None,
        metavar="N",
        help="RoPE frequency scaling factor: expands the context by 1/N (default: the model's)",
    )


def rope_settings(args: argparse.Namespace) -> tuple[float | None, float | None]:
    """(rope_freq_base, rope_freq_scale) from --rope-freq-base / --rope-scale /
    --rope-freq-scale; 0 means the model's own value, as in llama.cpp."""
    scale = args.rope_freq_scale
    if args.rope_scale:
        scale = 1.0 / args.rope_scale
    return args.rope_freq_base or None, scale or None


def add_sampling(p: Options) -> None:
    p.add_argument(
        "-s",
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="RNG seed; -1 = random (default: random)",
    )
    p.add_argument(
        "--temp", type=float, default=0.8, metavar="N", help="temperature; 0 = greedy (0.8)"
    )
    p.add_argument(
        "--top-k", type=int, default=40, metavar="N", help="top-k sampling; 0 = off (40)"
    )
    p.add_argument(
        "--top-p", type=float, default=0.95, metavar="N", help="top-p sampling; 1 = off (0.95)"
    )
    p.add_argument(
        "--min-p", type=float, default=0.05, metavar="N", help="min-p sampling; 0 = off (0.05)"
    )
    p.add_argument(
        "--repeat-penalty",
        type=float,
        default=1.0,
        metavar="N",
        help="penalize repeated tokens; 1 = off (1.0)",
    )
    p.add_argument(
        "--repeat-last-n",
        type=int_at_least(-1),
        default=64,
        metavar="N",
        help="last N tokens to penalize; 0 = none, -1 = the whole context (64)",
    )
    p.add_argument(
        "--presence-penalty",
        type=float,
        default=0.0,
        metavar="N",
        help="presence penalty; 0 = off (0.0)",
    )
    p.add_argument(
        "--frequency-penalty",
        type=float,
        default=0.0,
        metavar="N",
        help="frequency penalty; 0 = off (0.0)",
    )


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of Model.generate / Sampler from the sampling options."""
    return {
        "temperature": args.temp,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repeat_penalty": args.repeat_penalty,
        "repeat_last_n": args.repeat_last_n,
        "presence_penalty": args.presence_penalty,
        "frequency_penalty": args.frequency_penalty,
        "seed": None if args.seed is None or args.seed < 0 else args.seed,
    }


def add_gpu_compat(p: Options) -> None:
    """llama.cpp's GPU options, accepted so that its command lines run unchanged."""
    p.add_argument(
        "-ngl",
        "--n-gpu-layers",
        "--gpu-layers",
        type=int,
        default=None,
        metavar="N",
        help="accepted for llama.cpp compatibility; rllm runs on the CPU",
    )
    p.add_argument(
        "-fa",
        "--flash-attn",
        nargs="?",
        const="on",
        default=None,
        choices=["on", "off", "auto"],
        metavar="on|off|auto",
        help="accepted for llama.cpp compatibility; rllm's CPU attention has no variants",
    )


def gpu_notes(args: argparse.Namespace) -> list[str]:
    """Notes for llama.cpp GPU options that have no effect here."""
    notes = []
    if args.n_gpu_layers:
        notes.append(f"-ngl {args.n_gpu_layers} has no effect: rllm runs on the CPU")
    if args.flash_attn == "on":
        notes.append("-fa has no effect: rllm's CPU attention has no flash variant")
    return notes


def read_prompt(args: argparse.Namespace) -> str | None:
    """The text of -p, or of the file -f names; None when neither is given."""
    if args.file is not None and args.prompt is not None:
        raise UsageError("give the prompt with -p or with -f, not both")
    if args.file is None:
        prompt: str | None = args.prompt
        return prompt
    path = Path(args.file)
    if not path.exists() and not path.is_absolute() and path.parts[0] == "prompts":
        shipped = PROMPTS.joinpath(*path.parts[1:])  # rllm's own prompts/, from anywhere
        if shipped.is_file():
            path = shipped
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise OSError(f"cannot read prompt file {args.file}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"prompt file {args.file} is not UTF-8 text") from None


def note(message: str) -> None:
    print(f"rllm: note: {message}", file=sys.stderr)
