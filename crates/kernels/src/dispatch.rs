//! Runtime choice of instruction set and the table of kernels per weight type.
//!
//! The ISA is detected once (cached in a `OnceLock`); `RLLM_ISA=scalar|avx2|avx512|neon`
//! forces a tier. A [`DotKernel`] holds the function pointers of one weight type on one ISA,
//! like ggml's `type_traits_cpu[]` (`ggml-cpu.c`), so hot loops never re-detect.

use crate::blocks::{self, DotBlock, QuantBlock};
use crate::blocks::{
    BlockIQ1M, BlockIQ1S, BlockIQ2S, BlockIQ2XS, BlockIQ2XXS, BlockIQ3S, BlockIQ3XXS, BlockIQ4NL,
    BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1,
    BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, BlockTQ1_0, BlockTQ2_0,
};
use crate::simd::{DotFn, QuantizeFn, RowsFn};
use crate::types::GgmlType;
use std::sync::OnceLock;

/// A tier of CPU instructions that kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust: the reference kernels.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// The AVX2 set plus AVX-VNNI (`vpdpbusd` on 256-bit vectors; Alder Lake and later Intel
    /// cores, Zen 5): the AVX2 kernels, with VNNI prompt GEMM tiles.
    AvxVnni,
    /// x86-64 with AVX-512 F/BW/VL and VNNI (plus the AVX2 set): the common weight types
    /// run AVX-512 VNNI kernels, the others and the activation quantizers the AVX2 ones.
    Avx512,
    /// aarch64 Advanced SIMD.
    Neon,
}

impl Isa {
    /// Every tier, slowest first.
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Avx512, Isa::Neon];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Whether the tier has the AVX2 set (AVX2, FMA, F16C): the x86-64 SIMD tiers, which all
    /// run the AVX2 kernels where they have none of their own.
    pub fn has_avx2_set(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::AvxVnni | Isa::Avx512)
    }

    /// Every tier's name, comma-separated: for messages.
    pub fn names() -> String {
        Isa::ALL.map(Isa::name).join(", ")
    }

    /// The tier named `s` (case-insensitive, surrounding spaces ignored).
    pub fn from_name(s: &str) -> Option<Isa> {
        let s = s.trim();
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(s))
    }

    /// True if this CPU can run the tier (runtime detection; std caches the CPUID results).
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => has_avx2(),
            Isa::AvxVnni => has_avx_vnni(),
            Isa::Avx512 => has_avx512(),
            Isa::Neon => has_neon(),
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_avx_vnni() -> bool {
    has_avx2() && is_x86_feature_detected!("avxvnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx_vnni() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn has_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

#[cfg(not(target_arch = "aarch64"))]
fn has_neon() -> bool {
    false
}

/// The tiers this CPU can run, `Scalar` first and the best last.
pub fn available_isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
}

fn best_isa() -> Isa {
    available_isas().pop().unwrap_or(Isa::Scalar)
}

/// The tier for a value of `RLLM_ISA`: the requested one if this CPU has it, otherwise the
/// best available, with a warning to print.
fn choose_isa(request: Option<&str>) -> (Isa, Option<String>) {
    let request = match request.map(str::trim) {
        None | Some("") => return (best_isa(), None),
        Some(r) => r,
    };
    match Isa::from_name(request) {
        Some(isa) if isa.is_available() => (isa, None),
        Some(isa) => {
            let best = best_isa();
            let msg = format!("rllm: RLLM_ISA={request}: this CPU lacks {isa}; using {best}");
            (best, Some(msg))
        }
        None => {
            let best = best_isa();
            let names = Isa::names();
            let msg = format!("rllm: RLLM_ISA={request} is not one of {names}; using {best}");
            (best, Some(msg))
        }
    }
}

/// The tier kernels run on: detected once; `RLLM_ISA` forces one. An unknown or unavailable
/// value prints one warning to stderr and falls back to the best available.
pub fn active_isa() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let request = std::env::var("RLLM_ISA").ok();
        let (isa, warning) = choose_isa(request.as_deref());
        if let Some(w) = warning {
            eprintln!("{w}");
        }
        isa
    })
}

