//! Dot products of Q4_K, Q5_K and Q6_K with Q8_K activations (f32 d at 0, codes at 4, i16
//! group sums at 260; 292 bytes per super-block). Per super-block the integer sums are formed
//! 32 codes at a time (`vpmaddubsw`, then `vpdpwssd` with the sub-block scale) and reduced to
//! one exact i32; the float steps are the parent module's one chain per row.
//!
//! These use 256-bit vectors: a 512-bit version needs a shuffle per 64 codes to spread two
//! sub-blocks' scales, and on Zen 4 (512-bit operations on 256-bit units) it ran about 10%
//! slower than AVX2, where this one runs faster (VNNI fuses the multiply-add and the add).

use super::*;

/// The 8 six-bit scales and mins of a Q4_K/Q5_K block, one per byte (ggml's
/// `get_scale_min_k4` for every sub-block at once).
#[inline(always)]
fn scales_mins(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
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
        ((a & LOW6) as u64 | ((sc_hi as u64) << 32)).to_le_bytes(),
        ((b & LOW6) as u64 | ((mn_hi as u64) << 32)).to_le_bytes(),
    )
}

/// `[Σa, Σb, Σa, Σb]`: the sums of two vectors of 8 i32 (exact), kept in a vector so that the
/// float steps after them need no round trip through general registers.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn hsum2_epi32(a: __m256i, b: __m256i) -> __m128i {
    let h = _mm256_hadd_epi32(a, b);
    let s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
    _mm_hadd_epi32(s, s)
}

/// One super-block `x` of Q4_K (`Q5 = false`) or Q5_K against its Q8_K block `y`: `isum = Σ_j sc_j·Σ q·qa`, `msum = Σ_j m_j·(bsum_2j +
/// bsum_2j+1)`, then `acc ← fma(d·da, isum, acc)`, `acc ← fma(−(dmin·da), msum, acc)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn sb_scale_min<const Q5: bool>(x: &[u8], y: &[u8], mut acc: __m128) -> __m128 {
    let qs = if Q5 { 48 } else { 16 };
    let low4 = _mm256_set1_epi8(0x0F);
    let sixteen = _mm256_set1_epi8(16);
    {
        prefetch_ahead(x, x.len());
        let (sc, mn) = scales_mins(arr(x, 4));
        let qh = if Q5 {
            load32(arr(x, 16))
        } else {
            _mm256_setzero_si256()
        };
        // One accumulator per chunk: a single one would chain the dpwssd latencies.
        let mut part = [_mm256_setzero_si256(); 4];
        for (c, pc) in part.iter_mut().enumerate() {
            // Chunk c: low nibbles are sub-block 2c, high nibbles 2c + 1.
            let q4 = load32(arr(x, qs + 32 * c));
            let mut lo = _mm256_and_si256(q4, low4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), low4);
            if Q5 {
                // Fifth bits: bit 2c of qh byte l for element 64c + l, bit 2c + 1 for 64c+32+l.
                let k_lo = _mm256_test_epi8_mask(qh, _mm256_set1_epi8(1 << (2 * c)));
                let k_hi = _mm256_test_epi8_mask(qh, _mm256_set1_epi8((1u8 << (2 * c + 1)) as i8));
                lo = _mm256_mask_add_epi8(lo, k_lo, lo, sixteen);
                hi = _mm256_mask_add_epi8(hi, k_hi, hi, sixteen);
            }
            let p_lo = _mm256_maddubs_epi16(lo, load32(arr(y, 4 + 64 * c)));
            let p_hi = _mm256_maddubs_epi16(hi, load32(arr(y, 36 + 64 * c)));
            let s = _mm256_dpwssd_epi32(*pc, p_lo, _mm256_set1_epi16(sc[2 * c] as i16));
            *pc = _mm256_dpwssd_epi32(s, p_hi, _mm256_set1_epi16(sc[2 * c + 1] as i16));
        }
        let sumi = _mm256_add_epi32(
            _mm256_add_epi32(part[0], part[1]),
            _mm256_add_epi32(part[2], part[3]),
        );
        let mn8 = _mm_cvtsi64_si128(i64::from_le_bytes(mn));
        let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mn8, mn8));
        let msum = _mm256_madd_epi16(load32(arr(y, 260)), mins);
        // [isum, msum] as f32, times [d·da, dmin·da].
        let sums = _mm_cvtepi32_ps(hsum2_epi32(sumi, msum));
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(i32_at(x, 0)));
        let dm = _mm_mul_ps(dm, _mm_set1_ps(f32_at(y, 0)));
        acc = _mm_fmadd_ss(dm, sums, acc);
        acc = _mm_fnmadd_ss(_mm_movehdup_ps(dm), _mm_movehdup_ps(sums), acc);
    }
    acc
}

