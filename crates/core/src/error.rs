//! The one error type of rllm-core. Each variant carries what a user needs to fix the problem:
//! the file, the key or tensor, and what was expected.

use std::path::PathBuf;

use crate::gguf::GgufError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or mapped.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid GGUF file, or not a valid model of its architecture.
    #[error("{}: {kind}", path.display())]
    Gguf { path: PathBuf, kind: GgufError },
    /// `general.architecture` names an architecture rllm cannot run.
    #[error("{}: unsupported architecture '{arch}' (supported: {})", path.display(), supported.join(", "))]
    UnsupportedArchitecture {
        path: PathBuf,
        arch: String,
        supported: Vec<&'static str>,
    },
    /// More tokens than the context holds.
    #[error("context full: {needed} tokens needed but the context holds {n_ctx}")]
    ContextFull { n_ctx: usize, needed: usize },
    /// A token id outside the vocabulary.
    #[error("token id {id} out of range [0, {n_vocab})")]
    TokenOutOfRange { id: i64, n_vocab: usize },
    /// Tokenizer metadata that cannot be used; the message names the key and value.
    #[error("{0}")]
    Tokenizer(String),
    /// A caller passed an argument outside its domain.
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    pub fn gguf(path: impl Into<PathBuf>, kind: GgufError) -> Self {
        Error::Gguf {
            path: path.into(),
            kind,
        }
    }
}
