//! Block formats of ggml: one `#[repr(C)]` struct per block type, with its scalar reference
//! code. The reference code is the spec: plain safe loops that the SIMD kernels in `simd/` are
//! tested against. Layouts: ggml `src/ggml-common.h`; dequantizers and activation quantizers:
//! ggml `src/ggml-quants.c`; dot products: ggml `src/ggml-cpu/quants.c` (the `_generic` ones).
//!
//! Blocks arrive as unaligned little-endian byte slices (a GGUF mapping or an activation
//! buffer). The reference code copies each block out with [`QuantBlock::read`] instead of
//! casting pointers, so it has no alignment requirement and no `unsafe`.
//!
//! To add a type (Q5_K, IQ4_NL, ...): a new file with its block struct implementing
//! [`QuantBlock`] and [`DotBlock`], one arm in [`dequantize_row`], one in
//! `dispatch::scalar_kernel`.

mod float;
mod k_quants;
mod q4_0;
mod q4_1;
mod q5;
mod q8;

pub use float::{
    bf16_to_f32, dequantize_row_bf16, dequantize_row_f16, dequantize_row_f32, f32_to_bf16,
    quantize_row_bf16, quantize_row_f16, quantize_row_f32, vec_dot_bf16_ref, vec_dot_f16_ref,
    vec_dot_f32_ref,
};
pub use k_quants::{get_scale_min_k4, BlockQ4K, BlockQ6K};
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q5::{BlockQ5_0, BlockQ5_1};
pub(crate) use q8::q8_0_scales;
pub use q8::{BlockQ8K, BlockQ8_0, BlockQ8_1};

use crate::types::GgmlType;
use half::f16;

/// A block of a quantized format: a fixed number of elements stored in a fixed number of bytes.
pub trait QuantBlock: Copy + 'static {
    /// The ggml type this block belongs to.
    const TYPE: GgmlType;
    /// Elements per block (ggml's `QK4_0`, `QK_K`, ...).
    const ELEMS: usize;
    /// Bytes per block, as stored (ggml's `sizeof(block_*)`).
    const BYTES: usize;

    /// Copy a block out of `bytes`, which holds exactly [`Self::BYTES`] little-endian bytes.
    fn read(bytes: &[u8]) -> Self;
    /// Store the block into `out`, which holds exactly [`Self::BYTES`] bytes.
    fn write(&self, out: &mut [u8]);
    /// Dequantize into `y`, which holds exactly [`Self::ELEMS`] values.
    fn dequantize(&self, y: &mut [f32]);
}

/// A block format that activations are quantized into before an integer dot product
/// (Q8_0, Q8_1, Q8_K).
pub trait ActBlock: QuantBlock {
    /// Quantize [`Self::ELEMS`] values, as ggml's `quantize_row_*_ref` does for one block.
    fn quantize(x: &[f32]) -> Self;
}

/// A weight block format with a dot product against quantized activations.
pub trait DotBlock: QuantBlock {
    /// The activation format (ggml's `vec_dot_type`).
    type Dot: ActBlock;

    /// Reference dot product of one weight row with one activation row, with the same
    /// integer sums and float accumulation order as ggml's `ggml_vec_dot_*_generic`.
    ///
    /// `w` and `a` hold the same number of blocks; extra bytes are ignored.
    fn vec_dot_ref(w: &[u8], a: &[u8]) -> f32;
}

/// Read the little-endian f16 at `b[off..off + 2]` as f32.
#[inline]
pub(crate) fn read_f16(b: &[u8], off: usize) -> f16 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]]))
}

#[inline]
pub(crate) fn write_f16(out: &mut [u8], off: usize, v: f16) {
    out[off..off + 2].copy_from_slice(&v.to_bits().to_le_bytes());
}

/// The first `N` bytes of `b[off..]` as an array.
#[inline]
pub(crate) fn array_at<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[off..off + N]);
    out
}

/// Iterate over the blocks of a byte row.
pub(crate) fn blocks<B: QuantBlock>(bytes: &[u8]) -> impl Iterator<Item = B> + '_ {
    bytes.chunks_exact(B::BYTES).map(B::read)
}

/// Dequantize a row of `B` blocks: `src` holds exactly `dst.len() / B::ELEMS` blocks.
pub fn dequantize_blocks<B: QuantBlock>(src: &[u8], dst: &mut [f32]) {
    assert!(
        dst.len() % B::ELEMS == 0 && src.len() == dst.len() / B::ELEMS * B::BYTES,
        "dequantize {}: {} bytes cannot hold {} values",
        B::TYPE,
        src.len(),
        dst.len()
    );
    for (b, y) in blocks::<B>(src).zip(dst.chunks_exact_mut(B::ELEMS)) {
        b.dequantize(y);
    }
}

