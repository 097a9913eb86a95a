//! The AVX-512 VNNI GEMM micro-kernels (see `crate::gemm`): 16 repacked weight rows
//! (`crate::repack`, one row per i32 lane) × several activation rows. Each `vpdpbusd` takes 64
//! packed weight codes and four activation codes broadcast to every lane, and adds four
//! products to each of the 16 rows' sums; each output's float steps are those of the dot
//! kernels in this module (see the parent module's summation order).

use super::*;
use crate::gemm::ActBlocks;
use crate::repack::{PackKind, PackedGroup, LANES, TILE_T32 as T32, TILE_TK as TK};

/// 16 f32 from a slice (bounds-checked).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_ps16(s: &[f32], off: usize) -> __m512 {
    let v: &[f32; 16] = s[off..off + 16].try_into().expect("length is 16");
    // SAFETY: `v` is 16 readable f32; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

/// 16 i32 from a slice (bounds-checked).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_epi32x16(s: &[i32], off: usize) -> __m512i {
    let v: &[i32; 16] = s[off..off + 16].try_into().expect("length is 16");
    // SAFETY: `v` is 16 readable i32; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
}

/// Four i8 codes as one i32, for a broadcast.
#[inline(always)]
fn quad(q: &[i8; 32], k: usize) -> i32 {
    i32::from_le_bytes([
        q[4 * k] as u8,
        q[4 * k + 1] as u8,
        q[4 * k + 2] as u8,
        q[4 * k + 3] as u8,
    ])
}

/// The 16 lanes of `v` (one per weight row) into `out`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn store_lanes(v: __m512, out: &mut [f32; LANES]) {
    // SAFETY: `out` is 16 writable f32.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
}

/// 32-element blocks: `out[t][r]` = row `r` of `w` against activation row `t`, for Q4_1 /
/// Q5_1 (`mins`, unsigned codes) or the signed types (codes biased by 128).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn tile_blocks32(
    mins: bool,
    w: &PackedGroup<'_>,
    a: &[ActBlocks],
    out: &mut [[f32; LANES]; T32],
) {
    if mins {
        tile32::<true>(w, a, out)
    } else {
        tile32::<false>(w, a, out)
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile32<const MINS: bool>(w: &PackedGroup<'_>, a: &[ActBlocks], out: &mut [[f32; LANES]; T32]) {
    let nb = w.d.len() / LANES;
    assert_eq!(a.len(), nb, "one activation block per weight block");
    // Written below for every c before being read (a zeroed array cost an 8 KiB memset per
    // tile, 3% of a Q4_0 prompt).
    let mut chains = [[std::mem::MaybeUninit::<__m512>::uninit(); 16]; T32];
    // Chain c: blocks c, c + 16, c + 32, ... in order (the dot kernels' lane c); a chain with
    // no blocks (fewer than 16) stays zero.
    for c in 0..16 {
        let mut acc = [_mm512_setzero_ps(); T32];
        for b in (c..nb).step_by(16) {
            let codes = &w.codes[512 * b..512 * (b + 1)];
            let mut wq = [_mm512_setzero_si512(); 8];
            for (k, v) in wq.iter_mut().enumerate() {
                *v = load64(arr(codes, 64 * k));
            }
            let wd = load_ps16(w.d, LANES * b);
            let wm = if MINS {
                load_ps16(w.m, LANES * b)
            } else {
                _mm512_setzero_ps()
            };
            let ab = &a[b];
            // k outer, t inner: the T sums are independent chains, so the dpbusd latency
            // overlaps (t outer gave one chain of 8 at a time).
            let mut isum = [_mm512_setzero_si512(); T32];
            if !MINS {
                // Signed types hold `q + 128`: take `128·Σqa` back out.
                for (s, &u) in isum.iter_mut().zip(&ab.unbias) {
                    *s = _mm512_set1_epi32(u);
                }
            }
            for (k, &v) in wq.iter().enumerate() {
                for (s, q) in isum.iter_mut().zip(&ab.q) {
                    *s = _mm512_dpbusd_epi32(*s, v, _mm512_set1_epi32(quad(q, k)));
                }
            }
            for t in 0..T32 {
                let s = _mm512_mul_ps(wd, _mm512_set1_ps(ab.d[t]));
                acc[t] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(isum[t]), acc[t]);
                if MINS {
                    acc[t] = _mm512_fmadd_ps(wm, _mm512_set1_ps(ab.s[t]), acc[t]);
                }
            }
        }
        for (ch, &ac) in chains.iter_mut().zip(&acc) {
            ch[c].write(ac);
        }
    }
    for (o, ch) in out.iter_mut().zip(&chains) {
        // SAFETY: the loop above wrote all 16 chains.
        let ch = ch.map(|v| unsafe { v.assume_init() });
        store_lanes(reduce_chains(&ch), o);
    }
}

/// The 16 chains of one output column added as `hsum16` adds the dot kernels' lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn reduce_chains(ch: &[__m512; 16]) -> __m512 {
    let mut h = [_mm512_setzero_ps(); 8];
    for j in 0..8 {
        h[j] = _mm512_add_ps(ch[j], ch[j + 8]);
    }
    let q: [__m512; 4] = [
        _mm512_add_ps(h[0], h[4]),
        _mm512_add_ps(h[1], h[5]),
        _mm512_add_ps(h[2], h[6]),
        _mm512_add_ps(h[3], h[7]),
    ];
    let r0 = _mm512_add_ps(q[0], q[2]);
    let r1 = _mm512_add_ps(q[1], q[3]);
    _mm512_add_ps(r0, r1)
}

