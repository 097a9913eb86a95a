//! Dot products of the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with Q8_0 / Q8_1
//! activations, 16 blocks per step, then one FMA of 16 lanes, each lane one chain of the
//! parent module's summation order.
//!
//! - Nibble formats: one word permute gathers four blocks' packed codes from two 64-byte
//!   loads, two `vpdpbusd` take their low and high nibbles, and the four vectors of a step
//!   reduce to one i32 per block. The sums stay in a transposed lane order ([`TRANSPOSED`]),
//!   as do the scales and chains, and the chains go back to block order once per row.
//! - Q8_0: two blocks per `vpdpbusd`, the 8 products of a step reduced to block order.
//!
//! The activation row is rearranged once per call ([`Acts`]: codes in the order the kernel
//! reads them, the value offset's correction and the scales per block), so that the weight
//! rows that share it (`dot_rows`, the decode path) only decode their own blocks. Weight bytes
//! are prefetched a little ahead: decode streams them from memory.

use super::*;

/// A 32-element block format.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fmt {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
}

impl Fmt {
    /// Weight block bytes.
    const fn wb(self) -> usize {
        match self {
            Fmt::Q4_0 => 18,
            Fmt::Q4_1 => 20,
            Fmt::Q5_0 => 22,
            Fmt::Q5_1 => 24,
            Fmt::Q8_0 => 34,
        }
    }

    /// Whether the type has a min (`w = d·q + m`) and so pairs with Q8_1.
    const fn mins(self) -> bool {
        matches!(self, Fmt::Q4_1 | Fmt::Q5_1)
    }

    /// Activation block bytes (Q8_0 or Q8_1) and the offset of its codes.
    const fn act(self) -> (usize, usize) {
        if self.mins() {
            (36, 4)
        } else {
            (34, 2)
        }
    }

    /// The offset of the unsigned codes the kernel builds: `value = code − offset` (as a
    /// byte; Q8_0's codes are `q ^ 0x80`, offset 128).
    const fn offset(self) -> u8 {
        match self {
            Fmt::Q4_0 => 8,
            Fmt::Q5_0 => 16,
            Fmt::Q8_0 => 128,
            Fmt::Q4_1 | Fmt::Q5_1 => 0,
        }
    }
}

impl Fmt {
    /// Whether the codes are nibbles (all but Q8_0): such rows are read four blocks at a time
    /// ([`quad_nibbles`]) and their activations kept in the matching order.
    const fn nibbles(self) -> bool {
        !matches!(self, Fmt::Q8_0)
    }

    /// Byte offset of the packed codes (`qs`) in a weight block.
    const fn qs(self) -> usize {
        match self {
            Fmt::Q4_0 => 2,
            Fmt::Q4_1 => 4,
            Fmt::Q5_0 => 6,
            Fmt::Q5_1 => 8,
            Fmt::Q8_0 => 2,
        }
    }
}

/// Word indices for `vpermt2w` that gather the 64 `qs` bytes of four consecutive blocks of
/// format `f` from two windows: the first 64 bytes of the four blocks and the last 64 (four
/// blocks of a nibble format span at most 96 bytes, so every word lies in one of them).
const fn quad_index(f: Fmt) -> [i16; 32] {
    let span = 4 * f.wb();
    let mut idx = [0i16; 32];
    if !f.nibbles() {
        // Q8_0 never reads quads; its (unused) instance must still evaluate.
        return idx;
    }
    let mut k = 0;
    while k < 32 {
        let o = (k / 8) * f.wb() + f.qs() + 2 * (k % 8);
        idx[k] = if o + 2 <= 64 {
            (o / 2) as i16
        } else {
            (32 + (o - (span - 64)) / 2) as i16
        };
        k += 1;
    }
    idx
}

const FMTS: [Fmt; 5] = [Fmt::Q4_0, Fmt::Q4_1, Fmt::Q5_0, Fmt::Q5_1, Fmt::Q8_0];

/// `F` as a format (`F` indexes [`FMTS`]; a const generic cannot be an enum).
const fn fmt<const F: usize>() -> Fmt {
    FMTS[F]
}

/// An activation row of Q8_0 / Q8_1 blocks, rearranged for [`row`]. Every field is padded
/// with zeros to whole groups of 16 blocks.
struct Acts {
    /// Blocks in the row.
    nb: usize,
    /// Codes, 32 per block: for Q8_0 in element order; for the nibble formats, per four
    /// blocks, elements 0..16 of each block (64 bytes), then elements 16..32 of each.
    q: Vec<i8>,
    /// The value offset's share of the integer sums: for Q8_0 `−offset·(sum of the 4 codes
    /// that meet one vpdpbusd lane)`, 8 lanes per block; for the nibble formats
    /// `−offset·(sum of the block's codes)`, one per block in [`TRANSPOSED`] order.
    corr: Vec<i32>,
    /// Per block, the scale `d` (and Q8_1's `s`) as f32; for the nibble formats in
    /// [`TRANSPOSED`] order.
    d: Vec<f32>,
    s: Vec<f32>,
}