/// Quantize a row of activations into `B` blocks (reference): `out` holds exactly
/// `x.len() / B::ELEMS` blocks.
pub fn quantize_blocks<B: ActBlock>(x: &[f32], out: &mut [u8]) {
    assert!(
        x.len() % B::ELEMS == 0 && out.len() == x.len() / B::ELEMS * B::BYTES,
        "quantize {}: {} values do not fill {} bytes",
        B::TYPE,
        x.len(),
        out.len()
    );
    for (xb, ob) in x.chunks_exact(B::ELEMS).zip(out.chunks_exact_mut(B::BYTES)) {
        B::quantize(xb).write(ob);
    }
}

/// Dequantize one row of type `ty` (scalar reference): `src` holds exactly
/// `ty.row_bytes(dst.len())` bytes.
///
/// Panics if `ty` is not supported or the lengths disagree.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F32 => dequantize_row_f32(src, dst),
        GgmlType::F16 => dequantize_row_f16(src, dst),
        GgmlType::BF16 => dequantize_row_bf16(src, dst),
        GgmlType::Q4_0 => dequantize_blocks::<BlockQ4_0>(src, dst),
        GgmlType::Q4_1 => dequantize_blocks::<BlockQ4_1>(src, dst),
        GgmlType::Q5_0 => dequantize_blocks::<BlockQ5_0>(src, dst),
        GgmlType::Q5_1 => dequantize_blocks::<BlockQ5_1>(src, dst),
        GgmlType::Q8_0 => dequantize_blocks::<BlockQ8_0>(src, dst),
        GgmlType::Q8_1 => dequantize_blocks::<BlockQ8_1>(src, dst),
        GgmlType::Q8_K => dequantize_blocks::<BlockQ8K>(src, dst),
        GgmlType::Q4_K => dequantize_blocks::<BlockQ4K>(src, dst),
        GgmlType::Q6_K => dequantize_blocks::<BlockQ6K>(src, dst),
        _ => panic!("dequantize: type {ty} is not supported"),
    }
}

/// True if [`dequantize_row`] handles `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | Q8_K | Q4_K | Q6_K
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_sizes<B: QuantBlock>() {
        assert_eq!(B::BYTES, B::TYPE.type_size(), "{}", B::TYPE);
        assert_eq!(B::ELEMS, B::TYPE.block_size(), "{}", B::TYPE);
        assert_eq!(std::mem::size_of::<B>(), B::BYTES, "{}", B::TYPE);
    }

    #[test]
    fn block_sizes_match_type_table() {
        check_sizes::<BlockQ4_0>();
        check_sizes::<BlockQ4_1>();
        check_sizes::<BlockQ5_0>();
        check_sizes::<BlockQ5_1>();
        check_sizes::<BlockQ8_0>();
        check_sizes::<BlockQ8_1>();
        check_sizes::<BlockQ8K>();
        check_sizes::<BlockQ4K>();
        check_sizes::<BlockQ6K>();
    }

    #[test]
    fn read_write_round_trips() {
        fn rt<B: QuantBlock>() {
            let bytes: Vec<u8> = (0..B::BYTES).map(|i| (i * 37 + 11) as u8).collect();
            let mut out = vec![0u8; B::BYTES];
            B::read(&bytes).write(&mut out);
            assert_eq!(bytes, out, "{}", B::TYPE);
        }
        rt::<BlockQ4_0>();
        rt::<BlockQ4_1>();
        rt::<BlockQ5_0>();
        rt::<BlockQ5_1>();
        rt::<BlockQ8_0>();
        rt::<BlockQ8_1>();
        rt::<BlockQ8K>();
        rt::<BlockQ4K>();
        rt::<BlockQ6K>();
    }

    #[test]
    #[should_panic(expected = "cannot hold")]
    fn dequantize_rejects_bad_lengths() {
        let mut y = [0f32; 32];
        dequantize_row(GgmlType::Q4_0, &[0u8; 17], &mut y);
    }

    #[test]
    #[should_panic(expected = "not supported")]
    fn dequantize_rejects_unsupported_types() {
        let mut y = [0f32; 256];
        dequantize_row(GgmlType::Q2_K, &[0u8; 84], &mut y);
    }
}
