//! Shared test helpers: a deterministic PRNG, random weight rows with chosen scale regimes,
//! random activation rows, and the magnitude `Σ|terms|` that bounds rounding differences.
#![allow(dead_code)]

use half::f16;
use rllm_kernels::types::GgmlType;

/// The block-quantized weight types with kernels.
pub const QUANT_TYPES: [GgmlType; 23] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::IQ1_S,
    GgmlType::IQ1_M,
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ2_S,
    GgmlType::IQ3_XXS,
    GgmlType::IQ3_S,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
];
pub const FLOAT_TYPES: [GgmlType; 3] = [GgmlType::F32, GgmlType::F16, GgmlType::BF16];

/// splitmix64: small, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [-1, 1).
    pub fn signed(&mut self) -> f32 {
        2.0 * self.unit() - 1.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// 10^e for a uniform e in [lo, hi], random sign.
    pub fn log_uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let e = lo + (hi - lo) * self.unit();
        let v = 10f32.powf(e);
        if self.next_u64() & 1 == 0 {
            v
        } else {
            -v
        }
    }
}

/// How large the f16 scales of a generated weight row are.
#[derive(Clone, Copy, Debug)]
pub enum Scales {
    /// Typical model scales, 1e-4 .. 1e-1.
    Normal,
    /// f16 subnormals and the smallest normals.
    Tiny,
    /// Up to the largest finite f16.
    Huge,
    /// All zero.
    Zero,
    /// Any finite f16, per field.
    Mixed,
}

pub const ALL_SCALES: [Scales; 5] = [
    Scales::Normal,
    Scales::Tiny,
    Scales::Huge,
    Scales::Zero,
    Scales::Mixed,
];

fn scale_f16(rng: &mut Rng, s: Scales) -> f16 {
    match s {
        Scales::Normal => f16::from_f32(rng.log_uniform(-4.0, -1.0)),
        Scales::Tiny => f16::from_bits(rng.below(0x0800) as u16 | ((rng.below(2) as u16) << 15)),
        Scales::Huge => {
            if rng.below(4) == 0 {
                f16::MAX
            } else {
                f16::from_f32(rng.log_uniform(3.0, 4.8))
            }
        }
        Scales::Zero => f16::ZERO,
        Scales::Mixed => loop {
            let h = f16::from_bits(rng.next_u64() as u16);
            if h.is_finite() {
                break h;
            }
        },
    }
}

/// Byte offsets of the f16 scale fields in one block of `ty` (IQ1_M spreads its scale over
/// nibbles and Q8_K has an f32 one: `weight_row` sets those).
pub fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ1_S | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ4_NL
        | IQ4_XS => &[0],
        Q4_1 | Q5_1 | Q8_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        TQ1_0 => &[52],
        TQ2_0 => &[64],
        _ => &[],
    }
}

/// A random row of `n` elements of weight type `ty`: random codes, f16 scales from `s`.
/// Float rows get finite values whose magnitudes follow `s` loosely.
pub fn weight_row(rng: &mut Rng, ty: GgmlType, n: usize, s: Scales) -> Vec<u8> {
    let bytes = ty.row_bytes(n).unwrap();
    let mut w = rng.bytes(bytes);
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            let (lo, hi) = match s {
                Scales::Normal => (-3.0, 0.0),
                Scales::Tiny => (-7.5, -4.0),
                Scales::Huge => (2.0, 4.5),
                Scales::Zero => (0.0, 0.0),
                Scales::Mixed => (-6.0, 4.5),
            };
            let x: Vec<f32> = (0..n)
                .map(|_| match s {
                    Scales::Zero => 0.0,
                    _ => rng.log_uniform(lo, hi),
                })
                .collect();
            for (o, v) in w.chunks_exact_mut(bytes / n.max(1)).zip(x) {
                match ty {
                    GgmlType::F32 => o.copy_from_slice(&v.to_le_bytes()),
                    GgmlType::F16 => o.copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes()),
                    _ => o.copy_from_slice(&rllm_kernels::blocks::f32_to_bf16(v).to_le_bytes()),
                }
            }
        }
        _ => {
            for b in w.chunks_exact_mut(ty.type_size()) {
                for &o in scale_offsets(ty) {
                    b[o..o + 2].copy_from_slice(&scale_f16(rng, s).to_bits().to_le_bytes());
                }
                match ty {
                    GgmlType::IQ1_M => {
                        let h = scale_f16(rng, s).to_bits();
                        for k in 0..4 {
                            let o = 48 + 2 * k;
                            let w = u16::from_le_bytes([b[o], b[o + 1]]) & 0x0FFF;
                            let w = w | (((h >> (4 * k)) & 0xF) << 12);
                            b[o..o + 2].copy_from_slice(&w.to_le_bytes());
                        }
                    }
                    GgmlType::Q8_K => {
                        let d = scale_f16(rng, s).to_f32();
                        b[0..4].copy_from_slice(&d.to_le_bytes());
                    }
                    _ => {}
                }
            }
        }
    }
    w
}