thread_local! {
    /// Each thread's [`Acts`] buffers, reused: decode prepares one per task of rows, thousands
    /// of times per token.
    static ACTS: std::cell::RefCell<Acts> = const {
        std::cell::RefCell::new(Acts {
            nb: 0,
            q: Vec::new(),
            corr: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
        })
    };
}

/// Resize `v` to `n` elements with zeros from `zero_from` on.
fn resize<T: Copy + Default>(v: &mut Vec<T>, n: usize, zero_from: usize) {
    v.resize(n, T::default());
    v[zero_from.min(n)..].fill(T::default());
}

impl Acts {
    /// Rearrange the `nb` blocks of `a` into these buffers.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn fill<const F: usize>(&mut self, a: &[u8], nb: usize) {
        let f = fmt::<F>();
        let (ab, aq) = f.act();
        let padded = nb.next_multiple_of(16);
        self.nb = nb;
        // Only the padding must be zero: the rest is overwritten.
        // Blocks past `nb` must meet zero codes; in the nibble order they start within the
        // last group of four.
        let q_from = if f.nibbles() { 128 * (nb / 4) } else { 32 * nb };
        resize(&mut self.q, 32 * padded, q_from);
        resize(&mut self.d, padded, nb);
        if f.offset() != 0 {
            let lanes = if f.nibbles() { 1 } else { 8 };
            resize(&mut self.corr, lanes * padded, lanes * nb);
        }
        if f.mins() {
            resize(&mut self.s, padded, nb);
        }
        let a = &a[..ab * nb];
        for (b, y) in a.chunks_exact(ab).enumerate() {
            if f.nibbles() {
                let base = 128 * (b / 4) + 16 * (b % 4);
                for (half, o) in [(0, base), (16, base + 64)] {
                    let src = &y[aq + half..aq + half + 16];
                    for (d, &c) in self.q[o..o + 16].iter_mut().zip(src) {
                        *d = c as i8;
                    }
                }
            } else {
                let q: &mut [i8; 32] = (&mut self.q[32 * b..32 * (b + 1)]).try_into().expect("32");
                // SAFETY: `q` is 32 writable bytes; `storeu` has no alignment requirement.
                unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast(), load32(arr(y, aq))) };
            }
        }
        for g in (0..nb).step_by(16) {
            let n = (nb - g).min(16);
            let ag = &a[ab * g..ab * (g + n)];
            let d: &mut [f32; 16] = (&mut self.d[g..g + 16]).try_into().expect("16");
            // SAFETY: `d` is 16 writable f32.
            unsafe { _mm512_storeu_ps(d.as_mut_ptr(), act_scales::<F, 0>(ag, n)) };
            if f.mins() {
                let s: &mut [f32; 16] = (&mut self.s[g..g + 16]).try_into().expect("16");
                // SAFETY: `s` is 16 writable f32.
                unsafe { _mm512_storeu_ps(s.as_mut_ptr(), act_scales::<F, 2>(ag, n)) };
            }
        }
        if f.offset() != 0 && f.nibbles() {
            // Per 16 blocks, the offset times each block's code sum, summed as the rows' are.
            let off = _mm512_set1_epi8(f.offset() as i8);
            for (c, q) in self
                .corr
                .chunks_exact_mut(16)
                .zip(self.q.chunks_exact(512))
                .take(nb.div_ceil(16))
            {
                let r: [__m512i; 4] = std::array::from_fn(|i| {
                    let z = _mm512_setzero_si512();
                    let lanes = _mm512_dpbusd_epi32(z, off, load_q64(q, 128 * i));
                    _mm512_dpbusd_epi32(lanes, off, load_q64(q, 128 * i + 64))
                });
                let v = _mm512_sub_epi32(_mm512_setzero_si512(), quad_sums_transposed(&r));
                // SAFETY: `c` is 16 writable i32.
                unsafe { _mm512_storeu_si512(c.as_mut_ptr().cast(), v) };
            }
        } else if f.offset() != 0 {
            let off = _mm512_set1_epi8(f.offset() as i8);
            let pairs = nb.div_ceil(2);
            for (c, q) in self
                .corr
                .chunks_exact_mut(16)
                .zip(self.q.chunks_exact(64))
                .take(pairs)
            {
                let lanes = _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, load_q64(q, 0));
                let v = _mm512_sub_epi32(_mm512_setzero_si512(), lanes);
                // SAFETY: `c` is 16 writable i32.
                unsafe { _mm512_storeu_si512(c.as_mut_ptr().cast(), v) };
            }
        }
    }
}

