//! NEON kernels for aarch64 (little-endian). Each replaces a scalar reference in `blocks/`:
//! the activation quantizers match it bit for bit, the dot products up to float summation
//! order (their integer sums are exact). Compare ggml `src/ggml-cpu/arch/arm/quants.c`.
//!
//! Baseline Advanced SIMD only: 8-bit products widen with `vmull_s8` and pair-add into i32.
//! The `sdot` instructions (`dotprod`) would be faster, but their Rust intrinsics are still
//! unstable; a later tier can add them behind runtime detection.
//!
//! Every function is `#[target_feature(enable = "neon")] unsafe fn`; NEON is part of the
//! aarch64 baseline, so the precondition always holds there. Memory is only touched through
//! `&[u8; N]` / `&[f32; N]` views cut from the slice arguments with bounds checks. Vectors are
//! loaded as bytes and reinterpreted, so no load assumes more than byte alignment.

// Value intrinsics are safe to call inside `target_feature` functions from Rust 1.87 on, but
// not on the 1.85 MSRV, which needs the `unsafe` blocks this lint would flag.
#![allow(unused_unsafe)]

mod more;

use super::{DotFn, QuantizeFn};
use crate::blocks::{f32_to_bf16, q8_0_scales};
use crate::types::GgmlType;
use half::f16;
use std::arch::aarch64::*;

