//! `rllm._rllm.BatchEngine`: several sequences (slots) evaluated together, one forward pass
//! per step over every slot with work.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rllm_core::Work;

use crate::context::{context_params, positive};
use crate::errors::catch;
use crate::model::Model;

/// N slots, each with its own KV cache of `n_ctx` tokens; `step` evaluates new tokens for any
/// of them in shared forward passes of at most `n_batch` tokens.
#[pyclass(module = "rllm._rllm")]
pub struct BatchEngine {
    inner: rllm_core::BatchEngine,
}

#[pymethods]
impl BatchEngine {
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
        let inner = py.detach(|| catch(|| rllm_core::BatchEngine::new(model, n_slots, &params)))?;
        Ok(BatchEngine { inner })
    }

    #[getter]
    fn n_slots(&self) -> usize {
        self.inner.n_slots()
    }

    /// Tokens each slot holds at most.
    #[getter]
    fn n_ctx(&self) -> usize {
        self.inner.n_ctx()
    }

    #[getter]
    fn n_batch(&self) -> usize {
        self.inner.n_batch()
    }

    /// The tokens in `slot`'s cache.
    fn tokens(&self, slot: usize) -> PyResult<Vec<u32>> {
        Ok(catch(|| self.inner.tokens(slot).map(<[u32]>::to_vec))?)
    }

    /// Keep the first `n` tokens of `slot` (0 empties it).
    fn truncate(&mut self, slot: usize, n: usize) -> PyResult<()> {
        Ok(catch(|| self.inner.truncate(slot, n))?)
    }

    /// Evaluate new tokens for several slots together. Each item is `(slot, tokens)` (logits
    /// of the last token) or `(slot, tokens, start, end)` (logits of tokens[start:end]).
    /// Returns one float32 array `[rows, n_vocab]` per item, in order.
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        work: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyArray2<f32>>>> {
        let mut items: Vec<(usize, Vec<u32>, std::ops::Range<usize>)> = Vec::new();
        for item in &work {
            let parsed = if let Ok((slot, tokens)) = item.extract::<(usize, Vec<u32>)>() {
                let n = tokens.len();
                (slot, tokens, n.saturating_sub(1)..n)
            } else if let Ok((slot, tokens, start, end)) =
                item.extract::<(usize, Vec<u32>, usize, usize)>()
            {
                (slot, tokens, start..end)
            } else {
                return Err(PyValueError::new_err(
                    "each work item must be (slot, tokens) or (slot, tokens, start, end)",
                ));
            };
            items.push(parsed);
        }
        let work: Vec<Work> = items
            .iter()
            .map(|(slot, tokens, rows)| Work {
                slot: *slot,
                tokens,
                logit_rows: rows.clone(),
            })
            .collect();
        let inner = &mut self.inner;
        let logits = py.detach(|| catch(|| inner.step(&work)))?;
        let n_vocab = self.inner.model().hparams.n_vocab;
        logits
            .into_iter()
            .map(|l| {
                let rows = l.len() / n_vocab;
                Array2::from_shape_vec((rows, n_vocab), l)
                    .map(|a| a.into_pyarray(py))
                    .map_err(|e| PyValueError::new_err(e.to_string()))
            })
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "BatchEngine(n_slots={}, n_ctx={}, n_batch={})",
            self.inner.n_slots(),
            self.inner.n_ctx(),
            self.inner.n_batch()
        )
    }
}
