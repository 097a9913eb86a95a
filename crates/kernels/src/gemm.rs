//! Prompt-sized matrix products (`m` activation rows at once) for the 32-element block
//! types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): each weight row is unpacked once per call to its
//! integer codes, then a micro-kernel multiplies a tile of unpacked weight rows with a tile
//! of activation rows, reusing every load across the tile. The per-row dot path
//! ([`crate::matmul`]) re-decodes each weight block for every activation row, which is what
//! decode (m = 1) wants and a prompt does not.
//!
//! Each product is computed with exactly the operations, in the same order, of the tier's
//! many-rows dot kernel (same codes, same `d_w·d_a` products, one FMA chain per output, the
//! same final reduction, the min term summed block by block), so a token's logits do not
//! depend on how many rows share its batch: batched and single-sequence generation, and
//! prompts resumed from a cached prefix, agree bit for bit. Tiers without such a kernel (the
//! scalar reference, NEON) and the other types use the dot path.

use crate::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QuantBlock};
use crate::dispatch::Isa;
use crate::types::GgmlType;
use rayon::prelude::*;

/// Below this many activation rows the per-row dot path is faster: unpacking a weight row
/// costs about as much as a handful of dot products with it. Results are the same either way.
pub const MIN_ROWS: usize = 6;

/// Weight rows per micro-kernel tile.
pub const TILE_R: usize = 2;
/// Activation rows per micro-kernel tile.
pub const TILE_T: usize = 4;

/// Activation rows quantized for [`Gemm::matmul`], as ggml's Q8_0/Q8_1 blocks quantize them
/// (the same codes, scales and sums), laid out by field.
#[derive(Default, Debug, Clone)]
pub struct GemmActs {
    n_cols: usize,
    m: usize,
    /// `m × n_cols` codes in [-127, 127].
    q: Vec<i8>,
    /// `m × n_cols/32` block scales, rounded to f16 as the blocks store them.
    d: Vec<f32>,
    /// `m × n_cols/32` block sums `f16(d·Σq)` (Q8_1's `s`, for the min term of Q4_1/Q5_1).
    s: Vec<f32>,
}

impl GemmActs {
    /// Quantize the rows of `x` (`n_cols` values each, `n_cols` a multiple of 32), reusing the
    /// buffers.
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
        self.s.resize(m * n_cols / 32, 0.0);
        if n_cols == 0 {
            return;
        }
        self.q
            .par_chunks_mut(n_cols)
            .zip(self.d.par_chunks_mut(n_cols / 32))
            .zip(self.s.par_chunks_mut(n_cols / 32))
            .zip(x.par_chunks(n_cols))
            .for_each(|(((q, d), s), x)| {
                for (b, (qb, xb)) in q.chunks_exact_mut(32).zip(x.chunks_exact(32)).enumerate() {
                    let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                    let (db, id) = crate::blocks::q8_0_scales(amax);
                    for (qv, &xv) in qb.iter_mut().zip(xb) {
                        *qv = (xv * id).round().clamp(-127.0, 127.0) as i8;
                    }
                    let sum: i32 = qb.iter().map(|&v| v as i32).sum();
                    d[b] = half::f16::from_f32(db).to_f32();
                    s[b] = half::f16::from_f32(sum as f32 * db).to_f32();
                }
            });
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    fn row(&self, t: usize) -> ActRow<'_> {
        let (n, nb) = (self.n_cols, self.n_cols / 32);
        ActRow {
            q: &self.q[t * n..(t + 1) * n],
            d: &self.d[t * nb..(t + 1) * nb],
            s: &self.s[t * nb..(t + 1) * nb],
        }
    }
}

/// One quantized activation row.
#[derive(Clone, Copy)]
pub(crate) struct ActRow<'a> {
    pub q: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
}

/// One unpacked weight row: `w[i] = scale[i/32]·q[i] + min[i/32]`, `q` signed or unsigned.
#[derive(Clone, Copy)]
pub(crate) struct WeightRow<'a> {
    pub q: &'a [u8],
    pub scales: &'a [f32],
    pub mins: &'a [f32],
}

/// The products of [`TILE_R`] weight rows with [`TILE_T`] activation rows, without the min
/// term: `out[r][t]`.
pub(crate) type TileFn = unsafe fn(
    signed: bool,
    w: &[WeightRow<'_>; TILE_R],
    a: &[ActRow<'_>; TILE_T],
    out: &mut [[f32; TILE_T]; TILE_R],
);

/// Unpack one weight row into codes, per-block scales and per-block mins.
type UnpackFn = fn(row: &[u8], q: &mut [u8], scales: &mut [f32], mins: &mut [f32]);

/// The prompt-sized matrix product for one weight type on one tier.
#[derive(Clone, Copy)]
pub struct Gemm {
    pub weight: GgmlType,
    pub isa: Isa,
    signed: bool,
    /// Whether the type has a min term (Q4_1, Q5_1).
    has_mins: bool,
    unpack: UnpackFn,
    tile: TileFn,
}

impl std::fmt::Debug for Gemm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gemm({}, {})", self.weight, self.isa)
    }
}

