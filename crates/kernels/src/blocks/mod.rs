//! Block formats of ggml: one `#[repr(C)]` struct per block type, with its scalar reference
//! code. The reference code is the spec: plain safe loops that the SIMD kernels in `simd/` are
//! tested against. Layouts: ggml `src/ggml-common.h`; dequantizers and activation quantizers:
//! ggml `src/ggml-quants.c`; dot products: ggml `src/ggml-cpu/quants.c` (the `_generic` ones).
//!
//! Blocks arrive as unaligned little-endian byte slices (a GGUF mapping or an activation
//! buffer). The reference code copies each block out with [`QuantBlock::read`] instead of
//! casting pointers, so it has no alignment requirement and no `unsafe`.
//!
//! Weight quantizers (f32 → blocks, what `rllm quantize` writes) are bit-exact ports of the
//! ones llama-quantize runs: [`quantize_row`] dispatches to them.
//!
//! To add a type: a new file with its block struct implementing [`QuantBlock`] and
//! [`DotBlock`], one arm in [`dequantize_row`], one in `dispatch::scalar_kernel`, and (if it has
//! a quantizer) one in [`quantize_row`].

mod float;
mod iq1;
mod iq2;
mod iq3;
mod iq4;
mod iq_grids;
mod iq_tables;
mod k_low;
mod k_quants;
mod q4_0;
mod q4_1;
mod q5;
mod q8;
mod quant_helpers;
mod quant_k;
mod quant_legacy;
mod tq;

pub use float::{
    bf16_to_f32, dequantize_row_bf16, dequantize_row_f16, dequantize_row_f32, f32_to_bf16,
    quantize_row_bf16, quantize_row_f16, quantize_row_f32, vec_dot_bf16_ref, vec_dot_f16_ref,
    vec_dot_f32_ref,
};
pub use iq1::{BlockIQ1M, BlockIQ1S, IQ1_DELTA};
pub use iq2::{BlockIQ2S, BlockIQ2XS, BlockIQ2XXS};
pub use iq3::{BlockIQ3S, BlockIQ3XXS};
pub use iq4::{quantize_row_iq4_nl, quantize_row_iq4_xs, BlockIQ4NL, BlockIQ4XS, QK4_NL};
// The table re-exports and `tq1_trit` serve the x86 kernels; `q3k_scales` the NEON ones.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
pub(crate) use iq_grids::{IQ1S_GRID, IQ2S_GRID};
pub use iq_tables::KVALUES_IQ4NL;
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
pub(crate) use iq_tables::{IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS_IQ2XS};
#[cfg_attr(not(target_arch = "aarch64"), allow(unused_imports))]
pub(crate) use k_low::q3k_scales;
pub use k_low::{BlockQ2K, BlockQ3K};
pub use k_quants::{get_scale_min_k4, BlockQ4K, BlockQ5K, BlockQ6K};
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q5::{BlockQ5_0, BlockQ5_1};
pub(crate) use q8::q8_0_scales;
pub use q8::{BlockQ8K, BlockQ8_0, BlockQ8_1};
pub use quant_k::{
    quantize_row_q2_k, quantize_row_q3_k, quantize_row_q4_k, quantize_row_q5_k, quantize_row_q6_k,
};
pub use quant_legacy::{
    quantize_row_q4_0, quantize_row_q4_1, quantize_row_q5_0, quantize_row_q5_1, quantize_row_q8_0,
};
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
pub(crate) use tq::trit as tq1_trit;
pub use tq::{quantize_row_tq1_0, quantize_row_tq2_0, BlockTQ1_0, BlockTQ2_0};

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
        GgmlType::Q2_K => dequantize_blocks::<BlockQ2K>(src, dst),
        GgmlType::Q3_K => dequantize_blocks::<BlockQ3K>(src, dst),
        GgmlType::Q4_K => dequantize_blocks::<BlockQ4K>(src, dst),
        GgmlType::Q5_K => dequantize_blocks::<BlockQ5K>(src, dst),
        GgmlType::Q6_K => dequantize_blocks::<BlockQ6K>(src, dst),
        GgmlType::IQ1_S => dequantize_blocks::<BlockIQ1S>(src, dst),
        GgmlType::IQ1_M => dequantize_blocks::<BlockIQ1M>(src, dst),
        GgmlType::IQ2_XXS => dequantize_blocks::<BlockIQ2XXS>(src, dst),
        GgmlType::IQ2_XS => dequantize_blocks::<BlockIQ2XS>(src, dst),
        GgmlType::IQ2_S => dequantize_blocks::<BlockIQ2S>(src, dst),
        GgmlType::IQ3_XXS => dequantize_blocks::<BlockIQ3XXS>(src, dst),
        GgmlType::IQ3_S => dequantize_blocks::<BlockIQ3S>(src, dst),
        GgmlType::IQ4_NL => dequantize_blocks::<BlockIQ4NL>(src, dst),
        GgmlType::IQ4_XS => dequantize_blocks::<BlockIQ4XS>(src, dst),
        GgmlType::TQ1_0 => dequantize_blocks::<BlockTQ1_0>(src, dst),
        GgmlType::TQ2_0 => dequantize_blocks::<BlockTQ2_0>(src, dst),
        _ => panic!("dequantize: type {ty} is not supported"),
    }
}

/// True if [`dequantize_row`] handles `ty`: every type of published GGUF files except the
/// integer ones and MXFP4.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    !matches!(ty, I8 | I16 | I32 | I64 | F64 | MXFP4)
}

