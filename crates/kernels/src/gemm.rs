//! Prompt-sized matrix products (`m` activation rows at once) for the 32-element block
//! types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): each weight row is unpacked once per call to its
//! integer codes, then a micro-kernel multiplies a tile of unpacked weight rows with a tile
//! of activation rows, reusing every load across the tile. The per-row dot path
//! ([`crate::matmul`]) re-decodes each weight block for every activation row, which is what
//! decode (m = 1) wants and a prompt does not.
//!
//! Each product is computed with exactly the operations, in the same order, of the tier's
//! dot kernel (same codes, same `d_w·d_a` products, one FMA chain per output, the same final
//! reduction, the min term summed block by block; for K-quants the same integer lane sums), so a token's logits do not
//! depend on how many rows share its batch: batched and single-sequence generation, and
//! prompts resumed from a cached prefix, agree bit for bit. Tiers without such a kernel (the
//! scalar reference, NEON) and the other types use the dot path.

use crate::blocks::{
    get_scale_min_k4, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0,
    QuantBlock,
};
use crate::dispatch::Isa;
use crate::pool::{chunks, columns, ThreadPool, TASKS_PER_THREAD};
use crate::repack::{PackFn, PackKind, Packed, PackedGroup, LANES, TILE_T32, TILE_TK};
use crate::types::GgmlType;

/// Below this many activation rows the per-row dot path is faster: unpacking a weight row
/// costs about as much as a handful of dot products with it. Results are the same either way.
pub const MIN_ROWS: usize = 6;

/// Weight rows per micro-kernel tile.
pub const TILE_R: usize = 2;
/// Activation rows per micro-kernel tile.
pub const TILE_T: usize = 4;

/// Activation rows quantized for [`Gemm::matmul`], as ggml's Q8_0/Q8_1 blocks quantize them
/// (the same codes, scales and sums), in [`ActBlocks`] of [`ACT_ROWS`] rows: rows past `m` are
/// zero up to the next multiple.
#[derive(Default, Debug, Clone)]
pub struct GemmActs {
    n_cols: usize,
    m: usize,
    /// Per group of [`ACT_ROWS`] rows, its `n_cols/32` blocks in order.
    blocks: Vec<ActBlocks>,
}

/// Activation rows per [`ActBlocks`]: the VNNI tile's rows.
pub(crate) const ACT_ROWS: usize = TILE_T32;

/// One 32-element block of [`ACT_ROWS`] activation rows, by field: a tile reaches every row's
/// codes and scales at fixed offsets from one address (eight row pointers were more than the
/// registers could hold, and the spilled row's `vpdpbusd` chain ran alone at the end).
#[derive(Default, Debug, Clone, Copy)]
#[repr(C, align(32))]
pub(crate) struct ActBlocks {
    /// Codes in [-127, 127].
    pub q: [[i8; 32]; ACT_ROWS],
    /// Block scales, rounded to f16 as the blocks store them.
    pub d: [f32; ACT_ROWS],
    /// Block sums `f16(d·Σq)` (Q8_1's `s`, for the min term of Q4_1/Q5_1).
    pub s: [f32; ACT_ROWS],
    /// `−128·Σq`: what a kernel that multiplies weight codes biased by +128 (the signed
    /// types' unsigned `vpdpbusd` operand) adds to take the bias back out.
    pub unbias: [i32; ACT_ROWS],
}

