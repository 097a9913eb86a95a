//! `rllm._rllm.Context`: one conversation's KV cache and position, and the token stream of a
//! generation running in it.

use numpy::ndarray::{Array1, Array2};
use numpy::{IntoPyArray, PyArray1, PyArrayDyn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::collections::HashMap;

use rllm_core::{ContextParams, ContextStream, Finish};

use crate::errors::catch;
use crate::grammar::Grammar;
use crate::model::Model;
use crate::sampler::Sampler;
use crate::scheduler::{gen_params, Chunk};

/// The mutable state of one conversation: KV cache, position and scratch, allocated once.
#[pyclass(module = "rllm._rllm")]
pub struct Context {
    inner: rllm_core::Context,
}

/// `v` as a count, refusing zero and negatives with a `ValueError` naming `name`.
pub(crate) fn positive(name: &str, v: Option<i64>) -> PyResult<Option<usize>> {
    match v {
        Some(n) if n <= 0 => Err(PyValueError::new_err(format!(
            "{name} must be positive, got {n}"
        ))),
        Some(n) => Ok(Some(n as usize)),
        None => Ok(None),
    }
}

/// The Python constructors' shared context arguments, checked.
pub(crate) fn context_params(
    n_ctx: Option<i64>,
    n_threads: Option<i64>,
    n_batch: Option<i64>,
    rope_freq_base: Option<f32>,
    rope_freq_scale: Option<f32>,
) -> PyResult<ContextParams> {
    Ok(ContextParams {
        n_ctx: positive("n_ctx", n_ctx)?,
        n_threads: positive("n_threads", n_threads)?,
        n_batch: positive("n_batch", n_batch)?,
        rope_freq_base,
        rope_freq_scale,
    })
}

#[pymethods]
impl Context {
    #[new]
    #[pyo3(signature = (model, n_ctx=None, n_threads=None, n_batch=None, rope_freq_base=None,
        rope_freq_scale=None))]
    fn new(
        py: Python<'_>,
        model: &Model,
        n_ctx: Option<i64>,
        n_threads: Option<i64>,
        n_batch: Option<i64>,
        rope_freq_base: Option<f32>,
        rope_freq_scale: Option<f32>,
    ) -> PyResult<Self> {
        let params = context_params(n_ctx, n_threads, n_batch, rope_freq_base, rope_freq_scale)?;
        let model = model.inner.clone();
        let inner = py.detach(|| catch(|| rllm_core::Context::new(model, &params)))?;
        Ok(Context { inner })
    }

    #[getter]
    fn n_ctx(&self) -> usize {
        self.inner.n_ctx()
    }

    #[getter]
    fn n_past(&self) -> usize {
        self.inner.n_past()
    }

    #[getter]
    fn n_threads(&self) -> usize {
        self.inner.n_threads()
    }

    /// The tokens whose keys and values are in the cache.
    #[getter]
    fn tokens(&self) -> Vec<u32> {
        self.inner.tokens().to_vec()
    }

    /// Evaluate `tokens` after those already in the context. Returns float32 logits of the last
    /// token (`[n_vocab]`), or with `all_logits=True` of every token (`[len(tokens), n_vocab]`).
    #[pyo3(signature = (tokens, all_logits=false))]
    fn eval<'py>(
        &mut self,
        py: Python<'py>,
        tokens: Vec<u32>,
        all_logits: bool,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let inner = &mut self.inner;
        let logits =
            py.detach(|| catch(|| inner.eval(&tokens, all_logits).map(<[f32]>::to_vec)))?;
        let n_rows = if all_logits { tokens.len() } else { 1 };
        let n_vocab = logits.len() / n_rows;
        if all_logits {
            let a = Array2::from_shape_vec((n_rows, n_vocab), logits)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            Ok(a.into_dyn().into_pyarray(py))
        } else {
            Ok(Array1::from_vec(logits).into_dyn().into_pyarray(py))
        }
    }

    /// Logits of the last evaluated token, or None before any evaluation.
    fn last_logits<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f32>>> {
        self.inner
            .last_logits()
            .map(|l| l.to_vec().into_pyarray(py))
    }

    /// Forget everything evaluated so far.
    fn reset(&mut self) {
        self.inner.reset();
    }

    /// Keep only the first `n` tokens.
    fn truncate(&mut self, n: usize) -> PyResult<()> {
        Ok(catch(|| self.inner.truncate(n))?)
    }

    /// Drop cached tokens `[n_keep, n_keep + n_discard)` and slide the later ones down, keys
    /// re-rotated to their new positions (llama.cpp's context shift).
    fn shift(&mut self, py: Python<'_>, n_keep: usize, n_discard: usize) -> PyResult<()> {
        let inner = &mut self.inner;
        Ok(py.detach(|| catch(|| inner.shift(n_keep, n_discard)))?)
    }

    /// The cached tokens, keys, values and last logits as bytes, for `load_state`.
    fn save_state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.save_state())
    }

    /// Restore a state from `save_state` of a context of the same model.
    fn load_state(&mut self, data: &[u8]) -> PyResult<()> {
        Ok(catch(|| self.inner.load_state(data))?)
    }

    /// Generate after the evaluated prompt: an iterator of `Chunk`s, one per token, that
    /// samples with `sampler` (its random state carries on), evaluates each token, and ends
    /// at an end-of-generation token, a `stop` string, `max_tokens` tokens (None = no limit)
    /// or a full context. With `n_keep`, a full context drops half of the tokens after the
    /// first `n_keep` (llama.cpp's context shift) and goes on. `stop_ids` end the generation
    /// after they are handed out; `skip_special` leaves control tokens out of the text;
    /// `grammar` constrains the completion to its language.
    #[pyo3(signature = (sampler, max_tokens=None, stop=Vec::new(), logit_bias=None,
        ignore_eos=false, logprobs=None, n_keep=None, stop_ids=Vec::new(), skip_special=false,
        grammar=None))]
    fn generate(
        slf: Bound<'_, Self>,
        sampler: Bound<'_, Sampler>,
        max_tokens: Option<i64>,
        stop: Vec<String>,
        logit_bias: Option<HashMap<i64, f32>>,
        ignore_eos: bool,
        logprobs: Option<i64>,
        n_keep: Option<usize>,
        stop_ids: Vec<u32>,
        skip_special: bool,
        grammar: Option<PyRef<'_, Grammar>>,
    ) -> PyResult<TokenStream> {
        let params = gen_params(
            max_tokens,
            stop,
            logit_bias,
            ignore_eos,
            logprobs,
            stop_ids,
            skip_special,
            grammar.as_deref(),
        )?;
        let stream = {
            let ctx = slf.borrow();
            let inner = &ctx.inner;
            slf.py()
                .detach(|| catch(|| ContextStream::new(inner, &params, n_keep)))?
        };
        Ok(TokenStream {
            ctx: slf.unbind(),
            sampler: sampler.unbind(),
            stream,
        })
    }

    /// Bytes held by the KV cache.
    #[getter]
    fn kv_bytes(&self) -> usize {
        self.inner.kv_bytes()
    }

    fn __repr__(&self) -> String {
        format!(
            "Context(n_ctx={}, n_past={})",
            self.inner.n_ctx(),
            self.inner.n_past()
        )
    }
}

