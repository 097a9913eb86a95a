//! `phi3`: fused QKV and fused gate/up projections, half-split RoPE over
//! `rope.dimension_count` dimensions with LongRoPE factors (`rope_factors_long` /
//! `rope_factors_short`, chosen by context length) and `rope.scaling.attn_factor`.
//! llama.cpp ignores phi3's sliding window; so does rllm, to give the same logits.
//! Reference: llama.cpp `src/models/phi3.cpp`.

use super::{hparams, load_embeddings, load_qkv, name, rope_factors, HParams, Layer, Weights};
use crate::error::Result;
use crate::gguf::GgufError;
use crate::ops::{RopeFactors, RopeStyle};
use crate::tensor::TensorLoader;

pub fn load(t: &mut TensorLoader) -> Result<(HParams, Weights)> {
    let mut hp = hparams(t, "phi3", RopeStyle::Neox)?;
    let long = rope_factors(t, &hp, "rope_factors_long.weight")?;
    let short = rope_factors(t, &hp, "rope_factors_short.weight")?;
    hp.rope.factors = match (long, short) {
        (Some(long), Some(short)) => RopeFactors::LongShort { long, short },
        (None, None) => RopeFactors::None,
        _ => {
            return Err(t.file.error(GgufError::MissingTensor(
                "rope_factors_long.weight and rope_factors_short.weight (both or neither)".into(),
            )))
        }
    };
    hp.rope_swa = hp.rope.clone();
    let e = hp.n_embd;
    let mut layers = Vec::with_capacity(hp.n_layer);
    for i in 0..hp.n_layer {
        let (qkv, qkv_bias) = load_qkv(t, &hp, i)?;
        layers.push(Layer {
            attn_norm: t.vector(&name(i, "attn_norm.weight"), e)?,
            attn_norm_b: None,
            qkv,
            qkv_bias,
            q_norm: None,
            k_norm: None,
            wo: t.matrix(&name(i, "attn_output.weight"), e, hp.q_dim())?,
            wo_bias: t.opt_vector(&name(i, "attn_output.bias"), e)?,
            post_attn_norm: None,
            ffn_norm: t.vector(&name(i, "ffn_norm.weight"), e)?,
            ffn_norm_b: None,
            ffn_gate: None,
            ffn_up: t.matrix(&name(i, "ffn_up.weight"), 2 * hp.n_ff, e)?,
            ffn_up_b: None,
            ffn_down: t.matrix(&name(i, "ffn_down.weight"), e, hp.n_ff)?,
            ffn_down_b: None,
            post_ffn_norm: None,
        });
    }
    let weights = load_embeddings(t, &hp, layers)?;
    Ok((hp, weights))
}
