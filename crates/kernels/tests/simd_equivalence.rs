//! Every SIMD tier against the scalar reference, per type: activation quantizers bit for bit,
//! dot products within `1e-5 · Σ|terms|` (they differ only in float summation order).
//! Random rows cover extreme and zero scales, odd block counts and rounding ties.

mod common;

use common::*;
use rllm_kernels::dispatch::{available_isas, dot_kernel_for, Isa};
use rllm_kernels::types::GgmlType;

const REL_TOL: f64 = 1e-5;

fn simd_isas() -> Vec<Isa> {
    available_isas()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .collect()
}

/// Check one weight type on one tier over all length, scale and activation regimes.
fn check_type(ty: GgmlType, isa: Isa, rng: &mut Rng, rounds: usize) -> usize {
    let scalar = dot_kernel_for(ty, Isa::Scalar).unwrap();
    let simd = dot_kernel_for(ty, isa).unwrap();
    let mut checked = 0;
    for n in lengths(ty) {
        for _ in 0..rounds {
            for scales in ALL_SCALES {
                for acts in ALL_ACTS {
                    let w = weight_row(rng, ty, n, scales);
                    let x = act_row(rng, scalar.act, n, acts);
                    let mut a_ref = vec![0u8; scalar.act_row_bytes(n)];
                    let mut a_simd = vec![0xAAu8; simd.act_row_bytes(n)];
                    scalar.quantize_act(&x, &mut a_ref);
                    simd.quantize_act(&x, &mut a_simd);
                    assert!(
                        a_ref == a_simd,
                        "{ty} {isa}: activation quantizer differs (n={n}, {acts:?})"
                    );

                    let want = scalar.dot(n, &w, &a_ref);
                    let got = simd.dot(n, &w, &a_ref);
                    let mag = dot_magnitude(ty, scalar.act, n, &w, &a_ref);
                    assert!(
                        want.is_finite(),
                        "{ty}: reference overflowed ({scales:?}, {acts:?})"
                    );
                    let err = (got as f64 - want as f64).abs();
                    let tol = REL_TOL * mag + 1e-37;
                    assert!(
                        err <= tol,
                        "{ty} {isa} n={n} {scales:?} {acts:?}: simd {got} vs scalar {want} \
                         (err {err:e}, tol {tol:e})"
                    );
                    checked += 1;
                }
            }
        }
    }
    checked
}

#[test]
fn quantized_dots_match_scalar() {
    let mut rng = Rng::new(0x5eed_0001);
    for isa in simd_isas() {
        for ty in QUANT_TYPES {
            let rounds = if ty.block_size() == 256 { 6 } else { 3 };
            let checked = check_type(ty, isa, &mut rng, rounds);
            assert!(checked > 0);
        }
    }
}

#[test]
fn float_dots_match_scalar() {
    let mut rng = Rng::new(0x5eed_0002);
    for isa in simd_isas() {
        for ty in FLOAT_TYPES {
            check_type(ty, isa, &mut rng, 2);
        }
    }
}

/// Raw activation blocks (not made by a quantizer): any codes in [-127, 127] with finite
/// scales, consistent Q8_K sums. The SIMD dots must not depend on how the codes came about.
#[test]
fn dots_match_scalar_on_raw_activation_blocks() {
    let mut rng = Rng::new(0x5eed_0003);
    for isa in simd_isas() {
        for ty in QUANT_TYPES {
            let scalar = dot_kernel_for(ty, Isa::Scalar).unwrap();
            let simd = dot_kernel_for(ty, isa).unwrap();
            for n in lengths(ty) {
                for scales in ALL_SCALES {
                    let w = weight_row(&mut rng, ty, n, scales);
                    let mut a = raw_act_row(&mut rng, scalar.act, n);
                    if rng.below(4) == 0 {
                        a.iter_mut().for_each(|b| *b = 0);
                    }
                    let want = scalar.dot(n, &w, &a);
                    let got = simd.dot(n, &w, &a);
                    let mag = dot_magnitude(ty, scalar.act, n, &w, &a);
                    let err = (got as f64 - want as f64).abs();
                    assert!(
                        err <= REL_TOL * mag + 1e-37,
                        "{ty} {isa} n={n} {scales:?}: simd {got} vs scalar {want}"
                    );
                }
            }
        }
    }
}

/// Random activation blocks of format `act`: codes in [-127, 127], finite scales.
fn raw_act_row(rng: &mut Rng, act: GgmlType, n: usize) -> Vec<u8> {
    let mut a = rng.bytes(act.row_bytes(n).unwrap());
    for b in a.chunks_exact_mut(act.type_size()) {
        let codes = match act {
            GgmlType::Q8_0 => 2..34,
            GgmlType::Q8_1 => 4..36,
            _ => 4..260,
        };
        for q in &mut b[codes.clone()] {
            if *q == 0x80 {
                *q = 0x81;
            }
        }
        let scale = half::f16::from_f32(rng.log_uniform(-4.0, 1.0));
        b[0..2].copy_from_slice(&scale.to_bits().to_le_bytes());
        match act {
            GgmlType::Q8_1 => {
                let sum: i32 = b[codes].iter().map(|&q| q as i8 as i32).sum();
                let s = half::f16::from_f32(sum as f32 * scale.to_f32());
                b[2..4].copy_from_slice(&s.to_bits().to_le_bytes());
            }
            GgmlType::Q8_K => {
                let d = rng.log_uniform(-6.0, 6.0);
                b[0..4].copy_from_slice(&d.to_le_bytes());
                for g in 0..16 {
                    let s: i32 = b[4 + 16 * g..20 + 16 * g]
                        .iter()
                        .map(|&q| q as i8 as i32)
                        .sum();
                    b[260 + 2 * g..262 + 2 * g].copy_from_slice(&(s as i16).to_le_bytes());
                }
            }
            _ => {}
        }
    }
    a
}

