//! The repacking of `crate::repack` for whole groups of 16 rows, vectorized: 16 bytes at the
//! same offset of each row are transposed into four vectors whose lane `r` is one word of row
//! `r`, and the word operations of the reference (`repack::quads`) then run on 16 rows at once.
//! Repacking is per GEMM call, so at small batches it costs as much as the products.

use super::*;
use crate::repack::{GroupMut, PackKind, LANES};

/// Words `off..off + 16` (as four u32) of each of the 16 rows of `rows`: vector `k` holds word
/// `k` of row `r` in lane `r`.
///
/// # Safety
/// The CPU must support AVX-512 F. (Not a `target_feature` function, so that it can be
/// `inline(always)`: LLVM kept it out of line, returning the vectors through memory.)
#[inline(always)]
unsafe fn words(rows: &[u8], row_bytes: usize, off: usize) -> [__m512i; 4] {
    let at = |r: usize| -> &[u8; 16] { arr(rows, r * row_bytes + off) };
    // SAFETY: the caller runs on a CPU with AVX-512 F; the loads read 16-byte arrays.
    unsafe {
        // z[j]: rows j, j + 4, j + 8, j + 12 in its four 128-bit lanes.
        let mut z = [_mm512_setzero_si512(); 4];
        for (j, zj) in z.iter_mut().enumerate() {
            let v = _mm512_castsi128_si512(_mm_loadu_si128(at(j).as_ptr().cast()));
            let v = _mm512_inserti32x4::<1>(v, _mm_loadu_si128(at(j + 4).as_ptr().cast()));
            let v = _mm512_inserti32x4::<2>(v, _mm_loadu_si128(at(j + 8).as_ptr().cast()));
            *zj = _mm512_inserti32x4::<3>(v, _mm_loadu_si128(at(j + 12).as_ptr().cast()));
        }
        // A 4×4 transpose within each 128-bit lane l: element i of output k is word k of
        // z[i]'s lane l, which is row i + 4l, lane 4l + i.
        let a0 = _mm512_unpacklo_epi32(z[0], z[1]);
        let a1 = _mm512_unpackhi_epi32(z[0], z[1]);
        let a2 = _mm512_unpacklo_epi32(z[2], z[3]);
        let a3 = _mm512_unpackhi_epi32(z[2], z[3]);
        [
            _mm512_unpacklo_epi64(a0, a2),
            _mm512_unpackhi_epi64(a0, a2),
            _mm512_unpacklo_epi64(a1, a3),
            _mm512_unpackhi_epi64(a1, a3),
        ]
    }
}

/// [`words`] of `rows` (16 rows of `row_bytes`) at `off`, inside the `target_feature`
/// functions of this file.
macro_rules! words {
    ($rows:expr, $row_bytes:expr, $off:expr) => {
        // SAFETY: every caller is an AVX-512 `target_feature` function of this file.
        unsafe { words($rows, $row_bytes, $off) }
    };
}

/// The u32 at `off` of each of the 16 rows, one per lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn word_rows(rows: &[u8], row_bytes: usize, off: usize) -> __m512i {
    let w = |r: usize| i32_at(rows, r * row_bytes + off) as u32 as u64;
    let p = |i: usize| (w(2 * i) | (w(2 * i + 1) << 32)) as i64;
    _mm512_set_epi64(p(7), p(6), p(5), p(4), p(3), p(2), p(1), p(0))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn store_epi32(out: &mut [u8], off: usize, v: __m512i) {
    let o: &mut [u8; 64] = (&mut out[off..off + 64]).try_into().expect("64 bytes");
    // SAFETY: `o` is 64 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_si512(o.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn store_i32s(out: &mut [i32], off: usize, v: __m512i) {
    let o: &mut [i32; 16] = (&mut out[off..off + 16]).try_into().expect("16 i32");
    // SAFETY: `o` is 16 writable i32.
    unsafe { _mm512_storeu_si512(o.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn store_f32s(out: &mut [f32], off: usize, v: __m512) {
    let o: &mut [f32; 16] = (&mut out[off..off + 16]).try_into().expect("16 f32");
    // SAFETY: `o` is 16 writable f32.
    unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) }
}

/// The f16 at `off` of each row as 16 f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f16_rows(rows: &[u8], row_bytes: usize, off: usize) -> __m512 {
    cvt_f16x16(f16x16(rows, off, row_bytes, LANES))
}

/// Bits `4k..4k + 4` of each lane to bit 4 of its four bytes (the Q5 fifth bits of a quad):
/// the multiply puts bit i at 8i without carries, as `i + 7j` never collide for i, j < 4.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn fifth_bits(qh: __m512i, k: u32) -> __m512i {
    let x = _mm512_and_si512(
        _mm512_srlv_epi32(qh, _mm512_set1_epi32(4 * k as i32)),
        _mm512_set1_epi32(0xF),
    );
    let spread = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x0020_4081));
    _mm512_slli_epi32::<4>(_mm512_and_si512(spread, _mm512_set1_epi32(0x0101_0101)))
}

