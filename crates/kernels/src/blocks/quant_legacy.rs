//! Weight quantizers of the 32-element formats (f32 → Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), bit-exact
//! ports of ggml's `quantize_row_q*_ref` and of the imatrix-weighted `quantize_row_q*_impl`.
//! Spec: ggml `src/ggml-quants.c`.

use super::quant_helpers::{make_qkx3_quants, make_qx_quants};
use super::{ActBlock, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QuantBlock};
use half::f16;

/// C's float → `int8_t` conversion as x86 performs it (truncate toward zero into an i32, keep
/// the low byte); exact for every value the quantizers produce.
#[inline]
fn trunc_i8(v: f32) -> i8 {
    v as i32 as i8
}

/// The first value of largest magnitude, with its sign (0 for an all-zero block).
fn signed_max(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Split 5-bit codes into nibbles and the fifth-bit mask of Q5_0/Q5_1.
fn pack5(l: &[u8; 32]) -> ([u8; 4], [u8; 16]) {
    let mut qh = 0u32;
    let mut qs = [0u8; 16];
    for j in 0..16 {
        let (a, b) = (l[j], l[j + 16]);
        qs[j] = (a & 0x0F) | ((b & 0x0F) << 4);
        qh |= (((a & 0x10) >> 4) as u32) << j;
        qh |= (((b & 0x10) >> 4) as u32) << (j + 16);
    }
    (qh.to_le_bytes(), qs)
}

fn pack4(l: &[u8]) -> [u8; 16] {
    let mut qs = [0u8; 16];
    for j in 0..16 {
        qs[j] = l[j] | (l[j + 16] << 4);
    }
    qs
}

/// `σ²` of a whole row, which the imatrix quantizers mix into their weights.
fn row_sigma2(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |s, &v| s + v * v) / x.len() as f32
}

fn imatrix_weights(qw: &[f32], xb: &[f32], sigma2: f32) -> [f32; 32] {
    let mut w = [0f32; 32];
    for j in 0..32 {
        w[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
    }
    w
}

/// f32 → Q4_0 (`qw`: this row's importance weights, or `None`).
pub fn quantize_row_q4_0(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
    let sigma2 = qw.map(|_| row_sigma2(x));
    for (ib, (xb, ob)) in x.chunks_exact(32).zip(out.chunks_exact_mut(18)).enumerate() {
        let b = match (qw, sigma2) {
            (Some(qw), Some(s2)) => {
                let w = imatrix_weights(&qw[32 * ib..], xb, s2);
                let mut l = [0i8; 32];
                let d = make_qx_quants(8, xb, &mut l, 1, Some(&w));
                BlockQ4_0 {
                    d: f16::from_f32(d),
                    qs: pack4(&l.map(|v| v as u8)),
                }
            }
            _ => {
                let d = signed_max(xb) / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let mut l = [0u8; 32];
                for (lj, &v) in l.iter_mut().zip(xb) {
                    *lj = trunc_i8(v * id + 8.5).min(15) as u8;
                }
                BlockQ4_0 {
                    d: f16::from_f32(d),
                    qs: pack4(&l),
                }
            }
        };
        b.write(ob);
    }
}

/// f32 → Q4_1 (`qw`: this row's importance weights, or `None`).
pub fn quantize_row_q4_1(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
    let sigma2 = qw.map(|_| row_sigma2(x));
    for (ib, (xb, ob)) in x.chunks_exact(32).zip(out.chunks_exact_mut(20)).enumerate() {
        let b = match (qw, sigma2) {
            (Some(qw), Some(s2)) => {
                let w = imatrix_weights(&qw[32 * ib..], xb, s2);
                let (mut l, mut laux) = ([0u8; 32], [0u8; 32]);
                let mut min = 0f32;
                let d = make_qkx3_quants(
                    15,
                    xb,
                    Some(&w),
                    &mut l,
                    &mut min,
                    &mut laux,
                    -0.9,
                    0.05,
                    36,
                    false,
                );
                BlockQ4_1 {
                    d: f16::from_f32(d),
                    m: f16::from_f32(-min),
                    qs: pack4(&l),
                }
            }
            _ => {
                let (min, max) = min_max(xb);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let mut l = [0u8; 32];
                for (lj, &v) in l.iter_mut().zip(xb) {
                    *lj = trunc_i8((v - min) * id + 0.5).min(15) as u8;
                }
                BlockQ4_1 {
                    d: f16::from_f32(d),
                    m: f16::from_f32(min),
                    qs: pack4(&l),
                }
            }
        };
        b.write(ob);
    }
}

/// f32 → Q5_0 (`qw`: this row's importance weights, or `None`).
pub fn quantize_row_q5_0(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
    let sigma2 = qw.map(|_| row_sigma2(x));
    for (ib, (xb, ob)) in x.chunks_exact(32).zip(out.chunks_exact_mut(22)).enumerate() {
        let mut l = [0u8; 32];
        let d = match (qw, sigma2) {
            (Some(qw), Some(s2)) => {
                let w = imatrix_weights(&qw[32 * ib..], xb, s2);
                let mut li = [0i8; 32];
                let d = make_qx_quants(16, xb, &mut li, 1, Some(&w));
                l = li.map(|v| v as u8);
                d
            }
            _ => {
                let d = signed_max(xb) / -16.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                for (lj, &v) in l.iter_mut().zip(xb) {
                    *lj = trunc_i8(v * id + 16.5).min(31) as u8;
                }
                d
            }
        };
        let (qh, qs) = pack5(&l);
        BlockQ5_0 {
            d: f16::from_f32(d),
            qh,
            qs,
        }
        .write(ob);
    }
}

/// f32 → Q5_1 (`qw`: this row's importance weights, or `None`).
pub fn quantize_row_q5_1(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
    let sigma2 = qw.map(|_| row_sigma2(x));
    for (ib, (xb, ob)) in x.chunks_exact(32).zip(out.chunks_exact_mut(24)).enumerate() {
        let mut l = [0u8; 32];
        let (d, m) = match (qw, sigma2) {
            (Some(qw), Some(s2)) => {
                let w = imatrix_weights(&qw[32 * ib..], xb, s2);
                let mut laux = [0u8; 32];
                let mut min = 0f32;
                let d = make_qkx3_quants(
                    31,
                    xb,
                    Some(&w),
                    &mut l,
                    &mut min,
                    &mut laux,
                    -0.9,
                    0.05,
                    36,
                    false,
                );
                (d, -min)
            }
            _ => {
                let (min, max) = min_max(xb);
                let d = (max - min) / 31.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                for (lj, &v) in l.iter_mut().zip(xb) {
                    // ggml: `(uint8_t)(x + 0.5f)` with no clamp; the codes stay within 31.
                    *lj = ((v - min) * id + 0.5) as i32 as u8;
                }
                (d, min)
            }
        };
        let (qh, qs) = pack5(&l);
        BlockQ5_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(m),
            qh,
            qs,
        }
        .write(ob);
    }
}

/// f32 → Q8_0: ggml's reference rounding (the imatrix does not change Q8_0).
pub fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        BlockQ8_0::quantize(xb).write(ob);
    }
}
