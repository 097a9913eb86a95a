//! Elementwise and row operations of the forward pass, in f32 as ggml computes them.

/// RMSNorm of `x` in place, times `weight`: x * w / sqrt(mean(x²) + eps).
/// The sum of squares is accumulated in f64, as ggml does.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, w) in x.iter_mut().zip(weight) {
        *v = *v * scale * w;
    }
}

/// LayerNorm of `x` in place: (x - mean) / sqrt(var + eps) * weight + bias. Sums are
/// accumulated in f64, as ggml's `ggml_norm` does.
pub fn layer_norm(x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    let n = x.len() as f64;
    let mean = (x.iter().map(|&v| f64::from(v)).sum::<f64>() / n) as f32;
    let mut var = 0.0f64;
    for v in x.iter_mut() {
        *v -= mean;
        var += f64::from(*v) * f64::from(*v);
    }
    let scale = 1.0 / ((var / n) as f32 + eps).sqrt();
    for (i, v) in x.iter_mut().enumerate() {
        *v = *v * scale * weight[i] + bias.map_or(0.0, |b| b[i]);
    }
}

/// How rotary embedding pairs dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): llama (whose Q/K rows are permuted at conversion).
    Norm,
    /// Half-split pairs (x[i], x[i + n_rot/2]): GPT-NeoX, qwen2, gemma, phi3.
    Neox,
}

/// Per-dimension-pair divisors of the rotation frequencies.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeFactors {
    None,
    /// One factor per pair (Llama 3.1's `rope_freqs`).
    Fixed(Vec<f32>),
    /// LongRoPE (phi3): `long` when the context exceeds the original one, else `short`.
    LongShort {
        long: Vec<f32>,
        short: Vec<f32>,
    },
}

/// A rotary embedding: which dimensions rotate, how fast, and how it is scaled.
/// Reference: ggml `src/ggml-cpu/ops.cpp` (`ggml_rope_cache_init`, `rope_yarn`).
#[derive(Clone, Debug, PartialEq)]
pub struct RopeSpec {
    pub style: RopeStyle,
    /// Rotated dimensions per head (the rest pass through).
    pub n_rot: usize,
    pub freq_base: f32,
    /// 1 / the context scaling factor.
    pub freq_scale: f32,
    /// YaRN's extrapolation mix (1 for yarn, 0 otherwise).
    pub ext_factor: f32,
    /// `rope.scaling.attn_factor`: scales cos and sin.
    pub attn_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// Context length before scaling (YaRN's correction range, LongRoPE's long/short choice).
    pub n_ctx_orig: usize,
    pub factors: RopeFactors,
}

/// Rotary tables of one [`RopeSpec`] for one context: cos/sin of every position × pair.
#[derive(Clone, Debug)]
pub struct RopeTable {
    pub style: RopeStyle,
    /// Rotated dimensions per head (the rest pass through).
    pub n_rot: usize,
    /// The magnitude scaling folded into the table (1 unless YaRN or an attention factor).
    mscale: f32,
    /// `[n_pos, n_rot / 2]` pairs of (cos · mscale, sin · mscale).
    cos_sin: Vec<(f32, f32)>,
}

impl RopeTable {
    /// θ(pos, i) = pos · base^(−2i/n_rot) / factor_i, computed by repeated multiplication in
    /// f32 as ggml does so that positions round the same way, then YaRN-corrected.
    pub fn new(spec: &RopeSpec, n_pos: usize) -> Self {
        let half = spec.n_rot / 2;
        let theta_scale = spec.freq_base.powf(-2.0 / spec.n_rot as f32);
        let factors: Option<&[f32]> = match &spec.factors {
            RopeFactors::None => None,
            RopeFactors::Fixed(f) => Some(f),
            RopeFactors::LongShort { long, short } => {
                Some(if n_pos > spec.n_ctx_orig { long } else { short })
            }
        };
        let (ext, fs) = (spec.ext_factor, spec.freq_scale);
        // llama.cpp's yarn_attn_factor: YaRN's own magnitude correction is cancelled here and
        // re-applied per rotation below, so only the metadata attention factor remains.
        let mut mscale = spec.attn_factor;
        if ext != 0.0 {
            let factor = 1.0 / fs;
            let get_mscale = |f: f32| if f <= 1.0 { 1.0 } else { 0.1 * f.ln() + 1.0 };
            mscale *= get_mscale(factor) / (1.0 + 0.1 * factor.ln());
            mscale *= 1.0 + 0.1 * (1.0 / fs).ln();
        }
        let corr = yarn_corr_dims(spec);
        let mut cos_sin = Vec::with_capacity(n_pos * half);
        for pos in 0..n_pos {
            let mut theta = pos as f32;
            for i in 0..half {
                let ff = factors.map_or(1.0, |f| f[i]);
                let extrap = theta / ff;
                let interp = fs * extrap;
                let t = if ext != 0.0 {
                    let y = (i as f32 - corr.0) / (corr.1 - corr.0).max(0.001);
                    let ramp_mix = (1.0 - y.clamp(0.0, 1.0)) * ext;
                    interp * (1.0 - ramp_mix) + extrap * ramp_mix
                } else {
                    interp
                };
                cos_sin.push((t.cos() * mscale, t.sin() * mscale));
                theta *= theta_scale;
            }
        }
        RopeTable {
            style: spec.style,
            n_rot: spec.n_rot,
            mscale,
            cos_sin,
        }
    }

