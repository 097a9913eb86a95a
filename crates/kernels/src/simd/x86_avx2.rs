//! AVX2 + FMA + F16C kernels for x86-64. Each replaces a scalar reference in `blocks/`: the
//! activation quantizers match it bit for bit, the dot products up to float summation order
//! (their integer sums are exact). Compare ggml `src/ggml-cpu/arch/x86/quants.c`.
//!
//! Every function is `#[target_feature(enable = "avx2,fma,f16c")] unsafe fn`; the one
//! precondition is that the CPU has those features (`dispatch` checks before using them).
//! Memory is only touched through `&[u8; N]` / `&[f32; N]` views cut from the slice
//! arguments with bounds checks, so no kernel can read or write outside its slices.
//!
//! Activation codes are assumed to lie in `[-127, 127]` (our quantizers guarantee it): the
//! `maddubs` products below cannot saturate then.

// Value intrinsics are safe to call inside `target_feature` functions from Rust 1.87 on, but
// not on the 1.85 MSRV, which needs the `unsafe` blocks this lint would flag.
#![allow(unused_unsafe)]

mod gemm;
mod iq;
mod k_quants;

pub(crate) use gemm::{gemm_tile, gemm_tile_k, gemm_tile_k_vnni, gemm_tile_vnni};

use super::{in_streams, prefetch_ahead, DotFn, QuantizeFn, RowsFn, STREAMS};
use crate::blocks::{f32_to_bf16, q8_0_scales};
use crate::types::GgmlType;
use half::f16;
use std::arch::x86_64::*;

/// The activation quantizer for format `act`, if this file has one.
pub(crate) fn quantize_fn(act: GgmlType) -> Option<QuantizeFn> {
    Some(match act {
        GgmlType::Q8_0 => quantize_row_q8_0 as QuantizeFn,
        GgmlType::Q8_1 => quantize_row_q8_1,
        GgmlType::Q8_K => quantize_row_q8_k,
        GgmlType::F16 => quantize_row_f16,
        GgmlType::BF16 => quantize_row_bf16,
        _ => return None,
    })
}

/// The many-rows dot for weight type `ty`, if this file has one.
pub(crate) fn rows_fn(ty: GgmlType) -> Option<RowsFn> {
    match ty {
        // f16: short rows that sit in cache (attention keys), several per pass. The block
        // types, Q4_K and Q6_K: decode rows side by side, a quarter of the rows apart
        // (`in_streams`).
        GgmlType::F16 => Some(dot_rows_f16),
        GgmlType::Q4_0 => Some(q4_0::rows),
        GgmlType::Q4_1 => Some(q4_1::rows),
        GgmlType::Q5_0 => Some(q5_0::rows),
        GgmlType::Q5_1 => Some(q5_1::rows),
        GgmlType::Q8_0 => Some(q8_0::rows),
        GgmlType::Q4_K => Some(dot_rows_q4k_q8k),
        GgmlType::Q6_K => Some(dot_rows_q6k_q8k),
        _ => None,
    }
}