/// The chunks of a running generation; see `Context.generate`.
#[pyclass(module = "rllm._rllm")]
pub struct TokenStream {
    ctx: Py<Context>,
    /// Shared with the caller: its random state advances with every token drawn.
    sampler: Py<Sampler>,
    stream: ContextStream,
}

#[pymethods]
impl TokenStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Chunk>> {
        let mut ctx = self.ctx.bind(py).try_borrow_mut()?;
        let mut sampler = self.sampler.bind(py).try_borrow_mut()?;
        let (inner, sampler, stream) = (&mut ctx.inner, &mut sampler.inner, &mut self.stream);
        let chunk = py.detach(|| catch(|| stream.next(inner, sampler)))?;
        Ok(chunk.map(|inner| Chunk { inner }))
    }

    /// "stop", "length", "context_full", ... once the stream has ended, else None.
    #[getter]
    fn finish_reason(&self) -> Option<&'static str> {
        self.stream.dec.finish.map(Finish::as_str)
    }

    /// Completion tokens so far (an ending end-of-generation token is not one).
    #[getter]
    fn n_generated(&self) -> usize {
        self.stream.dec.n_generated
    }

    /// Tokens sampled so far, an ending end-of-generation token included.
    #[getter]
    fn n_sampled(&self) -> usize {
        self.stream.dec.n_sampled
    }

    /// The token sampled last (an ending end-of-generation token included).
    #[getter]
    fn last_token(&self) -> Option<u32> {
        self.stream.dec.last_token
    }

    /// Tokens dropped by context shifts so far.
    #[getter]
    fn n_discarded(&self) -> usize {
        self.stream.n_discarded
    }
}
