//! `llama` (and Mistral, SmolLM, ...): RMSNorm, adjacent-pair RoPE (Q/K rows are permuted at
//! conversion), grouped-query attention, SwiGLU; optional Llama 3.1 `rope_freqs` and
//! linear/YaRN rope scaling from metadata. Reference: llama.cpp `src/models/llama.cpp`.

use super::{hparams, load_embeddings, load_layer, load_rope_freqs, HParams, Weights};
use crate::error::Result;
use crate::ops::RopeStyle;
use crate::tensor::TensorLoader;

pub fn load(t: &mut TensorLoader) -> Result<(HParams, Weights)> {
    let mut hp = hparams(t, "llama", RopeStyle::Norm)?;
    load_rope_freqs(t, &mut hp)?;
    // A Mistral-style window over every layer; llama.cpp's own llama graph ignores this key.
    let window_everywhere = |_| true;
    hp.set_sliding_window(&t.file.metadata, window_everywhere)
        .map_err(|k| t.file.error(k))?;
    hp.rope_swa = hp.rope.clone();
    let layers = (0..hp.n_layer)
        .map(|i| load_layer(t, &hp, i))
        .collect::<Result<Vec<_>>>()?;
    let weights = load_embeddings(t, &hp, layers)?;
    Ok((hp, weights))
}
