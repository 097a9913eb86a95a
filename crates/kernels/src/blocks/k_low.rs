//! The low-bit K-quants, super-blocks of 256 weights in 16 sub-blocks of 16.
//! Q2_K: 2-bit codes, 4-bit scales and mins, `w = d·sc·q − dmin·m`.
//! Q3_K: 3-bit codes (2 low bits + a high-bit mask), 6-bit scales, `w = d·(sc − 32)·(q − 4)`.
//! Their activation format is Q8_K; the Q2_K dot takes its min term from the Q8_K group sums.
//! Spec: ggml `ggml-common.h` (`block_q2_K`, `block_q3_K`), `ggml-quants.c`
//! (`dequantize_row_q2_K`, `dequantize_row_q3_K`), `ggml-cpu/quants.c`
//! (`ggml_vec_dot_q2_K_q8_K_generic`, `ggml_vec_dot_q3_K_q8_K_generic`).

use super::{array_at, blocks, read_f16, write_f16, BlockQ8K, DotBlock, QuantBlock};
use crate::types::{GgmlType, QK_K};
use half::f16;

/// 2-bit codes in element order from the 64 bytes of a Q2_K/Q3_K `qs`: half `h` (32 bytes at
/// `32·h`) holds elements `128h + l + 32k` in bit pair `k` of byte `l`.
#[inline]
pub(crate) fn codes2(qs: &[u8; QK_K / 4]) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for (h, half) in qs.chunks_exact(32).enumerate() {
        for (l, &b) in half.iter().enumerate() {
            for k in 0..4 {
                q[128 * h + 32 * k + l] = (b >> (2 * k)) & 3;
            }
        }
    }
    q
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ2K {
    /// Per sub-block of 16: scale in the low nibble, min in the high nibble.
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

impl QuantBlock for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 84;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            scales: array_at(b, 0),
            qs: array_at(b, 16),
            d: read_f16(b, 80),
            dmin: read_f16(b, 82),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..16].copy_from_slice(&self.scales);
        out[16..80].copy_from_slice(&self.qs);
        write_f16(out, 80, self.d);
        write_f16(out, 82, self.dmin);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let q = codes2(&self.qs);
        for ((ys, qs), &sc) in y
            .chunks_exact_mut(16)
            .zip(q.chunks_exact(16))
            .zip(&self.scales)
        {
            let dl = d * (sc & 0xF) as f32;
            let ml = min * (sc >> 4) as f32;
            for (y, &q) in ys.iter_mut().zip(qs) {
                *y = dl * q as f32 - ml;
            }
        }
    }
}

impl DotBlock for BlockQ2K {
    type Dot = BlockQ8K;

    /// `d·da·Σ_g sc_g·Σ q·qa − dmin·da·Σ_g m_g·bsum_g`, one float step per block.
    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let q = codes2(&x.qs);
            let summs: i32 = y
                .bsums
                .iter()
                .zip(&x.scales)
                .map(|(&s, &sc)| s as i32 * (sc >> 4) as i32)
                .sum();
            let mut isum = 0i32;
            for (g, &sc) in x.scales.iter().enumerate() {
                let isuml: i32 = (16 * g..16 * g + 16)
                    .map(|e| y.qs[e] as i32 * q[e] as i32)
                    .sum();
                isum += (sc & 0xF) as i32 * isuml;
            }
            let dall = y.d * x.d.to_f32();
            let dmin = y.d * x.dmin.to_f32();
            sumf += dall * isum as f32 - dmin * summs as f32;
        }
        sumf
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ3K {
    /// Third bits: bit `k` of byte `l` belongs to element `32k + l`.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits, laid out as Q2_K's `qs`.
    pub qs: [u8; QK_K / 4],
    /// 16 six-bit scales: low nibbles in bytes 0..8 (scales 0..8 low, 8..16 high nibble),
    /// high bit pairs in bytes 8..12.
    pub scales: [u8; 12],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

/// The 16 six-bit scales of a Q3_K block, before subtracting 32.
#[inline]
pub(crate) fn q3k_scales(s: &[u8; 12]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = low | (high << 4);
    }
    out
}