/// The activation quantizer and dot product of one weight type on one tier.
#[derive(Clone, Copy, Debug)]
pub struct DotKernel {
    /// The weight type.
    pub weight: GgmlType,
    /// The activation format (ggml's `vec_dot_type`): Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1
    /// for Q4_1/Q5_1, Q8_K for the K, other IQ and TQ types, and the weight type itself for
    /// F32/F16/BF16 (and Q8_1/Q8_K, which ggml only uses for activations).
    pub act: GgmlType,
    /// The tier the kernel was chosen for.
    pub isa: Isa,
    /// Precondition of both: the CPU supports `isa`. They bound every access by their slices.
    quantize: QuantizeFn,
    dot: DotFn,
    /// A many-rows form of `dot`, where the tier has one.
    rows: Option<RowsFn>,
}

impl DotKernel {
    /// Bytes of one activation row of `n` elements.
    ///
    /// Panics if `n` is not a multiple of the block size.
    pub fn act_row_bytes(&self, n: usize) -> usize {
        self.act
            .row_bytes(n)
            .unwrap_or_else(|| panic!("{n} elements is not a whole number of {} blocks", self.act))
    }

    /// Quantize one activation row `x` into `out`, which holds exactly
    /// `act_row_bytes(x.len())` bytes.
    pub fn quantize_act(&self, x: &[f32], out: &mut [u8]) {
        let want = self.act_row_bytes(x.len());
        assert_eq!(
            out.len(),
            want,
            "quantize {}: {} values need {want} bytes",
            self.act,
            x.len()
        );
        // SAFETY: a `DotKernel` is only built by `dot_kernel_for`, which checked that this CPU
        // supports `self.isa`; the kernel bounds its reads and writes by the slices.
        unsafe { (self.quantize)(x, out) }
    }

    /// Dot product of one weight row `w` (`weight.row_bytes(n)` bytes) with one activation row
    /// `a` (`act_row_bytes(n)` bytes).
    pub fn dot(&self, n: usize, w: &[u8], a: &[u8]) -> f32 {
        let w_bytes = self.weight.row_bytes(n);
        assert!(
            w_bytes == Some(w.len()),
            "dot {}: {} weight bytes for {n} elements",
            self.weight,
            w.len()
        );
        assert_eq!(
            a.len(),
            self.act_row_bytes(n),
            "dot {}: activation row of {n} elements",
            self.weight
        );
        self.dot_row(w, a)
    }

    /// `out[i] = dot(row i of w, a)` for `out.len()` weight rows of `n` elements each.
    pub fn dot_rows(&self, n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
        let w_row = self.weight.row_bytes(n);
        assert!(
            w_row.and_then(|r| r.checked_mul(out.len())) == Some(w.len()),
            "dot_rows {}: {} bytes for {} rows of {n}",
            self.weight,
            w.len(),
            out.len()
        );
        assert_eq!(a.len(), self.act_row_bytes(n), "dot_rows: activation row");
        match self.rows {
            // SAFETY: as in `dot_row`; the rows kernel bounds its accesses by the slices.
            Some(f) if !out.is_empty() => unsafe { f(w, a, out) },
            _ => {
                let w_row = w_row.unwrap_or(0);
                for (i, o) in out.iter_mut().enumerate() {
                    *o = self.dot_row(&w[i * w_row..(i + 1) * w_row], a);
                }
            }
        }
    }

    /// `out[i] = dot(n-element row at byte i·stride of w, a)`: rows that do not touch (spaced
    /// out in a larger buffer). The same bits as [`Self::dot`] per row.
    pub fn dot_rows_strided(&self, n: usize, w: &[u8], stride: usize, a: &[u8], out: &mut [f32]) {
        let w_row = self.weight.row_bytes(n).unwrap_or_else(|| {
            panic!(
                "dot_rows_strided {}: {n} elements are not whole blocks",
                self.weight
            )
        });
        assert_eq!(
            a.len(),
            self.act_row_bytes(n),
            "dot_rows_strided: activation row"
        );
        let Some(last) = out.len().checked_sub(1) else {
            return;
        };
        assert!(
            stride >= w_row && w.len() >= last * stride + w_row,
            "dot_rows_strided {}: {} bytes for {} rows of {w_row} at stride {stride}",
            self.weight,
            w.len(),
            out.len()
        );
        #[cfg(target_arch = "x86_64")]
        if self.weight == GgmlType::F16 && self.isa.has_avx2_set() {
            // SAFETY: the tier's CPU features are present (`dot_kernel_for` checked); the
            // kernel bounds its accesses by the slices.
            return unsafe { crate::simd::x86_avx2::dot_rows_strided_f16(w, stride, a, out) };
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.dot_row(&w[i * stride..i * stride + w_row], a);
        }
    }

