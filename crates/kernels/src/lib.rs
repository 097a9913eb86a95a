//! Quantized block formats of ggml: scalar reference kernels (the spec) and SIMD kernels
//! chosen at runtime. This crate knows nothing of GGUF files or models: it takes byte slices
//! of blocks and f32 slices and returns f32.
//!
//! Layouts: ggml `src/ggml-common.h`; reference code: ggml `src/ggml-quants.c`.

pub mod blocks;
pub mod dispatch;
pub mod matmul;
mod simd;
pub mod types;

pub use dispatch::{active_isa, DotKernel, Isa};
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

/// The dot-product kernel for weights of type `ty` on the active ISA, or `None` if unsupported.
pub fn dot_kernel(ty: GgmlType) -> Option<DotKernel> {
    dispatch::dot_kernel_for(ty, active_isa())
}
