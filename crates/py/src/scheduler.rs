//! `rllm._rllm.Scheduler`, `Chunk` and `TokenLogprob`: continuous batching with the whole
//! token loop (sampling, logprobs, detokenizing, stops) in Rust; Python reads chunks.

use std::collections::HashMap;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rllm_core::{Finish, GenParams};

use crate::context::{context_params, positive};
use crate::errors::catch;
use crate::grammar::Grammar;
use crate::model::Model;
use crate::sampler::Sampler;

/// A chosen token, its log-probability, and the most likely tokens at its position.
#[pyclass(module = "rllm._rllm", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct TokenLogprob {
    #[pyo3(get)]
    token: u32,
    #[pyo3(get)]
    logprob: f32,
    /// `[(token, logprob)]`, most likely first.
    #[pyo3(get)]
    top: Vec<(u32, f32)>,
}

#[pymethods]
impl TokenLogprob {
    fn __repr__(&self) -> String {
        format!(
            "TokenLogprob(token={}, logprob={}, top={:?})",
            self.token, self.logprob, self.top
        )
    }
}

/// What one token step produced: `text` (empty while bytes of a character or a possible stop
/// string are held back), `tokens` (the completion token; none for an ending
/// end-of-generation token), `logprobs` when asked for, and on the last chunk
/// `finish_reason`: "stop" (end-of-generation token or stop string; `stop` names the string),
/// "length" (max_tokens), "context_full", "cancelled" or "error" (`error` says what).
#[pyclass(module = "rllm._rllm", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct Chunk {
    pub inner: rllm_core::Chunk,
}

fn finish_from(name: &str) -> PyResult<Finish> {
    Ok(match name {
        "stop" => Finish::Stop,
        "length" => Finish::Length,
        "context_full" => Finish::ContextFull,
        "cancelled" => Finish::Cancelled,
        "error" => Finish::Error,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unknown finish_reason {name:?}"
            )))
        }
    })
}

#[pymethods]
impl Chunk {
    #[new]
    #[pyo3(signature = (text=String::new(), tokens=Vec::new(), finish_reason=None, error=None))]
    fn new(
        text: String,
        tokens: Vec<u32>,
        finish_reason: Option<&str>,
        error: Option<String>,
    ) -> PyResult<Self> {
        Ok(Chunk {
            inner: rllm_core::Chunk {
                text,
                tokens,
                finish: finish_reason.map(finish_from).transpose()?,
                error,
                ..Default::default()
            },
        })
    }

    #[getter]
    fn text(&self) -> &str {
        &self.inner.text
    }

    #[getter]
    fn tokens(&self) -> Vec<u32> {
        self.inner.tokens.clone()
    }

    #[getter]
    fn logprobs(&self) -> Vec<TokenLogprob> {
        self.inner
            .logprobs
            .iter()
            .map(|l| TokenLogprob {
                token: l.token,
                logprob: l.logprob,
                top: l.top.clone(),
            })
            .collect()
    }

    #[getter]
    fn finish_reason(&self) -> Option<&'static str> {
        self.inner.finish.map(Finish::as_str)
    }

    /// The stop string that ended the generation, if one did.
    #[getter]
    fn stop(&self) -> Option<&str> {
        self.inner.stop.as_deref()
    }

    #[getter]
    fn error(&self) -> Option<&str> {
        self.inner.error.as_deref()
    }

    fn __repr__(&self) -> String {
        let c = &self.inner;
        format!(
            "Chunk(text={:?}, tokens={:?}, finish_reason={:?})",
            c.text,
            c.tokens,
            c.finish.map(Finish::as_str)
        )
    }
}

/// The generation keyword arguments shared by `Scheduler.submit` and `Context.generate`.
pub(crate) fn gen_params(
    max_tokens: Option<i64>,
    stop: Vec<String>,
    logit_bias: Option<HashMap<i64, f32>>,
    ignore_eos: bool,
    logprobs: Option<i64>,
    stop_ids: Vec<u32>,
    skip_special: bool,
    grammar: Option<&Grammar>,
) -> PyResult<GenParams> {
    let max_tokens = positive("max_tokens", max_tokens)?;
    let mut bias = Vec::new();
    for (tok, b) in logit_bias.unwrap_or_default() {
        let tok = u32::try_from(tok).map_err(|_| {
            PyValueError::new_err(format!("logit_bias: token id {tok} out of range"))
        })?;
        bias.push((tok, b));
    }
    bias.sort_by_key(|&(t, _)| t);
    let logprobs = match logprobs {
        Some(k) if k < 0 => {
            return Err(PyValueError::new_err(format!(
                "logprobs must be >= 0, got {k}"
            )))
        }
        k => k.map(|k| k as usize),
    };
    Ok(GenParams {
        max_tokens,
        stop,
        logit_bias: bias,
        ignore_eos,
        logprobs,
        stop_ids,
        skip_special,
        grammar: grammar.map(|g| g.spec.clone()),
    })
}

/// Continuous batching over `n_slots` sequences of `n_ctx` tokens each: `submit` queues a
/// request and returns its id; `step` runs one forward pass over every sequence with work
/// (the interpreter released) and returns `(admitted, chunks)`: `[(id, cached prompt
/// tokens)]` and `[(id, Chunk)]`. Any thread may submit or cancel while another steps.
#[pyclass(module = "rllm._rllm", frozen)]
pub struct Scheduler {
    inner: rllm_core::Scheduler,
}

