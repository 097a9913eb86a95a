//! Weight rows repacked 16 at a time for GEMM micro-kernels that keep one weight row in each
//! 32-bit lane of a vector (the AVX-512 VNNI tier's, `simd/x86_avx512/gemm.rs`): four
//! consecutive codes of one row fill a lane, so one `vpdpbusd` against four broadcast
//! activation codes adds four products to each of 16 rows. ggml's repacked CPU buffers
//! (`ggml-cpu/repack.cpp`, `block_q4_0x8` and friends) interleave rows for the same reason;
//! here the repacking happens per GEMM call, into scratch memory, so the weights stay mapped
//! from the file and decode reads them in their own layout.
//!
//! Codes are unsigned bytes, as `vpdpbusd` wants its first operand: the signed types (Q4_0,
//! Q5_0, Q8_0) store `q + 128`, and their kernels subtract `128·Σqa` per block. Rows past the
//! end of a group are zero (codes, scales), and their outputs are dropped.

use crate::blocks::{
    get_scale_min_k4, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0, QuantBlock,
};
use crate::types::QK_K;

/// Weight rows per packed group: one per 32-bit lane of a 512-bit vector.
pub const LANES: usize = 16;
/// Activation rows per tile of the 32-element-block kernels.
pub(crate) const TILE_T32: usize = 8;
/// Activation rows per tile of the K-quant kernels.
pub(crate) const TILE_TK: usize = 4;

/// The repackable weight types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PackKind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl PackKind {
    /// Bytes of one weight block of this type.
    fn block_bytes(self) -> usize {
        match self {
            PackKind::Q4_0 => BlockQ4_0::BYTES,
            PackKind::Q4_1 => BlockQ4_1::BYTES,
            PackKind::Q5_0 => BlockQ5_0::BYTES,
            PackKind::Q5_1 => BlockQ5_1::BYTES,
            PackKind::Q8_0 => BlockQ8_0::BYTES,
            PackKind::Q4K => BlockQ4K::BYTES,
            PackKind::Q5K => BlockQ5K::BYTES,
            PackKind::Q6K => BlockQ6K::BYTES,
        }
    }

    /// Elements per block: 32, or 256 for the K-quants.
    fn block_elems(self) -> usize {
        match self {
            PackKind::Q4K | PackKind::Q5K | PackKind::Q6K => QK_K,
            _ => 32,
        }
    }

    /// i32 scale lanes per block: one set of 16 per sub-block (K-quants only).
    fn scale_groups(self) -> usize {
        match self {
            PackKind::Q4K | PackKind::Q5K => 8,
            PackKind::Q6K => 16,
            _ => 0,
        }
    }

    /// i32 lanes of i16 pairs per block (K-quants only): 8 sets of 16.
    fn pair_groups(self) -> usize {
        if self.block_elems() == QK_K {
            8
        } else {
            0
        }
    }
}

/// Packed groups of 16 weight rows of `n_cols` elements; see the module docs.
pub(crate) struct Packed {
    kind: PackKind,
    n_cols: usize,
    /// Per group `16·n_cols` bytes: byte `(q·16 + r)·4 + e` is element `4q + e` of row `r`.
    codes: Vec<u8>,
    /// Per group, per block, per scale group: 16 sub-block scales (K-quants).
    scales: Vec<i32>,
    /// Per group, per block, 8 × 16 lanes of two i16 each: Q4_K/Q5_K `(m_j, m_j)`, Q6_K
    /// `(sc_2j, sc_2j+1)`, to multiply with the Q8_K group sums `(bsum_2j, bsum_2j+1)`.
    pairs: Vec<i32>,
    /// Per group, per block, 16 scales `d`.
    d: Vec<f32>,
    /// Per group, per block, 16 Q4_1/Q5_1 mins `m`, or Q4_K/Q5_K `dmin`.
    m: Vec<f32>,
}

/// One packed group of 16 rows.
#[derive(Clone, Copy)]
pub(crate) struct PackedGroup<'a> {
    pub codes: &'a [u8],
    pub scales: &'a [i32],
    pub pairs: &'a [i32],
    pub d: &'a [f32],
    pub m: &'a [f32],
}