/// The f16 at byte `OFF` of the `n` (≤ 16) activation blocks in `ag` (Q8_0's `d`, Q8_1's `d`
/// and `s`) as f32, in the lane order format `F`'s kernel reads ([`TRANSPOSED`] for the
/// nibble formats).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn act_scales<const F: usize, const OFF: usize>(ag: &[u8], n: usize) -> __m512 {
    let f = fmt::<F>();
    if n == 16 {
        return scales16(
            ag,
            const { &scale_plan(fmt::<F>().act().0, OFF, fmt::<F>().nibbles()) },
        );
    }
    let v = cvt_f16x16(f16x16(ag, OFF, f.act().0, n));
    if f.nibbles() {
        transpose_ps(v)
    } else {
        v
    }
}

/// 64 codes from `q[off..]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_q64(q: &[i8], off: usize) -> __m512i {
    let v: &[i8; 64] = q[off..off + 64].try_into().expect("length is 64");
    // SAFETY: `v` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
}

/// 16 i32 from `s[off..]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_i32x16(s: &[i32], off: usize) -> __m512i {
    let v: &[i32; 16] = s[off..off + 16].try_into().expect("length is 16");
    // SAFETY: `v` is 16 readable i32.
    unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
}

/// 16 f32 from `s[off..]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_f32x16(s: &[f32], off: usize) -> __m512 {
    let v: &[f32; 16] = s[off..off + 16].try_into().expect("length is 16");
    // SAFETY: `v` is 16 readable f32.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

/// Two Q8_0 blocks' codes as unsigned bytes (`q ^ 0x80`) in element order, block `x0` in the
/// low half, `x1` in the high half. Without `x1` (past the end of the row) the high half is
/// junk that meets zero activation codes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn codes_pair_q8(x0: &[u8], x1: Option<&[u8]>) -> __m512i {
    let q = match x1 {
        Some(x1) => load32x2(arr(x0, 2), arr(x1, 2)),
        None => _mm512_castsi256_si512(load32(arr(x0, 2))),
    };
    _mm512_xor_si512(q, _mm512_set1_epi8(0x80u8 as i8))
}

/// The i32 lanes of blocks `b` and `b + 1` (lanes 0..8 and 8..16, 4 products each), the value
/// offset taken out; `x1` is block `b + 1` of the weights, if the row has it.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_pair<const F: usize>(x0: &[u8], x1: Option<&[u8]>, acts: &Acts, b: usize) -> __m512i {
    let init = if fmt::<F>().offset() != 0 {
        load_i32x16(&acts.corr, 8 * b)
    } else {
        _mm512_setzero_si512()
    };
    _mm512_dpbusd_epi32(init, codes_pair_q8(x0, x1), load_q64(&acts.q, 32 * b))
}

/// Eight vectors of two blocks' lanes (vector `k`: blocks `2k`, `2k + 1`) to one vector of
/// the 16 blocks' sums, in block order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn block_sums(p: &[__m512i; 8]) -> __m512i {
    // Pairs of vectors to 4 blocks × 4 partial sums: 128-bit lane l of r[i] is block 4i + l.
    let mut r = [_mm512_setzero_si512(); 4];
    for (i, ri) in r.iter_mut().enumerate() {
        let (x, y) = (p[2 * i], p[2 * i + 1]);
        let even = _mm512_shuffle_i32x4::<0b10_00_10_00>(x, y);
        let odd = _mm512_shuffle_i32x4::<0b11_01_11_01>(x, y);
        *ri = _mm512_add_epi32(even, odd);
    }
    quad_sums(&r)
}

/// Four vectors of four blocks' lanes (128-bit lane `l` of `r[i]` holds 4 partial sums of
/// block `4i + l`) to one vector of the 16 blocks' sums, in block order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn quad_sums(r: &[__m512i; 4]) -> __m512i {
    _mm512_permutexvar_epi32(transposed(), quad_sums_transposed(r))
}

/// [`TRANSPOSED`] as a permute control (it is its own inverse).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn transposed() -> __m512i {
    // SAFETY: `TRANSPOSED` is 16 readable i32.
    unsafe { _mm512_loadu_si512(TRANSPOSED.as_ptr().cast()) }
}

