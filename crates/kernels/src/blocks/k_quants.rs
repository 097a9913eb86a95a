//! K-quants: super-blocks of 256 weights split into sub-blocks with their own quantized scales.
//! Q4_K: 8 sub-blocks of 32, 6-bit scales and mins, `w = d·sc·q − dmin·m`.
//! Q5_K: as Q4_K with a fifth bit per weight.
//! Q6_K: 16 sub-blocks of 16, i8 scales, `w = d·sc·(q − 32)`.
//! (Q2_K and Q3_K live in `k_low.rs`.) Their activation format is Q8_K; the Q4_K/Q5_K dots take
//! their min term from the Q8_K group sums.
//! Spec: ggml `ggml-common.h` (`block_q4_K`, `block_q5_K`, `block_q6_K`), `ggml-quants.c`
//! (`get_scale_min_k4`, `dequantize_row_q4_K/q5_K/q6_K`), `ggml-cpu/quants.c`
//! (`ggml_vec_dot_q4_K_q8_K_generic`, `..._q5_K_...`, `..._q6_K_...`).

use super::{array_at, blocks, read_f16, write_f16, BlockQ8K, DotBlock, QuantBlock};
use crate::types::{GgmlType, QK_K};
use half::f16;

/// Bytes of packed Q4_K/Q5_K scales and mins (ggml's `K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes of a Q4_K/Q5_K block.
///
/// Bytes 0..4 hold the low 6 bits of scales 0..4 (top 2 bits: high bits of scales 4..8),
/// bytes 4..8 the same for mins, and bytes 8..12 the low nibbles of scales 4..8 and mins
/// 4..8 (high nibble).
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-block scale of the scales.
    pub d: f16,
    /// Super-block scale of the mins.
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    /// Chunk `c` (32 bytes at `32·c`) holds sub-block `2c` in its low nibbles and `2c + 1` in
    /// its high nibbles.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

impl BlockQ4K {
    /// The 4-bit codes in element order.
    pub(crate) fn codes(&self) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for (c, chunk) in self.qs.chunks_exact(32).enumerate() {
            for (l, &b) in chunk.iter().enumerate() {
                q[64 * c + l] = b & 0x0F;
                q[64 * c + 32 + l] = b >> 4;
            }
        }
        q
    }
}

impl QuantBlock for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 144;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            dmin: read_f16(b, 2),
            scales: array_at(b, 4),
            qs: array_at(b, 16),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        write_f16(out, 2, self.dmin);
        out[4..16].copy_from_slice(&self.scales);
        out[16..144].copy_from_slice(&self.qs);
    }

    fn dequantize(&self, y: &mut [f32]) {
        dequantize_scale_min(self, y)
    }
}

impl DotBlock for BlockQ4K {
    type Dot = BlockQ8K;

    /// `Σ w·a = d·da·Σ_j sc_j·Σ q·qa − dmin·da·Σ_j m_j·(bsum_2j + bsum_2j+1)`. Like ggml, the
    /// integer sums are split over 8 lanes (element index mod 8), each lane accumulates in f32
    /// across blocks, and the lanes are added at the end.
    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        vec_dot_scale_min_ref::<Self>(w, a)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    /// Fifth bits: bit `2c` of byte `l` is element `64c + l`'s, bit `2c + 1` element
    /// `64c + 32 + l`'s.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, laid out as Q4_K's `qs`.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

impl BlockQ5K {
    /// The 5-bit codes in element order.
    pub(crate) fn codes(&self) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for (c, chunk) in self.qs.chunks_exact(32).enumerate() {
            for (l, &b) in chunk.iter().enumerate() {
                let h = self.qh[l] >> (2 * c);
                q[64 * c + l] = (b & 0x0F) | ((h & 1) << 4);
                q[64 * c + 32 + l] = (b >> 4) | (((h >> 1) & 1) << 4);
            }
        }
        q
    }
}

impl QuantBlock for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 176;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            dmin: read_f16(b, 2),
            scales: array_at(b, 4),
            qh: array_at(b, 16),
            qs: array_at(b, 48),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        write_f16(out, 2, self.dmin);
        out[4..16].copy_from_slice(&self.scales);
        out[16..48].copy_from_slice(&self.qh);
        out[48..176].copy_from_slice(&self.qs);
    }

    fn dequantize(&self, y: &mut [f32]) {
        dequantize_scale_min(self, y)
    }
}

impl DotBlock for BlockQ5K {
    type Dot = BlockQ8K;

