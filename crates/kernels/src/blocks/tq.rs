//! Ternary quants for BitNet-style models: super-blocks of 256 weights in {−1, 0, 1}·d.
//! TQ1_0 packs 5 trits per byte (base 3, scaled to fill the byte) plus 4 per byte for the
//! last 16; TQ2_0 stores 2-bit codes `q` with `w = d·(q − 1)`. Activation format Q8_K.
//! Spec: ggml `ggml-common.h` (`block_tq1_0`, `block_tq2_0`), `ggml-quants.c`
//! (`quantize_row_tq1_0_ref`, `quantize_row_tq2_0_ref`, `dequantize_row_tq1_0/tq2_0`),
//! `ggml-cpu/quants.c` (`ggml_vec_dot_tq1_0_q8_K_generic`, `ggml_vec_dot_tq2_0_q8_K_generic`).

use super::{array_at, blocks, read_f16, write_f16, BlockQ8K, DotBlock, QuantBlock};
use crate::types::{GgmlType, QK_K};
use half::f16;

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// The trit in the top position of `q` after shifting it `n` places: multiply by 3^n
/// (wrapping in 8 bits), then take the integer part of `3·q/256`.
#[inline]
pub(crate) fn trit(q: u8, n: usize) -> i32 {
    let q = q.wrapping_mul(POW3[n]);
    ((q as u16 * 3) >> 8) as i32 - 1
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockTQ1_0 {
    /// 5 trits per byte: bytes 0..32 hold elements `32n + m` (n = 0..5), bytes 32..48 hold
    /// elements `160 + 16n + m`.
    pub qs: [u8; 48],
    /// 4 trits per byte: byte `j` holds elements `240 + 4n + j` (n = 0..4).
    pub qh: [u8; 4],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockTQ1_0>() == 54);

impl BlockTQ1_0 {
    /// Values −1, 0, 1 in element order.
    pub(crate) fn values(&self) -> [i8; QK_K] {
        let mut v = [0i8; QK_K];
        let mut e = 0;
        for n in 0..5 {
            for m in 0..32 {
                v[e] = trit(self.qs[m], n) as i8;
                e += 1;
            }
        }
        for n in 0..5 {
            for m in 0..16 {
                v[e] = trit(self.qs[32 + m], n) as i8;
                e += 1;
            }
        }
        for n in 0..4 {
            for j in 0..4 {
                v[e] = trit(self.qh[j], n) as i8;
                e += 1;
            }
        }
        v
    }
}

impl QuantBlock for BlockTQ1_0 {
    const TYPE: GgmlType = GgmlType::TQ1_0;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 54;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            qs: array_at(b, 0),
            qh: array_at(b, 48),
            d: read_f16(b, 52),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..48].copy_from_slice(&self.qs);
        out[48..52].copy_from_slice(&self.qh);
        write_f16(out, 52, self.d);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (y, &v) in y.iter_mut().zip(&self.values()) {
            *y = v as f32 * d;
        }
    }
}

impl DotBlock for BlockTQ1_0 {
    type Dot = BlockQ8K;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let sum: i32 = x
                .values()
                .iter()
                .zip(&y.qs)
                .map(|(&v, &q)| v as i32 * q as i32)
                .sum();
            sumf += sum as f32 * (x.d.to_f32() * y.d);
        }
        sumf
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockTQ2_0 {
    /// 2-bit codes: byte `32c + m` holds elements `128c + 32n + m` in bit pair `n`.
    pub qs: [u8; QK_K / 4],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockTQ2_0>() == 66);

impl BlockTQ2_0 {
    pub(crate) fn values(&self) -> [i8; QK_K] {
        let mut v = [0i8; QK_K];
        for (c, chunk) in self.qs.chunks_exact(32).enumerate() {
            for n in 0..4 {
                for (m, &b) in chunk.iter().enumerate() {
                    v[128 * c + 32 * n + m] = ((b >> (2 * n)) & 3) as i8 - 1;
                }
            }
        }
        v
    }
}

impl QuantBlock for BlockTQ2_0 {
    const TYPE: GgmlType = GgmlType::TQ2_0;
    const ELEMS: usize = QK_K;
    const BYTES: usize = 66;

