//! NEON dot products of Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS and TQ2_0 with their activation
//! formats. Same contract as the parent module. The grid i-quants, TQ1_0 and the
//! activation-only Q8_1/Q8_K weights run the scalar reference on NEON. Compare ggml
//! `src/ggml-cpu/arch/arm/quants.c`.

use super::*;
use crate::blocks::KVALUES_IQ4NL;

/// `v >> n` for a runtime `n` (0..8) in every byte.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn shr(v: uint8x16_t, n: usize) -> uint8x16_t {
    unsafe { vshlq_u8(v, vdupq_n_s8(-(n as i8))) }
}

/// Σ of the 256 activation codes of a Q8_K block, from its group sums.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q8k_total(y: &[u8]) -> i32 {
    unsafe {
        let (b0, b1) = bsums(y);
        vaddlvq_s16(b0) + vaddlvq_s16(b1)
    }
}

#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_dot_q2k_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut sumf = 0f32;
        let m3 = vdupq_n_u8(3);
        for (x, y) in w.chunks_exact(84).zip(a.chunks_exact(292)) {
            let sc = arr::<16>(x, 0);
            let (b0, b1) = bsums(y);
            let mins = vshrq_n_u8::<4>(load_u8(sc));
            let m_lo = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins)));
            let m_hi = vreinterpretq_s16_u16(vmovl_high_u8(mins));
            let summ = vmull_s16(vget_low_s16(b0), vget_low_s16(m_lo));
            let summ = vmlal_high_s16(summ, b0, m_lo);
            let summ = vmlal_s16(summ, vget_low_s16(b1), vget_low_s16(m_hi));
            let summ = vaddvq_s32(vmlal_high_s16(summ, b1, m_hi));
            let mut isum = vdupq_n_s32(0);
            for h in 0..2 {
                let q0 = load_u8(arr(x, 16 + 32 * h));
                let q1 = load_u8(arr(x, 32 + 32 * h));
                for k in 0..4 {
                    let c0 = vreinterpretq_s8_u8(vandq_u8(shr(q0, 2 * k), m3));
                    let c1 = vreinterpretq_s8_u8(vandq_u8(shr(q1, 2 * k), m3));
                    let yo = 4 + 128 * h + 32 * k;
                    let p0 = dot_acc(vdupq_n_s32(0), c0, load_s8(arr(y, yo)));
                    let p1 = dot_acc(vdupq_n_s32(0), c1, load_s8(arr(y, yo + 16)));
                    let g = 8 * h + 2 * k;
                    isum = vmlaq_n_s32(isum, p0, (sc[g] & 0xF) as i32);
                    isum = vmlaq_n_s32(isum, p1, (sc[g + 1] & 0xF) as i32);
                }
            }
            let dy = f32_at(y, 0);
            let dall = dy * f16_at(x, 80);
            let dmin = dy * f16_at(x, 82);
            sumf += dall * vaddvq_s32(isum) as f32 - dmin * summ as f32;
        }
        sumf
    }
}

#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_dot_q3k_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut sumf = 0f32;
        let m3 = vdupq_n_u8(3);
        let one = vdupq_n_u8(1);
        for (x, y) in w.chunks_exact(110).zip(a.chunks_exact(292)) {
            let raw = crate::blocks::q3k_scales(arr(x, 96));
            let sc: [i32; 16] = raw.map(|s| s as i32 - 32);
            let (b0, b1) = bsums(y);
            let mut bs = [0i16; 16];
            // SAFETY: `bs` has room for the two stores of 8 i16.
            vst1q_s16(bs.as_mut_ptr(), b0);
            // SAFETY: as above, the second half.
            vst1q_s16(bs.as_mut_ptr().add(8), b1);
            let offset: i32 = sc.iter().zip(&bs).map(|(&s, &b)| s * b as i32).sum();
            let hm = [load_u8(arr(x, 0)), load_u8(arr(x, 16))];
            let mut isum = vdupq_n_s32(0);
            for h in 0..2 {
                let q = [load_u8(arr(x, 32 + 32 * h)), load_u8(arr(x, 48 + 32 * h))];
                for k in 0..4 {
                    let yo = 4 + 128 * h + 32 * k;
                    for half in 0..2 {
                        let low = vandq_u8(shr(q[half], 2 * k), m3);
                        let hb = vandq_u8(shr(hm[half], 4 * h + k), one);
                        let c = vreinterpretq_s8_u8(vorrq_u8(low, vshlq_n_u8::<2>(hb)));
                        let p = dot_acc(vdupq_n_s32(0), c, load_s8(arr(y, yo + 16 * half)));
                        isum = vmlaq_n_s32(isum, p, sc[8 * h + 2 * k + half]);
                    }
                }
            }
            let total = vaddvq_s32(isum) - 4 * offset;
            sumf += f16_at(x, 108) * f32_at(y, 0) * total as f32;
        }
        sumf
    }
}

