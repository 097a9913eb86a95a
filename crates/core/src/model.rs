//! A loaded model: the mapped GGUF file, its hyper-parameters and typed weight views.
//! Immutable and shared by every [`crate::Context`] through an `Arc`.

use std::path::Path;
use std::sync::Arc;

use crate::arch::{self, HParams, Weights};
use crate::detok::Vocab;
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Hold, Metadata};
use crate::grammar::TokenEnv;

#[derive(Debug)]
pub struct Model {
    pub file: GgufFile,
    pub hparams: HParams,
    pub weights: Weights,
    fingerprint: std::sync::OnceLock<u64>,
    /// Built on first use (a large vocabulary takes a noticeable fraction of a second).
    vocab: std::sync::OnceLock<std::result::Result<Arc<Vocab>, String>>,
    /// The vocabulary as grammars see it, built on first use.
    token_env: std::sync::OnceLock<std::result::Result<Arc<TokenEnv>, String>>,
}

/// The context length used when the caller does not choose one: the model's own, capped.
pub const DEFAULT_MAX_CTX: usize = 4096;

impl Model {
    /// Map and validate `path`, then bind the weights its architecture needs.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, Hold::Map)
    }

    /// [`Model::load`], holding the file's bytes as `hold` says.
    pub fn load_with(path: impl AsRef<Path>, hold: Hold) -> Result<Self> {
        let file = GgufFile::open_with(path, hold)?;
        let (hparams, weights) = arch::load(&file)?;
        Ok(Model {
            file,
            hparams,
            weights,
            fingerprint: std::sync::OnceLock::new(),
            vocab: std::sync::OnceLock::new(),
            token_env: std::sync::OnceLock::new(),
        })
    }

    pub fn metadata(&self) -> &Metadata {
        &self.file.metadata
    }

    /// The token table for detokenizing, built once from the metadata.
    pub fn vocab(&self) -> Result<Arc<Vocab>> {
        self.vocab
            .get_or_init(|| {
                Vocab::from_metadata(self.metadata())
                    .map(Arc::new)
                    .map_err(|e| format!("{}: {e}", self.file.path.display()))
            })
            .clone()
            .map_err(Error::Tokenizer)
    }

    /// The token table grammars compile against, built once (after the vocabulary).
    pub fn token_env(&self) -> Result<Arc<TokenEnv>> {
        let vocab = self.vocab()?;
        self.token_env
            .get_or_init(|| {
                TokenEnv::new(&vocab)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::Tokenizer)
    }

    /// Fails for a model that only embeds (no output head, e.g. bert): it cannot give logits.
    pub fn check_generates(&self) -> Result<()> {
        if self.weights.output.is_some() {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "{}: '{}' is an embedding model with no output head; it cannot generate or give \
             logits (use embeddings instead)",
            self.file.path.display(),
            self.hparams.arch
        )))
    }

    pub fn default_n_ctx(&self) -> usize {
        self.hparams.n_ctx_train.min(DEFAULT_MAX_CTX)
    }

    /// A hash identifying this model's weights (tensor table and samples of the data), so
    /// that state saved with one model is not loaded into another of the same shape.
    pub fn fingerprint(&self) -> u64 {
        *self.fingerprint.get_or_init(|| {
            // FNV-1a: simple and stable across Rust versions, unlike std's hasher.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let mut eat = |bytes: &[u8]| {
                for &b in bytes {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
                }
            };
            for t in &self.file.tensors {
                eat(t.name.as_bytes());
                eat(&t.ty.id().to_le_bytes());
                eat(&t.offset.to_le_bytes());
                let data = self.file.tensor_data(t);
                eat(&data[..data.len().min(256)]);
            }
            h
        })
    }

    /// Bytes of all tensor data.
    pub fn weight_bytes(&self) -> u64 {
        self.file.tensors.iter().map(|t| t.size as u64).sum()
    }

    /// Bytes of weights one decoded token reads: every matrix of the blocks and the output
    /// head (the token embedding contributes one row, negligible). Decoding is bound by this
    /// read, so memory bandwidth / this is the speed limit.
    pub fn bytes_per_token(&self) -> u64 {
        let w = &self.weights;
        let mut bytes = w.output.as_ref().map_or(0, |o| o.byte_len() as u64);
        for l in &w.layers {
            let mut mats: Vec<&crate::tensor::Matrix> = vec![&l.wo, &l.ffn_up, &l.ffn_down];
            match &l.qkv {
                crate::arch::Qkv::Split { wq, wk, wv } => mats.extend([wq, wk, wv]),
                crate::arch::Qkv::Fused(m) => mats.push(m),
            }
            mats.extend(l.ffn_gate.as_ref());
            bytes += mats.iter().map(|m| m.byte_len() as u64).sum::<u64>();
        }
        bytes
    }

    /// Number of weights (elements of all tensors).
    pub fn n_params(&self) -> u64 {
        self.file.tensors.iter().map(|t| t.n_elements()).sum()
    }
}
