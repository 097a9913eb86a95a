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
use half::f16;

/// Weight rows per packed group: one per 32-bit lane of a 512-bit vector.
pub const LANES: usize = 16;
/// Activation rows per tile of the 32-element-block kernels.
pub(crate) const TILE_T32: usize = 8;
/// Activation rows per tile of the K-quant kernels.
pub(crate) const TILE_TK: usize = 8;

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
    bufs: Bufs,
}

/// The storage of [`Packed`], reused across calls on a thread ([`SCRATCH`]): a fresh
/// allocation per GEMM call costs page faults that show in prompt-processing profiles.
#[derive(Default)]
struct Bufs {
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

thread_local! {
    static SCRATCH: std::cell::RefCell<Option<Bufs>> = const { std::cell::RefCell::new(None) };
}

impl Drop for Packed {
    fn drop(&mut self) {
        let bufs = std::mem::take(&mut self.bufs);
        // Keep the larger set when a thread packs for two GEMMs at once.
        let _ = SCRATCH.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.as_ref()
                .is_none_or(|old| old.codes.capacity() < bufs.codes.capacity())
            {
                *s = Some(bufs);
            }
        });
    }
}

/// A tier's packer for one whole group of 16 rows (`rows` holds 16 rows of `row_bytes`): it
/// writes exactly what the reference code here writes (tested), only faster.
pub(crate) type PackFn =
    unsafe fn(kind: PackKind, rows: &[u8], row_bytes: usize, n_cols: usize, out: GroupMut<'_>);

/// One packed group of 16 rows, to be written.
pub(crate) struct GroupMut<'a> {
    pub codes: &'a mut [u8],
    pub scales: &'a mut [i32],
    pub pairs: &'a mut [i32],
    pub d: &'a mut [f32],
    pub m: &'a mut [f32],
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
    /// Repack the `rows.len() / row_bytes` rows of `rows` (each `n_cols` elements of `kind`),
    /// whole groups with `fast` where given (the caller checked that the CPU runs it).
    pub fn new(
        kind: PackKind,
        rows: &[u8],
        row_bytes: usize,
        n_cols: usize,
        fast: Option<PackFn>,
    ) -> Packed {
        let n_rows = rows.len() / row_bytes;
        let groups = n_rows.div_ceil(LANES);
        let nb = n_cols / kind.block_elems();
        let mut bufs = SCRATCH
            .try_with(|s| s.borrow_mut().take())
            .ok()
            .flatten()
            .unwrap_or_default();
        // Every element is written below (padding rows as zeros): no need to clear.
        bufs.codes.resize(groups * LANES * n_cols, 0);
        bufs.scales
            .resize(groups * nb * kind.scale_groups() * LANES, 0);
        bufs.pairs
            .resize(groups * nb * kind.pair_groups() * LANES, 0);
        bufs.d.resize(groups * nb * LANES, 0.0);
        bufs.m.resize(groups * nb * LANES, 0.0);
        let mut p = Packed { kind, n_cols, bufs };
        for (g, group) in rows.chunks(LANES * row_bytes).enumerate() {
            match fast {
                Some(f) if group.len() == LANES * row_bytes => {
                    // SAFETY: the caller chose `f` for a tier this CPU runs; it bounds its
                    // accesses by the slices.
                    unsafe { f(kind, group, row_bytes, n_cols, p.group_mut(g)) }
                }
                _ => p.pack_group(g, group, row_bytes),
            }
        }
        p
    }

    fn group_mut(&mut self, g: usize) -> GroupMut<'_> {
        let nb = self.n_cols / self.kind.block_elems();
        let per = |k: usize| g * nb * k * LANES..(g + 1) * nb * k * LANES;
        let (ns, np) = (self.kind.scale_groups(), self.kind.pair_groups());
        let b = &mut self.bufs;
        GroupMut {
            codes: &mut b.codes[g * LANES * self.n_cols..(g + 1) * LANES * self.n_cols],
            scales: &mut b.scales[per(ns)],
            pairs: &mut b.pairs[per(np)],
            d: &mut b.d[per(1)],
            m: &mut b.m[per(1)],
        }
    }

    /// Group `g`.
    #[inline]
    pub fn group(&self, g: usize) -> PackedGroup<'_> {
        let nb = self.n_cols / self.kind.block_elems();
        let per = |k: usize| g * nb * k * LANES..(g + 1) * nb * k * LANES;
        let b = &self.bufs;
        PackedGroup {
            codes: &b.codes[g * LANES * self.n_cols..(g + 1) * LANES * self.n_cols],
            scales: &b.scales[per(self.kind.scale_groups())],
            pairs: &b.pairs[per(self.kind.pair_groups())],
            d: &b.d[per(1)],
            m: &b.m[per(1)],
        }
    }

    /// Write group `g` from its (up to 16) rows, block by block: each block's codes of all
    /// rows are decoded first, then written out in order.
    fn pack_group(&mut self, g: usize, rows: &[u8], row_bytes: usize) {
        let kind = self.kind;
        let (elems, bytes) = (kind.block_elems(), kind.block_bytes());
        let nb = self.n_cols / elems;
        let n = rows.len() / row_bytes;
        let bufs = &mut self.bufs;
        let codes = &mut bufs.codes[g * LANES * self.n_cols..(g + 1) * LANES * self.n_cols];
        let (ns, np) = (kind.scale_groups(), kind.pair_groups());
        let mut q = [[0u32; QK_K / 4]; LANES];
        for b in 0..nb {
            let at = g * nb + b;
            for (r, qr) in q.iter_mut().enumerate() {
                let at_r = |k: usize, j: usize| (at * k + j) * LANES + r;
                if r >= n {
                    // Padding row: zero codes and scales.
                    *qr = [0; QK_K / 4];
                    bufs.d[at * LANES + r] = 0.0;
                    bufs.m[at * LANES + r] = 0.0;
                    (0..ns).for_each(|j| bufs.scales[at_r(ns, j)] = 0);
                    (0..np).for_each(|j| bufs.pairs[at_r(np, j)] = 0);
                    continue;
                }
                let blk = &rows[r * row_bytes + b * bytes..r * row_bytes + (b + 1) * bytes];
                quads(kind, blk, qr);
                let f16_at = |o: usize| f16::from_le_bytes([blk[o], blk[o + 1]]).to_f32();
                let (d, m) = match kind {
                    PackKind::Q4_0 | PackKind::Q5_0 | PackKind::Q8_0 => (f16_at(0), 0.0),
                    PackKind::Q4_1 | PackKind::Q5_1 => (f16_at(0), f16_at(2)),
                    PackKind::Q4K | PackKind::Q5K => {
                        let sc: [u8; 12] = blk[4..16].try_into().expect("12 bytes");
                        for j in 0..8 {
                            let (s, mn) = get_scale_min_k4(j, &sc);
                            bufs.scales[at_r(ns, j)] = s as i32;
                            bufs.pairs[at_r(np, j)] = mn as i32 * 0x1_0001;
                        }
                        (f16_at(0), f16_at(2))
                    }
                    PackKind::Q6K => {
                        let sc = |j: usize| blk[192 + j] as i8;
                        for j in 0..16 {
                            bufs.scales[at_r(ns, j)] = sc(j) as i32;
                        }
                        for j in 0..8 {
                            let lo = sc(2 * j) as i16 as u16 as u32;
                            let hi = sc(2 * j + 1) as i16 as u16 as u32;
                            bufs.pairs[at_r(np, j)] = (lo | (hi << 16)) as i32;
                        }
                        (f16_at(208), 0.0)
                    }
                };
                bufs.d[at * LANES + r] = d;
                bufs.m[at * LANES + r] = m;
            }
            // Quad `k` of the block (elements 4k..4k + 4) of row `r` is lane `r` of vector `k`.
            let out = &mut codes[b * elems * LANES..(b + 1) * elems * LANES];
            for (k, v) in out.chunks_exact_mut(4 * LANES).enumerate() {
                for (o, qr) in v.chunks_exact_mut(4).zip(&q) {
                    o.copy_from_slice(&qr[k].to_le_bytes());
                }
            }
        }
    }
}

