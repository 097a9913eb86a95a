//! Quantized block formats of ggml: scalar reference kernels (the spec) and SIMD kernels
//! chosen at runtime. This crate knows nothing of GGUF files or models: it takes byte slices
//! of blocks and f32 slices and returns f32.
//!
//! Layouts: ggml `src/ggml-common.h`; reference code: ggml `src/ggml-quants.c`.

pub mod attn;
pub mod blocks;
pub mod dispatch;
pub mod gemm;
pub mod matmul;
pub mod pool;
mod repack;
mod simd;
pub mod types;
pub mod vec_math;

pub use dispatch::{active_isa, DotKernel, Isa};
pub use pool::ThreadPool;
pub use types::{GgmlType, QK_K};

/// True if this crate can dequantize `ty` and multiply it against activations.
pub fn supports(ty: GgmlType) -> bool {
    dispatch::dot_kernel_for(ty, Isa::Scalar).is_some()
}

/// Dequantize one row: `src` holds exactly `ty.row_bytes(dst.len())` bytes.
///
/// Panics if `ty` is not supported or the lengths disagree; callers validate first.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    blocks::dequantize_row(ty, src, dst)
}

/// Quantize the rows of `x` (each `n_cols` long) into `out` (`ty.row_bytes(n_cols)` bytes per
/// row), in parallel over rows on the current rayon pool: the bytes llama-quantize writes.
/// `imatrix` holds one importance weight per column.
///
/// Panics if `ty` has no quantizer or a length disagrees; callers validate first.
pub fn quantize_rows(
    ty: GgmlType,
    x: &[f32],
    n_cols: usize,
    out: &mut [u8],
    imatrix: Option<&[f32]>,
) {
    use rayon::prelude::*;
    if n_cols == 0 || x.is_empty() {
        return;
    }
    let row = ty
        .row_bytes(n_cols)
        .unwrap_or_else(|| panic!("quantize {ty}: rows of {n_cols} are not whole blocks"));
    assert!(
        x.len() % n_cols == 0 && out.len() == x.len() / n_cols * row,
        "quantize {ty}: {} values and {} bytes are not whole rows of {n_cols}",
        x.len(),
        out.len()
    );
    // Small rows go in groups so that each task has some work.
    let rows_per_task = (16384 / n_cols).max(1);
    out.par_chunks_mut(row * rows_per_task)
        .zip(x.par_chunks(n_cols * rows_per_task))
        .for_each(|(o, xs)| {
            for (or, xr) in o.chunks_exact_mut(row).zip(xs.chunks_exact(n_cols)) {
                blocks::quantize_row(ty, xr, or, imatrix);
            }
        });
}

/// The dot-product kernel for weights of type `ty` on the active ISA, or `None` if unsupported.
pub fn dot_kernel(ty: GgmlType) -> Option<DotKernel> {
    dispatch::dot_kernel_for(ty, active_isa())
}

/// The unit tests' seeded random values.
#[cfg(test)]
mod test_rng {
    /// The next value in [-1, 1) of a 64-bit LCG stepped in `seed`.
    pub fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}
