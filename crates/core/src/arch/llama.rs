//! `llama`: RMSNorm, adjacent-pair RoPE, grouped-query attention, SwiGLU; output head tied to
//! the token embedding when the file has no `output.weight`.
//! Reference: llama.cpp `src/models/llama.cpp`.

use super::{load_layer, n_vocab, HParams, Weights};
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::ops::RopeStyle;
use crate::tensor::TensorLoader;

pub fn load(file: &GgufFile) -> Result<(HParams, Weights)> {
    let hp = HParams::from_metadata(&file.metadata, "llama", n_vocab(file)?, RopeStyle::Norm)
        .map_err(|k| file.error(k))?;
    let mut t = TensorLoader::new(file);
    let token_embd = t.matrix("token_embd.weight", hp.n_vocab, hp.n_embd)?;
    let layers = (0..hp.n_layer)
        .map(|i| load_layer(&mut t, &hp, i))
        .collect::<Result<Vec<_>>>()?;
    let output_norm = t.vector("output_norm.weight", hp.n_embd)?;
    let output = t
        .opt_matrix("output.weight", hp.n_vocab, hp.n_embd)?
        .unwrap_or_else(|| token_embd.clone());
    t.finish(&hp.arch)?;
    Ok((
        hp,
        Weights {
            token_embd,
            layers,
            output_norm,
            output,
        },
    ))
}
