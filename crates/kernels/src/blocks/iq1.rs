//! The 1-bit "i-quants": super-blocks of 256 weights as groups of 8 ternary patterns from a
//! 2048-entry grid, shifted by ±1/8, with 3-bit scales.
//! IQ1_S: `w = d·(2s + 1)·(grid ± 0.125)` with one scale and shift sign per 32 weights.
//! IQ1_M: as IQ1_S with a scale per 16 weights, a shift sign per 8, and no d field: its f16
//! scale is spread over the top nibbles of the four scale words.
//! Activation format Q8_K. Neither can be produced without an importance matrix.
//! Spec: ggml `ggml-common.h` (`block_iq1_s`, `block_iq1_m`, `iq1s_grid`, `IQ1S_DELTA`),
//! `ggml-quants.c` (`dequantize_row_iq1_s/m`), `ggml-cpu/quants.c` (`ggml_vec_dot_iq1_*_generic`).

use super::iq_grids::IQ1S_GRID;
use super::{array_at, blocks, read_f16, write_f16, BlockQ8K, DotBlock, QuantBlock};
use crate::types::{GgmlType, QK_K};
use half::f16;

/// The shift of every IQ1 value (ggml `IQ1S_DELTA`, `IQ1M_DELTA`).
pub const IQ1_DELTA: f32 = 0.125;

