//! The scale searches that ggml's weight quantizers share. Each fits the codes `L` and a
//! scale (and, for the `qkx` ones, a min) of a small group of values. Bit-exact ports: every
//! float expression keeps ggml's operand order, because llama.cpp builds these in its base
//! library without FMA contraction, and a reordered sum changes the chosen codes.
//! Spec: ggml `src/ggml-quants.c` (`nearest_int`, `make_qx_quants`, `make_q3_quants`,
//! `make_qkx2_quants`, `make_qkx3_quants`, `make_qp_quants`).

/// Groups whose largest magnitude is below this are all zero (ggml's `GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to the nearest integer, ties to even, by ggml's float trick: adding 1.5·2^23 leaves
/// the rounded integer in the low mantissa bits. Valid for `|v| <= 4194303` (as in ggml,
/// larger values wrap).
#[inline]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let val = v + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Weight of element `x` in the error of `make_qx_quants` for `rmse_type` 1..4.
#[inline]
fn qx_weight(x: f32, rmse_type: i32) -> f32 {
    match rmse_type {
        1 => x * x,
        2 => 1.0,
        3 => x.abs(),
        _ => x.abs().sqrt(),
    }
}

/// Signed codes in `[-nmax, nmax)` (stored shifted by `nmax`) and the scale that minimises
/// the weighted error, trying 18 perturbations of `nmax / max`. `rmse_type` 0 takes the first
/// guess; negative values stop after one least-squares step.
pub(crate) fn make_qx_quants(
    nmax: i32,
    x: &[f32],
    l: &mut [i8],
    rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    let n = x.len();
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let fmax = nmax as f32;
    let mut iscale = -fmax / max;
    if rmse_type == 0 {
        for (li, &v) in l.iter_mut().zip(x) {
            let q = nearest_int(iscale * v);
            *li = (nmax + q.clamp(-nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let (rmse_type, return_early) = if rmse_type < 0 {
        (-rmse_type, true)
    } else {
        (rmse_type, false)
    };
    let w_of = |i: usize| match qw {
        Some(q) => q[i],
        None => qx_weight(x[i], rmse_type),
    };
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = (q + nmax) as i8;
        let w = w_of(i);
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(fmax + 0.1 * is as f32) / max;
        let (mut slx, mut sl2) = (0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            let w = w_of(i);
            slx += w * x[i] * q as f32;
            sl2 += w * q as f32 * q as f32;
        }
        if sl2 > 0.0 && slx * slx > best * sl2 {
            for i in 0..n {
                let q = nearest_int(iscale * x[i]);
                l[i] = (nmax + q.clamp(-nmax, nmax - 1)) as i8;
            }
            scale = slx / sl2;
            best = scale * slx;
        }
    }
    scale
}

/// Q3_K's per-group fit: start from `nmax / max`, then move single codes while that lowers the
/// `x²`-weighted error (at most 5 passes). Codes stored shifted by `nmax`.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            l[i] = q as i8;
            let w = x[i] * x[i];
            sumlx += w * x[i] * q as f32;
            suml2 += w * q as f32 * q as f32;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l[i] as f32;
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != l[i] as i32 {
                        slx += w * x[i] * new_l as f32;
                        sl2 += w * new_l as f32 * new_l as f32;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for li in l[..n].iter_mut() {
            *li += nmax as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = (q + nmax) as i8;
    }
    1.0 / iscale
}

/// The `qkx` searches fit `x ≈ scale·L + min` with `min <= 0`. Where `weights` is `None` the
/// weight of `x` is `x²` (only `make_qkx3_quants` allows that).
struct QkxSearch {
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
}

impl QkxSearch {
    /// Codes in `[0, nmax]`, the scale, and `-min` in `the_min`.
    fn run(
        &self,
        nmax: i32,
        x: &[f32],
        weights: Option<&[f32]>,
        l: &mut [u8],
        the_min: &mut f32,
        laux: &mut [u8],
        empty_if_le: bool,
    ) -> f32 {
        let n = x.len();
        let w_of = |i: usize| match weights {
            Some(w) => w[i],
            None => x[i] * x[i],
        };
        let (mut min, mut max) = (x[0], x[0]);
        let mut sum_w = w_of(0);
        let mut sum_x = sum_w * x[0];
        for i in 1..n {
            if x[i] < min {
                min = x[i];
            }
            if x[i] > max {
                max = x[i];
            }
            let w = w_of(i);
            sum_w += w;
            sum_x += w * x[i];
        }
        if min > 0.0 {
            min = 0.0;
        }
        // make_qkx2 tests `max == min`, make_qkx3 `max <= min` (they differ only for NaN).
        if (empty_if_le && max <= min) || max == min {
            l[..n].fill(0);
            *the_min = -min;
            return 0.0;
        }
        let fmax = nmax as f32;
        let mut iscale = fmax / (max - min);
        let mut scale = 1.0 / iscale;
        let err = |d: f32, w: f32| {
            let d = if self.use_mad { d.abs() } else { d * d };
            w * d
        };
        let mut best_error = 0f32;
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min));
            l[i] = q.clamp(0, nmax) as u8;
            let diff = scale * l[i] as f32 + min - x[i];
            best_error += err(diff, w_of(i));
        }
        if self.nstep < 1 {
            *the_min = -min;
            return scale;
        }
        for is in 0..=self.nstep {
            iscale = (self.rmin + self.rdelta * is as f32 + fmax) / (max - min);
            let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
            for i in 0..n {
                let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
                laux[i] = q as u8;
                let w = w_of(i);
                let lf = q as f32;
                sum_l += w * lf;
                sum_l2 += w * lf * lf;
                sum_xl += w * lf * x[i];
            }
            let d = sum_w * sum_l2 - sum_l * sum_l;
            if d > 0.0 {
                let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
                let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
                if this_min > 0.0 {
                    this_min = 0.0;
                    this_scale = sum_xl / sum_l2;
                }
                let mut cur_error = 0f32;
                for i in 0..n {
                    let diff = this_scale * laux[i] as f32 + this_min - x[i];
                    cur_error += err(diff, w_of(i));
                }
                if cur_error < best_error {
                    l[..n].copy_from_slice(&laux[..n]);
                    best_error = cur_error;
                    scale = this_scale;
                    min = this_min;
                }
            }
        }
        *the_min = -min;
        scale
    }
}

