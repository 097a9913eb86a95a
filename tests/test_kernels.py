"""Kernel formats and SIMD tiers, checked from Python, for every ggml type rllm runs.

* Dequantization equals the independent oracle ``gguf.quants.dequantize`` bit for bit, on
  random blocks with any finite f16 scales (subnormal to 65504), for every type gguf decodes.
* Every SIMD tier's activation quantizer equals the scalar one bit for bit, and its dot product
  equals the scalar one within ``1e-5 · Σ|terms|`` (only the float summation order differs).
* The Q8_0 activation quantizer equals ``gguf``'s bit-exact port of ggml's reference.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize
from hypothesis import example, given
from hypothesis import strategies as st
from rllm import _rllm

ISAS = _rllm.available_isas()
SIMD_ISAS = [isa for isa in ISAS if isa != "scalar"]
ALL_ISAS = {"scalar", "avx2", "avxvnni", "avx512", "neon"}

# fmt: off
WEIGHT_TYPES = [
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS",
    "TQ1_0", "TQ2_0",
]
# fmt: on
QUANT_TYPES = [t for t in WEIGHT_TYPES if t not in ("F32", "F16", "BF16")]
# gguf's numpy oracle decodes all of these but the activation-only Q8_1 and Q8_K.
GGUF_DEQUANT_TYPES = [t for t in WEIGHT_TYPES if t not in ("Q8_1", "Q8_K")]

# ggml's vec_dot_type: the activation format each weight type multiplies.
ACT_TYPE = {
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "Q4_0": "Q8_0",
    "Q5_0": "Q8_0",
    "Q8_0": "Q8_0",
    "IQ4_NL": "Q8_0",
    "Q4_1": "Q8_1",
    "Q5_1": "Q8_1",
    "Q8_1": "Q8_1",
    **{
        t: "Q8_K"
        for t in (
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ1_S",
            "IQ1_M",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ2_S",
            "IQ3_XXS",
            "IQ3_S",
            "IQ4_XS",
            "TQ1_0",
            "TQ2_0",
        )
    },
}

# Byte offsets of the f16 scale fields (d, m / dmin) inside one block. IQ1_M spreads its f16
# scale over the top nibbles of 4 words and Q8_K has an f32 one: `weight_rows` sets those.
SCALE_OFFSETS = {
    **{
        t: [0]
        for t in (
            "Q4_0",
            "Q5_0",
            "Q8_0",
            "IQ1_S",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ2_S",
            "IQ3_XXS",
            "IQ3_S",
            "IQ4_NL",
            "IQ4_XS",
        )
    },
    "Q4_1": [0, 2],
    "Q5_1": [0, 2],
    "Q8_1": [0, 2],
    "Q4_K": [0, 2],
    "Q5_K": [0, 2],
    "Q2_K": [80, 82],
    "Q3_K": [108],
    "Q6_K": [208],
    "Q8_K": [],
    "IQ1_M": [],
    "TQ1_0": [52],
    "TQ2_0": [64],
}

# Largest activation magnitude whose quantized row keeps finite scales (and finite sums):
# Q8_0's d = amax/127 and Q8_1's s = d·Σq are f16; Q8_K's d is f32.
ACT_LIMIT = {"Q8_0": 8e6, "Q8_1": 2e3, "Q8_K": 1e20, "F16": 6e4, "BF16": 1e15, "F32": 1e15}

REL_TOL = 1e-5


def qtype(name: str) -> GGMLQuantizationType:
    return GGMLQuantizationType[name]


def block_size(name: str) -> int:
    return GGML_QUANT_SIZES[qtype(name)][0]


def type_size(name: str) -> int:
    # gguf's table still says 40 for Q8_1 (an older layout); ggml's block_q8_1 is 36 bytes.
    return 36 if name == "Q8_1" else GGML_QUANT_SIZES[qtype(name)][1]


# --- strategies ------------------------------------------------------------------------------


def f32s(limit: float) -> st.SearchStrategy[float]:
    """Finite float32 values in [-limit, limit] (limit rounded to float32), subnormals included."""
    bound = float(np.float32(limit))
    return st.floats(-bound, bound, width=32, allow_subnormal=True)


# Any finite f16: sign, exponent 0..30 (0 = subnormal/zero, 30 = up to 65504), mantissa.
finite_f16_bits = st.builds(
    lambda sign, exp, man: (sign << 15) | (exp << 10) | man,
    st.integers(0, 1),
    st.integers(0, 30),
    st.integers(0, 1023),
)


@st.composite
def block_counts(draw: st.DrawFn, name: str) -> int:
    """Odd and even block counts; fewer for the 256-element types."""
    if block_size(name) == 256:
        return draw(st.integers(1, 3))
    if block_size(name) == 1:
        return draw(st.integers(1, 300))
    return draw(st.integers(1, 9))


@st.composite
def weight_rows(draw: st.DrawFn, name: str, n_blocks: int | None = None) -> tuple[bytes, int]:
    """Random raw bytes of one row of ``name`` with valid finite f16 scales: (bytes, n)."""
    if n_blocks is None:
        n_blocks = draw(block_counts(name))
    n = n_blocks * block_size(name)
    if name in ("F32", "F16", "BF16"):
        limit = 65504.0 if name == "F16" else 1e15
        values = draw(st.lists(f32s(limit), min_size=n, max_size=n))
        x = np.array(values, dtype=np.float32)
        if name == "F32":
            return x.tobytes(), n
        if name == "F16":
            return x.astype(np.float16).tobytes(), n
        return gguf_quantize(x, qtype("BF16")).tobytes(), n
    size = n_blocks * type_size(name)
    data = bytearray(draw(st.binary(min_size=size, max_size=size)))
    for b in range(n_blocks):
        base = b * type_size(name)
        for off in SCALE_OFFSETS[name]:
            data[base + off : base + off + 2] = draw(finite_f16_bits).to_bytes(2, "little")
        if name == "IQ1_M":
            set_iq1m_scale(data, base, draw(finite_f16_bits))
        elif name == "Q8_K":
            d = np.float32(np.float16(np.uint16(draw(finite_f16_bits)).view(np.float16)))
            data[base : base + 4] = d.tobytes()
    return bytes(data), n


def set_iq1m_scale(data: bytearray, base: int, bits: int) -> None:
    """IQ1_M keeps its f16 scale in the top nibbles of its four u16 scale words."""
    for k in range(4):
        at = base + 48 + 2 * k
        word = int.from_bytes(data[at : at + 2], "little") & 0x0FFF
        word |= ((bits >> (4 * k)) & 0xF) << 12
        data[at : at + 2] = word.to_bytes(2, "little")


@st.composite
def activations(draw: st.DrawFn, act: str, n: int) -> np.ndarray:
    """n finite float32 activations within the format's limit, often with a common scale
    factor that pushes a whole row to the tiny or huge end."""
    limit = ACT_LIMIT[act]
    values = draw(st.lists(f32s(limit), min_size=n, max_size=n))
    x = np.array(values, dtype=np.float32)
    scale = draw(st.sampled_from([1.0, 1.0, 1e-30, 1e-3, 1e3]))
    with np.errstate(over="ignore", under="ignore"):
        x = (x * np.float32(scale)).astype(np.float32)
    return np.clip(x, -limit, limit).astype(np.float32)


# --- helpers ---------------------------------------------------------------------------------


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_same_bits(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    ours, ref = bits(ours), bits(ref.reshape(-1))
    if not np.array_equal(ours, ref):
        i = int(np.flatnonzero(ours != ref)[0])
        got, want = ours[i : i + 1].view(np.float32)[0], ref[i : i + 1].view(np.float32)[0]
        pytest.fail(f"{what}: element {i}: rllm {got!r} vs reference {want!r}")


def magnitude_row(name: str, w: bytes) -> bytes:
    """Flip f16 sign bits so every dequantized element becomes |scale term| + |min term|."""
    offsets = {"Q4_1": (0, 2), "Q5_1": (0, 2), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q2_K": (80, 82)}
    if name not in offsets:
        return w
    d_at, m_at = offsets[name]
    data = bytearray(w)
    for b in range(0, len(data), type_size(name)):
        data[b + d_at + 1] &= 0x7F  # d >= 0
        if name in ("Q4_K", "Q5_K", "Q2_K"):
            data[b + m_at + 1] |= 0x80  # dmin <= 0, so −dmin·m >= 0
        else:
            data[b + m_at + 1] &= 0x7F  # m >= 0
    return bytes(data)


def dot_magnitude(name: str, w: bytes, a: bytes, n: int) -> float:
    """Σ|terms| of the dot of weight row w with quantized activation row a."""
    act = ACT_TYPE[name]
    wm = np.abs(_rllm.dequantize(magnitude_row(name, w), name, n).astype(np.float64))
    am = np.abs(_rllm.dequantize(a, act, n).astype(np.float64))
    mag = float(np.sum(wm * am))
    if act == "Q8_1" and name != "Q8_1":
        wb = np.frombuffer(w, dtype=np.uint8).reshape(-1, type_size(name))
        ab = np.frombuffer(a, dtype=np.uint8).reshape(-1, 36)
        m = wb[:, 2:4].copy().view(np.float16).astype(np.float64)
        s = ab[:, 2:4].copy().view(np.float16).astype(np.float64)
        mag += float(np.sum(np.abs(m * s)))
    return mag


# --- dequantization against gguf -------------------------------------------------------------


@pytest.mark.parametrize("name", GGUF_DEQUANT_TYPES)
@given(data=st.data())
def test_dequantize_matches_gguf(name: str, data: st.DataObject) -> None:
    w, n = data.draw(weight_rows(name))
    ours = _rllm.dequantize(w, name, n)
    assert ours.dtype == np.float32 and ours.shape == (n,)
    ref = gguf_dequantize(np.frombuffer(w, dtype=np.uint8), qtype(name))
    assert_same_bits(ours, ref, f"{name} n={n}")


# Zero, smallest and largest subnormal, smallest normal, one, ±65504, a negative subnormal.
EDGE_F16 = [0x0000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0xFBFF, 0x8001]


@pytest.mark.parametrize("name", [t for t in QUANT_TYPES if t in GGUF_DEQUANT_TYPES])
@pytest.mark.parametrize("scale_bits", EDGE_F16)
def test_dequantize_extreme_scales_match_gguf(name: str, scale_bits: int) -> None:
    """Every block's scales set to one edge value: zero, subnormals, one, ±65504."""
    rng = np.random.default_rng(scale_bits)
    n_blocks = 3
    data = bytearray(rng.integers(0, 256, n_blocks * type_size(name), dtype=np.uint8).tobytes())
    for b in range(n_blocks):
        for off in SCALE_OFFSETS[name]:
            at = b * type_size(name) + off
            data[at : at + 2] = scale_bits.to_bytes(2, "little")
        if name == "IQ1_M":
            set_iq1m_scale(data, b * type_size(name), scale_bits)
    n = n_blocks * block_size(name)
    ours = _rllm.dequantize(bytes(data), name, n)
    ref = gguf_dequantize(np.frombuffer(bytes(data), dtype=np.uint8), qtype(name))
    assert_same_bits(ours, ref, f"{name} scale 0x{scale_bits:04x}")