/// The dot product for weight type `ty`, if this file has one.
pub(crate) fn dot_fn(ty: GgmlType) -> Option<DotFn> {
    Some(match ty {
        GgmlType::F32 => vec_dot_f32 as DotFn,
        GgmlType::F16 => vec_dot_f16,
        GgmlType::BF16 => vec_dot_bf16,
        GgmlType::Q4_0 => vec_dot_q4_0_q8_0,
        GgmlType::Q4_1 => vec_dot_q4_1_q8_1,
        GgmlType::Q5_0 => vec_dot_q5_0_q8_0,
        GgmlType::Q5_1 => vec_dot_q5_1_q8_1,
        GgmlType::Q8_0 => vec_dot_q8_0_q8_0,
        GgmlType::Q8_1 => k_quants::vec_dot_q8_1_q8_1,
        GgmlType::Q8_K => k_quants::vec_dot_q8k_q8k,
        GgmlType::Q2_K => k_quants::vec_dot_q2k_q8k,
        GgmlType::Q3_K => k_quants::vec_dot_q3k_q8k,
        GgmlType::Q4_K => vec_dot_q4k_q8k,
        GgmlType::Q5_K => k_quants::vec_dot_q5k_q8k,
        GgmlType::Q6_K => vec_dot_q6k_q8k,
        GgmlType::IQ1_S => iq::vec_dot_iq1s_q8k,
        GgmlType::IQ1_M => iq::vec_dot_iq1m_q8k,
        GgmlType::IQ2_XXS => iq::vec_dot_iq2xxs_q8k,
        GgmlType::IQ2_XS => iq::vec_dot_iq2xs_q8k,
        GgmlType::IQ2_S => iq::vec_dot_iq2s_q8k,
        GgmlType::IQ3_XXS => iq::vec_dot_iq3xxs_q8k,
        GgmlType::IQ3_S => iq::vec_dot_iq3s_q8k,
        GgmlType::IQ4_NL => iq::vec_dot_iq4nl_q8_0,
        GgmlType::IQ4_XS => iq::vec_dot_iq4xs_q8k,
        GgmlType::TQ1_0 => iq::vec_dot_tq1_0_q8k,
        GgmlType::TQ2_0 => iq::vec_dot_tq2_0_q8k,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Bounds-checked views and loads

/// `b[off..off + N]` as an array reference (panics if out of bounds).
#[inline(always)]
fn arr<const N: usize>(b: &[u8], off: usize) -> &[u8; N] {
    b[off..off + N].try_into().expect("length is N")
}

#[inline(always)]
fn arr_mut<const N: usize>(b: &mut [u8], off: usize) -> &mut [u8; N] {
    (&mut b[off..off + N]).try_into().expect("length is N")
}

#[inline(always)]
fn f32s(x: &[f32], off: usize) -> &[f32; 8] {
    x[off..off + 8].try_into().expect("length is 8")
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load16(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load32(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Eight little-endian f32 from 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_ps_bytes(b: &[u8; 32]) -> __m256 {
    // SAFETY: `b` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_ps(x: &[f32; 8]) -> __m256 {
    // SAFETY: `x` is 8 readable f32.
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store16(out: &mut [u8; 16], v: __m128i) {
    // SAFETY: `out` is 16 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store32(out: &mut [u8; 32], v: __m256i) {
    // SAFETY: `out` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
}

/// The product of the little-endian f16 values at `x[xo..]` and `y[yo..]`, converted with
/// F16C. Both go in one `movd`, which writes the whole register: converting each with
/// `_mm_cvtsi32_si128` lets LLVM emit a `pinsrw` into a stale register, which can chain every
/// block's scale to the previous block's FMA.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_mul(x: &[u8], xo: usize, y: &[u8], yo: usize) -> f32 {
    let xb = u16::from_le_bytes(*arr::<2>(x, xo)) as u32;
    let yb = u16::from_le_bytes(*arr::<2>(y, yo)) as u32;
    unsafe {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128((xb | (yb << 16)) as i32));
        _mm_cvtss_f32(_mm_mul_ss(v, _mm_movehdup_ps(v)))
    }
}

#[inline(always)]
fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes(*arr::<4>(b, off))
}

// ---------------------------------------------------------------------------------------------
// Arithmetic helpers

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hmax_ps(v: __m256) -> f32 {
    unsafe {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// Sums of adjacent products of unsigned bytes `u` and signed bytes `s`, as 8 f32 lanes
/// (each lane: 4 products).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256 {
    unsafe {
        let pairs = _mm256_maddubs_epi16(u, s);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
}

/// As [`dot_u8_i8`] for two signed operands: move the sign of `x` onto `y`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8(x: __m256i, y: __m256i) -> __m256 {
    unsafe { dot_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x)) }
}

/// The 32 nibbles of a Q4/Q5 block in element order: low nibbles, then high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles32(qs: &[u8; 16]) -> __m256i {
    unsafe {
        let lo = load16(qs);
        let hi = _mm_srli_epi16::<4>(lo);
        _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0F))
    }
}

/// Byte `i` is 0xFF where bit `i` of `bits` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits_to_bytes(bits: u32) -> __m256i {
    unsafe {
        let v = _mm256_set1_epi32(bits as i32);
        #[rustfmt::skip]
        let spread = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        );
        let bytes = _mm256_shuffle_epi8(v, spread);
        // Byte k of each 8 tests bit k: 0x01, 0x02, ..., 0x80 in little-endian order.
        let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask)
    }
}

/// Round half away from zero (C `roundf`), exactly: truncate, then step away from zero if the
/// dropped fraction (exact in f32) is at least one half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_half_away(v: __m256) -> __m256 {
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
        let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
        let step = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0));
        let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
        _mm256_add_ps(t, _mm256_and_ps(up, step))
    }
}

