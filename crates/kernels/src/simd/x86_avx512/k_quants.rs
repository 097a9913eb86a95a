//! Dot products of Q4_K, Q5_K and Q6_K with Q8_K activations (f32 d at 0, codes at 4, i16
//! group sums at 260; 292 bytes per super-block). Per super-block the integer sums are formed
//! 64 codes at a time (`vpmaddubsw`, then `vpdpwssd` with the sub-block scales) and reduced to
//! one exact i32; the float steps are the parent module's one chain per row.

use super::*;

/// The 8 six-bit scales and mins of a Q4_K/Q5_K block, one per byte (ggml's
/// `get_scale_min_k4` for every sub-block at once).
#[inline(always)]
fn scales_mins(q: &[u8; 12]) -> (u64, u64) {
    let a = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
    let b = u32::from_le_bytes([q[4], q[5], q[6], q[7]]);
    let c = u32::from_le_bytes([q[8], q[9], q[10], q[11]]);
    const LOW6: u32 = 0x3F3F_3F3F;
    const LOW4: u32 = 0x0F0F_0F0F;
    const LOW2: u32 = 0x0303_0303;
    // Sub-blocks 0..4: the low 6 bits of bytes 0..4 (scales) and 4..8 (mins). Sub-blocks
    // 4..8: nibbles of bytes 8..12, with the top 2 bits of bytes 0..4 / 4..8 above them.
    let sc_hi = (c & LOW4) | (((a >> 6) & LOW2) << 4);
    let mn_hi = ((c >> 4) & LOW4) | (((b >> 6) & LOW2) << 4);
    (
        (a & LOW6) as u64 | ((sc_hi as u64) << 32),
        (b & LOW6) as u64 | ((mn_hi as u64) << 32),
    )
}

/// `vpshufb` controls that spread i16 scale `2c` over the low half of a vector and `2c + 1`
/// over the high half, from 8 i16 scales repeated in every 128-bit lane.
static SCALE_PAIR: [[u8; 64]; 4] = {
    let mut t = [[0u8; 64]; 4];
    let mut c = 0;
    while c < 4 {
        let mut i = 0;
        while i < 64 {
            let s = if i < 32 { 2 * c } else { 2 * c + 1 };
            t[c][i] = (2 * s + i % 2) as u8;
            i += 1;
        }
        c += 1;
    }
    t
};

/// `vpermw` indices: vector `v` of a Q6_K super-block (64 codes, groups `4v..4v + 4`) takes
/// group `4v + k`'s scale in 128-bit lane `k`.
static Q6K_SCALES: [[u16; 32]; 4] = {
    let mut t = [[0u16; 32]; 4];
    let mut v = 0;
    while v < 4 {
        let mut s = 0;
        while s < 32 {
            t[v][s] = (4 * v + s / 8) as u16;
            s += 1;
        }
        v += 1;
    }
    t
};

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_table(t: &[u8; 64]) -> __m512i {
    load64(t)
}

/// 16-bit shift counts: `lo` in the low half of a vector, `hi` in the high half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn halves_epi16(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_set1_epi16(lo)),
        _mm256_set1_epi16(hi),
    )
}

/// `[d, dmin]` of a Q4_K/Q5_K block times the activation scale, as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dm_times(x: &[u8], da: f32) -> (f32, f32) {
    let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(i32_at(x, 0)));
    let dm = _mm_mul_ps(dm, _mm_set1_ps(da));
    (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)))
}