impl GemmActs {
    /// Quantize the rows of `x` (`n_cols` values each, `n_cols` a multiple of 32), reusing the
    /// buffers, in parallel over groups of rows.
    pub fn quantize(&mut self, pool: &ThreadPool, x: &[f32], n_cols: usize) {
        assert!(
            n_cols % 32 == 0 && (n_cols == 0 || x.len() % n_cols == 0),
            "gemm activations: {} values are not rows of {n_cols} (a multiple of 32)",
            x.len()
        );
        let m = x.len().checked_div(n_cols).unwrap_or(0);
        let nb = n_cols / 32;
        self.n_cols = n_cols;
        self.m = m;
        self.blocks
            .resize(m.div_ceil(ACT_ROWS) * nb, ActBlocks::default());
        if n_cols == 0 {
            return;
        }
        // The active tier's Q8_1 quantizer (bit-identical to the reference on every tier, and
        // vectorized), a few blocks at a time through a buffer.
        let k = crate::dispatch::dot_kernel_for(GgmlType::Q4_1, crate::active_isa())
            .expect("every tier quantizes Q8_1");
        const CHUNK: usize = 8;
        pool.split(chunks(&mut self.blocks, nb), |groups, blocks| {
            let mut buf = [0u8; 36 * CHUNK];
            for (g, blocks) in groups.zip(blocks.chunks_exact_mut(nb)) {
                for lane in 0..ACT_ROWS {
                    let t = ACT_ROWS * g + lane;
                    if t >= m {
                        for blk in blocks.iter_mut() {
                            blk.q[lane] = [0; 32];
                            (blk.d[lane], blk.s[lane], blk.unbias[lane]) = (0.0, 0.0, 0);
                        }
                        continue;
                    }
                    let x = &x[t * n_cols..(t + 1) * n_cols];
                    for (xc, out) in x.chunks(32 * CHUNK).zip(blocks.chunks_mut(CHUNK)) {
                        let bytes = &mut buf[..36 * (xc.len() / 32)];
                        k.quantize_act(xc, bytes);
                        for (src, blk) in bytes.chunks_exact(36).zip(out) {
                            let f16_at =
                                |o: usize| half::f16::from_le_bytes([src[o], src[o + 1]]).to_f32();
                            // Whole-block copy and sum (a byte-at-a-time loop stalled reading
                            // back the quantizer's vector stores).
                            let codes: &[u8; 32] = src[4..].try_into().expect("32 codes");
                            let q = codes.map(|v| v as i8);
                            blk.q[lane] = q;
                            blk.d[lane] = f16_at(0);
                            blk.s[lane] = f16_at(2);
                            blk.unbias[lane] = -128 * q.iter().map(|&v| i32::from(v)).sum::<i32>();
                        }
                    }
                }
            }
        });
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    /// The blocks of the [`ACT_ROWS`] rows from `t` (a multiple of [`ACT_ROWS`]).
    #[inline]
    fn group(&self, t: usize) -> &[ActBlocks] {
        debug_assert_eq!(t % ACT_ROWS, 0);
        let nb = self.n_cols / 32;
        &self.blocks[t / ACT_ROWS * nb..(t / ACT_ROWS + 1) * nb]
    }

    #[inline]
    fn row(&self, t: usize) -> ActRow<'_> {
        ActRow {
            blocks: self.group(t - t % ACT_ROWS),
            lane: t % ACT_ROWS,
        }
    }
}

/// One quantized activation row: lane `lane` of its group's blocks.
#[derive(Clone, Copy)]
pub(crate) struct ActRow<'a> {
    blocks: &'a [ActBlocks],
    lane: usize,
}

impl ActRow<'_> {
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    #[inline(always)]
    pub fn q(&self, b: usize) -> &[i8; 32] {
        &self.blocks[b].q[self.lane]
    }

    #[inline(always)]
    pub fn d(&self, b: usize) -> f32 {
        self.blocks[b].d[self.lane]
    }

    #[inline(always)]
    pub fn s(&self, b: usize) -> f32 {
        self.blocks[b].s[self.lane]
    }
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
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    /// 32-element blocks against [`GemmActs`].
    Blocks32 {
        signed: bool,
        /// Whether the type has a min term (Q4_1, Q5_1).
        has_mins: bool,
        unpack: UnpackFn,
        tile: TileFn,
    },
    /// K-quant super-blocks against the dot path's Q8_K activation rows.
    SuperBlocks { kind: KQuant, tile: KTileFn },
    /// 32-element blocks against [`GemmActs`], weight rows repacked 16 at a time
    /// ([`crate::repack`]), one per vector lane.
    Lanes32 {
        pack: PackKind,
        /// The tier's packer of whole groups.
        packer: PackFn,
        /// Whether the type has a min term (Q4_1, Q5_1).
        mins: bool,
        tile: Lane32TileFn,
    },
    /// K-quant super-blocks against Q8_K rows, repacked as [`Kind::Lanes32`].
    LanesK {
        pack: PackKind,
        packer: PackFn,
        tile: LaneKTileFn,
    },
}

