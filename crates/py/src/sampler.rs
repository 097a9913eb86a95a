//! `rllm._rllm.Sampler`: the sampling chain, seedable and reproducible.

use numpy::PyReadonlyArray1;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rllm_core::SamplerParams;

use crate::errors::to_py;

/// Penalties → top-k → typical → top-p → min-p → temperature → draw (llama.cpp's order).
/// `temperature=0` is greedy.
#[pyclass(module = "rllm._rllm")]
#[derive(Clone)]
pub struct Sampler {
    pub inner: rllm_core::Sampler,
}

#[pymethods]
impl Sampler {
    #[new]
    #[pyo3(signature = (temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0,
        repeat_last_n=64, presence_penalty=0.0, frequency_penalty=0.0, seed=None, typical_p=1.0))]
    fn new(
        temperature: f32,
        top_k: i64,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        repeat_last_n: i64,
        presence_penalty: f32,
        frequency_penalty: f32,
        seed: Option<u64>,
        typical_p: f32,
    ) -> PyResult<Self> {
        if top_k < 0 {
            return Err(PyValueError::new_err(format!(
                "top_k must be >= 0, got {top_k}"
            )));
        }
        if repeat_last_n < 0 {
            return Err(PyValueError::new_err(format!(
                "repeat_last_n must be >= 0, got {repeat_last_n}"
            )));
        }
        let params = SamplerParams {
            temperature,
            top_k: top_k as usize,
            top_p,
            typical_p,
            min_p,
            repeat_penalty,
            repeat_last_n: repeat_last_n as usize,
            presence_penalty,
            frequency_penalty,
            seed,
        };
        Ok(Sampler {
            inner: rllm_core::Sampler::new(params).map_err(to_py)?,
        })
    }

    /// Choose a token from `logits` (float32, one per vocabulary entry); `history` holds the
    /// tokens so far, for the repetition penalties.
    #[pyo3(signature = (logits, history=Vec::new()))]
    fn sample(&mut self, logits: PyReadonlyArray1<'_, f32>, history: Vec<u32>) -> PyResult<u32> {
        let logits = logits.as_slice()?;
        if logits.is_empty() {
            return Err(PyValueError::new_err("logits are empty"));
        }
        Ok(self.inner.sample(logits, &history))
    }

    #[getter]
    fn temperature(&self) -> f32 {
        self.inner.params.temperature
    }

    #[getter]
    fn seed(&self) -> Option<u64> {
        self.inner.params.seed
    }

    fn __repr__(&self) -> String {
        format!("Sampler({:?})", self.inner.params)
    }
}
