//! Q5_0 and Q5_1: 32 weights as 5-bit codes, four low bits in nibbles and the fifth bits in a
//! 32-bit mask. Q5_0: `w = d·(q − 16)`; Q5_1: `w = d·q + m`.
//! Spec: ggml `ggml-common.h` (`block_q5_0`, `block_q5_1`), `ggml-quants.c`
//! (`dequantize_row_q5_0/1`), `ggml-cpu/quants.c` (`ggml_vec_dot_q5_0_q8_0_generic`,
//! `ggml_vec_dot_q5_1_q8_1_generic`).

use super::{array_at, blocks, read_f16, write_f16, BlockQ8_0, BlockQ8_1, DotBlock, QuantBlock};
use crate::types::{GgmlType, QK5_0, QK5_1};
use half::f16;

/// The 5-bit codes of a block: bit `j` of the little-endian `qh` is the fifth bit of element
/// `j`; byte `j` of `qs` holds the low bits of elements `j` (low nibble) and `j + 16` (high).
#[inline]
fn codes5(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: f16,
    /// Fifth bits, a little-endian u32 stored as bytes (the struct is only 2-aligned in ggml).
    pub qh: [u8; 4],
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

impl BlockQ5_0 {
    /// Signed values `q − 16` in `[-16, 15]`.
    fn values(&self) -> [i32; 32] {
        codes5(self.qh, &self.qs).map(|q| q as i32 - 16)
    }
}

impl QuantBlock for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const ELEMS: usize = QK5_0;
    const BYTES: usize = 22;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            qh: array_at(b, 2),
            qs: array_at(b, 6),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        out[2..6].copy_from_slice(&self.qh);
        out[6..22].copy_from_slice(&self.qs);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (y, v) in y.iter_mut().zip(self.values()) {
            *y = v as f32 * d;
        }
    }
}

impl DotBlock for BlockQ5_0 {
    type Dot = BlockQ8_0;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8_0>(a)) {
            let sumi: i32 = x
                .values()
                .iter()
                .zip(y.qs)
                .map(|(&v, q)| v * q as i32)
                .sum();
            sumf += (x.d.to_f32() * y.d.to_f32()) * sumi as f32;
        }
        sumf
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

impl QuantBlock for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const ELEMS: usize = QK5_1;
    const BYTES: usize = 24;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            m: read_f16(b, 2),
            qh: array_at(b, 4),
            qs: array_at(b, 8),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        write_f16(out, 2, self.m);
        out[4..8].copy_from_slice(&self.qh);
        out[8..24].copy_from_slice(&self.qs);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (y, q) in y.iter_mut().zip(codes5(self.qh, &self.qs)) {
            *y = q as f32 * d + m;
        }
    }
}

impl DotBlock for BlockQ5_1 {
    type Dot = BlockQ8_1;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8_1>(a)) {
            let sumi: i32 = codes5(x.qh, &x.qs)
                .iter()
                .zip(y.qs)
                .map(|(&q, a)| q as i32 * a as i32)
                .sum();
            sumf += (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32();
        }
        sumf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dequantize_known_blocks() {
        // Element j has code j: low nibble j % 16, fifth bit set for j >= 16.
        let mut qs = [0u8; 16];
        for j in 0..16 {
            qs[j] = (j as u8) | ((j as u8) << 4);
        }
        let qh = 0xFFFF_0000u32.to_le_bytes();

        let mut b0 = vec![0u8; 22];
        write_f16(&mut b0, 0, f16::from_f32(2.0));
        b0[2..6].copy_from_slice(&qh);
        b0[6..22].copy_from_slice(&qs);
        let mut y = [0f32; 32];
        BlockQ5_0::read(&b0).dequantize(&mut y);
        for (j, &v) in y.iter().enumerate() {
            assert_eq!(v, (j as f32 - 16.0) * 2.0);
        }

        let mut b1 = vec![0u8; 24];
        write_f16(&mut b1, 0, f16::from_f32(0.5));
        write_f16(&mut b1, 2, f16::from_f32(3.0));
        b1[4..8].copy_from_slice(&qh);
        b1[8..24].copy_from_slice(&qs);
        BlockQ5_1::read(&b1).dequantize(&mut y);
        for (j, &v) in y.iter().enumerate() {
            assert_eq!(v, j as f32 * 0.5 + 3.0);
        }
    }

    #[test]
    fn fifth_bit_order() {
        // Only bit 17 set: element 17 (high nibble of byte 1) gets the fifth bit.
        let q = codes5((1u32 << 17).to_le_bytes(), &[0u8; 16]);
        for (j, &c) in q.iter().enumerate() {
            assert_eq!(c, if j == 17 { 16 } else { 0 });
        }
    }
}
