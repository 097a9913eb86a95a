//! A conversation's mutable state: KV cache, position, scratch buffers and thread pool,
//! allocated once when the context is created.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::forward::{forward, Head, Ropes, Scratch, Seq};
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::ops::{RopeSpec, RopeTable};

/// Tokens per forward pass; longer prompts are evaluated in chunks of this size.
pub const DEFAULT_N_BATCH: usize = 512;

const STATE_MAGIC: &[u8; 4] = b"RLKV";
const STATE_VERSION: u64 = 3;

#[derive(Clone, Debug, Default)]
pub struct ContextParams {
    /// Context length in tokens; `None` = the model's, capped at 4096.
    pub n_ctx: Option<usize>,
    /// Worker threads; `None` = all cores.
    pub n_threads: Option<usize>,
    /// Tokens per forward pass; `None` = 512.
    pub n_batch: Option<usize>,
    /// Override of the model's RoPE base frequency.
    pub rope_freq_base: Option<f32>,
    /// Override of the model's RoPE frequency scale (1 / linear scaling factor).
    pub rope_freq_scale: Option<f32>,
}

/// What every way of running the model needs besides KV caches: rotary tables, scratch
/// buffers for one batch, and a thread pool. Shared by [`Context`] and
/// [`crate::batch::BatchEngine`].
pub(crate) struct Engine {
    pub model: Arc<Model>,
    /// Positions each KV cache holds.
    pub n_ctx: usize,
    pub ropes: Ropes,
    pub scratch: Scratch,
    pub pool: rllm_kernels::ThreadPool,
}

impl Engine {
    pub fn new(model: Arc<Model>, params: &ContextParams) -> Result<Self> {
        let hp = &model.hparams;
        let n_ctx = params.n_ctx.unwrap_or_else(|| model.default_n_ctx());
        if n_ctx == 0 {
            return Err(Error::InvalidArgument("n_ctx must be positive".into()));
        }
        // Learned positions exist only up to the trained length.
        if model.weights.pos_embd.is_some() && n_ctx > hp.n_ctx_train {
            return Err(Error::InvalidArgument(format!(
                "n_ctx {n_ctx} exceeds the {} positions this model was trained with",
                hp.n_ctx_train
            )));
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
        };
        for (name, v) in [
            ("rope_freq_base", params.rope_freq_base),
            ("rope_freq_scale", params.rope_freq_scale),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(Error::InvalidArgument(format!(
                    "{name} must be positive, got {}",
                    v.unwrap_or_default()
                )));
            }
        }
        let pool = rllm_kernels::ThreadPool::new(n_threads).map_err(|e| {
            Error::InvalidArgument(format!("cannot start {n_threads} threads: {e}"))
        })?;
        Ok(Engine {
            scratch: Scratch::new(hp, n_batch, n_ctx),
            ropes: Ropes {
                // User overrides apply to the global layers, as in llama.cpp.
                global: RopeTable::new(
                    &RopeSpec {
                        freq_base: params.rope_freq_base.unwrap_or(hp.rope.freq_base),
                        freq_scale: params.rope_freq_scale.unwrap_or(hp.rope.freq_scale),
                        ..hp.rope.clone()
                    },
                    n_ctx,
                ),
                swa: RopeTable::new(&hp.rope_swa, n_ctx),
            },
            pool,
            n_ctx,
            model,
        })
    }

    pub fn new_kv(&self) -> KvCache {
        let hp = &self.model.hparams;
        KvCache::new(hp.n_layer, self.n_ctx, hp.n_head_kv, hp.head_dim)
    }

    /// One forward pass over `seqs` (at most `n_batch` tokens together) on the pool.
    pub fn run(&mut self, seqs: &mut [Seq], logits: &mut Vec<f32>) {
        self.run_head(seqs, Head::Logits, logits);
    }

    /// [`Engine::run`] writing what `head` says for the rows each sequence asks for.
    pub fn run_head(&mut self, seqs: &mut [Seq], head: Head, out: &mut Vec<f32>) {
        let (model, ropes, scratch) = (&*self.model, &self.ropes, &mut self.scratch);
        forward(&self.pool, model, ropes, scratch, seqs, head, out);
    }

    /// Tokens `ids` are valid for this model.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let n_vocab = self.model.hparams.n_vocab;
        match ids.iter().find(|&&t| t as usize >= n_vocab) {
            Some(&bad) => Err(Error::InvalidArgument(format!(
                "token id {bad} is out of range (vocabulary size {n_vocab})"
            ))),
            None => Ok(()),
        }
    }
}

pub struct Context {
    engine: Engine,
    kv: KvCache,
    /// Tokens whose keys and values are in the cache, in order.
    tokens: Vec<u32>,
    /// Logits of the last evaluation: `[n_rows, n_vocab]`.
    logits: Vec<f32>,
}