    /// [`Self::dot`] for rows whose lengths the caller has checked.
    #[inline]
    pub(crate) fn dot_row(&self, w: &[u8], a: &[u8]) -> f32 {
        // SAFETY: as in `quantize_act`: the CPU supports `self.isa`, and the kernel bounds its
        // reads by the slices (mismatched lengths give a wrong sum, never a bad access).
        unsafe { (self.dot)(w, a) }
    }
}

fn quant_entry<B: DotBlock>() -> (GgmlType, QuantizeFn, DotFn) {
    (
        <B::Dot as QuantBlock>::TYPE,
        blocks::quantize_blocks::<B::Dot> as QuantizeFn,
        B::vec_dot_ref as DotFn,
    )
}

/// The scalar reference entry of a weight type: activation format, quantizer, dot.
fn scalar_kernel(ty: GgmlType) -> Option<(GgmlType, QuantizeFn, DotFn)> {
    use GgmlType::*;
    Some(match ty {
        F32 => (F32, blocks::quantize_row_f32, blocks::vec_dot_f32_ref),
        F16 => (F16, blocks::quantize_row_f16, blocks::vec_dot_f16_ref),
        BF16 => (BF16, blocks::quantize_row_bf16, blocks::vec_dot_bf16_ref),
        Q4_0 => quant_entry::<BlockQ4_0>(),
        Q4_1 => quant_entry::<BlockQ4_1>(),
        Q5_0 => quant_entry::<BlockQ5_0>(),
        Q5_1 => quant_entry::<BlockQ5_1>(),
        Q8_0 => quant_entry::<BlockQ8_0>(),
        Q8_1 => quant_entry::<BlockQ8_1>(),
        Q8_K => quant_entry::<BlockQ8K>(),
        Q2_K => quant_entry::<BlockQ2K>(),
        Q3_K => quant_entry::<BlockQ3K>(),
        Q4_K => quant_entry::<BlockQ4K>(),
        Q5_K => quant_entry::<BlockQ5K>(),
        Q6_K => quant_entry::<BlockQ6K>(),
        IQ1_S => quant_entry::<BlockIQ1S>(),
        IQ1_M => quant_entry::<BlockIQ1M>(),
        IQ2_XXS => quant_entry::<BlockIQ2XXS>(),
        IQ2_XS => quant_entry::<BlockIQ2XS>(),
        IQ2_S => quant_entry::<BlockIQ2S>(),
        IQ3_XXS => quant_entry::<BlockIQ3XXS>(),
        IQ3_S => quant_entry::<BlockIQ3S>(),
        IQ4_NL => quant_entry::<BlockIQ4NL>(),
        IQ4_XS => quant_entry::<BlockIQ4XS>(),
        TQ1_0 => quant_entry::<BlockTQ1_0>(),
        TQ2_0 => quant_entry::<BlockTQ2_0>(),
        _ => return None,
    })
}

/// SIMD replacements on `isa` for the quantizer of activation format `act` and the dot of
/// weight type `ty`; `None` where the tier has no SIMD path for it.
#[allow(unused_variables)]
fn simd_kernels(isa: Isa, ty: GgmlType, act: GgmlType) -> (Option<QuantizeFn>, Option<DotFn>) {
    match isa {
        Isa::Scalar => (None, None),
        // AVX-VNNI changes only the prompt GEMM tiles (`crate::gemm`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni => (
            crate::simd::x86_avx2::quantize_fn(act),
            crate::simd::x86_avx2::dot_fn(ty),
        ),
        // Every AVX-512 CPU has AVX2: what has no AVX-512 kernel runs the AVX2 one.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (
            crate::simd::x86_avx2::quantize_fn(act),
            crate::simd::x86_avx512::dot_fn(ty).or_else(|| crate::simd::x86_avx2::dot_fn(ty)),
        ),
        #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
        Isa::Neon => (
            crate::simd::aarch64_neon::quantize_fn(act),
            crate::simd::aarch64_neon::dot_fn(ty),
        ),
        #[allow(unreachable_patterns)]
        _ => (None, None),
    }
}

#[allow(unused_variables)]
fn simd_rows(isa: Isa, ty: GgmlType) -> Option<RowsFn> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni => crate::simd::x86_avx2::rows_fn(ty),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            crate::simd::x86_avx512::rows_fn(ty).or_else(|| crate::simd::x86_avx2::rows_fn(ty))
        }
        _ => None,
    }
}

