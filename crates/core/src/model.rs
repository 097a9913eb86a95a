//! A loaded model: the mapped GGUF file, its hyper-parameters and typed weight views.
//! Immutable and shared by every [`crate::Context`] through an `Arc`.

use std::path::Path;

use crate::arch::{self, HParams, Weights};
use crate::error::Result;
use crate::gguf::{GgufFile, Metadata};

#[derive(Debug)]
pub struct Model {
    pub file: GgufFile,
    pub hparams: HParams,
    pub weights: Weights,
}

/// The context length used when the caller does not choose one: the model's own, capped.
pub const DEFAULT_MAX_CTX: usize = 4096;

impl Model {
    /// Map and validate `path`, then bind the weights its architecture needs.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let (hparams, weights) = arch::load(&file)?;
        Ok(Model {
            file,
            hparams,
            weights,
        })
    }

    pub fn metadata(&self) -> &Metadata {
        &self.file.metadata
    }

    pub fn default_n_ctx(&self) -> usize {
        self.hparams.n_ctx_train.min(DEFAULT_MAX_CTX)
    }

    /// Bytes of all tensor data.
    pub fn weight_bytes(&self) -> u64 {
        self.file.tensors.iter().map(|t| t.size as u64).sum()
    }

    /// Number of weights (elements of all tensors).
    pub fn n_params(&self) -> u64 {
        self.file.tensors.iter().map(|t| t.n_elements()).sum()
    }
}
