//! Q4_0: 32 weights as 4-bit codes with one f16 scale, `w = d·(q − 8)`.
//! Spec: ggml `ggml-common.h` (`block_q4_0`), `ggml-quants.c` (`dequantize_row_q4_0`),
//! `ggml-cpu/quants.c` (`ggml_vec_dot_q4_0_q8_0_generic`).

use super::{array_at, blocks, read_f16, write_f16, BlockQ8_0, DotBlock, QuantBlock};
use crate::types::{GgmlType, QK4_0};
use half::f16;

/// Byte `j` of `qs` holds element `j` in its low nibble and element `j + 16` in its high one.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

impl QuantBlock for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMS: usize = QK4_0;
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
            y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

impl DotBlock for BlockQ4_0 {
    type Dot = BlockQ8_0;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8_0>(a)) {
            let mut sumi = 0i32;
            for (j, &q) in x.qs.iter().enumerate() {
                sumi += ((q & 0x0F) as i32 - 8) * y.qs[j] as i32;
                sumi += ((q >> 4) as i32 - 8) * y.qs[j + 16] as i32;
            }
            sumf += sumi as f32 * x.d.to_f32() * y.d.to_f32();
        }
        sumf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dequantize_known_block() {
        // d = 0.5; element j gets code j % 16 (low nibbles) and 15 - j % 16 (high nibbles).
        let mut b = vec![0u8; 18];
        write_f16(&mut b, 0, f16::from_f32(0.5));
        for j in 0..16 {
            b[2 + j] = (j as u8) | ((15 - j as u8) << 4);
        }
        let mut y = [0f32; 32];
        BlockQ4_0::read(&b).dequantize(&mut y);
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5);
        }
    }
}
