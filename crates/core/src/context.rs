//! A conversation's mutable state: KV cache, position, scratch buffers and thread pool,
//! allocated once when the context is created.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::forward::{forward, Logits, Scratch};
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::ops::RopeTable;
use crate::sampler::Sampler;

/// Tokens per forward pass; longer prompts are evaluated in chunks of this size.
pub const DEFAULT_N_BATCH: usize = 512;

#[derive(Clone, Debug, Default)]
pub struct ContextParams {
    /// Context length in tokens; `None` = the model's, capped at 4096.
    pub n_ctx: Option<usize>,
    /// Worker threads; `None` = all cores.
    pub n_threads: Option<usize>,
    /// Tokens per forward pass; `None` = 512.
    pub n_batch: Option<usize>,
}

pub struct Context {
    model: Arc<Model>,
    n_ctx: usize,
    kv: KvCache,
    scratch: Scratch,
    rope: RopeTable,
    pool: rayon::ThreadPool,
    /// Tokens whose keys and values are in the cache, in order.
    tokens: Vec<u32>,
    /// Logits of the last evaluation: `[n_rows, n_vocab]`.
    logits: Vec<f32>,
}

impl Context {
    pub fn new(model: Arc<Model>, params: &ContextParams) -> Result<Self> {
        let hp = &model.hparams;
        let n_ctx = params.n_ctx.unwrap_or_else(|| model.default_n_ctx());
        if n_ctx == 0 {
            return Err(Error::InvalidArgument("n_ctx must be positive".into()));
        }
        // Keys and values of a context this long would not fit in any machine's memory.
        if n_ctx > 1 << 24 {
            return Err(Error::InvalidArgument(format!(
                "n_ctx {n_ctx} is too large"
            )));
        }
        let n_threads = match params.n_threads {
            Some(0) => return Err(Error::InvalidArgument("n_threads must be positive".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let n_batch = match params.n_batch {
            Some(0) => return Err(Error::InvalidArgument("n_batch must be positive".into())),
            Some(n) => n,
            None => DEFAULT_N_BATCH,
        }
        .min(n_ctx);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n_threads)
            .thread_name(|i| format!("rllm-{i}"))
            .build()
            .map_err(|e| {
                Error::InvalidArgument(format!("cannot start {n_threads} threads: {e}"))
            })?;
        Ok(Context {
            kv: KvCache::new(hp.n_layer, n_ctx, hp.kv_dim()),
            scratch: Scratch::new(hp, n_batch, n_ctx),
            rope: RopeTable::new(
                hp.rope_style,
                hp.n_rot,
                hp.rope_freq_base,
                hp.rope_freq_scale,
                n_ctx,
            ),
            pool,
            tokens: Vec::with_capacity(n_ctx),
            logits: Vec::new(),
            n_ctx,
            model,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn n_threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Number of tokens in the cache.
    pub fn n_past(&self) -> usize {
        self.tokens.len()
    }

    /// The tokens in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forget everything evaluated so far.
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.logits.clear();
    }

    /// Keep only the first `n` tokens; later evaluations continue from there.
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n > self.tokens.len() {
            return Err(Error::InvalidArgument(format!(
                "cannot truncate to {n} tokens: the context holds {}",
                self.tokens.len()
            )));
        }
        self.tokens.truncate(n);
        self.logits.clear();
        Ok(())
    }

    /// Evaluate `tokens` after those already in the cache. Returns the logits of the last token
    /// (`[n_vocab]`), or with `all` of every token in `tokens` (`[tokens.len(), n_vocab]`).
    pub fn eval(&mut self, tokens: &[u32], all: bool) -> Result<&[f32]> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to evaluate".into()));
        }
        let n_vocab = self.model.hparams.n_vocab;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is out of range (vocabulary size {n_vocab})"
            )));
        }
        let needed = self.tokens.len() + tokens.len();
        if needed > self.n_ctx {
            return Err(Error::ContextFull {
                n_ctx: self.n_ctx,
                needed,
            });
        }
        let n_batch = self.scratch.n_batch;
        let mut all_logits = Vec::new();
        let mut chunk_logits = std::mem::take(&mut self.logits);
        for chunk in tokens.chunks(n_batch) {
            let pos0 = self.tokens.len();
            let want = if all { Logits::All } else { Logits::Last };
            let (model, kv, rope, scratch) =
                (&*self.model, &mut self.kv, &self.rope, &mut self.scratch);
            self.pool.install(|| {
                forward(
                    model,
                    kv,
                    rope,
                    scratch,
                    chunk,
                    pos0,
                    want,
                    &mut chunk_logits,
                )
            });
            self.tokens.extend_from_slice(chunk);
            if all {
                all_logits.extend_from_slice(&chunk_logits);
            }
        }
        self.logits = if all { all_logits } else { chunk_logits };
        Ok(&self.logits)
    }

    /// Logits of the last token evaluated, if any.
    pub fn last_logits(&self) -> Option<&[f32]> {
        let n_vocab = self.model.hparams.n_vocab;
        (self.logits.len() >= n_vocab).then(|| &self.logits[self.logits.len() - n_vocab..])
    }

    /// Bytes held by the KV cache.
    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token (end of generation) was sampled.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The context is full.
    ContextFull,
}

/// The token-by-token generation loop: sample from the last logits, feed the token back.
pub struct Generator {
    pub sampler: Sampler,
    /// Stop after this many tokens; `None` = until a stop token or the context is full.
    pub max_tokens: Option<usize>,
    pub stop_ids: Vec<u32>,
    /// Tokens sampled so far.
    pub n_generated: usize,
    /// Set when the generation has ended.
    pub finish: Option<FinishReason>,
    /// A sampled token not yet evaluated.
    pending: Option<u32>,
}

impl Generator {
    pub fn new(sampler: Sampler, max_tokens: Option<usize>, stop_ids: Vec<u32>) -> Self {
        Generator {
            sampler,
            max_tokens,
            stop_ids,
            n_generated: 0,
            finish: None,
            pending: None,
        }
    }

    /// The next token, or `None` when the generation has ended (see [`Generator::finish`]).
    /// The context must hold logits from evaluating the prompt.
    pub fn next_token(&mut self, ctx: &mut Context) -> Result<Option<u32>> {
        if self.finish.is_some() {
            return Ok(None);
        }
        if self.max_tokens.is_some_and(|max| self.n_generated >= max) {
            self.finish = Some(FinishReason::Length);
            return Ok(None);
        }
        if let Some(tok) = self.pending.take() {
            if ctx.n_past() >= ctx.n_ctx() {
                self.finish = Some(FinishReason::ContextFull);
                return Ok(None);
            }
            ctx.eval(&[tok], false)?;
        }
        let logits = ctx
            .last_logits()
            .ok_or_else(|| Error::InvalidArgument("evaluate a prompt before generating".into()))?;
        let tok = self.sampler.sample(logits, ctx.tokens());
        self.n_generated += 1;
        if self.stop_ids.contains(&tok) {
            self.finish = Some(FinishReason::Stop);
        } else {
            self.pending = Some(tok);
        }
        Ok(Some(tok))
    }
}