/// `vpshufb` controls that spread two i16 scales over a vector from 8 i16 scales repeated in
/// both 128-bit lanes: for run `k` of 32 codes, the low lane takes scale `2k` and the high
/// lane `2k + 1`.
static SCALE_RUN: [[u8; 32]; 4] = {
    let mut t = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < 32 {
            let s = 2 * k + i / 16;
            t[k][i] = (2 * s + i % 2) as u8;
            i += 1;
        }
        k += 1;
    }
    t
};

/// One super-block `x` of Q6_K against its Q8_K block `y`: `isum = Σ_g sc_g·Σ q·qa − 32·Σ_g sc_g·bsum_g` with the unsigned codes `q` in 0..64,
/// then `acc ← fma(d·da, isum, acc)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn sb_q6k(x: &[u8], y: &[u8], mut acc: __m128) -> __m128 {
    let low4 = _mm256_set1_epi8(0x0F);
    let high2 = _mm256_set1_epi8(0x30);
    {
        prefetch_ahead(x, 210);
        let sc16 = _mm256_cvtepi8_epi16(load16(arr(x, 192)));
        // One accumulator per run of 32 codes: a single one would chain the dpwssd latencies.
        let mut part = [_mm256_setzero_si256(); 4];
        for h in 0..2 {
            let ql0 = load32(arr(x, 64 * h));
            let ql1 = load32(arr(x, 64 * h + 32));
            let qh = load32(arr(x, 128 + 32 * h));
            // Elements l, l + 32, l + 64, l + 96 of this half: nibbles of ql0 / ql1 and the
            // bit pairs 0, 2, 4, 6 of qh moved to bits 4-5.
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, low4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), high2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, low4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), high2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low4),
                    _mm256_and_si256(qh, high2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), high2),
                ),
            ];
            // This half's 8 scales in both lanes.
            let sc_h = if h == 0 {
                _mm256_permute2x128_si256::<0x00>(sc16, sc16)
            } else {
                _mm256_permute2x128_si256::<0x11>(sc16, sc16)
            };
            for (k, &qk) in q.iter().enumerate() {
                let p = _mm256_maddubs_epi16(qk, load32(arr(y, 4 + 128 * h + 32 * k)));
                let s = _mm256_shuffle_epi8(sc_h, load32(&SCALE_RUN[k]));
                part[k] = _mm256_dpwssd_epi32(part[k], p, s);
            }
        }
        let sumi = _mm256_add_epi32(
            _mm256_add_epi32(part[0], part[1]),
            _mm256_add_epi32(part[2], part[3]),
        );
        let offset = _mm256_madd_epi16(sc16, load32(arr(y, 260)));
        let s = hsum2_epi32(sumi, offset);
        let isum = _mm_sub_epi32(s, _mm_slli_epi32::<5>(_mm_shuffle_epi32::<0b01>(s)));
        // d is the high half of the block's last 4 bytes.
        let d = _mm_movehdup_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(i32_at(x, 206))));
        let d = _mm_mul_ss(d, _mm_set_ss(f32_at(y, 0)));
        acc = _mm_fmadd_ss(d, _mm_cvtepi32_ps(isum), acc);
    }
    acc
}

/// The K-quant types, for a const generic.
const Q4K: u8 = 0;
const Q5K: u8 = 1;
const Q6K: u8 = 2;

/// `R` rows of K-quant type `T` against one Q8_K row, side by side (see [`STREAMS`]), super-
/// block by super-block: each row's operations are those of a row alone.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn rows_side_by_side<const T: u8, const R: usize>(ws: [&[u8]; R], a: &[u8]) -> [f32; R] {
    let wb = [144, 176, 210][T as usize];
    let nsb = (ws[0].len() / wb).min(a.len() / 292);
    let mut acc = [_mm_setzero_ps(); R];
    for i in 0..nsb {
        let y = &a[292 * i..292 * (i + 1)];
        for (w, acc) in ws.iter().zip(acc.iter_mut()) {
            let x = &w[wb * i..wb * (i + 1)];
            *acc = match T {
                Q4K => sb_scale_min::<false>(x, y, *acc),
                Q5K => sb_scale_min::<true>(x, y, *acc),
                _ => sb_q6k(x, y, *acc),
            };
        }
    }
    acc.map(|v| _mm_cvtss_f32(v))
}

macro_rules! entry_points {
    ($($t:ident: $dot:ident, $rows:ident;)*) => {$(
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(super) unsafe fn $dot(w: &[u8], a: &[u8]) -> f32 {
            rows_side_by_side::<$t, 1>([w], a)[0]
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(super) unsafe fn $rows(w: &[u8], a: &[u8], out: &mut [f32]) {
            in_streams(w, out, |ws| rows_side_by_side::<$t, STREAMS>(ws, a), |w| {
                rows_side_by_side::<$t, 1>([w], a)[0]
            })
        }
    )*};
}

entry_points! {
    Q4K: vec_dot_q4k_q8k, dot_rows_q4k_q8k;
    Q5K: vec_dot_q5k_q8k, dot_rows_q5k_q8k;
    Q6K: vec_dot_q6k_q8k, dot_rows_q6k_q8k;
}
