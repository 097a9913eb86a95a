//! Model architectures: each one is a small declaration — its hyper-parameters and which
//! tensors its blocks have — over the shared decoder in [`crate::forward`]. The registry is
//! keyed by `general.architecture`. Tensor names: llama.cpp `src/llama-arch.cpp`.

mod bert;
pub mod config;
mod gemma3;
mod llama;
mod phi3;
mod qwen2;

pub use config::{Activation, HParams, NormKind, Positions};

use crate::error::{Error, Result};
use crate::gguf::{GgufError, GgufFile};
use crate::ops::{RopeFactors, RopeStyle};
use crate::tensor::{Matrix, TensorLoader};

/// Architectures rllm can run, by their `general.architecture` name.
pub const SUPPORTED: &[&str] = &["bert", "gemma3", "llama", "nomic-bert", "phi3", "qwen2"];

/// The query, key and value projections: three matrices, or one fused `[q; k; v]`.
// One per layer, built once at load: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Qkv {
    Split {
        /// `[q_dim, n_embd]`
        wq: Matrix,
        /// `[kv_dim, n_embd]`
        wk: Matrix,
        /// `[kv_dim, n_embd]`
        wv: Matrix,
    },
    /// `[q_dim + 2 kv_dim, n_embd]`
    Fused(Matrix),
}

/// One block's weights. Optional parts are `None` where an architecture lacks them.
#[derive(Clone, Debug)]
pub struct Layer {
    /// `[n_embd]`: the attention sub-layer's norm, before it (RMSNorm) or after its residual
    /// add (bert's LayerNorm), as [`HParams::norm`] says.
    pub attn_norm: Vec<f32>,
    /// `[n_embd]`: LayerNorm bias.
    pub attn_norm_b: Option<Vec<f32>>,
    pub qkv: Qkv,
    /// `[q_dim + 2 kv_dim]`: biases of q, k and v, concatenated.
    pub qkv_bias: Option<Vec<f32>>,
    /// `[head_dim]`: RMSNorm of each query / key head before RoPE.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    /// `[n_embd, q_dim]`
    pub wo: Matrix,
    /// `[n_embd]`
    pub wo_bias: Option<Vec<f32>>,
    /// `[n_embd]`: RMSNorm of the attention output before the residual add.
    pub post_attn_norm: Option<Vec<f32>>,
    /// `[n_embd]`: the FFN sub-layer's norm, placed as `attn_norm`.
    pub ffn_norm: Vec<f32>,
    /// `[n_embd]`
    pub ffn_norm_b: Option<Vec<f32>>,
    /// `[n_ff, n_embd]`; `None` when `ffn_up` holds gate and up fused, or when the FFN has no
    /// gate ([`Activation::Gelu`]).
    pub ffn_gate: Option<Matrix>,
    /// `[n_ff, n_embd]`, or `[2 n_ff, n_embd]` with the gate first when fused.
    pub ffn_up: Matrix,
    /// `[n_ff]`
    pub ffn_up_b: Option<Vec<f32>>,
    /// `[n_embd, n_ff]`
    pub ffn_down: Matrix,
    /// `[n_embd]`
    pub ffn_down_b: Option<Vec<f32>>,
    /// `[n_embd]`: RMSNorm of the FFN output before the residual add.
    pub post_ffn_norm: Option<Vec<f32>>,
}

/// All weights of a model.
#[derive(Clone, Debug)]
pub struct Weights {
    /// `[n_vocab, n_embd]`
    pub token_embd: Matrix,
    /// `[n_ctx_train, n_embd]`: learned positions ([`Positions::Learned`]).
    pub pos_embd: Option<Matrix>,
    /// `[n_embd]`: the embedding of token type 0, added to every token (llama.cpp gives all
    /// tokens type 0 too).
    pub type_embd: Option<Vec<f32>>,
    /// `[n_embd]` weight and bias of the LayerNorm of the input embeddings (bert).
    pub embd_norm: Option<(Vec<f32>, Vec<f32>)>,
    pub layers: Vec<Layer>,
    /// `[n_embd]`; encoders have none.
    pub output_norm: Option<Vec<f32>>,
    /// `[n_vocab, n_embd]`; the token embedding itself when the file ties them. Encoders
    /// (bert) have no output head: they only embed.
    pub output: Option<Matrix>,
    /// `[n_vocab]`
    pub output_bias: Option<Vec<f32>>,
    /// The classifier of rank pooling (rerankers).
    pub cls: ClsHead,
}

/// A dense layer: `[rows, cols]` weight and optional `[rows]` bias.
pub type Dense = (Matrix, Option<Vec<f32>>);

/// Rank pooling's classification head (llama.cpp `build_pooling`): the pooled vector goes
/// through `tanh(dense)` then `out`, each where present.
#[derive(Clone, Debug, Default)]
pub struct ClsHead {
    /// `[n_embd, n_embd]`
    pub dense: Option<Dense>,
    /// `[n_cls_out, n_embd]`
    pub out: Option<Dense>,
}

/// Read hyper-parameters and weights for the architecture the file declares.
pub fn load(file: &GgufFile) -> Result<(HParams, Weights)> {
    let arch = file
        .metadata
        .str("general.architecture")
        .map_err(|k| file.error(k))?;
    let loader = match arch {
        "llama" => llama::load,
        "qwen2" => qwen2::load,
        "gemma3" => gemma3::load,
        "phi3" => phi3::load,
        "bert" => bert::load_bert,
        "nomic-bert" => bert::load_nomic_bert,
        other => {
            return Err(Error::UnsupportedArchitecture {
                path: file.path.clone(),
                arch: other.to_owned(),
                supported: SUPPORTED.to_vec(),
            })
        }
    };
    let mut t = TensorLoader::new(file);
    let (hp, weights) = loader(&mut t)?;
    t.finish(&hp.arch)?;
    Ok((hp, weights))
}

