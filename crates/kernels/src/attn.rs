//! Attention scores against keys stored transposed (f16, one row per key dimension, positions
//! along the row), as the KV cache keeps them. A score is `Σ_d q[d]·k[d][p]` summed in one
//! f32 chain over `d` in order (`acc ← fma(q[d], k[d][p], acc)` from 0), on every tier and for
//! any number of queries or positions: a score has the same bits in a prompt and in decode.
//!
//! Against keys stored by position, a score needed a horizontal sum of its partial sums; here
//! 8 or 16 positions fill a vector, and the queries of one KV head (the heads of a GQA group,
//! the query rows of a prompt) share every key load.

use half::f16;

use crate::dispatch::Isa;

/// `out[j·n + p] = Σ_d q[j·hd + d] · k(d, p)` for each query `j < q.len() / hd` and position
/// `p < n`, where `k(d, p)` is the little-endian f16 at byte `d·stride + 2p` of `kt`. The
/// queries should hold f16 values (ggml rounds them so); each product is then exact in f32.
///
/// Panics if `hd` is 0 or does not divide `q.len()`, if `out` is not `n` scores per query, or if
/// `kt` is too short for `hd` rows of `n` positions at `stride`, or `stride < 2n`.
pub fn scores_f16t(kt: &[u8], stride: usize, hd: usize, n: usize, q: &[f32], out: &mut [f32]) {
    check(kt, stride, hd, n, q, out);
    // SAFETY: the active tier runs on this CPU.
    unsafe { scores_on(crate::active_isa(), kt, stride, hd, n, q, out) }
}

fn check(kt: &[u8], stride: usize, hd: usize, n: usize, q: &[f32], out: &[f32]) {
    assert!(
        hd > 0 && q.len() % hd == 0,
        "scores_f16t: {} query values of {hd}",
        q.len()
    );
    assert_eq!(out.len(), q.len() / hd * n, "scores_f16t: output length");
    if n > 0 {
        assert!(
            stride >= 2 * n && kt.len() >= (hd - 1) * stride + 2 * n,
            "scores_f16t: {} bytes for {hd} rows of {n} positions at stride {stride}",
            kt.len()
        );
    }
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
    check(kt, stride, hd, n, q, out);
    // SAFETY: the caller's contract.
    unsafe { scores_on(isa, kt, stride, hd, n, q, out) }
}

/// # Safety
/// This CPU must run `isa`; the arguments passed [`check`].
unsafe fn scores_on(
    isa: Isa,
    kt: &[u8],
    stride: usize,
    hd: usize,
    n: usize,
    q: &[f32],
    out: &mut [f32],
) {
    let done = match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the tier's CPU features are present (the caller's contract).
        Isa::Avx512 => unsafe { x86::scores_avx512(kt, stride, hd, n, q, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::scores_avx2(kt, stride, hd, n, q, out) },
        _ => 0,
    };
    scores_scalar(kt, stride, hd, n, q, out, done);
}

/// The key element at dimension `d`, position `p`.
#[inline(always)]
fn key(kt: &[u8], stride: usize, d: usize, p: usize) -> f32 {
    let i = d * stride + 2 * p;
    f16::from_bits(u16::from_le_bytes([kt[i], kt[i + 1]])).to_f32()
}

/// The reference (and the scalar tier): positions `from..n` of every query.
fn scores_scalar(
    kt: &[u8],
    stride: usize,
    hd: usize,
    n: usize,
    q: &[f32],
    out: &mut [f32],
    from: usize,
) {
    for (qj, oj) in q.chunks_exact(hd).zip(out.chunks_exact_mut(n.max(1))) {
        for (p, o) in oj.iter_mut().enumerate().take(n).skip(from) {
            let mut acc = 0f32;
            for (d, &x) in qj.iter().enumerate() {
                acc = x.mul_add(key(kt, stride, d, p), acc);
            }
            *o = acc;
        }
    }
}

/// The reference over all positions (for tests).
pub fn scores_f16t_scalar(
    kt: &[u8],
    stride: usize,
    hd: usize,
    n: usize,
    q: &[f32],
    out: &mut [f32],
) {
    check(kt, stride, hd, n, q, out);
    scores_scalar(kt, stride, hd, n, q, out, 0);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Queries that share each key load: 4 queries × 2 vectors are 8 independent FMA chains,
    /// enough to cover the FMA latency.
    const NQ: usize = 4;

    /// All the scores (AVX2: 16 positions at a time, then 8, then the last 1-7); returns `n`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn scores_avx2(
        kt: &[u8],
        stride: usize,
        hd: usize,
        n: usize,
        q: &[f32],
        out: &mut [f32],
    ) -> usize {
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
        n
    }

    /// All the scores (AVX-512: 32 positions at a time, then 16, then the last 1-15 under a
    /// mask); returns `n`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) fn scores_avx512(
        kt: &[u8],
        stride: usize,
        hd: usize,
        n: usize,
        q: &[f32],
        out: &mut [f32],
    ) -> usize {
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
        n
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
                    scores_f16t_scalar(&kt, stride, hd, n, &q, &mut want);
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

    #[test]
    #[should_panic(expected = "bytes for 4 rows")]
    fn short_keys_are_refused() {
        let mut out = [0f32; 8];
        scores_f16t(&[0u8; 60], 16, 4, 8, &[0.0; 4], &mut out);
    }
}