/// Integral floats to i32 codes in `[-127, 127]`, NaN to 0 (the scalar `clamp(..) as i8`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes_i32(r: __m256) -> __m256i {
    unsafe {
        let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
        let r = _mm256_min_ps(
            _mm256_max_ps(r, _mm256_set1_ps(-127.0)),
            _mm256_set1_ps(127.0),
        );
        _mm256_cvtps_epi32(r)
    }
}

/// Narrow 4×8 i32 (each within i8) to 32 bytes in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_i8(i0: __m256i, i1: __m256i, i2: __m256i, i3: __m256i) -> __m256i {
    unsafe {
        // Packing works per 128-bit lane: dword k of the result holds elements of i(k%4),
        // low half for k < 4, high half for k >= 4. The permutation restores element order.
        let a = _mm256_packs_epi32(i0, i1);
        let b = _mm256_packs_epi32(i2, i3);
        let c = _mm256_packs_epi16(a, b);
        _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers

/// Codes of one Q8_0/Q8_1 block of 32 values: (codes, d, sum of codes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block_q8(x: &[f32]) -> (__m256i, f32, i32) {
    unsafe {
        let v = [
            load_ps(f32s(x, 0)),
            load_ps(f32s(x, 8)),
            load_ps(f32s(x, 16)),
            load_ps(f32s(x, 24)),
        ];
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_andnot_ps(sign, v[0]);
        for &vk in &v[1..] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, vk));
        }
        let (d, id) = q8_0_scales(hmax_ps(m));
        let mul = _mm256_set1_ps(id);
        let mut q = [_mm256_setzero_si256(); 4];
        for (qk, &vk) in q.iter_mut().zip(&v) {
            *qk = codes_i32(round_half_away(_mm256_mul_ps(vk, mul)));
        }
        let sum = hsum_epi32(_mm256_add_epi32(
            _mm256_add_epi32(q[0], q[1]),
            _mm256_add_epi32(q[2], q[3]),
        ));
        (pack_i8(q[0], q[1], q[2], q[3]), d, sum)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        let (q, d, _) = unsafe { quantize_block_q8(xb) };
        ob[0..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        unsafe { store32(arr_mut(ob, 2), q) };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_q8_1(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(36)) {
        let (q, d, sum) = unsafe { quantize_block_q8(xb) };
        ob[0..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        ob[2..4].copy_from_slice(&f16::from_f32(sum as f32 * d).to_bits().to_le_bytes());
        unsafe { store32(arr_mut(ob, 4), q) };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(256).zip(out.chunks_exact_mut(292)) {
        let sign = unsafe { _mm256_set1_ps(-0.0) };
        let mut m = unsafe { _mm256_setzero_ps() };
        for k in 0..32 {
            m = unsafe { _mm256_max_ps(m, _mm256_andnot_ps(sign, load_ps(f32s(xb, 8 * k)))) };
        }
        let amax = unsafe { hmax_ps(m) };
        if amax == 0.0 {
            ob.fill(0);
            continue;
        }
        // The scale comes from the first value of largest magnitude, with its sign.
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        for c in 0..8 {
            let mut q = unsafe { [_mm256_setzero_si256(); 4] };
            for (k, qk) in q.iter_mut().enumerate() {
                unsafe {
                    let v =
                        _mm256_mul_ps(load_ps(f32s(xb, 32 * c + 8 * k)), _mm256_set1_ps(iscale));
                    let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                    *qk = codes_i32(r);
                }
            }
            let (s0, s1) = unsafe {
                store32(arr_mut(ob, 4 + 32 * c), pack_i8(q[0], q[1], q[2], q[3]));
                (
                    hsum_epi32(_mm256_add_epi32(q[0], q[1])),
                    hsum_epi32(_mm256_add_epi32(q[2], q[3])),
                )
            };
            ob[260 + 4 * c..262 + 4 * c].copy_from_slice(&(s0 as i16).to_le_bytes());
            ob[262 + 4 * c..264 + 4 * c].copy_from_slice(&(s1 as i16).to_le_bytes());
        }
        ob[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_f16(x: &[f32], out: &mut [u8]) {
    let mut xs = x.chunks_exact(8);
    let mut os = out.chunks_exact_mut(16);
    for (xc, oc) in (&mut xs).zip(&mut os) {
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(load_ps(f32s(xc, 0)));
            store16(arr_mut(oc, 0), h);
        }
    }
    for (&v, o) in xs
        .remainder()
        .iter()
        .zip(os.into_remainder().chunks_exact_mut(2))
    {
        o.copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_bf16(x: &[f32], out: &mut [u8]) {
    let mut xs = x.chunks_exact(8);
    let mut os = out.chunks_exact_mut(16);
    for (xc, oc) in (&mut xs).zip(&mut os) {
        unsafe {
            let u = _mm256_castps_si256(load_ps(f32s(xc, 0)));
            // Round to nearest even: add 0x7fff plus the lowest kept bit, keep the top half.
            let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(u), _mm256_set1_epi32(1));
            let bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
            let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(u, bias));
            // NaN: keep the top half, set the quiet bit.
            let abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fff_ffff));
            let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
            let quiet = _mm256_or_si256(_mm256_srli_epi32::<16>(u), _mm256_set1_epi32(64));
            let r = _mm256_blendv_epi8(rounded, quiet, nan);
            // Narrow u32 -> u16 (all values fit), then gather the two lane halves.
            let p = _mm256_packus_epi32(r, r);
            let p = _mm256_permute4x64_epi64::<0b1000>(p);
            store16(arr_mut(oc, 0), _mm256_castsi256_si128(p));
        }
    }
    for (&v, o) in xs
        .remainder()
        .iter()
        .zip(os.into_remainder().chunks_exact_mut(2))
    {
        o.copy_from_slice(&f32_to_bf16(v).to_le_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Dot products of float rows

/// One float dot product: `$load` turns `$bytes` bytes into 8 f32 and `$elem` reads one
/// element for the tail; four accumulators hide the FMA latency. (A macro, not a generic: a
/// `target_feature` function cannot be passed as an `Fn`, and closures would not inherit the
/// features on the MSRV.)
macro_rules! float_dot {
    ($name:ident, $bytes:literal, $load:ident, $elem:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(w: &[u8], a: &[u8]) -> f32 {
            const B: usize = $bytes;
            let elem = $elem;
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut ws = w.chunks_exact(4 * B);
                let mut as_ = a.chunks_exact(4 * B);
                for (wc, ac) in (&mut ws).zip(&mut as_) {
                    for k in 0..4 {
                        let x = $load(arr(wc, k * B));
                        let y = $load(arr(ac, k * B));
                        acc[k] = _mm256_fmadd_ps(x, y, acc[k]);
                    }
                }
                let mut ws = ws.remainder().chunks_exact(B);
                let mut as_ = as_.remainder().chunks_exact(B);
                for (wc, ac) in (&mut ws).zip(&mut as_) {
                    acc[0] = _mm256_fmadd_ps($load(arr(wc, 0)), $load(arr(ac, 0)), acc[0]);
                }
                let mut tail = 0f32;
                let n = B / 8;
                for (x, y) in ws
                    .remainder()
                    .chunks_exact(n)
                    .zip(as_.remainder().chunks_exact(n))
                {
                    tail += elem(x) * elem(y);
                }
                let sum =
                    _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                hsum_ps(sum) + tail
            }
        }
    };
}

/// Eight f16 from 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f16x8(b: &[u8; 16]) -> __m256 {
    unsafe { _mm256_cvtph_ps(load16(b)) }
}

/// Eight bf16 from 16 bytes: widen to 32 bits and shift into the top half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_bf16x8(b: &[u8; 16]) -> __m256 {
    unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load16(b)))) }
}

