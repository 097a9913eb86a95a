//! Prompt-sized matrix products (`m` activation rows at once): each weight row is unpacked
//! once per call to small integers on a grid, then a micro-kernel multiplies a tile of
//! unpacked weight rows with a tile of activation rows, reusing every load across the tile.
//! The per-row dot path ([`crate::matmul`]) instead re-decodes each weight block for every
//! activation row, which is what decode (m = 1) wants and prefill does not.
//!
//! An unpacked weight row is `w[i] = scale[i/16]·q[i] + min[i/16]`, with `q` unsigned (0..=63
//! for every type here) or, for types with signed codes (Q8_0, IQ4_NL, IQ4_XS), signed. The
//! activations are quantized per 32 values to i8 with an f32 scale `d` and the two half-block
//! sums `d·Σq` (Q8_1's idea, at 16-value granularity so that per-16 mins fold in), hence
//!
//! `Σ w·a = Σ_blocks d·(scale_lo·Σ_lo q·qa + scale_hi·Σ_hi q·qa) + Σ_halves min·sum`.
//!
//! The integer products are exact; only the float accumulation order differs between tiers.

use crate::blocks::{
    get_scale_min_k4, BlockIQ4NL, BlockIQ4XS, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0,
    BlockQ5_1, BlockQ6K, BlockQ8_0, QuantBlock,
};
use crate::dispatch::Isa;
use crate::types::GgmlType;
use rayon::prelude::*;

/// Below this many activation rows the per-row dot path wins: unpacking a weight row costs
/// about as much as a handful of dot products with it.
pub const MIN_ROWS: usize = 6;

/// Weight rows per micro-kernel tile.
pub const TILE_R: usize = 2;
/// Activation rows per micro-kernel tile.
pub const TILE_T: usize = 4;

/// Activation rows quantized for [`Gemm::matmul`].
#[derive(Default, Debug, Clone)]
pub struct GemmActs {
    n_cols: usize,
    m: usize,
    /// `m × n_cols` codes in [-127, 127].
    q: Vec<i8>,
    /// `m × n_cols/32` block scales.
    d: Vec<f32>,
    /// `m × n_cols/16` half-block sums `d·Σq`.
    s: Vec<f32>,
    /// `m × n_cols/32` block sums as Q8_1 stores them: `f16(d·Σq)` before `d` is rounded.
    /// Q4_1/Q5_1 take their min term from these, so that they round as ggml does.
    s32: Vec<f32>,
}

impl GemmActs {
    /// Quantize the rows of `x` (`n_cols` values each, `n_cols` a multiple of 32), reusing the
    /// buffers. Rounding follows ggml's Q8_0/Q8_1: `d = amax/127` stored as f16, codes
    /// `round(x·127/amax)`.
    pub fn quantize(&mut self, x: &[f32], n_cols: usize) {
        assert!(
            n_cols % 32 == 0 && (n_cols == 0 || x.len() % n_cols == 0),
            "gemm activations: {} values are not rows of {n_cols} (a multiple of 32)",
            x.len()
        );
        let m = x.len().checked_div(n_cols).unwrap_or(0);
        self.n_cols = n_cols;
        self.m = m;
        self.q.resize(m * n_cols, 0);
        self.d.resize(m * n_cols / 32, 0.0);
        self.s.resize(m * n_cols / 16, 0.0);
        self.s32.resize(m * n_cols / 32, 0.0);
        if n_cols == 0 {
            return;
        }
        self.q
            .par_chunks_mut(n_cols)
            .zip(self.d.par_chunks_mut(n_cols / 32))
            .zip(self.s.par_chunks_mut(n_cols / 16))
            .zip(self.s32.par_chunks_mut(n_cols / 32))
            .zip(x.par_chunks(n_cols))
            .for_each(|((((q, d), s), s32), x)| {
                for (b, (qb, xb)) in q.chunks_exact_mut(32).zip(x.chunks_exact(32)).enumerate() {
                    let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                    let (db, id) = crate::blocks::q8_0_scales(amax);
                    for (qv, &xv) in qb.iter_mut().zip(xb) {
                        *qv = (xv * id).round().clamp(-127.0, 127.0) as i8;
                    }
                    let sum: i32 = qb.iter().map(|&v| v as i32).sum();
                    s32[b] = half::f16::from_f32(db * sum as f32).to_f32();
                    // The dot products see the scale as stored: rounded to f16.
                    let db = half::f16::from_f32(db).to_f32();
                    d[b] = db;
                    for h in 0..2 {
                        let sum: i32 = qb[16 * h..16 * h + 16].iter().map(|&v| v as i32).sum();
                        s[2 * b + h] = db * sum as f32;
                    }
                }
            });
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    fn row(&self, t: usize) -> ActRow<'_> {
        let n = self.n_cols;
        ActRow {
            q: &self.q[t * n..(t + 1) * n],
            d: &self.d[t * n / 32..(t + 1) * n / 32],
            s: &self.s[t * n / 16..(t + 1) * n / 16],
            s32: &self.s32[t * n / 32..(t + 1) * n / 32],
        }
    }
}