#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_dot_q5k_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut sumf = 0f32;
        let low4 = vdupq_n_u8(0x0F);
        let one = vdupq_n_u8(1);
        for (x, y) in w.chunks_exact(176).zip(a.chunks_exact(292)) {
            let dy = f32_at(y, 0);
            let (sc, mn) = scales_mins_k4(arr(x, 4));
            let (b0, b1) = bsums(y);
            let pairs = vpaddq_s16(b0, b1);
            let mins = vreinterpretq_s16_u16(vmovl_u8(load_u8x8(&mn)));
            let prod = vmull_s16(vget_low_s16(pairs), vget_low_s16(mins));
            let summ = vaddvq_s32(vmlal_high_s16(prod, pairs, mins));
            let qh = [load_u8(arr(x, 16)), load_u8(arr(x, 32))];
            let mut sumi = vdupq_n_s32(0);
            for c in 0..4 {
                let mut p_lo = vdupq_n_s32(0);
                let mut p_hi = vdupq_n_s32(0);
                for half in 0..2 {
                    let q = load_u8(arr(x, 48 + 32 * c + 16 * half));
                    let h_lo = vshlq_n_u8::<4>(vandq_u8(shr(qh[half], 2 * c), one));
                    let h_hi = vshlq_n_u8::<4>(vandq_u8(shr(qh[half], 2 * c + 1), one));
                    let lo = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, low4), h_lo));
                    let hi = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8::<4>(q), h_hi));
                    p_lo = dot_acc(p_lo, lo, load_s8(arr(y, 4 + 64 * c + 16 * half)));
                    p_hi = dot_acc(p_hi, hi, load_s8(arr(y, 36 + 64 * c + 16 * half)));
                }
                sumi = vmlaq_n_s32(sumi, p_lo, sc[2 * c] as i32);
                sumi = vmlaq_n_s32(sumi, p_hi, sc[2 * c + 1] as i32);
            }
            sumf += f16_at(x, 0) * dy * vaddvq_s32(sumi) as f32;
            sumf -= f16_at(x, 2) * dy * summ as f32;
        }
        sumf
    }
}

/// The 32 signed IQ4 values of 16 nibble bytes: (elements 0..16, elements 16..32).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn iq4_values(qs: &[u8; 16]) -> (int8x16_t, int8x16_t) {
    unsafe {
        // SAFETY: the table is 16 readable bytes; byte loads need no alignment.
        let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
        let (lo, hi) = nibbles(qs);
        (vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi))
    }
}

#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_dot_iq4nl_q8_0(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut acc = vdupq_n_f32(0.0);
        for (x, y) in w.chunks_exact(18).zip(a.chunks_exact(34)) {
            let d = f16_at(x, 0) * f16_at(y, 0);
            let (lo, hi) = iq4_values(arr(x, 2));
            let p = dot_acc(vdupq_n_s32(0), lo, load_s8(arr(y, 2)));
            let p = dot_acc(p, hi, load_s8(arr(y, 18)));
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), d);
        }
        vaddvq_f32(acc)
    }
}

#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_dot_iq4xs_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut sumf = 0f32;
        for (x, y) in w.chunks_exact(136).zip(a.chunks_exact(292)) {
            let h = u16::from_le_bytes(*arr(x, 2));
            let mut sumi = vdupq_n_s32(0);
            for ib in 0..8 {
                let lo = (x[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
                let ls = (lo as i32 | ((((h >> (2 * ib)) & 3) as i32) << 4)) - 32;
                let (v0, v1) = iq4_values(arr(x, 8 + 16 * ib));
                let p = dot_acc(vdupq_n_s32(0), v0, load_s8(arr(y, 4 + 32 * ib)));
                let p = dot_acc(p, v1, load_s8(arr(y, 20 + 32 * ib)));
                sumi = vmlaq_n_s32(sumi, p, ls);
            }
            sumf += f16_at(x, 0) * f32_at(y, 0) * vaddvq_s32(sumi) as f32;
        }
        sumf
    }
}

#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_dot_tq2_0_q8k(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let mut sumf = 0f32;
        let m3 = vdupq_n_u8(3);
        for (x, y) in w.chunks_exact(66).zip(a.chunks_exact(292)) {
            let mut sumi = vdupq_n_s32(0);
            for c in 0..2 {
                let q = [load_u8(arr(x, 32 * c)), load_u8(arr(x, 32 * c + 16))];
                for n in 0..4 {
                    for half in 0..2 {
                        let codes = vreinterpretq_s8_u8(vandq_u8(shr(q[half], 2 * n), m3));
                        let yo = 4 + 128 * c + 32 * n + 16 * half;
                        sumi = dot_acc(sumi, codes, load_s8(arr(y, yo)));
                    }
                }
            }
            let s = vaddvq_s32(sumi) - q8k_total(y);
            sumf += s as f32 * (f32_at(y, 0) * f16_at(x, 64));
        }
        sumf
    }
}