/// A [`Kind::Lanes32`] tile: one packed group of [`LANES`] weight rows × [`TILE_T32`]
/// activation rows, `out[t][r]` (min term included).
pub(crate) type Lane32TileFn =
    unsafe fn(mins: bool, w: &PackedGroup<'_>, a: &[ActBlocks], out: &mut [[f32; LANES]; TILE_T32]);

/// A [`Kind::LanesK`] tile: one packed group × [`TILE_TK`] Q8_K activation rows.
pub(crate) type LaneKTileFn = unsafe fn(
    pack: PackKind,
    w: &PackedGroup<'_>,
    a: &[&[u8]; TILE_TK],
    out: &mut [[f32; LANES]; TILE_TK],
);

/// Which activations a [`Gemm`] takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmInput {
    /// [`GemmActs`], for [`Gemm::matmul`].
    Blocks32,
    /// The weight type's own dot-kernel activation rows (Q8_K), for [`Gemm::matmul_q8k`].
    Q8K,
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
        if !isa.has_avx2_set() || !isa.is_available() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 {
            use crate::simd::x86_avx512::{pack_group, tile_blocks32, tile_k};
            let lanes32 = |pack, mins| Kind::Lanes32 {
                pack,
                packer: pack_group,
                mins,
                tile: tile_blocks32,
            };
            let lanes_k = |pack| Kind::LanesK {
                pack,
                packer: pack_group,
                tile: tile_k,
            };
            let kind = match weight {
                T::Q4_0 => lanes32(PackKind::Q4_0, false),
                T::Q4_1 => lanes32(PackKind::Q4_1, true),
                T::Q5_0 => lanes32(PackKind::Q5_0, false),
                T::Q5_1 => lanes32(PackKind::Q5_1, true),
                T::Q8_0 => lanes32(PackKind::Q8_0, false),
                T::Q4_K => lanes_k(PackKind::Q4K),
                T::Q5_K => lanes_k(PackKind::Q5K),
                T::Q6_K => lanes_k(PackKind::Q6K),
                _ => return None,
            };
            return Some(Gemm { weight, isa, kind });
        }
        #[cfg(target_arch = "x86_64")]
        let (tile, tile_k): (TileFn, KTileFn) = {
            use crate::simd::x86_avx2 as avx2;
            if isa == Isa::AvxVnni {
                (avx2::gemm_tile_vnni, avx2::gemm_tile_k_vnni)
            } else {
                (avx2::gemm_tile, avx2::gemm_tile_k)
            }
        };
        #[cfg(target_arch = "x86_64")]
        let kind = match weight {
            T::Q4_K => Kind::SuperBlocks {
                kind: KQuant::Q4K,
                tile: tile_k,
            },
            T::Q6_K => Kind::SuperBlocks {
                kind: KQuant::Q6K,
                tile: tile_k,
            },
            _ => {
                let (signed, unpack): (bool, UnpackFn) = match weight {
                    T::Q4_0 => (true, unpack_row::<BlockQ4_0>),
                    T::Q4_1 => (false, unpack_row::<BlockQ4_1>),
                    T::Q5_0 => (true, unpack_row::<BlockQ5_0>),
                    T::Q5_1 => (false, unpack_row::<BlockQ5_1>),
                    T::Q8_0 => (true, unpack_row::<BlockQ8_0>),
                    _ => return None,
                };
                Kind::Blocks32 {
                    signed,
                    has_mins: !signed,
                    unpack,
                    tile,
                }
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let kind: Kind = return None;
        Some(Gemm { weight, isa, kind })
    }

    /// The activations this GEMM takes.
    pub fn input(&self) -> GemmInput {
        match self.kind {
            Kind::Blocks32 { .. } | Kind::Lanes32 { .. } => GemmInput::Blocks32,
            Kind::SuperBlocks { .. } | Kind::LanesK { .. } => GemmInput::Q8K,
        }
    }

    /// `y[t·n_rows + r] = Σ_c w[r, c]·a[t, c]` for every activation row `t` of `a` and weight
    /// row `r` of `w` (`n_rows` rows of `n_cols` values of the weight type), in parallel over
    /// weight rows on `pool`. Panics if a length disagrees.
    pub fn matmul(
        &self,
        pool: &ThreadPool,
        w: &[u8],
        n_rows: usize,
        n_cols: usize,
        a: &GemmActs,
        y: &mut [f32],
    ) {
        if let Kind::Lanes32 {
            pack,
            packer,
            mins,
            tile,
        } = self.kind
        {
            assert_eq!(a.n_cols, n_cols, "gemm: activation width");
            let Some(w_row) = self.check(w, n_rows, n_cols, a.m, y) else {
                return;
            };
            let unpack = |ws: &[u8]| Packed::new(pack, ws, w_row, n_cols, Some(packer));
            let run_tile = |u: &Packed, rs: [usize; LANES], ts: [usize; TILE_T32], out: &mut _| {
                // The tile's rows are a whole group: `tiled` starts tiles at multiples of T.
                let acts = a.group(ts[0]);
                // SAFETY: `Gemm::new` chose `tile` for a tier this CPU runs; the kernel bounds
                // its reads by the group's and the rows' slices (n_cols/32 blocks each).
                unsafe { tile(mins, &u.group(rs[0] / LANES), acts, out) };
            };
            return tiled(pool, w, w_row, a.m, y, unpack, run_tile);
        }
        let Kind::Blocks32 {
            signed,
            has_mins,
            unpack,
            tile,
        } = self.kind
        else {
            panic!("gemm {}: takes Q8_K activations", self.weight);
        };
        assert_eq!(a.n_cols, n_cols, "gemm: activation width");
        let Some(w_row) = self.check(w, n_rows, n_cols, a.m, y) else {
            return;
        };
        let nb = n_cols / 32;
        let unpack_rows = |ws: &[u8]| {
            let rows = ws.len() / w_row;
            let mut u = Unpacked32 {
                q: vec![0u8; rows * n_cols],
                scales: vec![0f32; rows * nb],
                mins: vec![0f32; rows * nb],
            };
            for (r, wr) in ws.chunks_exact(w_row).enumerate() {
                unpack(
                    wr,
                    &mut u.q[r * n_cols..(r + 1) * n_cols],
                    &mut u.scales[r * nb..(r + 1) * nb],
                    &mut u.mins[r * nb..(r + 1) * nb],
                );
            }
            u
        };
        let run_tile =
            |u: &Unpacked32, rs: [usize; TILE_R], ts: [usize; TILE_T], tok: &mut TokTile| {
                let out = &mut Tile::default();
                let ws = rs.map(|r| WeightRow {
                    q: &u.q[r * n_cols..(r + 1) * n_cols],
                    scales: &u.scales[r * nb..(r + 1) * nb],
                    mins: &u.mins[r * nb..(r + 1) * nb],
                });
                let acts = ts.map(|t| a.row(t));
                // SAFETY: `Gemm::new` chose `tile` for a tier this CPU runs; the kernel bounds its
                // reads by the row slices, which all hold n_cols codes (n_cols/32 blocks).
                unsafe { tile(signed, &ws, &acts, out) };
                if has_mins {
                    for (o, wr) in out.iter_mut().zip(&ws) {
                        for (o, ar) in o.iter_mut().zip(&acts) {
                            *o += min_term(wr.mins, ar);
                        }
                    }
                }
                transpose(out, tok);
            };
        tiled(pool, w, w_row, a.m, y, unpack_rows, run_tile);
    }

    /// As [`Self::matmul`] for K-quant weights, with `a` holding `m` rows of the weight
    /// type's dot-kernel activations (Q8_K blocks, from [`crate::matmul::quantize_rows`]).
    pub fn matmul_q8k(
        &self,
        pool: &ThreadPool,
        w: &[u8],
        n_rows: usize,
        n_cols: usize,
        a: &[u8],
        m: usize,
        y: &mut [f32],
    ) {
        let a_row = GgmlType::Q8_K
            .row_bytes(n_cols)
            .unwrap_or_else(|| panic!("gemm: {n_cols} columns are not whole Q8_K blocks"));
        assert_eq!(
            Some(a.len()),
            m.checked_mul(a_row),
            "gemm: activation bytes"
        );
        if let Kind::LanesK { pack, packer, tile } = self.kind {
            let Some(w_row) = self.check(w, n_rows, n_cols, m, y) else {
                return;
            };
            let unpack = |ws: &[u8]| Packed::new(pack, ws, w_row, n_cols, Some(packer));
            let run_tile = |u: &Packed, rs: [usize; LANES], ts: [usize; TILE_TK], out: &mut _| {
                let acts = ts.map(|t| &a[t * a_row..(t + 1) * a_row]);
                // SAFETY: as in `matmul`; every slice holds n_cols/256 super-blocks.
                unsafe { tile(pack, &u.group(rs[0] / LANES), &acts, out) };
            };
            return tiled(pool, w, w_row, m, y, unpack, run_tile);
        }
        let Kind::SuperBlocks { kind, tile } = self.kind else {
            panic!("gemm {}: takes 32-element block activations", self.weight);
        };
        let Some(w_row) = self.check(w, n_rows, n_cols, m, y) else {
            return;
        };
        let nsb = n_cols / 256;
        let unpack_rows = |ws: &[u8]| {
            let rows = ws.len() / w_row;
            let mut u = UnpackedK {
                codes: vec![0u8; rows * n_cols],
                scales: vec![0i16; rows * n_cols / 2],
                aux: vec![0i16; rows * nsb * 16],
                d: vec![0f32; rows * nsb],
                dmin: vec![0f32; rows * nsb],
            };
            for (r, wr) in ws.chunks_exact(w_row).enumerate() {
                let row = u.row_mut(r, n_cols);
                match kind {
                    KQuant::Q4K => unpack_q4k(wr, row),
                    KQuant::Q6K => unpack_q6k(wr, row),
                }
            }
            u
        };
        let run_tile =
            |u: &UnpackedK, rs: [usize; TILE_R], ts: [usize; TILE_T], tok: &mut TokTile| {
                let ws = rs.map(|r| u.row(r, n_cols));
                let acts = ts.map(|t| &a[t * a_row..(t + 1) * a_row]);
                let out = &mut Tile::default();
                // SAFETY: as in `matmul`; every slice holds n_cols/256 super-blocks.
                unsafe { tile(kind, &ws, &acts, out) };
                transpose(out, tok);
            };
        tiled(pool, w, w_row, m, y, unpack_rows, run_tile);
    }

    /// Shared shape checks: the weight row size, or `None` when there is nothing to compute
    /// (after zeroing `y` for zero-width rows).
    fn check(
        &self,
        w: &[u8],
        n_rows: usize,
        n_cols: usize,
        m: usize,
        y: &mut [f32],
    ) -> Option<usize> {
        let w_row = self
            .weight
            .row_bytes(n_cols)
            .unwrap_or_else(|| panic!("gemm: {n_cols} columns do not fill {} rows", self.weight));
        assert_eq!(
            Some(w.len()),
            n_rows.checked_mul(w_row),
            "gemm: weight bytes"
        );
        assert_eq!(Some(y.len()), m.checked_mul(n_rows), "gemm: output length");
        if y.is_empty() {
            return None;
        }
        if n_cols == 0 {
            y.fill(0.0);
            return None;
        }
        Some(w_row)
    }
}

/// One tile's outputs, `[weight row][activation row]`.
type Tile = [[f32; TILE_T]; TILE_R];
/// The same, `[activation row][weight row]`, as [`tiled`] takes them.
type TokTile = [[f32; TILE_R]; TILE_T];

fn transpose(t: &Tile, out: &mut TokTile) {
    for (r, row) in t.iter().enumerate() {
        for (o, &v) in out.iter_mut().zip(row) {
            o[r] = v;
        }
    }
}

/// Weight rows a thread unpacks at a time: they stay in cache while every activation row is
/// multiplied with them.
const ROWS_PER_PASS: usize = 32;

/// Split the output grid (activation rows × weight rows of `w`) into tasks, each a run of
/// weight rows (in units of `R`, the tile's weight rows) for a block of activation rows: a
/// task unpacks [`ROWS_PER_PASS`] of its rows at a time with `unpack`, then runs `tile` over
/// those rows × its activation rows, `R × T` at a time, and writes those outputs of `y`. The
/// activation rows are cut into blocks (of whole tiles) only where the weight rows alone
/// would make tasks of fewer than [`ROWS_PER_PASS`] rows (small matrices, many threads): each
/// block unpacks the rows again, little beside its products. Tiles get row indices (local to
/// the unpacked rows, and activation rows); partial tiles repeat their last index and those
/// results are dropped.
fn tiled<U, const R: usize, const T: usize>(
    pool: &ThreadPool,
    w: &[u8],
    w_row: usize,
    m: usize,
    y: &mut [f32],
    unpack: impl Fn(&[u8]) -> U + Sync,
    tile: impl Fn(&U, [usize; R], [usize; T], &mut [[f32; R]; T]) + Sync,
) {
    const { assert!(ROWS_PER_PASS % R == 0, "a pass holds whole tiles") };
    let n_rows = w.len() / w_row;
    let tasks = TASKS_PER_THREAD * pool.n_threads();
    let blocks = (tasks * ROWS_PER_PASS)
        .div_ceil(n_rows)
        .clamp(1, m.div_ceil(T));
    let block = m.div_ceil(blocks).next_multiple_of(T);
    let parts: Vec<_> = y
        .chunks_mut(block * n_rows)
        .map(|yb| columns(yb, n_rows, R))
        .collect();
    pool.split_parts(&parts, |b, _, mut out| {
        let (cols, t_base) = (out.cols(), b * block);
        let mb = block.min(m - t_base);
        for r0 in cols.clone().step_by(ROWS_PER_PASS) {
            let r1 = cols.end.min(r0 + ROWS_PER_PASS);
            let (rows, c0) = (r1 - r0, r0 - cols.start);
            let u = unpack(&w[r0 * w_row..r1 * w_row]);
            let mut t = [[0f32; R]; T];
            for t0 in (0..mb).step_by(T) {
                let nt = T.min(mb - t0);
                let ts = std::array::from_fn(|j| t_base + t0 + j.min(nt - 1));
                for i0 in (0..rows).step_by(R) {
                    let nr = R.min(rows - i0);
                    tile(&u, std::array::from_fn(|i| i0 + i.min(nr - 1)), ts, &mut t);
                    for (j, tj) in t[..nt].iter().enumerate() {
                        let dst = &mut out.row(t0 + j)[c0 + i0..c0 + i0 + nr];
                        // A whole tile row as one fixed-size copy (a `memmove` call otherwise).
                        match <&mut [f32; R]>::try_from(&mut *dst) {
                            Ok(d) => *d = *tj,
                            Err(_) => dst.copy_from_slice(&tj[..nr]),
                        }
                    }
                }
            }
        }
    });
}

/// Unpacked 32-element-block weight rows.
struct Unpacked32 {
    q: Vec<u8>,
    scales: Vec<f32>,
    mins: Vec<f32>,
}

/// The K-quant types with a GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KQuant {
    Q4K,
    Q6K,
}

