//! Model architectures: each one is a small declaration of hyper-parameters and tensors over the
//! shared decoder in [`crate::forward`]. The registry is keyed by `general.architecture`.

pub mod config;
mod llama;

pub use config::HParams;

use crate::error::{Error, Result};
use crate::gguf::{GgufError, GgufFile};
use crate::tensor::{Matrix, TensorLoader};

/// Architectures rllm can run, by their `general.architecture` name.
pub const SUPPORTED: &[&str] = &["llama"];

/// One decoder block's weights.
#[derive(Clone, Debug)]
pub struct Layer {
    /// `[n_embd]`
    pub attn_norm: Vec<f32>,
    /// `[q_dim, n_embd]`
    pub wq: Matrix,
    /// `[kv_dim, n_embd]`
    pub wk: Matrix,
    /// `[kv_dim, n_embd]`
    pub wv: Matrix,
    /// `[n_embd, q_dim]`
    pub wo: Matrix,
    /// `[n_embd]`
    pub ffn_norm: Vec<f32>,
    /// `[n_ff, n_embd]`
    pub ffn_gate: Matrix,
    /// `[n_ff, n_embd]`
    pub ffn_up: Matrix,
    /// `[n_embd, n_ff]`
    pub ffn_down: Matrix,
}

/// All weights of a decoder-only model.
#[derive(Clone, Debug)]
pub struct Weights {
    /// `[n_vocab, n_embd]`
    pub token_embd: Matrix,
    pub layers: Vec<Layer>,
    /// `[n_embd]`
    pub output_norm: Vec<f32>,
    /// `[n_vocab, n_embd]`; the token embedding itself when the file ties them.
    pub output: Matrix,
}

/// Read hyper-parameters and weights for the architecture the file declares.
pub fn load(file: &GgufFile) -> Result<(HParams, Weights)> {
    let arch = file
        .metadata
        .str("general.architecture")
        .map_err(|k| file.error(k))?;
    match arch {
        "llama" => llama::load(file),
        other => Err(Error::UnsupportedArchitecture {
            path: file.path.clone(),
            arch: other.to_owned(),
            supported: SUPPORTED.to_vec(),
        }),
    }
}

/// Vocabulary size from the token embedding's shape `[n_embd, n_vocab]`.
fn n_vocab(file: &GgufFile) -> Result<usize> {
    let t = file
        .tensor("token_embd.weight")
        .ok_or_else(|| file.error(GgufError::MissingTensor("token_embd.weight".into())))?;
    match t.dims.as_slice() {
        [_, n_vocab] if *n_vocab > 0 => Ok(*n_vocab as usize),
        dims => Err(file.error(GgufError::InvalidValue {
            key: "token_embd.weight".into(),
            why: format!("shape {dims:?} is not [n_embd, n_vocab]"),
        })),
    }
}

/// The attention and SwiGLU tensors every llama-like block has.
fn load_layer(t: &mut TensorLoader, hp: &HParams, i: usize) -> Result<Layer> {
    let name = |s: &str| format!("blk.{i}.{s}.weight");
    let e = hp.n_embd;
    Ok(Layer {
        attn_norm: t.vector(&name("attn_norm"), e)?,
        wq: t.matrix(&name("attn_q"), hp.q_dim(), e)?,
        wk: t.matrix(&name("attn_k"), hp.kv_dim(), e)?,
        wv: t.matrix(&name("attn_v"), hp.kv_dim(), e)?,
        wo: t.matrix(&name("attn_output"), e, hp.q_dim())?,
        ffn_norm: t.vector(&name("ffn_norm"), e)?,
        ffn_gate: t.matrix(&name("ffn_gate"), hp.n_ff, e)?,
        ffn_up: t.matrix(&name("ffn_up"), hp.n_ff, e)?,
        ffn_down: t.matrix(&name("ffn_down"), e, hp.n_ff)?,
    })
}
