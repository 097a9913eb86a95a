//! `bert` and `nomic-bert`: encoders for embeddings. Token (+ type 0) embeddings, LayerNorm'd;
//! blocks of bidirectional attention and FFN, each followed by a residual add and a LayerNorm
//! (post-norm). bert adds learned positions and runs a GELU FFN with biases; nomic-bert
//! rotates queries and keys (NEOX RoPE) and runs a SwiGLU FFN. No output head: the last
//! block's output is the token embedding, pooled by [`crate::embed`]. Rank pooling
//! (rerankers) reads the optional `cls` / `cls.output` head.
//! Reference: llama.cpp `src/models/bert.cpp`, `src/models/nomic-bert.cpp`.

use super::{
    hparams, load_qkv, name, Activation, ClsHead, Dense, HParams, Layer, NormKind, Positions,
    Weights,
};
use crate::error::Result;
use crate::gguf::GgufError;
use crate::ops::RopeStyle;
use crate::tensor::TensorLoader;

pub fn load_bert(t: &mut TensorLoader) -> Result<(HParams, Weights)> {
    load(t, "bert", Positions::Learned, Activation::Gelu)
}

pub fn load_nomic_bert(t: &mut TensorLoader) -> Result<(HParams, Weights)> {
    load(t, "nomic-bert", Positions::Rope, Activation::Silu)
}

fn load(
    t: &mut TensorLoader,
    arch: &str,
    positions: Positions,
    activation: Activation,
) -> Result<(HParams, Weights)> {
    let mut hp = hparams(t, arch, RopeStyle::Neox)?;
    hp.norm = NormKind::LayerPost;
    hp.positions = positions;
    hp.activation = activation;
    let (e, f) = (hp.n_embd, hp.n_ff);
    let meta = &t.file.metadata;
    let n_types = meta
        .opt_usize("tokenizer.ggml.token_type_count")
        .map_err(|k| t.file.error(k))?
        .unwrap_or(0);
    if n_types == 0 {
        return Err(t.file.error(GgufError::InvalidValue {
            key: "tokenizer.ggml.token_type_count".into(),
            why: format!("{arch} needs a positive count of token types"),
        }));
    }
    let token_embd = t.matrix("token_embd.weight", hp.n_vocab, e)?;
    let type_embd = match t.opt_matrix("token_types.weight", n_types, e)? {
        Some(m) => {
            let mut row = vec![0.0; e];
            m.dequantize_row(t.file, 0, &mut row);
            Some(row)
        }
        None => None,
    };
    let pos_embd = match positions {
        Positions::Learned => Some(t.matrix("position_embd.weight", hp.n_ctx_train, e)?),
        Positions::Rope => None,
    };
    let embd_norm = Some((
        t.vector("token_embd_norm.weight", e)?,
        t.vector("token_embd_norm.bias", e)?,
    ));
    let mut layers = Vec::with_capacity(hp.n_layer);
    for i in 0..hp.n_layer {
        let (qkv, qkv_bias) = load_qkv(t, &hp, i)?;
        let ffn_gate = match activation {
            Activation::Gelu => None,
            _ => Some(t.matrix(&name(i, "ffn_gate.weight"), f, e)?),
        };
        layers.push(Layer {
            attn_norm: t.vector(&name(i, "attn_output_norm.weight"), e)?,
            attn_norm_b: Some(t.vector(&name(i, "attn_output_norm.bias"), e)?),
            qkv,
            qkv_bias,
            q_norm: None,
            k_norm: None,
            wo: t.matrix(&name(i, "attn_output.weight"), e, hp.q_dim())?,
            wo_bias: t.opt_vector(&name(i, "attn_output.bias"), e)?,
            post_attn_norm: None,
            ffn_norm: t.vector(&name(i, "layer_output_norm.weight"), e)?,
            ffn_norm_b: Some(t.vector(&name(i, "layer_output_norm.bias"), e)?),
            ffn_gate,
            ffn_up: t.matrix(&name(i, "ffn_up.weight"), f, e)?,
            ffn_up_b: t.opt_vector(&name(i, "ffn_up.bias"), f)?,
            ffn_down: t.matrix(&name(i, "ffn_down.weight"), e, f)?,
            ffn_down_b: t.opt_vector(&name(i, "ffn_down.bias"), e)?,
            post_ffn_norm: None,
        });
    }
    let cls = ClsHead {
        dense: dense(t, "cls", e, e)?,
        // As many outputs as the file has rows (a wrong shape is named by the shape check).
        out: match t.file.tensor("cls.output.weight").map(|i| i.dims.clone()) {
            Some(dims) => dense(t, "cls.output", dims.get(1).map_or(1, |&n| n as usize), e)?,
            None => None,
        },
    };
    let weights = Weights {
        token_embd,
        pos_embd,
        type_embd,
        embd_norm,
        layers,
        output_norm: None,
        output: None,
        output_bias: None,
        cls,
    };
    Ok((hp, weights))
}

/// `<prefix>.weight` `[rows, cols]` and `<prefix>.bias`, if the file has the weight.
fn dense(t: &mut TensorLoader, prefix: &str, rows: usize, cols: usize) -> Result<Option<Dense>> {
    let Some(w) = t.opt_matrix(&format!("{prefix}.weight"), rows, cols)? else {
        return Ok(None);
    };
    let b = t.opt_vector(&format!("{prefix}.bias"), rows)?;
    Ok(Some((w, b)))
}