/// Q4_K (`Q5 = false`) and Q5_K: `isum = Σ_j sc_j·Σ q·qa`, `msum = Σ_j m_j·(bsum_2j +
/// bsum_2j+1)`, then `acc ← fma(d·da, isum, acc)`, `acc ← fma(−(dmin·da), msum, acc)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_scale_min<const Q5: bool>(w: &[u8], a: &[u8]) -> f32 {
    let (wb, qs) = if Q5 { (176, 48) } else { (144, 16) };
    let low4 = _mm512_set1_epi8(0x0F);
    let nibble_shift = halves_epi16(0, 4);
    let mut acc = 0f32;
    for (x, y) in w.chunks_exact(wb).zip(a.chunks_exact(292)) {
        let (sc, mn) = scales_mins(arr(x, 4));
        let sc16 = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
        let qh = if Q5 {
            _mm512_broadcast_i64x4(load32(arr(x, 16)))
        } else {
            _mm512_setzero_si512()
        };
        let mut sumi = _mm512_setzero_si512();
        for c in 0..4 {
            // Chunk c: low nibbles are sub-block 2c (low half), high nibbles 2c + 1.
            let v = _mm512_broadcast_i64x4(load32(arr(x, qs + 32 * c)));
            let mut q = _mm512_and_si512(_mm512_srlv_epi16(v, nibble_shift), low4);
            if Q5 {
                // Fifth bits: bit 2c of qh byte l for element 64c + l, bit 2c + 1 for 64c+32+l.
                let bit = halves_epi16(0x0101 << (2 * c), 0x0101 << (2 * c + 1));
                let k = _mm512_test_epi8_mask(qh, bit);
                q = _mm512_mask_add_epi8(q, k, q, _mm512_set1_epi8(16));
            }
            let p = _mm512_maddubs_epi16(q, load64(arr(y, 4 + 64 * c)));
            let s = _mm512_shuffle_epi8(sc16, load_table(&SCALE_PAIR[c]));
            sumi = _mm512_dpwssd_epi32(sumi, p, s);
        }
        let isum = hsum_epi32(sumi);
        let mn8 = _mm_cvtsi64_si128(mn as i64);
        let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mn8, mn8));
        let msum = hsum256_epi32(_mm256_madd_epi16(load32(arr(y, 260)), mins));
        let (d, dmin) = dm_times(x, f32_at(y, 0));
        acc = d.mul_add(isum as f32, acc);
        acc = (-dmin).mul_add(msum as f32, acc);
    }
    acc
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q4k_q8k(w: &[u8], a: &[u8]) -> f32 {
    dot_scale_min::<false>(w, a)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q5k_q8k(w: &[u8], a: &[u8]) -> f32 {
    dot_scale_min::<true>(w, a)
}

/// Q6_K: `isum = Σ_g sc_g·Σ q·qa − 32·Σ_g sc_g·bsum_g` with the unsigned codes `q` in 0..64,
/// then `acc ← fma(d·da, isum, acc)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q6k_q8k(w: &[u8], a: &[u8]) -> f32 {
    let low4 = _mm512_set1_epi8(0x0F);
    let high2 = _mm512_set1_epi8(0x30);
    // Bit pairs 0/2 of qh to bits 4-5 for elements l / l + 32, pairs 4/6 for l + 64 / l + 96.
    let up01 = halves_epi16(4, 2);
    let down23 = halves_epi16(0, 2);
    let mut acc = 0f32;
    for (x, y) in w.chunks_exact(210).zip(a.chunks_exact(292)) {
        let sc = _mm256_cvtepi8_epi16(load16(arr(x, 192)));
        let sc32 = _mm512_zextsi256_si512(sc);
        let mut sumi = _mm512_setzero_si512();
        for h in 0..2 {
            let ql = load64(arr(x, 64 * h));
            let qh = _mm512_broadcast_i64x4(load32(arr(x, 128 + 32 * h)));
            let q01 = _mm512_or_si512(
                _mm512_and_si512(ql, low4),
                _mm512_and_si512(_mm512_sllv_epi16(qh, up01), high2),
            );
            let q23 = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), low4),
                _mm512_and_si512(_mm512_srlv_epi16(qh, down23), high2),
            );
            for (v, q) in [(2 * h, q01), (2 * h + 1, q23)] {
                let p = _mm512_maddubs_epi16(q, load64(arr(y, 4 + 64 * v)));
                // SAFETY: the table is 32 u16, 64 readable bytes.
                let idx = unsafe { _mm512_loadu_si512(Q6K_SCALES[v].as_ptr().cast()) };
                let s = _mm512_permutexvar_epi16(idx, sc32);
                sumi = _mm512_dpwssd_epi32(sumi, p, s);
            }
        }
        let offset = hsum256_epi32(_mm256_madd_epi16(sc, load32(arr(y, 260))));
        let isum = hsum_epi32(sumi) - 32 * offset;
        // d is the high half of the block's last 4 bytes.
        let d = _mm_cvtss_f32(_mm_movehdup_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(i32_at(
            x, 206,
        )))));
        acc = (d * f32_at(y, 0)).mul_add(isum as f32, acc);
    }
    acc
}
