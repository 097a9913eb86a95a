//! 8-bit blocks. Q8_0 (`w = d·q`) is both a weight format and the activation format of
//! Q4_0/Q5_0/Q8_0; Q8_1 (Q8_0 plus `s = d·Σq`) is the activation format of Q4_1/Q5_1; Q8_K
//! (f32 scale, 256 values, sums of 16) is the activation format of the K-quants.
//! Spec: ggml `ggml-common.h` (`block_q8_0`, `block_q8_1`, `block_q8_K`), `ggml-quants.c`
//! (`quantize_row_q8_0_ref`, `quantize_row_q8_1_ref`, `quantize_row_q8_K_ref`),
//! `ggml-cpu/quants.c` (`ggml_vec_dot_q8_0_q8_0_generic`).

use super::{array_at, blocks, read_f16, write_f16, ActBlock, DotBlock, QuantBlock};
use crate::types::{GgmlType, QK8_0, QK8_1, QK_K};
use half::f16;

/// Scale and inverse scale of a Q8_0/Q8_1 block whose largest magnitude is `amax`, as ggml's
/// reference quantizer computes them. The SIMD quantizers call this too, so they round the
/// same products.
#[inline]
pub(crate) fn q8_0_scales(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, id)
}

/// Round half away from zero (C `roundf`) into a code in `[-127, 127]`; NaN gives 0.
///
/// Finite blocks never reach the clamp (`|x·id| ≤ 127`); it only pins down what ggml leaves
/// undefined when `1/d` overflows for a block of subnormals, and it keeps every activation code
/// in the range the SIMD dot products assume.
#[inline]
fn round_i8(v: f32) -> i8 {
    v.round().clamp(-127.0, 127.0) as i8
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl QuantBlock for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMS: usize = QK8_0;
    const BYTES: usize = 34;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            qs: array_at::<32>(b, 2).map(|q| q as i8),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        for (o, &q) in out[2..34].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

impl ActBlock for BlockQ8_0 {
    /// `d = amax / 127`, `q = round(x / d)` (half away from zero).
    fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (d, id) = q8_0_scales(amax);
        let mut qs = [0i8; QK8_0];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = round_i8(v * id);
        }
        Self {
            d: f16::from_f32(d),
            qs,
        }
    }
}

/// `Σ_blocks d·da·Σ q·qa` over 8-bit blocks (Q8_0 and Q8_1 alike, ggml's reference order).
fn dot_8bit(
    w: impl Iterator<Item = (f16, [i8; 32])>,
    a: impl Iterator<Item = (f16, [i8; 32])>,
) -> f32 {
    let mut sumf = 0f32;
    for ((dx, qx), (dy, qy)) in w.zip(a) {
        let sumi: i32 = qx.iter().zip(qy).map(|(&p, q)| p as i32 * q as i32).sum();
        sumf += sumi as f32 * (dx.to_f32() * dy.to_f32());
    }
    sumf
}

impl DotBlock for BlockQ8_0 {
    type Dot = BlockQ8_0;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        dot_8bit(
            blocks::<Self>(w).map(|x| (x.d, x.qs)),
            blocks::<Self>(a).map(|y| (y.d, y.qs)),
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f16,
    /// `d · Σ qs`, rounded to f16.
    pub s: f16,
    pub qs: [i8; QK8_1],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

impl QuantBlock for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const ELEMS: usize = QK8_1;
    const BYTES: usize = 36;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            s: read_f16(b, 2),
            qs: array_at::<32>(b, 4).map(|q| q as i8),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        write_f16(out, 2, self.s);
        for (o, &q) in out[4..36].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

/// Q8_1 is an activation format in ggml, which has no dot product with Q8_1 weights; rllm
/// multiplies such rows against Q8_1 activations (`d·da·Σ q·qa`, the sums unused).
impl DotBlock for BlockQ8_1 {
    type Dot = BlockQ8_1;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        dot_8bit(
            blocks::<Self>(w).map(|x| (x.d, x.qs)),
            blocks::<Self>(a).map(|y| (y.d, y.qs)),
        )
    }
}

impl ActBlock for BlockQ8_1 {
    /// As Q8_0, plus `s = d · Σq`.
    fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (d, id) = q8_0_scales(amax);
        let mut qs = [0i8; QK8_1];
        let mut sum = 0i32;
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = round_i8(v * id);
            sum += *q as i32;
        }
        Self {
            d: f16::from_f32(d),
            s: f16::from_f32(sum as f32 * d),
            qs,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale (f32, unlike the other blocks).
    pub d: f32,
    pub qs: [i8; QK_K],
    /// Sums of `qs` over each group of 16.
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl QuantBlock for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 292;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        let mut bsums = [0i16; QK_K / 16];
        for (j, s) in bsums.iter_mut().enumerate() {
            *s = i16::from_le_bytes([b[260 + 2 * j], b[261 + 2 * j]]);
        }
        Self {
            d: f32::from_le_bytes(array_at(b, 0)),
            qs: array_at::<QK_K>(b, 4).map(|q| q as i8),
            bsums,
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.d.to_le_bytes());
        for (o, &q) in out[4..260].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
        for (o, s) in out[260..292].chunks_exact_mut(2).zip(self.bsums) {
            o.copy_from_slice(&s.to_le_bytes());
        }
    }

