//! The 3-bit "i-quants": super-blocks of 256 weights as groups of 4 taken from a grid of
//! magnitude patterns, with sign bits and 4-bit scales per 32 weights.
//! IQ3_XXS: `w = d·(0.5 + s)·0.5·grid·sign`, 256-entry grid; IQ3_S: `w = d·(1 + 2s)·grid·sign`,
//! 512-entry grid. Activation format Q8_K.
//! Spec: ggml `ggml-common.h` (`block_iq3_xxs`, `block_iq3_s`, grids), `ggml-quants.c`
//! (`dequantize_row_iq3_xxs/s`), `ggml-cpu/quants.c` (`ggml_vec_dot_iq3_*_q8_K_generic`).

use super::iq_tables::{IQ3S_GRID, IQ3XXS_GRID, KMASK_IQ2XS, KSIGNS_IQ2XS};
use super::{array_at, blocks, read_f16, write_f16, BlockQ8K, DotBlock, QuantBlock};
use crate::types::{GgmlType, QK_K};
use half::f16;

/// Two grid entries of 4 values (elements 0..4 and 4..8 of a group of 8).
#[inline]
fn pair(g1: u32, g2: u32) -> [u8; 8] {
    let (a, b) = (g1.to_le_bytes(), g2.to_le_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

#[inline]
fn put8(y: &mut [f32], db: f32, grid: [u8; 8], signs: u8) {
    for j in 0..8 {
        let s = if signs & KMASK_IQ2XS[j] != 0 {
            -1.0
        } else {
            1.0
        };
        y[j] = db * grid[j] as f32 * s;
    }
}

#[inline]
fn dot8(grid: [u8; 8], signs: u8, q8: &[i8]) -> i32 {
    (0..8)
        .map(|j| {
            let v = grid[j] as i32 * q8[j] as i32;
            if signs & KMASK_IQ2XS[j] != 0 {
                -v
            } else {
                v
            }
        })
        .sum()
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockIQ3XXS {
    pub d: f16,
    /// Bytes 0..64: grid indices (2 per 8 weights); bytes 64..96: per 32 weights a u32 of
    /// 4 × 7 sign bits and a 4-bit scale in the top nibble.
    pub qs: [u8; 3 * QK_K / 8],
}
const _: () = assert!(std::mem::size_of::<BlockIQ3XXS>() == 98);

impl BlockIQ3XXS {
    /// Grid values and sign byte of group `l` (0..4) of sub-block `ib`, and the scale nibble.
    #[inline]
    fn group(&self, ib: usize, l: usize) -> ([u8; 8], u8) {
        let aux = self.aux(ib);
        let q = &self.qs[8 * ib..];
        let grid = pair(
            IQ3XXS_GRID[q[2 * l] as usize],
            IQ3XXS_GRID[q[2 * l + 1] as usize],
        );
        (grid, KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize])
    }

    #[inline]
    fn aux(&self, ib: usize) -> u32 {
        u32::from_le_bytes(array_at(&self.qs, 64 + 4 * ib))
    }
}

impl QuantBlock for BlockIQ3XXS {
    const TYPE: GgmlType = GgmlType::IQ3_XXS;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 98;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            qs: array_at(b, 2),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        out[2..98].copy_from_slice(&self.qs);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for ib in 0..QK_K / 32 {
            let db = d * (0.5 + (self.aux(ib) >> 28) as f32) * 0.5;
            for l in 0..4 {
                let (grid, signs) = self.group(ib, l);
                put8(&mut y[32 * ib + 8 * l..], db, grid, signs);
            }
        }
    }
}

impl DotBlock for BlockIQ3XXS {
    type Dot = BlockQ8K;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let d = x.d.to_f32() * y.d;
            let mut bsum = 0i32;
            for ib in 0..QK_K / 32 {
                let ls = 2 * (x.aux(ib) >> 28) as i32 + 1;
                let mut sumi = 0i32;
                for l in 0..4 {
                    let (grid, signs) = x.group(ib, l);
                    sumi += dot8(grid, signs, &y.qs[32 * ib + 8 * l..]);
                }
                bsum += sumi * ls;
            }
            sumf += d * bsum as f32;
        }
        0.25 * sumf
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockIQ3S {
    pub d: f16,
    /// Low 8 bits of the 9-bit grid indices, 8 per 32 weights.
    pub qs: [u8; QK_K / 4],
    /// The ninth index bits, one byte per 32 weights.
    pub qh: [u8; QK_K / 32],
    /// One sign byte per 8 weights.
    pub signs: [u8; QK_K / 8],
    /// 4-bit scales: low nibble for the even sub-block of 32, high for the odd one.
    pub scales: [u8; QK_K / 64],
}
const _: () = assert!(std::mem::size_of::<BlockIQ3S>() == 110);

impl BlockIQ3S {
    #[inline]
    fn group(&self, ib: usize, l: usize) -> ([u8; 8], u8) {
        let qs = &self.qs[8 * ib..];
        let qh = self.qh[ib] as usize;
        let i1 = qs[2 * l] as usize | ((qh << (8 - 2 * l)) & 256);
        let i2 = qs[2 * l + 1] as usize | ((qh << (7 - 2 * l)) & 256);
        (pair(IQ3S_GRID[i1], IQ3S_GRID[i2]), self.signs[4 * ib + l])
    }

    /// The odd multiplier `1 + 2s` of sub-block `ib`.
    #[inline]
    fn ls(&self, ib: usize) -> u32 {
        let sc = self.scales[ib / 2];
        let s = if ib % 2 == 0 { sc & 0xF } else { sc >> 4 };
        1 + 2 * s as u32
    }
}

impl QuantBlock for BlockIQ3S {
    const TYPE: GgmlType = GgmlType::IQ3_S;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 110;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            qs: array_at(b, 2),
            qh: array_at(b, 66),
            signs: array_at(b, 74),
            scales: array_at(b, 106),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        out[2..66].copy_from_slice(&self.qs);
        out[66..74].copy_from_slice(&self.qh);
        out[74..106].copy_from_slice(&self.signs);
        out[106..110].copy_from_slice(&self.scales);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for ib in 0..QK_K / 32 {
            let db = d * self.ls(ib) as f32;
            for l in 0..4 {
                let (grid, signs) = self.group(ib, l);
                put8(&mut y[32 * ib + 8 * l..], db, grid, signs);
            }
        }
    }
}

impl DotBlock for BlockIQ3S {
    type Dot = BlockQ8K;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let d = x.d.to_f32() * y.d;
            let mut bsum = 0i32;
            for ib in 0..QK_K / 32 {
                let mut sumi = 0i32;
                for l in 0..4 {
                    let (grid, signs) = x.group(ib, l);
                    sumi += dot8(grid, signs, &y.qs[32 * ib + 8 * l..]);
                }
                bsum += sumi * x.ls(ib) as i32;
            }
            sumf += d * bsum as f32;
        }
        sumf
    }
}
