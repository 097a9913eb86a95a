//! The 4-bit non-linear quants: codes index the 16 values of `KVALUES_IQ4NL`.
//! IQ4_NL: blocks of 32 with an f16 scale, `w = d·kvalues[q]` (activations Q8_0).
//! IQ4_XS: super-blocks of 256 with a 6-bit scale per 32, `w = d·(ls − 32)·kvalues[q]`
//! (activations Q8_K).
//! Spec: ggml `ggml-common.h` (`block_iq4_nl`, `block_iq4_xs`, `kvalues_iq4nl`), `ggml-quants.c`
//! (`dequantize_row_iq4_nl/xs`, `quantize_row_iq4_nl_impl`, `quantize_iq4_nl/xs`),
//! `ggml-cpu/quants.c` (`ggml_vec_dot_iq4_nl_q8_0_generic`, `ggml_vec_dot_iq4_xs_q8_K_generic`).

use super::iq_tables::KVALUES_IQ4NL;
use super::quant_helpers::{nearest_int, GROUP_MAX_EPS};
use super::{array_at, blocks, read_f16, write_f16, BlockQ8K, BlockQ8_0, DotBlock, QuantBlock};
use crate::types::{GgmlType, QK_K};
use half::f16;

/// Elements per IQ4_NL block (ggml's `QK4_NL`).
pub const QK4_NL: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockIQ4NL {
    pub d: f16,
    /// Byte `j` holds element `j` (low nibble) and `j + 16` (high nibble).
    pub qs: [u8; QK4_NL / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4NL>() == 18);

impl QuantBlock for BlockIQ4NL {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const ELEMS: usize = QK4_NL;
    const BYTES: usize = 18;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            qs: array_at(b, 2),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        out[2..18].copy_from_slice(&self.qs);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = d * KVALUES_IQ4NL[(q & 0xF) as usize] as f32;
            y[j + 16] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
        }
    }
}

impl DotBlock for BlockIQ4NL {
    type Dot = BlockQ8_0;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8_0>(a)) {
            let d = y.d.to_f32() * x.d.to_f32();
            let (mut s1, mut s2) = (0i32, 0i32);
            for (j, &q) in x.qs.iter().enumerate() {
                s1 += y.qs[j] as i32 * KVALUES_IQ4NL[(q & 0xF) as usize] as i32;
                s2 += y.qs[j + 16] as i32 * KVALUES_IQ4NL[(q >> 4) as usize] as i32;
            }
            sumf += d * (s1 + s2) as f32;
        }
        sumf
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockIQ4XS {
    pub d: f16,
    /// High 2 bits of the 8 sub-block scales (bits `2j`, `2j + 1`), little-endian.
    pub scales_h: [u8; 2],
    /// Low 4 bits of the 8 sub-block scales, two per byte (even sub-block low).
    pub scales_l: [u8; QK_K / 64],
    /// Per 32 weights 16 bytes, nibble order as IQ4_NL.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4XS>() == 136);

impl BlockIQ4XS {
    /// The 6-bit scale of sub-block `ib` (subtract 32 for the signed multiplier).
    #[inline]
    pub(crate) fn ls(&self, ib: usize) -> i32 {
        let h = u16::from_le_bytes(self.scales_h);
        let lo = (self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
        (lo as i32) | ((((h >> (2 * ib)) & 3) as i32) << 4)
    }
}

impl QuantBlock for BlockIQ4XS {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 136;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            scales_h: array_at(b, 2),
            scales_l: array_at(b, 4),
            qs: array_at(b, 8),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        out[2..4].copy_from_slice(&self.scales_h);
        out[4..8].copy_from_slice(&self.scales_l);
        out[8..136].copy_from_slice(&self.qs);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (ib, (ys, qs)) in y
            .chunks_exact_mut(32)
            .zip(self.qs.chunks_exact(16))
            .enumerate()
        {
            let dl = d * (self.ls(ib) - 32) as f32;
            for (j, &q) in qs.iter().enumerate() {
                ys[j] = dl * KVALUES_IQ4NL[(q & 0xF) as usize] as f32;
                ys[j + 16] = dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
            }
        }
    }
}

impl DotBlock for BlockIQ4XS {
    type Dot = BlockQ8K;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let d4d8 = x.d.to_f32() * y.d;
            for (ib, qs) in x.qs.chunks_exact(16).enumerate() {
                let dl = d4d8 * (x.ls(ib) - 32) as f32;
                let q8 = &y.qs[32 * ib..];
                let (mut s1, mut s2) = (0i32, 0i32);
                for (j, &q) in qs.iter().enumerate() {
                    s1 += q8[j] as i32 * KVALUES_IQ4NL[(q & 0xF) as usize] as i32;
                    s2 += q8[j + 16] as i32 * KVALUES_IQ4NL[(q >> 4) as usize] as i32;
                }
                sumf += dl * (s1 + s2) as f32;
            }
        }
        sumf
    }
}

// ---------------------------------------------------------------------------------------------
// Quantizers (ggml's `quantize_row_iq4_nl_impl`, as `quantize_iq4_nl` / `quantize_iq4_xs` call
// it, with 7 scale trials each way).

/// Trials on each side of the first scale guess (ggml passes 7 from `quantize_iq4_nl/xs`).
const NTRY: i32 = 7;

