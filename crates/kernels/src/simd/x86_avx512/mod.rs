//! AVX-512 (F/BW/VL) + VNNI kernels for x86-64: the dot products of the common weight types
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) with their integer sums on `vpdpbusd` /
//! `vpdpwssd`, and their prompt-GEMM twins (`gemm.rs`). The other types, and the activation
//! quantizers, run the AVX2 kernels on this tier (every AVX-512 CPU has AVX2). Compare ggml
//! `src/ggml-cpu/arch/x86/quants.c` and `repack.cpp`.
//!
//! Every function is `#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,...")]`;
//! the one precondition is that the CPU has those features (`dispatch` checks before using
//! them). Memory is read through bounds-checked `&[u8; N]` views or, for the gathers, inside
//! a slice whose length was checked first.
//!
//! # Summation order
//!
//! The GEMM keeps one weight row per vector lane (`crate::repack`), so each output is
//! accumulated in one lane, block after block. Each dot product here performs exactly the same
//! float operations, so the prompt path and the token-by-token path agree bit for bit:
//!
//! - 32-element blocks: block `b` adds `fma(d_w·d_a, Σ q·qa, acc[b mod 16])` (and, for Q4_1 /
//!   Q5_1, then `fma(m_w, s_a, acc[b mod 16])`) into one of 16 chains, and the chains are
//!   added pairwise (`c + 8`, then `+ 4`, `+ 2`, `+ 1`). The dot runs 16 blocks per step with
//!   chain `c` in lane `c`; the GEMM runs the chains one after the other.
//! - K-quants: super-block `i` adds `fma(d·da, isum_i, acc)`, then for Q4_K/Q5_K
//!   `fma(−(dmin·da), msum_i, acc)`, in one chain, where `isum_i` and `msum_i` are the exact
//!   integer sums of the super-block.
//!
//! Integer sums are exact, so how each kernel forms them does not matter.

mod blocks32;
mod gemm;
mod k_quants;
mod repack;

pub(crate) use gemm::{tile_blocks32, tile_k};
pub(crate) use repack::pack_group;

use super::{in_streams, prefetch_ahead, DotFn, RowsFn, STREAMS};
use crate::types::GgmlType;
use std::arch::x86_64::*;

/// The many-rows dot for weight type `ty`, if this file has one: rows side by side
/// ([`in_streams`]); the 32-element block types also prepare the shared activation row once
/// per call.
pub(crate) fn rows_fn(ty: GgmlType) -> Option<RowsFn> {
    Some(match ty {
        GgmlType::Q4_0 => blocks32::dot_rows_q4_0_q8_0 as RowsFn,
        GgmlType::Q4_1 => blocks32::dot_rows_q4_1_q8_1,
        GgmlType::Q5_0 => blocks32::dot_rows_q5_0_q8_0,
        GgmlType::Q5_1 => blocks32::dot_rows_q5_1_q8_1,
        GgmlType::Q8_0 => blocks32::dot_rows_q8_0_q8_0,
        GgmlType::Q4_K => k_quants::dot_rows_q4k_q8k,
        GgmlType::Q5_K => k_quants::dot_rows_q5k_q8k,
        GgmlType::Q6_K => k_quants::dot_rows_q6k_q8k,
        _ => return None,
    })
}

