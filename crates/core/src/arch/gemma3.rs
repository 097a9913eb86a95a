//! `gemma3`: embeddings scaled by sqrt(n_embd); RMSNorm weights stored as (1 + w) by the
//! converter, so applied as stored; norms before and after attention and FFN; per-head Q/K
//! RMSNorm; GELU-tanh gated FFN; five sliding-window layers (rope base 10000) to one global
//! layer; optional final logit soft-capping. Reference: llama.cpp `src/models/gemma3.cpp`.

use super::{hparams, load_embeddings, load_layer, name, Activation, HParams, Weights};
use crate::error::Result;
use crate::gguf::{Array, Value};
use crate::ops::RopeStyle;
use crate::tensor::TensorLoader;

/// Every sixth layer is global, the others slide (unless the file gives a pattern).
const SWA_PATTERN: usize = 6;

pub fn load(t: &mut TensorLoader) -> Result<(HParams, Weights)> {
    let meta = &t.file.metadata;
    let mut hp = hparams(t, "gemma3", RopeStyle::Neox)?;
    // The pattern is a period (every n-th layer global) or one bool per layer.
    let pattern_key = "gemma3.attention.sliding_window_pattern";
    let per_layer = match meta.get(pattern_key) {
        Some(Value::Array(Array::Bool(v))) => Some(v.clone()),
        _ => None,
    };
    let period = match per_layer {
        Some(_) => SWA_PATTERN,
        None => meta
            .opt_usize(pattern_key)
            .map_err(|k| t.file.error(k))?
            .unwrap_or(SWA_PATTERN),
    };
    let is_swa = |il: usize| match &per_layer {
        Some(v) => v.get(il).copied().unwrap_or(false),
        None => period == 0 || il % period < period - 1,
    };
    hp.set_sliding_window(meta, is_swa)
        .map_err(|k| t.file.error(k))?;
    hp.embd_scale = Some((hp.n_embd as f32).sqrt());
    hp.activation = Activation::GeluTanh;
    hp.final_softcap = meta
        .opt_f32("gemma3.final_logit_softcapping")
        .map_err(|k| t.file.error(k))?
        .filter(|&c| c != 0.0);
    // Gemma 3 27B scales by the model width per head, the others by the head size.
    if hp.n_layer == 62 {
        hp.attn_scale = 1.0 / ((hp.n_embd / hp.n_head) as f32).sqrt();
    }
    let (e, hd) = (hp.n_embd, hp.head_dim);
    let mut layers = Vec::with_capacity(hp.n_layer);
    for i in 0..hp.n_layer {
        let mut layer = load_layer(t, &hp, i)?;
        layer.q_norm = Some(t.vector(&name(i, "attn_q_norm.weight"), hd)?);
        layer.k_norm = Some(t.vector(&name(i, "attn_k_norm.weight"), hd)?);
        layer.post_attn_norm = Some(t.vector(&name(i, "post_attention_norm.weight"), e)?);
        layer.post_ffn_norm = Some(t.vector(&name(i, "post_ffw_norm.weight"), e)?);
        layers.push(layer);
    }
    let weights = load_embeddings(t, &hp, layers)?;
    Ok((hp, weights))
}