impl BlockQ3K {
    /// Signed values `q − 4` in `[-4, 3]`, in element order.
    pub(crate) fn values(&self) -> [i8; QK_K] {
        let low = codes2(&self.qs);
        let mut v = [0i8; QK_K];
        for (e, v) in v.iter_mut().enumerate() {
            let (h, r) = (e / 128, e % 128);
            let bit = (self.hmask[r % 32] >> (4 * h + r / 32)) & 1;
            *v = low[e] as i8 - if bit == 1 { 0 } else { 4 };
        }
        v
    }
}

impl QuantBlock for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 110;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            hmask: array_at(b, 0),
            qs: array_at(b, 32),
            scales: array_at(b, 96),
            d: read_f16(b, 108),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..32].copy_from_slice(&self.hmask);
        out[32..96].copy_from_slice(&self.qs);
        out[96..108].copy_from_slice(&self.scales);
        write_f16(out, 108, self.d);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d_all = self.d.to_f32();
        let v = self.values();
        let sc = q3k_scales(&self.scales);
        for ((ys, vs), &s) in y.chunks_exact_mut(16).zip(v.chunks_exact(16)).zip(&sc) {
            let dl = d_all * (s as i32 - 32) as f32;
            for (y, &q) in ys.iter_mut().zip(vs) {
                *y = dl * q as f32;
            }
        }
    }
}

impl DotBlock for BlockQ3K {
    type Dot = BlockQ8K;

    /// `d·da·Σ_g (sc_g − 32)·Σ (q − 4)·qa`, with ggml's 8-lane float accumulation.
    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sums = [0f32; 8];
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let v = x.values();
            let sc = q3k_scales(&x.scales);
            let mut lanes = [0i32; 8];
            for e in 0..QK_K {
                lanes[e % 8] += (sc[e / 16] as i32 - 32) * (v[e] as i32 * y.qs[e] as i32);
            }
            let d = x.d.to_f32() * y.d;
            for (s, &l) in sums.iter_mut().zip(&lanes) {
                *s += d * l as f32;
            }
        }
        sums.iter().fold(0f32, |acc, &s| acc + s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q2_k_dequantize_known_block() {
        // Element e gets code e % 4; group g has scale g % 16 and min 15 - g.
        let mut b = vec![0u8; 84];
        for g in 0..16 {
            b[g] = (g as u8 & 0xF) | ((15 - g as u8) << 4);
        }
        for h in 0..2 {
            for l in 0..32 {
                let mut byte = 0u8;
                for k in 0..4 {
                    byte |= (((128 * h + 32 * k + l) % 4) as u8) << (2 * k);
                }
                b[16 + 32 * h + l] = byte;
            }
        }
        write_f16(&mut b, 80, f16::from_f32(0.5));
        write_f16(&mut b, 82, f16::from_f32(0.25));
        let mut y = [0f32; QK_K];
        BlockQ2K::read(&b).dequantize(&mut y);
        for (e, &v) in y.iter().enumerate() {
            let g = e / 16;
            let want = 0.5 * g as f32 * (e % 4) as f32 - 0.25 * (15 - g) as f32;
            assert_eq!(v, want, "element {e}");
        }
    }

    #[test]
    fn q3_k_scales_and_high_bits() {
        // Scale j = j + 40 (needs the high bits), all low codes 3, high bit set on even e.
        let mut s = [0u8; 12];
        for j in 0..16u8 {
            let l = j + 40;
            if j < 8 {
                s[j as usize] = l & 0xF;
            } else {
                s[j as usize - 8] |= (l & 0xF) << 4;
            }
            s[8 + j as usize % 4] |= (l >> 4) << (2 * (j / 4));
        }
        let sc = q3k_scales(&s);
        for j in 0..16 {
            assert_eq!(sc[j] as usize, j + 40);
        }
        let mut b = vec![0u8; 110];
        for e in (0..QK_K).step_by(2) {
            let (h, r) = (e / 128, e % 128);
            b[r % 32] |= 1 << (4 * h + r / 32);
        }
        b[32..96].fill(0xFF);
        b[96..108].copy_from_slice(&s);
        write_f16(&mut b, 108, f16::from_f32(1.0));
        let mut y = [0f32; QK_K];
        BlockQ3K::read(&b).dequantize(&mut y);
        for (e, &v) in y.iter().enumerate() {
            let q = if e % 2 == 0 { 3.0 } else { -1.0 };
            assert_eq!(v, (e / 16 + 8) as f32 * q, "element {e}");
        }
    }
}
