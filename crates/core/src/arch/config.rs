//! Typed hyper-parameters read once from `<arch>.*` metadata keys, with llama.cpp's defaults.
//! Key names: llama.cpp `src/llama-arch.cpp` (`LLM_KV_NAMES`); defaults and rope scaling:
//! `src/llama-model.cpp` (`load_hparams`) and `src/llama-context.cpp` (yarn parameters).

use crate::embed::Pooling;
use crate::gguf::{GgufError, Metadata};
use crate::ops::{RopeFactors, RopeSpec, RopeStyle};

/// The feed-forward's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SiLU(gate) · up (llama, qwen2, phi3, nomic-bert).
    Silu,
    /// GELU-tanh(gate) · up (gemma).
    GeluTanh,
    /// GELU(up), no gate (bert).
    Gelu,
}

/// Which normalization the blocks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// RMSNorm, before each sub-layer (decoders).
    RmsPre,
    /// LayerNorm with bias, after each residual add (bert).
    LayerPost,
}

/// How token positions enter the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Positions {
    /// Rotary embedding of queries and keys.
    Rope,
    /// A learned position embedding added to the token embedding (bert).
    Learned,
}

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
    /// Epsilon of the blocks' norms (`attention.layer_norm_rms_epsilon`, or
    /// `attention.layer_norm_epsilon` for LayerNorm models).
    pub norm_eps: f32,
    pub norm: NormKind,
    pub positions: Positions,
    /// Whether a token attends only to earlier ones (`attention.causal`, default true).
    pub causal: bool,
    /// The pooling the file asks for embeddings (`pooling_type`), if any.
    pub pooling: Option<Pooling>,
    /// Rotary embedding of the (global) attention layers.
    pub rope: RopeSpec,
    /// Rotary embedding of the sliding-window layers (the same as `rope` when there are none).
    pub rope_swa: RopeSpec,
    /// Sliding-window size of the layers marked `swa` (keys at most this far back are seen).
    pub n_swa: Option<usize>,
    /// Which layers use the sliding window and `rope_swa`.
    pub swa_layers: Vec<bool>,
    /// Scores are `q·k × attn_scale` (1/sqrt(head_dim) unless the architecture says otherwise).
    pub attn_scale: f32,
    /// Token embeddings are multiplied by this (gemma: sqrt(n_embd)).
    pub embd_scale: Option<f32>,
    pub activation: Activation,
    /// Logits become `cap · tanh(logits / cap)`.
    pub final_softcap: Option<f32>,
}

