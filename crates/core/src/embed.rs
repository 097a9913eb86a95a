//! Embeddings: many inputs through the model in shared forward passes (each input its own
//! sequence), the token embeddings pooled per input and normalized, as llama.cpp does.
//! References: llama.cpp `src/llama-graph.cpp` (`build_pooling`), `src/llama-context.cpp`
//! (pooling defaults), `common/common.cpp` (`common_embd_normalize`) and
//! `examples/embedding/embedding.cpp` (batching of prompts).

use std::sync::Arc;

use crate::arch::Dense;
use crate::context::{ContextParams, Engine};
use crate::error::{Error, Result};
use crate::forward::{Head, Seq};
use crate::kv_cache::KvCache;
use crate::model::Model;

/// How the token embeddings of one input become its embedding (llama.cpp's
/// `llama_pooling_type`; the GGUF key `<arch>.pooling_type` holds the number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Every token's embedding (0).
    None,
    /// The mean over the tokens (1).
    Mean,
    /// The first token's, `[CLS]` in bert (2).
    Cls,
    /// The last token's (3).
    Last,
    /// The first token's through the classifier head: relevance scores of rerankers (4).
    Rank,
}

impl Pooling {
    pub const NAMES: [&'static str; 5] = ["none", "mean", "cls", "last", "rank"];

    pub fn from_id(id: usize) -> Option<Self> {
        Some(match id {
            0 => Pooling::None,
            1 => Pooling::Mean,
            2 => Pooling::Cls,
            3 => Pooling::Last,
            4 => Pooling::Rank,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The pooling called `name` ("none", "mean", "cls", "last", "rank").
    pub fn parse(name: &str) -> Result<Self> {
        match Self::NAMES.iter().position(|&n| n == name) {
            Some(i) => Ok(Self::from_id(i).expect("the names are the ids")),
            None => Err(Error::InvalidArgument(format!(
                "unknown pooling '{name}' (expected one of: {})",
                Self::NAMES.join(", ")
            ))),
        }
    }
}

/// Scale `x` as llama.cpp's `--embd-normalize p`: -1 leaves it, 0 scales the largest magnitude
/// to 32760 (int16 range), 1 taxicab, 2 euclidean, p > 2 the p-norm. A zero vector stays zero.
pub fn normalize(x: &mut [f32], p: i32) -> Result<()> {
    let norm: f64 = match p {
        -1 => return Ok(()),
        0 => x.iter().fold(0.0f64, |m, &v| m.max(f64::from(v.abs()))) / 32760.0,
        2 => x
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt(),
        p if p > 0 => {
            let sum: f64 = x.iter().map(|&v| f64::from(v.abs()).powi(p)).sum();
            sum.powf(1.0 / f64::from(p))
        }
        p => {
            return Err(Error::InvalidArgument(format!(
                "normalize must be -1 (none), 0 (max absolute), 1 (taxicab), 2 (euclidean) or \
                 a p-norm > 2, got {p}"
            )))
        }
    };
    let scale = if norm > 0.0 { (1.0 / norm) as f32 } else { 0.0 };
    x.iter_mut().for_each(|v| *v *= scale);
    Ok(())
}

/// Length of the vectors `pooling` gives for `model`: `n_embd`, or the classifier's outputs
/// for rank pooling.
pub fn dim(model: &Model, pooling: Pooling) -> usize {
    let cls = &model.weights.cls;
    match (pooling, &cls.out, &cls.dense) {
        (Pooling::Rank, Some((out, _)), _) => out.rows,
        (Pooling::Rank, None, Some((dense, _))) => dense.rows,
        _ => model.hparams.n_embd,
    }
}

/// The embeddings of a list of inputs.
#[derive(Clone, Debug, Default)]
pub struct Embeddings {
    /// Length of each vector: `n_embd`, or the number of classifier outputs for rank pooling.
    pub dim: usize,
    /// `[n_vectors, dim]`: one vector per input, or with [`Pooling::None`] one per token.
    pub data: Vec<f32>,
    /// Vectors of each input (1, or its token count with [`Pooling::None`]).
    pub rows: Vec<usize>,
    /// Tokens evaluated, all inputs together.
    pub n_tokens: usize,
}

/// Runs a model for embeddings: forward passes of up to `n_ctx` tokens, packed with as many
/// whole inputs as fit. Every input must fit the context on its own: the encoders' attention
/// sees the whole input at once.
pub struct Embedder {
    engine: Engine,
}

impl Embedder {
    pub fn new(model: Arc<Model>, params: &ContextParams) -> Result<Self> {
        let n_ctx = params.n_ctx.unwrap_or_else(|| model.default_n_ctx());
        let params = ContextParams {
            n_batch: Some(params.n_batch.unwrap_or(n_ctx).min(n_ctx)),
            ..params.clone()
        };
        Ok(Embedder {
            engine: Engine::new(model, &params)?,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.engine.model
    }

    /// Tokens one input may have.
    pub fn n_ctx(&self) -> usize {
        self.engine.n_ctx.min(self.engine.scratch.n_batch)
    }

    pub fn n_threads(&self) -> usize {
        self.engine.pool.n_threads()
    }

    /// The pooling the model file asks for; llama.cpp's default without one is none.
    pub fn default_pooling(&self) -> Pooling {
        self.engine.model.hparams.pooling.unwrap_or(Pooling::None)
    }

    /// Length of the vectors `pooling` gives.
    pub fn dim(&self, pooling: Pooling) -> usize {
        dim(&self.engine.model, pooling)
    }

    /// Fails, doing nothing, unless every input can be embedded: non-empty, valid ids, and no
    /// longer than the context.
    pub fn check(&self, inputs: &[Vec<u32>]) -> Result<()> {
        let n_ctx = self.n_ctx();
        for (i, ids) in inputs.iter().enumerate() {
            if ids.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "input {i} is empty: there is nothing to embed"
                )));
            }
            self.engine.check_ids(ids)?;
            if ids.len() > n_ctx {
                return Err(Error::ContextFull {
                    n_ctx,
                    needed: ids.len(),
                });
            }
        }
        Ok(())
    }

    /// The embeddings of `inputs` (token ids), pooled by `pooling` (default: the model's) and
    /// normalized as [`normalize`] says (rank scores are left as they are).
    pub fn embed(
        &mut self,
        inputs: &[Vec<u32>],
        pooling: Option<Pooling>,
        norm: i32,
    ) -> Result<Embeddings> {
        self.check(inputs)?;
        normalize(&mut [], norm)?;
        let pooling = pooling.unwrap_or_else(|| self.default_pooling());
        let hp = &self.engine.model.hparams;
        let (e, n_layer, n_head_kv, head_dim) = (hp.n_embd, hp.n_layer, hp.n_head_kv, hp.head_dim);
        let mut result = Embeddings {
            dim: self.dim(pooling),
            ..Embeddings::default()
        };
        let n_batch = self.n_ctx();
        let mut hidden = Vec::new();
        let mut start = 0;
        while start < inputs.len() {
            // As many whole inputs as fit in one pass.
            let mut end = start;
            let mut n = 0;
            while end < inputs.len() && n + inputs[end].len() <= n_batch {
                n += inputs[end].len();
                end += 1;
            }
            let batch = &inputs[start..end];
            let mut caches: Vec<KvCache> = batch
                .iter()
                .map(|ids| KvCache::new(n_layer, ids.len(), n_head_kv, head_dim))
                .collect();
            let mut seqs: Vec<Seq> = batch
                .iter()
                .zip(caches.iter_mut())
                .map(|(ids, kv)| Seq {
                    kv,
                    tokens: ids,
                    pos0: 0,
                    logit_rows: match pooling {
                        Pooling::None | Pooling::Mean => 0..ids.len(),
                        Pooling::Cls | Pooling::Rank => 0..1,
                        Pooling::Last => ids.len() - 1..ids.len(),
                    },
                })
                .collect();
            self.engine
                .run_head(&mut seqs, Head::Embeddings, &mut hidden);
            let mut rows = hidden.chunks_exact(e);
            for ids in batch {
                let n_rows = if matches!(pooling, Pooling::None | Pooling::Mean) {
                    ids.len()
                } else {
                    1
                };
                let seq_rows = rows.by_ref().take(n_rows);
                self.pool(pooling, seq_rows, n_rows, norm, &mut result)?;
            }
            result.n_tokens += n;
            start = end;
        }
        Ok(result)
    }

    /// Append the pooled, normalized vectors of one input's rows to `out`.
    fn pool<'a>(
        &self,
        pooling: Pooling,
        rows: impl Iterator<Item = &'a [f32]>,
        n_rows: usize,
        norm: i32,
        out: &mut Embeddings,
    ) -> Result<()> {
        let e = self.engine.model.hparams.n_embd;
        let start = out.data.len();
        match pooling {
            Pooling::None => {
                for row in rows {
                    out.data.extend_from_slice(row);
                    let n = out.data.len();
                    normalize(&mut out.data[n - e..], norm)?;
                }
                out.rows.push(n_rows);
                return Ok(());
            }
            Pooling::Mean => {
                let mut sum = vec![0.0f32; e];
                for row in rows {
                    sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
                let inv = 1.0 / n_rows as f32;
                out.data.extend(sum.iter().map(|s| s * inv));
            }
            Pooling::Cls | Pooling::Last => out.data.extend(rows.flatten()),
            Pooling::Rank => {
                let mut x: Vec<f32> = rows.flatten().copied().collect();
                let cls = &self.engine.model.weights.cls;
                if let Some(dense) = &cls.dense {
                    x = self.apply(dense, &x);
                    x.iter_mut().for_each(|v| *v = v.tanh());
                }
                if let Some(head) = &cls.out {
                    x = self.apply(head, &x);
                }
                out.data.extend(x);
                out.rows.push(1);
                return Ok(());
            }
        }
        normalize(&mut out.data[start..], norm)?;
        out.rows.push(1);
        Ok(())
    }

    /// `W x + b` of a small dense layer, in f32 (one vector: not worth the quantized kernels).
    fn apply(&self, (w, b): &Dense, x: &[f32]) -> Vec<f32> {
        let map = &self.engine.model.file;
        let mut row = vec![0.0f32; w.cols];
        (0..w.rows)
            .map(|r| {
                w.dequantize_row(map, r, &mut row);
                let dot: f32 = row.iter().zip(x).map(|(a, b)| a * b).sum();
                dot + b.as_ref().map_or(0.0, |b| b[r])
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizations() {
        let x = [3.0f32, -4.0];
        let norm = |p| {
            let mut y = x;
            normalize(&mut y, p).map(|_| y)
        };
        assert_eq!(norm(-1).unwrap(), [3.0, -4.0]);
        assert_eq!(norm(2).unwrap(), [0.6, -0.8]);
        let t = norm(1).unwrap();
        assert!((t[0] - 3.0 / 7.0).abs() < 1e-6 && (t[1] + 4.0 / 7.0).abs() < 1e-6);
        let m = norm(0).unwrap();
        assert!((m[1] + 32760.0).abs() < 1e-2 && (m[0] - 24570.0).abs() < 1e-2);
        let p3 = norm(3).unwrap();
        let n3 = (27.0f32 + 64.0).powf(1.0 / 3.0);
        assert!((p3[0] - 3.0 / n3).abs() < 1e-6);
        assert!(norm(-2).is_err());
        let mut zero = [0.0f32; 3];
        normalize(&mut zero, 2).unwrap();
        assert_eq!(zero, [0.0; 3]);
    }

    #[test]
    fn pooling_names_round_trip() {
        for (i, name) in Pooling::NAMES.iter().enumerate() {
            let p = Pooling::parse(name).unwrap();
            assert_eq!(p, Pooling::from_id(i).unwrap());
            assert_eq!(p.name(), *name);
        }
        assert!(Pooling::parse("max").is_err());
        assert!(Pooling::from_id(5).is_none());
    }
}
