//! AVX2 dot products of Q2_K, Q3_K, Q5_K (and Q8_K / Q8_1 weights) with their activation
//! formats. Same contract as the parent module: `target_feature` functions touching memory only
//! through bounds-checked array views. Compare ggml `src/ggml-cpu/arch/x86/quants.c`.

use super::*;

/// The 8 i16 scales of half `h` (0 or 1) of a 16-scale super-block, in both 128-bit lanes;
/// `Q6K_SCALE_SHUFFLE[k]` then spreads the pair for run `k` of 32 elements (one scale per lane).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn half_scales(sc16: __m256i, h: usize) -> __m256i {
    unsafe {
        if h == 0 {
            _mm256_permute2x128_si256::<0x00>(sc16, sc16)
        } else {
            _mm256_permute2x128_si256::<0x11>(sc16, sc16)
        }
    }
}

/// Q2_K: `d·da·Σ_g sc_g·Σ q·qa − dmin·da·Σ_g m_g·bsum_g`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q2k_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm256_setzero_ps();
        let m3 = _mm256_set1_epi8(3);
        for (x, y) in w.chunks_exact(84).zip(a.chunks_exact(292)) {
            let dy = f32_at(y, 0);
            let d = _mm256_set1_ps(dy * f16::from_bits(u16::from_le_bytes(*arr(x, 80))).to_f32());
            let dmin =
                _mm256_set1_ps(dy * f16::from_bits(u16::from_le_bytes(*arr(x, 82))).to_f32());
            let sc = arr::<16>(x, 0);
            let mins16 = _mm256_cvtepu8_epi16(_mm_srli_epi16::<4>(_mm_and_si128(
                load16(sc),
                _mm_set1_epi8(0xF0u8 as i8),
            )));
            let summs = _mm256_madd_epi16(load32(arr(y, 260)), mins16);
            acc_m = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(summs), acc_m);
            let sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(load16(sc), _mm_set1_epi8(0x0F)));
            let mut sumi = _mm256_setzero_si256();
            for h in 0..2 {
                let q2 = load32(arr(x, 16 + 32 * h));
                let sc_h = half_scales(sc16, h);
                let q = [
                    _mm256_and_si256(q2, m3),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(q2), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q2), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(q2), m3),
                ];
                for (k, &qk) in q.iter().enumerate() {
                    let p = _mm256_maddubs_epi16(qk, load32(arr(y, 4 + 128 * h + 32 * k)));
                    let s = _mm256_shuffle_epi8(sc_h, load32(&Q6K_SCALE_SHUFFLE[k]));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
                }
            }
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_ps(acc) - hsum_ps(acc_m)
    }
}

/// The 16 six-bit Q3_K scales minus 32 as i16 lanes, unpacked with 64-bit integer ops:
/// low nibbles from bytes 0..8 (scales 0..8 low, 8..16 high), bit pairs from bytes 8..12.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3k_scales16(s: &[u8; 12]) -> __m256i {
    let a = u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
    let t = u32::from_le_bytes([s[8], s[9], s[10], s[11]]) as u64;
    const M2: u64 = 0x0303_0303;
    const M4: u64 = 0x0F0F_0F0F_0F0F_0F0F;
    // Scale j's high bits are bits 2·(j/4) of byte 8 + j%4.
    let h_lo = (t & M2) | (((t >> 2) & M2) << 32);
    let h_hi = ((t >> 4) & M2) | (((t >> 6) & M2) << 32);
    let lo = (a & M4) | (h_lo << 4);
    let hi = ((a >> 4) & M4) | (h_hi << 4);
    unsafe {
        let v = _mm256_cvtepi8_epi16(_mm_set_epi64x(hi as i64, lo as i64));
        _mm256_sub_epi16(v, _mm256_set1_epi16(32))
    }
}