    pub fn n_pos(&self) -> usize {
        self.cos_sin.len() / (self.n_rot / 2).max(1)
    }

    /// Rotate every head of `x` (`n_head` heads of `head_dim`) for position `pos`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        self.rotate(x, head_dim, pos, false);
    }

    /// Rotate back by `pos` positions: the inverse of [`RopeTable::apply`]. Rotations add, so
    /// this moves keys rotated for position p to position p - `pos` (context shifting).
    pub fn unapply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        self.rotate(x, head_dim, pos, true);
    }

    fn rotate(&self, x: &mut [f32], head_dim: usize, pos: usize, inverse: bool) {
        let half = self.n_rot / 2;
        // The table holds mscale · R(θ); the pure inverse rotation R(−θ) is its transpose / mscale.
        let (sign, unscale) = if inverse {
            (-1.0 / self.mscale, 1.0 / self.mscale)
        } else {
            (1.0, 1.0)
        };
        let cs = &self.cos_sin[pos * half..(pos + 1) * half];
        for head in x.chunks_exact_mut(head_dim) {
            match self.style {
                RopeStyle::Norm => {
                    for (i, &(c, s)) in cs.iter().enumerate() {
                        let (c, s) = (c * unscale, sign * s);
                        let (a, b) = (head[2 * i], head[2 * i + 1]);
                        head[2 * i] = a * c - b * s;
                        head[2 * i + 1] = a * s + b * c;
                    }
                }
                RopeStyle::Neox => {
                    for (i, &(c, s)) in cs.iter().enumerate() {
                        let (c, s) = (c * unscale, sign * s);
                        let (a, b) = (head[i], head[i + half]);
                        head[i] = a * c - b * s;
                        head[i + half] = a * s + b * c;
                    }
                }
            }
        }
    }
}

/// YaRN's correction range of dimension pairs (ggml `ggml_rope_yarn_corr_dims`).
fn yarn_corr_dims(spec: &RopeSpec) -> (f32, f32) {
    let n = spec.n_rot as f32;
    let corr_dim = |beta: f32| {
        n * (spec.n_ctx_orig as f32 / (beta * 2.0 * std::f32::consts::PI)).ln()
            / (2.0 * spec.freq_base.ln())
    };
    let start = corr_dim(spec.beta_fast).floor().max(0.0);
    let end = corr_dim(spec.beta_slow).ceil().min(n - 1.0);
    (start, end)
}

/// Softmax in place (vectorized `exp`, the same bits on every tier and batch size).
pub fn softmax(x: &mut [f32]) {
    rllm_kernels::vec_math::softmax(x)
}

/// SiLU(gate) · up, written into `gate` (vectorized as [`softmax`]).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    rllm_kernels::vec_math::swiglu(gate, up)
}

/// GELU with the tanh approximation, in f32 as ggml computes it.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// x += y
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(style: RopeStyle, n_rot: usize) -> RopeSpec {
        RopeSpec {
            style,
            n_rot,
            freq_base: 10000.0,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig: 32,
            factors: RopeFactors::None,
        }
    }

    #[test]
    fn rms_norm_unit_weight_gives_unit_rms() {
        let mut x = vec![1.0, -2.0, 3.0, -4.0];
        rms_norm(&mut x, &[1.0; 4], 0.0);
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        for style in [RopeStyle::Norm, RopeStyle::Neox] {
            let t = RopeTable::new(&spec(style, 4), 8);
            let orig = vec![0.5, -1.0, 2.0, 0.25, 7.0, 8.0];
            let mut x = orig.clone();
            t.apply(&mut x, 6, 0);
            assert_eq!(x, orig);
            t.apply(&mut x, 6, 5);
            let n0: f32 = orig[..4].iter().map(|v| v * v).sum();
            let n1: f32 = x[..4].iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-5);
            assert_eq!(&x[4..], &orig[4..], "dimensions beyond n_rot pass through");
        }
    }

    #[test]
    fn unapply_moves_a_rotation_back() {
        for style in [RopeStyle::Norm, RopeStyle::Neox] {
            let t = RopeTable::new(&spec(style, 8), 32);
            let orig: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
            let (mut at_20, mut at_7) = (orig.clone(), orig.clone());
            t.apply(&mut at_20, 8, 20);
            t.apply(&mut at_7, 8, 7);
            t.unapply(&mut at_20, 8, 13);
            for (a, b) in at_20.iter().zip(&at_7) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let mut x = vec![1.0, 2.0, 3.0, 6.0];
        layer_norm(&mut x, &[2.0; 4], Some(&[0.5; 4]), 0.0);
        let mean = x.iter().sum::<f32>() / 4.0;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 4.0;
        assert!(
            (mean - 0.5).abs() < 1e-6 && (var - 4.0).abs() < 1e-5,
            "{x:?}"
        );
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, -1e9];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] == 0.0);
    }
}