impl Gemm {
    /// The GEMM for `weight` on tier `isa`, where the tier's dot kernels have a GEMM twin.
    pub fn new(weight: GgmlType, isa: Isa) -> Option<Gemm> {
        use GgmlType as T;
        let (signed, unpack): (bool, UnpackFn) = match weight {
            T::Q4_0 => (true, unpack_row::<BlockQ4_0>),
            T::Q4_1 => (false, unpack_row::<BlockQ4_1>),
            T::Q5_0 => (true, unpack_row::<BlockQ5_0>),
            T::Q5_1 => (false, unpack_row::<BlockQ5_1>),
            T::Q8_0 => (true, unpack_row::<BlockQ8_0>),
            _ => return None,
        };
        let tile: TileFn = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 if isa.is_available() => crate::simd::x86_avx2::gemm_tile,
            _ => return None,
        };
        Some(Gemm {
            weight,
            isa,
            signed,
            has_mins: !signed,
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
        let nb = n_cols / 32;
        outs.into_par_iter()
            .zip(w.par_chunks(chunk * w_row))
            .for_each(|(mut out, ws)| {
                let rows = ws.len() / w_row;
                let mut q = vec![0u8; rows * n_cols];
                let mut scales = vec![0f32; rows * nb];
                let mut mins = vec![0f32; rows * nb];
                for (r, wr) in ws.chunks_exact(w_row).enumerate() {
                    (self.unpack)(
                        wr,
                        &mut q[r * n_cols..(r + 1) * n_cols],
                        &mut scales[r * nb..(r + 1) * nb],
                        &mut mins[r * nb..(r + 1) * nb],
                    );
                }
                let wrow = |r: usize| WeightRow {
                    q: &q[r * n_cols..(r + 1) * n_cols],
                    scales: &scales[r * nb..(r + 1) * nb],
                    mins: &mins[r * nb..(r + 1) * nb],
                };
                let mut tile = [[0f32; TILE_T]; TILE_R];
                for t0 in (0..m).step_by(TILE_T) {
                    let nt = TILE_T.min(m - t0);
                    // Partial tiles repeat their last row; those results are dropped.
                    let acts: [ActRow; TILE_T] = std::array::from_fn(|j| a.row(t0 + j.min(nt - 1)));
                    for r0 in (0..rows).step_by(TILE_R) {
                        let nr = TILE_R.min(rows - r0);
                        let ws: [WeightRow; TILE_R] =
                            std::array::from_fn(|i| wrow(r0 + i.min(nr - 1)));
                        // SAFETY: `Gemm::new` chose `tile` for a tier this CPU runs; the
                        // kernel bounds its reads by the row slices, which all hold n_cols
                        // codes (n_cols/32 blocks).
                        unsafe { (self.tile)(self.signed, &ws, &acts, &mut tile) };
                        for (i, wr) in ws[..nr].iter().enumerate() {
                            for (j, ar) in acts[..nt].iter().enumerate() {
                                let mut v = tile[i][j];
                                if self.has_mins {
                                    v += min_term(wr.mins, ar.s);
                                }
                                out[t0 + j][r0 + i] = v;
                            }
                        }
                    }
                }
            });
    }
}

/// `Σ_b m_b·s_b` block by block from zero, as the dot kernels accumulate it.
fn min_term(mins: &[f32], sums: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (m, s) in mins.iter().zip(sums) {
        acc += m * s;
    }
    acc
}

/// A weight block as integers: `w[i] = scale·q[i] + min` (codes as the dot kernels form them).
trait Unpack: QuantBlock {
    fn unpack(&self, q: &mut [u8]) -> (f32, f32);
}

fn unpack_row<B: Unpack>(row: &[u8], q: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
    for (i, b) in row.chunks_exact(B::BYTES).enumerate() {
        (scales[i], mins[i]) = B::read(b).unpack(&mut q[i * 32..(i + 1) * 32]);
    }
}

/// The 32 nibbles of a legacy block in element order (low nibbles first), minus `offset`.
fn nibbles(qs: &[u8; 16], offset: u8, q: &mut [u8]) {
    for (j, &b) in qs.iter().enumerate() {
        q[j] = (b & 0x0F).wrapping_sub(offset);
        q[j + 16] = (b >> 4).wrapping_sub(offset);
    }
}

/// Fifth bits of a Q5_0/Q5_1 block onto its nibbles (before any offset).
fn with_fifth_bits(qh: [u8; 4], qs: &[u8; 16], offset: u8, q: &mut [u8]) {
    nibbles(qs, 0, q);
    let qh = u32::from_le_bytes(qh);
    for (j, v) in q.iter_mut().enumerate() {
        *v = (*v | ((((qh >> j) & 1) as u8) << 4)).wrapping_sub(offset);
    }
}

impl Unpack for BlockQ4_0 {
    fn unpack(&self, q: &mut [u8]) -> (f32, f32) {
        nibbles(&self.qs, 8, q);
        (self.d.to_f32(), 0.0)
    }
}

impl Unpack for BlockQ4_1 {
    fn unpack(&self, q: &mut [u8]) -> (f32, f32) {
        nibbles(&self.qs, 0, q);
        (self.d.to_f32(), self.m.to_f32())
    }
}

impl Unpack for BlockQ5_0 {
    fn unpack(&self, q: &mut [u8]) -> (f32, f32) {
        with_fifth_bits(self.qh, &self.qs, 16, q);
        (self.d.to_f32(), 0.0)
    }
}

impl Unpack for BlockQ5_1 {
    fn unpack(&self, q: &mut [u8]) -> (f32, f32) {
        with_fifth_bits(self.qh, &self.qs, 0, q);
        (self.d.to_f32(), self.m.to_f32())
    }
}

impl Unpack for BlockQ8_0 {
    fn unpack(&self, q: &mut [u8]) -> (f32, f32) {
        for (o, &v) in q.iter_mut().zip(&self.qs) {
            *o = v as u8;
        }
        (self.d.to_f32(), 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::{dequantize_row, quantize_row};
    use crate::dispatch::{available_isas, dot_kernel_for};

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    const TYPES: [GgmlType; 5] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ];

    /// Unpacking reproduces dequantization (up to f32 rounding of scale·q + min).
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
            let Some(g) = Gemm::new(ty, crate::active_isa()) else {
                return; // no GEMM tier on this CPU
            };
            let (mut q, mut sc, mut mn) = (vec![0u8; n], vec![0f32; n / 32], vec![0f32; n / 32]);
            (g.unpack)(&bytes, &mut q, &mut sc, &mut mn);
            for i in 0..n {
                let qv = if g.signed {
                    q[i] as i8 as f32
                } else {
                    q[i] as f32
                };
                let v = sc[i / 32] * qv + mn[i / 32];
                let tol = 1e-5 * (1.0 + deq[i].abs());
                assert!((v - deq[i]).abs() <= tol, "{ty} {i}: {v} vs {}", deq[i]);
            }
        }
    }