# --- activation quantizers -------------------------------------------------------------------


@pytest.mark.parametrize("isa", ISAS)
@given(data=st.data())
def test_q8_0_activations_match_gguf(isa: str, data: st.DataObject) -> None:
    n = 32 * data.draw(st.integers(1, 9))
    x = data.draw(activations("Q8_0", n))
    # gguf's port is undefined where 1/d overflows (blocks of subnormals); rllm clamps there.
    blocks = np.abs(x.reshape(-1, 32)).max(axis=1)
    x = np.where(np.repeat((blocks > 0) & (blocks < 1e-35), 32), np.float32(0), x)
    ours = _rllm.quantize_activation(x.astype(np.float32), "Q8_0", isa)
    ref = gguf_quantize(x.reshape(-1, 32), qtype("Q8_0")).tobytes()
    assert ours == ref


@pytest.mark.parametrize("isa", ISAS)
@given(x=st.lists(f32s(3e38), min_size=1, max_size=70))
def test_float_activations_match_numpy(isa: str, x: list[float]) -> None:
    xs = np.array(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        f16 = xs.astype(np.float16).tobytes()
    assert _rllm.quantize_activation(xs, "F16", isa) == f16
    assert _rllm.quantize_activation(xs, "BF16", isa) == gguf_quantize(xs, qtype("BF16")).tobytes()
    assert _rllm.quantize_activation(xs, "F32", isa) == xs.tobytes()


@pytest.mark.skipif(not SIMD_ISAS, reason="this CPU has no SIMD tier")
@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q4_K", "F16", "BF16"])
@given(data=st.data())
@example(data=None)  # rounding ties, drawn below when data is None
def test_simd_quantizers_match_scalar(isa: str, name: str, data: st.DataObject | None) -> None:
    act = ACT_TYPE[name]
    bs = max(block_size(act), 32)
    if data is None:
        # Halfway cases of both roundings: scale 1 (amax 127) and scale 2 (amax 254).
        halves = np.arange(-126, 126, dtype=np.float32) + np.float32(0.5)
        x = np.resize(halves, 2 * bs).astype(np.float32)
        x[0], x[bs] = 127.0, -127.0
        x[bs:] *= 2
    else:
        x = data.draw(activations(act, bs * data.draw(st.integers(1, 3 if bs == 256 else 7))))
    ref = _rllm.quantize_activation(x, name, "scalar")
    assert _rllm.quantize_activation(x, name, isa) == ref


# --- dot products ----------------------------------------------------------------------------


@pytest.mark.skipif(not SIMD_ISAS, reason="this CPU has no SIMD tier")
@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("name", WEIGHT_TYPES)
@given(data=st.data())
def test_simd_vec_dot_matches_scalar(isa: str, name: str, data: st.DataObject) -> None:
    w, n = data.draw(weight_rows(name))
    x = data.draw(activations(ACT_TYPE[name], n))
    want = _rllm.vec_dot(name, w, x, "scalar")
    got = _rllm.vec_dot(name, w, x, isa)
    a = _rllm.quantize_activation(x, name, "scalar")
    assert _rllm.quantize_activation(x, name, isa) == a
    assert np.isfinite(want), "the strategies keep every sum finite"
    tol = REL_TOL * dot_magnitude(name, w, a, n) + 1e-37
    assert abs(got - want) <= tol, f"{name} {isa} n={n}: {got} vs scalar {want} (tol {tol:g})"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_vec_dot_approximates_float_dot(isa: str, name: str) -> None:
    """dot(w, quantize(x)) ≈ Σ dequantize(w)·x: the dot reads the same layout as dequantize."""
    rng = np.random.default_rng(7)
    n = 4 * max(block_size(name), 32)
    if name in ("F32", "F16", "BF16"):
        w = rng.standard_normal(n).astype(np.float32)
        w = gguf_quantize(w, qtype(name)).tobytes()
    else:
        size = (n // block_size(name)) * type_size(name)
        data = bytearray(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        for b in range(0, len(data), type_size(name)):
            for off in SCALE_OFFSETS[name]:
                scale = np.float16(rng.uniform(0.001, 0.01)).tobytes()
                data[b + off : b + off + 2] = scale
            if name == "IQ1_M":
                bits = int(np.float16(0.005).view(np.uint16))
                set_iq1m_scale(data, b, bits)
            elif name == "Q8_K":
                data[b : b + 4] = np.float32(0.005).tobytes()
        w = bytes(data)
    x = rng.uniform(-1, 1, n).astype(np.float32)
    exact = float(np.dot(_rllm.dequantize(w, name, n).astype(np.float64), x.astype(np.float64)))
    w_abs = float(np.sum(np.abs(_rllm.dequantize(magnitude_row(name, w), name, n))))
    got = _rllm.vec_dot(name, w, x, isa)
    # Activation rounding per element: at most amax/254 (amax ≤ 1) plus the f16 rounding of
    # the block scale for the 8-bit formats; at most 2^-9 relative for bf16.
    assert abs(got - exact) <= 0.005 * w_abs + 1e-6


# --- argument checks -------------------------------------------------------------------------


def test_isa_names() -> None:
    assert ISAS[0] == "scalar"
    assert set(ISAS) <= ALL_ISAS
    assert _rllm.active_isa() in ISAS


def _linux_x86_flags() -> set[str] | None:
    """The CPU flags of /proc/cpuinfo on x86-64 Linux, else None."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def test_avx_vnni_tier_follows_the_cpu_flags() -> None:
    """The avxvnni tier (the AVX2 kernels with AVX-VNNI GEMM tiles) is offered exactly where
    the CPU has AVX-VNNI besides the AVX2 set."""
    flags = _linux_x86_flags()
    if flags is None:
        assert "avxvnni" not in ISAS or platform.machine().lower() in ("x86_64", "amd64")
        return
    need = {"avx2", "fma", "f16c", "avx_vnni"}
    assert ("avxvnni" in ISAS) == (need <= flags), sorted(need - flags)


def test_avx512_tier_follows_the_cpu_flags() -> None:
    """The avx512 tier is offered exactly where the CPU has AVX-512 F/BW/VL and VNNI besides
    the AVX2 set (its kernels need all of them); elsewhere the tier must be absent."""
    flags = _linux_x86_flags()
    if flags is None:
        assert "avx512" not in ISAS or platform.machine().lower() in ("x86_64", "amd64")
        return
    need = {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
    assert ("avx512" in ISAS) == (need <= flags), sorted(need - flags)


def test_bad_arguments_raise_value_error() -> None:
    x = np.zeros(32, dtype=np.float32)
    w = bytes(18)
    with pytest.raises(ValueError, match="unknown ggml type"):
        _rllm.dequantize(w, "Q4_9", 32)
    with pytest.raises(ValueError, match="not supported"):
        _rllm.dequantize(bytes(17), "MXFP4", 32)
    with pytest.raises(ValueError, match="take 18 bytes"):
        _rllm.dequantize(bytes(17), "Q4_0", 32)
    with pytest.raises(ValueError, match="whole number"):
        _rllm.dequantize(w, "Q4_0", 31)
    with pytest.raises(ValueError, match="unknown isa"):
        _rllm.vec_dot("Q4_0", w, x, "sse9")
    with pytest.raises(ValueError, match="no dot product"):
        _rllm.quantize_activation(x, "MXFP4", "scalar")
    with pytest.raises(ValueError, match="whole number"):
        _rllm.quantize_activation(x[:31], "Q4_0", "scalar")
    with pytest.raises(ValueError, match="take 18 bytes"):
        _rllm.vec_dot("Q4_0", bytes(20), x, "scalar")
    with pytest.raises(ValueError, match="whole number"):
        _rllm.vec_dot("Q4_K", bytes(144), x, "scalar")
    for isa in ALL_ISAS - set(ISAS):
        with pytest.raises(ValueError, match="not available"):
            _rllm.vec_dot("Q4_0", w, x, isa)


def test_non_contiguous_activations() -> None:
    x = np.linspace(-1, 1, 128, dtype=np.float32)[::2]
    assert not x.flags.c_contiguous
    a = _rllm.quantize_activation(x, "Q8_0", "scalar")
    assert a == _rllm.quantize_activation(np.ascontiguousarray(x), "Q8_0", "scalar")