/// The activation quantizer for format `act`, if this file has one. (F16 activations use the
/// scalar conversion: Rust has no stable f16 vector types yet.)
pub(crate) fn quantize_fn(act: GgmlType) -> Option<QuantizeFn> {
    Some(match act {
        GgmlType::Q8_0 => quantize_row_q8_0 as QuantizeFn,
        GgmlType::Q8_1 => quantize_row_q8_1,
        GgmlType::Q8_K => quantize_row_q8_k,
        GgmlType::BF16 => quantize_row_bf16,
        _ => return None,
    })
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
        GgmlType::Q2_K => more::vec_dot_q2k_q8k,
        GgmlType::Q3_K => more::vec_dot_q3k_q8k,
        GgmlType::Q4_K => vec_dot_q4k_q8k,
        GgmlType::Q5_K => more::vec_dot_q5k_q8k,
        GgmlType::Q6_K => vec_dot_q6k_q8k,
        GgmlType::IQ4_NL => more::vec_dot_iq4nl_q8_0,
        GgmlType::IQ4_XS => more::vec_dot_iq4xs_q8k,
        GgmlType::TQ2_0 => more::vec_dot_tq2_0_q8k,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Bounds-checked views and loads

#[inline(always)]
fn arr<const N: usize>(b: &[u8], off: usize) -> &[u8; N] {
    b[off..off + N].try_into().expect("length is N")
}

#[inline(always)]
fn arr_mut<const N: usize>(b: &mut [u8], off: usize) -> &mut [u8; N] {
    (&mut b[off..off + N]).try_into().expect("length is N")
}

#[inline(always)]
fn f32x4(x: &[f32], off: usize) -> &[f32; 4] {
    x[off..off + 4].try_into().expect("length is 4")
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_u8(b: &[u8; 16]) -> uint8x16_t {
    // SAFETY: `b` is 16 readable bytes; byte loads need no alignment.
    unsafe { vld1q_u8(b.as_ptr()) }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_u8x8(b: &[u8; 8]) -> uint8x8_t {
    // SAFETY: `b` is 8 readable bytes; byte loads need no alignment.
    unsafe { vld1_u8(b.as_ptr()) }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_s8(b: &[u8; 16]) -> int8x16_t {
    unsafe { vreinterpretq_s8_u8(load_u8(b)) }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_f32(x: &[f32; 4]) -> float32x4_t {
    // SAFETY: `x` is 4 readable, aligned f32.
    unsafe { vld1q_f32(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn store_u8x8(out: &mut [u8; 8], v: uint8x8_t) {
    // SAFETY: `out` is 8 writable bytes; byte stores need no alignment.
    unsafe { vst1_u8(out.as_mut_ptr(), v) }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn store_u8(out: &mut [u8; 16], v: uint8x16_t) {
    // SAFETY: `out` is 16 writable bytes; byte stores need no alignment.
    unsafe { vst1q_u8(out.as_mut_ptr(), v) }
}

#[inline(always)]
fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes(*arr::<2>(b, off))).to_f32()
}

#[inline(always)]
fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes(*arr::<4>(b, off))
}

// ---------------------------------------------------------------------------------------------
// Arithmetic helpers

/// `acc + Σ` of the 16 products `a·b`, pair-added into 4 i32 lanes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_acc(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    unsafe {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// The 32 nibbles of a Q4/Q5 block: (elements 0..16, elements 16..32).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles(qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    unsafe {
        let q = load_u8(qs);
        (vandq_u8(q, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(q))
    }
}

/// Byte `i` is 0xFF where bit `i` of `bits` is set: (bits 0..16, bits 16..32).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn bits_to_bytes(bits: u32) -> (uint8x16_t, uint8x16_t) {
    unsafe {
        let v = vreinterpretq_u8_u32(vdupq_n_u32(bits));
        let idx_lo: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
        let idx_hi: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
        let mask: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
        let mask = load_u8(&mask);
        (
            vtstq_u8(vqtbl1q_u8(v, load_u8(&idx_lo)), mask),
            vtstq_u8(vqtbl1q_u8(v, load_u8(&idx_hi)), mask),
        )
    }
}

/// Eight i32 codes (each within i8 after the clamp) to 8 bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn narrow_i8(a: int32x4_t, b: int32x4_t) -> uint8x8_t {
    unsafe { vreinterpret_u8_s8(vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b)))) }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn clamp127(v: int32x4_t) -> int32x4_t {
    unsafe { vminq_s32(vmaxq_s32(v, vdupq_n_s32(-127)), vdupq_n_s32(127)) }
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers

/// One Q8_0/Q8_1 block of 32 values into `qs` (32 bytes): returns (d, sum of codes).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn quantize_block_q8(x: &[f32], qs: &mut [u8]) -> (f32, i32) {
    unsafe {
        let mut v = [vdupq_n_f32(0.0); 8];
        let mut m = vdupq_n_f32(0.0);
        for (k, vk) in v.iter_mut().enumerate() {
            *vk = load_f32(f32x4(x, 4 * k));
            // maxNum ignores NaN, like f32::max in the reference.
            m = vmaxnmq_f32(m, vabsq_f32(*vk));
        }
        let (d, id) = q8_0_scales(vmaxnmvq_f32(m));
        let mut sum = vdupq_n_s32(0);
        for k in 0..4 {
            // Round half away from zero (as roundf), saturating; NaN gives 0.
            let a = clamp127(vcvtaq_s32_f32(vmulq_n_f32(v[2 * k], id)));
            let b = clamp127(vcvtaq_s32_f32(vmulq_n_f32(v[2 * k + 1], id)));
            sum = vaddq_s32(sum, vaddq_s32(a, b));
            store_u8x8(arr_mut(qs, 8 * k), narrow_i8(a, b));
        }
        (d, vaddvq_s32(sum))
    }
}

#[target_feature(enable = "neon")]
unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        let (d, _) = unsafe { quantize_block_q8(xb, &mut ob[2..34]) };
        ob[0..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
    }
}

#[target_feature(enable = "neon")]
unsafe fn quantize_row_q8_1(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(36)) {
        let (d, sum) = unsafe { quantize_block_q8(xb, &mut ob[4..36]) };
        ob[0..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        ob[2..4].copy_from_slice(&f16::from_f32(sum as f32 * d).to_bits().to_le_bytes());
    }
}