/// The common hyper-parameters of `arch`, with the vocabulary size from the token embedding.
fn hparams(t: &TensorLoader, arch: &str, style: RopeStyle) -> Result<HParams> {
    let file = t.file;
    let e = file
        .tensor("token_embd.weight")
        .ok_or_else(|| file.error(GgufError::MissingTensor("token_embd.weight".into())))?;
    let n_vocab = match e.dims.as_slice() {
        [_, n_vocab] if *n_vocab > 0 => *n_vocab as usize,
        dims => {
            return Err(file.error(GgufError::InvalidValue {
                key: "token_embd.weight".into(),
                why: format!("shape {dims:?} is not [n_embd, n_vocab]"),
            }))
        }
    };
    HParams::from_metadata(&file.metadata, arch, n_vocab, style).map_err(|k| file.error(k))
}

fn name(i: usize, s: &str) -> String {
    format!("blk.{i}.{s}")
}

/// Q, K, V as three matrices or one fused `attn_qkv`, with optional biases (llama.cpp's
/// `create_tensor_qkv`).
fn load_qkv(t: &mut TensorLoader, hp: &HParams, i: usize) -> Result<(Qkv, Option<Vec<f32>>)> {
    let (e, q, kv) = (hp.n_embd, hp.q_dim(), hp.kv_dim());
    let qkv = match t.opt_matrix(&name(i, "attn_qkv.weight"), q + 2 * kv, e)? {
        Some(w) => {
            if let Some(b) = t.opt_vector(&name(i, "attn_qkv.bias"), q + 2 * kv)? {
                return Ok((Qkv::Fused(w), Some(b)));
            }
            Qkv::Fused(w)
        }
        None => Qkv::Split {
            wq: t.matrix(&name(i, "attn_q.weight"), q, e)?,
            wk: t.matrix(&name(i, "attn_k.weight"), kv, e)?,
            wv: t.matrix(&name(i, "attn_v.weight"), kv, e)?,
        },
    };
    // Separate biases, also found beside fused weights in some files.
    let biases = [
        t.opt_vector(&name(i, "attn_q.bias"), q)?,
        t.opt_vector(&name(i, "attn_k.bias"), kv)?,
        t.opt_vector(&name(i, "attn_v.bias"), kv)?,
    ];
    let bias = match biases {
        [None, None, None] => None,
        [bq, bk, bv] => Some(
            [(bq, q), (bk, kv), (bv, kv)]
                .into_iter()
                .flat_map(|(b, n)| b.unwrap_or_else(|| vec![0.0; n]))
                .collect(),
        ),
    };
    Ok((qkv, bias))
}

/// A llama-like block: norms, attention (any QKV layout, optional biases), gated FFN with
/// separate gate and up. Architectures add their extras to the result.
fn load_layer(t: &mut TensorLoader, hp: &HParams, i: usize) -> Result<Layer> {
    let e = hp.n_embd;
    let (qkv, qkv_bias) = load_qkv(t, hp, i)?;
    Ok(Layer {
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
        ffn_gate: Some(t.matrix(&name(i, "ffn_gate.weight"), hp.n_ff, e)?),
        ffn_up: t.matrix(&name(i, "ffn_up.weight"), hp.n_ff, e)?,
        ffn_up_b: None,
        ffn_down: t.matrix(&name(i, "ffn_down.weight"), e, hp.n_ff)?,
        ffn_down_b: None,
        post_ffn_norm: None,
    })
}

/// Token embedding, output norm, and output head (tied to the embedding when absent).
fn load_embeddings(t: &mut TensorLoader, hp: &HParams, layers: Vec<Layer>) -> Result<Weights> {
    let token_embd = t.matrix("token_embd.weight", hp.n_vocab, hp.n_embd)?;
    let output = t
        .opt_matrix("output.weight", hp.n_vocab, hp.n_embd)?
        .unwrap_or_else(|| token_embd.clone());
    Ok(Weights {
        output_norm: Some(t.vector("output_norm.weight", hp.n_embd)?),
        output_bias: t.opt_vector("output.bias", hp.n_vocab)?,
        token_embd,
        pos_embd: None,
        type_embd: None,
        embd_norm: None,
        output: Some(output),
        layers,
        cls: ClsHead::default(),
    })
}

/// Per-pair frequency factors stored as a tensor of `n_rot / 2` values, if present.
fn rope_factors(t: &mut TensorLoader, hp: &HParams, tensor: &str) -> Result<Option<Vec<f32>>> {
    let factors = t.opt_vector(tensor, hp.rope.n_rot / 2)?;
    if let Some(f) = &factors {
        if f.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(t.file.error(GgufError::InvalidValue {
                key: tensor.into(),
                why: "rope frequency factors must be positive".into(),
            }));
        }
    }
    Ok(factors)
}

/// Llama 3.1-style `rope_freqs.weight`, applied to every layer.
fn load_rope_freqs(t: &mut TensorLoader, hp: &mut HParams) -> Result<()> {
    if let Some(f) = rope_factors(t, hp, "rope_freqs.weight")? {
        hp.rope.factors = RopeFactors::Fixed(f);
    }
    Ok(())
}
