//! `rllm._rllm.Embedder`: embeddings of many token-id inputs, pooled and normalized in Rust.

use std::sync::{Arc, Mutex};

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use rllm_core::{Error, Pooling};

use crate::context::context_params;
use crate::errors::catch;
use crate::model::Model;

/// A model's embedding runner: its own scratch and threads; calls from several Python threads
/// take turns.
#[pyclass(module = "rllm._rllm", frozen)]
pub struct Embedder {
    inner: Mutex<rllm_core::Embedder>,
    model: Arc<rllm_core::Model>,
    n_ctx: usize,
    n_threads: usize,
    default_pooling: Pooling,
}

fn pooling(name: Option<&str>) -> PyResult<Option<Pooling>> {
    name.map(|n| catch(|| Pooling::parse(n)).map_err(PyErr::from))
        .transpose()
}

#[pymethods]
impl Embedder {
    #[new]
    #[pyo3(signature = (model, n_ctx=None, n_threads=None))]
    fn new(
        py: Python<'_>,
        model: &Model,
        n_ctx: Option<i64>,
        n_threads: Option<i64>,
    ) -> PyResult<Self> {
        let params = context_params(n_ctx, n_threads, None, None, None)?;
        let model = model.inner.clone();
        let m = model.clone();
        let inner = py.detach(|| catch(|| rllm_core::Embedder::new(m, &params)))?;
        Ok(Embedder {
            model,
            n_ctx: inner.n_ctx(),
            n_threads: inner.n_threads(),
            default_pooling: inner.default_pooling(),
            inner: Mutex::new(inner),
        })
    }

    /// Tokens one input may have.
    #[getter]
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    #[getter]
    fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// The model's pooling (`<arch>.pooling_type`), or "none" when the file names none.
    #[getter]
    fn pooling(&self) -> &'static str {
        self.default_pooling.name()
    }

    /// Length of the vectors `pooling` gives (default: the model's pooling).
    #[pyo3(signature = (pooling=None))]
    fn dim(&self, pooling: Option<&str>) -> PyResult<usize> {
        let p = self::pooling(pooling)?.unwrap_or(self.default_pooling);
        Ok(rllm_core::embed::dim(&self.model, p))
    }

    /// Embed `inputs` (lists of token ids). Returns `(vectors [n, dim], rows per input,
    /// tokens evaluated)`.
    #[pyo3(signature = (inputs, pooling=None, normalize=2))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<Vec<i64>>,
        pooling: Option<&str>,
        normalize: i32,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Vec<usize>, usize)> {
        let pooling = self::pooling(pooling)?;
        let n_vocab = self.model.hparams.n_vocab;
        let inputs = inputs
            .into_iter()
            .map(|ids| {
                ids.into_iter()
                    .map(|id| {
                        u32::try_from(id)
                            .map_err(|_| Error::TokenOutOfRange { id, n_vocab })
                            .map_err(|e| PyErr::from(crate::errors::Failure::Core(e)))
                    })
                    .collect::<PyResult<Vec<u32>>>()
            })
            .collect::<PyResult<Vec<_>>>()?;
        let out = py.detach(|| {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            catch(|| inner.embed(&inputs, pooling, normalize))
        })?;
        let n = out.rows.iter().sum::<usize>();
        let a = Array2::from_shape_vec((n, out.dim), out.data)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok((a.into_pyarray(py), out.rows, out.n_tokens))
    }
}