    fn dequantize(&self, y: &mut [f32]) {
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = self.d * q as f32;
        }
    }
}

/// Like Q8_1, Q8_K weights have no ggml dot product; rllm pairs them with Q8_K activations.
impl DotBlock for BlockQ8K {
    type Dot = BlockQ8K;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<Self>(a)) {
            let sumi: i32 =
                x.qs.iter()
                    .zip(y.qs)
                    .map(|(&p, q)| p as i32 * q as i32)
                    .sum();
            sumf += sumi as f32 * (x.d * y.d);
        }
        sumf
    }
}

impl ActBlock for BlockQ8K {
    /// ggml's `quantize_row_q8_K_ref`: the scale comes from the *signed* value of largest
    /// magnitude (the first one, on ties), `iscale = -127 / max`, and codes round half to even.
    /// So the largest-magnitude value maps to −127 and codes stay within `[-127, 127]`.
    /// An all-zero block gets `d = 0` and zero codes and sums (ggml leaves its sums unset).
    fn quantize(x: &[f32]) -> Self {
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let mut out = Self {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        };
        if amax == 0.0 {
            return out;
        }
        let iscale = -127.0 / max;
        for (q, &v) in out.qs.iter_mut().zip(x) {
            // ggml clamps at 127 only; the lower clamp (and NaN -> 0) matter only when
            // `iscale` overflows for a block of subnormals.
            *q = (iscale * v).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        for (s, g) in out.bsums.iter_mut().zip(out.qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i16).sum();
        }
        out.d = 1.0 / iscale;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_quantize_known_values() {
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = -63.5; // a tie: rounds away from zero
        x[2] = 0.5;
        x[3] = -0.49;
        let b = BlockQ8_0::quantize(&x);
        assert_eq!(b.d.to_f32(), 1.0);
        assert_eq!(&b.qs[..4], &[127, -64, 1, 0]);
        assert!(b.qs[4..].iter().all(|&q| q == 0));
        let z = BlockQ8_0::quantize(&[0.0; 32]);
        assert_eq!(z.d.to_f32(), 0.0);
        assert!(z.qs.iter().all(|&q| q == 0));
    }

    #[test]
    fn q8_1_sum_matches_codes() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
        let b = BlockQ8_1::quantize(&x);
        let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
        // s uses the f32 scale, before rounding d to f16 (as ggml does).
        let d = 21.0f32 / 127.0;
        assert_eq!(b.s, f16::from_f32(sum as f32 * d));
        assert_ne!(b.s, f16::from_f32(sum as f32 * b.d.to_f32()));
        let q0 = BlockQ8_0::quantize(&x);
        assert_eq!((q0.d, q0.qs), (b.d, b.qs));
    }

    #[test]
    fn q8_k_uses_signed_max_and_ties_to_even() {
        let mut x = [0f32; QK_K];
        x[5] = -254.0; // the signed max: iscale = 0.5, d = 2
        x[6] = 254.0; // same magnitude, later: not chosen
        x[7] = 5.0; // 2.5 -> 2 (half to even)
        x[8] = 7.0; // 3.5 -> 4
        let b = BlockQ8K::quantize(&x);
        assert_eq!(b.d, 2.0);
        assert_eq!(&b.qs[5..9], &[-127, 127, 2, 4]);
        assert_eq!(b.bsums[0], 6);
        assert!(b.bsums[1..].iter().all(|&s| s == 0));

        x[5] = 254.0; // positive max: iscale = -0.5, codes flip sign, d = -2
        let b = BlockQ8K::quantize(&x);
        assert_eq!(b.d, -2.0);
        assert_eq!(&b.qs[5..9], &[-127, -127, -2, -4]);
    }
}
