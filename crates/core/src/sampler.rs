//! The sampling chain, in llama.cpp's default order: repetition penalties → top-k → typical →
//! top-p → min-p → temperature → draw. Temperature 0 is greedy. Reproducible from a seed.
//! Reference: llama.cpp `src/llama-sampling.cpp`, `common/sampling.cpp`.

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct SamplerParams {
    /// 0 = greedy (after penalties).
    pub temperature: f32,
    /// 0 = keep all.
    pub top_k: usize,
    /// 1 = keep all.
    pub top_p: f32,
    /// Locally typical sampling; 1 = off.
    pub typical_p: f32,
    /// 0 = keep all.
    pub min_p: f32,
    /// 1 = off.
    pub repeat_penalty: f32,
    /// How many of the last tokens the penalties look at; 0 = off.
    pub repeat_last_n: usize,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// `None` seeds from the clock.
    pub seed: Option<u64>,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            typical_p: 1.0,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

impl SamplerParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad(format!("top_p must be in [0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.typical_p) {
            return bad(format!(
                "typical_p must be in [0, 1], got {}",
                self.typical_p
            ));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            ));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !v.is_finite() {
                return bad(format!("{name} must be finite, got {v}"));
            }
        }
        Ok(())
    }
}

/// xoshiro256**, seeded through splitmix64: small, fast and the same on every platform.
#[derive(Clone, Debug)]
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[derive(Clone, Debug)]
pub struct Sampler {
    pub params: SamplerParams,
    rng: Rng,
    /// (token, logit) candidates, reused between calls.
    cand: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Result<Self> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        Ok(Sampler {
            params,
            rng: Rng::new(seed),
            cand: Vec::new(),
        })
    }

    /// Choose the next token from `logits` given the tokens so far (`history`, for penalties).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = self.params.clone();
        self.cand.clear();
        self.cand
            .extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        self.apply_penalties(history);

        if p.temperature <= 0.0 {
            return self.argmax();
        }
        // Sort descending by logit; ties keep the lower id first, as a stable sort does.
        let k = if p.top_k == 0 {
            self.cand.len()
        } else {
            p.top_k.min(self.cand.len())
        };
        if k < self.cand.len() {
            self.cand
                .select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            self.cand.truncate(k);
        }
        self.cand
            .sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));

        // typical: keep the tokens whose surprise is closest to the entropy, until their
        // probability reaches typical_p (llama.cpp's llama_sampler_typical).
        if p.typical_p < 1.0 {
            let probs = softmax_of(&self.cand, 1.0);
            let entropy: f64 = -probs
                .iter()
                .filter(|&&q| q > 0.0)
                .map(|q| q * q.ln())
                .sum::<f64>();
            let mut order: Vec<(f64, usize)> = probs
                .iter()
                .enumerate()
                .map(|(i, q)| ((-q.ln() - entropy).abs(), i))
                .collect();
            order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut cum = 0.0;
            let mut keep = order.len();
            for (n, &(_, i)) in order.iter().enumerate() {
                cum += probs[i];
                if cum > p.typical_p as f64 {
                    keep = n + 1;
                    break;
                }
            }
            let mut kept: Vec<usize> = order[..keep].iter().map(|&(_, i)| i).collect();
            kept.sort_unstable(); // back to logit order
            self.cand = kept.into_iter().map(|i| self.cand[i]).collect();
        }
        let probs = softmax_of(&self.cand, 1.0);
        // top-p: the smallest prefix whose probability reaches top_p (at least one token).
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = self.cand.len();
            for (i, pr) in probs.iter().enumerate() {
                cum += pr;
                if cum >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep);
        }
        // min-p: drop tokens less likely than min_p × the most likely one.
        if p.min_p > 0.0 {
            let max = self.cand[0].1;
            let min_logit = max + p.min_p.ln();
            let keep = self.cand.iter().take_while(|c| c.1 >= min_logit).count();
            self.cand.truncate(keep.max(1));
        }
        let probs = softmax_of(&self.cand, p.temperature);
        let r = self.rng.next_f64();
        let mut cum = 0.0;
        for (c, pr) in self.cand.iter().zip(&probs) {
            cum += pr;
            if r < cum {
                return c.0;
            }
        }
        self.cand.last().map(|c| c.0).unwrap_or(0)
    }

    fn argmax(&self) -> u32 {
        let mut best = (0u32, f32::NEG_INFINITY);
        for &(id, l) in &self.cand {
            if l > best.1 {
                best = (id, l);
            }
        }
        best.0
    }

    fn apply_penalties(&mut self, history: &[u32]) {
        let p = &self.params;
        let off =
            p.repeat_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0;
        if off || p.repeat_last_n == 0 {
            return;
        }
        let recent = &history[history.len().saturating_sub(p.repeat_last_n)..];
        let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        for &t in recent {
            *counts.entry(t).or_default() += 1;
        }
        for (&tok, &n) in &counts {
            let Some(c) = self.cand.get_mut(tok as usize) else {
                continue;
            };
            if c.1 <= 0.0 {
                c.1 *= p.repeat_penalty;
            } else {
                c.1 /= p.repeat_penalty;
            }
            c.1 -= n as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }
}

/// Probabilities of sorted candidates at temperature `temp`, in f64.
fn softmax_of(cand: &[(u32, f32)], temp: f32) -> Vec<f64> {
    let max = cand.first().map(|c| c.1).unwrap_or(0.0);
    let mut p: Vec<f64> = cand
        .iter()
        .map(|c| (f64::from(c.1 - max) / f64::from(temp)).exp())
        .collect();
    let sum: f64 = p.iter().sum();
    for v in &mut p {
        *v /= sum;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplerParams {
        SamplerParams {
            temperature,
            seed: Some(7),
            ..SamplerParams::default()
        }
    }

    #[test]
    fn greedy_picks_the_argmax() {
        let mut s = Sampler::new(params(0.0)).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9], &[]), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = || {
            let mut s = Sampler::new(params(1.0)).unwrap();
            (0..20).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn repeat_penalty_demotes_recent_tokens() {
        let mut p = params(0.0);
        p.repeat_penalty = 2.0;
        let mut s = Sampler::new(p).unwrap();
        assert_eq!(s.sample(&[1.0, 3.0, 2.0], &[1]), 2);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut p = params(5.0);
        p.top_k = 1;
        let mut s = Sampler::new(p).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 0.5, 0.4], &[]), 1);
        }
    }

    #[test]
    fn typical_drops_the_surprising_tokens() {
        // One likely token among many unlikely ones: the entropy is low, so the likely token
        // is the typical one; a small typical_p keeps only it.
        let mut logits = vec![0.0f32; 50];
        logits[7] = 6.0;
        let mut p = params(1.0);
        p.top_k = 0;
        p.top_p = 1.0;
        p.min_p = 0.0;
        p.typical_p = 0.2;
        let mut s = Sampler::new(p).unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&logits, &[]), 7);
        }
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        for bad in [
            SamplerParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplerParams {
                top_p: 1.5,
                ..Default::default()
            },
            SamplerParams {
                min_p: -0.1,
                ..Default::default()
            },
            SamplerParams {
                typical_p: 1.5,
                ..Default::default()
            },
            SamplerParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
        ] {
            assert!(Sampler::new(bad).is_err());
        }
    }
}