/// One quantized activation row.
#[derive(Clone, Copy)]
pub(crate) struct ActRow<'a> {
    pub q: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub s32: &'a [f32],
}

/// One unpacked weight row: codes, per-32 scale vectors `[lo ×4, hi ×4]` (the eight 4-value
/// lanes of a block's integer dot), and per-16 mins.
#[derive(Clone, Copy)]
pub(crate) struct WeightRow<'a> {
    pub q: &'a [u8],
    pub scales: &'a [f32],
    pub mins: &'a [f32],
}

/// The integer-part dot products of up to [`TILE_R`] weight rows with up to [`TILE_T`]
/// activation rows: `out[r][t]` for `r < w.len()`, `t < a.len()`.
pub(crate) type TileFn = unsafe fn(
    signed: bool,
    w: &[WeightRow<'_>],
    a: &[ActRow<'_>],
    out: &mut [[f32; TILE_T]; TILE_R],
);

/// Unpack one weight row of `q.len()` values into codes, per-16 scales and per-16 mins.
type UnpackFn = fn(row: &[u8], q: &mut [u8], scales: &mut [f32], mins: &mut [f32]);

/// The prompt-sized matrix product for one weight type on one tier.
#[derive(Clone, Copy)]
pub struct Gemm {
    pub weight: GgmlType,
    pub isa: Isa,
    signed: bool,
    /// Mins are per 32-block and pair with the Q8_1-rounded sums (Q4_1, Q5_1).
    block_mins: bool,
    unpack: UnpackFn,
    tile: TileFn,
}

impl std::fmt::Debug for Gemm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gemm({}, {})", self.weight, self.isa)
    }
}

impl Gemm {
    /// The GEMM for `weight` on tier `isa`, if that type unpacks to the integer grid and the
    /// tier has a micro-kernel (scalar: the reference; AVX2/AVX-512: SIMD). Other tiers and
    /// types use the per-row dot path.
    pub fn new(weight: GgmlType, isa: Isa) -> Option<Gemm> {
        use GgmlType as T;
        let (signed, unpack): (bool, UnpackFn) = match weight {
            T::Q4_0 => (false, unpack_row::<BlockQ4_0>),
            T::Q4_1 => (false, unpack_row::<BlockQ4_1>),
            T::Q5_0 => (false, unpack_row::<BlockQ5_0>),
            T::Q5_1 => (false, unpack_row::<BlockQ5_1>),
            T::Q8_0 => (true, unpack_row::<BlockQ8_0>),
            T::Q4_K => (false, unpack_row::<BlockQ4K>),
            T::Q5_K => (false, unpack_row::<BlockQ5K>),
            T::Q6_K => (false, unpack_row::<BlockQ6K>),
            T::IQ4_NL => (true, unpack_row::<BlockIQ4NL>),
            T::IQ4_XS => (true, unpack_row::<BlockIQ4XS>),
            _ => return None,
        };
        let tile: TileFn = match isa {
            Isa::Scalar => tile_ref,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 if isa.is_available() => crate::simd::x86_avx2::gemm_tile,
            _ => return None,
        };
        Some(Gemm {
            weight,
            isa,
            signed,
            block_mins: matches!(weight, T::Q4_1 | T::Q5_1),
            unpack,
            tile,
        })
    }