/// The K-quant tile: [`TILE_R`] unpacked weight rows × [`TILE_T`] Q8_K activation rows.
pub(crate) type KTileFn =
    unsafe fn(kind: KQuant, w: &[KWeightRow<'_>; TILE_R], a: &[&[u8]; TILE_T], out: &mut Tile);

/// Unpacked K-quant weight rows: per row, codes in element order (unsigned: Q4_K 0..=15,
/// Q6_K 0..=63); per 32 codes the 16 i16 factors `madd` applies to their pair sums (the
/// sub-block scale; for Q6_K the two 16-group scales, one per 128-bit lane); per super-block
/// 16 i16 (Q4_K: each min twice, against the Q8_K group sums; Q6_K: the 16 scales, for the
/// −32 offset) and the f32 `d` and `dmin`.
struct UnpackedK {
    codes: Vec<u8>,
    scales: Vec<i16>,
    aux: Vec<i16>,
    d: Vec<f32>,
    dmin: Vec<f32>,
}

/// One unpacked K-quant weight row.
#[derive(Clone, Copy)]
pub(crate) struct KWeightRow<'a> {
    pub codes: &'a [u8],
    pub scales: &'a [i16],
    pub aux: &'a [i16],
    pub d: &'a [f32],
    pub dmin: &'a [f32],
}

struct KWeightRowMut<'a> {
    codes: &'a mut [u8],
    scales: &'a mut [i16],
    aux: &'a mut [i16],
    d: &'a mut [f32],
    dmin: &'a mut [f32],
}

