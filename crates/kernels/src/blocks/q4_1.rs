//! Q4_1: 32 weights as 4-bit codes with an f16 scale and an f16 offset, `w = d·q + m`.
//! Spec: ggml `ggml-common.h` (`block_q4_1`), `ggml-quants.c` (`dequantize_row_q4_1`),
//! `ggml-cpu/quants.c` (`ggml_vec_dot_q4_1_q8_1_generic`).

use super::{array_at, blocks, read_f16, write_f16, BlockQ8_1, DotBlock, QuantBlock};
use crate::types::{GgmlType, QK4_1};
use half::f16;

/// Nibble order as in Q4_0: byte `j` holds elements `j` (low) and `j + 16` (high).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

impl QuantBlock for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const ELEMS: usize = QK4_1;
    const BYTES: usize = 20;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            m: read_f16(b, 2),
            qs: array_at(b, 4),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        write_f16(out, 2, self.m);
        out[4..20].copy_from_slice(&self.qs);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = (q & 0x0F) as f32 * d + m;
            y[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}

impl DotBlock for BlockQ4_1 {
    type Dot = BlockQ8_1;

    /// The offset term uses the activation block's `s = d·Σq`: `Σ (d·q + m)·a = d·da·Σ q·qa + m·s`.
    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8_1>(a)) {
            let mut sumi = 0i32;
            for (j, &q) in x.qs.iter().enumerate() {
                sumi += (q & 0x0F) as i32 * y.qs[j] as i32;
                sumi += (q >> 4) as i32 * y.qs[j + 16] as i32;
            }
            sumf += (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32();
        }
        sumf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dequantize_known_block() {
        let mut b = vec![0u8; 20];
        write_f16(&mut b, 0, f16::from_f32(0.25));
        write_f16(&mut b, 2, f16::from_f32(-1.0));
        for j in 0..16 {
            b[4 + j] = (j as u8) | ((15 - j as u8) << 4);
        }
        let mut y = [0f32; 32];
        BlockQ4_1::read(&b).dequantize(&mut y);
        for j in 0..16 {
            assert_eq!(y[j], j as f32 * 0.25 - 1.0);
            assert_eq!(y[j + 16], (15 - j) as f32 * 0.25 - 1.0);
        }
    }
}