/// How large the values of a generated activation row are.
#[derive(Clone, Copy, Debug)]
pub enum Acts {
    /// Uniform in [-1, 1).
    Unit,
    /// Magnitudes spread over many decades in one row.
    Spread,
    /// Around 1e-30 (f32 normals; f16 activations flush them to zero).
    Tiny,
    /// f32 subnormals.
    Subnormal,
    /// As large as the format allows with finite scales.
    Huge,
    /// All zero.
    Zero,
    /// Exact halfway cases of the quantizers' rounding: integers + 0.5 with scale 1 or 2.
    Ties,
    /// Mostly zero with a few outliers.
    Sparse,
}

pub const ALL_ACTS: [Acts; 8] = [
    Acts::Unit,
    Acts::Spread,
    Acts::Tiny,
    Acts::Subnormal,
    Acts::Huge,
    Acts::Zero,
    Acts::Ties,
    Acts::Sparse,
];

/// A random activation row of `n` values for activation format `act`.
pub fn act_row(rng: &mut Rng, act: GgmlType, n: usize, a: Acts) -> Vec<f32> {
    // The largest magnitude whose block scale stays finite in the format.
    let huge = match act {
        GgmlType::Q8_0 => 8.0e6, // d = amax / 127 must fit f16
        GgmlType::Q8_1 => 2.0e3, // s = d·Σq (up to 4064·d) must fit f16 too
        GgmlType::F16 => 6.0e4,
        GgmlType::F32 | GgmlType::BF16 => 1.0e15, // keep sums of products finite
        _ => 1.0e20, // Q8_K: f32 scale; keeps sums of products with f16-max weights finite
    };
    let block = act.block_size().max(32);
    (0..n)
        .map(|i| match a {
            Acts::Unit => rng.signed(),
            Acts::Spread => rng.log_uniform(-8.0, 3.0),
            Acts::Tiny => rng.signed() * 1e-30,
            Acts::Subnormal => rng.signed() * 1e-39,
            Acts::Huge => rng.signed() * huge,
            Acts::Zero => 0.0,
            Acts::Ties => {
                // Each block holds its extreme (±127 or ±254) at a random early position,
                // the rest are k + 0.5 (scale 1) or 2k + 1 (scale 2).
                let two = (i / block) % 2 == 1;
                let v = if i % block == 0 {
                    127.0
                } else {
                    (rng.below(253) as f32 - 126.0) + 0.5
                };
                let v = v.clamp(-126.5, 127.0);
                let v = if rng.below(2) == 0 { v } else { -v };
                if two {
                    2.0 * v
                } else {
                    v
                }
            }
            Acts::Sparse => {
                if rng.below(16) == 0 {
                    rng.log_uniform(-2.0, 2.0)
                } else {
                    0.0
                }
            }
        })
        .collect()
}

/// Flip f16 sign bits in one block so that every dequantized element becomes
/// `|scale term| + |min term|` (used to bound rounding differences).
fn magnitude_block(ty: GgmlType, b: &mut [u8]) {
    let clear = |b: &mut [u8], off: usize| b[off + 1] &= 0x7F;
    let set = |b: &mut [u8], off: usize| b[off + 1] |= 0x80;
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => {
            clear(b, 0);
            clear(b, 2);
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            clear(b, 0);
            set(b, 2);
        }
        GgmlType::Q2_K => {
            clear(b, 80);
            set(b, 82);
        }
        _ => {}
    }
}

/// `Σ |terms|` of the dot of weight row `w` with activation row `a` (dequantized), the scale
/// against which summation-order differences are measured.
pub fn dot_magnitude(ty: GgmlType, act: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f64 {
    let mut wm = w.to_vec();
    if ty.is_quantized() {
        for b in wm.chunks_exact_mut(ty.type_size()) {
            magnitude_block(ty, b);
        }
    }
    let mut wd = vec![0f32; n];
    let mut ad = vec![0f32; n];
    rllm_kernels::dequantize_row(ty, &wm, &mut wd);
    rllm_kernels::dequantize_row(act, a, &mut ad);
    let mut mag: f64 = wd
        .iter()
        .zip(&ad)
        .map(|(&x, &y)| (x as f64 * y as f64).abs())
        .sum();
    if act == GgmlType::Q8_1 {
        // The min term uses the stored s = d·Σq.
        for (bw, ba) in w.chunks_exact(ty.type_size()).zip(a.chunks_exact(36)) {
            let m = f16::from_bits(u16::from_le_bytes([bw[2], bw[3]])).to_f32() as f64;
            let s = f16::from_bits(u16::from_le_bytes([ba[2], ba[3]])).to_f32() as f64;
            mag += (m * s).abs();
        }
    }
    mag
}

/// Element counts to test for `ty`: odd block counts included.
pub fn lengths(ty: GgmlType) -> Vec<usize> {
    let bs = ty.block_size();
    if bs == 1 {
        vec![1, 7, 8, 31, 32, 33, 64, 100, 257, 1000]
    } else if bs == 32 {
        // Around the AVX-512 kernels' 2-block pairs and 16-block steps too.
        [1, 2, 3, 7, 8, 13, 16, 17, 31, 33]
            .iter()
            .map(|b| b * bs)
            .collect()
    } else {
        [1, 2, 3, 5].iter().map(|b| b * bs).collect()
    }
}
