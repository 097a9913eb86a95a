//! The 2-bit "i-quants": super-blocks of 256 weights as groups of 8 taken from a grid of
//! magnitude patterns, with explicit sign bits and 4-bit scales per 32 (IQ2_XXS) or 16
//! (IQ2_XS, IQ2_S) weights. `w = d·(0.5 + s)·0.25·grid·sign` (IQ2_XXS, IQ2_XS, IQ2_S).
//! Activation format Q8_K. These cannot be produced without an importance matrix; rllm reads
//! and multiplies them.
//! Spec: ggml `ggml-common.h` (`block_iq2_xxs`, `block_iq2_xs`, `block_iq2_s`, grids),
//! `ggml-quants.c` (`dequantize_row_iq2_*`), `ggml-cpu/quants.c` (`ggml_vec_dot_iq2_*_q8_K_generic`).

use super::iq_grids::IQ2S_GRID;
use super::iq_tables::{IQ2XS_GRID, IQ2XXS_GRID, KMASK_IQ2XS, KSIGNS_IQ2XS};
use super::{array_at, blocks, read_f16, write_f16, BlockQ8K, DotBlock, QuantBlock};
use crate::types::{GgmlType, QK_K};
use half::f16;

/// The 8 grid values of entry `g` (bytes of the packed u64, element 0 lowest).
#[inline]
pub(crate) fn grid8(g: u64) -> [u8; 8] {
    g.to_le_bytes()
}

/// `±grid[j]` as i32: element `j` is negated where bit `j` of `signs` is set.
#[inline]
fn signed(grid: [u8; 8], signs: u8) -> [i32; 8] {
    let mut v = [0i32; 8];
    for j in 0..8 {
        v[j] = if signs & KMASK_IQ2XS[j] != 0 {
            -(grid[j] as i32)
        } else {
            grid[j] as i32
        };
    }
    v
}

/// Write `db·grid[j]·(±1)` for 8 elements, as ggml computes it.
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

/// Σ of 8 signed grid values times 8 activation codes.
#[inline]
fn dot8(grid: [u8; 8], signs: u8, q8: &[i8]) -> i32 {
    signed(grid, signs)
        .iter()
        .zip(q8)
        .map(|(&g, &q)| g * q as i32)
        .sum()
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockIQ2XXS {
    pub d: f16,
    /// Per 32 weights, 8 bytes: 4 grid indices, then a u32 of 4 × 7 sign bits and a 4-bit
    /// scale in the top nibble.
    pub qs: [u8; QK_K / 4],
}
const _: () = assert!(std::mem::size_of::<BlockIQ2XXS>() == 66);

impl QuantBlock for BlockIQ2XXS {
    const TYPE: GgmlType = GgmlType::IQ2_XXS;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 66;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            qs: array_at(b, 2),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        out[2..66].copy_from_slice(&self.qs);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (ys, q) in y.chunks_exact_mut(32).zip(self.qs.chunks_exact(8)) {
            let aux1 = u32::from_le_bytes(array_at(q, 4));
            let db = d * (0.5 + (aux1 >> 28) as f32) * 0.25;
            for l in 0..4 {
                let signs = KSIGNS_IQ2XS[((aux1 >> (7 * l)) & 127) as usize];
                put8(
                    &mut ys[8 * l..],
                    db,
                    grid8(IQ2XXS_GRID[q[l] as usize]),
                    signs,
                );
            }
        }
    }
}

impl DotBlock for BlockIQ2XXS {
    type Dot = BlockQ8K;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let d = x.d.to_f32() * y.d;
            let mut bsum = 0i32;
            for (ib, q) in x.qs.chunks_exact(8).enumerate() {
                let aux1 = u32::from_le_bytes(array_at(q, 4));
                let ls = 2 * (aux1 >> 28) as i32 + 1;
                let mut sumi = 0i32;
                for l in 0..4 {
                    let signs = KSIGNS_IQ2XS[((aux1 >> (7 * l)) & 127) as usize];
                    let q8 = &y.qs[32 * ib + 8 * l..];
                    sumi += dot8(grid8(IQ2XXS_GRID[q[l] as usize]), signs, q8);
                }
                bsum += sumi * ls;
            }
            sumf += d * bsum as f32;
        }
        0.125 * sumf
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockIQ2XS {
    pub d: f16,
    /// Per 8 weights a u16: 9-bit grid index, 7 sign bits on top.
    pub qs: [u8; QK_K / 4],
    /// Per 32 weights: 4-bit scales of its two halves.
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(std::mem::size_of::<BlockIQ2XS>() == 74);

impl BlockIQ2XS {
    #[inline]
    fn q(&self, k: usize) -> u16 {
        u16::from_le_bytes([self.qs[2 * k], self.qs[2 * k + 1]])
    }
}

impl QuantBlock for BlockIQ2XS {
    const TYPE: GgmlType = GgmlType::IQ2_XS;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 74;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            qs: array_at(b, 2),
            scales: array_at(b, 66),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        out[2..66].copy_from_slice(&self.qs);
        out[66..74].copy_from_slice(&self.scales);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for ib in 0..QK_K / 32 {
            let sc = self.scales[ib];
            let db = [
                d * (0.5 + (sc & 0xF) as f32) * 0.25,
                d * (0.5 + (sc >> 4) as f32) * 0.25,
            ];
            for l in 0..4 {
                let q = self.q(4 * ib + l);
                let grid = grid8(IQ2XS_GRID[(q & 511) as usize]);
                let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
                put8(&mut y[32 * ib + 8 * l..], db[l / 2], grid, signs);
            }
        }
    }
}

