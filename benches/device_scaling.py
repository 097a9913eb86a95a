"""Thread scaling of rllm beside llama.cpp, 1 to 16 threads, on random-weight models of real
shapes: prompt processing (ppP) and generation (tgN) tokens/s per thread count.

Self-contained for a many-core machine with no network and no Rust toolchain. It needs a
Python 3.9+ with numpy (the ``gguf`` package too, else llama.cpp's ``gguf-py`` is used, which
needs PyYAML), cmake and a C++ compiler (ninja if present), and:

- an rllm wheel (``maturin build --release``), unpacked into the work folder: no pip, no
  dependencies (only the engine ``rllm._rllm`` and ``rllm.quantize`` are used, so tokenizers
  and jinja2 need not be installed);
- a llama.cpp source folder: llama-bench is built from it, CPU only, native flags;
- ``make_models.py`` (beside this script, or ``--make-models``): writes the models.

    python3 device_scaling.py --wheel rllm-*.whl --llama-src llama.cpp --work /tmp/scaling

Every step skips what is already done (llama-bench built, wheel unpacked, model written), so a
run that is cut short resumes where it stopped; ``--stage`` runs one step alone. Each result row
is printed as soon as it is measured. Each repetition runs rllm then llama-bench (A/B) for each
test; the table holds medians, with each engine's speed-up over its own 1-thread speed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import types
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Imports rllm's engine without the package's __init__ (which needs tokenizers and jinja2):
# an empty package module over the unpacked wheel's folder.
ENGINE_IMPORT = r"""
import importlib.util, sys, types
_spec = importlib.util.find_spec("rllm")
_pkg = types.ModuleType("rllm")
_pkg.__path__ = list(_spec.submodule_search_locations)
sys.modules["rllm"] = _pkg
from rllm import _rllm
"""

# One engine run in a child process (as llama-bench runs in its own): ppP is one P-token
# prompt in one batch after a warm-up, tgN is N single-token steps from an empty cache.
RLLM_CHILD = (
    ENGINE_IMPORT
    + r"""
import json, time
import numpy as np
path, test, size, t = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = _rllm.Model(path)
if test == "pp":
    ids = np.random.default_rng(0).integers(100, model.n_vocab - 100, size).tolist()
    ctx = _rllm.Context(model, n_ctx=size, n_threads=t, n_batch=size)
    ctx.eval(ids[:8])
    ctx.reset()
    start = time.perf_counter()
    ctx.eval(ids)
else:
    ctx = _rllm.Context(model, n_ctx=size + 1, n_threads=t)
    ctx.eval([1])
    ctx.reset()
    tok = 1
    start = time.perf_counter()
    for _ in range(size):
        tok = int(ctx.eval([tok]).argmax())
