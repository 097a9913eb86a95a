"""Install a built rllm wheel into a fresh virtual environment with no Rust toolchain on PATH,
time the install, and run a generation with it (the Python API and the ``rllm`` command).

Usage: python .ci/check_wheel.py dist/rllm-*.whl [--model NAME_OR_PATH]

The model defaults to the short name smollm2-135m, found in rllm's cache ($RLLM_CACHE, default
~/.cache/rllm) or fetched. Dependencies come from PyPI (or pip's cache) as wheels only
(--only-binary=:all:), so nothing is compiled. Exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import zipfile
from pathlib import Path

TOOLCHAIN = ("cargo", "rustc", "rustup")
GENERATE = """
import os, sys, time, rllm, rllm._rllm as ext
here = os.path.realpath(rllm.__file__)
assert sys.prefix != sys.base_prefix and here.startswith(os.path.realpath(sys.prefix)), here
print(f"rllm {rllm.__version__} from {rllm.__file__}")
print(f"kernels: {ext.active_isa()} (this CPU: {', '.join(ext.available_isas())})")
model = rllm.Model(sys.argv[1], n_ctx=256)
start = time.perf_counter()
text = model.generate("The capital of France is", max_tokens=16, temperature=0)
seconds = time.perf_counter() - start
assert text.strip(), "empty generation"
print(f"generated {model.timings.eval_tokens} tokens in {seconds:.2f} s: {text!r}")
"""


def step(title: str) -> None:
    print(f"--- {title}", flush=True)


def check_contents(wheel: Path) -> None:
    """The wheel is one abi3 wheel holding the extension, its stubs and py.typed."""
    name = wheel.name
    if "-cp39-abi3-" not in name:
        sys.exit(f"{name}: expected an abi3 wheel for Python >= 3.9 (cp39-abi3)")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    ext = [n for n in names if n.startswith("rllm/_rllm.") and n.endswith((".so", ".pyd"))]
    for wanted in ("rllm/_rllm.pyi", "rllm/py.typed", "rllm/__init__.py"):
        if wanted not in names:
            sys.exit(f"{name}: {wanted} is missing")
    if len(ext) != 1:
        sys.exit(f"{name}: expected one extension module, found {ext}")
    size = wheel.stat().st_size
    print(f"{name}: {size / 1e6:.2f} MB, {len(names)} files, extension {ext[0]}")


def clean_env(venv_dir: Path) -> dict[str, str]:
    """The environment of the fresh venv: its own bin first, no Rust toolchain, no source
    tree on sys.path."""
    bindir = venv_dir / ("Scripts" if os.name == "nt" else "bin")
    keep = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry and not any(shutil.which(t, path=entry) for t in TOOLCHAIN):
            keep.append(entry)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for k in ("CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "CARGO"):
        env.pop(k, None)
    env["PATH"] = os.pathsep.join([str(bindir), *keep])
    env["VIRTUAL_ENV"] = str(venv_dir)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    for tool in TOOLCHAIN:
        found = shutil.which(tool, path=env["PATH"])
        if found:
            sys.exit(f"{tool} is still on PATH: {found}")
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    shown = ["<generation script>" if "\n" in c else c for c in cmd]
    print("$ " + " ".join(shown), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("wheel", type=Path)
    p.add_argument("--model", default="smollm2-135m", help="model to generate with")
    args = p.parse_args()
    wheel = args.wheel.resolve()
    step("wheel contents")
    check_contents(wheel)
    with tempfile.TemporaryDirectory(prefix="rllm-wheel-") as tmp:
        work = Path(tmp)
        step("fresh virtual environment, no Rust toolchain on PATH")
        venv.create(work / "venv", with_pip=True)
        env = clean_env(work / "venv")
        python = shutil.which("python", path=env["PATH"]) or "python"
        print(f"{python}; cargo, rustc, rustup: not on PATH")

        step("pip install the wheel (dependencies as wheels only)")
        pip = [python, "-m", "pip", "install", "--quiet", "--only-binary=:all:"]
        full = run([*pip, str(wheel)], env, work)
        alone = run([*pip, "--no-deps", "--force-reinstall", str(wheel)], env, work)

        step("generate with the installed wheel")
        run([python, "-c", GENERATE, args.model], env, work)
        rllm_cmd = shutil.which("rllm", path=env["PATH"]) or "rllm"
        run([rllm_cmd, "run", "-m", args.model, "-p", "Hello", "-n", "8", "--temp", "0"], env, work)
        scalar = {**env, "RLLM_ISA": "scalar"}  # the fallback for CPUs without SIMD kernels
        run([python, "-c", GENERATE, args.model], scalar, work)

    step("summary")
    print(f"pip install {wheel.name}: {full:.1f} s with its dependencies, {alone:.1f} s alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