    /// `y[t·n_rows + r] = Σ_c w[r, c]·a[t, c]` for every activation row `t` of `a` and weight
    /// row `r` of `w` (`n_rows` rows of `n_cols` values of the weight type), in parallel over
    /// weight rows on the current rayon pool. Panics if a length disagrees.
    pub fn matmul(&self, w: &[u8], n_rows: usize, n_cols: usize, a: &GemmActs, y: &mut [f32]) {
        let w_row = self
            .weight
            .row_bytes(n_cols)
            .unwrap_or_else(|| panic!("gemm: {n_cols} columns do not fill {} rows", self.weight));
        assert_eq!(
            Some(w.len()),
            n_rows.checked_mul(w_row),
            "gemm: weight bytes"
        );
        assert_eq!(a.n_cols, n_cols, "gemm: activation width");
        let m = a.m;
        assert_eq!(Some(y.len()), m.checked_mul(n_rows), "gemm: output length");
        if y.is_empty() {
            return;
        }
        if n_cols == 0 {
            y.fill(0.0);
            return;
        }

        // Task c owns weight rows [c·chunk, (c+1)·chunk): it unpacks them once and writes
        // that column range of every output row.
        let threads = rayon::current_num_threads().max(1);
        let chunk = n_rows
            .div_ceil(4 * threads)
            .clamp(2 * TILE_R, 32)
            .next_multiple_of(TILE_R);
        let n_tasks = n_rows.div_ceil(chunk);
        let mut outs: Vec<Vec<&mut [f32]>> = (0..n_tasks).map(|_| Vec::with_capacity(m)).collect();
        for y_t in y.chunks_mut(n_rows) {
            for (c, part) in y_t.chunks_mut(chunk).enumerate() {
                outs[c].push(part);
            }
        }
        outs.into_par_iter()
            .zip(w.par_chunks(chunk * w_row))
            .for_each(|(mut out, ws)| {
                let rows = ws.len() / w_row;
                let mut q = vec![0u8; rows * n_cols];
                let mut scales16 = vec![0f32; n_cols / 16];
                let mut scales = vec![0f32; rows * n_cols / 4];
                let mut mins = vec![0f32; rows * n_cols / 16];
                for (r, wr) in ws.chunks_exact(w_row).enumerate() {
                    (self.unpack)(
                        wr,
                        &mut q[r * n_cols..(r + 1) * n_cols],
                        &mut scales16,
                        &mut mins[r * n_cols / 16..(r + 1) * n_cols / 16],
                    );
                    // Widen each block's two scales to its eight 4-value lanes.
                    let sv = &mut scales[r * n_cols / 4..(r + 1) * n_cols / 4];
                    for (lanes, pair) in sv.chunks_exact_mut(8).zip(scales16.chunks_exact(2)) {
                        lanes[..4].fill(pair[0]);
                        lanes[4..].fill(pair[1]);
                    }
                }
                let wrow = |r: usize| WeightRow {
                    q: &q[r * n_cols..(r + 1) * n_cols],
                    scales: &scales[r * n_cols / 4..(r + 1) * n_cols / 4],
                    mins: &mins[r * n_cols / 16..(r + 1) * n_cols / 16],
                };
                let mut tile = [[0f32; TILE_T]; TILE_R];
                for t0 in (0..m).step_by(TILE_T) {
                    let acts: Vec<ActRow> = (t0..(t0 + TILE_T).min(m)).map(|t| a.row(t)).collect();
                    for r0 in (0..rows).step_by(TILE_R) {
                        let ws: Vec<WeightRow> = (r0..(r0 + TILE_R).min(rows)).map(wrow).collect();
                        // SAFETY: `Gemm::new` chose `tile` for a tier this CPU runs; the
                        // kernel bounds its reads by the row slices, which all hold n_cols
                        // codes (n_cols/32 blocks).
                        unsafe { (self.tile)(self.signed, &ws, &acts, &mut tile) };
                        for (i, wr) in ws.iter().enumerate() {
                            for (j, ar) in acts.iter().enumerate() {
                                let mins = if self.block_mins {
                                    dot_f32_strided(wr.mins, ar.s32)
                                } else {
                                    dot_f32(wr.mins, ar.s)
                                };
                                out[t0 + j][r0 + i] = tile[i][j] + mins;
                            }
                        }
                    }
                }
            });
    }
}

fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    // Eight partial sums: lets the compiler vectorize without reassociating for us.
    let mut acc = [0f32; 8];
    let mut xs = x.chunks_exact(8);
    let mut ys = y.chunks_exact(8);
    for (xc, yc) in (&mut xs).zip(&mut ys) {
        for i in 0..8 {
            acc[i] += xc[i] * yc[i];
        }
    }
    let tail: f32 = xs
        .remainder()
        .iter()
        .zip(ys.remainder())
        .map(|(a, b)| a * b)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ_b x[2b]·y[b]`: per-16 mins that are really per-32, against per-32 sums.
fn dot_f32_strided(x: &[f32], y: &[f32]) -> f32 {
    x.iter().step_by(2).zip(y).map(|(a, b)| a * b).sum()
}

/// The reference micro-kernel: plain loops, exact i32 sums per half block.
///
/// # Safety
/// None beyond the signature's: it is `unsafe` only to share [`TileFn`].
unsafe fn tile_ref(
    signed: bool,
    w: &[WeightRow<'_>],
    a: &[ActRow<'_>],
    out: &mut [[f32; TILE_T]; TILE_R],
) {
    for (wr, o) in w.iter().zip(out.iter_mut()) {
        for (ar, o) in a.iter().zip(o.iter_mut()) {
            let mut sum = 0f32;
            for (b, &d) in ar.d.iter().enumerate() {
                let mut block = 0f32;
                for h in 0..2 {
                    let range = 32 * b + 16 * h..32 * b + 16 * h + 16;
                    let dot: i32 = wr.q[range.clone()]
                        .iter()
                        .zip(&ar.q[range])
                        .map(|(&qw, &qa)| {
                            let qw = if signed { qw as i8 as i32 } else { qw as i32 };
                            qw * qa as i32
                        })
                        .sum();
                    block += wr.scales[8 * b + 4 * h] * dot as f32;
                }
                sum += d * block;
            }
            *o = sum;
        }
    }
}

/// A weight block as integers on a grid: `w[i] = scales[i/16]·q[i] + mins[i/16]`.
trait Unpack: QuantBlock {
    fn unpack(&self, q: &mut [u8], scales: &mut [f32], mins: &mut [f32]);
}

fn unpack_row<B: Unpack>(row: &[u8], q: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
    let groups = B::ELEMS / 16;
    for (i, b) in row.chunks_exact(B::BYTES).enumerate() {
        B::read(b).unpack(
            &mut q[i * B::ELEMS..(i + 1) * B::ELEMS],
            &mut scales[i * groups..(i + 1) * groups],
            &mut mins[i * groups..(i + 1) * groups],
        );
    }
}

/// The 32 nibbles of a legacy block in element order (low nibbles first).
fn nibbles(qs: &[u8; 16], q: &mut [u8]) {
    for (j, &b) in qs.iter().enumerate() {
        q[j] = b & 0x0F;
        q[j + 16] = b >> 4;
    }
}

/// Fifth bits of a Q5_0/Q5_1 block onto its nibbles.
fn fifth_bits(qh: [u8; 4], q: &mut [u8]) {
    let qh = u32::from_le_bytes(qh);
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((qh >> j) & 1) as u8) << 4;
    }
}

impl Unpack for BlockQ4_0 {
    fn unpack(&self, q: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
        let d = self.d.to_f32();
        nibbles(&self.qs, q);
        scales.fill(d);
        mins.fill(-8.0 * d);
    }
}

impl Unpack for BlockQ4_1 {
    fn unpack(&self, q: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
        nibbles(&self.qs, q);
        scales.fill(self.d.to_f32());
        mins.fill(self.m.to_f32());
    }
}

impl Unpack for BlockQ5_0 {
    fn unpack(&self, q: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
        let d = self.d.to_f32();
        nibbles(&self.qs, q);
        fifth_bits(self.qh, q);
        scales.fill(d);
        mins.fill(-16.0 * d);
    }
}

impl Unpack for BlockQ5_1 {
    fn unpack(&self, q: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
        nibbles(&self.qs, q);
        fifth_bits(self.qh, q);
        scales.fill(self.d.to_f32());
        mins.fill(self.m.to_f32());
    }
}

impl Unpack for BlockQ8_0 {
    fn unpack(&self, q: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
        for (o, &v) in q.iter_mut().zip(&self.qs) {
            *o = v as u8;
        }
        scales.fill(self.d.to_f32());
        mins.fill(0.0);
    }
}

impl Unpack for BlockQ4K {
    fn unpack(&self, q: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
        q.copy_from_slice(&self.codes());
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for j in 0..8 {
            let (sc, m) = get_scale_min_k4(j, &self.scales);
            scales[2 * j..2 * j + 2].fill(d * sc as f32);
            mins[2 * j..2 * j + 2].fill(-dmin * m as f32);
        }
    }
}

impl Unpack for BlockQ5K {
    fn unpack(&self, q: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
        q.copy_from_slice(&self.codes());
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for j in 0..8 {
            let (sc, m) = get_scale_min_k4(j, &self.scales);
            scales[2 * j..2 * j + 2].fill(d * sc as f32);
            mins[2 * j..2 * j + 2].fill(-dmin * m as f32);
        }
    }
}

impl Unpack for BlockQ6K {
    /// Codes `q − 32 + 32` in 0..=63 with the −32 folded into the mins.
    fn unpack(&self, q: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
        for (o, v) in q.iter_mut().zip(self.values()) {
            *o = (v as i32 + 32) as u8;
        }
        let d = self.d.to_f32();
        for (g, &sc) in self.scales.iter().enumerate() {
            scales[g] = d * sc as f32;
            mins[g] = -32.0 * d * sc as f32;
        }
    }
}

impl Unpack for BlockIQ4NL {
    fn unpack(&self, q: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
        let mut codes = [0u8; 32];
        nibbles(&self.qs, &mut codes);
        for (o, &c) in q.iter_mut().zip(&codes) {
            *o = crate::blocks::KVALUES_IQ4NL[c as usize] as u8;
        }
        scales.fill(self.d.to_f32());
        mins.fill(0.0);
    }
}

impl Unpack for BlockIQ4XS {
    fn unpack(&self, q: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
        let d = self.d.to_f32();
        for ib in 0..8 {
            let chunk: &[u8; 16] = self.qs[16 * ib..16 * ib + 16].try_into().expect("16 bytes");
            let mut codes = [0u8; 32];
            nibbles(chunk, &mut codes);
            for (o, &c) in q[32 * ib..32 * ib + 32].iter_mut().zip(&codes) {
                *o = crate::blocks::KVALUES_IQ4NL[c as usize] as u8;
            }
            scales[2 * ib..2 * ib + 2].fill(d * (self.ls(ib) - 32) as f32);
        }
        mins.fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::{dequantize_row, quantize_row};

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    const TYPES: [GgmlType; 10] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
    ];

    /// Unpacking reproduces dequantization exactly (up to f32 rounding of scale·q + min).
    #[test]
    fn unpack_matches_dequantize() {
        let mut seed = 7;
        for ty in TYPES {
            let n = 512;
            let x: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let mut bytes = vec![0u8; ty.row_bytes(n).unwrap()];
            quantize_row(ty, &x, &mut bytes, None);
            let mut deq = vec![0f32; n];
            dequantize_row(ty, &bytes, &mut deq);
            let g = Gemm::new(ty, Isa::Scalar).unwrap();
            let (mut q, mut sc, mut mn) = (vec![0u8; n], vec![0f32; n / 16], vec![0f32; n / 16]);
            (g.unpack)(&bytes, &mut q, &mut sc, &mut mn);
            for i in 0..n {
                let qv = if g.signed {
                    q[i] as i8 as f32
                } else {
                    q[i] as f32
                };
                let v = sc[i / 16] * qv + mn[i / 16];
                assert!(
                    (v - deq[i]).abs() <= 1e-5 * (1.0 + deq[i].abs()),
                    "{ty} {i}: {v} vs {}",
                    deq[i]
                );
            }
        }
    }

    /// Every tier's GEMM equals the scalar reference GEMM (up to float summation order) and
    /// lands near the f32 product, for every tile-edge shape.
    #[test]
    fn gemm_tiers_agree() {
        let mut seed = 11;
        for ty in TYPES {
            for (n_rows, m) in [(1, 1), (3, 5), (8, 4), (7, 9), (33, 6)] {
                let n_cols = 256;
                let w: Vec<f32> = (0..n_rows * n_cols).map(|_| lcg(&mut seed)).collect();
                let x: Vec<f32> = (0..m * n_cols).map(|_| 3.0 * lcg(&mut seed)).collect();
                let mut bytes = vec![0u8; n_rows * ty.row_bytes(n_cols).unwrap()];
                for (wr, br) in w
                    .chunks(n_cols)
                    .zip(bytes.chunks_mut(ty.row_bytes(n_cols).unwrap()))
                {
                    quantize_row(ty, wr, br, None);
                }
                let mut acts = GemmActs::default();
                acts.quantize(&x, n_cols);
                let mut want = vec![0f32; m * n_rows];
                Gemm::new(ty, Isa::Scalar)
                    .unwrap()
                    .matmul(&bytes, n_rows, n_cols, &acts, &mut want);
                // Near the exact product of the dequantized weights with the raw activations.
                let mut deq = vec![0f32; n_rows * n_cols];
                dequantize_row(ty, &bytes, &mut deq);
                for t in 0..m {
                    let xt = &x[t * n_cols..(t + 1) * n_cols];
                    for r in 0..n_rows {
                        let wr = &deq[r * n_cols..(r + 1) * n_cols];
                        let exact: f32 = wr.iter().zip(xt).map(|(a, b)| a * b).sum();
                        // Each activation code is off by at most half its block's step.
                        let bound: f32 = wr
                            .chunks(32)
                            .zip(xt.chunks(32))
                            .map(|(wb, xb)| {
                                let step = xb.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                                0.5 * step * wb.iter().map(|v| v.abs()).sum::<f32>()
                            })
                            .sum();
                        let got = want[t * n_rows + r];
                        assert!(
                            (got - exact).abs() <= 1.01 * bound + 1e-4,
                            "{ty}: {got} vs {exact} (bound {bound})"
                        );
                    }
                }
                for isa in crate::dispatch::available_isas() {
                    let Some(g) = Gemm::new(ty, isa) else {
                        continue;
                    };
                    let mut got = vec![0f32; m * n_rows];
                    g.matmul(&bytes, n_rows, n_cols, &acts, &mut got);
                    for (a, b) in got.iter().zip(&want) {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{ty} {isa}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    /// The GEMM and the per-row dot path compute the same products: their activation
    /// rounding is the same for the legacy types, so they agree closely.
    #[test]
    fn gemm_matches_dot_path() {
        let mut seed = 5;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
        ] {
            for (n_rows, n_cols, m) in [(10, 576, 6), (7, 1536, 9), (5, 64, 13)] {
                let rb = ty.row_bytes(n_cols).unwrap();
                let w: Vec<f32> = (0..n_rows * n_cols).map(|_| lcg(&mut seed)).collect();
                let x: Vec<f32> = (0..m * n_cols).map(|_| 2.0 * lcg(&mut seed)).collect();
                let mut bytes = vec![0u8; n_rows * rb];
                for (wr, br) in w.chunks(n_cols).zip(bytes.chunks_mut(rb)) {
                    quantize_row(ty, wr, br, None);
                }
                let k = crate::dispatch::dot_kernel_for(ty, Isa::Scalar).unwrap();
                let mut a = Vec::new();
                crate::matmul::quantize_rows(&k, &x, n_cols, &mut a);
                let mut want = vec![0f32; m * n_rows];
                crate::matmul::matmul(&k, &bytes, n_rows, n_cols, &a, m, &mut want);
                let mut acts = GemmActs::default();
                acts.quantize(&x, n_cols);
                for isa in crate::dispatch::available_isas() {
                    let Some(g) = Gemm::new(ty, isa) else {
                        continue;
                    };
                    let mut got = vec![0f32; m * n_rows];
                    g.matmul(&bytes, n_rows, n_cols, &acts, &mut got);
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 2e-3 * (1.0 + b.abs()),
                            "{ty} {isa} {n_cols} [{i}]: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