/// 16 f32 from block order to [`TRANSPOSED`] order, or back.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn transpose_ps(v: __m512) -> __m512 {
    _mm512_permutexvar_ps(transposed(), v)
}

/// [`quad_sums`] left in [`TRANSPOSED`] order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn quad_sums_transposed(r: &[__m512i; 4]) -> __m512i {
    // Within each 128-bit lane l, a 4×4 transpose-and-add: element i becomes block 4i + l.
    let u01 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(r[0], r[1]),
        _mm512_unpackhi_epi32(r[0], r[1]),
    );
    let u23 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(r[2], r[3]),
        _mm512_unpackhi_epi32(r[2], r[3]),
    );
    // Lane 4l + i holds block 4i + l.
    _mm512_add_epi32(
        _mm512_unpacklo_epi64(u01, u23),
        _mm512_unpackhi_epi64(u01, u23),
    )
}

/// The lanes of four blocks of a nibble format, `x` (their `4·wb` bytes), against their
/// activation codes `aq` (the [`Acts`] order): 128-bit lane `l` holds 4 partial sums of
/// block `l` over the unsigned codes (the value offset is taken out per block, later). Two
/// loads and one word permute gather the four blocks' codes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn quad_nibbles<const F: usize>(x: &[u8], aq: &[i8]) -> __m512i {
    let f = fmt::<F>();
    let span = 4 * f.wb();
    let idx = const { quad_index(fmt::<F>()) };
    // SAFETY: `idx` is 32 readable i16.
    let idx = unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) };
    let v = _mm512_permutex2var_epi16(load64(arr(x, 0)), idx, load64(arr(x, span - 64)));
    let low = _mm512_set1_epi8(0x0F);
    let mut lo = _mm512_and_si512(v, low);
    let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
    if matches!(f, Fmt::Q5_0 | Fmt::Q5_1) {
        // Fifth bits: element i of block j is bit i of its qh; byte 16j + i of `lo` holds
        // element i, of `hi` element 16 + i.
        let qh = if f == Fmt::Q5_0 { 2 } else { 4 };
        let (mut mlo, mut mhi) = (0u64, 0u64);
        for j in 0..4 {
            let h = u32::from_le_bytes(*arr(x, j * f.wb() + qh)) as u64;
            mlo |= (h & 0xFFFF) << (16 * j);
            mhi |= (h >> 16) << (16 * j);
        }
        let sixteen = _mm512_set1_epi8(16);
        lo = _mm512_mask_add_epi8(lo, mlo, lo, sixteen);
        hi = _mm512_mask_add_epi8(hi, mhi, hi, sixteen);
    }
    let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, load_q64(aq, 0));
    _mm512_dpbusd_epi32(s, hi, load_q64(aq, 64))
}

/// Nibble-format rows against the prepared activations: [`row`] with the integer sums from
/// [`quad_nibbles`], 16 blocks at a time, for `R` rows side by side (each row's operations are
/// those of a row alone). A last partial group is copied into zeros first (zero codes and
/// scales; zero activation codes meet them).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn rows_nibbles<const F: usize, const R: usize>(ws: [&[u8]; R], acts: &Acts) -> [f32; R] {
    let f = fmt::<F>();
    let wb = f.wb();
    let nb = (ws[0].len() / wb).min(acts.nb);
    let mut acc = [_mm512_setzero_ps(); R];
    let mut pad = [[0u8; 16 * 24]; R];
    for g in (0..nb).step_by(16) {
        let n = (nb - g).min(16);
        let aq = &acts.q[32 * g..32 * g + 512];
        for ((w, acc), pad) in ws.iter().zip(acc.iter_mut()).zip(pad.iter_mut()) {
            let wg = if n == 16 {
                &w[wb * g..wb * (g + 16)]
            } else {
                pad[..n * wb].copy_from_slice(&w[wb * g..wb * (g + n)]);
                &pad[..16 * wb]
            };
            prefetch_ahead(wg, 16 * wb);
            let r: [__m512i; 4] = std::array::from_fn(|i| {
                quad_nibbles::<F>(
                    &wg[4 * i * wb..4 * (i + 1) * wb],
                    &aq[128 * i..128 * (i + 1)],
                )
            });
            // Sums, scales and chains in TRANSPOSED order: no permute per group.
            let mut isum = quad_sums_transposed(&r);
            if f.offset() != 0 {
                isum = _mm512_add_epi32(isum, load_i32x16(&acts.corr, g));
            }
            let dw = scales16(wg, const { &scale_plan(fmt::<F>().wb(), 0, true) });
            let s = _mm512_mul_ps(dw, load_f32x16(&acts.d, g));
            *acc = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(isum), *acc);
            if f.mins() {
                let mw = scales16(wg, const { &scale_plan(fmt::<F>().wb(), 2, true) });
                *acc = _mm512_fmadd_ps(mw, load_f32x16(&acts.s, g), *acc);
            }
        }
    }
    acc.map(|a| hsum16(transpose_ps(a)))
}

