//! SIMD kernels, one file per ISA. Each is a drop-in replacement for a scalar reference in
//! `blocks/` and is tested against it (`tests/simd_equivalence.rs`). Compare ggml
//! `src/ggml-cpu/arch/{x86,arm}/quants.c`.
//!
//! Kernel contract: a kernel is an `unsafe fn` whose only precondition is that the CPU has
//! the ISA's features; it reads and writes only through its slice arguments, bounded by their
//! lengths. `dispatch.rs` stores them as the pointer types below after checking the CPU.

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
pub(crate) mod aarch64_neon;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512;

/// Quantize one activation row: `(x, out)` with `out` exactly the row's bytes.
pub(crate) type QuantizeFn = unsafe fn(&[f32], &mut [u8]);
/// Dot product of one weight row with one activation row holding the same number of blocks.
pub(crate) type DotFn = unsafe fn(&[u8], &[u8]) -> f32;
/// `out[i] = dot(weight row i of w, a)` for rows of `w.len() / out.len()` bytes: many short
/// rows against one activation row without a call and a horizontal sum per row.
pub(crate) type RowsFn = unsafe fn(&[u8], &[u8], &mut [f32]);

// ---------------------------------------------------------------------------------------------
// Decode on x86-64: rows side by side, weights prefetched

/// Weight rows a decode call reads side by side, each a sequential stream of its own (rows a
/// quarter of the call's rows apart). Decode is bound by how many cache misses a core keeps in
/// flight: one stream leaves the core waiting on memory latency, several streams overlap
/// their misses (ggml's AMX decode kernel reads four column tiles at once for the same
/// reason). 1B decode at 2 threads on a Xeon VM: AVX-512 tier Q4_0 and Q4_K_M +15%, AVX2 tier
/// Q4_0 2.8x. Each row's operations are those of a row alone, so results do not change.
#[cfg(target_arch = "x86_64")]
pub(crate) const STREAMS: usize = 4;

/// Whether decode reads rows side by side on this CPU: on Intel, where it was measured. Other
/// CPUs (AMD) keep one row after another until measured: an earlier decode kernel that read 4
/// adjacent rows at once (AVX2 tier, commit b3606d2) ran 35% slower on the machine it was
/// tried on.
#[cfg(target_arch = "x86_64")]
fn side_by_side() -> bool {
    use std::arch::x86_64::__cpuid;
    static INTEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INTEL.get_or_init(|| {
        let id = __cpuid(0);
        [id.ebx, id.edx, id.ecx] == [*b"Genu", *b"ineI", *b"ntel"].map(u32::from_le_bytes)
    })
}

/// `out[i]` = row `i` of `w` (`out.len()` rows of equal length): [`STREAMS`] rows at a time,
/// a quarter of the rows apart, through `rows`, and the rows left over through `one` (every
/// row, where [`side_by_side`] says no).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn in_streams(
    w: &[u8],
    out: &mut [f32],
    mut rows: impl FnMut([&[u8]; STREAMS]) -> [f32; STREAMS],
    mut one: impl FnMut(&[u8]) -> f32,
) {
    let rb = w.len() / out.len().max(1);
    let row = |i: usize| &w[i * rb..(i + 1) * rb];
    let q = if side_by_side() {
        out.len() / STREAMS
    } else {
        0
    };
    for j in 0..q {
        let ys = rows(std::array::from_fn(|s| row(s * q + j)));
        for (s, y) in ys.into_iter().enumerate() {
            out[s * q + j] = y;
        }
    }
    for (i, o) in out.iter_mut().enumerate().skip(STREAMS * q) {
        *o = one(row(i));
    }
}

/// How far ahead of the bytes in hand the dot kernels prefetch weights. Decode reads each
/// thread's weight rows once, one after another: without the hint a core stalls on memory
/// (1B Q4_0 decode at 2 threads here: +10-15%).
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 2048;

/// Prefetch the cache lines `PREFETCH_AHEAD` bytes past the `len` bytes at `x` (past the end
/// of a row they are the next row's; a prefetch never faults, so any address will do).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_ahead(x: &[u8], len: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let ahead = x.as_ptr().wrapping_add(PREFETCH_AHEAD).cast::<i8>();
    for line in (0..len).step_by(64) {
        // SAFETY: SSE is part of x86-64; a prefetch reads nothing and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line)) };
    }
}
