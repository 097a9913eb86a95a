//! AVX2 dot products of the i-quants and ternary quants with their activation formats.
//! Grid types expand each group of 8 from its table entry with scalar lookups, then multiply
//! 32 elements at a time: unsigned grid magnitudes against activations whose signs carry the
//! weight signs. Same contract as the parent module. Compare ggml
//! `src/ggml-cpu/arch/x86/quants.c`.

use super::*;
use crate::blocks::{
    IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS_IQ2XS,
    KVALUES_IQ4NL,
};

/// Four 8-byte grid entries as one vector (element order).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn grid4(g: [u64; 4]) -> __m256i {
    unsafe { _mm256_set_epi64x(g[3] as i64, g[2] as i64, g[1] as i64, g[0] as i64) }
}

/// Eight 4-byte grid entries as one vector (element order).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn grid8(g: [u32; 8]) -> __m256i {
    unsafe {
        _mm256_set_epi32(
            g[7] as i32,
            g[6] as i32,
            g[5] as i32,
            g[4] as i32,
            g[3] as i32,
            g[2] as i32,
            g[1] as i32,
            g[0] as i32,
        )
    }
}

/// `y` with element `i` negated where bit `i` of `signs` is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn apply_signs(y: __m256i, signs: u32) -> __m256i {
    unsafe {
        let neg = bits_to_bytes(signs);
        _mm256_sign_epi8(y, _mm256_or_si256(neg, _mm256_set1_epi8(1)))
    }
}

/// Σ (unsigned `q` · signed `y`) as i32 lanes, each i16 pair sum scaled by `scale` (i16 lanes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_scaled(q: __m256i, y: __m256i, scale: __m256i) -> __m256i {
    unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), scale) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_pair(lo: i16, hi: i16) -> __m256i {
    unsafe { _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo)) }
}

#[inline(always)]
fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes(*arr(b, off))).to_f32()
}