/// See [`crate::repack::PackFn`].
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn pack_group(
    kind: PackKind,
    rows: &[u8],
    row_bytes: usize,
    n_cols: usize,
    out: GroupMut<'_>,
) {
    assert_eq!(rows.len(), LANES * row_bytes, "pack_group: 16 rows");
    match kind {
        PackKind::Q4K | PackKind::Q5K | PackKind::Q6K => pack_k(kind, rows, row_bytes, n_cols, out),
        _ => pack32(kind, rows, row_bytes, n_cols, out),
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pack32(kind: PackKind, rows: &[u8], row_bytes: usize, n_cols: usize, out: GroupMut<'_>) {
    let low4 = _mm512_set1_epi32(0x0F0F_0F0F);
    // Block bytes, offsets of qs and qh, the value bias (see `repack::quads`), mins.
    let (bytes, qs, qh, bias, mins) = match kind {
        PackKind::Q4_0 => (18, 2, None, 0x7878_7878, false),
        PackKind::Q4_1 => (20, 4, None, 0, true),
        PackKind::Q5_0 => (22, 6, Some(2), 0x7070_7070, false),
        PackKind::Q5_1 => (24, 8, Some(4), 0, true),
        _ => (34, 2, None, 0, false), // Q8_0
    };
    let bias = _mm512_set1_epi32(bias);
    for b in 0..n_cols / 32 {
        let o = bytes * b;
        let codes = 512 * b;
        if kind == PackKind::Q8_0 {
            let flip = _mm512_set1_epi32(0x8080_8080u32 as i32);
            for h in 0..2 {
                for (k, v) in words!(rows, row_bytes, o + qs + 16 * h)
                    .into_iter()
                    .enumerate()
                {
                    store_epi32(
                        out.codes,
                        codes + 64 * (4 * h + k),
                        _mm512_xor_si512(v, flip),
                    );
                }
            }
        } else {
            let high = qh.map(|q| word_rows(rows, row_bytes, o + q));
            for (k, v) in words!(rows, row_bytes, o + qs).into_iter().enumerate() {
                let mut lo = _mm512_and_si512(v, low4);
                let mut hi = _mm512_and_si512(_mm512_srli_epi32::<4>(v), low4);
                if let Some(h) = high {
                    lo = _mm512_or_si512(lo, fifth_bits(h, k as u32));
                    hi = _mm512_or_si512(hi, fifth_bits(h, k as u32 + 4));
                }
                store_epi32(out.codes, codes + 64 * k, _mm512_add_epi32(lo, bias));
                store_epi32(out.codes, codes + 64 * (k + 4), _mm512_add_epi32(hi, bias));
            }
        }
        store_f32s(out.d, LANES * b, f16_rows(rows, row_bytes, o));
        let m = if mins {
            f16_rows(rows, row_bytes, o + 2)
        } else {
            _mm512_setzero_ps()
        };
        store_f32s(out.m, LANES * b, m);
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pack_k(kind: PackKind, rows: &[u8], row_bytes: usize, n_cols: usize, out: GroupMut<'_>) {
    let low4 = _mm512_set1_epi32(0x0F0F_0F0F);
    let low2 = _mm512_set1_epi32(0x0303_0303);
    let ones = _mm512_set1_epi32(0x0101_0101);
    let bytes = match kind {
        PackKind::Q4K => 144,
        PackKind::Q5K => 176,
        _ => 210,
    };
    for sb in 0..n_cols / 256 {
        let o = bytes * sb;
        let codes = 4096 * sb;
        if kind == PackKind::Q6K {
            // Words of ql (32) and qh (16), as the reference combines them.
            let mut ql = [_mm512_setzero_si512(); 32];
            let mut qh = [_mm512_setzero_si512(); 16];
            for i in 0..8 {
                ql[4 * i..4 * i + 4].copy_from_slice(&words!(rows, row_bytes, o + 16 * i));
            }
            for i in 0..4 {
                qh[4 * i..4 * i + 4].copy_from_slice(&words!(rows, row_bytes, o + 128 + 16 * i));
            }
            for h in 0..2 {
                for k in 0..4 {
                    for i in 0..8 {
                        let l = ql[16 * h + 8 * (k % 2) + i];
                        let l = if k / 2 == 1 {
                            _mm512_srli_epi32::<4>(l)
                        } else {
                            l
                        };
                        let hb = _mm512_srlv_epi32(qh[8 * h + i], _mm512_set1_epi32(2 * k as i32));
                        let v = _mm512_or_si512(
                            _mm512_and_si512(l, low4),
                            _mm512_slli_epi32::<4>(_mm512_and_si512(hb, low2)),
                        );
                        store_epi32(out.codes, codes + 64 * (32 * h + 8 * k + i), v);
                    }
                }
            }
            // Scales: i8 j in byte j % 4 of word j / 4, sign-extended.
            let sc = words!(rows, row_bytes, o + 192);
            let mut s = [_mm512_setzero_si512(); 16];
            for (j, sj) in s.iter_mut().enumerate() {
                let up = _mm512_sllv_epi32(sc[j / 4], _mm512_set1_epi32(24 - 8 * (j % 4) as i32));
                *sj = _mm512_srai_epi32::<24>(up);
                store_i32s(out.scales, LANES * (16 * sb + j), *sj);
            }
            for j in 0..8 {
                let pair = _mm512_or_si512(
                    _mm512_and_si512(s[2 * j], _mm512_set1_epi32(0xFFFF)),
                    _mm512_slli_epi32::<16>(s[2 * j + 1]),
                );
                store_i32s(out.pairs, LANES * (8 * sb + j), pair);
            }
            store_f32s(out.d, LANES * sb, f16_rows(rows, row_bytes, o + 208));
            store_f32s(out.m, LANES * sb, _mm512_setzero_ps());
            continue;
        }
        // Q4_K / Q5_K: d|dmin, then the 12 scale bytes as words a, b, c.
        let [dm, a, b, c] = words!(rows, row_bytes, o);
        let lo16 = _mm512_set1_epi32(0xFFFF);
        let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_and_si512(dm, lo16)));
        let dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(dm)));
        store_f32s(out.d, LANES * sb, d);
        store_f32s(out.m, LANES * sb, dmin);
        let byte = |v: __m512i, i: u32| {
            _mm512_and_si512(
                _mm512_srlv_epi32(v, _mm512_set1_epi32(8 * i as i32)),
                _mm512_set1_epi32(0xFF),
            )
        };
        for j in 0..4u32 {
            // `get_scale_min_k4`: j < 4 from the low 6 bits of a / b; j + 4 from c's nibbles
            // with the top 2 bits of a / b above them.
            let (aj, bj, cj) = (byte(a, j), byte(b, j), byte(c, j));
            let six = _mm512_set1_epi32(63);
            let sc_lo = _mm512_and_si512(aj, six);
            let mn_lo = _mm512_and_si512(bj, six);
            let top = |v: __m512i| _mm512_slli_epi32::<4>(_mm512_srli_epi32::<6>(v));
            let sc_hi = _mm512_or_si512(_mm512_and_si512(cj, _mm512_set1_epi32(0xF)), top(aj));
            let mn_hi = _mm512_or_si512(_mm512_srli_epi32::<4>(cj), top(bj));
            let pair = |m: __m512i| _mm512_mullo_epi32(m, _mm512_set1_epi32(0x1_0001));
            let j = j as usize;
            store_i32s(out.scales, LANES * (8 * sb + j), sc_lo);
            store_i32s(out.scales, LANES * (8 * sb + j + 4), sc_hi);
            store_i32s(out.pairs, LANES * (8 * sb + j), pair(mn_lo));
            store_i32s(out.pairs, LANES * (8 * sb + j + 4), pair(mn_hi));
        }
        let (qs, q5) = if kind == PackKind::Q4K {
            (16, false)
        } else {
            (48, true)
        };
        let mut qh = [_mm512_setzero_si512(); 8];
        if q5 {
            qh[..4].copy_from_slice(&words!(rows, row_bytes, o + 16));
            qh[4..].copy_from_slice(&words!(rows, row_bytes, o + 32));
        }
        for g in 0..8 {
            // Word w = 4g + k of qs: chunk c = w / 8, position i = w % 8.
            for (k, v) in words!(rows, row_bytes, o + qs + 16 * g)
                .into_iter()
                .enumerate()
            {
                let w = 4 * g + k;
                let (c, i) = (w / 8, w % 8);
                let mut lo = _mm512_and_si512(v, low4);
                let mut hi = _mm512_and_si512(_mm512_srli_epi32::<4>(v), low4);
                if q5 {
                    let bit = |s: usize| {
                        let h = _mm512_srlv_epi32(qh[i], _mm512_set1_epi32(s as i32));
                        _mm512_slli_epi32::<4>(_mm512_and_si512(h, ones))
                    };
                    lo = _mm512_or_si512(lo, bit(2 * c));
                    hi = _mm512_or_si512(hi, bit(2 * c + 1));
                }
                store_epi32(out.codes, codes + 64 * (16 * c + i), lo);
                store_epi32(out.codes, codes + 64 * (16 * c + 8 + i), hi);
            }
        }
    }
}