    /// As Q4_K: 8-lane integer sums per block, min term from the group sums.
    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        vec_dot_scale_min_ref::<Self>(w, a)
    }
}

/// The Q4_K / Q5_K layout shared by their reference kernels: super-block scales of the
/// scales and mins, 6-bit sub-block scales and mins, codes in element order.
trait ScaleMinK4: QuantBlock {
    fn d(&self) -> f16;
    fn dmin(&self) -> f16;
    fn scales(&self) -> &[u8; K_SCALE_SIZE];
    fn codes(&self) -> [u8; QK_K];
}

impl ScaleMinK4 for BlockQ4K {
    fn d(&self) -> f16 {
        self.d
    }
    fn dmin(&self) -> f16 {
        self.dmin
    }
    fn scales(&self) -> &[u8; K_SCALE_SIZE] {
        &self.scales
    }
    fn codes(&self) -> [u8; QK_K] {
        BlockQ4K::codes(self)
    }
}

impl ScaleMinK4 for BlockQ5K {
    fn d(&self) -> f16 {
        self.d
    }
    fn dmin(&self) -> f16 {
        self.dmin
    }
    fn scales(&self) -> &[u8; K_SCALE_SIZE] {
        &self.scales
    }
    fn codes(&self) -> [u8; QK_K] {
        BlockQ5K::codes(self)
    }
}

/// `w = d·sc·q − dmin·m` per 32-element sub-block.
fn dequantize_scale_min<B: ScaleMinK4>(x: &B, y: &mut [f32]) {
    let d = x.d().to_f32();
    let dmin = x.dmin().to_f32();
    let q = x.codes();
    for (j, (ys, qs)) in y.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
        let (sc, m) = get_scale_min_k4(j, x.scales());
        let d1 = d * sc as f32;
        let m1 = dmin * m as f32;
        for (y, &q) in ys.iter_mut().zip(qs) {
            *y = d1 * q as f32 - m1;
        }
    }
}