/// Q3_K with unsigned codes `q + 4·hbit` in `maddubs`: `Σ (sc − 32)·(q − 4)·a =
/// Σ (sc − 32)·q·a − 4·Σ_g (sc_g − 32)·bsum_g`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q3k_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let m3 = _mm256_set1_epi8(3);
        let four = _mm256_set1_epi8(4);
        for (x, y) in w.chunks_exact(110).zip(a.chunks_exact(292)) {
            let d = f16::from_bits(u16::from_le_bytes(*arr(x, 108))).to_f32() * f32_at(y, 0);
            let sc16 = q3k_scales16(arr(x, 96));
            let offset = _mm256_madd_epi16(sc16, load32(arr(y, 260)));
            let hmask = load32(arr(x, 0));
            let mut sumi = _mm256_setzero_si256();
            for h in 0..2 {
                let q2 = load32(arr(x, 32 + 32 * h));
                let sc_h = half_scales(sc16, h);
                // Bit 4h + k of each hmask byte, moved to bit 2 (value 4): shifts stay within
                // a byte once masked.
                let hm = if h == 0 {
                    hmask
                } else {
                    _mm256_srli_epi16::<4>(hmask)
                };
                let hb = [
                    _mm256_slli_epi16::<2>(hm),
                    _mm256_slli_epi16::<1>(hm),
                    hm,
                    _mm256_srli_epi16::<1>(hm),
                ];
                let low = [
                    q2,
                    _mm256_srli_epi16::<2>(q2),
                    _mm256_srli_epi16::<4>(q2),
                    _mm256_srli_epi16::<6>(q2),
                ];
                for k in 0..4 {
                    let q = _mm256_or_si256(
                        _mm256_and_si256(low[k], m3),
                        _mm256_and_si256(hb[k], four),
                    );
                    let p = _mm256_maddubs_epi16(q, load32(arr(y, 4 + 128 * h + 32 * k)));
                    let s = _mm256_shuffle_epi8(sc_h, load32(&Q6K_SCALE_SHUFFLE[k]));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
                }
            }
            let sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32::<2>(offset));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_ps(acc)
    }
}

/// Q5_K: Q4_K's scheme with the fifth bit of each code from `qh`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q5k_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm256_setzero_ps();
        let low4 = _mm256_set1_epi8(0x0F);
        let one = _mm256_set1_epi8(1);
        for (x, y) in w.chunks_exact(176).zip(a.chunks_exact(292)) {
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes(*arr(x, 0))));
            let dm = _mm_mul_ps(dm, _mm_set1_ps(f32_at(y, 0)));
            let d = _mm256_broadcastss_ps(dm);
            let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
            let (sc, mn) = scales_mins_k4(arr(x, 4));
            let mut mins2 = [0u8; 16];
            for (j, &m) in mn.iter().enumerate() {
                mins2[2 * j] = m;
                mins2[2 * j + 1] = m;
            }
            let mins16 = _mm256_cvtepu8_epi16(load16(&mins2));
            let summ = _mm256_madd_epi16(load32(arr(y, 260)), mins16);
            acc_m = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(summ), acc_m);

            let qh = load32(arr(x, 16));
            let mut sumi = _mm256_setzero_si256();
            for c in 0..4 {
                let q4 = load32(arr(x, 48 + 32 * c));
                let (h_lo, h_hi) = match c {
                    0 => (qh, _mm256_srli_epi16::<1>(qh)),
                    1 => (_mm256_srli_epi16::<2>(qh), _mm256_srli_epi16::<3>(qh)),
                    2 => (_mm256_srli_epi16::<4>(qh), _mm256_srli_epi16::<5>(qh)),
                    _ => (_mm256_srli_epi16::<6>(qh), _mm256_srli_epi16::<7>(qh)),
                };
                let lo = _mm256_or_si256(
                    _mm256_and_si256(q4, low4),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(h_lo, one)),
                );
                let hi = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q4), low4),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(h_hi, one)),
                );
                let p_lo = _mm256_maddubs_epi16(lo, load32(arr(y, 4 + 64 * c)));
                let p_hi = _mm256_maddubs_epi16(hi, load32(arr(y, 36 + 64 * c)));
                let p_lo = _mm256_madd_epi16(p_lo, _mm256_set1_epi16(sc[2 * c] as i16));
                let p_hi = _mm256_madd_epi16(p_hi, _mm256_set1_epi16(sc[2 * c + 1] as i16));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
            }
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_ps(acc) - hsum_ps(acc_m)
    }
}

/// Q8_K weights with Q8_K activations: `d·da·Σ q·qa`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q8k_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.chunks_exact(292).zip(a.chunks_exact(292)) {
            let mut p = _mm256_setzero_ps();
            for k in 0..8 {
                let o = 4 + 32 * k;
                p = _mm256_add_ps(p, dot_i8(load32(arr(x, o)), load32(arr(y, o))));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f32_at(x, 0) * f32_at(y, 0)), p, acc);
        }
        hsum_ps(acc)
    }
}

/// Q8_1 weights with Q8_1 activations: `d·da·Σ q·qa` (the sums are unused).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q8_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.chunks_exact(36).zip(a.chunks_exact(36)) {
            let d = _mm256_set1_ps(f16_mul(x, 0, y, 0));
            let p = dot_i8(load32(arr(x, 4)), load32(arr(y, 4)));
            acc = _mm256_fmadd_ps(d, p, acc);
        }
        hsum_ps(acc)
    }
}
