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