/// K-quants: `out[t][r]` = row `r` of `w` against the Q8_K activation row `a[t]`, for Q4_K,
/// Q5_K or Q6_K (`pack`).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn tile_k(
    pack: PackKind,
    w: &PackedGroup<'_>,
    a: &[&[u8]; TK],
    out: &mut [[f32; LANES]; TK],
) {
    match pack {
        PackKind::Q6K => tile_k_impl::<true, false>(w, a, out),
        // Q4_K's codes are 4-bit: the narrow path. Q5_K's 5-bit codes take the general one.
        PackKind::Q4K => tile_k_impl::<false, true>(w, a, out),
        _ => tile_k_impl::<false, false>(w, a, out),
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_k_impl<const Q6: bool, const NARROW: bool>(
    w: &PackedGroup<'_>,
    a: &[&[u8]; TK],
    out: &mut [[f32; LANES]; TK],
) {
    // Scale groups per super-block and code quads per group.
    let (groups, quads) = if Q6 { (16, 4) } else { (8, 8) };
    let nsb = w.d.len() / LANES;
    let mut acc = [_mm512_setzero_ps(); TK];
    for sb in 0..nsb {
        let codes = &w.codes[4096 * sb..4096 * (sb + 1)];
        // (A loop, not `array::from_fn`: its closure was not inlined.)
        let mut ys: [&[u8]; TK] = [&[]; TK];
        for (y, at) in ys.iter_mut().zip(a) {
            *y = &at[292 * sb..292 * (sb + 1)];
        }
        let mut isum = [_mm512_setzero_si512(); TK];
        for g in 0..groups {
            let sc = load_epi32x16(w.scales, LANES * (groups * sb + g));
            // Two sums per row (even and odd quads): twice the independent dpbusd chains.
            let (mut even, mut odd) = ([_mm512_setzero_si512(); TK], [_mm512_setzero_si512(); TK]);
            for k in (0..quads).step_by(2) {
                let q = quads * g + k;
                let (v0, v1) = (load64(arr(codes, 64 * q)), load64(arr(codes, 64 * q + 64)));
                for (t, y) in ys.iter().enumerate() {
                    let qa0 = _mm512_set1_epi32(i32_at(y, 4 + 4 * q));
                    let qa1 = _mm512_set1_epi32(i32_at(y, 8 + 4 * q));
                    even[t] = _mm512_dpbusd_epi32(even[t], v0, qa0);
                    odd[t] = _mm512_dpbusd_epi32(odd[t], v1, qa1);
                }
            }
            for t in 0..TK {
                if NARROW {
                    // Each chain's lanes fit i16 (4 dpbusd of 4 codes ≤ 15 × |a| ≤ 128: ≤
                    // 30720), and each scale is < 2^15 with a zero high half, so `vpdpwssd`
                    // adds exactly chain·scale: one instruction where `vpmulld` costs two.
                    isum[t] = _mm512_dpwssd_epi32(isum[t], even[t], sc);
                    isum[t] = _mm512_dpwssd_epi32(isum[t], odd[t], sc);
                } else {
                    let p = _mm512_add_epi32(even[t], odd[t]);
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(p, sc));
                }
            }
        }
        // Min term (Q4_K/Q5_K) or the −32 offset (Q6_K), from the Q8_K group sums.
        let mut msum = [_mm512_setzero_si512(); TK];
        for j in 0..8 {
            let pair = load_epi32x16(w.pairs, LANES * (8 * sb + j));
            for (t, y) in ys.iter().enumerate() {
                let bs = _mm512_set1_epi32(i32_at(y, 260 + 4 * j));
                msum[t] = _mm512_dpwssd_epi32(msum[t], pair, bs);
            }
        }
        let d = load_ps16(w.d, LANES * sb);
        let dmin = load_ps16(w.m, LANES * sb);
        for (t, y) in ys.iter().enumerate() {
            let da = _mm512_set1_ps(f32_at(y, 0));
            if Q6 {
                let i = _mm512_sub_epi32(isum[t], _mm512_slli_epi32::<5>(msum[t]));
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(i), acc[t]);
            } else {
                let dd = _mm512_mul_ps(d, da);
                acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(isum[t]), acc[t]);
                let dm = _mm512_mul_ps(dmin, da);
                acc[t] = _mm512_fnmadd_ps(dm, _mm512_cvtepi32_ps(msum[t]), acc[t]);
            }
        }
    }
    for (o, &v) in out.iter_mut().zip(&acc) {
        store_lanes(v, o);
    }
}