/// The kernel of weight type `ty` on tier `isa`, or `None` if the type is unsupported or this
/// CPU lacks the tier. Where the tier has no SIMD path for the type, the scalar functions are
/// used but `isa` is still reported.
pub fn dot_kernel_for(ty: GgmlType, isa: Isa) -> Option<DotKernel> {
    if !isa.is_available() {
        return None;
    }
    let (act, quantize, dot) = scalar_kernel(ty)?;
    let (q_simd, d_simd) = simd_kernels(isa, ty, act);
    Some(DotKernel {
        weight: ty,
        act,
        isa,
        quantize: q_simd.unwrap_or(quantize),
        dot: d_simd.unwrap_or(dot),
        rows: simd_rows(isa, ty),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
            assert_eq!(Isa::from_name(&isa.name().to_uppercase()), Some(isa));
        }
        assert_eq!(Isa::from_name("sse2"), None);
    }

    #[test]
    fn scalar_is_always_first() {
        let isas = available_isas();
        assert_eq!(isas[0], Isa::Scalar);
        assert!(isas.contains(&active_isa()));
    }

    #[test]
    fn choose_isa_handles_overrides() {
        assert_eq!(choose_isa(Some("scalar")), (Isa::Scalar, None));
        assert_eq!(choose_isa(None), (best_isa(), None));
        assert_eq!(choose_isa(Some(" ")), (best_isa(), None));
        let (isa, warn) = choose_isa(Some("mmx"));
        assert_eq!(isa, best_isa());
        assert!(warn.unwrap().contains("not one of"));
        for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
            let (got, warn) = choose_isa(Some(isa.name()));
            assert_eq!(got, best_isa());
            assert!(warn.unwrap().contains("lacks"));
        }
    }

    #[test]
    fn kernel_table_pairs_types_like_ggml() {
        use GgmlType::*;
        let pairs = [
            (F32, F32),
            (F16, F16),
            (BF16, BF16),
            (Q4_0, Q8_0),
            (Q4_1, Q8_1),
            (Q5_0, Q8_0),
            (Q5_1, Q8_1),
            (Q8_0, Q8_0),
            (Q8_1, Q8_1),
            (Q8_K, Q8_K),
            (Q2_K, Q8_K),
            (Q3_K, Q8_K),
            (Q4_K, Q8_K),
            (Q5_K, Q8_K),
            (Q6_K, Q8_K),
            (IQ1_S, Q8_K),
            (IQ1_M, Q8_K),
            (IQ2_XXS, Q8_K),
            (IQ2_XS, Q8_K),
            (IQ2_S, Q8_K),
            (IQ3_XXS, Q8_K),
            (IQ3_S, Q8_K),
            (IQ4_NL, Q8_0),
            (IQ4_XS, Q8_K),
            (TQ1_0, Q8_K),
            (TQ2_0, Q8_K),
        ];
        for isa in available_isas() {
            for (w, a) in pairs {
                let k = dot_kernel_for(w, isa).unwrap();
                assert_eq!((k.weight, k.act, k.isa), (w, a, isa));
            }
            assert!(dot_kernel_for(MXFP4, isa).is_none());
            assert!(dot_kernel_for(I32, isa).is_none());
        }
        for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
            assert!(dot_kernel_for(Q4_0, isa).is_none());
        }
    }

    #[test]
    #[should_panic(expected = "weight bytes")]
    fn dot_checks_lengths() {
        let k = dot_kernel_for(GgmlType::Q4_0, Isa::Scalar).unwrap();
        k.dot(32, &[0u8; 17], &[0u8; 34]);
    }

    /// Rows that would run past the bytes given, or overlap, are refused on every tier (the
    /// SIMD kernels read through pointers inside these bounds).
    #[test]
    fn dot_rows_strided_checks_bounds() {
        for isa in available_isas() {
            let k = dot_kernel_for(GgmlType::F16, isa).unwrap();
            let a = vec![0u8; 2 * 24];
            let mut out = [0f32; 3];
            for (w_len, stride) in [(2 * 50 * 2 + 47, 100), (300, 40)] {
                let w = vec![0u8; w_len];
                let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    k.dot_rows_strided(24, &w, stride, &a, &mut out)
                }));
                let msg = caught.expect_err("must panic");
                let msg = msg.downcast_ref::<String>().expect("a formatted message");
                assert!(msg.contains("at stride"), "{isa}: {msg}");
            }
            // Exactly enough bytes: last row ends at the last byte.
            let w = vec![0u8; 2 * 100 + 48];
            k.dot_rows_strided(24, &w, 100, &a, &mut out);
        }
    }
}
