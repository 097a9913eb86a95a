//! Weight quantizers of the K-quants (f32 → Q2_K … Q6_K), bit-exact ports of ggml's
//! `quantize_row_q*_K_ref` (no importance matrix: what llama-quantize runs without one) and of
//! the imatrix-weighted `quantize_row_q*_K_impl`.
//! Spec: ggml `src/ggml-quants.c`.

use super::k_low::{BlockQ2K, BlockQ3K};
use super::k_quants::{get_scale_min_k4, BlockQ4K, BlockQ5K, BlockQ6K, K_SCALE_SIZE};
use super::quant_helpers::{
    make_q3_quants, make_qkx2_quants, make_qkx3_quants, make_qp_quants, make_qx_quants,
    nearest_int, GROUP_MAX_EPS,
};
use super::QuantBlock;
use crate::types::QK_K;
use half::f16;

/// Pack 2-bit codes in element order into the 64-byte `qs` of Q2_K/Q3_K.
fn pack_2bit(l: &[u8; QK_K]) -> [u8; QK_K / 4] {
    let mut qs = [0u8; QK_K / 4];
    for h in 0..2 {
        for j in 0..32 {
            let e = 128 * h + j;
            qs[32 * h + j] = l[e] | (l[e + 32] << 2) | (l[e + 64] << 4) | (l[e + 96] << 6);
        }
    }
    qs
}

/// Pack 8 six-bit scales and mins the way Q4_K/Q5_K store them.
fn pack_scales_mins(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut s = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// Recompute codes in `[0, nmax]` of the 32-element sub-blocks from the stored (f16) scales
/// and mins; sub-blocks whose scale is zero keep their codes.
fn requantize_k4(x: &[f32], d: f16, dmin: f16, scales: &[u8; 12], nmax: i32, l: &mut [u8]) {
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, scales);
        let d = d.to_f32() * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d);
            l[32 * j + ii] = q.clamp(0, nmax) as u8;
        }
    }
}

/// Per-block weights of the imatrix K-quants: `qw·sqrt(σ² + x²)`.
fn imatrix_weights(qw: &[f32], x: &[f32], sigma2: f32, out: &mut [f32]) {
    for ((w, &q), &v) in out.iter_mut().zip(qw).zip(x) {
        *w = q * (sigma2 + v * v).sqrt();
    }
}

fn sum_sq(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |s, &v| s + v * v)
}

// ---------------------------------------------------------------------------------------------
// Q2_K

fn q2_k_finish(x: &[f32], mut l: [u8; QK_K], b: &mut BlockQ2K) {
    let dm = b.d.to_f32();
    let mm = b.dmin.to_f32();
    for j in 0..QK_K / 16 {
        let d = dm * (b.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let m = mm * (b.scales[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + m) / d).clamp(0, 3) as u8;
        }
    }
    b.qs = pack_2bit(&l);
}

/// f32 → Q2_K (`qw`: this row's importance weights, or `None`).
pub fn quantize_row_q2_k(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    for (i, (xb, ob)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(84))
        .enumerate()
    {
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let mut mins = [0f32; 16];
        let mut b = BlockQ2K::read(&[0u8; 84]);
        match qw {
            None => {
                let (mut max_scale, mut max_min) = (0f32, 0f32);
                for j in 0..16 {
                    let xg = &xb[16 * j..16 * j + 16];
                    for (w, &v) in weights.iter_mut().zip(xg) {
                        *w = v.abs();
                    }
                    scales[j] = make_qkx2_quants(
                        3,
                        xg,
                        &weights,
                        &mut l[16 * j..16 * j + 16],
                        &mut mins[j],
                        &mut laux,
                        -0.5,
                        0.1,
                        15,
                        true,
                    );
                    if scales[j] > max_scale {
                        max_scale = scales[j];
                    }
                    if mins[j] > max_min {
                        max_min = mins[j];
                    }
                }
                if max_scale > 0.0 {
                    let iscale = 15.0 / max_scale;
                    for j in 0..16 {
                        b.scales[j] = nearest_int(iscale * scales[j]) as u8;
                    }
                    b.d = f16::from_f32(max_scale / 15.0);
                } else {
                    b.d = f16::from_f32(0.0);
                }
                if max_min > 0.0 {
                    let iscale = 15.0 / max_min;
                    for j in 0..16 {
                        let q = nearest_int(iscale * mins[j]);
                        b.scales[j] |= (q << 4) as u8;
                    }
                    b.dmin = f16::from_f32(max_min / 15.0);
                } else {
                    b.dmin = f16::from_f32(0.0);
                }
            }
            Some(qw) => {
                let sigma2 = sum_sq(xb) / QK_K as f32;
                let mut sw = [0f32; 16];
                for j in 0..16 {
                    let xg = &xb[16 * j..16 * j + 16];
                    imatrix_weights(&qw[QK_K * i + 16 * j..], xg, sigma2, &mut weights);
                    sw[j] = weights.iter().fold(sw[j], |s, &w| s + w);
                    scales[j] = make_qkx3_quants(
                        3,
                        xg,
                        Some(&weights),
                        &mut l[16 * j..16 * j + 16],
                        &mut mins[j],
                        &mut laux,
                        -0.9,
                        0.05,
                        36,
                        false,
                    );
                }
                let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
                let dm = make_qp_quants(15, &scales, &mut ls, &sw);
                let mm = make_qp_quants(15, &mins, &mut lm, &sw);
                b.d = f16::from_f32(dm);
                b.dmin = f16::from_f32(mm);
                for j in 0..16 {
                    b.scales[j] = ls[j] | (lm[j] << 4);
                }
            }
        }
        q2_k_finish(xb, l, &mut b);
        b.write(ob);
    }
}