fn vec_dot_scale_min_ref<B: ScaleMinK4>(w: &[u8], a: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for (x, y) in blocks::<B>(w).zip(blocks::<BlockQ8K>(a)) {
        let q = x.codes();
        let mut lanes = [0i32; 8];
        let mut summ = 0i32;
        for j in 0..QK_K / 32 {
            let (sc, m) = get_scale_min_k4(j, x.scales());
            summ += m as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
            for e in 32 * j..32 * (j + 1) {
                lanes[e % 8] += sc as i32 * (q[e] as i32 * y.qs[e] as i32);
            }
        }
        let d = x.d().to_f32() * y.d;
        for (s, &l) in sums.iter_mut().zip(&lanes) {
            *s += d * l as f32;
        }
        let dmin = x.dmin().to_f32() * y.d;
        sumf -= dmin * summ as f32;
    }
    sums.iter().fold(sumf, |acc, &s| acc + s)
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits. Half `h` (64 bytes at `64·h`): bytes 0..32 hold elements 0..32 (low
    /// nibble) and 64..96 (high); bytes 32..64 hold elements 32..64 and 96..128.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits. Half `h` (32 bytes at `32·h`): byte `l` holds elements `l`, `l + 32`,
    /// `l + 64`, `l + 96` in bit pairs 0, 2, 4, 6.
    pub qh: [u8; QK_K / 4],
    /// One scale per 16 elements.
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    /// Signed values `q − 32` in `[-32, 31]`, in element order.
    pub(crate) fn values(&self) -> [i8; QK_K] {
        let mut v = [0i8; QK_K];
        for h in 0..2 {
            let ql = &self.ql[64 * h..64 * h + 64];
            let qh = &self.qh[32 * h..32 * h + 32];
            let v = &mut v[128 * h..128 * h + 128];
            for l in 0..32 {
                let hi = qh[l];
                v[l] = ((ql[l] & 0x0F) | ((hi & 3) << 4)) as i8 - 32;
                v[l + 32] = ((ql[l + 32] & 0x0F) | (((hi >> 2) & 3) << 4)) as i8 - 32;
                v[l + 64] = ((ql[l] >> 4) | (((hi >> 4) & 3) << 4)) as i8 - 32;
                v[l + 96] = ((ql[l + 32] >> 4) | (((hi >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        v
    }
}

impl QuantBlock for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 210;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            ql: array_at(b, 0),
            qh: array_at(b, 128),
            scales: array_at::<16>(b, 192).map(|s| s as i8),
            d: read_f16(b, 208),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..128].copy_from_slice(&self.ql);
        out[128..192].copy_from_slice(&self.qh);
        for (o, &s) in out[192..208].iter_mut().zip(&self.scales) {
            *o = s as u8;
        }
        write_f16(out, 208, self.d);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let v = self.values();
        for ((ys, vs), &sc) in y
            .chunks_exact_mut(16)
            .zip(v.chunks_exact(16))
            .zip(&self.scales)
        {
            let ds = d * sc as f32;
            for (y, &q) in ys.iter_mut().zip(vs) {
                *y = ds * q as f32;
            }
        }
    }
}

impl DotBlock for BlockQ6K {
    type Dot = BlockQ8K;

    /// `Σ w·a = d·da·Σ_g sc_g·Σ (q − 32)·qa`, with ggml's 8-lane float accumulation.
    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sums = [0f32; 8];
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let v = x.values();
            let mut lanes = [0i32; 8];
            for e in 0..QK_K {
                lanes[e % 8] += x.scales[e / 16] as i32 * (v[e] as i32 * y.qs[e] as i32);
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

    /// Pack 8 scales and 8 mins (each < 64) the way ggml's Q4_K quantizer does.
    pub(crate) fn pack_scales_mins(sc: [u8; 8], m: [u8; 8]) -> [u8; K_SCALE_SIZE] {
        let mut q = [0u8; K_SCALE_SIZE];
        for j in 0..8 {
            if j < 4 {
                q[j] = sc[j];
                q[j + 4] = m[j];
            } else {
                q[j + 4] = (sc[j] & 0x0F) | ((m[j] & 0x0F) << 4);
                q[j - 4] |= (sc[j] >> 4) << 6;
                q[j] |= (m[j] >> 4) << 6;
            }
        }
        q
    }

    #[test]
    fn scale_min_unpacking_inverts_packing() {
        let sc = [1, 63, 17, 32, 45, 0, 63, 9];
        let m = [63, 2, 40, 5, 33, 62, 1, 48];
        let q = pack_scales_mins(sc, m);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &q), (sc[j], m[j]), "sub-block {j}");
        }
    }

    #[test]
    fn q4_k_dequantize_known_block() {
        let sc = [1, 2, 3, 4, 5, 6, 7, 8];
        let m = [0, 1, 0, 2, 0, 3, 0, 63];
        let mut b = vec![0u8; 144];
        write_f16(&mut b, 0, f16::from_f32(0.5));
        write_f16(&mut b, 2, f16::from_f32(0.25));
        b[4..16].copy_from_slice(&pack_scales_mins(sc, m));
        // Element e gets code e % 16.
        for c in 0..4 {
            for l in 0..32 {
                let lo = ((64 * c + l) % 16) as u8;
                let hi = ((64 * c + 32 + l) % 16) as u8;
                b[16 + 32 * c + l] = lo | (hi << 4);
            }
        }
        let mut y = [0f32; QK_K];
        BlockQ4K::read(&b).dequantize(&mut y);
        for (e, &v) in y.iter().enumerate() {
            let j = e / 32;
            let want = 0.5 * sc[j] as f32 * (e % 16) as f32 - 0.25 * m[j] as f32;
            assert_eq!(v, want, "element {e}");
        }
    }

    #[test]
    fn q6_k_dequantize_known_block() {
        // Element e gets code e % 64, scale of group g is g - 8, d = 0.125.
        let mut b = vec![0u8; 210];
        for h in 0..2 {
            for l in 0..32 {
                let code = |k: usize| ((128 * h + l + 32 * k) % 64) as u8;
                b[64 * h + l] = (code(0) & 0x0F) | ((code(2) & 0x0F) << 4);
                b[64 * h + 32 + l] = (code(1) & 0x0F) | ((code(3) & 0x0F) << 4);
                b[128 + 32 * h + l] = (code(0) >> 4)
                    | ((code(1) >> 4) << 2)
                    | ((code(2) >> 4) << 4)
                    | ((code(3) >> 4) << 6);
            }
        }
        for g in 0..16 {
            b[192 + g] = (g as i8 - 8) as u8;
        }
        write_f16(&mut b, 208, f16::from_f32(0.125));
        let mut y = [0f32; QK_K];
        BlockQ6K::read(&b).dequantize(&mut y);
        for (e, &v) in y.iter().enumerate() {
            let want = 0.125 * (e / 16) as f32 - 1.0;
            let want = want * ((e % 64) as f32 - 32.0);
            assert_eq!(v, want, "element {e}");
        }
    }
}
