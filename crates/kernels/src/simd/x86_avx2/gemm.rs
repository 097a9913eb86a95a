//! The AVX2 GEMM micro-kernel (see `crate::gemm`): a tile of 2 unpacked weight rows × 4
//! activation rows, so each 32-code weight load serves 4 products and each activation load 2.

use super::*;
use crate::gemm::{ActRow, WeightRow, TILE_R, TILE_T};

/// 32 codes at `off` (bounds-checked).
#[inline(always)]
unsafe fn codes32<T>(s: &[T], off: usize) -> __m256i {
    let c = &s[off..off + 32];
    debug_assert_eq!(std::mem::size_of::<T>(), 1);
    // SAFETY: `c` is 32 one-byte values; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(c.as_ptr().cast()) }
}

/// See [`crate::gemm::TileFn`]. Partial tiles repeat their last row; the extra results are
/// written to `out` and ignored by the caller.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_tile(
    signed: bool,
    w: &[WeightRow<'_>],
    a: &[ActRow<'_>],
    out: &mut [[f32; TILE_T]; TILE_R],
) {
    let (Some(&wl), Some(&al)) = (w.last(), a.last()) else {
        return;
    };
    let w: [WeightRow; TILE_R] = std::array::from_fn(|i| *w.get(i).unwrap_or(&wl));
    let a: [ActRow; TILE_T] = std::array::from_fn(|i| *a.get(i).unwrap_or(&al));
    unsafe {
        if signed {
            tile::<true>(&w, &a, out)
        } else {
            tile::<false>(&w, &a, out)
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const SIGNED: bool>(
    w: &[WeightRow<'_>; TILE_R],
    a: &[ActRow<'_>; TILE_T],
    out: &mut [[f32; TILE_T]; TILE_R],
) {
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); TILE_T]; TILE_R];
        for b in 0..a[0].d.len() {
            let wq: [__m256i; TILE_R] = std::array::from_fn(|r| codes32(w[r].q, 32 * b));
            // maddubs wants its first operand unsigned: signed codes give their magnitude
            // and move their sign onto the activations.
            let wu = wq.map(|q| if SIGNED { _mm256_sign_epi8(q, q) } else { q });
            let ws: [__m256; TILE_R] =
                std::array::from_fn(|r| _mm256_loadu_ps(w[r].scales[8 * b..8 * b + 8].as_ptr()));
            for t in 0..TILE_T {
                let qa = codes32(a[t].q, 32 * b);
                let da = _mm256_set1_ps(a[t].d[b]);
                for r in 0..TILE_R {
                    let qa = if SIGNED {
                        _mm256_sign_epi8(qa, wq[r])
                    } else {
                        qa
                    };
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wu[r], qa), ones);
                    let scale = _mm256_mul_ps(ws[r], da);
                    acc[r][t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc[r][t]);
                }
            }
        }
        for r in 0..TILE_R {
            for t in 0..TILE_T {
                out[r][t] = hsum_ps(acc[r][t]);
            }
        }
    }
}
