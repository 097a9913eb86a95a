//! `qwen2`: llama with Q/K/V biases and half-split (NEOX) RoPE.
//! Reference: llama.cpp `src/models/qwen2.cpp`.

use super::{hparams, load_embeddings, load_layer, HParams, Weights};
use crate::error::Result;
use crate::ops::RopeStyle;
use crate::tensor::TensorLoader;

pub fn load(t: &mut TensorLoader) -> Result<(HParams, Weights)> {
    let hp = hparams(t, "qwen2", RopeStyle::Neox)?;
    let layers = (0..hp.n_layer)
        .map(|i| load_layer(t, &hp, i))
        .collect::<Result<Vec<_>>>()?;
    let weights = load_embeddings(t, &hp, layers)?;
    Ok((hp, weights))
}
