//! `rllm._rllm.Model`: a loaded GGUF model (immutable, shared by its contexts).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rllm_core::gguf::{Array, Hold, Value};

use crate::errors::catch;

/// A GGUF model held in memory and validated: the file mapped (`use_mmap=True`), or copied
/// into huge-page-backed memory (`False`: faster decode, no pages shared between processes);
/// `None` copies where huge pages exist and the file takes at most half the free memory.
#[pyclass(module = "rllm._rllm", frozen)]
pub struct Model {
    pub inner: Arc<rllm_core::Model>,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path, use_mmap=None))]
    fn new(py: Python<'_>, path: std::path::PathBuf, use_mmap: Option<bool>) -> PyResult<Self> {
        let hold = match use_mmap {
            None => Hold::Auto,
            Some(true) => Hold::Map,
            Some(false) => Hold::Copy,
        };
        let inner = py.detach(|| catch(|| rllm_core::Model::load_with(&path, hold)))?;
        Ok(Model {
            inner: Arc::new(inner),
        })
    }

    /// Whether the weights are read from a map of the file (`False`: from a private copy).
    #[getter]
    fn mapped(&self) -> bool {
        self.inner.file.held == Hold::Map
    }

    #[getter]
    fn path(&self) -> String {
        self.inner.file.path.display().to_string()
    }

    #[getter]
    fn arch(&self) -> &str {
        &self.inner.hparams.arch
    }

    #[getter]
    fn n_vocab(&self) -> usize {
        self.inner.hparams.n_vocab
    }

    #[getter]
    fn n_ctx_train(&self) -> usize {
        self.inner.hparams.n_ctx_train
    }

    #[getter]
    fn n_embd(&self) -> usize {
        self.inner.hparams.n_embd
    }

    #[getter]
    fn n_layer(&self) -> usize {
        self.inner.hparams.n_layer
    }

    #[getter]
    fn n_head(&self) -> usize {
        self.inner.hparams.n_head
    }

    #[getter]
    fn n_head_kv(&self) -> usize {
        self.inner.hparams.n_head_kv
    }

    /// Whether the model has an output head: false for encoders (bert), which only embed.
    #[getter]
    fn can_generate(&self) -> bool {
        self.inner.weights.output.is_some()
    }

    /// Number of weights.
    #[getter]
    fn n_params(&self) -> u64 {
        self.inner.n_params()
    }

    /// Bytes of tensor data.
    #[getter]
    fn size(&self) -> u64 {
        self.inner.weight_bytes()
    }

    /// Bytes of weights one decoded token reads (the decode speed limit is bandwidth / this).
    #[getter]
    fn bytes_per_token(&self) -> u64 {
        self.inner.bytes_per_token()
    }

    /// Context length used when none is given: the model's, capped at 4096.
    #[getter]
    fn default_n_ctx(&self) -> usize {
        self.inner.default_n_ctx()
    }

    /// The GGUF metadata as a dict (arrays become lists).
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        metadata_dict(py, &self.inner.file)
    }

    /// `(name, type, shape, n_bytes, offset)` of every tensor, in file order (see GGUFFile).
    fn tensors(&self) -> Vec<(String, &'static str, Vec<u64>, usize, u64)> {
        tensor_table(&self.inner.file)
    }

    /// GGUF format version of the file.
    #[getter]
    fn gguf_version(&self) -> u32 {
        self.inner.file.version
    }

    fn __repr__(&self) -> String {
        let hp = &self.inner.hparams;
        format!(
            "Model(path={:?}, arch={:?}, n_layer={}, n_embd={}, n_vocab={})",
            self.path(),
            hp.arch,
            hp.n_layer,
            hp.n_embd,
            hp.n_vocab
        )
    }
}

/// Read-only memory bandwidth in GB/s with `n_threads` threads (best of `reps` passes over
/// `mib` MiB).
#[pyfunction]
#[pyo3(signature = (n_threads, mib=512, reps=3))]
pub fn memory_bandwidth(
    py: Python<'_>,
    n_threads: usize,
    mib: usize,
    reps: usize,
) -> PyResult<f64> {
    let bytes = mib.saturating_mul(1 << 20);
    let bps = py.detach(|| catch(|| rllm_core::bench::memory_bandwidth(n_threads, bytes, reps)))?;
    Ok(bps / 1e9)
}