impl Context {
    pub fn new(model: Arc<Model>, params: &ContextParams) -> Result<Self> {
        model.check_generates()?;
        let n_ctx = params.n_ctx.unwrap_or_else(|| model.default_n_ctx());
        let params = ContextParams {
            // A single sequence never needs a batch longer than its context (0 stays 0, an
            // error).
            n_batch: Some(params.n_batch.unwrap_or(DEFAULT_N_BATCH).min(n_ctx)),
            ..params.clone()
        };
        let engine = Engine::new(model, &params)?;
        Ok(Context {
            kv: engine.new_kv(),
            tokens: Vec::with_capacity(engine.n_ctx),
            logits: Vec::new(),
            engine,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.engine.model
    }

    pub fn n_ctx(&self) -> usize {
        self.engine.n_ctx
    }

    /// Tokens per forward pass.
    pub fn n_batch(&self) -> usize {
        self.engine.scratch.n_batch
    }

    pub fn n_threads(&self) -> usize {
        self.engine.pool.n_threads()
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

    /// Drop cached tokens `n_keep..n_keep + n_discard` and slide the later ones down, re-rotating
    /// their keys (llama.cpp's context shift). The last logits stay valid.
    pub fn shift(&mut self, n_keep: usize, n_discard: usize) -> Result<()> {
        let n_past = self.tokens.len();
        if n_keep.checked_add(n_discard).is_none_or(|end| end > n_past) {
            return Err(Error::InvalidArgument(format!(
                "cannot discard {n_discard} tokens after {n_keep}: the context holds {n_past}"
            )));
        }
        if n_discard == 0 {
            return Ok(());
        }
        let hp = &self.engine.model.hparams;
        let ropes = &self.engine.ropes;
        self.kv
            .shift(hp.n_layer, n_keep, n_discard, n_past, |layer, row| {
                ropes
                    .for_layer(hp, layer)
                    .unapply(row, hp.head_dim, n_discard)
            });
        self.tokens.drain(n_keep..n_keep + n_discard);
        Ok(())
    }

    /// The cached tokens, their keys and values, and the last logits, as bytes that
    /// [`Context::load_state`] restores (in a context of the same model).
    pub fn save_state(&self) -> Vec<u8> {
        let hp = &self.engine.model.hparams;
        let mut out = Vec::new();
        out.extend_from_slice(STATE_MAGIC);
        for v in self.state_shape() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.tokens.len() as u64).to_le_bytes());
        for t in &self.tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        self.kv.write_state(hp.n_layer, self.tokens.len(), &mut out);
        out.extend_from_slice(&(self.logits.len() as u64).to_le_bytes());
        for l in &self.logits {
            out.extend_from_slice(&l.to_le_bytes());
        }
        out
    }

    /// Restore a state saved by [`Context::save_state`].
    pub fn load_state(&mut self, data: &[u8]) -> Result<()> {
        let bad = |why: &str| Error::InvalidArgument(format!("cannot load context state: {why}"));
        let mut r = data
            .strip_prefix(STATE_MAGIC.as_slice())
            .ok_or_else(|| bad("not a saved rllm context"))?;
        let mut take = |n: usize| -> Result<&[u8]> {
            if r.len() < n {
                return Err(bad("the data is truncated"));
            }
            let (head, tail) = r.split_at(n);
            r = tail;
            Ok(head)
        };
        let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        for expected in self.state_shape() {
            if u64_at(take(8)?) != expected {
                return Err(bad("it was saved from a different model"));
            }
        }
        let n = u64_at(take(8)?) as usize;
        if n > self.engine.n_ctx {
            return Err(bad(&format!(
                "it holds {n} tokens, more than n_ctx = {}",
                self.engine.n_ctx
            )));
        }
        let tokens: Vec<u32> = take(n * 4)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let hp = &self.engine.model.hparams;
        let kv_len = hp.n_layer * 2 * n * hp.kv_dim() * 2;
        let kv = take(kv_len)?;
        let n_logits = u64_at(take(8)?) as usize;
        let logits: Vec<f32> = take(n_logits.checked_mul(4).ok_or_else(|| bad("bad length"))?)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        if tokens.iter().any(|&t| t as usize >= hp.n_vocab) {
            return Err(bad("a token id is out of range"));
        }
        self.kv.read_state(hp.n_layer, n, kv);
        self.tokens = tokens;
        self.logits = logits;
        Ok(())
    }

    /// What a saved state must agree on to be loaded here.
    fn state_shape(&self) -> [u64; 5] {
        let hp = &self.engine.model.hparams;
        [
            STATE_VERSION,
            hp.n_layer as u64,
            hp.kv_dim() as u64,
            hp.n_vocab as u64,
            self.engine.model.fingerprint(),
        ]
    }

    /// Fails, changing nothing, if `tokens` cannot be evaluated next: empty, an id outside
    /// the vocabulary, or more than the context has room for.
    pub fn check_eval(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to evaluate".into()));
        }
        self.engine.check_ids(tokens)?;
        let needed = self.tokens.len() + tokens.len();
        if needed > self.engine.n_ctx {
            return Err(Error::ContextFull {
                n_ctx: self.engine.n_ctx,
                needed,
            });
        }
        Ok(())
    }

    /// Evaluate `tokens` after those already in the cache. Returns the logits of the last token
    /// (`[n_vocab]`), or with `all` of every token in `tokens` (`[tokens.len(), n_vocab]`).
    pub fn eval(&mut self, tokens: &[u32], all: bool) -> Result<&[f32]> {
        self.check_eval(tokens)?;
        let n_batch = self.engine.scratch.n_batch;
        let mut all_logits = Vec::new();
        let mut chunk_logits = std::mem::take(&mut self.logits);
        for chunk in tokens.chunks(n_batch) {
            let pos0 = self.tokens.len();
            let logit_rows = if all {
                0..chunk.len()
            } else {
                chunk.len() - 1..chunk.len()
            };
            let kv = &mut self.kv;
            let mut seq = [Seq {
                kv,
                tokens: chunk,
                pos0,
                logit_rows,
            }];
            self.engine.run(&mut seq, &mut chunk_logits);
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
        let n_vocab = self.engine.model.hparams.n_vocab;
        (self.logits.len() >= n_vocab).then(|| &self.logits[self.logits.len() - n_vocab..])
    }

    /// Bytes held by the KV cache.
    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }
}
