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

/// How rotary embedding pairs dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): llama (whose Q/K rows are permuted at conversion).
    Norm,
    /// Half-split pairs (x[i], x[i + n_rot/2]): GPT-NeoX, qwen2, gemma, phi3.
    Neox,
}

/// Rotary tables for one rope configuration: cos/sin of every position × frequency pair.
#[derive(Clone, Debug)]
pub struct RopeTable {
    pub style: RopeStyle,
    /// Rotated dimensions per head (the rest pass through).
    pub n_rot: usize,
    /// `[n_pos, n_rot / 2]` pairs of (cos, sin).
    cos_sin: Vec<(f32, f32)>,
}

impl RopeTable {
    /// θ(pos, i) = pos · base^(−2i/n_rot), computed by repeated multiplication in f32 as ggml
    /// does, so that positions round the same way.
    pub fn new(
        style: RopeStyle,
        n_rot: usize,
        freq_base: f32,
        freq_scale: f32,
        n_pos: usize,
    ) -> Self {
        let half = n_rot / 2;
        let theta_scale = freq_base.powf(-2.0 / n_rot as f32);
        let mut cos_sin = Vec::with_capacity(n_pos * half);
        for pos in 0..n_pos {
            let mut theta = pos as f32;
            for _ in 0..half {
                let t = theta * freq_scale;
                cos_sin.push((t.cos(), t.sin()));
                theta *= theta_scale;
            }
        }
        RopeTable {
            style,
            n_rot,
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
        let sign = if inverse { -1.0 } else { 1.0 };
        let cs = &self.cos_sin[pos * half..(pos + 1) * half];
        for head in x.chunks_exact_mut(head_dim) {
            match self.style {
                RopeStyle::Norm => {
                    for (i, &(c, s)) in cs.iter().enumerate() {
                        let s = sign * s;
                        let (a, b) = (head[2 * i], head[2 * i + 1]);
                        head[2 * i] = a * c - b * s;
                        head[2 * i + 1] = a * s + b * c;
                    }
                }
                RopeStyle::Neox => {
                    for (i, &(c, s)) in cs.iter().enumerate() {
                        let s = sign * s;
                        let (a, b) = (head[i], head[i + half]);
                        head[i] = a * c - b * s;
                        head[i + half] = a * s + b * c;
                    }
                }
            }
        }
    }
}

/// Softmax in place; the normalizer is accumulated in f64, as ggml does.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// SiLU(gate) · up, written into `gate`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
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
            let t = RopeTable::new(style, 4, 10000.0, 1.0, 8);
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
            let t = RopeTable::new(style, 8, 10000.0, 1.0, 32);
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
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, -1e9];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] == 0.0);
    }
}