/// The dot product for weight type `ty`, if this file has one.
pub(crate) fn dot_fn(ty: GgmlType) -> Option<DotFn> {
    Some(match ty {
        GgmlType::Q4_0 => blocks32::vec_dot_q4_0_q8_0 as DotFn,
        GgmlType::Q4_1 => blocks32::vec_dot_q4_1_q8_1,
        GgmlType::Q5_0 => blocks32::vec_dot_q5_0_q8_0,
        GgmlType::Q5_1 => blocks32::vec_dot_q5_1_q8_1,
        GgmlType::Q8_0 => blocks32::vec_dot_q8_0_q8_0,
        GgmlType::Q4_K => k_quants::vec_dot_q4k_q8k,
        GgmlType::Q5_K => k_quants::vec_dot_q5k_q8k,
        GgmlType::Q6_K => k_quants::vec_dot_q6k_q8k,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Bounds-checked views and loads

/// `b[off..off + N]` as an array reference (panics if out of bounds).
#[inline(always)]
fn arr<const N: usize>(b: &[u8], off: usize) -> &[u8; N] {
    b[off..off + N].try_into().expect("length is N")
}

#[inline(always)]
fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes(*arr::<4>(b, off))
}

#[inline(always)]
fn i32_at(b: &[u8], off: usize) -> i32 {
    i32::from_le_bytes(*arr::<4>(b, off))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load16(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load32(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load64(b: &[u8; 64]) -> __m512i {
    // SAFETY: `b` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

/// Two 32-byte runs as one vector: `lo` in the low half, `hi` in the high half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load32x2(lo: &[u8; 32], hi: &[u8; 32]) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(load32(lo)), load32(hi))
}

// ---------------------------------------------------------------------------------------------
// Reductions

/// The pairwise sum of 16 lanes: `v_c + v_c+8`, then `+ 4`, `+ 2`, `+ 1` (the GEMM adds its
/// 16 chains in this order).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn hsum16(v: __m512) -> f32 {
    let h = _mm256_add_ps(
        _mm512_castps512_ps256(v),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
    );
    let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let r = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
}

// ---------------------------------------------------------------------------------------------
// Scales of 16 blocks or rows

/// Four little-endian u16 at `s[off + stride·j]`, `j = j0..j0 + 4`, packed into one i64
/// (zero for `j ≥ n`). General-register work: on Zen 4 a gather of the 16 scales costs more
/// than the rest of a step.
#[inline(always)]
pub(super) fn pack4(s: &[u8], off: usize, stride: usize, j0: usize, n: usize) -> i64 {
    let mut v = 0u64;
    for i in 0..4 {
        let j = j0 + i;
        if j < n {
            v |= (u16::from_le_bytes([s[off + stride * j], s[off + stride * j + 1]]) as u64)
                << (16 * i);
        }
    }
    v as i64
}

/// The f16 at byte `off` of each of the `n` (≤ 16) blocks of `stride` bytes in `s`, packed
/// for `_mm256_set_epi64x` (zero past `n`). Plain code, so that it always inlines.
#[inline(always)]
pub(super) fn f16x16(s: &[u8], off: usize, stride: usize, n: usize) -> [i64; 4] {
    [
        pack4(s, off, stride, 0, n),
        pack4(s, off, stride, 4, n),
        pack4(s, off, stride, 8, n),
        pack4(s, off, stride, 12, n),
    ]
}

/// Lane `p` holds block `TRANSPOSED[p]` (`4·(p mod 4) + p / 4`, the 4×4 transpose of block
/// order): where `blocks32`'s quad sums leave the sums. The nibble kernels keep their 16
/// chains in this order and put them back in block order once per row.
const TRANSPOSED: [i32; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

/// Where the scales of 16 blocks lie in 64-byte windows of their bytes, for [`scales16`]: the
/// f16 that goes to lane `l` is word `idx[p][l] % 32` of window `2p + idx[p][l] / 32`, for
/// the pair of windows `p` whose bit `l` of `mask[p]` is set.
pub(super) struct ScalePlan {
    /// Byte offset of each window (the last one ends at the end of the 16 blocks).
    start: [usize; 10],
    idx: [[i16; 32]; 5],
    mask: [u32; 5],
    pairs: usize,
}

/// The [`ScalePlan`] of blocks of `wb` (even, ≥ 4) bytes with their f16 at byte `off` (even);
/// `transposed`: lane `p` takes block `TRANSPOSED[p]` instead of block `p`.
pub(super) const fn scale_plan(wb: usize, off: usize, transposed: bool) -> ScalePlan {
    let len = 16 * wb;
    let windows = len.div_ceil(64);
    let mut plan = ScalePlan {
        start: [0; 10],
        idx: [[0; 32]; 5],
        mask: [0; 5],
        pairs: windows.div_ceil(2),
    };
    let mut w = 0;
    while w < 2 * plan.pairs {
        let s = if 64 * w + 64 <= len { 64 * w } else { len - 64 };
        plan.start[w] = s;
        w += 1;
    }
    let mut lane = 0;
    while lane < 16 {
        let b = if transposed {
            TRANSPOSED[lane] as usize
        } else {
            lane
        };
        let o = b * wb + off;
        let mut w = 0;
        while !(plan.start[w] <= o && o + 2 <= plan.start[w] + 64) {
            w += 1;
        }
        let (p, hi) = (w / 2, w % 2);
        plan.idx[p][lane] = (32 * hi + (o - plan.start[w]) / 2) as i16;
        plan.mask[p] |= 1 << lane;
        lane += 1;
    }
    plan
}

/// The 16 f16 that `plan` locates in `s` (16 whole blocks), as f32: a few 64-byte loads and
/// word permutes instead of 16 scalar loads.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn scales16(s: &[u8], plan: &ScalePlan) -> __m512 {
    let mut h = _mm512_setzero_si512();
    for p in 0..plan.pairs {
        let a = load64(arr(s, plan.start[2 * p]));
        let b = load64(arr(s, plan.start[2 * p + 1]));
        // SAFETY: `idx[p]` is 32 readable i16.
        let idx = unsafe { _mm512_loadu_si512(plan.idx[p].as_ptr().cast()) };
        let v = _mm512_permutex2var_epi16(a, idx, b);
        h = _mm512_mask_mov_epi16(h, plan.mask[p], v);
    }
    _mm512_cvtph_ps(_mm512_castsi512_si256(h))
}

/// 16 f16 packed by [`f16x16`] as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn cvt_f16x16(h: [i64; 4]) -> __m512 {
    _mm512_cvtph_ps(_mm256_set_epi64x(h[3], h[2], h[1], h[0]))
}