float_dot!(vec_dot_f32, 32, load_ps_bytes, |b: &[u8]| {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
});
float_dot!(vec_dot_f16, 16, load_f16x8, |b: &[u8]| f16::from_bits(
    u16::from_le_bytes([b[0], b[1]])
)
.to_f32());
float_dot!(vec_dot_bf16, 16, load_bf16x8, |b: &[u8]| f32::from_bits(
    (u16::from_le_bytes([b[0], b[1]]) as u32) << 16
));

/// Four horizontal sums at once, `[Σa, Σb, Σc, Σd]`, each added in [`hsum_ps`]'s order
/// (which is ggml's `hsum_float_8`), so a many-rows kernel sums exactly as the one-row one.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum4_ps(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    unsafe {
        let half = |v: __m256| _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let (a, b, c, d) = (half(a), half(b), half(c), half(d));
        // [a0+a2, b0+b2, a1+a3, b1+b3] and the same for c, d.
        let ab = _mm_add_ps(_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b));
        let cd = _mm_add_ps(_mm_unpacklo_ps(c, d), _mm_unpackhi_ps(c, d));
        _mm_add_ps(_mm_movelh_ps(ab, cd), _mm_movehl_ps(cd, ab))
    }
}

/// F16 rows against one f16 row (contiguous rows: attention keys, F16 weights).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows_f16(w: &[u8], a: &[u8], out: &mut [f32]) {
    let stride = w.len() / out.len();
    unsafe { dot_rows_strided_f16(w, stride, a, out) }
}