print(json.dumps(size / (time.perf_counter() - start)))
"""
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sh(cmd: list[str], **kw: object) -> subprocess.CompletedProcess:
    log("+ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


# --- steps ---------------------------------------------------------------------------------


def build_llama_bench(src: Path, build: Path) -> Path:
    """llama-bench from `src`, CPU only, static, native flags; skipped when built."""
    exe = build / "bin" / "llama-bench"
    if exe.exists():
        return exe
    if not (src / "CMakeLists.txt").exists():
        sys.exit(f"{src} is not a llama.cpp source folder (no CMakeLists.txt)")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DGGML_NATIVE=ON",
        "-DGGML_CUDA=OFF",
        "-DGGML_CCACHE=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=OFF",
    ]
    sh(["cmake", "-S", str(src), "-B", str(build), *gen, *flags])
    sh(["cmake", "--build", str(build), "--target", "llama-bench", "-j", str(os.cpu_count())])
    if not exe.exists():
        sys.exit(f"the build did not produce {exe}")
    return exe


def unpack_wheel(wheel: Path, site: Path) -> None:
    """Unpack the wheel into `site` (a wheel is a zip of the installed files); skipped when
    this wheel is already there (by content: a rebuilt wheel keeps its name)."""
    stamp = site / ".wheel"
    digest = f"{wheel.name} {hashlib.sha256(wheel.read_bytes()).hexdigest()}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    for so in site.glob("rllm/_rllm*"):
        so.chmod(0o755)
    stamp.write_text(digest)


def python_path(site: Path, llama_src: Path) -> list[str]:
    """The import path for this process and the children: the wheel, and llama.cpp's gguf-py
    where no gguf package is installed. Exits naming what is missing."""
    paths = [str(site)]
    if importlib.util.find_spec("numpy") is None:
        sys.exit("numpy is missing (pip install numpy, from a local wheel if offline)")
    if importlib.util.find_spec("gguf") is None:
        paths.append(str(llama_src / "gguf-py"))
    sys.path[:0] = paths
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        sys.exit(f"cannot import gguf ({e}): install the gguf package, or PyYAML for gguf-py")
    return paths


def import_engine() -> types.ModuleType:
    """rllm as make_models.py uses it (GGUFFile, quantize_model, rllm.quantize.PRESETS), on
    the engine alone."""
    scope: dict[str, object] = {}
    exec(ENGINE_IMPORT, scope)
    rllm = sys.modules["rllm"]
    quantize = importlib.import_module("rllm.quantize")
    setattr(rllm, "GGUFFile", rllm._rllm.GGUFFile)  # noqa: B010 (a stub package)
    setattr(rllm, "quantize_model", quantize.quantize_model)  # noqa: B010
    return rllm


def write_tokenizer(path: Path) -> None:
    """A small SentencePiece-style vocabulary (<unk>, <s>, </s>, the 256 byte tokens) for
    make_models.py to copy and pad to each shape's vocabulary size: llama.cpp loads it, and
    neither engine tokenizes text here."""
    if path.exists():
        return
    import gguf

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types_ = [2, 3, 3] + [6] * 256  # UNKNOWN, CONTROL, CONTROL, BYTE
    w = gguf.GGUFWriter(str(path) + ".part", "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types(types_)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    Path(str(path) + ".part").replace(path)


def make_models(args: argparse.Namespace, tokenizer: Path) -> list[Path]:
    """The models, written by make_models.py in this process (files that exist are kept)."""
    import_engine()
    spec = importlib.util.spec_from_file_location("make_models", args.make_models)
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load {args.make_models}")
    mm = importlib.util.module_from_spec(spec)
    sys.modules["make_models"] = mm  # its dataclasses look their module up
    spec.loader.exec_module(mm)
    out = args.work / "models"
    argv = ["--types", args.types, "--out-dir", str(out), "--tokenizer-from", str(tokenizer)]
    for shape in args.shapes.split(","):
        argv += ["--shape", shape]
    if mm.main(argv):
        sys.exit("make_models.py failed")
    return [
        out / f"{shape}-random.{ty.strip().upper()}.gguf"
        for shape in args.shapes.split(",")
        for ty in args.types.split(",")
    ]


# --- measuring -----------------------------------------------------------------------------


def rllm_ts(env: dict[str, str], model: Path, test: str, size: int, t: int) -> float:
    cmd = [sys.executable, "-c", RLLM_CHILD, str(model), test, str(size), str(t)]
    out = subprocess.run(cmd, check=True, env=env, stdout=subprocess.PIPE, text=True).stdout
    return float(json.loads(out))


def llama_ts(bench: Path, model: Path, test: str, size: int, t: int) -> float:
    p, n = (size, 0) if test == "pp" else (0, size)
    cmd = [str(bench), "-m", str(model), "-p", str(p), "-n", str(n), "-t", str(t)]
    cmd += ["-r", "1", "-o", "json"]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return float(json.loads(out.stdout)[0]["avg_ts"])


def header(bench: Path, llama_src: Path) -> None:
    from rllm.bench import system_info

    print(system_info())
    rev = subprocess.run(
        ["git", "-C", str(llama_src), "rev-parse", "--short", "HEAD"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ).stdout.strip()
    print(f"llama.cpp {rev or '(no git revision)'}: {bench}")


def measure(args: argparse.Namespace, bench: Path, models: list[Path], env: dict[str, str]):
    threads = [int(x) for x in args.threads.split(",")]
    tests = (("pp", args.p), ("tg", args.n))
    print(f"medians of {args.r} A/B repetitions, t/s (speed-up over the same engine's 1 thread)")
    print()
    cols = " | ".join(f"{k}{s} rllm | {k}{s} llama.cpp | ratio" for k, s in tests)
    print(f"| model | threads | {cols} |")
    print("| --- | ---: |" + " ---: | ---: | ---: |" * len(tests), flush=True)
    for model in models:
        base: dict[tuple[str, str], float] = {}
        for t in threads:
            cells = []
            for test, size in tests:
                ours, theirs = [], []
                for _ in range(args.r):
                    ours.append(rllm_ts(env, model, test, size, t))
                    theirs.append(llama_ts(bench, model, test, size, t))
                a, b = statistics.median(ours), statistics.median(theirs)
                base.setdefault((test, "a"), a)
                base.setdefault((test, "b"), b)
                cells += [
                    f"{a:.1f} ({a / base[test, 'a']:.1f}x)",
                    f"{b:.1f} ({b / base[test, 'b']:.1f}x)",
                    f"{a / b:.2f}",
                ]
            print(f"| {model.name} | {t} | " + " | ".join(cells) + " |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--wheel", type=Path, required=True, help="rllm wheel (.whl)")
    ap.add_argument("--llama-src", type=Path, required=True, help="llama.cpp source folder")
    ap.add_argument("--work", type=Path, default=Path("device-scaling"), help="default %(default)s")
    ap.add_argument("--make-models", type=Path, default=HERE / "make_models.py")
    ap.add_argument("--llama-bench", type=Path, help="an existing llama-bench (no build)")
    ap.add_argument("--tokenizer-from", type=Path, help="a GGUF whose tokenizer the models copy")
    ap.add_argument("--shapes", default="Llama-3.2-1B,Llama-3.1-8B", help="make_models shapes")
    ap.add_argument("--types", default="Q4_K_M,Q4_0", help="quantization presets")
    ap.add_argument("-t", "--threads", default="1,2,4,8,16", help="default %(default)s")
    ap.add_argument("-p", type=int, default=512, help="prompt tokens (pp test)")
    ap.add_argument("-n", type=int, default=128, help="generated tokens (tg test)")
    ap.add_argument("-r", type=int, default=3, help="A/B repetitions")
    ap.add_argument("--stage", choices=["all", "build", "models", "bench"], default="all")
    args = ap.parse_args()
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)

    bench = args.llama_bench or build_llama_bench(args.llama_src, args.work / "llama-build")
    if args.stage == "build":
        return 0
    site = args.work / "site"
    unpack_wheel(args.wheel.resolve(), site)
    paths = python_path(site, args.llama_src.resolve())
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    tokenizer = args.tokenizer_from or args.work / "tokenizer.gguf"
    write_tokenizer(tokenizer)
    models = make_models(args, tokenizer)
    if args.stage == "models":
        return 0
    header(bench, args.llama_src)
    measure(args, bench, models, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