/// Quantizers alone on rows whose block count is odd and whose blocks mix regimes.
#[test]
fn quantizers_match_scalar_on_mixed_rows() {
    let mut rng = Rng::new(0x5eed_0004);
    for isa in simd_isas() {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q4_K,
            GgmlType::F16,
            GgmlType::BF16,
        ] {
            let scalar = dot_kernel_for(ty, Isa::Scalar).unwrap();
            let simd = dot_kernel_for(ty, isa).unwrap();
            let bs = ty.block_size().max(32);
            for blocks in [1, 3, 7, 11] {
                let mut x = Vec::new();
                for _ in 0..blocks {
                    let kind = ALL_ACTS[rng.below(ALL_ACTS.len())];
                    x.extend(act_row(&mut rng, scalar.act, bs, kind));
                }
                let n = x.len();
                let mut a_ref = vec![0u8; scalar.act_row_bytes(n)];
                let mut a_simd = vec![0u8; simd.act_row_bytes(n)];
                scalar.quantize_act(&x, &mut a_ref);
                simd.quantize_act(&x, &mut a_simd);
                assert_eq!(a_ref, a_simd, "{ty} {isa} blocks={blocks}");
            }
        }
    }
}

/// Float conversions of special values: infinities, NaN, signed zero, rounding boundaries.
#[test]
fn float_quantizers_match_scalar_on_special_values() {
    let specials = [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        65504.0,
        65520.0, // rounds to f16 infinity
        -65519.0,
        5.96e-8, // smallest f16 subnormal
        2.98e-8, // halfway to zero
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
        1.0 + 1.0 / 256.0,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-45,
        3.0e38,
    ];
    for isa in simd_isas() {
        for ty in [GgmlType::F16, GgmlType::BF16] {
            let scalar = dot_kernel_for(ty, Isa::Scalar).unwrap();
            let simd = dot_kernel_for(ty, isa).unwrap();
            for rot in 0..specials.len() {
                let mut x = specials.to_vec();
                x.rotate_left(rot);
                x.extend_from_slice(&specials[..rot % 5]);
                let mut a_ref = vec![0u8; 2 * x.len()];
                let mut a_simd = vec![0u8; 2 * x.len()];
                scalar.quantize_act(&x, &mut a_ref);
                simd.quantize_act(&x, &mut a_simd);
                assert_eq!(a_ref, a_simd, "{ty} {isa}");
            }
        }
    }
}

/// The many-rows dots (contiguous and strided rows) equal one dot per row bit for bit (same
/// operations in the same order), on every tier, for row counts around the 2- and 4-row steps
/// (and the rows read side by side, a quarter of the rows apart, with rows left over) and f16
/// rows with and without an 8-element tail.
#[test]
fn dot_rows_match_single_dots() {
    let mut rng = Rng::new(41);
    for isa in available_isas() {
        for ty in [
            GgmlType::F16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            let k = dot_kernel_for(ty, isa).unwrap();
            let lens: &[usize] = match ty {
                GgmlType::F16 => &[8, 24, 64, 256, 13],
                GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => &[256, 768],
                _ => &[64, 256, 544],
            };
            for &n in lens {
                for rows in [1, 3, 4, 5, 8, 9, 17] {
                    let w: Vec<u8> = (0..rows)
                        .flat_map(|_| weight_row(&mut rng, ty, n, ALL_SCALES[0]))
                        .collect();
                    let x = act_row(&mut rng, k.act, n, ALL_ACTS[0]);
                    let mut a = vec![0u8; k.act_row_bytes(n)];
                    k.quantize_act(&x, &mut a);
                    let mut got = vec![f32::NAN; rows];
                    k.dot_rows(n, &w, &a, &mut got);
                    let rb = w.len() / rows;
                    // The same rows 3 bytes further apart, as value rows lie in the cache.
                    let stride = rb + 3;
                    let mut spread = vec![0xA5u8; rows * stride];
                    for (i, row) in w.chunks_exact(rb).enumerate() {
                        spread[i * stride..i * stride + rb].copy_from_slice(row);
                    }
                    let mut strided = vec![f32::NAN; rows];
                    k.dot_rows_strided(
                        n,
                        &spread[..(rows - 1) * stride + rb],
                        stride,
                        &a,
                        &mut strided,
                    );
                    for (i, (&g, &s)) in got.iter().zip(&strided).enumerate() {
                        let want = k.dot(n, &w[i * rb..(i + 1) * rb], &a);
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "{ty} {isa} n={n} rows={rows} row {i}: {g} vs {want}"
                        );
                        assert_eq!(
                            s.to_bits(),
                            want.to_bits(),
                            "strided {ty} {isa} n={n} row {i}"
                        );
                    }
                }
            }
        }
    }
}