#[pymethods]
impl Scheduler {
    #[new]
    #[pyo3(signature = (model, n_slots, n_ctx=None, n_threads=None, n_batch=None,
        rope_freq_base=None, rope_freq_scale=None))]
    fn new(
        py: Python<'_>,
        model: &Model,
        n_slots: i64,
        n_ctx: Option<i64>,
        n_threads: Option<i64>,
        n_batch: Option<i64>,
        rope_freq_base: Option<f32>,
        rope_freq_scale: Option<f32>,
    ) -> PyResult<Self> {
        let n_slots = positive("n_slots", Some(n_slots))?.unwrap_or(1);
        let params = context_params(n_ctx, n_threads, n_batch, rope_freq_base, rope_freq_scale)?;
        let model = model.inner.clone();
        let inner = py.detach(|| catch(|| rllm_core::Scheduler::new(model, n_slots, &params)))?;
        Ok(Scheduler { inner })
    }

    #[getter]
    fn n_slots(&self) -> usize {
        self.inner.n_slots()
    }

    /// Tokens each sequence holds, prompt and completion together.
    #[getter]
    fn n_ctx(&self) -> usize {
        self.inner.n_ctx()
    }

    #[getter]
    fn n_batch(&self) -> usize {
        self.inner.n_batch()
    }

    /// Requests waiting for a slot.
    #[getter]
    fn n_queued(&self) -> usize {
        self.inner.n_queued()
    }

    /// Requests in a slot.
    #[getter]
    fn n_running(&self) -> usize {
        self.inner.n_running()
    }

    /// The tokens in `slot`'s cache.
    fn cached_tokens(&self, py: Python<'_>, slot: usize) -> PyResult<Vec<u32>> {
        Ok(py.detach(|| catch(|| self.inner.cached_tokens(slot)))?)
    }

    /// Queue a generation after `prompt` (token ids), sampled with a copy of `sampler` and
    /// constrained to `grammar`. Raises ValueError for bad arguments and ContextFullError when
    /// it cannot fit.
    #[pyo3(signature = (prompt, sampler, max_tokens=None, stop=Vec::new(), logit_bias=None,
        ignore_eos=false, logprobs=None, grammar=None))]
    fn submit(
        &self,
        py: Python<'_>,
        prompt: Vec<u32>,
        sampler: &Sampler,
        max_tokens: Option<i64>,
        stop: Vec<String>,
        logit_bias: Option<HashMap<i64, f32>>,
        ignore_eos: bool,
        logprobs: Option<i64>,
        grammar: Option<PyRef<'_, Grammar>>,
    ) -> PyResult<u64> {
        let params = gen_params(
            max_tokens,
            stop,
            logit_bias,
            ignore_eos,
            logprobs,
            Vec::new(),
            false,
            grammar.as_deref(),
        )?;
        let sampler = sampler.inner.clone();
        Ok(py.detach(|| catch(|| self.inner.submit(prompt, sampler, params)))?)
    }

    /// Raise ValueError if `submit` would refuse these generation arguments.
    #[pyo3(signature = (max_tokens=None, stop=Vec::new(), logit_bias=None, ignore_eos=false,
        logprobs=None))]
    fn check_params(
        &self,
        max_tokens: Option<i64>,
        stop: Vec<String>,
        logit_bias: Option<HashMap<i64, f32>>,
        ignore_eos: bool,
        logprobs: Option<i64>,
    ) -> PyResult<()> {
        let params = gen_params(
            max_tokens,
            stop,
            logit_bias,
            ignore_eos,
            logprobs,
            Vec::new(),
            false,
            None,
        )?;
        Ok(catch(|| params.validate(self.inner.n_vocab()))?)
    }

    /// Cancel request `id`; its last chunk ("cancelled") comes with a coming step.
    fn cancel(&self, id: u64) {
        self.inner.cancel(id);
    }

    /// Wake a `step` waiting for work.
    fn wake(&self) {
        self.inner.wake();
    }

    /// One forward pass over every sequence with work, then a token step for each. With
    /// nothing to do it first waits up to `wait` seconds for a submission.
    #[pyo3(signature = (wait=0.0))]
    #[allow(clippy::type_complexity)]
    fn step(&self, py: Python<'_>, wait: f64) -> PyResult<(Vec<(u64, usize)>, Vec<(u64, Chunk)>)> {
        let wait = Duration::try_from_secs_f64(wait)
            .map_err(|_| PyValueError::new_err(format!("wait must be >= 0, got {wait}")))?;
        let report = py.detach(|| catch(|| Ok(self.inner.step(wait))))?;
        let chunks = report
            .chunks
            .into_iter()
            .map(|(id, inner)| (id, Chunk { inner }))
            .collect();
        Ok((report.admitted, chunks))
    }

    fn __repr__(&self) -> String {
        format!(
            "Scheduler(n_slots={}, n_ctx={}, n_batch={})",
            self.inner.n_slots(),
            self.inner.n_ctx(),
            self.inner.n_batch()
        )
    }
}