/// Index of the table value nearest to `x` (ties to the lower index, as ggml).
#[inline]
fn best_index(x: f32) -> u8 {
    let v = &KVALUES_IQ4NL;
    if x <= v[0] as f32 {
        return 0;
    }
    if x >= v[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < v[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (v[mu - 1] as f32) < v[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// Fit one block of 32: the weighted least-squares scale over `2·NTRY + 1` trial inverse
/// scales, keeping the codes of the first guess in `l`. Returns the scale (0 for a zero block).
fn fit_block(xb: &[f32], weight: &[f32], l: &mut [u8]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in xb {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = KVALUES_IQ4NL[0] as f32;
    let mut d = -max / v0;
    let id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for ((lj, &x), &w) in l.iter_mut().zip(xb).zip(weight) {
        *lj = best_index(id * x);
        let q = KVALUES_IQ4NL[*lj as usize] as f32;
        sumqx += w * q * x;
        sumq2 += w * q * q;
    }
    d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for (&x, &w) in xb.iter().zip(weight) {
            let q = KVALUES_IQ4NL[best_index(id * x) as usize] as f32;
            sumqx += w * q * x;
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// Per-element weights of a block: `qw·sqrt(σ² + x²)` with an importance matrix, else `x²`.
fn weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, out: &mut [f32]) {
    for (j, (w, &x)) in out.iter_mut().zip(xb).enumerate() {
        *w = match qw {
            Some(q) => q[j] * (sigma2 + x * x).sqrt(),
            None => x * x,
        };
    }
}

fn sigma2(x: &[f32]) -> f32 {
    let s: f32 = x.iter().fold(0f32, |s, &v| s + v * v);
    s * (2.0 / x.len() as f32)
}

fn pack_nibbles(l: &[u8], q4: &mut [u8]) {
    for (lc, qc) in l.chunks_exact(32).zip(q4.chunks_exact_mut(16)) {
        for j in 0..16 {
            qc[j] = lc[j] | (lc[16 + j] << 4);
        }
    }
}

/// Quantize a row into IQ4_NL blocks, as ggml's `quantize_iq4_nl` (`qw`: importance weights of
/// the row, or `None`).
pub fn quantize_row_iq4_nl(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
    let mut weight = [0f32; QK4_NL];
    let mut l = [0u8; QK4_NL];
    for (ib, (xb, ob)) in x
        .chunks_exact(QK4_NL)
        .zip(out.chunks_exact_mut(18))
        .enumerate()
    {
        let qwb = qw.map(|q| &q[QK4_NL * ib..QK4_NL * (ib + 1)]);
        weights(xb, qwb, sigma2(xb), &mut weight);
        let d = fit_block(xb, &weight, &mut l);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (lj, &v) in l.iter_mut().zip(xb) {
            *lj = best_index(id * v);
        }
        let mut b = BlockIQ4NL {
            d: f16::from_f32(d),
            qs: [0; 16],
        };
        pack_nibbles(&l, &mut b.qs);
        b.write(ob);
    }
}

/// Quantize a row into IQ4_XS blocks, as ggml's `quantize_iq4_xs`.
pub fn quantize_row_iq4_xs(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
    let mut weight = [0f32; 32];
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    for (ibl, (xs, ob)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(136))
        .enumerate()
    {
        let s2 = sigma2(xs);
        let (mut max_scale, mut amax_scale) = (0f32, 0f32);
        for ib in 0..QK_K / 32 {
            let xb = &xs[32 * ib..32 * ib + 32];
            let qwb = qw.map(|q| &q[QK_K * ibl + 32 * ib..QK_K * ibl + 32 * ib + 32]);
            weights(xb, qwb, s2, &mut weight);
            let d = fit_block(xb, &weight, &mut l[32 * ib..32 * ib + 32]);
            scales[ib] = d;
            if d.abs() > amax_scale {
                amax_scale = d.abs();
                max_scale = d;
            }
        }
        let d = -max_scale / 32.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut b = BlockIQ4XS {
            d: f16::from_f32(d),
            scales_h: [0; 2],
            scales_l: [0; 4],
            qs: [0; 128],
        };
        let mut scales_h = 0u16;
        for ib in 0..QK_K / 32 {
            let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * ls as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for j in 0..32 {
                l[32 * ib + j] = best_index(idl * xs[32 * ib + j]);
            }
            let ls = (ls + 32) as u16;
            b.scales_l[ib / 2] |= ((ls & 0xF) as u8) << (4 * (ib % 2));
            scales_h |= (ls >> 4) << (2 * ib);
        }
        b.scales_h = scales_h.to_le_bytes();
        pack_nibbles(&l, &mut b.qs);
        b.write(ob);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_index_picks_nearest_value() {
        assert_eq!(best_index(-1000.0), 0);
        assert_eq!(best_index(1000.0), 15);
        assert_eq!(best_index(0.0), 8); // 1 is nearer than −10
        assert_eq!(best_index(-4.5), 8); // equidistant from −10 and 1: the upper one
        for (i, &v) in KVALUES_IQ4NL.iter().enumerate() {
            assert_eq!(best_index(v as f32) as usize, i);
        }
    }

    #[test]
    fn iq4_xs_scales_round_trip() {
        let mut b = BlockIQ4XS::read(&[0u8; 136]);
        b.scales_h = 0b10_01_11_00_10_01_11_00u16.to_le_bytes();
        b.scales_l = [0x21, 0x43, 0x65, 0x87];
        let want = [1, 2 | 48, 3 | 16, 4 | 32, 5, 6 | 48, 7 | 16, 8 | 32];
        for (ib, &w) in want.iter().enumerate() {
            assert_eq!(b.ls(ib), w, "sub-block {ib}");
        }
    }
}