#[target_feature(enable = "neon")]
unsafe fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(256).zip(out.chunks_exact_mut(292)) {
        let mut m = unsafe { vdupq_n_f32(0.0) };
        for k in 0..64 {
            m = unsafe { vmaxnmq_f32(m, vabsq_f32(load_f32(f32x4(xb, 4 * k)))) };
        }
        let amax = unsafe { vmaxnmvq_f32(m) };
        if amax == 0.0 {
            ob.fill(0);
            continue;
        }
        // The scale comes from the first value of largest magnitude, with its sign.
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        for g in 0..16 {
            let sum = unsafe {
                let mut q = [vdupq_n_s32(0); 4];
                for (k, qk) in q.iter_mut().enumerate() {
                    let v = vmulq_n_f32(load_f32(f32x4(xb, 16 * g + 4 * k)), iscale);
                    // Round half to even (ggml's nearest_int), saturating; NaN gives 0.
                    *qk = clamp127(vcvtnq_s32_f32(v));
                }
                store_u8x8(arr_mut(ob, 4 + 16 * g), narrow_i8(q[0], q[1]));
                store_u8x8(arr_mut(ob, 12 + 16 * g), narrow_i8(q[2], q[3]));
                vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3])))
            };
            ob[260 + 2 * g..262 + 2 * g].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        ob[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

#[target_feature(enable = "neon")]
unsafe fn quantize_row_bf16(x: &[f32], out: &mut [u8]) {
    let mut xs = x.chunks_exact(8);
    let mut os = out.chunks_exact_mut(16);
    for (xc, oc) in (&mut xs).zip(&mut os) {
        unsafe {
            let mut h = [vdup_n_u16(0); 2];
            for (k, hk) in h.iter_mut().enumerate() {
                let u = vreinterpretq_u32_f32(load_f32(f32x4(xc, 4 * k)));
                // Round to nearest even: add 0x7fff plus the lowest kept bit, keep the top half.
                let lsb = vandq_u32(vshrq_n_u32::<16>(u), vdupq_n_u32(1));
                let rounded = vshrq_n_u32::<16>(vaddq_u32(u, vaddq_u32(lsb, vdupq_n_u32(0x7fff))));
                // NaN: keep the top half, set the quiet bit.
                let nan = vcgtq_u32(
                    vandq_u32(u, vdupq_n_u32(0x7fff_ffff)),
                    vdupq_n_u32(0x7f80_0000),
                );
                let quiet = vorrq_u32(vshrq_n_u32::<16>(u), vdupq_n_u32(64));
                *hk = vmovn_u32(vbslq_u32(nan, quiet, rounded));
            }
            store_u8(
                arr_mut(oc, 0),
                vreinterpretq_u8_u16(vcombine_u16(h[0], h[1])),
            );
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

/// Four f32 from 16 little-endian bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_f32_bytes(b: &[u8; 16]) -> (float32x4_t, float32x4_t) {
    // Returned twice so all three float loaders share one shape (8 values per 16 bytes for
    // the 16-bit types); only the first half is used for f32.
    unsafe {
        let v = vreinterpretq_f32_u8(load_u8(b));
        (v, vdupq_n_f32(0.0))
    }
}

/// Four f16 to f32 with integer operations: shifting exponent and mantissa into place and
/// scaling by 2^112 converts normals and subnormals exactly; infinities and NaNs get the f32
/// all-ones exponent.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn widen_f16(h: uint16x4_t) -> float32x4_t {
    unsafe {
        let u = vmovl_u16(h);
        let sign = vshlq_n_u32::<16>(vandq_u32(u, vdupq_n_u32(0x8000)));
        let em = vshlq_n_u32::<13>(vandq_u32(u, vdupq_n_u32(0x7fff)));
        let two_112 = f32::from_bits(0x7780_0000);
        let mag = vreinterpretq_u32_f32(vmulq_n_f32(vreinterpretq_f32_u32(em), two_112));
        let special = vceqq_u32(vandq_u32(u, vdupq_n_u32(0x7c00)), vdupq_n_u32(0x7c00));
        let inf_nan = vorrq_u32(em, vdupq_n_u32(0x7f80_0000));
        vreinterpretq_f32_u32(vorrq_u32(vbslq_u32(special, inf_nan, mag), sign))
    }
}

/// Eight f16 (16 bytes) to f32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_f16x8(b: &[u8; 16]) -> (float32x4_t, float32x4_t) {
    unsafe {
        let h = vreinterpretq_u16_u8(load_u8(b));
        (widen_f16(vget_low_u16(h)), widen_f16(vget_high_u16(h)))
    }
}

/// Eight bf16 (16 bytes) to f32: widen and shift into the top half.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_bf16x8(b: &[u8; 16]) -> (float32x4_t, float32x4_t) {
    unsafe {
        let h = vreinterpretq_u16_u8(load_u8(b));
        (
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
        )
    }
}

