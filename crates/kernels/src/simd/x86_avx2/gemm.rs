//! The AVX2 GEMM micro-kernel (see `crate::gemm`): a tile of 2 unpacked weight rows × 4
//! activation rows, so each 32-code weight load serves 4 products and each activation load 2.
//!
//! Each tile also comes as an AVX-VNNI twin (`VNNI = true`, entry points `*_vnni`): `vpdpbusd`
//! makes the 4-product lane sums in one instruction where AVX2 takes `maddubs` + `madd`, and
//! `vpdpwssd` scales and adds them in one. The lane sums are the same integers (AVX2's
//! `maddubs` pairs cannot saturate here, see the parent module), so both twins give the same
//! bits.

use super::*;
use crate::gemm::{ActRow, KQuant, KWeightRow, WeightRow, TILE_R, TILE_T};

/// 32 codes at `off` (bounds-checked).
#[inline(always)]
unsafe fn codes32<T>(s: &[T], off: usize) -> __m256i {
    let c = &s[off..off + 32];
    debug_assert_eq!(std::mem::size_of::<T>(), 1);
    // SAFETY: `c` is 32 one-byte values; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(c.as_ptr().cast()) }
}

/// See [`crate::gemm::TileFn`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_tile(
    signed: bool,
    w: &[WeightRow<'_>; TILE_R],
    a: &[ActRow<'_>; TILE_T],
    out: &mut [[f32; TILE_T]; TILE_R],
) {
    unsafe { tile_signed::<false>(signed, w, a, out) }
}

/// [`gemm_tile`] with AVX-VNNI.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVX-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn gemm_tile_vnni(
    signed: bool,
    w: &[WeightRow<'_>; TILE_R],
    a: &[ActRow<'_>; TILE_T],
    out: &mut [[f32; TILE_T]; TILE_R],
) {
    unsafe { tile_signed::<true>(signed, w, a, out) }
}

/// [`tile`] for signed or unsigned codes, inlined into its entry points.
#[inline(always)]
unsafe fn tile_signed<const VNNI: bool>(
    signed: bool,
    w: &[WeightRow<'_>; TILE_R],
    a: &[ActRow<'_>; TILE_T],
    out: &mut [[f32; TILE_T]; TILE_R],
) {
    unsafe {
        if signed {
            tile::<true, VNNI>(w, a, out)
        } else {
            tile::<false, VNNI>(w, a, out)
        }
    }
}

/// 4-product lane sums of unsigned `u` and signed `s` bytes as f32: [`dot_u8_i8`], or one
/// `vpdpbusd` with `VNNI` (the caller then has AVX-VNNI).
#[inline(always)]
unsafe fn lane_sums<const VNNI: bool>(u: __m256i, s: __m256i) -> __m256 {
    unsafe {
        if VNNI {
            _mm256_cvtepi32_ps(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s))
        } else {
            dot_u8_i8(u, s)
        }
    }
}

/// Per output, the operations of the dot kernels (`legacy_dot!`) in their order:
/// one FMA chain of `(d_w·d_a)·Σ q·qa` over the blocks, reduced as `hsum_ps` (four at once).
/// Inlined into its entry points, whose features it runs with.
#[inline(always)]
unsafe fn tile<const SIGNED: bool, const VNNI: bool>(
    w: &[WeightRow<'_>; TILE_R],
    a: &[ActRow<'_>; TILE_T],
    out: &mut [[f32; TILE_T]; TILE_R],
) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); TILE_T]; TILE_R];
        for b in 0..a[0].n_blocks() {
            let wq: [__m256i; TILE_R] = std::array::from_fn(|r| codes32(w[r].q, 32 * b));
            let ws: [__m256; TILE_R] = std::array::from_fn(|r| _mm256_set1_ps(w[r].scales[b]));
            for t in 0..TILE_T {
                let qa = codes32(a[t].q(b), 0);
                let da = _mm256_set1_ps(a[t].d(b));
                for r in 0..TILE_R {
                    let p = if SIGNED {
                        // `dot_i8`'s sign move.
                        let (u, s) = (_mm256_sign_epi8(wq[r], wq[r]), _mm256_sign_epi8(qa, wq[r]));
                        lane_sums::<VNNI>(u, s)
                    } else {
                        lane_sums::<VNNI>(wq[r], qa)
                    };
                    acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(ws[r], da), p, acc[r][t]);
                }
            }
        }
        for r in 0..TILE_R {
            let [a0, a1, a2, a3] = acc[r];
            _mm_storeu_ps(out[r].as_mut_ptr(), hsum4_ps(a0, a1, a2, a3));
        }
    }
}

