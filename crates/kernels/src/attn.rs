//! Attention scores against keys stored transposed (f16, one row per key dimension, positions
//! along the row), as the KV cache keeps them. A score is `Σ_d q[d]·k[d][p]` summed in one
//! f32 chain over `d` in order (`acc ← fma(q[d], k[d][p], acc)` from 0), on every tier and for
//! any number of queries or positions: a score has the same bits in a prompt and in decode.
//!
//! Against keys stored by position, a score needed a horizontal sum of its partial sums; here
//! 8 or 16 positions fill a vector, and the query heads of one KV head (a GQA group) share
//! every key load. The weighted values ([`weighted_values_f16t`]) read the values, stored
//! transposed too, the same way.

use half::f16;

use crate::dispatch::Isa;

/// `out[j·n + p] = Σ_d q[j·hd + d] · k(d, p)` for each query `j < q.len() / hd` and position
/// `p < n`, where `k(d, p)` is the little-endian f16 at byte `d·stride + 2p` of `kt`. The
/// queries should hold f16 values (ggml rounds them so); each product is then exact in f32.
///
/// Panics if `hd` is 0 or does not divide `q.len()`, if `out` is not `n` scores per query, or if
/// `kt` is too short for `hd` rows of `n` positions at `stride`, or `stride < 2n`.
pub fn scores_f16t(kt: &[u8], stride: usize, hd: usize, n: usize, q: &[f32], out: &mut [f32]) {
    // SAFETY: the active tier runs on this CPU.
    unsafe { scores_f16t_on(crate::active_isa(), kt, stride, hd, n, q, out) }
}