// ---------------------------------------------------------------------------------------------
// Q3_K

/// Store 16 six-bit scales (already offset by 32) in Q3_K's packing.
fn pack_q3_scales(ls: &[u8; 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (j, &l) in ls.iter().enumerate() {
        if j < 8 {
            s[j] = l & 0xF;
        } else {
            s[j - 8] |= (l & 0xF) << 4;
        }
        s[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
    }
    s
}

fn q3_k_finish(x: &[f32], mut l: [i8; QK_K], b: &mut BlockQ3K) {
    let sc = super::k_low::q3k_scales(&b.scales);
    for j in 0..QK_K / 16 {
        let d = b.d.to_f32() * (sc[j] as i8 - 32) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    b.hmask = [0; 32];
    let mut low = [0u8; QK_K];
    for (e, &v) in l.iter().enumerate() {
        let mut v = v as u8;
        if v > 3 {
            b.hmask[e % 32] |= 1 << (e / 32);
            v -= 4;
        }
        low[e] = v;
    }
    b.qs = pack_2bit(&low);
}

/// f32 → Q3_K (`qw`: this row's importance weights, or `None`).
pub fn quantize_row_q3_k(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
    for (i, (xb, ob)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(110))
        .enumerate()
    {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let mut b = BlockQ3K::read(&[0u8; 110]);
        match qw {
            None => {
                let (mut max_scale, mut amax) = (0f32, 0f32);
                for j in 0..16 {
                    scales[j] = make_q3_quants(4, &xb[16 * j..16 * j + 16], &mut l[16 * j..], true);
                    if scales[j].abs() > amax {
                        amax = scales[j].abs();
                        max_scale = scales[j];
                    }
                }
                if max_scale != 0.0 {
                    let iscale = -32.0 / max_scale;
                    let mut ls = [0u8; 16];
                    for j in 0..16 {
                        // ggml keeps this in an int8 before clamping.
                        let q = nearest_int(iscale * scales[j]) as i8 as i32;
                        ls[j] = (q.clamp(-32, 31) + 32) as u8;
                    }
                    b.scales = pack_q3_scales(&ls);
                    b.d = f16::from_f32(1.0 / iscale);
                } else {
                    b.d = f16::from_f32(0.0);
                }
            }
            Some(qw) => {
                let sigma2 = 2.0 * sum_sq(xb) / QK_K as f32;
                let mut weight = [0f32; 16];
                let mut sw = [0f32; 16];
                for j in 0..16 {
                    let xg = &xb[16 * j..16 * j + 16];
                    imatrix_weights(&qw[QK_K * i + 16 * j..], xg, sigma2, &mut weight);
                    sw[j] = weight.iter().fold(0f32, |s, &w| s + w);
                    scales[j] = make_qx_quants(4, xg, &mut l[16 * j..], 1, Some(&weight));
                }
                let mut ls = [0i8; 16];
                let d_block = make_qx_quants(32, &scales, &mut ls, 1, Some(&sw));
                b.scales = pack_q3_scales(&ls.map(|v| v as u8));
                b.d = f16::from_f32(d_block);
            }
        }
        q3_k_finish(xb, l, &mut b);
        b.write(ob);
    }
}

// ---------------------------------------------------------------------------------------------
// Q4_K and Q5_K

/// Fit the 8 sub-blocks of a Q4_K/Q5_K block: (d, dmin, packed scales, codes).
fn fit_k4(x: &[f32], nmax: i32, qw: Option<&[f32]>) -> (f16, f16, [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    match qw {
        None => {
            let (rmin, rdelta, nstep) = if nmax == 15 {
                (-1.0, 0.1, 20)
            } else {
                (-0.5, 0.1, 15)
            };
            let (mut max_scale, mut max_min) = (0f32, 0f32);
            for j in 0..8 {
                let xg = &x[32 * j..32 * j + 32];
                let av_x = (sum_sq(xg) / 32.0).sqrt();
                for (w, &v) in weights.iter_mut().zip(xg) {
                    *w = av_x + v.abs();
                }
                scales[j] = make_qkx2_quants(
                    nmax,
                    xg,
                    &weights,
                    &mut l[32 * j..32 * j + 32],
                    &mut mins[j],
                    &mut laux,
                    rmin,
                    rdelta,
                    nstep,
                    false,
                );
                if scales[j] > max_scale {
                    max_scale = scales[j];
                }
                if mins[j] > max_min {
                    max_min = mins[j];
                }
            }
            let inv_scale = if max_scale > 0.0 {
                63.0 / max_scale
            } else {
                0.0
            };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
            let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
            for j in 0..8 {
                ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
                lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
            }
            let d = f16::from_f32(max_scale / 63.0);
            let dmin = f16::from_f32(max_min / 63.0);
            (d, dmin, pack_scales_mins(&ls, &lm), l)
        }
        Some(qw) => {
            let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
            let mut sw = [0f32; 8];
            for j in 0..8 {
                let xg = &x[32 * j..32 * j + 32];
                imatrix_weights(&qw[32 * j..], xg, sigma2, &mut weights);
                sw[j] = weights.iter().fold(0f32, |s, &w| s + w);
                scales[j] = make_qkx3_quants(
                    nmax,
                    xg,
                    Some(&weights),
                    &mut l[32 * j..32 * j + 32],
                    &mut mins[j],
                    &mut laux,
                    -0.9,
                    0.05,
                    36,
                    false,
                );
            }
            let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
            let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
            let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
            let (ls, lm) = (ls.map(|v| v.min(63)), lm.map(|v| v.min(63)));
            (
                f16::from_f32(d_block),
                f16::from_f32(m_block),
                pack_scales_mins(&ls, &lm),
                l,
            )
        }
    }
}

/// f32 → Q4_K (`qw`: this row's importance weights, or `None`).
pub fn quantize_row_q4_k(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
    for (i, (xb, ob)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(144))
        .enumerate()
    {
        let (d, dmin, scales, mut l) = fit_k4(xb, 15, qw.map(|q| &q[QK_K * i..]));
        requantize_k4(xb, d, dmin, &scales, 15, &mut l);
        let mut qs = [0u8; QK_K / 2];
        for c in 0..4 {
            for j in 0..32 {
                qs[32 * c + j] = l[64 * c + j] | (l[64 * c + 32 + j] << 4);
            }
        }
        BlockQ4K {
            d,
            dmin,
            scales,
            qs,
        }
        .write(ob);
    }
}

/// f32 → Q5_K (`qw`: this row's importance weights, or `None`).
pub fn quantize_row_q5_k(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
    for (i, (xb, ob)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(176))
        .enumerate()
    {
        let (d, dmin, scales, mut l) = fit_k4(xb, 31, qw.map(|q| &q[QK_K * i..]));
        requantize_k4(xb, d, dmin, &scales, 31, &mut l);
        let mut qh = [0u8; QK_K / 8];
        let mut qs = [0u8; QK_K / 2];
        for c in 0..4 {
            for j in 0..32 {
                let (mut l1, mut l2) = (l[64 * c + j], l[64 * c + 32 + j]);
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= 1 << (2 * c);
                }
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= 2 << (2 * c);
                }
                qs[32 * c + j] = l1 | (l2 << 4);
            }
        }
        BlockQ5K {
            d,
            dmin,
            scales,
            qh,
            qs,
        }
        .write(ob);
    }
}

// ---------------------------------------------------------------------------------------------
// Q6_K

/// f32 → Q6_K (`qw`: this row's importance weights, or `None`).
pub fn quantize_row_q6_k(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
    for (i, (xb, ob)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(210))
        .enumerate()
    {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..16 {
            let xg = &xb[16 * ib..16 * ib + 16];
            let w = qw.map(|q| &q[QK_K * i + 16 * ib..QK_K * i + 16 * ib + 16]);
            scales[ib] = make_qx_quants(32, xg, &mut l[16 * ib..], 1, w);
            if scales[ib].abs() > max_abs_scale {
                max_abs_scale = scales[ib].abs();
                max_scale = scales[ib];
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            ob.fill(0);
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d = f16::from_f32(1.0 / iscale);
        let mut sc = [0i8; 16];
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        for j in 0..16 {
            let dj = d.to_f32() * sc[j] as f32;
            if dj == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(xb[16 * j + ii] / dj).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        let mut ql = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 4];
        for h in 0..2 {
            for j in 0..32 {
                let e = 128 * h + j;
                let q = [l[e], l[e + 32], l[e + 64], l[e + 96]].map(|v| v as u8);
                ql[64 * h + j] = (q[0] & 0xF) | ((q[2] & 0xF) << 4);
                ql[64 * h + 32 + j] = (q[1] & 0xF) | ((q[3] & 0xF) << 4);
                qh[32 * h + j] =
                    (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
            }
        }
        BlockQ6K {
            ql,
            qh,
            scales: sc,
            d,
        }
        .write(ob);
    }
}
