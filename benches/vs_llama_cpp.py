"""rllm beside llama.cpp on the same GGUF file and thread count, in one run.

Each repetition runs rllm then llama-bench (A/B, alternating, so drift hits both) for prompt
processing (ppP: a P-token prompt in one batch) and generation (tgN: N single-token decodes),
and records each process's peak RSS. Prints medians and the ratio rllm / llama.cpp.

    python benches/vs_llama_cpp.py -m MODEL.gguf [-m MODEL2.gguf ...] \\
        --llama-bench PATH/llama-bench [--llama-python PATH/python] -p 512 -n 128 -t 1,2 -r 3

llama-bench comes from a llama.cpp build (e.g. the source vendored in llama-cpp-python's
sdist); it is used for comparison only and is never a dependency of rllm.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from device_scaling import ENGINE_IMPORT  # beside this script
from rllm.bench import system_info

# Run in a child process so that its peak RSS is rllm's alone. The engine alone, as
# llama-bench runs llama.cpp's: the extension module without the package's __init__ (whose
# chat templates and tokenizer glue import jinja2 and tokenizers, ~18 MiB of module code that
# llama-bench has no counterpart for), so the RSS compares engines plus this interpreter.
# The user-facing load, tokenizer included, is timed in RLLM_LOAD_CHILD.
RLLM_CHILD = (
    ENGINE_IMPORT
    + r"""
import json, time
import numpy as np
path, p, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# The interpreter's resident memory (Python, numpy, the extension) before the model: VmRSS,
# since the peak (ru_maxrss) still holds the parent's size from before the exec.
with open("/proc/self/status") as f:
    kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
out = {"interp_rss": kib / 1024}
model = _rllm.Model(path)
rng = np.random.default_rng(0)
if p:
    ids = rng.integers(100, model.n_vocab - 100, p).tolist()
    ctx = _rllm.Context(model, n_ctx=p + n, n_threads=t, n_batch=max(p, 1))
    ctx.eval(ids[:8])                       # warm-up
    ctx.reset()
    start = time.perf_counter()
    ctx.eval(ids)
    out["pp"] = p / (time.perf_counter() - start)
    del ctx                                 # as llama-bench frees a test's context
if n:
    ctx = _rllm.Context(model, n_ctx=p + n, n_threads=t)
    ctx.eval([1]); ctx.reset()              # warm-up
    tok = 1
    start = time.perf_counter()
    for _ in range(n):
        logits = ctx.eval([tok])
        tok = int(logits.argmax())
    out["tg"] = n / (time.perf_counter() - start)
print(json.dumps(out))
"""
)


def run(cmd: list[str]) -> tuple[str, float]:
    """stdout and peak RSS (MiB) of one process."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
        # wait4 (not Popen.wait) so that the child's own resource usage comes back.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"{cmd[0]} failed ({proc.returncode}):\n{err.read()[-2000:]}")
    return out, usage.ru_maxrss / 1024


def rllm_once(model: str, p: int, n: int, t: int) -> tuple[dict, float]:
    out, rss = run([sys.executable, "-c", RLLM_CHILD, model, str(p), str(n), str(t)])
    return json.loads(out), rss


def llama_once(bench: str, model: str, p: int, n: int, t: int) -> tuple[dict, float]:
    cmd = [bench, "-m", model, "-p", str(p), "-n", str(n), "-t", str(t), "-r", "1", "-o", "json"]
    out, rss = run(cmd)
    res = {}
    for row in json.loads(out):
        key = "pp" if row["n_prompt"] and not row["n_gen"] else "tg"
        res[key] = row["avg_ts"]
    return res, rss


RLLM_LOAD_CHILD = r"""
import sys, time
import rllm
start = time.perf_counter()
rllm.Model(sys.argv[1])
print(time.perf_counter() - start)
"""