/// One float dot product over 16-byte chunks holding `$per` values (4 f32 or 8 f16/bf16);
/// `$elem` reads one element of the tail. (A macro: a `target_feature` function cannot be
/// passed as an `Fn`.)
macro_rules! float_dot {
    ($name:ident, $per:literal, $load:ident, $elem:expr) => {
        #[target_feature(enable = "neon")]
        unsafe fn $name(w: &[u8], a: &[u8]) -> f32 {
            let elem = $elem;
            let size = 16 / $per;
            unsafe {
                let mut acc = [vdupq_n_f32(0.0); 4];
                let mut ws = w.chunks_exact(32);
                let mut as_ = a.chunks_exact(32);
                for (wc, ac) in (&mut ws).zip(&mut as_) {
                    for k in 0..2 {
                        let (x0, x1) = $load(arr(wc, 16 * k));
                        let (y0, y1) = $load(arr(ac, 16 * k));
                        acc[2 * k] = vfmaq_f32(acc[2 * k], x0, y0);
                        if $per == 8 {
                            acc[2 * k + 1] = vfmaq_f32(acc[2 * k + 1], x1, y1);
                        }
                    }
                }
                let mut tail = 0f32;
                let (wr, ar) = (ws.remainder(), as_.remainder());
                for (x, y) in wr.chunks_exact(size).zip(ar.chunks_exact(size)) {
                    tail += elem(x) * elem(y);
                }
                let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
                vaddvq_f32(sum) + tail
            }
        }
    };
}

float_dot!(vec_dot_f32, 4, load_f32_bytes, |b: &[u8]| {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
});
float_dot!(vec_dot_f16, 8, load_f16x8, |b: &[u8]| f16::from_bits(
    u16::from_le_bytes([b[0], b[1]])
)
.to_f32());
float_dot!(vec_dot_bf16, 8, load_bf16x8, |b: &[u8]| f32::from_bits(
    (u16::from_le_bytes([b[0], b[1]]) as u32) << 16
));

// ---------------------------------------------------------------------------------------------
// Dot products of 32-element blocks with Q8_0 / Q8_1 activations

#[target_feature(enable = "neon")]
unsafe fn vec_dot_q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = vdupq_n_f32(0.0);
        let eight = vdupq_n_s8(8);
        for (x, y) in w.chunks_exact(18).zip(a.chunks_exact(34)) {
            let d = f16_at(x, 0) * f16_at(y, 0);
            let (lo, hi) = nibbles(arr(x, 2));
            let lo = vsubq_s8(vreinterpretq_s8_u8(lo), eight);
            let hi = vsubq_s8(vreinterpretq_s8_u8(hi), eight);
            let p = dot_acc(vdupq_n_s32(0), lo, load_s8(arr(y, 2)));
            let p = dot_acc(p, hi, load_s8(arr(y, 18)));
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), d);
        }
        vaddvq_f32(acc)
    }
}

#[target_feature(enable = "neon")]
unsafe fn vec_dot_q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = vdupq_n_f32(0.0);
        let mut summ = 0f32;
        for (x, y) in w.chunks_exact(20).zip(a.chunks_exact(36)) {
            summ += f16_at(x, 2) * f16_at(y, 2);
            let d = f16_at(x, 0) * f16_at(y, 0);
            let (lo, hi) = nibbles(arr(x, 4));
            let p = dot_acc(vdupq_n_s32(0), vreinterpretq_s8_u8(lo), load_s8(arr(y, 4)));
            let p = dot_acc(p, vreinterpretq_s8_u8(hi), load_s8(arr(y, 20)));
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), d);
        }
        vaddvq_f32(acc) + summ
    }
}