/// Four bytes of `b` at `o` as a little-endian u32.
#[inline(always)]
fn word(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

const LOW4: u32 = 0x0F0F_0F0F;

/// Bit `i` of a nibble to bit 4 of byte `i`: the Q5 fifth bits of 4 elements.
const FIFTH: [u32; 16] = {
    let mut t = [0u32; 16];
    let mut x = 0;
    while x < 16 {
        let mut i = 0;
        while i < 4 {
            if (x >> i) & 1 != 0 {
                t[x] |= 0x10 << (8 * i);
            }
            i += 1;
        }
        x += 1;
    }
    t
};

/// The unsigned codes of one block, four per u32 in element order (`q[k]` holds elements
/// `4k..4k + 4`), signed types biased to `value + 128`. Whole-word bit operations: every
/// layout keeps four consecutive elements in the same bit positions of four consecutive bytes.
fn quads(kind: PackKind, blk: &[u8], q: &mut [u32; QK_K / 4]) {
    match kind {
        PackKind::Q4_0 | PackKind::Q4_1 | PackKind::Q5_0 | PackKind::Q5_1 => {
            // Byte j of qs: element j (low nibble), element j + 16 (high nibble).
            let (qs, qh, bias) = match kind {
                PackKind::Q4_0 => (2, None, 0x7878_7878), // value = q − 8
                PackKind::Q4_1 => (4, None, 0),
                PackKind::Q5_0 => (6, Some(2), 0x7070_7070), // value = q − 16
                _ => (8, Some(4), 0),
            };
            let high = qh.map_or(0, |o| word(blk, o));
            for k in 0..4 {
                let w = word(blk, qs + 4 * k);
                q[k] = w & LOW4;
                q[k + 4] = (w >> 4) & LOW4;
            }
            for (k, v) in q[..8].iter_mut().enumerate() {
                *v = (*v | FIFTH[((high >> (4 * k)) & 0xF) as usize]) + bias;
            }
        }
        PackKind::Q8_0 => {
            for (k, v) in q[..8].iter_mut().enumerate() {
                *v = word(blk, 2 + 4 * k) ^ 0x8080_8080;
            }
        }
        PackKind::Q4K | PackKind::Q5K => {
            // Chunk c of qs: elements 64c + l (low nibbles), 64c + 32 + l (high nibbles);
            // Q5_K's fifth bits: bit 2c (low) and 2c + 1 (high) of qh byte l.
            let qs = if kind == PackKind::Q4K { 16 } else { 48 };
            for c in 0..4 {
                for i in 0..8 {
                    let w = word(blk, qs + 32 * c + 4 * i);
                    let (mut lo, mut hi) = (w & LOW4, (w >> 4) & LOW4);
                    if kind == PackKind::Q5K {
                        let h = word(blk, 16 + 4 * i);
                        lo |= ((h >> (2 * c)) & 0x0101_0101) << 4;
                        hi |= ((h >> (2 * c + 1)) & 0x0101_0101) << 4;
                    }
                    q[16 * c + i] = lo;
                    q[16 * c + 8 + i] = hi;
                }
            }
        }
        PackKind::Q6K => {
            // Half h, run k of 32 elements: ql nibbles (bytes 32·(k % 2), shift 4·(k / 2))
            // and qh bit pair k.
            for h in 0..2 {
                for k in 0..4 {
                    for i in 0..8 {
                        let l = word(blk, 64 * h + 32 * (k % 2) + 4 * i);
                        let hb = word(blk, 128 + 32 * h + 4 * i);
                        let lo = (l >> (4 * (k / 2))) & LOW4;
                        q[32 * h + 8 * k + i] = lo | (((hb >> (2 * k)) & 0x0303_0303) << 4);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::{dequantize_row, quantize_row};
    use crate::types::GgmlType;

    /// Every repackable type, with the block type it is packed from.
    const KINDS: [(PackKind, GgmlType); 8] = [
        (PackKind::Q4_0, GgmlType::Q4_0),
        (PackKind::Q4_1, GgmlType::Q4_1),
        (PackKind::Q5_0, GgmlType::Q5_0),
        (PackKind::Q5_1, GgmlType::Q5_1),
        (PackKind::Q8_0, GgmlType::Q8_0),
        (PackKind::Q4K, GgmlType::Q4_K),
        (PackKind::Q5K, GgmlType::Q5_K),
        (PackKind::Q6K, GgmlType::Q6_K),
    ];

    /// A seeded linear-congruential step (deterministic test data without a dependency).
    fn next(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        *seed
    }

    /// The tier's vectorized packer writes exactly what the reference code writes, on random
    /// bytes (any codes, any f16 bits) and with a partial last group.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn fast_packer_equals_reference() {
        if !crate::dispatch::Isa::Avx512.is_available() {
            return;
        }
        let mut seed = 9u64;
        for (kind, ty) in KINDS {
            for (n_rows, n_cols) in [(16, 256), (37, 768), (48, 512)] {
                let rb = ty.row_bytes(n_cols).unwrap();
                let bytes: Vec<u8> = (0..n_rows * rb)
                    .map(|_| (next(&mut seed) >> 56) as u8)
                    .collect();
                let slow = Packed::new(kind, &bytes, rb, n_cols, None);
                let fast = Packed::new(
                    kind,
                    &bytes,
                    rb,
                    n_cols,
                    Some(crate::simd::x86_avx512::pack_group),
                );
                let (a, b) = (&slow.bufs, &fast.bufs);
                assert_eq!(a.codes, b.codes, "{ty} {n_rows}x{n_cols}: codes");
                assert_eq!(a.scales, b.scales, "{ty}: scales");
                assert_eq!(a.pairs, b.pairs, "{ty}: pairs");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a.d), bits(&b.d), "{ty}: d");
                assert_eq!(bits(&a.m), bits(&b.m), "{ty}: m");
            }
        }
    }

    /// Every packed code, scale and min read back as a value equals dequantization.
    #[test]
    fn packed_rows_dequantize_like_the_blocks() {
        let mut seed = 5u64;
        for (kind, ty) in KINDS {
            let (n_rows, n_cols) = (19, 512);
            let rb = ty.row_bytes(n_cols).unwrap();
            let mut bytes = vec![0u8; n_rows * rb];
            for row in bytes.chunks_mut(rb) {
                let x: Vec<f32> = (0..n_cols)
                    .map(|_| ((next(&mut seed) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
                    .collect();
                quantize_row(ty, &x, row, None);
            }
            let p = Packed::new(kind, &bytes, rb, n_cols, None);
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