LLAMA_LOAD_CHILD = r"""
import sys, time
from llama_cpp import Llama
start = time.perf_counter()
Llama(sys.argv[1], n_ctx=512, n_threads=1, verbose=False)
print(time.perf_counter() - start)
"""


def llama_load_s(python: str, model: str) -> float:
    """llama.cpp's load time through llama-cpp-python (llama-bench does not report it)."""
    out, _ = run([python, "-c", LLAMA_LOAD_CHILD, model])
    return float(out)


def bench_model(args: argparse.Namespace, model: str) -> list[str]:
    """Markdown table rows for one model."""
    name = Path(model).name
    rows = []
    rss: dict[str, list[float]] = {"rllm": [], "llama.cpp": []}
    rss_engine: list[float] = []  # rllm's peak less its interpreter's
    loads: dict[str, list[float]] = {"rllm": [], "llama.cpp": []}
    for t in (int(x) for x in args.t.split(",")):
        ours: dict[str, list[float]] = {"pp": [], "tg": []}
        theirs: dict[str, list[float]] = {"pp": [], "tg": []}
        for _ in range(args.r):
            for test, (p, n) in (("pp", (args.p, 0)), ("tg", (0, args.n))):
                a, ra = rllm_once(model, p, n, t)
                b, rb = llama_once(args.llama_bench, model, p, n, t)
                ours[test].append(a[test])
                theirs[test].append(b[test])
                rss["rllm"].append(ra)
                rss_engine.append(ra - a["interp_rss"])
                rss["llama.cpp"].append(rb)
        for test, size in (("pp", args.p), ("tg", args.n)):
            a, b = statistics.median(ours[test]), statistics.median(theirs[test])
            row = f"| {name} | {t} | {test}{size} | {a:.1f} | {b:.1f} | {a / b:.2f} |"
            print(row, flush=True)
            rows.append(row)
    loads["rllm"] = [
        float(run([sys.executable, "-c", RLLM_LOAD_CHILD, model])[0]) for _ in range(args.r)
    ]
    if args.llama_python:
        loads["llama.cpp"] = [llama_load_s(args.llama_python, model) for _ in range(args.r)]
    la = statistics.median(loads["rllm"])
    lb = statistics.median(loads["llama.cpp"]) if loads["llama.cpp"] else float("nan")
    row = f"| {name} | | load (s) | {la:.3f} | {lb:.3f} | {la / lb:.2f} |"
    print(row)
    rows.append(row)
    a, b = max(rss["rllm"]), max(rss["llama.cpp"])
    row = f"| {name} | | peak RSS (MiB) | {a:.0f} | {b:.0f} | {a / b:.2f} |"
    print(row, flush=True)
    rows.append(row)
    # The same less the Python interpreter, numpy and the extension loaded before the model
    # (~26 MiB, which llama-bench, a C++ program, has no counterpart for): the engines alone.
    a = max(rss_engine)
    row = f"| {name} | | peak RSS less interpreter (MiB) | {a:.0f} | {b:.0f} | {a / b:.2f} |"
    print(row, flush=True)
    rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", action="append", required=True, help="repeatable")
    ap.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH", "llama-bench"))
    ap.add_argument(
        "--llama-python",
        default=os.environ.get("LLAMA_PYTHON"),
        help="a Python with llama-cpp-python, to time llama.cpp's model load",
    )
    ap.add_argument("-p", type=int, default=512, help="prompt tokens (pp test)")
    ap.add_argument("-n", type=int, default=128, help="generated tokens (tg test)")
    ap.add_argument("-t", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("-r", type=int, default=3, help="repetitions (A/B pairs)")
    args = ap.parse_args()
    print(system_info())
    print(f"pp{args.p} / tg{args.n}, {args.r} A/B repetitions, medians; ratio = rllm / llama.cpp")
    print()
    print("| model | threads | test | rllm | llama.cpp | ratio |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for model in args.model:
        bench_model(args, str(Path(model).resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