/// The 8 values (−1, 0, 1) of grid entry `idx`.
#[inline]
pub(crate) fn grid1(idx: usize) -> [i8; 8] {
    IQ1S_GRID[idx].to_le_bytes().map(|b| b as i8)
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockIQ1S {
    pub d: f16,
    /// Low 8 bits of the 11-bit grid index, one per 8 weights.
    pub qs: [u8; QK_K / 8],
    /// Per 32 weights a u16: 4 × 3 high index bits, a 3-bit scale (bits 12..15), the shift
    /// sign (bit 15).
    pub qh: [u8; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockIQ1S>() == 50);

impl BlockIQ1S {
    #[inline]
    fn qh(&self, ib: usize) -> u16 {
        u16::from_le_bytes([self.qh[2 * ib], self.qh[2 * ib + 1]])
    }

    #[inline]
    fn grid(&self, ib: usize, l: usize) -> [i8; 8] {
        let qh = self.qh(ib) as usize;
        grid1(self.qs[4 * ib + l] as usize | (((qh >> (3 * l)) & 7) << 8))
    }
}

impl QuantBlock for BlockIQ1S {
    const TYPE: GgmlType = GgmlType::IQ1_S;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 50;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            qs: array_at(b, 2),
            qh: array_at(b, 34),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        out[2..34].copy_from_slice(&self.qs);
        out[34..50].copy_from_slice(&self.qh);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for ib in 0..QK_K / 32 {
            let qh = self.qh(ib);
            let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
            let delta = if qh & 0x8000 != 0 {
                -IQ1_DELTA
            } else {
                IQ1_DELTA
            };
            for l in 0..4 {
                let grid = self.grid(ib, l);
                for j in 0..8 {
                    y[32 * ib + 8 * l + j] = dl * (grid[j] as f32 + delta);
                }
            }
        }
    }
}

impl DotBlock for BlockIQ1S {
    type Dot = BlockQ8K;

    /// `d·da·(Σ ls·Σ grid·qa + 1/8·Σ ls·±(bsum pair))`: the shift term uses the group sums.
    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let (mut sumi, mut sumi1) = (0i32, 0i32);
            for ib in 0..QK_K / 32 {
                let qh = x.qh(ib);
                let ls = 2 * ((qh >> 12) & 7) as i32 + 1;
                let delta = if qh & 0x8000 != 0 { -1 } else { 1 };
                let mut lsum = 0i32;
                for l in 0..4 {
                    let grid = x.grid(ib, l);
                    let q8 = &y.qs[32 * ib + 8 * l..];
                    lsum += (0..8).map(|j| q8[j] as i32 * grid[j] as i32).sum::<i32>();
                }
                sumi += ls * lsum;
                sumi1 += ls * delta * (y.bsums[2 * ib] as i32 + y.bsums[2 * ib + 1] as i32);
            }
            sumf += x.d.to_f32() * y.d * (sumi as f32 + IQ1_DELTA * sumi1 as f32);
        }
        sumf
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockIQ1M {
    /// Low 8 bits of the 11-bit grid index, one per 8 weights.
    pub qs: [u8; QK_K / 8],
    /// One byte per 16 weights: high index bits (bits 0..3 and 4..7) and shift signs (bits 3
    /// and 7) of its two groups of 8.
    pub qh: [u8; QK_K / 16],
    /// Four u16: 4 × 3-bit scales in the low 12 bits, a nibble of the f16 super-scale on top.
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(std::mem::size_of::<BlockIQ1M>() == 56);

impl BlockIQ1M {
    #[inline]
    fn sc(&self, k: usize) -> u16 {
        u16::from_le_bytes([self.scales[2 * k], self.scales[2 * k + 1]])
    }

    /// The f16 super-block scale assembled from the top nibbles of the scale words.
    pub fn d(&self) -> f16 {
        let bits = (self.sc(0) >> 12)
            | ((self.sc(1) >> 8) & 0x00f0)
            | ((self.sc(2) >> 4) & 0x0f00)
            | (self.sc(3) & 0xf000);
        f16::from_bits(bits)
    }

    /// The odd multipliers `2s + 1` of the two halves of sub-block `ib`.
    #[inline]
    fn ls(&self, ib: usize) -> [i32; 2] {
        let sc = self.sc(ib / 2);
        let shift = 6 * (ib % 2);
        [
            2 * ((sc >> shift) & 7) as i32 + 1,
            2 * ((sc >> (shift + 3)) & 7) as i32 + 1,
        ]
    }

    /// Grid values of group `l` (0..4) of sub-block `ib`, and whether its shift is negative.
    #[inline]
    fn group(&self, ib: usize, l: usize) -> ([i8; 8], bool) {
        let qh = self.qh[2 * ib + l / 2] as usize;
        let (hi, neg) = if l % 2 == 0 {
            ((qh << 8) & 0x700, qh & 0x08 != 0)
        } else {
            ((qh << 4) & 0x700, qh & 0x80 != 0)
        };
        (grid1(self.qs[4 * ib + l] as usize | hi), neg)
    }
}

impl QuantBlock for BlockIQ1M {
    const TYPE: GgmlType = GgmlType::IQ1_M;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 56;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            qs: array_at(b, 0),
            qh: array_at(b, 32),
            scales: array_at(b, 48),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..32].copy_from_slice(&self.qs);
        out[32..48].copy_from_slice(&self.qh);
        out[48..56].copy_from_slice(&self.scales);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d().to_f32();
        for ib in 0..QK_K / 32 {
            let ls = self.ls(ib);
            let dl = [d * ls[0] as f32, d * ls[1] as f32];
            for l in 0..4 {
                let (grid, neg) = self.group(ib, l);
                let delta = if neg { -IQ1_DELTA } else { IQ1_DELTA };
                for j in 0..8 {
                    y[32 * ib + 8 * l + j] = dl[l / 2] * (grid[j] as f32 + delta);
                }
            }
        }
    }
}

impl DotBlock for BlockIQ1M {
    type Dot = BlockQ8K;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let (mut sumi1, mut sumi2) = (0i32, 0i32);
            for ib in 0..QK_K / 32 {
                let (mut sum1, mut sum2) = ([0i32; 2], [0i32; 2]);
                for l in 0..4 {
                    let (grid, neg) = x.group(ib, l);
                    let q8 = &y.qs[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                    let lsum1: i32 = (0..8).map(|j| q8[j] as i32 * grid[j] as i32).sum();
                    let lsum2: i32 = q8.iter().map(|&q| q as i32).sum();
                    sum1[l / 2] += lsum1;
                    sum2[l / 2] += if neg { -lsum2 } else { lsum2 };
                }
                let ls = x.ls(ib);
                sumi1 += sum1[0] * ls[0] + sum1[1] * ls[1];
                sumi2 += sum2[0] * ls[0] + sum2[1] * ls[1];
            }
            sumf += x.d().to_f32() * y.d * (sumi1 as f32 + IQ1_DELTA * sumi2 as f32);
        }
        sumf
    }
}