#[target_feature(enable = "neon")]
unsafe fn vec_dot_q5_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = vdupq_n_f32(0.0);
        let f0 = vdupq_n_u8(0xF0);
        for (x, y) in w.chunks_exact(22).zip(a.chunks_exact(34)) {
            let d = f16_at(x, 0) * f16_at(y, 0);
            let (h_lo, h_hi) = bits_to_bytes(u32::from_le_bytes(*arr(x, 2)));
            let (lo, hi) = nibbles(arr(x, 6));
            // q − 16 as i8: where the fifth bit is clear, `nibble | 0xF0` is nibble − 16;
            // where it is set, the nibble itself is (nibble + 16) − 16.
            let lo = vreinterpretq_s8_u8(vorrq_u8(lo, vbicq_u8(f0, h_lo)));
            let hi = vreinterpretq_s8_u8(vorrq_u8(hi, vbicq_u8(f0, h_hi)));
            let p = dot_acc(vdupq_n_s32(0), lo, load_s8(arr(y, 2)));
            let p = dot_acc(p, hi, load_s8(arr(y, 18)));
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), d);
        }
        vaddvq_f32(acc)
    }
}

#[target_feature(enable = "neon")]
unsafe fn vec_dot_q5_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = vdupq_n_f32(0.0);
        let mut summ = 0f32;
        let b4 = vdupq_n_u8(0x10);
        for (x, y) in w.chunks_exact(24).zip(a.chunks_exact(36)) {
            summ += f16_at(x, 2) * f16_at(y, 2);
            let d = f16_at(x, 0) * f16_at(y, 0);
            let (h_lo, h_hi) = bits_to_bytes(u32::from_le_bytes(*arr(x, 4)));
            let (lo, hi) = nibbles(arr(x, 8));
            let lo = vreinterpretq_s8_u8(vorrq_u8(lo, vandq_u8(h_lo, b4)));
            let hi = vreinterpretq_s8_u8(vorrq_u8(hi, vandq_u8(h_hi, b4)));
            let p = dot_acc(vdupq_n_s32(0), lo, load_s8(arr(y, 4)));
            let p = dot_acc(p, hi, load_s8(arr(y, 20)));
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), d);
        }
        vaddvq_f32(acc) + summ
    }
}

#[target_feature(enable = "neon")]
unsafe fn vec_dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = vdupq_n_f32(0.0);
        for (x, y) in w.chunks_exact(34).zip(a.chunks_exact(34)) {
            let d = f16_at(x, 0) * f16_at(y, 0);
            let p = dot_acc(vdupq_n_s32(0), load_s8(arr(x, 2)), load_s8(arr(y, 2)));
            let p = dot_acc(p, load_s8(arr(x, 18)), load_s8(arr(y, 18)));
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), d);
        }
        vaddvq_f32(acc)
    }
}

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

/// The 16 Q8_K group sums as two vectors of i16.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn bsums(y: &[u8]) -> (int16x8_t, int16x8_t) {
    unsafe {
        (
            vreinterpretq_s16_u8(load_u8(arr(y, 260))),
            vreinterpretq_s16_u8(load_u8(arr(y, 276))),
        )
    }
}