impl HParams {
    /// Read and check the hyper-parameters of architecture `arch`; the architecture adjusts
    /// its own fields afterwards. `n_vocab` comes from the token embedding's shape, the one
    /// place every file agrees on.
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
        if let Some(v) = meta.opt_usize(&key("attention.value_length"))? {
            if v != head_dim {
                return Err(GgufError::InvalidValue {
                    key: key("attention.value_length"),
                    why: format!("{v} differs from the key length {head_dim}"),
                });
            }
        }
        let n_ctx_train = meta.usize(&key("context_length"))?;
        let n_layer = meta.usize(&key("block_count"))?;
        let rope = rope_spec(meta, &key, rope_style, head_dim, n_ctx_train)?;
        let norm_eps = match meta.opt_f32(&key("attention.layer_norm_rms_epsilon"))? {
            Some(eps) => eps,
            None => match meta.opt_f32(&key("attention.layer_norm_epsilon"))? {
                Some(eps) => eps,
                // Neither: report the usual key.
                None => meta.f32(&key("attention.layer_norm_rms_epsilon"))?,
            },
        };
        let pooling = match meta.opt_usize(&key("pooling_type"))? {
            None => None,
            Some(id) => Some(Pooling::from_id(id).ok_or_else(|| GgufError::InvalidValue {
                key: key("pooling_type"),
                why: format!("{id} is not a pooling type (0 none, 1 mean, 2 cls, 3 last, 4 rank)"),
            })?),
        };
        let hp = HParams {
            arch: arch.to_owned(),
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: meta.usize(&key("feed_forward_length"))?,
            norm_eps,
            norm: NormKind::RmsPre,
            positions: Positions::Rope,
            causal: meta.opt_bool(&key("attention.causal"))?.unwrap_or(true),
            pooling,
            rope_swa: rope.clone(),
            rope,
            n_swa: None,
            swa_layers: vec![false; n_layer.min(1 << 16)],
            attn_scale: 1.0 / (head_dim.max(1) as f32).sqrt(),
            embd_scale: None,
            activation: Activation::Silu,
            final_softcap: None,
        };
        hp.check(&key)?;
        Ok(hp)
    }

    /// Sliding-window attention from `attention.sliding_window`, on the layers where
    /// `is_swa(layer)` holds; the window layers take their own rope base (`rope.freq_base_swa`,
    /// default 10000, unscaled), as llama.cpp's interleaved-SWA models do.
    pub fn set_sliding_window(
        &mut self,
        meta: &Metadata,
        is_swa: impl Fn(usize) -> bool,
    ) -> Result<(), GgufError> {
        let key = |k: &str| format!("{}.{k}", self.arch);
        let Some(n_swa) = meta.opt_usize(&key("attention.sliding_window"))? else {
            return Ok(());
        };
        if n_swa == 0 {
            return Ok(());
        }
        self.n_swa = Some(n_swa);
        self.swa_layers = (0..self.n_layer).map(is_swa).collect();
        self.rope_swa = RopeSpec {
            freq_base: meta.opt_f32(&key("rope.freq_base_swa"))?.unwrap_or(10000.0),
            freq_scale: 1.0,
            ext_factor: 0.0,
            factors: RopeFactors::None,
            ..self.rope.clone()
        };
        Ok(())
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
        let n_rot = self.rope.n_rot;
        if n_rot == 0 || n_rot > self.head_dim || n_rot % 2 != 0 {
            return bad(
                "rope.dimension_count",
                format!(
                    "{n_rot} must be even and at most the head size {}",
                    self.head_dim
                ),
            );
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return bad(
                "attention.layer_norm_rms_epsilon",
                format!("{} is not positive", self.norm_eps),
            );
        }
        if !(self.rope.freq_base.is_finite() && self.rope.freq_base > 0.0) {
            return bad(
                "rope.freq_base",
                format!("{} is not positive", self.rope.freq_base),
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

/// The rotary embedding as the metadata describes it: base, dimensions, and scaling
/// (`rope.scaling.type` none / linear / yarn / longrope, `rope.scaling.factor` or the older
/// `rope.scale_linear`, `rope.scaling.original_context_length`, `rope.scaling.attn_factor`).
fn rope_spec(
    meta: &Metadata,
    key: &dyn Fn(&str) -> String,
    style: RopeStyle,
    head_dim: usize,
    n_ctx_train: usize,
) -> Result<RopeSpec, GgufError> {
    let scaling = meta.opt_str(&key("rope.scaling.type"))?.unwrap_or("linear");
    let factor = match meta.opt_f32(&key("rope.scaling.factor"))? {
        Some(f) => Some(f),
        None => meta.opt_f32(&key("rope.scale_linear"))?,
    };
    let factor = match factor {
        Some(f) if f.is_finite() && f > 0.0 => f,
        Some(f) if f != 0.0 => {
            return Err(GgufError::InvalidValue {
                key: key("rope.scaling.factor"),
                why: format!("{f} is not positive"),
            })
        }
        _ => 1.0,
    };
    let (freq_scale, ext_factor) = match scaling {
        "none" => (1.0, 0.0),
        "linear" | "longrope" => (1.0 / factor, 0.0),
        "yarn" => (1.0 / factor, 1.0),
        other => {
            return Err(GgufError::InvalidValue {
                key: key("rope.scaling.type"),
                why: format!(
                    "rope scaling '{other}' is not supported (none, linear, yarn, longrope)"
                ),
            })
        }
    };
    let attn_factor = meta
        .opt_f32(&key("rope.scaling.attn_factor"))?
        .unwrap_or(1.0);
    if !(attn_factor.is_finite() && attn_factor > 0.0) {
        return Err(GgufError::InvalidValue {
            key: key("rope.scaling.attn_factor"),
            why: format!("{attn_factor} is not positive"),
        });
    }
    Ok(RopeSpec {
        style,
        n_rot: meta
            .opt_usize(&key("rope.dimension_count"))?
            .unwrap_or(head_dim),
        freq_base: meta.opt_f32(&key("rope.freq_base"))?.unwrap_or(10000.0),
        freq_scale,
        ext_factor,
        attn_factor,
        beta_fast: 32.0,
        beta_slow: 1.0,
        n_ctx_orig: meta
            .opt_usize(&key("rope.scaling.original_context_length"))?
            .filter(|&n| n > 0)
            .unwrap_or(n_ctx_train),
        factors: RopeFactors::None,
    })
}
