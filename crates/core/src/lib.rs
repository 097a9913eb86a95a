//! rllm-core: GGUF loading and validation, model architectures, KV cache, the forward pass and
//! sampling. Knows nothing of Python; `rllm-py` binds it.

pub mod arch;
pub mod batch;
pub mod bench;
pub mod context;
pub mod detok;
pub mod embed;
pub mod error;
pub mod forward;
pub mod generate;
pub mod gguf;
pub mod grammar;
pub mod kv_cache;
pub mod model;
pub mod ops;
pub mod quantize;
pub mod sampler;
pub mod scheduler;
pub mod tensor;

pub use batch::{BatchEngine, Work};
pub use context::{Context, ContextParams};
pub use embed::{Embedder, Embeddings, Pooling};
pub use error::{Error, Result};
pub use generate::{Chunk, ContextStream, Finish, GenParams, SeqDecoder, TokenLogprob};
pub use grammar::{GrammarKind, GrammarProcessor, GrammarSpec, TokenEnv};
pub use model::Model;
pub use sampler::{Sampler, SamplerParams};
pub use scheduler::{Scheduler, SeqId, StepReport};
