"""Arguments shared by subcommands, spelled as llama.cpp spells them."""

from __future__ import annotations

import argparse

from ..hub import DEFAULT_MODEL, KNOWN_MODELS


def add_model(p: argparse.ArgumentParser, required: bool = False) -> None:
    names = ", ".join(KNOWN_MODELS)
    p.add_argument(
        "-m",
        "--model",
        default=None if required else DEFAULT_MODEL,
        required=required,
        help=f"GGUF file, or a known model name ({names}); default {DEFAULT_MODEL}",
    )


def add_context(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--ctx-size",
        type=int,
        default=None,
        metavar="N",
        help="context size in tokens (default: the model's, at most 4096)",
    )
    p.add_argument(
        "-t",
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="threads to use (default: all cores)",
    )


def add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--seed", type=int, default=None, help="RNG seed (default: random)")
    p.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy (0.8)")
    p.add_argument("--top-k", type=int, default=40, help="top-k sampling; 0 = off (40)")
    p.add_argument("--top-p", type=float, default=0.95, help="top-p sampling; 1 = off (0.95)")
    p.add_argument("--min-p", type=float, default=0.05, help="min-p sampling; 0 = off (0.05)")
    p.add_argument(
        "--repeat-penalty", type=float, default=1.0, help="penalize repeated tokens; 1 = off (1.0)"
    )
