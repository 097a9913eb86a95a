//! The kernels compute what the formats mean: on every tier, `dot(w, quantize(x))` stays
//! within the activation quantization error of `Σ dequantize(w)·x`. This ties each dot
//! product's block layout to the dequantizer's (the SIMD-vs-scalar tests cannot: a layout
//! mistake shared by both would pass them).

mod common;

use common::*;
use rllm_kernels::dispatch::{available_isas, dot_kernel_for};
use rllm_kernels::types::GgmlType;

/// Worst-case error of one activation value relative to its block's largest magnitude:
/// rounding to a code (1/254) plus the f16 rounding of the block scale (127 · 2^-11 / 127).
const Q8_ELEM_ERR: f64 = 1.0 / 254.0 + 1.0 / 2048.0;

fn check(ty: GgmlType, n: usize, x: &[f32], w: &[u8]) {
    let mut wd = vec![0f32; n];
    rllm_kernels::dequantize_row(ty, w, &mut wd);
    let exact: f64 = wd.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum();
    let abs_sum: f64 = wd
        .iter()
        .zip(x)
        .map(|(&a, &b)| (a as f64 * b as f64).abs())
        .sum();

    for isa in available_isas() {
        let k = dot_kernel_for(ty, isa).unwrap();
        let mut a = vec![0u8; k.act_row_bytes(n)];
        k.quantize_act(x, &mut a);
        let got = k.dot(n, w, &a) as f64;
        let mag = dot_magnitude(ty, k.act, n, w, &a);
        let tol = match k.act {
            GgmlType::F32 => 1e-5 * abs_sum,
            // Relative rounding of normal f16 values, absolute (half the spacing, 2^-25) of
            // subnormal ones.
            GgmlType::F16 => {
                let w_abs: f64 = wd.iter().map(|v| v.abs() as f64).sum();
                abs_sum / 2048.0 + w_abs * 2f64.powi(-25) + 1e-5 * mag
            }
            GgmlType::BF16 => abs_sum / 256.0 + 1e-5 * mag,
            act => {
                // Σ_i |w_i| · amax(block of i) · Q8_ELEM_ERR, with |w_i| = |scale term| + |min
                // term|, plus float slack (and the f16 rounding of Q8_1's s).
                let bs = act.block_size();
                let amax: Vec<f32> = x
                    .chunks_exact(bs)
                    .flat_map(|b| {
                        let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                        std::iter::repeat_n(m, bs)
                    })
                    .collect();
                Q8_ELEM_ERR * 1.001 * weighted_magnitude(ty, n, w, &amax) + 1e-3 * mag
            }
        };
        let err = (got - exact).abs();
        assert!(
            err <= tol,
            "{ty} {isa} n={n}: dot {got} vs exact {exact} (err {err:e}, tol {tol:e})"
        );
    }
}

/// `Σ |w_i|·v_i` (v ≥ 0) with `|w_i|` the magnitude of the weight's scale and min terms:
/// `dot_magnitude` against `v` passed as an F32 row.
fn weighted_magnitude(ty: GgmlType, n: usize, w: &[u8], v: &[f32]) -> f64 {
    let vb: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    dot_magnitude(ty, GgmlType::F32, n, w, &vb)
}

#[test]
fn dot_of_quantized_activations_approximates_exact_dot() {
    let mut rng = Rng::new(0xacc0_0001);
    for ty in QUANT_TYPES.into_iter().chain(FLOAT_TYPES) {
        for n in lengths(ty) {
            for acts in [
                Acts::Unit,
                Acts::Spread,
                Acts::Sparse,
                Acts::Ties,
                Acts::Zero,
            ] {
                for _ in 0..4 {
                    let act = dot_kernel_for(ty, rllm_kernels::Isa::Scalar).unwrap().act;
                    let w = weight_row(&mut rng, ty, n, Scales::Normal);
                    let x = act_row(&mut rng, act, n, acts);
                    check(ty, n, &x, &w);
                }
            }
        }
    }
}
