"""Random-weight GGUF models of real shapes, for measuring speed at realistic sizes.

Writes an F16 base model with the tensor names, shapes and metadata that llama.cpp's
converter writes for each architecture, filled with seeded random normal weights (std 0.02,
norms near 1.0), then quantizes it with ``rllm quantize`` to each requested type. Speed
depends on shapes and types only, so these files time like the real models; their text is
noise.

    python benches/make_models.py --shape Llama-3.2-1B --types Q4_K_M,Q4_0
    python benches/make_models.py --shape all --dry-run       # tensor tables and sizes only

Shapes (from each model's published config.json):

| shape | arch | n_embd | n_layer | n_head | n_head_kv | n_ff | n_vocab | rope theta | output |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
| Llama-3.2-1B | llama | 2048 | 16 | 32 | 8 | 8192 | 128256 | 500000 | tied |
| Llama-3.2-3B | llama | 3072 | 28 | 24 | 8 | 8192 | 128256 | 500000 | tied |
| Llama-3.1-8B | llama | 4096 | 32 | 32 | 8 | 14336 | 128256 | 500000 | own |
| Qwen2.5-7B | qwen2 | 3584 | 28 | 28 | 4 | 18944 | 152064 | 1000000 | own |

plus ``tiny-llama`` and ``tiny-qwen2`` (two small layers) for a quick test. The Llama shapes
carry Llama 3's ``rope_freqs`` tensor (rope_scaling "llama3": factor 32 for 3.2, 8 for 3.1),
computed as llama.cpp's converter does; Qwen2.5 has Q/K/V biases.

Tokenizer: every ``tokenizer.*`` key is copied from a real GGUF (``--tokenizer-from``;
default for llama shapes SmolLM2-135M, gpt2 BPE, 49,152 tokens, the only llama-family BPE
tokenizer in the model folder; for qwen2 shapes Qwen2.5-Coder-0.5B, 151,936 tokens). When
the tokenizer has fewer tokens than the real model's vocabulary, the token list is padded
with ``[PAD<id>]`` tokens of type UNUSED, as llama.cpp's converter pads Qwen's own list, so
the embedding and output matrices keep their real sizes (the output matmul is a fifth of
Llama-3.2-1B's weights). ``--no-pad-vocab`` instead sizes the vocabulary to the tokenizer.
A tokenizer larger than the real vocabulary is kept whole, with a note.

Each file is skipped when it exists (``--force`` redoes it). The F16 base is written tensor
by tensor (peak memory about one tensor) and deleted at the end unless ``--keep-base``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GIB = 1024.0**3
MIB = 1024.0**2
MODELS = Path.home() / ".cache" / "rllm"
DEFAULT_TYPES = "Q4_K_M,Q4_0,Q8_0,Q6_K,Q5_K_M"
DEFAULT_TOKENIZER = {
    "llama": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2": "qwen2.5-coder-0.5b-instruct.gguf",
}
TOKEN_TYPE_UNUSED = 5  # llama.h LLAMA_TOKEN_TYPE_UNUSED
WEIGHT_STD = 0.02  # about the std of real attention and FFN weights
CHUNK = 1 << 24  # elements drawn at a time, so a float32 draw stays at 64 MiB

# Bits per weight of each preset over a whole model (llama.cpp's table in
# examples/quantize), a little rounded up; only used to check free disk space.
PRESET_BPW = {
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.6,
    "Q5_K_M": 5.7,
    "Q5_K_S": 5.6,
    "Q5_1": 6.0,
    "Q5_0": 5.5,
    "Q4_K_M": 4.9,
    "Q4_K_S": 4.6,
    "Q4_1": 5.0,
    "Q4_0": 4.6,
    "IQ4_NL": 4.6,
    "IQ4_XS": 4.3,
    "Q3_K_L": 4.3,
    "Q3_K_M": 3.9,
    "Q3_K_S": 3.5,
    "Q2_K": 3.0,
}


@dataclass(frozen=True)
class Shape:
    name: str
    arch: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int | None  # None: the tokenizer's token count
    rope_theta: float
    rms_eps: float
    n_ctx_train: int
    tied: bool  # no output.weight: the token embedding is the output matrix
    qkv_bias: bool = False
    # rope_scaling "llama3": (factor, low_freq_factor, high_freq_factor, original context)
    llama3_rope: tuple[float, float, float, int] | None = None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


SHAPES = {
    s.name: s
    for s in (
        Shape("tiny-llama", "llama", 256, 2, 4, 2, 512, None, 500000.0, 1e-5, 8192, True,
              llama3_rope=(32.0, 1.0, 4.0, 8192)),
        Shape("tiny-qwen2", "qwen2", 256, 2, 4, 2, 512, None, 1e6, 1e-6, 32768, False,
              qkv_bias=True),
        Shape("Llama-3.2-1B", "llama", 2048, 16, 32, 8, 8192, 128256, 500000.0, 1e-5, 131072,
              True, llama3_rope=(32.0, 1.0, 4.0, 8192)),
        Shape("Llama-3.2-3B", "llama", 3072, 28, 24, 8, 8192, 128256, 500000.0, 1e-5, 131072,
              True, llama3_rope=(32.0, 1.0, 4.0, 8192)),
        Shape("Llama-3.1-8B", "llama", 4096, 32, 32, 8, 14336, 128256, 500000.0, 1e-5, 131072,
              False, llama3_rope=(8.0, 1.0, 4.0, 8192)),
        Shape("Qwen2.5-7B", "qwen2", 3584, 28, 28, 4, 18944, 152064, 1e6, 1e-6, 32768, False,
              qkv_bias=True),
    )
}  # fmt: skip


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # numpy order: [rows, cols], the reverse of GGUF's ne
    init: str  # "weight", "norm", "bias" or "rope_freqs"

    @property
    def dtype(self) -> type:
        return np.float16 if len(self.shape) == 2 else np.float32

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.n_elements * np.dtype(self.dtype).itemsize


def tensor_plan(s: Shape, n_vocab: int) -> list[TensorSpec]:
    """The tensors llama.cpp's converter writes for ``s``, in its order."""
    e, hd, q, kv = s.n_embd, s.head_dim, s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    out = [TensorSpec("token_embd.weight", (n_vocab, e), "weight")]
    if s.llama3_rope:
        out.append(TensorSpec("rope_freqs.weight", (hd // 2,), "rope_freqs"))
    for i in range(s.n_layer):
        b = f"blk.{i}."
        out.append(TensorSpec(b + "attn_norm.weight", (e,), "norm"))
        out.append(TensorSpec(b + "attn_q.weight", (q, e), "weight"))
        out.append(TensorSpec(b + "attn_k.weight", (kv, e), "weight"))
        out.append(TensorSpec(b + "attn_v.weight", (kv, e), "weight"))
        if s.qkv_bias:
            out.append(TensorSpec(b + "attn_q.bias", (q,), "bias"))
            out.append(TensorSpec(b + "attn_k.bias", (kv,), "bias"))
            out.append(TensorSpec(b + "attn_v.bias", (kv,), "bias"))
        out.append(TensorSpec(b + "attn_output.weight", (e, q), "weight"))
        out.append(TensorSpec(b + "ffn_norm.weight", (e,), "norm"))
        out.append(TensorSpec(b + "ffn_gate.weight", (s.n_ff, e), "weight"))
        out.append(TensorSpec(b + "ffn_up.weight", (s.n_ff, e), "weight"))
        out.append(TensorSpec(b + "ffn_down.weight", (e, s.n_ff), "weight"))
    out.append(TensorSpec("output_norm.weight", (e,), "norm"))
    if not s.tied:
        out.append(TensorSpec("output.weight", (n_vocab, e), "weight"))
    return out


def llama3_rope_factors(s: Shape) -> np.ndarray:
    """Per-frequency divisors for rope_scaling "llama3" (llama.cpp convert_hf_to_gguf.py)."""
    assert s.llama3_rope is not None
    factor, low, high, old_ctx = s.llama3_rope
    dim = s.head_dim
    freqs = 1.0 / (s.rope_theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / float(freq)
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def tensor_data(s: Shape, t: TensorSpec, seed: int) -> np.ndarray:
    """``t``'s values: the same for the same seed and name, whatever else is written."""
    if t.init == "rope_freqs":
        return llama3_rope_factors(s)
    rng = np.random.default_rng([seed, zlib.crc32(t.name.encode())])
    out = np.empty(t.shape, dtype=t.dtype)
    flat = out.reshape(-1)
    for start in range(0, flat.size, CHUNK):
        n = min(CHUNK, flat.size - start)
        x = rng.standard_normal(n, dtype=np.float32)
        x *= WEIGHT_STD
        if t.init == "norm":
            x += 1.0
        flat[start : start + n] = x
    return out


# --- tokenizer -----------------------------------------------------------------------------


@dataclass
class Tokenizer:
    source: Path
    n_tokens: int
    fields: dict[str, Any]  # every tokenizer.* key, in file order

    @classmethod
    def read(cls, path: Path) -> Tokenizer:
        # rllm's reader: gguf.GGUFReader takes about 40 s over a 150k-token vocabulary.
        from rllm import GGUFFile

        meta = GGUFFile(path).metadata()
        fields = {k: v for k, v in meta.items() if k.startswith("tokenizer.")}
        tokens = fields.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or not tokens:
            raise SystemExit(f"{path}: no tokenizer.ggml.tokens")
        return cls(path, len(tokens), fields)

    def padded(self, n_vocab: int) -> dict[str, Any]:
        """The fields with the per-token lists grown to ``n_vocab`` entries."""
        extra = range(self.n_tokens, n_vocab)
        pad = {
            "tokenizer.ggml.tokens": [f"[PAD{i}]" for i in extra],
            "tokenizer.ggml.token_type": [TOKEN_TYPE_UNUSED] * len(extra),
            "tokenizer.ggml.scores": [-1000.0] * len(extra),
        }
        return {k: v + pad[k] if k in pad else v for k, v in self.fields.items()}


def add_tokenizer_key(w: Any, key: str, value: Any) -> None:
    """Write ``key`` with the value type llama.cpp's converter gives it: the metadata read
    back has Python types only, and every tokenizer.* integer is a uint32 but token_type's."""
    from gguf import GGUFValueType as T

    def vtype(v: Any) -> Any:
        if isinstance(v, bool):
            return T.BOOL
        if isinstance(v, int):
            return T.INT32 if key == "tokenizer.ggml.token_type" else T.UINT32
        if isinstance(v, float):
            return T.FLOAT32
        if isinstance(v, str):
            return T.STRING
        raise SystemExit(f"{key}: cannot copy a value of type {type(v).__name__}")

    if isinstance(value, list):
        if value:
            w.add_key_value(key, value, T.ARRAY, sub_type=vtype(value[0]))
    else:
        w.add_key_value(key, value, vtype(value))


def pick_vocab(s: Shape, tok: Tokenizer, pad: bool) -> tuple[int, str | None]:
    """The embedding rows to write, and a note when they differ from the real model's."""
    if s.n_vocab is None or s.n_vocab == tok.n_tokens:
        return tok.n_tokens, None
    if pad and tok.n_tokens < s.n_vocab:
        return s.n_vocab, (
            f"{tok.source.name} has {tok.n_tokens} tokens; padded with [PAD] tokens to "
            f"{s.name}'s {s.n_vocab}"
        )
    return tok.n_tokens, (
        f"vocabulary {tok.n_tokens} (from {tok.source.name}) instead of {s.name}'s "
        f"{s.n_vocab}: embedding and output matrices differ from the real model's"
    )


# --- files ---------------------------------------------------------------------------------


def write_base(s: Shape, tok: Tokenizer, n_vocab: int, path: Path, seed: int) -> None:
    """Write the F16 model to ``path``, one tensor in memory at a time."""
    from gguf import GGUFWriter, LlamaFileType

    tmp = path.with_name(path.name + ".part")
    w = GGUFWriter(tmp, s.arch)
    w.add_name(f"{s.name} (random weights)")
    w.add_file_type(LlamaFileType.MOSTLY_F16)
    w.add_context_length(s.n_ctx_train)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_rope_freq_base(s.rope_theta)
    w.add_layer_norm_rms_eps(s.rms_eps)
    w.add_rope_dimension_count(s.head_dim)
    w.add_vocab_size(n_vocab)
    for key, value in tok.padded(n_vocab).items():
        add_tokenizer_key(w, key, value)
    plan = tensor_plan(s, n_vocab)
    for t in plan:
        w.add_tensor_info(t.name, t.shape, np.dtype(t.dtype), t.nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for i, t in enumerate(plan):
        w.write_tensor_data(tensor_data(s, t, seed))
        progress(f"  writing {path.name}: {i + 1}/{len(plan)} tensors")
    w.close()
    progress("")
    tmp.replace(path)


_TTY = sys.stderr.isatty()


def progress(line: str) -> None:
    if _TTY:
        sys.stderr.write("\r\033[K" + line)
        sys.stderr.flush()


def quantize(base: Path, out: Path, ftype: str, threads: int | None) -> None:
    from rllm import quantize_model

    def report(done: int, total: int, _t: dict[str, Any]) -> None:
        progress(f"  quantizing {out.name}: {done}/{total} tensors")

    quantize_model(base, out, ftype, n_threads=threads, progress=report)
    progress("")


def check(path: Path, threads: int | None) -> str:
    """Load ``path`` and generate 8 tokens greedily; a one-line report."""
    import rllm

    t0 = time.perf_counter()
    model = rllm.Model(str(path), n_ctx=64, n_threads=threads)
    t1 = time.perf_counter()
    text = model.generate("The capital of France is", max_tokens=8, temperature=0)
    t2 = time.perf_counter()
    return f"loads in {t1 - t0:.2f}s, n_vocab {model.n_vocab}, 8 tokens in {t2 - t1:.2f}s: {text!r}"


# --- planning ------------------------------------------------------------------------------


@dataclass
class Job:
    shape: Shape
    tok: Tokenizer
    n_vocab: int
    note: str | None
    base: Path
    outputs: dict[str, Path]  # type -> file

    @property
    def plan(self) -> list[TensorSpec]:
        return tensor_plan(self.shape, self.n_vocab)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.plan)

    @property
    def base_bytes(self) -> int:
        return sum(t.nbytes for t in self.plan)

    def estimate(self, ftype: str) -> int:
        return int(self.n_params * PRESET_BPW.get(ftype, 16.0) / 8)

    def todo(self, force: bool) -> dict[str, Path]:
        return {k: p for k, p in self.outputs.items() if force or not p.exists()}

    def outputs_bytes(self, force: bool) -> int:
        return sum(self.estimate(k) for k in self.todo(force))

    def base_needed(self, force: bool) -> int:
        """The base's size if this run writes it."""
        if self.todo(force) and (force or not self.base.exists()):
            return self.base_bytes
        return 0


def make_jobs(args: argparse.Namespace) -> list[Job]:
    toks: dict[Path, Tokenizer] = {}
    jobs = []
    for name in args.shape:
        s = SHAPES[name]
        path = Path(args.tokenizer_from or MODELS / DEFAULT_TOKENIZER[s.arch]).expanduser()
        if path not in toks:
            if not path.exists():
                raise SystemExit(f"tokenizer source {path} is missing (--tokenizer-from)")
            toks[path] = Tokenizer.read(path)
        tok = toks[path]
        n_vocab, note = pick_vocab(s, tok, not args.no_pad_vocab)
        stem = f"{s.name}-random"
        base = args.out_dir / f"{stem}.F16.gguf"
        outputs = {t: args.out_dir / f"{stem}.{t}.gguf" for t in args.types}
        jobs.append(Job(s, tok, n_vocab, note, base, outputs))
    return jobs


def describe(job: Job, tensors: bool) -> None:
    s = job.shape
    print(
        f"{s.name}: {s.arch}, n_embd {s.n_embd}, n_layer {s.n_layer}, n_head {s.n_head}/"
        f"{s.n_head_kv} (head_dim {s.head_dim}), n_ff {s.n_ff}, n_vocab {job.n_vocab}, "
        f"{'tied' if s.tied else 'own'} output; {job.n_params / 1e9:.3f} B parameters"
    )
    print(f"  tokenizer: {job.tok.source} ({job.tok.n_tokens} tokens)")
    if job.note:
        print(f"  note: {job.note}")
    if tensors:
        for t in job.plan:
            ne = ", ".join(str(d) for d in reversed(t.shape))
            kind = "F16" if t.dtype == np.float16 else "F32"
            print(f"    {t.name:<28} [{ne:>13}] {kind}  {t.nbytes / MIB:9.2f} MiB")
    sizes = [f"F16 base {job.base_bytes / GIB:.2f} GiB"]
    sizes += [f"{k} ~{job.estimate(k) / GIB:.2f} GiB" for k in job.outputs]
    print("  sizes: " + ", ".join(sizes))


def run_job(job: Job, args: argparse.Namespace) -> None:
    todo = job.todo(args.force)
    for ftype, out in job.outputs.items():
        if ftype not in todo:
            print(f"  {out.name}: exists, skipped ({out.stat().st_size / GIB:.2f} GiB)")
    if todo:
        if args.force or not job.base.exists():
            t0 = time.perf_counter()
            write_base(job.shape, job.tok, job.n_vocab, job.base, args.seed)
            size = job.base.stat().st_size / GIB
            print(f"  {job.base.name}: {size:.2f} GiB written in {time.perf_counter() - t0:.1f}s")
        else:
            print(f"  {job.base.name}: exists, reused")
    for ftype, out in todo.items():
        t0 = time.perf_counter()
        quantize(job.base, out, ftype, args.threads)
        size = out.stat().st_size / GIB
        print(f"  {out.name}: {size:.2f} GiB, quantized in {time.perf_counter() - t0:.1f}s")
    if job.base.exists() and not args.keep_base:
        job.base.unlink()
        print(f"  {job.base.name}: deleted (--keep-base keeps it)")
    if args.check:
        for out in job.outputs.values():
            print(f"  check {out.name}: {check(out, args.threads)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="shapes: " + ", ".join(SHAPES) + ", all (the four real ones)",
    )
    p.add_argument("--shape", action="append", metavar="NAME", help="model shape (repeatable)")
    p.add_argument("--types", default=DEFAULT_TYPES, help=f"presets (default {DEFAULT_TYPES})")
    p.add_argument("--out-dir", type=Path, default=MODELS / "bench", help="default %(default)s")
    p.add_argument("--tokenizer-from", metavar="GGUF", help="copy tokenizer.* from this file")
    p.add_argument("--no-pad-vocab", action="store_true", help="n_vocab = the tokenizer's size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-t", "--threads", type=int, default=None, help="default: all cores")
    p.add_argument("--force", action="store_true", help="rewrite files that exist")
    p.add_argument("--keep-base", action="store_true", help="keep the F16 base file")
    p.add_argument("--check", action="store_true", help="load each output, generate 8 tokens")
    p.add_argument("--dry-run", action="store_true", help="print tensors and sizes, write none")
    args = p.parse_args(argv)
    shapes: list[str] = []
    for name in args.shape or p.error("--shape is required"):
        if name == "all":
            shapes += [n for n in SHAPES if not n.startswith("tiny-")]
            continue
        match = [n for n in SHAPES if n.lower() == name.lower()]
        if not match:
            p.error(f"unknown shape {name!r} (expected one of {', '.join(SHAPES)}, all)")
        shapes += match
    args.shape = list(dict.fromkeys(shapes))
    args.types = list(dict.fromkeys(t.strip().upper() for t in args.types.split(",") if t))
    args.out_dir = args.out_dir.expanduser()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.dry_run:
        from rllm.quantize import PRESETS

        bad = [t for t in args.types if t not in PRESETS]
        if bad:
            raise SystemExit(f"unknown type(s) {', '.join(bad)} (rllm quantize presets: {PRESETS})")
    jobs = make_jobs(args)
    for job in jobs:
        describe(job, tensors=args.dry_run)
        need = job.base_needed(args.force) + job.outputs_bytes(args.force)
        print(f"  disk needed: ~{need / GIB:.2f} GiB (base and new outputs)")
    if args.dry_run:
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.out_dir).free
    # Outputs accumulate; a base is deleted before the next shape's unless kept.
    bases = [j.base_needed(args.force) for j in jobs]
    need = sum(j.outputs_bytes(args.force) for j in jobs)
    need += sum(bases) if args.keep_base else max(bases)
    print(f"{args.out_dir}: {free / GIB:.1f} GiB free, ~{need / GIB:.1f} GiB needed")
    if need * 1.05 > free:
        raise SystemExit("not enough free disk space (the estimate has a 5% margin)")
    for job in jobs:
        print(f"{job.shape.name}:")
        run_job(job, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