impl UnpackedK {
    fn row(&self, r: usize, n_cols: usize) -> KWeightRow<'_> {
        let nsb = n_cols / 256;
        KWeightRow {
            codes: &self.codes[r * n_cols..(r + 1) * n_cols],
            scales: &self.scales[r * n_cols / 2..(r + 1) * n_cols / 2],
            aux: &self.aux[r * nsb * 16..(r + 1) * nsb * 16],
            d: &self.d[r * nsb..(r + 1) * nsb],
            dmin: &self.dmin[r * nsb..(r + 1) * nsb],
        }
    }

    fn row_mut(&mut self, r: usize, n_cols: usize) -> KWeightRowMut<'_> {
        let nsb = n_cols / 256;
        KWeightRowMut {
            codes: &mut self.codes[r * n_cols..(r + 1) * n_cols],
            scales: &mut self.scales[r * n_cols / 2..(r + 1) * n_cols / 2],
            aux: &mut self.aux[r * nsb * 16..(r + 1) * nsb * 16],
            d: &mut self.d[r * nsb..(r + 1) * nsb],
            dmin: &mut self.dmin[r * nsb..(r + 1) * nsb],
        }
    }
}

fn unpack_q4k(row: &[u8], u: KWeightRowMut<'_>) {
    for (i, b) in row.chunks_exact(BlockQ4K::BYTES).enumerate() {
        let x = BlockQ4K::read(b);
        u.codes[256 * i..256 * (i + 1)].copy_from_slice(&x.codes());
        u.d[i] = x.d.to_f32();
        u.dmin[i] = x.dmin.to_f32();
        for j in 0..8 {
            let (sc, mn) = get_scale_min_k4(j, &x.scales);
            u.scales[128 * i + 16 * j..128 * i + 16 * (j + 1)].fill(sc as i16);
            u.aux[16 * i + 2 * j..16 * i + 2 * j + 2].fill(mn as i16);
        }
    }
}