/// ggml's `make_qkx2_quants`: weighted fit of `scale·L + min` over `nstep + 1` trial scales.
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    the_min: &mut f32,
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> f32 {
    let s = QkxSearch {
        rmin,
        rdelta,
        nstep,
        use_mad,
    };
    s.run(nmax, x, Some(weights), l, the_min, laux, false)
}

/// ggml's `make_qkx3_quants`: as `make_qkx2_quants`, with `x²` weights when none are given.
pub(crate) fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: Option<&[f32]>,
    l: &mut [u8],
    the_min: &mut f32,
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> f32 {
    let s = QkxSearch {
        rmin,
        rdelta,
        nstep,
        use_mad,
    };
    s.run(nmax, x, weights, l, the_min, laux, true)
}

/// ggml's `make_qp_quants`: codes in `[0, nmax]` for non-negative values (the sub-block scales
/// of the imatrix K-quants), weighted by `quant_weights`.
pub(crate) fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], quant_weights: &[f32]) -> f32 {
    let n = x.len();
    let max = x.iter().fold(0f32, |m, &v| if m > v { m } else { v });
    if max < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let fmax = nmax as f32;
    let mut iscale = fmax / max;
    for i in 0..n {
        l[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..n {
        let diff = x[i] - scale * l[i] as f32;
        best_mse += quant_weights[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + fmax) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..n {
            let q = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * q as f32;
            mse += quant_weights[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).min(nmax);
        l[i] = q as u8;
        let w = quant_weights[i];
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = quant_weights[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        for (v, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
            (-7.51, -8),
            (4_194_303.0, 4_194_303),
        ] {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }
}