#[target_feature(enable = "neon")]
unsafe fn vec_dot_q4k_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut sumf = 0f32;
        let low4 = vdupq_n_u8(0x0F);
        for (x, y) in w.chunks_exact(144).zip(a.chunks_exact(292)) {
            let dy = f32_at(y, 0);
            let (sc, mn) = scales_mins_k4(arr(x, 4));

            // Min term: Σ_j m_j · (bsum_2j + bsum_2j+1).
            let (b0, b1) = bsums(y);
            let pairs = vpaddq_s16(b0, b1);
            let mins = vreinterpretq_s16_u16(vmovl_u8(load_u8x8(&mn)));
            let prod = vmull_s16(vget_low_s16(pairs), vget_low_s16(mins));
            let prod = vmlal_high_s16(prod, pairs, mins);
            let summ = vaddvq_s32(prod);

            // Scale term: chunk c holds sub-block 2c in low nibbles, 2c + 1 in high nibbles.
            let mut sumi = vdupq_n_s32(0);
            for c in 0..4 {
                let q0 = load_u8(arr(x, 16 + 32 * c));
                let q1 = load_u8(arr(x, 32 + 32 * c));
                let lo0 = vreinterpretq_s8_u8(vandq_u8(q0, low4));
                let lo1 = vreinterpretq_s8_u8(vandq_u8(q1, low4));
                let hi0 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q0));
                let hi1 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q1));
                let p_lo = dot_acc(vdupq_n_s32(0), lo0, load_s8(arr(y, 4 + 64 * c)));
                let p_lo = dot_acc(p_lo, lo1, load_s8(arr(y, 20 + 64 * c)));
                let p_hi = dot_acc(vdupq_n_s32(0), hi0, load_s8(arr(y, 36 + 64 * c)));
                let p_hi = dot_acc(p_hi, hi1, load_s8(arr(y, 52 + 64 * c)));
                sumi = vmlaq_n_s32(sumi, p_lo, sc[2 * c] as i32);
                sumi = vmlaq_n_s32(sumi, p_hi, sc[2 * c + 1] as i32);
            }
            sumf += f16_at(x, 0) * dy * vaddvq_s32(sumi) as f32;
            sumf -= f16_at(x, 2) * dy * summ as f32;
        }
        sumf
    }
}

/// Q6_K: `Σ sc·(q − 32)·a = Σ sc·q·a − 32·Σ_g sc_g·bsum_g`, with the offset from the Q8_K
/// group sums.
#[target_feature(enable = "neon")]
unsafe fn vec_dot_q6k_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut sumf = 0f32;
        let low4 = vdupq_n_u8(0x0F);
        for (x, y) in w.chunks_exact(210).zip(a.chunks_exact(292)) {
            let scales = arr::<16>(x, 192);
            let sc = load_s8(scales);
            let (b0, b1) = bsums(y);
            let off = vmull_s16(vget_low_s16(vmovl_s8(vget_low_s8(sc))), vget_low_s16(b0));
            let off = vmlal_high_s16(off, vmovl_s8(vget_low_s8(sc)), b0);
            let off = vmlal_s16(off, vget_low_s16(vmovl_high_s8(sc)), vget_low_s16(b1));
            let off = vmlal_high_s16(off, vmovl_high_s8(sc), b1);
            let offset = vaddvq_s32(off);

            let mut sumi = vdupq_n_s32(0);
            for h in 0..2 {
                for v in 0..2 {
                    // Elements 16v..16v+16 of each quarter of this half.
                    let ql0 = load_u8(arr(x, 64 * h + 16 * v));
                    let ql1 = load_u8(arr(x, 64 * h + 32 + 16 * v));
                    let qh = load_u8(arr(x, 128 + 32 * h + 16 * v));
                    let q = [
                        vorrq_u8(
                            vandq_u8(ql0, low4),
                            vshlq_n_u8::<4>(vandq_u8(qh, vdupq_n_u8(0x03))),
                        ),
                        vorrq_u8(
                            vandq_u8(ql1, low4),
                            vshlq_n_u8::<2>(vandq_u8(qh, vdupq_n_u8(0x0C))),
                        ),
                        vorrq_u8(vshrq_n_u8::<4>(ql0), vandq_u8(qh, vdupq_n_u8(0x30))),
                        vorrq_u8(
                            vshrq_n_u8::<4>(ql1),
                            vshrq_n_u8::<2>(vandq_u8(qh, vdupq_n_u8(0xC0))),
                        ),
                    ];
                    for (k, &qk) in q.iter().enumerate() {
                        let yk = load_s8(arr(y, 4 + 128 * h + 32 * k + 16 * v));
                        let p = dot_acc(vdupq_n_s32(0), vreinterpretq_s8_u8(qk), yk);
                        let g = 8 * h + 2 * k + v;
                        sumi = vmlaq_n_s32(sumi, p, scales[g] as i8 as i32);
                    }
                }
            }
            let isum = vaddvq_s32(sumi) - 32 * offset;
            sumf += f16_at(x, 208) * f32_at(y, 0) * isum as f32;
        }
        sumf
    }
}