/// Start (`True`) or stop timing the forward pass's ops, process-wide (`rllm bench --profile`).
#[pyfunction]
pub fn profile_ops(on: bool) {
    rllm_core::bench::op_times::set_enabled(on);
}

/// Seconds spent per kind of op since the last call (which resets them): `forward` (whole
/// passes), `matmul` (including `quantize`), `quantize` and `attention`.
#[pyfunction]
pub fn take_op_times() -> std::collections::HashMap<&'static str, f64> {
    rllm_core::bench::op_times::take()
        .into_iter()
        .map(|(op, secs)| (op.name(), secs))
        .collect()
}

/// A GGUF file's header, validated but not bound to any architecture (for `rllm info`).
#[pyclass(module = "rllm._rllm", frozen, name = "GGUFFile")]
pub struct GgufFile {
    inner: rllm_core::gguf::GgufFile,
}

#[pymethods]
impl GgufFile {
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| catch(|| rllm_core::gguf::GgufFile::open(&path)))?;
        Ok(GgufFile { inner })
    }

    #[getter]
    fn version(&self) -> u32 {
        self.inner.version
    }

    #[getter]
    fn alignment(&self) -> u64 {
        self.inner.alignment
    }

    #[getter]
    fn data_offset(&self) -> u64 {
        self.inner.data_offset
    }

    /// The metadata as a dict (arrays become lists).
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        metadata_dict(py, &self.inner)
    }

    /// `(name, type, shape, n_bytes, offset)` of every tensor, in file order; shapes in ggml
    /// order (row length first), offsets relative to the data section.
    fn tensors(&self) -> Vec<(String, &'static str, Vec<u64>, usize, u64)> {
        tensor_table(&self.inner)
    }
}

fn metadata_dict<'py>(
    py: Python<'py>,
    file: &rllm_core::gguf::GgufFile,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in file.metadata.iter() {
        d.set_item(k, value_to_py(py, v)?)?;
    }
    Ok(d)
}

fn tensor_table(
    file: &rllm_core::gguf::GgufFile,
) -> Vec<(String, &'static str, Vec<u64>, usize, u64)> {
    file.tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.ty.name(),
                t.dims.clone(),
                t.size,
                t.offset,
            )
        })
        .collect()
}

fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::U8(x) => x.into_pyobject(py)?.into_any(),
        Value::I8(x) => x.into_pyobject(py)?.into_any(),
        Value::U16(x) => x.into_pyobject(py)?.into_any(),
        Value::I16(x) => x.into_pyobject(py)?.into_any(),
        Value::U32(x) => x.into_pyobject(py)?.into_any(),
        Value::I32(x) => x.into_pyobject(py)?.into_any(),
        Value::U64(x) => x.into_pyobject(py)?.into_any(),
        Value::I64(x) => x.into_pyobject(py)?.into_any(),
        Value::F32(x) => x.into_pyobject(py)?.into_any(),
        Value::F64(x) => x.into_pyobject(py)?.into_any(),
        Value::Bool(x) => x.into_pyobject(py)?.to_owned().into_any(),
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(a) => array_to_py(py, a)?.into_any(),
    })
}

fn array_to_py<'py>(py: Python<'py>, a: &Array) -> PyResult<Bound<'py, PyList>> {
    match a {
        Array::U8(v) => PyList::new(py, v),
        Array::I8(v) => PyList::new(py, v),
        Array::U16(v) => PyList::new(py, v),
        Array::I16(v) => PyList::new(py, v),
        Array::U32(v) => PyList::new(py, v),
        Array::I32(v) => PyList::new(py, v),
        Array::U64(v) => PyList::new(py, v),
        Array::I64(v) => PyList::new(py, v),
        Array::F32(v) => PyList::new(py, v),
        Array::F64(v) => PyList::new(py, v),
        Array::Bool(v) => PyList::new(py, v),
        Array::String(v) => PyList::new(py, v),
        Array::Array(v) => PyList::new(
            py,
            v.iter()
                .map(|inner| array_to_py(py, inner))
                .collect::<PyResult<Vec<_>>>()?,
        ),
    }
}
