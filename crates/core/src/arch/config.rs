//! Typed hyper-parameters read once from `<arch>.*` metadata keys, with llama.cpp's defaults.
//! Key names: llama.cpp `src/llama-arch.cpp` (`LLM_KV_NAMES`).

use crate::gguf::{GgufError, Metadata};
use crate::ops::RopeStyle;

#[derive(Clone, Debug)]
pub struct HParams {
    pub arch: String,
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Dimension of one attention head (`attention.key_length`, else n_embd / n_head).
    pub head_dim: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    pub rope_style: RopeStyle,
    /// Rotated dimensions per head.
    pub n_rot: usize,
    pub rope_freq_base: f32,
    pub rope_freq_scale: f32,
}

/// 1 / the linear rope scaling factor (`rope.scaling.*`, or the older `rope.scale_linear`).
fn rope_freq_scale(meta: &Metadata, key: &dyn Fn(&str) -> String) -> Result<f32, GgufError> {
    let factor = match meta.opt_str(&key("rope.scaling.type"))? {
        None | Some("none") => meta.opt_f32(&key("rope.scale_linear"))?,
        Some("linear") => meta.opt_f32(&key("rope.scaling.factor"))?,
        // Other scalings change the rotation itself: refuse rather than compute wrong positions.
        Some(other) => {
            return Err(GgufError::InvalidValue {
                key: key("rope.scaling.type"),
                why: format!("rope scaling '{other}' is not supported yet"),
            })
        }
    };
    Ok(match factor {
        Some(f) if f.is_finite() && f > 0.0 => 1.0 / f,
        _ => 1.0,
    })
}

impl HParams {
    /// Read and check the hyper-parameters of architecture `arch`. `n_vocab` comes from the
    /// token embedding's shape, the one place every file agrees on.
    pub fn from_metadata(
        meta: &Metadata,
        arch: &str,
        n_vocab: usize,
        rope_style: RopeStyle,
    ) -> Result<Self, GgufError> {
        let key = |k: &str| format!("{arch}.{k}");
        let n_embd = meta.usize(&key("embedding_length"))?;
        let n_head = meta.usize(&key("attention.head_count"))?;
        let n_head_kv = meta
            .opt_usize(&key("attention.head_count_kv"))?
            .unwrap_or(n_head);
        let head_dim = match meta.opt_usize(&key("attention.key_length"))? {
            Some(d) => d,
            None if n_head > 0 => n_embd / n_head,
            None => 0,
        };
        let hp = HParams {
            arch: arch.to_owned(),
            n_vocab,
            n_ctx_train: meta.usize(&key("context_length"))?,
            n_embd,
            n_layer: meta.usize(&key("block_count"))?,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: meta.usize(&key("feed_forward_length"))?,
            rms_eps: meta.f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_style,
            n_rot: meta
                .opt_usize(&key("rope.dimension_count"))?
                .unwrap_or(head_dim),
            rope_freq_base: meta.opt_f32(&key("rope.freq_base"))?.unwrap_or(10000.0),
            rope_freq_scale: rope_freq_scale(meta, &key)?,
        };
        hp.check(&key)?;
        Ok(hp)
    }

    fn check(&self, key: &dyn Fn(&str) -> String) -> Result<(), GgufError> {
        let bad = |k: &str, why: String| Err(GgufError::InvalidValue { key: key(k), why });
        for (k, v) in [
            ("embedding_length", self.n_embd),
            ("block_count", self.n_layer),
            ("attention.head_count", self.n_head),
            ("attention.head_count_kv", self.n_head_kv),
            ("feed_forward_length", self.n_ff),
            ("context_length", self.n_ctx_train),
        ] {
            if v == 0 {
                return bad(k, "must be positive".into());
            }
        }
        // Bounds that no real model approaches; they keep corrupt values from driving huge
        // allocations.
        if self.n_layer > 4096 || self.n_head > 4096 || self.n_embd > 1 << 20 {
            return bad(
                "block_count",
                "model dimensions are implausibly large".into(),
            );
        }
        if self.n_head % self.n_head_kv != 0 {
            return bad(
                "attention.head_count_kv",
                format!(
                    "{} does not divide head_count {}",
                    self.n_head_kv, self.n_head
                ),
            );
        }
        if self.head_dim == 0 || self.head_dim > 4096 {
            return bad(
                "attention.key_length",
                format!("head size {} is invalid", self.head_dim),
            );
        }
        if self.n_rot == 0 || self.n_rot > self.head_dim || self.n_rot % 2 != 0 {
            return bad(
                "rope.dimension_count",
                format!(
                    "{} must be even and at most the head size {}",
                    self.n_rot, self.head_dim
                ),
            );
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return bad(
                "attention.layer_norm_rms_epsilon",
                format!("{} is not positive", self.rms_eps),
            );
        }
        if !(self.rope_freq_base.is_finite() && self.rope_freq_base > 0.0) {
            return bad(
                "rope.freq_base",
                format!("{} is not positive", self.rope_freq_base),
            );
        }
        Ok(())
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}