/// Quantize one row of weights `x` into `out` (exactly `ty.row_bytes(x.len())` bytes), as
/// llama-quantize does: the same bytes for the same input. `imatrix` holds one importance
/// weight per column (llama.cpp's imatrix); it changes the result of the K, legacy 4/5-bit and
/// IQ4 types and is ignored by Q8_0, TQ1_0, TQ2_0 and the float types.
///
/// Panics if `ty` has no quantizer (see [`can_quantize`]) or the lengths disagree.
pub fn quantize_row(ty: GgmlType, x: &[f32], out: &mut [u8], imatrix: Option<&[f32]>) {
    let bytes = ty.row_bytes(x.len());
    assert!(
        bytes == Some(out.len()),
        "quantize {ty}: {} values do not fill {} bytes",
        x.len(),
        out.len()
    );
    if let Some(w) = imatrix {
        assert_eq!(w.len(), x.len(), "quantize {ty}: imatrix length");
    }
    match ty {
        GgmlType::F32 => quantize_row_f32(x, out),
        GgmlType::F16 => quantize_row_f16(x, out),
        GgmlType::BF16 => quantize_row_bf16(x, out),
        GgmlType::Q4_0 => quantize_row_q4_0(x, out, imatrix),
        GgmlType::Q4_1 => quantize_row_q4_1(x, out, imatrix),
        GgmlType::Q5_0 => quantize_row_q5_0(x, out, imatrix),
        GgmlType::Q5_1 => quantize_row_q5_1(x, out, imatrix),
        GgmlType::Q8_0 => quantize_row_q8_0(x, out),
        GgmlType::Q8_1 => quantize_blocks::<BlockQ8_1>(x, out),
        GgmlType::Q8_K => quantize_blocks::<BlockQ8K>(x, out),
        GgmlType::Q2_K => quantize_row_q2_k(x, out, imatrix),
        GgmlType::Q3_K => quantize_row_q3_k(x, out, imatrix),
        GgmlType::Q4_K => quantize_row_q4_k(x, out, imatrix),
        GgmlType::Q5_K => quantize_row_q5_k(x, out, imatrix),
        GgmlType::Q6_K => quantize_row_q6_k(x, out, imatrix),
        GgmlType::IQ4_NL => quantize_row_iq4_nl(x, out, imatrix),
        GgmlType::IQ4_XS => quantize_row_iq4_xs(x, out, imatrix),
        GgmlType::TQ1_0 => quantize_row_tq1_0(x, out),
        GgmlType::TQ2_0 => quantize_row_tq2_0(x, out),
        _ => panic!("quantize: type {ty} has no quantizer"),
    }
}

/// True if [`quantize_row`] handles `ty`. The grid i-quants (IQ1_S, IQ1_M, IQ2_*, IQ3_*) need an
/// importance matrix and a lattice search that rllm does not implement.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q8_K
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | IQ4_NL
            | IQ4_XS
            | TQ1_0
            | TQ2_0
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
        check_sizes::<BlockQ2K>();
        check_sizes::<BlockQ3K>();
        check_sizes::<BlockQ4K>();
        check_sizes::<BlockQ5K>();
        check_sizes::<BlockQ6K>();
        check_sizes::<BlockIQ1S>();
        check_sizes::<BlockIQ1M>();
        check_sizes::<BlockIQ2XXS>();
        check_sizes::<BlockIQ2XS>();
        check_sizes::<BlockIQ2S>();
        check_sizes::<BlockIQ3XXS>();
        check_sizes::<BlockIQ3S>();
        check_sizes::<BlockIQ4NL>();
        check_sizes::<BlockIQ4XS>();
        check_sizes::<BlockTQ1_0>();
        check_sizes::<BlockTQ2_0>();
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
        rt::<BlockQ2K>();
        rt::<BlockQ3K>();
        rt::<BlockQ4K>();
        rt::<BlockQ5K>();
        rt::<BlockQ6K>();
        rt::<BlockIQ1S>();
        rt::<BlockIQ1M>();
        rt::<BlockIQ2XXS>();
        rt::<BlockIQ2XS>();
        rt::<BlockIQ2S>();
        rt::<BlockIQ3XXS>();
        rt::<BlockIQ3S>();
        rt::<BlockIQ4NL>();
        rt::<BlockIQ4XS>();
        rt::<BlockTQ1_0>();
        rt::<BlockTQ2_0>();
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
        let mut y = [0f32; 32];
        dequantize_row(GgmlType::MXFP4, &[0u8; 17], &mut y);
    }

    #[test]
    fn every_quantizer_round_trips_within_its_step() {
        for ty in crate::types::GgmlType::ALL
            .into_iter()
            .filter(|&t| can_quantize(t))
        {
            let n = 512;
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let mut q = vec![0u8; ty.row_bytes(n).unwrap()];
            quantize_row(ty, &x, &mut q, None);
            let mut y = vec![0f32; n];
            dequantize_row(ty, &q, &mut y);
            let err = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let bound = match ty {
                GgmlType::TQ1_0 | GgmlType::TQ2_0 => 2.0, // ternary: only the sign survives
                GgmlType::Q2_K => 0.7,
                GgmlType::Q3_K => 0.4,
                _ => 0.25,
            };
            assert!(err <= bound, "{ty}: max error {err}");
        }
    }
}