impl DotBlock for BlockIQ2XS {
    type Dot = BlockQ8K;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let d = x.d.to_f32() * y.d;
            let mut bsum = 0i32;
            for ib in 0..QK_K / 32 {
                let sc = x.scales[ib];
                let ls = [2 * (sc & 0xF) as i32 + 1, 2 * (sc >> 4) as i32 + 1];
                for half in 0..2 {
                    let mut sumi = 0i32;
                    for l in 2 * half..2 * half + 2 {
                        let q = x.q(4 * ib + l);
                        let grid = grid8(IQ2XS_GRID[(q & 511) as usize]);
                        let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
                        sumi += dot8(grid, signs, &y.qs[32 * ib + 8 * l..]);
                    }
                    bsum += sumi * ls[half];
                }
            }
            sumf += d * bsum as f32;
        }
        0.125 * sumf
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockIQ2S {
    pub d: f16,
    /// Bytes 0..32: low 8 bits of the 10-bit grid index per 8 weights; bytes 32..64: sign
    /// bytes per 8 weights.
    pub qs: [u8; QK_K / 4],
    /// Per 32 weights: the 2 high index bits of its 4 groups.
    pub qh: [u8; QK_K / 32],
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(std::mem::size_of::<BlockIQ2S>() == 82);

impl BlockIQ2S {
    /// Grid entry and sign byte of group `l` (0..4) of sub-block `ib`.
    #[inline]
    fn group(&self, ib: usize, l: usize) -> ([u8; 8], u8) {
        let idx = self.qs[4 * ib + l] as usize | ((self.qh[ib] as usize) << (8 - 2 * l) & 0x300);
        (grid8(IQ2S_GRID[idx]), self.qs[32 + 4 * ib + l])
    }
}

impl QuantBlock for BlockIQ2S {
    const TYPE: GgmlType = GgmlType::IQ2_S;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 82;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            d: read_f16(b, 0),
            qs: array_at(b, 2),
            qh: array_at(b, 66),
            scales: array_at(b, 74),
        }
    }

    fn write(&self, out: &mut [u8]) {
        write_f16(out, 0, self.d);
        out[2..66].copy_from_slice(&self.qs);
        out[66..74].copy_from_slice(&self.qh);
        out[74..82].copy_from_slice(&self.scales);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for ib in 0..QK_K / 32 {
            let sc = self.scales[ib];
            let db = [
                d * (0.5 + (sc & 0xF) as f32) * 0.25,
                d * (0.5 + (sc >> 4) as f32) * 0.25,
            ];
            for l in 0..4 {
                let (grid, signs) = self.group(ib, l);
                put8(&mut y[32 * ib + 8 * l..], db[l / 2], grid, signs);
            }
        }
    }
}

impl DotBlock for BlockIQ2S {
    type Dot = BlockQ8K;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let d = x.d.to_f32() * y.d;
            let mut bsum = 0i32;
            for ib in 0..QK_K / 32 {
                let sc = x.scales[ib];
                let mut sumi = [0i32; 2];
                for l in 0..4 {
                    let (grid, signs) = x.group(ib, l);
                    sumi[l / 2] += dot8(grid, signs, &y.qs[32 * ib + 8 * l..]);
                }
                bsum +=
                    (1 + 2 * (sc & 0xF) as i32) * sumi[0] + (1 + 2 * (sc >> 4) as i32) * sumi[1];
            }
            sumf += d * bsum as f32;
        }
        0.125 * sumf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_hold_the_documented_values() {
        for g in IQ2XXS_GRID.iter().chain(&IQ2XS_GRID).chain(&IQ2S_GRID) {
            assert!(grid8(*g).iter().all(|v| [8, 25, 43].contains(v)));
        }
        for (i, &s) in KSIGNS_IQ2XS.iter().enumerate() {
            assert_eq!(s & 127, i as u8);
            assert_eq!(s.count_ones() % 2, 0, "sign byte {i} has odd parity");
        }
    }

    #[test]
    fn iq2_xxs_dequantize_known_block() {
        // Group 0 of sub-block 0: grid entry 0 (all 8), signs pattern 1 (element 0 and 7
        // negated), scale 3: db = d·3.5·0.25.
        let mut b = vec![0u8; 66];
        write_f16(&mut b, 0, f16::from_f32(2.0));
        let aux1: u32 = 1 | (3 << 28);
        b[6..10].copy_from_slice(&aux1.to_le_bytes());
        let mut y = [0f32; QK_K];
        BlockIQ2XXS::read(&b).dequantize(&mut y);
        let db = 2.0 * 3.5 * 0.25;
        assert_eq!(y[0], -db * 8.0);
        assert_eq!(y[1], db * 8.0);
        assert_eq!(y[7], -db * 8.0);
    }
}