fn unpack_q6k(row: &[u8], u: KWeightRowMut<'_>) {
    for (i, b) in row.chunks_exact(BlockQ6K::BYTES).enumerate() {
        let x = BlockQ6K::read(b);
        for (o, v) in u.codes[256 * i..256 * (i + 1)].iter_mut().zip(x.values()) {
            *o = (v as i32 + 32) as u8;
        }
        u.d[i] = x.d.to_f32();
        for (g, &sc) in x.scales.iter().enumerate() {
            u.aux[16 * i + g] = sc as i16;
            // Group g is the low (even g) or high (odd g) 128-bit lane of chunk g/2.
            let at = 128 * i + 16 * (g / 2) + 8 * (g % 2);
            u.scales[at..at + 8].fill(sc as i16);
        }
    }
}

/// `Σ_b m_b·s_b` block by block from zero, as the dot kernels accumulate it.
fn min_term(mins: &[f32], a: &ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for (b, m) in mins.iter().enumerate() {
        acc += m * a.s(b);
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
    use crate::test_rng::lcg;

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
            // The AVX2 tier's unpacking (`crate::repack` has its own test).
            let Some(g) = Gemm::new(ty, Isa::Avx2) else {
                return; // no AVX2 on this CPU
            };
            let Kind::Blocks32 { signed, unpack, .. } = g.kind else {
                unreachable!("{ty} is a 32-element block type")
            };
            let (mut q, mut sc, mut mn) = (vec![0u8; n], vec![0f32; n / 32], vec![0f32; n / 32]);
            unpack(&bytes, &mut q, &mut sc, &mut mn);
            for i in 0..n {
                let qv = if signed {
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
        let pool = ThreadPool::new(3).unwrap();
        let mut seed = 11;
        // One set of activations, requantized for every shape: reuse must not leak rows.
        let mut acts = GemmActs::default();
        for ty in TYPES {
            for (n_rows, n_cols, m) in [
                (1, 32, 1),
                (3, 576, 5),
                (8, 64, 4),
                (7, 1536, 9),
                (33, 96, 6),
                (17, 512, 8),
                (40, 1568, 11),
            ] {
                let rb = ty.row_bytes(n_cols).unwrap();
                let w: Vec<f32> = (0..n_rows * n_cols).map(|_| lcg(&mut seed)).collect();
                let x: Vec<f32> = (0..m * n_cols).map(|_| 3.0 * lcg(&mut seed)).collect();
                let mut bytes = vec![0u8; n_rows * rb];
                for (wr, br) in w.chunks(n_cols).zip(bytes.chunks_mut(rb)) {
                    quantize_row(ty, wr, br, None);
                }
                acts.quantize(&pool, &x, n_cols);
                let scalar = dot_kernel_for(ty, Isa::Scalar).unwrap();
                let mut a = Vec::new();
                crate::matmul::quantize_rows(&pool, &scalar, &x, n_cols, &mut a);
                let mut reference = vec![0f32; m * n_rows];
                crate::matmul::matmul(
                    &pool,
                    &scalar,
                    &bytes,
                    n_rows,
                    n_cols,
                    &a,
                    m,
                    &mut reference,
                );
                for isa in available_isas() {
                    let Some(g) = Gemm::new(ty, isa) else {
                        continue;
                    };
                    let lanes = matches!(g.kind, Kind::Lanes32 { .. });
                    assert_eq!(lanes, isa == Isa::Avx512, "{ty} {isa}");
                    let k = dot_kernel_for(ty, isa).unwrap();
                    let mut dots = vec![0f32; m * n_rows];
                    crate::matmul::matmul(&pool, &k, &bytes, n_rows, n_cols, &a, m, &mut dots);
                    let mut got = vec![0f32; m * n_rows];
                    g.matmul(&pool, &bytes, n_rows, n_cols, &acts, &mut got);
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

    /// The K-quant GEMM gives bit for bit what the dot path gives on the same Q8_K rows.
    #[test]
    fn k_gemm_equals_dot_path_bit_for_bit() {
        let pool = ThreadPool::new(3).unwrap();
        let mut seed = 3;
        for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
            for (n_rows, n_cols, m) in [
                (1, 256, 1),
                (3, 512, 5),
                (8, 256, 4),
                (7, 1536, 9),
                (37, 768, 6),
                (20, 256, 35),
            ] {
                let rb = ty.row_bytes(n_cols).unwrap();
                let w: Vec<f32> = (0..n_rows * n_cols).map(|_| lcg(&mut seed)).collect();
                let x: Vec<f32> = (0..m * n_cols).map(|_| 3.0 * lcg(&mut seed)).collect();
                let mut bytes = vec![0u8; n_rows * rb];
                for (wr, br) in w.chunks(n_cols).zip(bytes.chunks_mut(rb)) {
                    quantize_row(ty, wr, br, None);
                }
                assert_k_gemm_equals_dot_path(&pool, ty, &bytes, n_rows, n_cols, &x, m);
            }
        }
    }

    /// Every K-quant GEMM of `ty` on this CPU against the dot path, bit for bit, on the weight
    /// rows `bytes` and the activation rows `x`.
    fn assert_k_gemm_equals_dot_path(
        pool: &ThreadPool,
        ty: GgmlType,
        bytes: &[u8],
        n_rows: usize,
        n_cols: usize,
        x: &[f32],
        m: usize,
    ) {
        for isa in available_isas() {
            let Some(g) = Gemm::new(ty, isa) else {
                continue;
            };
            assert_eq!(g.input(), GemmInput::Q8K);
            let lanes = matches!(g.kind, Kind::LanesK { .. });
            assert_eq!(lanes, isa == Isa::Avx512, "{ty} {isa}");
            let k = dot_kernel_for(ty, isa).unwrap();
            let mut a = Vec::new();
            crate::matmul::quantize_rows(pool, &k, x, n_cols, &mut a);
            let mut dots = vec![0f32; m * n_rows];
            crate::matmul::matmul(pool, &k, bytes, n_rows, n_cols, &a, m, &mut dots);
            let mut got = vec![0f32; m * n_rows];
            g.matmul_q8k(pool, bytes, n_rows, n_cols, &a, m, &mut got);
            for (i, (g, d)) in got.iter().zip(&dots).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    d.to_bits(),
                    "{ty} {isa} {n_rows}x{n_cols} m={m} [{i}]: {g} vs {d}"
                );
            }
        }
    }

    /// The largest codes of each K-quant against the largest activation codes (Q8_K ±127 and
    /// −128): every integer sum of the tiles at its bound, and still exact.
    #[test]
    fn k_gemm_is_exact_at_the_largest_codes() {
        use crate::types::QK_K;
        let pool = ThreadPool::new(2).unwrap();
        let (n_rows, n_cols, m) = (17, 2 * QK_K, 9);
        let one = half::f16::from_f32(1.0).to_bits().to_le_bytes();
        for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
            let rb = ty.row_bytes(n_cols).unwrap();
            // Every byte 0xFF gives the top code everywhere (Q4_K/Q5_K scales and mins 63,
            // Q6_K scales −1); then d = 1 and a zero dmin, or Q6_K scales of ±127.
            let mut bytes = vec![0xFFu8; n_rows * rb];
            for (r, block) in bytes.chunks_exact_mut(rb / (n_cols / QK_K)).enumerate() {
                match ty {
                    GgmlType::Q6_K => {
                        let n = block.len();
                        for (j, s) in block[n - 18..n - 2].iter_mut().enumerate() {
                            *s = if (r + j) % 2 == 0 { 127 } else { 0x81 };
                        }
                        block[n - 2..].copy_from_slice(&one);
                    }
                    _ => {
                        block[..2].copy_from_slice(&one);
                        block[2..4].fill(0);
                    }
                }
            }
            // Rows of one value (all codes −128 after Q8_K's rounding), of ±max, and mixed.
            let x: Vec<f32> = (0..m * n_cols)
                .map(|i| match (i / n_cols) % 3 {
                    0 => 2.5,
                    1 => {
                        if i % 2 == 0 {
                            3.0
                        } else {
                            -3.0
                        }
                    }
                    _ => {
                        if i % 7 == 0 {
                            -4.0
                        } else {
                            4.0
                        }
                    }
                })
                .collect();
            assert_k_gemm_equals_dot_path(&pool, ty, &bytes, n_rows, n_cols, &x, m);
        }
    }

    /// Splitting the output grid by activation rows (small matrices, many threads) changes no
    /// bit: the same products on 1, 2 and 16 threads.
    #[test]
    fn gemm_results_do_not_depend_on_the_thread_count() {
        let mut seed = 5;
        let isa = crate::active_isa();
        for ty in [GgmlType::Q4_0, GgmlType::Q4_K] {
            let Some(g) = Gemm::new(ty, isa) else {
                continue;
            };
            let (n_rows, n_cols, m) = (70, 256, 37);
            let rb = ty.row_bytes(n_cols).unwrap();
            let w: Vec<f32> = (0..n_rows * n_cols).map(|_| lcg(&mut seed)).collect();
            let x: Vec<f32> = (0..m * n_cols).map(|_| 3.0 * lcg(&mut seed)).collect();
            let mut bytes = vec![0u8; n_rows * rb];
            for (wr, br) in w.chunks(n_cols).zip(bytes.chunks_mut(rb)) {
                quantize_row(ty, wr, br, None);
            }
            let k = dot_kernel_for(ty, isa).unwrap();
            let mut results = Vec::new();
            for threads in [1, 2, 16] {
                let pool = ThreadPool::new(threads).unwrap();
                let mut got = vec![f32::NAN; m * n_rows];
                if g.input() == GemmInput::Q8K {
                    let mut a = Vec::new();
                    crate::matmul::quantize_rows(&pool, &k, &x, n_cols, &mut a);
                    g.matmul_q8k(&pool, &bytes, n_rows, n_cols, &a, m, &mut got);
                } else {
                    let mut acts = GemmActs::default();
                    acts.quantize(&pool, &x, n_cols);
                    g.matmul(&pool, &bytes, n_rows, n_cols, &acts, &mut got);
                }
                assert!(
                    got.iter().all(|v| v.is_finite()),
                    "{ty}: every output written"
                );
                results.push(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            assert!(results.iter().all(|r| r == &results[0]), "{ty} {isa}");
        }
    }
}