impl Packed {
    /// Repack the `rows.len() / row_bytes` rows of `rows` (each `n_cols` elements of `kind`).
    pub fn new(kind: PackKind, rows: &[u8], row_bytes: usize, n_cols: usize) -> Packed {
        let n_rows = rows.len() / row_bytes;
        let groups = n_rows.div_ceil(LANES);
        let nb = n_cols / kind.block_elems();
        let mut p = Packed {
            kind,
            n_cols,
            codes: vec![0; groups * LANES * n_cols],
            scales: vec![0; groups * nb * kind.scale_groups() * LANES],
            pairs: vec![0; groups * nb * kind.pair_groups() * LANES],
            d: vec![0.0; groups * nb * LANES],
            m: vec![0.0; groups * nb * LANES],
        };
        for (i, row) in rows.chunks_exact(row_bytes).enumerate() {
            p.pack_row(i / LANES, i % LANES, row);
        }
        p
    }

    /// Group `g`.
    pub fn group(&self, g: usize) -> PackedGroup<'_> {
        let nb = self.n_cols / self.kind.block_elems();
        let per = |k: usize| g * nb * k * LANES..(g + 1) * nb * k * LANES;
        PackedGroup {
            codes: &self.codes[g * LANES * self.n_cols..(g + 1) * LANES * self.n_cols],
            scales: &self.scales[per(self.kind.scale_groups())],
            pairs: &self.pairs[per(self.kind.pair_groups())],
            d: &self.d[per(1)],
            m: &self.m[per(1)],
        }
    }

    /// Write row `r` of group `g`.
    fn pack_row(&mut self, g: usize, r: usize, row: &[u8]) {
        let kind = self.kind;
        let (elems, bytes) = (kind.block_elems(), kind.block_bytes());
        let nb = self.n_cols / elems;
        let codes = &mut self.codes[g * LANES * self.n_cols..(g + 1) * LANES * self.n_cols];
        let (ns, np) = (kind.scale_groups(), kind.pair_groups());
        for (b, blk) in row.chunks_exact(bytes).enumerate().take(nb) {
            let at = g * nb + b;
            let mut q = [0u8; QK_K];
            let q = &mut q[..elems];
            let (d, m) = match kind {
                PackKind::Q4_0 => {
                    let x = BlockQ4_0::read(blk);
                    nibbles(&x.qs, q);
                    bias(q, 8);
                    (x.d.to_f32(), 0.0)
                }
                PackKind::Q4_1 => {
                    let x = BlockQ4_1::read(blk);
                    nibbles(&x.qs, q);
                    (x.d.to_f32(), x.m.to_f32())
                }
                PackKind::Q5_0 => {
                    let x = BlockQ5_0::read(blk);
                    fifth_bits(x.qh, &x.qs, q);
                    bias(q, 16);
                    (x.d.to_f32(), 0.0)
                }
                PackKind::Q5_1 => {
                    let x = BlockQ5_1::read(blk);
                    fifth_bits(x.qh, &x.qs, q);
                    (x.d.to_f32(), x.m.to_f32())
                }
                PackKind::Q8_0 => {
                    let x = BlockQ8_0::read(blk);
                    for (o, &v) in q.iter_mut().zip(&x.qs) {
                        *o = (v as u8) ^ 0x80;
                    }
                    (x.d.to_f32(), 0.0)
                }
                PackKind::Q4K | PackKind::Q5K => {
                    let (c, d, dmin, sc) = if kind == PackKind::Q4K {
                        let x = BlockQ4K::read(blk);
                        (x.codes(), x.d, x.dmin, x.scales)
                    } else {
                        let x = BlockQ5K::read(blk);
                        (x.codes(), x.d, x.dmin, x.scales)
                    };
                    q.copy_from_slice(&c);
                    for j in 0..8 {
                        let (s, mn) = get_scale_min_k4(j, &sc);
                        self.scales[(at * ns + j) * LANES + r] = s as i32;
                        self.pairs[(at * np + j) * LANES + r] = mn as i32 * 0x1_0001;
                    }
                    (d.to_f32(), dmin.to_f32())
                }
                PackKind::Q6K => {
                    let x = BlockQ6K::read(blk);
                    for (o, v) in q.iter_mut().zip(x.values()) {
                        *o = (v + 32) as u8;
                    }
                    for (j, &s) in x.scales.iter().enumerate() {
                        self.scales[(at * ns + j) * LANES + r] = s as i32;
                    }
                    for j in 0..8 {
                        let lo = x.scales[2 * j] as i16 as u16 as u32;
                        let hi = x.scales[2 * j + 1] as i16 as u16 as u32;
                        self.pairs[(at * np + j) * LANES + r] = (lo | (hi << 16)) as i32;
                    }
                    (x.d.to_f32(), 0.0)
                }
            };
            self.d[at * LANES + r] = d;
            self.m[at * LANES + r] = m;
            // Element e of the block sits in lane quad (b·elems + e) / 4.
            let base = b * elems * LANES;
            for (quad, c4) in q.chunks_exact(4).enumerate() {
                let o = base + (quad * LANES + r) * 4;
                codes[o..o + 4].copy_from_slice(c4);
            }
        }
    }
}