    fn read(b: &[u8]) -> Self {
        debug_assert_eq!(b.len(), Self::BYTES);
        Self {
            qs: array_at(b, 0),
            d: read_f16(b, 64),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..64].copy_from_slice(&self.qs);
        write_f16(out, 64, self.d);
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (y, &v) in y.iter_mut().zip(&self.values()) {
            *y = v as f32 * d;
        }
    }
}

impl DotBlock for BlockTQ2_0 {
    type Dot = BlockQ8K;

    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in blocks::<Self>(w).zip(blocks::<BlockQ8K>(a)) {
            let sumi: i32 = x
                .values()
                .iter()
                .zip(&y.qs)
                .map(|(&v, &q)| v as i32 * q as i32)
                .sum();
            sumf += sumi as f32 * (y.d * x.d.to_f32());
        }
        sumf
    }
}

/// `d = amax`; the ternary code of `x` is `round(x/d) + 1` (half away from zero).
fn amax_scale(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    (amax, if amax != 0.0 { 1.0 / amax } else { 0.0 })
}

#[inline]
fn code(v: f32, id: f32) -> u8 {
    ((v * id).round() as i32 + 1) as u8
}

/// `ceil(q·256 / 243)`: spread a 5-trit number over the byte so that `trit` can peel trits
/// off the top with a multiply.
#[inline]
fn spread(q: u8) -> u8 {
    (q as u16 * 256).div_ceil(243) as u8
}

/// Quantize a row into TQ1_0 blocks, as ggml's `quantize_row_tq1_0_ref`.
pub fn quantize_row_tq1_0(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(54)) {
        let (d, id) = amax_scale(xb);
        let mut b = BlockTQ1_0 {
            qs: [0; 48],
            qh: [0; 4],
            d: f16::from_f32(d),
        };
        let pack = |vals: &mut dyn Iterator<Item = f32>, extra_shift: bool| {
            let mut q = 0u8;
            for v in vals {
                q = q * 3 + code(v, id);
            }
            if extra_shift {
                q *= 3;
            }
            spread(q)
        };
        for m in 0..32 {
            b.qs[m] = pack(&mut (0..5).map(|n| xb[m + 32 * n]), false);
        }
        for m in 0..16 {
            b.qs[32 + m] = pack(&mut (0..5).map(|n| xb[160 + m + 16 * n]), false);
        }
        for j in 0..4 {
            b.qh[j] = pack(&mut (0..4).map(|n| xb[240 + j + 4 * n]), true);
        }
        b.write(ob);
    }
}

/// Quantize a row into TQ2_0 blocks, as ggml's `quantize_row_tq2_0_ref`.
pub fn quantize_row_tq2_0(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(66)) {
        let (d, id) = amax_scale(xb);
        let mut b = BlockTQ2_0 {
            qs: [0; 64],
            d: f16::from_f32(d),
        };
        for c in 0..2 {
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    q |= (code(xb[128 * c + 32 * n + m], id) & 3) << (2 * n);
                }
                b.qs[32 * c + m] = q;
            }
        }
        b.write(ob);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trits_round_trip() {
        // Every 5-trit number survives spread + trit extraction.
        for q in 0..243u16 {
            let s = spread(q as u8);
            let mut digits = [0i32; 5];
            let mut r = q;
            for n in (0..5).rev() {
                digits[n] = (r % 3) as i32 - 1;
                r /= 3;
            }
            for (n, &want) in digits.iter().enumerate() {
                assert_eq!(trit(s, n), want, "q={q} n={n}");
            }
        }
    }

    #[test]
    fn ternary_rows_round_trip_exactly() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 7) % 3) as f32 - 1.0).collect();
        let mut y = vec![0f32; 512];
        let mut b1 = vec![0u8; 108];
        quantize_row_tq1_0(&x, &mut b1);
        super::super::dequantize_blocks::<BlockTQ1_0>(&b1, &mut y);
        assert_eq!(x, y);
        let mut b2 = vec![0u8; 132];
        quantize_row_tq2_0(&x, &mut b2);
        super::super::dequantize_blocks::<BlockTQ2_0>(&b2, &mut y);
        assert_eq!(x, y);
    }
}
