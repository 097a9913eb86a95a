//! Softmax and SwiGLU rows with a vectorized `exp`. Every tier evaluates exactly the same f32
//! operations per element (the same fused multiply-adds, roundings and selects) and sums in
//! the same order, so the scalar code here is the spec, the tiers agree bit for bit, and a
//! value's result does not depend on where in a row, or in which batch, it sits.
//!
//! The libm `expf` these replace took ~9% of a 1B model's prompt time in attention's softmax
//! alone (one `exp` per query-key pair).

use crate::dispatch::Isa;

/// Inputs below this give 0 (`2^n` would leave the normal range).
const EXP_LO: f32 = -87.33654;
/// Inputs above this give +inf (keeps `n ≤ 127`).
const EXP_HI: f32 = 88.3;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 in two parts: `LN2_HI` has few significant bits, so `n·LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1/k! for k = 6 down to 2: the Taylor polynomial of `e^r` on |r| ≤ ln2/2 (error < 2^-23).
const POLY: [f32; 5] = [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5];

/// `e^x` within 2 ulp: `x = n·ln2 + r`, `e^r` by its degree-6 Taylor polynomial, times `2^n`
/// through the exponent bits. 0 below −87.34, +inf above 88.3, NaN for NaN.
#[inline]
pub fn exp(x: f32) -> f32 {
    // `max`/`min` as the x86 instructions order them (the second operand for NaN).
    let xc = if x > EXP_LO { x } else { EXP_LO };
    let xc = if xc < EXP_HI { xc } else { EXP_HI };
    let n = (xc * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_HI, xc);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = POLY[0];
    for c in &POLY[1..] {
        p = p.mul_add(r, *c);
    }
    let p = p.mul_add(r, 1.0).mul_add(r, 1.0);
    let y = p * f32::from_bits(((n as i32 + 127) << 23) as u32);
    if x.is_nan() {
        x
    } else if x < EXP_LO {
        0.0
    } else if x > EXP_HI {
        f32::INFINITY
    } else {
        y
    }
}

/// `x ← softmax(x)`: `e^(x_i − max)` summed in 16 f32 lanes (lane `i mod 16`), the lanes
/// added pairwise (`l + 8`, `+ 4`, `+ 2`, `+ 1`), each value then times `1/sum`.
pub fn softmax(x: &mut [f32]) {
    // SAFETY: the active tier runs on this CPU.
    unsafe { softmax_on(crate::active_isa(), x) }
}

/// `gate ← gate·σ(gate)·up` (SiLU-gated linear unit), elementwise.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    // SAFETY: the active tier runs on this CPU.
    unsafe { swiglu_on(crate::active_isa(), gate, up) }
}

/// [`softmax`] on tier `isa`.
///
/// # Safety
/// This CPU must run `isa` (checked once by the callers, not per row).
unsafe fn softmax_on(isa: Isa, x: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the tier's CPU features are present (the caller's contract).
        Isa::Avx512 => unsafe { x86::softmax_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 | Isa::AvxVnni => unsafe { x86::softmax_avx2(x) },
        _ => softmax_scalar(x),
    }
}

/// [`swiglu`] on tier `isa`.
///
/// # Safety
/// As [`softmax_on`].
unsafe fn swiglu_on(isa: Isa, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: lengths");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the tier's CPU features are present (the caller's contract).
        Isa::Avx512 => unsafe { x86::swiglu_avx512(gate, up) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 | Isa::AvxVnni => unsafe { x86::swiglu_avx2(gate, up) },
        _ => swiglu_scalar(gate, up),
    }
}

fn max_of(x: &[f32]) -> f32 {
    x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// The reference: the scalar tail of the SIMD versions, over the whole row.
pub fn softmax_scalar(x: &mut [f32]) {
    let max = max_of(x);
    let mut lanes = [0f32; 16];
    exp_tail(x, max, 0, &mut lanes);
    scale(x, 1.0 / sum_lanes(&lanes));
}

pub fn swiglu_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = silu_mul(*g, *u);
    }
}

#[inline]
fn silu_mul(g: f32, u: f32) -> f32 {
    // `0 − g`, as the vector code negates (the same bits for ±0 and NaN).
    g / (1.0 + exp(0.0 - g)) * u
}

/// `x[i] ← e^(x[i] − max)` for `i ≥ start`, added into lane `i mod 16`.
fn exp_tail(x: &mut [f32], max: f32, start: usize, lanes: &mut [f32; 16]) {
    for (i, v) in x.iter_mut().enumerate().skip(start) {
        *v = exp(*v - max);
        lanes[i % 16] += *v;
    }
}

fn sum_lanes(l: &[f32; 16]) -> f32 {
    let s8: [f32; 8] = std::array::from_fn(|i| l[i] + l[i + 8]);
    let s4: [f32; 4] = std::array::from_fn(|i| s8[i] + s8[i + 4]);
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

fn scale(x: &mut [f32], k: f32) {
    for v in x {
        *v *= k;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    macro_rules! exp_body {
        ($x:expr, $set1:ident, $max:ident, $min:ident, $mul:ident, $round:expr,
         $fmadd:ident, $cvt:ident, $add_i:ident, $set1_i:ident, $slli:ident, $cast:ident) => {{
            let xc = $min($max($x, $set1(EXP_LO)), $set1(EXP_HI));
            let n = $round($mul(xc, $set1(LOG2E)));
            let r = $fmadd(n, $set1(-LN2_HI), xc);
            let r = $fmadd(n, $set1(-LN2_LO), r);
            let mut p = $set1(POLY[0]);
            for c in &POLY[1..] {
                p = $fmadd(p, r, $set1(*c));
            }
            let p = $fmadd($fmadd(p, r, $set1(1.0)), r, $set1(1.0));
            let e = $slli::<23>($add_i($cvt(n), $set1_i(127)));
            $mul(p, $cast(e))
        }};
    }

    /// [`exp`] of 16 values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        let y = exp_body!(
            x,
            _mm512_set1_ps,
            _mm512_max_ps,
            _mm512_min_ps,
            _mm512_mul_ps,
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>,
            _mm512_fmadd_ps,
            _mm512_cvtps_epi32,
            _mm512_add_epi32,
            _mm512_set1_epi32,
            _mm512_slli_epi32,
            _mm512_castsi512_ps
        );
        let low = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP_LO));
        let high = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(EXP_HI));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        let y = _mm512_mask_blend_ps(low, y, _mm512_setzero_ps());
        let y = _mm512_mask_blend_ps(high, y, _mm512_set1_ps(f32::INFINITY));
        _mm512_mask_blend_ps(nan, y, x)
    }

    /// [`exp`] of 8 values.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        let y = exp_body!(
            x,
            _mm256_set1_ps,
            _mm256_max_ps,
            _mm256_min_ps,
            _mm256_mul_ps,
            _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>,
            _mm256_fmadd_ps,
            _mm256_cvtps_epi32,
            _mm256_add_epi32,
            _mm256_set1_epi32,
            _mm256_slli_epi32,
            _mm256_castsi256_ps
        );
        let low = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_LO));
        let high = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(EXP_HI));
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), low);
        let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), high);
        _mm256_blendv_ps(y, x, nan)
    }

    fn load16(x: &[f32]) -> __m512 {
        let x: &[f32; 16] = x.try_into().expect("16 values");
        // SAFETY: 16 readable f32; `loadu` has no alignment requirement (AVX-512F checked by
        // the callers' target features).
        unsafe { _mm512_loadu_ps(x.as_ptr()) }
    }

    fn store16(x: &mut [f32], v: __m512) {
        let x: &mut [f32; 16] = x.try_into().expect("16 values");
        // SAFETY: 16 writable f32.
        unsafe { _mm512_storeu_ps(x.as_mut_ptr(), v) }
    }

    fn load8(x: &[f32]) -> __m256 {
        let x: &[f32; 8] = x.try_into().expect("8 values");
        // SAFETY: 8 readable f32.
        unsafe { _mm256_loadu_ps(x.as_ptr()) }
    }

    fn store8(x: &mut [f32], v: __m256) {
        let x: &mut [f32; 8] = x.try_into().expect("8 values");
        // SAFETY: 8 writable f32.
        unsafe { _mm256_storeu_ps(x.as_mut_ptr(), v) }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn softmax_avx512(x: &mut [f32]) {
        let max = max_of(x);
        let m = _mm512_set1_ps(max);
        let mut acc = _mm512_setzero_ps();
        let full = x.len() / 16 * 16;
        for c in x[..full].chunks_exact_mut(16) {
            let e = exp16(_mm512_sub_ps(load16(c), m));
            store16(c, e);
            acc = _mm512_add_ps(acc, e);
        }
        let mut lanes = [0f32; 16];
        store16(&mut lanes, acc);
        exp_tail(x, max, full, &mut lanes);
        let inv = 1.0 / sum_lanes(&lanes);
        let k = _mm512_set1_ps(inv);
        for c in x[..full].chunks_exact_mut(16) {
            store16(c, _mm512_mul_ps(load16(c), k));
        }
        scale(&mut x[full..], inv);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn softmax_avx2(x: &mut [f32]) {
        let max = max_of(x);
        let m = _mm256_set1_ps(max);
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let full = x.len() / 16 * 16;
        for c in x[..full].chunks_exact_mut(16) {
            let (a, b) = c.split_at_mut(8);
            let ea = exp8(_mm256_sub_ps(load8(a), m));
            let eb = exp8(_mm256_sub_ps(load8(b), m));
            store8(a, ea);
            store8(b, eb);
            lo = _mm256_add_ps(lo, ea);
            hi = _mm256_add_ps(hi, eb);
        }
        let mut lanes = [0f32; 16];
        store8(&mut lanes[..8], lo);
        store8(&mut lanes[8..], hi);
        exp_tail(x, max, full, &mut lanes);
        let inv = 1.0 / sum_lanes(&lanes);
        let k = _mm256_set1_ps(inv);
        for c in x[..full].chunks_exact_mut(8) {
            store8(c, _mm256_mul_ps(load8(c), k));
        }
        scale(&mut x[full..], inv);
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn swiglu_avx512(gate: &mut [f32], up: &[f32]) {
        let full = gate.len() / 16 * 16;
        let one = _mm512_set1_ps(1.0);
        for (g, u) in gate[..full].chunks_exact_mut(16).zip(up.chunks_exact(16)) {
            let gv = load16(g);
            let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv));
            let s = _mm512_div_ps(gv, _mm512_add_ps(one, e));
            store16(g, _mm512_mul_ps(s, load16(u)));
        }
        swiglu_scalar(&mut gate[full..], &up[full..]);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
        let full = gate.len() / 8 * 8;
        let one = _mm256_set1_ps(1.0);
        for (g, u) in gate[..full].chunks_exact_mut(8).zip(up.chunks_exact(8)) {
            let gv = load8(g);
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
            let s = _mm256_div_ps(gv, _mm256_add_ps(one, e));
            store8(g, _mm256_mul_ps(s, load8(u)));
        }
        swiglu_scalar(&mut gate[full..], &up[full..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::available_isas;
    use crate::test_rng::lcg;

    /// Values across exp's whole range, its edges, and the special ones.
    fn inputs() -> Vec<f32> {
        let mut seed = 7;
        let mut v: Vec<f32> = (0..4000).map(|_| 100.0 * lcg(&mut seed)).collect();
        v.extend((0..1000).map(|_| 2.0 * lcg(&mut seed)));
        v.extend([
            0.0,
            -0.0,
            EXP_LO,
            EXP_LO - 1e-5,
            EXP_HI,
            EXP_HI + 1e-5,
            -1e30,
            1e30,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
        ]);
        v
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value() {
        for x in inputs() {
            let got = exp(x);
            if x.is_nan() {
                assert!(got.is_nan());
                continue;
            }
            if x < EXP_LO {
                assert_eq!(got, 0.0, "{x}");
                continue;
            }
            if x > EXP_HI {
                assert_eq!(got, f32::INFINITY, "{x}");
                continue;
            }
            let exact = (x as f64).exp();
            let rel = ((got as f64 - exact) / exact).abs();
            assert!(
                rel <= 2.0 * f32::EPSILON as f64,
                "exp({x}) = {got}, exact {exact}"
            );
        }
    }

    /// Every tier gives the scalar code's bits, at every length (vector bodies and tails).
    #[test]
    fn tiers_equal_the_scalar_reference() {
        let v = inputs();
        for isa in available_isas() {
            for len in [0, 1, 7, 8, 15, 16, 17, 33, 100, 257, v.len()] {
                let start = (len * 31) % (v.len() - len + 1);
                // Softmax rows: finite scores with a few masked (-inf) ones.
                let mut row: Vec<f32> = v[start..start + len]
                    .iter()
                    .map(|&x| {
                        if x.is_nan() || x.is_infinite() {
                            f32::NEG_INFINITY
                        } else {
                            x
                        }
                    })
                    .collect();
                if let Some(r) = row.first_mut() {
                    *r = 1.0;
                }
                let mut want = row.clone();
                softmax_scalar(&mut want);
                let total: f32 = want.iter().sum();
                assert!((total - 1.0).abs() < 1e-5 || len == 0, "{total}");
                let mut got = row.clone();
                // SAFETY: `isa` comes from `available_isas`.
                unsafe { softmax_on(isa, &mut got) };
                assert_eq!(bits(&got), bits(&want), "softmax {isa} len {len}");

                let gate = v[start..start + len].to_vec();
                let up: Vec<f32> = gate.iter().map(|g| 0.5 - g / 3.0).collect();
                let mut want = gate.clone();
                swiglu_scalar(&mut want, &up);
                let mut got = gate.clone();
                // SAFETY: as above.
                unsafe { swiglu_on(isa, &mut got, &up) };
                assert_eq!(bits(&got), bits(&want), "swiglu {isa} len {len}");
            }
        }
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn softmax_matches_the_exact_one() {
        let mut seed = 3;
        let row: Vec<f32> = (0..300).map(|_| 20.0 * lcg(&mut seed)).collect();
        let mut got = row.clone();
        softmax(&mut got);
        let max = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        for (g, &v) in got.iter().zip(&row) {
            let exact = (v as f64 - max).exp() / sum;
            assert!(
                (*g as f64 - exact).abs() <= 1e-6 * exact + 1e-12,
                "{g} vs {exact}"
            );
        }
    }
}
