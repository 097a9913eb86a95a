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
    unsafe {
        if signed {
            tile::<true>(w, a, out)
        } else {
            tile::<false>(w, a, out)
        }
    }
}

/// Per output, the operations of the many-rows dot kernels (`legacy_dot!`) in their order:
/// one FMA chain of `(d_w·d_a)·Σ q·qa` over the blocks, reduced by `hsum4_ps`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const SIGNED: bool>(
    w: &[WeightRow<'_>; TILE_R],
    a: &[ActRow<'_>; TILE_T],
    out: &mut [[f32; TILE_T]; TILE_R],
) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); TILE_T]; TILE_R];
        for b in 0..a[0].d.len() {
            let wq: [__m256i; TILE_R] = std::array::from_fn(|r| codes32(w[r].q, 32 * b));
            let ws: [__m256; TILE_R] = std::array::from_fn(|r| _mm256_set1_ps(w[r].scales[b]));
            for t in 0..TILE_T {
                let qa = codes32(a[t].q, 32 * b);
                let da = _mm256_set1_ps(a[t].d[b]);
                for r in 0..TILE_R {
                    let p = if SIGNED {
                        dot_i8(wq[r], qa)
                    } else {
                        dot_u8_i8(wq[r], qa)
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