/// [`scores_f16t`] on tier `isa`.
///
/// # Safety
/// This CPU must run `isa`.
pub unsafe fn scores_f16t_on(
    isa: Isa,
    kt: &[u8],
    stride: usize,
    hd: usize,
    n: usize,
    q: &[f32],
    out: &mut [f32],
) {
    assert!(
        hd > 0 && q.len() % hd == 0,
        "scores_f16t: {} query values of {hd}",
        q.len()
    );
    assert_eq!(out.len(), q.len() / hd * n, "scores_f16t: output length");
    if n == 0 {
        return;
    }
    assert!(
        stride >= 2 * n && kt.len() >= (hd - 1) * stride + 2 * n,
        "scores_f16t: {} bytes for {hd} rows of {n} positions at stride {stride}",
        kt.len()
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the tier's CPU features are present (the caller's contract).
        Isa::Avx512 => unsafe { x86::scores_avx512(kt, stride, hd, n, q, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 | Isa::AvxVnni => unsafe { x86::scores_avx2(kt, stride, hd, n, q, out) },
        _ => scores_scalar(kt, stride, hd, n, q, out),
    }
}

/// `out[j·hd + i] = Σ_p w[j·n + p] · v(i, p)` for each query `j < w.len() / n` and dimension
/// `i < hd`, where `v(i, p)` is the little-endian f16 at byte `i·stride + 2p` of `vt` (the
/// values, stored transposed) and `w` holds each query's `n` weights (f16 values: ggml
/// rounds the probabilities so). Each output sums in 16 f32 lanes, lane `p mod 16` one FMA
/// chain over its positions in order, then the lanes pairwise (`l + 8`, `+ 4`, `+ 2`,
/// `+ 1`): the same bits on every tier and for any number of queries.
///
/// Panics if `n` is 0 or does not divide `w.len()`, if `out` is not `hd` values per query,
/// or if `vt` is too short for `hd` rows of `n` positions at `stride`, or `stride < 2n`.
pub fn weighted_values_f16t(
    vt: &[u8],
    stride: usize,
    hd: usize,
    n: usize,
    w: &[f32],
    out: &mut [f32],
) {
    // SAFETY: the active tier runs on this CPU.
    unsafe { weighted_values_f16t_on(crate::active_isa(), vt, stride, hd, n, w, out) }
}

/// [`weighted_values_f16t`] on tier `isa`.
///
/// # Safety
/// This CPU must run `isa`.
pub unsafe fn weighted_values_f16t_on(
    isa: Isa,
    vt: &[u8],
    stride: usize,
    hd: usize,
    n: usize,
    w: &[f32],
    out: &mut [f32],
) {
    assert!(
        n > 0 && w.len() % n == 0,
        "weighted_values_f16t: {} weights of {n}",
        w.len()
    );
    assert_eq!(
        out.len(),
        w.len() / n * hd,
        "weighted_values_f16t: output length"
    );
    if hd == 0 {
        return;
    }
    assert!(
        stride >= 2 * n && vt.len() >= (hd - 1) * stride + 2 * n,
        "weighted_values_f16t: {} bytes for {hd} rows of {n} positions at stride {stride}",
        vt.len()
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the tier's CPU features are present (the caller's contract).
        Isa::Avx512 => unsafe { x86::values_avx512(vt, stride, hd, n, w, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 | Isa::AvxVnni => unsafe { x86::values_avx2(vt, stride, hd, n, w, out) },
        _ => values_scalar(vt, stride, hd, n, w, out),
    }
}

/// The sum of 16 lanes, pairwise: `l + 8`, then `+ 4`, `+ 2`, `+ 1`.
#[inline(always)]
fn sum_lanes(l: &[f32; 16]) -> f32 {
    let s8: [f32; 8] = std::array::from_fn(|i| l[i] + l[i + 8]);
    let s4: [f32; 4] = std::array::from_fn(|i| s8[i] + s8[i + 4]);
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

/// The reference of [`weighted_values_f16t`] (and the scalar tier).
fn values_scalar(vt: &[u8], stride: usize, hd: usize, n: usize, w: &[f32], out: &mut [f32]) {
    for (wj, oj) in w.chunks_exact(n).zip(out.chunks_exact_mut(hd)) {
        for (i, o) in oj.iter_mut().enumerate() {
            let mut lanes = [0f32; 16];
            for (p, &x) in wj.iter().enumerate() {
                lanes[p % 16] = x.mul_add(key(vt, stride, i, p), lanes[p % 16]);
            }
            *o = sum_lanes(&lanes);
        }
    }
}

/// `x ← f16(x)` as f32, rounding to nearest even: how ggml stores attention's queries and
/// probabilities before its f16 products.
pub fn round_to_f16(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::active_isa().has_avx2_set() {
        // SAFETY: the AVX2 tier (which includes F16C) runs on this CPU.
        return unsafe { x86::round_to_f16_f16c(x) };
    }
    x.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32());
}

/// The key element at dimension `d`, position `p`.
#[inline(always)]
fn key(kt: &[u8], stride: usize, d: usize, p: usize) -> f32 {
    let i = d * stride + 2 * p;
    f16::from_bits(u16::from_le_bytes([kt[i], kt[i + 1]])).to_f32()
}

/// The reference of [`scores_f16t`] (and the scalar tier).
fn scores_scalar(kt: &[u8], stride: usize, hd: usize, n: usize, q: &[f32], out: &mut [f32]) {
    for (qj, oj) in q.chunks_exact(hd).zip(out.chunks_exact_mut(n)) {
        for (p, o) in oj.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (d, &x) in qj.iter().enumerate() {
                acc = x.mul_add(key(kt, stride, d, p), acc);
            }
            *o = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Queries that share each key load: 4 queries × 2 vectors are 8 independent FMA chains,
    /// enough to cover the FMA latency.
    const NQ: usize = 4;

    /// All the scores (AVX2: 16 positions at a time, then 8, then the last 1-7).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn scores_avx2(
        kt: &[u8],
        stride: usize,
        hd: usize,
        n: usize,
        q: &[f32],
        out: &mut [f32],
    ) {
        let main = n / 16 * 16;
        let kp = kt.as_ptr();
        // SAFETY: the callers pass p + 8 ≤ n and d < hd (bytes d·stride + 2p .. + 16 lie in
        // `kt`: the caller checked kt.len() ≥ (hd − 1)·stride + 2n), or checked the 16 bytes.
        let k8 = |d: usize, p: usize| unsafe {
            _mm256_cvtph_ps(_mm_loadu_si128(kp.add(d * stride + 2 * p).cast()))
        };
        let mut j0 = 0;
        while j0 * hd < q.len() {
            let nq = (q.len() / hd - j0).min(NQ);
            let qs = &q[j0 * hd..(j0 + nq) * hd];
            let mut p = 0;
            while p < main {
                let mut acc = [[_mm256_setzero_ps(); 2]; NQ];
                for d in 0..hd {
                    let (a, b) = (k8(d, p), k8(d, p + 8));
                    for (j, aj) in acc.iter_mut().enumerate().take(nq) {
                        let x = _mm256_set1_ps(qs[j * hd + d]);
                        aj[0] = _mm256_fmadd_ps(x, a, aj[0]);
                        aj[1] = _mm256_fmadd_ps(x, b, aj[1]);
                    }
                }
                for (j, aj) in acc.iter().enumerate().take(nq) {
                    let o = &mut out[(j0 + j) * n + p..(j0 + j) * n + p + 16];
                    // SAFETY: `o` is 16 writable f32.
                    unsafe {
                        _mm256_storeu_ps(o.as_mut_ptr(), aj[0]);
                        _mm256_storeu_ps(o.as_mut_ptr().add(8), aj[1]);
                    }
                }
                p += 16;
            }
            while p < n {
                // 8 positions, or the last 1-7: 8 lanes read from the keys where 16 bytes
                // remain in the slice (the extra lanes are never stored), else from a zeroed
                // copy.
                let r = (n - p).min(8);
                let key8 = |d: usize| {
                    let at = d * stride + 2 * p;
                    if at + 16 <= kt.len() {
                        k8(d, p)
                    } else {
                        let mut b = [0u8; 16];
                        b[..2 * r].copy_from_slice(&kt[at..at + 2 * r]);
                        // SAFETY: 16 readable bytes.
                        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().cast())) }
                    }
                };
                let mut acc = [_mm256_setzero_ps(); NQ];
                for d in 0..hd {
                    let a = key8(d);
                    for (j, aj) in acc.iter_mut().enumerate().take(nq) {
                        *aj = _mm256_fmadd_ps(_mm256_set1_ps(qs[j * hd + d]), a, *aj);
                    }
                }
                for (j, aj) in acc.iter().enumerate().take(nq) {
                    let mut v = [0f32; 8];
                    // SAFETY: `v` is 8 writable f32.
                    unsafe { _mm256_storeu_ps(v.as_mut_ptr(), *aj) };
                    out[(j0 + j) * n + p..(j0 + j) * n + p + r].copy_from_slice(&v[..r]);
                }
                p += r;
            }
            j0 += nq;
        }
    }

    /// All the scores (AVX-512: 32 positions at a time, then 16, then the last 1-15 under a
    /// mask).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) fn scores_avx512(
        kt: &[u8],
        stride: usize,
        hd: usize,
        n: usize,
        q: &[f32],
        out: &mut [f32],
    ) {
        let main = n / 32 * 32;
        let kp = kt.as_ptr();
        // SAFETY: for p + 32 ≤ main ≤ n and d < hd, bytes d·stride + 2p .. + 64 lie in `kt`.
        let k16 = |d: usize, p: usize| unsafe {
            _mm512_cvtph_ps(_mm256_loadu_si256(kp.add(d * stride + 2 * p).cast()))
        };
        let mut j0 = 0;
        while j0 * hd < q.len() {
            let nq = (q.len() / hd - j0).min(NQ);
            let qs = &q[j0 * hd..(j0 + nq) * hd];
            let mut p = 0;
            while p < main {
                let mut acc = [[_mm512_setzero_ps(); 2]; NQ];
                for d in 0..hd {
                    let (a, b) = (k16(d, p), k16(d, p + 16));
                    for (j, aj) in acc.iter_mut().enumerate().take(nq) {
                        let x = _mm512_set1_ps(qs[j * hd + d]);
                        aj[0] = _mm512_fmadd_ps(x, a, aj[0]);
                        aj[1] = _mm512_fmadd_ps(x, b, aj[1]);
                    }
                }
                for (j, aj) in acc.iter().enumerate().take(nq) {
                    let o = &mut out[(j0 + j) * n + p..(j0 + j) * n + p + 32];
                    // SAFETY: `o` is 32 writable f32.
                    unsafe {
                        _mm512_storeu_ps(o.as_mut_ptr(), aj[0]);
                        _mm512_storeu_ps(o.as_mut_ptr().add(16), aj[1]);
                    }
                }
                p += 32;
            }
            while p < n {
                // 16 positions, or the last 1-15 under a mask (masked-off lanes neither load
                // nor store).
                let r = (n - p).min(16);
                let mask = (u32::MAX >> (32 - r)) as __mmask16;
                let mut acc = [_mm512_setzero_ps(); NQ];
                for d in 0..hd {
                    // SAFETY: the lanes under `mask` are positions p .. p + r ≤ n of row d.
                    let a = unsafe {
                        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                            mask,
                            kp.add(d * stride + 2 * p).cast(),
                        ))
                    };
                    for (j, aj) in acc.iter_mut().enumerate().take(nq) {
                        *aj = _mm512_fmadd_ps(_mm512_set1_ps(qs[j * hd + d]), a, *aj);
                    }
                }
                for (j, aj) in acc.iter().enumerate().take(nq) {
                    let o = &mut out[(j0 + j) * n + p..(j0 + j) * n + p + r];
                    // SAFETY: the lanes under `mask` are the r writable f32 of `o`.
                    unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr(), mask, *aj) };
                }
                p += r;
            }
            j0 += nq;
        }
    }

    /// The weighted values of queries `j0..j0 + NQ`, dimensions `i0..i0 + NI` (AVX-512: one
    /// vector of 16 lanes per output; the last positions under a mask).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    fn values_block_avx512<const NQ: usize, const NI: usize>(
        vt: &[u8],
        stride: usize,
        hd: usize,
        n: usize,
        w: &[f32],
        j0: usize,
        i0: usize,
        out: &mut [f32],
    ) {
        let (vp, wp) = (vt.as_ptr(), w.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); NI]; NQ];
        let mut p = 0;
        while p < n {
            let r = (n - p).min(16);
            let mask = (u32::MAX >> (32 - r)) as __mmask16;
            // SAFETY: the lanes under `mask` are positions p .. p + r ≤ n of value rows
            // i0 .. i0 + NI ≤ hd (in `vt`, checked by the caller) and of weight rows
            // j0 .. j0 + NQ ≤ w.len() / n.
            let v: [__m512; NI] = std::array::from_fn(|i| unsafe {
                _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                    mask,
                    vp.add((i0 + i) * stride + 2 * p).cast(),
                ))
            });
            for (j, aj) in acc.iter_mut().enumerate() {
                // SAFETY: as above.
                let x = unsafe { _mm512_maskz_loadu_ps(mask, wp.add((j0 + j) * n + p)) };
                for (a, vi) in aj.iter_mut().zip(&v) {
                    *a = _mm512_fmadd_ps(x, *vi, *a);
                }
            }
            p += r;
        }
        for (j, aj) in acc.iter().enumerate() {
            for (i, a) in aj.iter().enumerate() {
                let mut lanes = [0f32; 16];
                // SAFETY: `lanes` is 16 writable f32.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *a) };
                out[(j0 + j) * hd + i0 + i] = super::sum_lanes(&lanes);
            }
        }
    }

    /// Blocks of up to 4 queries × 4 dimensions (16 accumulators of 32 registers).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) fn values_avx512(
        vt: &[u8],
        stride: usize,
        hd: usize,
        n: usize,
        w: &[f32],
        out: &mut [f32],
    ) {
        let nq_total = w.len() / n;
        let mut j0 = 0;
        while j0 < nq_total {
            let nq = block(nq_total - j0);
            let mut i0 = 0;
            while i0 < hd {
                let ni = if hd - i0 >= 4 { 4 } else { 1 };
                let f = match (nq, ni) {
                    (4, 4) => values_block_avx512::<4, 4>,
                    (2, 4) => values_block_avx512::<2, 4>,
                    (1, 4) => values_block_avx512::<1, 4>,
                    (4, _) => values_block_avx512::<4, 1>,
                    (2, _) => values_block_avx512::<2, 1>,
                    _ => values_block_avx512::<1, 1>,
                };
                f(vt, stride, hd, n, w, j0, i0, out);
                i0 += ni;
            }
            j0 += nq;
        }
    }

    /// The weighted values of queries `j0..j0 + NQ`, dimension `i` (AVX2: two vectors of 8
    /// lanes per output; the last positions from zero-padded copies).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn values_block_avx2<const NQ: usize>(
        vt: &[u8],
        stride: usize,
        hd: usize,
        n: usize,
        w: &[f32],
        j0: usize,
        i: usize,
        out: &mut [f32],
    ) {
        let row = &vt[i * stride..i * stride + 2 * n];
        let mut acc = [[_mm256_setzero_ps(); 2]; NQ];
        let mut p = 0;
        while p < n {
            let r = (n - p).min(16);
            let (mut vb, mut wb) = ([0u8; 32], [[0f32; 16]; NQ]);
            let (v, ws): (&[u8], [&[f32]; NQ]) = if r == 16 {
                (
                    &row[2 * p..2 * p + 32],
                    std::array::from_fn(|j| &w[(j0 + j) * n + p..(j0 + j) * n + p + 16]),
                )
            } else {
                vb[..2 * r].copy_from_slice(&row[2 * p..]);
                for (j, b) in wb.iter_mut().enumerate() {
                    b[..r].copy_from_slice(&w[(j0 + j) * n + p..(j0 + j) * n + n]);
                }
                (&vb, std::array::from_fn(|j| &wb[j][..]))
            };
            // SAFETY: `v` is 32 bytes and each `ws[j]` 16 f32.
            unsafe {
                let v0 = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().cast()));
                let v1 = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(16).cast()));
                for (aj, wj) in acc.iter_mut().zip(ws) {
                    aj[0] = _mm256_fmadd_ps(_mm256_loadu_ps(wj.as_ptr()), v0, aj[0]);
                    aj[1] = _mm256_fmadd_ps(_mm256_loadu_ps(wj.as_ptr().add(8)), v1, aj[1]);
                }
            }
            p += r;
        }
        for (j, aj) in acc.iter().enumerate() {
            let mut lanes = [0f32; 16];
            // SAFETY: `lanes` is 16 writable f32.
            unsafe {
                _mm256_storeu_ps(lanes.as_mut_ptr(), aj[0]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), aj[1]);
            }
            out[(j0 + j) * hd + i] = super::sum_lanes(&lanes);
        }
    }

    /// Blocks of up to 4 queries × 1 dimension (8 accumulators of 16 registers).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn values_avx2(
        vt: &[u8],
        stride: usize,
        hd: usize,
        n: usize,
        w: &[f32],
        out: &mut [f32],
    ) {
        let nq_total = w.len() / n;
        let mut j0 = 0;
        while j0 < nq_total {
            let nq = block(nq_total - j0);
            for i in 0..hd {
                match nq {
                    4 => values_block_avx2::<4>(vt, stride, hd, n, w, j0, i, out),
                    2 => values_block_avx2::<2>(vt, stride, hd, n, w, j0, i, out),
                    _ => values_block_avx2::<1>(vt, stride, hd, n, w, j0, i, out),
                }
            }
            j0 += nq;
        }
    }

    /// Queries in the next block: 4, 2 or 1 of the `left`.
    fn block(left: usize) -> usize {
        match left {
            4.. => 4,
            2 | 3 => 2,
            _ => 1,
        }
    }

    /// [`super::round_to_f16`], 8 at a time.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn round_to_f16_f16c(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` is 8 readable and writable f32.
            unsafe {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(c.as_ptr()));
                _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
        for v in chunks.into_remainder() {
            *v = half::f16::from_f32(*v).to_f32();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn f16(&mut self, scale: f32) -> f16 {
            let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
            f16::from_f32((2.0 * u - 1.0) * scale)
        }
    }

    /// Every tier gives the reference's bits, for query counts around the 4-query step,
    /// positions around the 8/16/32-position steps, padded strides, and values from tiny to
    /// the f16 range's edge.
    #[test]
    fn tiers_match_the_reference_bit_for_bit() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for &(hd, scale) in &[(1, 1.0), (8, 0.01), (64, 1.0), (80, 60000.0), (128, 3.0)] {
            for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 64, 70] {
                for nq in [1, 3, 4, 5, 9] {
                    let stride = 2 * n + 2 * (n % 3); // bytes; padded for some n
                    let stride = stride.max(2);
                    let kt: Vec<u8> = (0..hd * stride / 2)
                        .flat_map(|_| rng.f16(scale).to_le_bytes())
                        .collect();
                    let q: Vec<f32> = (0..nq * hd).map(|_| rng.f16(1.0).to_f32()).collect();
                    let mut want = vec![f32::NAN; nq * n];
                    if n > 0 {
                        scores_scalar(&kt, stride, hd, n, &q, &mut want);
                    }
                    // The reference is the plain chain it claims to be.
                    for (j, w) in want
                        .chunks(n.max(1))
                        .enumerate()
                        .take(if n > 0 { nq } else { 0 })
                    {
                        let p = n - 1;
                        let mut acc = 0f32;
                        for d in 0..hd {
                            acc = q[j * hd + d].mul_add(key(&kt, stride, d, p), acc);
                        }
                        assert_eq!(w[p].to_bits(), acc.to_bits());
                    }
                    for isa in crate::dispatch::available_isas() {
                        let mut got = vec![f32::NAN; nq * n];
                        // SAFETY: `available_isas` lists tiers this CPU runs.
                        unsafe { scores_f16t_on(isa, &kt, stride, hd, n, &q, &mut got) };
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert_eq!(
                                g.to_bits(),
                                w.to_bits(),
                                "{isa} hd={hd} n={n} nq={nq} score {i}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The weighted values: every tier gives the reference's bits, for query counts around
    /// the 4- and 2-query blocks, dimensions around the 4-dimension block, positions around the
    /// 16-lane step, padded strides, and weights from 0 to 1 over values up to the f16 range.
    #[test]
    fn weighted_values_match_the_reference_bit_for_bit() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for &(hd, scale) in &[(1, 1.0), (3, 0.01), (8, 1.0), (64, 60000.0), (66, 3.0)] {
            for n in [1, 2, 15, 16, 17, 31, 32, 33, 70] {
                for nq in [1, 2, 3, 4, 5, 7, 9] {
                    let stride = 2 * n + 2 * (n % 3);
                    let vt: Vec<u8> = (0..hd * stride / 2)
                        .flat_map(|_| rng.f16(scale).to_le_bytes())
                        .collect();
                    let w: Vec<f32> = (0..nq * n).map(|_| rng.f16(1.0).to_f32().abs()).collect();
                    let mut want = vec![f32::NAN; nq * hd];
                    values_scalar(&vt, stride, hd, n, &w, &mut want);
                    // The reference is the lane sum it claims to be (last query, last dim).
                    let (j, i) = (nq - 1, hd - 1);
                    let mut lanes = [0f32; 16];
                    for p in 0..n {
                        lanes[p % 16] = w[j * n + p].mul_add(key(&vt, stride, i, p), lanes[p % 16]);
                    }
                    assert_eq!(want[j * hd + i].to_bits(), sum_lanes(&lanes).to_bits());
                    for isa in crate::dispatch::available_isas() {
                        let mut got = vec![f32::NAN; nq * hd];
                        // SAFETY: `available_isas` lists tiers this CPU runs.
                        unsafe { weighted_values_f16t_on(isa, &vt, stride, hd, n, &w, &mut got) };
                        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert_eq!(
                                g.to_bits(),
                                w.to_bits(),
                                "{isa} hd={hd} n={n} nq={nq} output {k}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rounding_to_f16_matches_the_half_crate() {
        let mut rng = Rng(7);
        let mut x: Vec<f32> = (0..1003)
            .map(|i| f32::from_bits(rng.next() as u32) * if i % 2 == 0 { 1.0 } else { 1e-30 })
            .collect();
        x.extend([
            0.0,
            -0.0,
            65504.0,
            65520.0,
            1e-8,
            f32::INFINITY,
            f32::MIN_POSITIVE,
        ]);
        let want: Vec<u32> = x
            .iter()
            .map(|v| f16::from_f32(*v).to_f32().to_bits())
            .collect();
        round_to_f16(&mut x);
        for (i, (g, w)) in x.iter().zip(&want).enumerate() {
            // NaNs only need to stay NaN (their payload may differ).
            assert!(
                g.to_bits() == *w || (g.is_nan() && f32::from_bits(*w).is_nan()),
                "{i}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "bytes for 4 rows")]
    fn short_values_are_refused() {
        let mut out = [0f32; 4];
        weighted_values_f16t(&[0u8; 60], 16, 4, 8, &[0.0; 8], &mut out);
    }

    #[test]
    #[should_panic(expected = "bytes for 4 rows")]
    fn short_keys_are_refused() {
        let mut out = [0f32; 8];
        scores_f16t(&[0u8; 60], 16, 4, 8, &[0.0; 4], &mut out);
    }
}