thread_local! {
    /// The activation row of [`dot_rows_strided_f16`] as f32.
    static F16_ACT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[i] = vec_dot_f16(row i, a)`, bit for bit, for rows of `a.len()` bytes that start
/// `stride` bytes apart in `w` (attention's value rows lie `n_ctx` apart). The activation is
/// widened to f32 once (exactly: every f16 is an f32) instead of once per row, so each row
/// costs one conversion per 8 elements instead of two; per row the operations and their order
/// are `vec_dot_f16`'s (four accumulators over 32-element steps, 8-element remainder into the
/// first, the same reduction, the scalar tail's products added after).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_rows_strided_f16(w: &[u8], stride: usize, a: &[u8], out: &mut [f32]) {
    let rb = a.len();
    if out.is_empty() {
        return;
    }
    assert!(
        w.len() >= (out.len() - 1) * stride + rb && stride >= rb,
        "f16 rows: {} bytes for {} rows of {rb} at stride {stride}",
        w.len(),
        out.len()
    );
    let n = rb / 2;
    let main = n / 8 * 8;
    F16_ACT.with_borrow_mut(|af| {
        af.resize(n, 0.0);
        for (c, dst) in af[..main].chunks_exact_mut(8).enumerate() {
            // SAFETY: 8 writable f32; the features are enabled on this function.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), load_f16x8(arr(a, 16 * c))) };
        }
        for (i, v) in af.iter_mut().enumerate().skip(main) {
            *v = f16::from_bits(u16::from_le_bytes([a[2 * i], a[2 * i + 1]])).to_f32();
        }
        let af = &af[..n];
        let (wp, ap) = (w.as_ptr(), af.as_ptr());
        // SAFETY (the loads below): row r's bytes r·stride .. r·stride + 2n lie in `w` (asserted
        // above) and the activation's n f32 in `af`; every load stays below those ends.
        let wv = |r: usize, i: usize| unsafe {
            _mm256_cvtph_ps(_mm_loadu_si128(wp.add(r * stride + 2 * i).cast()))
        };
        let av = |i: usize| unsafe { _mm256_loadu_ps(ap.add(i)) };
        let steps = n / 32 * 32;
        for (r, o) in out.iter_mut().enumerate() {
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let mut c = 0;
            while c < steps {
                a0 = _mm256_fmadd_ps(wv(r, c), av(c), a0);
                a1 = _mm256_fmadd_ps(wv(r, c + 8), av(c + 8), a1);
                a2 = _mm256_fmadd_ps(wv(r, c + 16), av(c + 16), a2);
                a3 = _mm256_fmadd_ps(wv(r, c + 24), av(c + 24), a3);
                c += 32;
            }
            while c < main {
                a0 = _mm256_fmadd_ps(wv(r, c), av(c), a0);
                c += 8;
            }
            let row = &w[r * stride..r * stride + rb];
            let mut tail = 0f32;
            for (i, &y) in af.iter().enumerate().skip(main) {
                let x = f16::from_bits(u16::from_le_bytes([row[2 * i], row[2 * i + 1]])).to_f32();
                tail += x * y;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
            *o = unsafe { hsum_ps(sum) } + tail;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Dot products of 32-element blocks with Q8_0 / Q8_1 activations

/// Dot products over 32-element blocks: weight blocks of `$wb` bytes whose codes `$codes`
/// decodes (unsigned with `$signed = false`, else signed), activation blocks of `$ab` bytes
/// with their codes at `$aq`. Each block adds `d_w·d_a·Σ q·qa` and, with `$mins`, `m_w·s_a`.
///
/// One FMA chain in block order and ggml's reduction, so results match ggml's kernels and the
/// GEMM (`gemm.rs`), which repeats exactly these operations per output.
macro_rules! legacy_dot {
    ($dot:ident, $wb:literal, $ab:literal, $aq:literal, $mins:literal,
     $signed:literal, |$x:ident| $codes:expr) => {
        #[inline(always)]
        unsafe fn codes_of($x: &[u8; $wb]) -> __m256i {
            unsafe { $codes }
        }

        /// One block of one row into `acc` / `mins`, given the block's activation scales
        /// (`cvt(y[0..4])`) and codes.
        #[inline(always)]
        unsafe fn block(
            x: &[u8; $wb],
            ys: __m128,
            qy: __m256i,
            acc: &mut __m256,
            mins: &mut __m128,
        ) {
            unsafe {
                let xs = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes(*arr(x, 0))));
                let s = _mm_mul_ps(xs, ys);
                if $mins {
                    *mins = _mm_add_ps(*mins, s);
                }
                let qx = codes_of(x);
                let p = if $signed {
                    dot_i8(qx, qy)
                } else {
                    dot_u8_i8(qx, qy)
                };
                *acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), p, *acc);
            }
        }

        #[inline(always)]
        unsafe fn act(y: &[u8; $ab]) -> (__m128, __m256i) {
            unsafe {
                let ys = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes(*arr(y, 0))));
                (ys, load32(arr(y, $aq)))
            }
        }

        #[inline(always)]
        unsafe fn finish(acc: __m256, mins: __m128) -> f32 {
            unsafe {
                let dots = hsum_ps(acc);
                if $mins {
                    dots + _mm_cvtss_f32(_mm_movehdup_ps(mins))
                } else {
                    dots
                }
            }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $dot(w: &[u8], a: &[u8]) -> f32 {
            unsafe { side_by_side::<1>([w], a)[0] }
        }

        /// `R` rows side by side, each with the operations of a row alone: one FMA chain in
        /// block order and ggml's reduction (the GEMM repeats exactly these operations).
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn side_by_side<const R: usize>(ws: [&[u8]; R], a: &[u8]) -> [f32; R] {
            unsafe {
                let mut acc = [_mm256_setzero_ps(); R];
                let mut mins = [_mm_setzero_ps(); R];
                let nb = (ws[0].len() / $wb).min(a.len() / $ab);
                for (b, y) in a.chunks_exact($ab).take(nb).enumerate() {
                    let (s, q) = act(arr(y, 0));
                    for (j, w) in ws.iter().enumerate() {
                        if R > 1 && b % 4 == 0 {
                            prefetch_ahead(&w[b * $wb..], 4 * $wb);
                        }
                        block(arr(w, b * $wb), s, q, &mut acc[j], &mut mins[j]);
                    }
                }
                std::array::from_fn(|j| finish(acc[j], mins[j]))
            }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn rows(w: &[u8], a: &[u8], out: &mut [f32]) {
            in_streams(
                w,
                out,
                |ws| unsafe { side_by_side::<STREAMS>(ws, a) },
                |w| unsafe { $dot(w, a) },
            )
        }
    };
}

mod q4_0 {
    use super::*;
    legacy_dot!(dot, 18, 34, 2, false, true, |x| {
        _mm256_sub_epi8(nibbles32(arr(x, 2)), _mm256_set1_epi8(8))
    });
}

mod q4_1 {
    use super::*;
    legacy_dot!(dot, 20, 36, 4, true, false, |x| nibbles32(arr(x, 4)));
}

mod q5_0 {
    use super::*;
    legacy_dot!(dot, 22, 34, 2, false, true, |x| {
        let high = bits_to_bytes(u32::from_le_bytes(*arr(x, 2)));
        // q − 16 as i8: where the fifth bit is clear, `nibble | 0xF0` is nibble − 16;
        // where it is set, the nibble itself is (nibble + 16) − 16.
        let fill = _mm256_andnot_si256(high, _mm256_set1_epi8(0xF0u8 as i8));
        _mm256_or_si256(nibbles32(arr(x, 6)), fill)
    });
}

mod q5_1 {
    use super::*;
    legacy_dot!(dot, 24, 36, 4, true, false, |x| {
        let high = bits_to_bytes(u32::from_le_bytes(*arr(x, 4)));
        let fifth = _mm256_and_si256(high, _mm256_set1_epi8(0x10));
        _mm256_or_si256(nibbles32(arr(x, 8)), fifth)
    });
}

mod q8_0 {
    use super::*;
    legacy_dot!(dot, 34, 34, 2, false, true, |x| load32(arr(x, 2)));
}

use q4_0::dot as vec_dot_q4_0_q8_0;
use q4_1::dot as vec_dot_q4_1_q8_1;
use q5_0::dot as vec_dot_q5_0_q8_0;
use q5_1::dot as vec_dot_q5_1_q8_1;
use q8_0::dot as vec_dot_q8_0_q8_0;

// ---------------------------------------------------------------------------------------------
// K-quant dot products with Q8_K activations (f32 d at 0, codes at 4, i16 sums at 260)

/// The 8 six-bit scales and mins of a Q4_K block (ggml's `get_scale_min_k4`, all at once).
#[inline(always)]
fn scales_mins_k4(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0x0F) | ((q[j] >> 6) << 4);
        mn[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

/// One Q4_K super-block `x` against its Q8_K block `y`, into `acc` (scale term) and `acc_m`
/// (min term).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_block(x: &[u8], y: &[u8], acc: &mut __m256, acc_m: &mut __m256) {
    unsafe {
        let low4 = _mm256_set1_epi8(0x0F);
        {
            // d and dmin are adjacent: convert both at once.
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes(*arr(x, 0))));
            let dm = _mm_mul_ps(dm, _mm_set1_ps(f32_at(y, 0)));
            let d = _mm256_broadcastss_ps(dm);
            let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
            let (sc, mn) = scales_mins_k4(arr(x, 4));

            // Min term: Σ_j m_j · (bsum_2j + bsum_2j+1), each min paired with two group sums.
            let mut mins2 = [0u8; 16];
            for (j, &m) in mn.iter().enumerate() {
                mins2[2 * j] = m;
                mins2[2 * j + 1] = m;
            }
            let mins16 = _mm256_cvtepu8_epi16(load16(&mins2));
            let bsums = load32(arr(y, 260));
            *acc_m = _mm256_fmadd_ps(
                dmin,
                _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins16)),
                *acc_m,
            );

            // Scale term: chunk c holds sub-block 2c in low nibbles, 2c + 1 in high nibbles.
            let mut sumi = _mm256_setzero_si256();
            for c in 0..4 {
                let q4 = load32(arr(x, 16 + 32 * c));
                let lo = _mm256_and_si256(q4, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), low4);
                let p_lo = _mm256_maddubs_epi16(lo, load32(arr(y, 4 + 64 * c)));
                let p_hi = _mm256_maddubs_epi16(hi, load32(arr(y, 36 + 64 * c)));
                let p_lo = _mm256_madd_epi16(p_lo, _mm256_set1_epi16(sc[2 * c] as i16));
                let p_hi = _mm256_madd_epi16(p_hi, _mm256_set1_epi16(sc[2 * c + 1] as i16));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
            }
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), *acc);
        }
    }
}

/// `R` K-quant rows of `wb`-byte super-blocks side by side (see [`in_streams`]) against one
/// Q8_K row: `block(x, y, state)` for each super-block `x` of each row in turn, each row with
/// the operations of a row alone; returns each row's state.
#[inline(always)]
fn superblocks_side_by_side<const R: usize, S: Copy>(
    ws: [&[u8]; R],
    a: &[u8],
    wb: usize,
    zero: S,
    mut block: impl FnMut(&[u8], &[u8], &mut S),
) -> [S; R] {
    let mut state = [zero; R];
    let nsb = (ws[0].len() / wb).min(a.len() / 292);
    for (i, y) in a.chunks_exact(292).take(nsb).enumerate() {
        for (w, st) in ws.iter().zip(state.iter_mut()) {
            let x = &w[wb * i..wb * (i + 1)];
            if R > 1 {
                prefetch_ahead(x, wb);
            }
            block(x, y, st);
        }
    }
    state
}

/// `R` Q4_K rows side by side.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_rows<const R: usize>(ws: [&[u8]; R], a: &[u8]) -> [f32; R] {
    let zero = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let sums = superblocks_side_by_side(ws, a, 144, zero, |x, y, (acc, acc_m)| unsafe {
        q4k_block(x, y, acc, acc_m)
    });
    sums.map(|(acc, acc_m)| unsafe { hsum_ps(acc) - hsum_ps(acc_m) })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_q4k_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe { q4k_rows::<1>([w], a)[0] }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows_q4k_q8k(w: &[u8], a: &[u8], out: &mut [f32]) {
    in_streams(
        w,
        out,
        |ws| unsafe { q4k_rows::<STREAMS>(ws, a) },
        |w| unsafe { vec_dot_q4k_q8k(w, a) },
    )
}

/// Byte shuffles that spread two i16 scales over a vector: for pair `k`, the low 128-bit lane
/// repeats i16 element `2k` of its source lane and the high lane repeats element `2k + 1`.
#[rustfmt::skip]
static Q6K_SCALE_SHUFFLE: [[u8; 32]; 4] = {
    let mut t = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < 16 {
            t[k][i] = (4 * k + i % 2) as u8;
            t[k][16 + i] = (4 * k + 2 + i % 2) as u8;
            i += 1;
        }
        k += 1;
    }
    t
};

/// One Q6_K super-block `x` against its Q8_K block `y`, into `acc`: `Σ sc·(q − 32)·a = Σ sc·q·a
/// − 32·Σ_g sc_g·bsum_g`, so the unsigned codes go straight into `maddubs` and the offset comes
/// from the Q8_K group sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_block(x: &[u8], y: &[u8], acc: &mut __m256) {
    unsafe {
        let low4 = _mm256_set1_epi8(0x0F);
        {
            // d is the high half of the block's last 4 bytes; one `movd` loads it (see
            // `f16_mul` for why not a lone 16-bit insert).
            let d = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes(*arr(x, 206))));
            let d = _mm_mul_ss(_mm_movehdup_ps(d), _mm_set_ss(f32_at(y, 0)));
            let d = _mm256_broadcastss_ps(d);
            // The 16 scales as i16: elements 0..8 in the low lane, 8..16 in the high lane.
            let sc16 = _mm256_cvtepi8_epi16(load16(arr(x, 192)));
            let offset = _mm256_madd_epi16(sc16, load32(arr(y, 260)));

            let mut sumi = _mm256_setzero_si256();
            for h in 0..2 {
                let ql0 = load32(arr(x, 64 * h));
                let ql1 = load32(arr(x, 64 * h + 32));
                let qh = load32(arr(x, 128 + 32 * h));
                let b01 = _mm256_and_si256(qh, _mm256_set1_epi8(0x03));
                let b23 = _mm256_and_si256(qh, _mm256_set1_epi8(0x0C));
                let b45 = _mm256_and_si256(qh, _mm256_set1_epi8(0x30));
                let b67 = _mm256_and_si256(qh, _mm256_set1_epi8(0xC0u8 as i8));
                let q = [
                    _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_slli_epi16::<4>(b01)),
                    _mm256_or_si256(_mm256_and_si256(ql1, low4), _mm256_slli_epi16::<2>(b23)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low4), b45),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low4),
                        _mm256_srli_epi16::<2>(b67),
                    ),
                ];
                // This half's 8 scales in both lanes.
                let sc_h = if h == 0 {
                    _mm256_permute2x128_si256::<0x00>(sc16, sc16)
                } else {
                    _mm256_permute2x128_si256::<0x11>(sc16, sc16)
                };
                for (k, &qk) in q.iter().enumerate() {
                    let p = _mm256_maddubs_epi16(qk, load32(arr(y, 4 + 128 * h + 32 * k)));
                    // 32 elements span two groups of 16: one scale per 128-bit lane.
                    let s = _mm256_shuffle_epi8(sc_h, load32(&Q6K_SCALE_SHUFFLE[k]));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
                }
            }
            let sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32::<5>(offset));
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), *acc);
        }
    }
}

/// `R` Q6_K rows side by side.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_rows<const R: usize>(ws: [&[u8]; R], a: &[u8]) -> [f32; R] {
    let sums = superblocks_side_by_side(ws, a, 210, _mm256_setzero_ps(), |x, y, acc| unsafe {
        q6k_block(x, y, acc)
    });
    sums.map(|acc| unsafe { hsum_ps(acc) })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_q6k_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe { q6k_rows::<1>([w], a)[0] }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows_q6k_q8k(w: &[u8], a: &[u8], out: &mut [f32]) {
    in_streams(
        w,
        out,
        |ws| unsafe { q6k_rows::<STREAMS>(ws, a) },
        |w| unsafe { vec_dot_q6k_q8k(w, a) },
    )
}