/// `R` weight rows side by side against the prepared activations: the parent module's 16
/// chains per row.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn rows_q8<const F: usize, const R: usize>(ws: [&[u8]; R], acts: &Acts) -> [f32; R] {
    let f = fmt::<F>();
    let wb = f.wb();
    let nb = (ws[0].len() / wb).min(acts.nb);
    let mut acc = [_mm512_setzero_ps(); R];
    let mut g = 0;
    while g < nb {
        let n = (nb - g).min(16);
        for (w, acc) in ws.iter().zip(acc.iter_mut()) {
            let wg = &w[wb * g..wb * (g + n)];
            prefetch_ahead(wg, 16 * wb);
            let mut p = [_mm512_setzero_si512(); 8];
            let dw = if n == 16 {
                // Constant offsets into a slice of known length: no bounds checks remain.
                let wg = &wg[..16 * wb];
                for (k, pk) in p.iter_mut().enumerate() {
                    let x0 = &wg[2 * k * wb..(2 * k + 1) * wb];
                    let x1 = &wg[(2 * k + 1) * wb..(2 * k + 2) * wb];
                    *pk = dot_pair::<F>(x0, Some(x1), acts, g + 2 * k);
                }
                scales16(wg, const { &scale_plan(fmt::<F>().wb(), 0, false) })
            } else {
                for (k, pk) in p.iter_mut().enumerate().take(n.div_ceil(2)) {
                    let x0 = &wg[2 * k * wb..(2 * k + 1) * wb];
                    let x1 = if 2 * k + 1 < n {
                        Some(&wg[(2 * k + 1) * wb..(2 * k + 2) * wb])
                    } else {
                        None
                    };
                    *pk = dot_pair::<F>(x0, x1, acts, g + 2 * k);
                }
                cvt_f16x16(f16x16(wg, 0, wb, n))
            };
            let isum = _mm512_cvtepi32_ps(block_sums(&p));
            let s = _mm512_mul_ps(dw, load_f32x16(&acts.d, g));
            *acc = _mm512_fmadd_ps(s, isum, *acc);
        }
        g += 16;
    }
    acc.map(|a| hsum16(a))
}

/// `R` weight rows against the prepared activations.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn rows_side_by_side<const F: usize, const R: usize>(ws: [&[u8]; R], acts: &Acts) -> [f32; R] {
    const {
        assert!(
            !fmt::<F>().mins() || fmt::<F>().nibbles(),
            "Q8_0 has no min"
        )
    };
    if fmt::<F>().nibbles() {
        rows_nibbles::<F, R>(ws, acts)
    } else {
        rows_q8::<F, R>(ws, acts)
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn rows<const F: usize>(w: &[u8], a: &[u8], out: &mut [f32]) {
    let f = fmt::<F>();
    let rb = w.len() / out.len().max(1);
    let nb = (rb / f.wb()).min(a.len() / f.act().0);
    ACTS.with(|acts| {
        let mut acts = acts.borrow_mut();
        acts.fill::<F>(a, nb);
        in_streams(
            w,
            out,
            |ws| rows_side_by_side::<F, STREAMS>(ws, &acts),
            |w| rows_side_by_side::<F, 1>([w], &acts)[0],
        );
    })
}

macro_rules! entry_points {
    ($($f:literal: $dot:ident, $rows:ident;)*) => {$(
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(super) unsafe fn $dot(w: &[u8], a: &[u8]) -> f32 {
            let mut out = [0f32];
            rows::<$f>(w, a, &mut out);
            out[0]
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(super) unsafe fn $rows(w: &[u8], a: &[u8], out: &mut [f32]) {
            rows::<$f>(w, a, out)
        }
    )*};
}

entry_points! {
    0: vec_dot_q4_0_q8_0, dot_rows_q4_0_q8_0;
    1: vec_dot_q4_1_q8_1, dot_rows_q4_1_q8_1;
    2: vec_dot_q5_0_q8_0, dot_rows_q5_0_q8_0;
    3: vec_dot_q5_1_q8_1, dot_rows_q5_1_q8_1;
    4: vec_dot_q8_0_q8_0, dot_rows_q8_0_q8_0;
}