/// Four sign bytes (7 stored bits each, expanded with `KSIGNS_IQ2XS`) as one 32-bit mask.
#[inline(always)]
fn ksigns4(aux: u32) -> u32 {
    let mut s = 0u32;
    for l in 0..4 {
        s |= (KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize] as u32) << (8 * l);
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_iq2xxs_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.chunks_exact(66).zip(a.chunks_exact(292)) {
            let d = f16_at(x, 0) * f32_at(y, 0);
            let mut sumi = _mm256_setzero_si256();
            for ib in 0..8 {
                let q = arr::<8>(x, 2 + 8 * ib);
                let aux1 = u32::from_le_bytes([q[4], q[5], q[6], q[7]]);
                let g = grid4([0, 1, 2, 3].map(|l| IQ2XXS_GRID[q[l] as usize]));
                let ys = apply_signs(load32(arr(y, 4 + 32 * ib)), ksigns4(aux1));
                let ls = _mm256_set1_epi16((2 * (aux1 >> 28) + 1) as i16);
                sumi = _mm256_add_epi32(sumi, dot_scaled(g, ys, ls));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        0.125 * hsum_ps(acc)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_iq2xs_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.chunks_exact(74).zip(a.chunks_exact(292)) {
            let d = f16_at(x, 0) * f32_at(y, 0);
            let mut sumi = _mm256_setzero_si256();
            for ib in 0..8 {
                let qs: [u16; 4] =
                    [0, 1, 2, 3].map(|l| u16::from_le_bytes(*arr(x, 2 + 8 * ib + 2 * l)));
                let g = grid4(qs.map(|q| IQ2XS_GRID[(q & 511) as usize]));
                let mut signs = 0u32;
                for (l, &q) in qs.iter().enumerate() {
                    signs |= (KSIGNS_IQ2XS[(q >> 9) as usize] as u32) << (8 * l);
                }
                let ys = apply_signs(load32(arr(y, 4 + 32 * ib)), signs);
                let sc = x[66 + ib];
                let ls = scale_pair(2 * (sc & 0xF) as i16 + 1, 2 * (sc >> 4) as i16 + 1);
                sumi = _mm256_add_epi32(sumi, dot_scaled(g, ys, ls));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        0.125 * hsum_ps(acc)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_iq2s_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.chunks_exact(82).zip(a.chunks_exact(292)) {
            let d = f16_at(x, 0) * f32_at(y, 0);
            let mut sumi = _mm256_setzero_si256();
            for ib in 0..8 {
                let qh = x[66 + ib] as usize;
                let g = grid4([0, 1, 2, 3].map(|l| {
                    IQ2S_GRID[x[2 + 4 * ib + l] as usize | ((qh << (8 - 2 * l)) & 0x300)]
                }));
                let signs = u32::from_le_bytes(*arr(x, 34 + 4 * ib));
                let ys = apply_signs(load32(arr(y, 4 + 32 * ib)), signs);
                let sc = x[74 + ib];
                let ls = scale_pair(2 * (sc & 0xF) as i16 + 1, 2 * (sc >> 4) as i16 + 1);
                sumi = _mm256_add_epi32(sumi, dot_scaled(g, ys, ls));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        0.125 * hsum_ps(acc)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_iq3xxs_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.chunks_exact(98).zip(a.chunks_exact(292)) {
            let d = f16_at(x, 0) * f32_at(y, 0);
            let mut sumi = _mm256_setzero_si256();
            for ib in 0..8 {
                let q = arr::<8>(x, 2 + 8 * ib);
                let aux = u32::from_le_bytes(*arr(x, 66 + 4 * ib));
                let g = grid8([0, 1, 2, 3, 4, 5, 6, 7].map(|k| IQ3XXS_GRID[q[k] as usize]));
                let ys = apply_signs(load32(arr(y, 4 + 32 * ib)), ksigns4(aux));
                let ls = _mm256_set1_epi16((2 * (aux >> 28) + 1) as i16);
                sumi = _mm256_add_epi32(sumi, dot_scaled(g, ys, ls));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        0.25 * hsum_ps(acc)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_iq3s_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.chunks_exact(110).zip(a.chunks_exact(292)) {
            let d = f16_at(x, 0) * f32_at(y, 0);
            let mut sumi = _mm256_setzero_si256();
            for ib in 0..8 {
                let qs = arr::<8>(x, 2 + 8 * ib);
                let qh = x[66 + ib] as usize;
                let g = grid8([0, 1, 2, 3, 4, 5, 6, 7].map(|k| {
                    let l = k / 2;
                    let hi = if k % 2 == 0 {
                        (qh << (8 - 2 * l)) & 256
                    } else {
                        (qh << (7 - 2 * l)) & 256
                    };
                    IQ3S_GRID[qs[k] as usize | hi]
                }));
                let signs = u32::from_le_bytes(*arr(x, 74 + 4 * ib));
                let ys = apply_signs(load32(arr(y, 4 + 32 * ib)), signs);
                let sc = x[106 + ib / 2];
                let s = if ib % 2 == 0 { sc & 0xF } else { sc >> 4 };
                let ls = _mm256_set1_epi16(2 * s as i16 + 1);
                sumi = _mm256_add_epi32(sumi, dot_scaled(g, ys, ls));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_ps(acc)
    }
}

/// Σ over 32 elements of `grid·y` for a signed {−1, 0, 1} grid: `sign(y, grid)` is exact.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ternary_dot(g: __m256i, y: __m256i, scale: __m256i) -> __m256i {
    unsafe { dot_scaled(_mm256_set1_epi8(1), _mm256_sign_epi8(y, g), scale) }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_iq1s_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut sumf = 0f32;
        for (x, y) in w.chunks_exact(50).zip(a.chunks_exact(292)) {
            let mut sumi = _mm256_setzero_si256();
            let mut sumi1 = 0i32;
            for ib in 0..8 {
                let qh = u16::from_le_bytes(*arr(x, 34 + 2 * ib)) as usize;
                let g =
                    grid4([0, 1, 2, 3].map(|l| {
                        IQ1S_GRID[x[2 + 4 * ib + l] as usize | (((qh >> (3 * l)) & 7) << 8)]
                    }));
                let ls = 2 * ((qh >> 12) & 7) as i32 + 1;
                let y32 = load32(arr(y, 4 + 32 * ib));
                sumi = _mm256_add_epi32(sumi, ternary_dot(g, y32, _mm256_set1_epi16(ls as i16)));
                let bs = i16::from_le_bytes(*arr(y, 260 + 4 * ib)) as i32
                    + i16::from_le_bytes(*arr(y, 262 + 4 * ib)) as i32;
                let delta = if qh & 0x8000 != 0 { -1 } else { 1 };
                sumi1 += ls * delta * bs;
            }
            let s = hsum_epi32(sumi) as f32 + crate::blocks::IQ1_DELTA * sumi1 as f32;
            sumf += f16_at(x, 0) * f32_at(y, 0) * s;
        }
        sumf
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_iq1m_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut sumf = 0f32;
        for (x, y) in w.chunks_exact(56).zip(a.chunks_exact(292)) {
            let sc: [u16; 4] = [0, 1, 2, 3].map(|k| u16::from_le_bytes(*arr(x, 48 + 2 * k)));
            let dbits = (sc[0] >> 12)
                | ((sc[1] >> 8) & 0x00f0)
                | ((sc[2] >> 4) & 0x0f00)
                | (sc[3] & 0xf000);
            let d = f16::from_bits(dbits).to_f32();
            let mut sum1 = _mm256_setzero_si256();
            let mut sum2 = _mm256_setzero_si256();
            for ib in 0..8 {
                let qh = [x[32 + 2 * ib] as usize, x[33 + 2 * ib] as usize];
                let mut idx = [0usize; 4];
                let mut deltas = [0u64; 4];
                for l in 0..4 {
                    let h = qh[l / 2];
                    let (hi, neg) = if l % 2 == 0 {
                        ((h << 8) & 0x700, h & 0x08 != 0)
                    } else {
                        ((h << 4) & 0x700, h & 0x80 != 0)
                    };
                    idx[l] = x[4 * ib + l] as usize | hi;
                    deltas[l] = if neg {
                        0xFFFF_FFFF_FFFF_FFFF
                    } else {
                        0x0101_0101_0101_0101
                    };
                }
                let g = grid4(idx.map(|i| IQ1S_GRID[i]));
                let shift = 6 * (ib % 2);
                let s = sc[ib / 2] >> shift;
                let ls = scale_pair(2 * (s & 7) as i16 + 1, 2 * ((s >> 3) & 7) as i16 + 1);
                let y32 = load32(arr(y, 4 + 32 * ib));
                sum1 = _mm256_add_epi32(sum1, ternary_dot(g, y32, ls));
                sum2 = _mm256_add_epi32(sum2, ternary_dot(grid4(deltas), y32, ls));
            }
            let s = hsum_epi32(sum1) as f32 + crate::blocks::IQ1_DELTA * hsum_epi32(sum2) as f32;
            sumf += d * f32_at(y, 0) * s;
        }
        sumf
    }
}

/// 32 signed IQ4 values of a block from its 16 nibble bytes, in element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_values(qs: &[u8; 16]) -> __m256i {
    // SAFETY: the table is 16 readable bytes; `loadu` has no alignment requirement.
    unsafe {
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()));
        _mm256_shuffle_epi8(table, nibbles32(qs))
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_iq4nl_q8_0(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.chunks_exact(18).zip(a.chunks_exact(34)) {
            let d = _mm256_set1_ps(f16_mul(x, 0, y, 0));
            let p = dot_i8(iq4_values(arr(x, 2)), load32(arr(y, 2)));
            acc = _mm256_fmadd_ps(d, p, acc);
        }
        hsum_ps(acc)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_iq4xs_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.chunks_exact(136).zip(a.chunks_exact(292)) {
            let d = f16_at(x, 0) * f32_at(y, 0);
            let h = u16::from_le_bytes(*arr(x, 2));
            let mut sumi = _mm256_setzero_si256();
            for ib in 0..8 {
                let lo = (x[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
                let ls = (lo as i16 | ((((h >> (2 * ib)) & 3) as i16) << 4)) - 32;
                let v = iq4_values(arr(x, 8 + 16 * ib));
                let yv = load32(arr(y, 4 + 32 * ib));
                let p = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(yv, v));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, _mm256_set1_epi16(ls)));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_ps(acc)
    }
}

/// Σ of all 256 activation codes of a Q8_K block, from its group sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8k_total(y: &[u8]) -> i32 {
    unsafe { hsum_epi32(_mm256_madd_epi16(load32(arr(y, 260)), _mm256_set1_epi16(1))) }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_tq2_0_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut sumf = 0f32;
        let m3 = _mm256_set1_epi8(3);
        let ones = _mm256_set1_epi16(1);
        for (x, y) in w.chunks_exact(66).zip(a.chunks_exact(292)) {
            let mut sumi = _mm256_setzero_si256();
            for c in 0..2 {
                let q = load32(arr(x, 32 * c));
                let parts = [
                    _mm256_and_si256(q, m3),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(q), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(q), m3),
                ];
                for (n, &p) in parts.iter().enumerate() {
                    let y32 = load32(arr(y, 4 + 128 * c + 32 * n));
                    sumi = _mm256_add_epi32(sumi, dot_scaled(p, y32, ones));
                }
            }
            let s = hsum_epi32(sumi) - q8k_total(y);
            sumf += s as f32 * (f32_at(y, 0) * f16_at(x, 64));
        }
        sumf
    }
}

/// Trits (0, 1, 2) at position `n` of 16 packed bytes: `(b·3^n mod 256)·3 >> 8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn trits16(b: __m128i, pow: i16) -> __m128i {
    unsafe {
        let w = _mm256_cvtepu8_epi16(b);
        let m = _mm256_and_si256(
            _mm256_mullo_epi16(w, _mm256_set1_epi16(pow)),
            _mm256_set1_epi16(0xFF),
        );
        let t = _mm256_srli_epi16::<8>(_mm256_mullo_epi16(m, _mm256_set1_epi16(3)));
        _mm_packus_epi16(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t))
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_tq1_0_q8k(w: &[u8], a: &[u8]) -> f32 {
    const POW3: [i16; 5] = [1, 3, 9, 27, 81];
    unsafe {
        let mut sumf = 0f32;
        let ones = _mm256_set1_epi16(1);
        for (x, y) in w.chunks_exact(54).zip(a.chunks_exact(292)) {
            let mut sumi = _mm256_setzero_si256();
            let q0 = load16(arr(x, 0));
            let q1 = load16(arr(x, 16));
            let q2 = load16(arr(x, 32));
            for (n, &p) in POW3.iter().enumerate() {
                let t = _mm256_set_m128i(trits16(q1, p), trits16(q0, p));
                let y32 = load32(arr(y, 4 + 32 * n));
                sumi = _mm256_add_epi32(sumi, dot_scaled(t, y32, ones));
            }
            for pair in 0..2 {
                let (n0, n1) = (2 * pair, 2 * pair + 1);
                let t = _mm256_set_m128i(trits16(q2, POW3[n1]), trits16(q2, POW3[n0]));
                let y32 = load32(arr(y, 164 + 16 * n0));
                sumi = _mm256_add_epi32(sumi, dot_scaled(t, y32, ones));
            }
            let t4 = trits16(q2, POW3[4]);
            let p = _mm_madd_epi16(
                _mm_maddubs_epi16(t4, load16(arr(y, 228))),
                _mm_set1_epi16(1),
            );
            let p = _mm_add_epi32(p, _mm_unpackhi_epi64(p, p));
            let p = _mm_add_epi32(p, _mm_shuffle_epi32::<0b01>(p));
            let mut s = hsum_epi32(sumi) + _mm_cvtsi128_si32(p);
            for n in 0..4 {
                for j in 0..4 {
                    let t = crate::blocks::tq1_trit(x[48 + j], n);
                    s += (t + 1) * (y[4 + 240 + 4 * n + j] as i8 as i32);
                }
            }
            let s = s - q8k_total(y);
            sumf += s as f32 * (f16_at(x, 52) * f32_at(y, 0));
        }
        sumf
    }
}