    /// The GEMM gives bit for bit what the same tier's dot path gives, for every tile-edge
    /// shape, and stays near the scalar reference and the exact product.
    #[test]
    fn gemm_equals_dot_path_bit_for_bit() {
        let mut seed = 11;
        for ty in TYPES {
            for (n_rows, n_cols, m) in [
                (1, 32, 1),
                (3, 576, 5),
                (8, 64, 4),
                (7, 1536, 9),
                (33, 96, 6),
            ] {
                let rb = ty.row_bytes(n_cols).unwrap();
                let w: Vec<f32> = (0..n_rows * n_cols).map(|_| lcg(&mut seed)).collect();
                let x: Vec<f32> = (0..m * n_cols).map(|_| 3.0 * lcg(&mut seed)).collect();
                let mut bytes = vec![0u8; n_rows * rb];
                for (wr, br) in w.chunks(n_cols).zip(bytes.chunks_mut(rb)) {
                    quantize_row(ty, wr, br, None);
                }
                let mut acts = GemmActs::default();
                acts.quantize(&x, n_cols);
                let scalar = dot_kernel_for(ty, Isa::Scalar).unwrap();
                let mut a = Vec::new();
                crate::matmul::quantize_rows(&scalar, &x, n_cols, &mut a);
                let mut reference = vec![0f32; m * n_rows];
                crate::matmul::matmul(&scalar, &bytes, n_rows, n_cols, &a, m, &mut reference);
                for isa in available_isas() {
                    let Some(g) = Gemm::new(ty, isa) else {
                        continue;
                    };
                    let k = dot_kernel_for(ty, isa).unwrap();
                    let mut dots = vec![0f32; m * n_rows];
                    crate::matmul::matmul(&k, &bytes, n_rows, n_cols, &a, m, &mut dots);
                    let mut got = vec![0f32; m * n_rows];
                    g.matmul(&bytes, n_rows, n_cols, &acts, &mut got);
                    for (i, ((g, d), r)) in got.iter().zip(&dots).zip(&reference).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            d.to_bits(),
                            "{ty} {isa} {n_rows}x{n_cols} m={m} [{i}]: {g} vs {d}"
                        );
                        assert!(
                            (g - r).abs() <= 1e-4 * (1.0 + r.abs()),
                            "{ty} {isa}: {g} vs scalar {r}"
                        );
                    }
                }
            }
        }
    }
}