/// The 32 nibbles of a legacy block in element order (low nibbles first).
fn nibbles(qs: &[u8; 16], q: &mut [u8]) {
    for (j, &b) in qs.iter().enumerate() {
        q[j] = b & 0x0F;
        q[j + 16] = b >> 4;
    }
}

/// Q5 codes: nibbles plus the fifth bit of element `j` from bit `j` of `qh`.
fn fifth_bits(qh: [u8; 4], qs: &[u8; 16], q: &mut [u8]) {
    nibbles(qs, q);
    let qh = u32::from_le_bytes(qh);
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((qh >> j) & 1) as u8) << 4;
    }
}

/// Unsigned codes `q` of a type whose values are `q − offset` to the biased `q − offset + 128`.
fn bias(q: &mut [u8], offset: u8) {
    for v in q {
        *v += 128 - offset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::{dequantize_row, quantize_row};
    use crate::types::GgmlType;

    /// Every packed code, scale and min read back as a value equals dequantization.
    #[test]
    fn packed_rows_dequantize_like_the_blocks() {
        let kinds = [
            (PackKind::Q4_0, GgmlType::Q4_0),
            (PackKind::Q4_1, GgmlType::Q4_1),
            (PackKind::Q5_0, GgmlType::Q5_0),
            (PackKind::Q5_1, GgmlType::Q5_1),
            (PackKind::Q8_0, GgmlType::Q8_0),
            (PackKind::Q4K, GgmlType::Q4_K),
            (PackKind::Q5K, GgmlType::Q5_K),
            (PackKind::Q6K, GgmlType::Q6_K),
        ];
        let mut seed = 5u64;
        for (kind, ty) in kinds {
            let (n_rows, n_cols) = (19, 512);
            let rb = ty.row_bytes(n_cols).unwrap();
            let mut bytes = vec![0u8; n_rows * rb];
            for row in bytes.chunks_mut(rb) {
                let x: Vec<f32> = (0..n_cols)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                    })
                    .collect();
                quantize_row(ty, &x, row, None);
            }
            let p = Packed::new(kind, &bytes, rb, n_cols);
            let elems = kind.block_elems();
            let signed = matches!(kind, PackKind::Q4_0 | PackKind::Q5_0 | PackKind::Q8_0);
            for i in 0..n_rows {
                let mut deq = vec![0f32; n_cols];
                dequantize_row(ty, &bytes[i * rb..(i + 1) * rb], &mut deq);
                let (g, r) = (p.group(i / LANES), i % LANES);
                for (e, &want) in deq.iter().enumerate() {
                    let (b, eb) = (e / elems, e % elems);
                    let code = g.codes[b * elems * LANES + ((eb / 4) * LANES + r) * 4 + eb % 4];
                    let (d, m) = (g.d[b * LANES + r], g.m[b * LANES + r]);
                    let v = match kind {
                        _ if signed => d * (code as i32 - 128) as f32,
                        PackKind::Q4_1 | PackKind::Q5_1 => d * code as f32 + m,
                        PackKind::Q4K | PackKind::Q5K => {
                            let sc = g.scales[(b * 8 + eb / 32) * LANES + r] as f32;
                            let mn = (g.pairs[(b * 8 + eb / 32) * LANES + r] & 0xFFFF) as f32;
                            d * sc * code as f32 - m * mn
                        }
                        _ => {
                            let sc = g.scales[(b * 16 + eb / 16) * LANES + r];
                            let pair = g.pairs[(b * 8 + eb / 32) * LANES + r];
                            let half = if (eb / 16) % 2 == 0 { pair << 16 } else { pair };
                            assert_eq!(half >> 16, sc, "{ty}: Q6_K scale pair");
                            d * (sc as f32 * (code as i32 - 32) as f32)
                        }
                    };
                    let tol = 1e-5 * (1.0 + want.abs());
                    assert!((v - want).abs() <= tol, "{ty} row {i} [{e}]: {v} vs {want}");
                }
            }
            // Padding rows are zero.
            let g = p.group(1);
            for r in n_rows % LANES..LANES {
                assert_eq!(g.d[r], 0.0);
                assert!((0..n_cols / 4).all(|q| g.codes[(q * LANES + r) * 4] == 0));
            }
        }
    }
}