/// See [`crate::gemm::KTileFn`]: per output, the integer lane sums and float steps of
/// `vec_dot_q4k_q8k` / `vec_dot_q6k_q8k` (Q8_K rows: f32 d at 0, codes at 4, i16 group sums
/// at 260; 292 bytes per super-block).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_tile_k(
    kind: KQuant,
    w: &[KWeightRow<'_>; TILE_R],
    a: &[&[u8]; TILE_T],
    out: &mut [[f32; TILE_T]; TILE_R],
) {
    unsafe { tile_k_of::<false>(kind, w, a, out) }
}

/// [`gemm_tile_k`] with AVX-VNNI.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVX-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn gemm_tile_k_vnni(
    kind: KQuant,
    w: &[KWeightRow<'_>; TILE_R],
    a: &[&[u8]; TILE_T],
    out: &mut [[f32; TILE_T]; TILE_R],
) {
    unsafe { tile_k_of::<true>(kind, w, a, out) }
}

/// [`tile_k`] for `kind`, inlined into its entry points.
#[inline(always)]
unsafe fn tile_k_of<const VNNI: bool>(
    kind: KQuant,
    w: &[KWeightRow<'_>; TILE_R],
    a: &[&[u8]; TILE_T],
    out: &mut [[f32; TILE_T]; TILE_R],
) {
    unsafe {
        match kind {
            KQuant::Q4K => tile_k::<true, VNNI>(w, a, out),
            KQuant::Q6K => tile_k::<false, VNNI>(w, a, out),
        }
    }
}

/// Inlined into its entry points, whose features it runs with.
#[inline(always)]
unsafe fn tile_k<const Q4K: bool, const VNNI: bool>(
    w: &[KWeightRow<'_>; TILE_R],
    a: &[&[u8]; TILE_T],
    out: &mut [[f32; TILE_T]; TILE_R],
) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); TILE_T]; TILE_R];
        let mut acc_m = [[_mm256_setzero_ps(); TILE_T]; TILE_R];
        for sb in 0..w[0].d.len() {
            let mut sumi = [[_mm256_setzero_si256(); TILE_T]; TILE_R];
            for k in 0..8 {
                let c = 256 * sb + 32 * k;
                let wq: [__m256i; TILE_R] = std::array::from_fn(|r| codes32(w[r].codes, c));
                let ws: [__m256i; TILE_R] = std::array::from_fn(|r| {
                    _mm256_loadu_si256(w[r].scales[c / 2..c / 2 + 16].as_ptr().cast())
                });
                for t in 0..TILE_T {
                    let qa = load32(arr(a[t], 292 * sb + 4 + 32 * k));
                    for r in 0..TILE_R {
                        let pairs = _mm256_maddubs_epi16(wq[r], qa);
                        sumi[r][t] = if VNNI {
                            _mm256_dpwssd_avx_epi32(sumi[r][t], pairs, ws[r])
                        } else {
                            _mm256_add_epi32(sumi[r][t], _mm256_madd_epi16(pairs, ws[r]))
                        };
                    }
                }
            }
            for r in 0..TILE_R {
                let aux = _mm256_loadu_si256(w[r].aux[16 * sb..16 * sb + 16].as_ptr().cast());
                for t in 0..TILE_T {
                    let y = &a[t][292 * sb..292 * (sb + 1)];
                    let yd = f32_at(y, 0);
                    let bsums = load32(arr(y, 260));
                    if Q4K {
                        let d = _mm256_set1_ps(w[r].d[sb] * yd);
                        let dmin = _mm256_set1_ps(w[r].dmin[sb] * yd);
                        let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, aux));
                        acc_m[r][t] = _mm256_fmadd_ps(dmin, m, acc_m[r][t]);
                        acc[r][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[r][t]), acc[r][t]);
                    } else {
                        let d = _mm256_set1_ps(w[r].d[sb] * yd);
                        let offset = _mm256_madd_epi16(aux, bsums);
                        let s = _mm256_sub_epi32(sumi[r][t], _mm256_slli_epi32::<5>(offset));
                        acc[r][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[r][t]);
                    }
                }
            }
        }
        for r in 0..TILE_R {
            for t in 0..TILE_T {
                out[r][t] = if Q4K {
                    hsum_ps(acc[r][t]) - hsum_ps(acc_m[r][t])
                } else {
                    hsum_ps(acc[r][t])
                };
            }
        }
    }
}
