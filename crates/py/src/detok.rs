//! `rllm._rllm.Detokenizer`: the Rust detokenizer (`rllm_core::detok`), from a model or from
//! a metadata dict. The token loop (`Context.generate`, `Scheduler`) uses the same one.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use rllm_core::detok::{StreamDecoder, Vocab, KEYS, OLD_KEYS};
use rllm_core::gguf::{Array, Metadata, Value};
use rllm_core::Error;

use crate::errors::catch;
use crate::model::Model;

/// Token ids -> text as llama.cpp's llama_detokenize, incrementally: `push` returns only
/// complete UTF-8 text, and the pieces (with `flush`'s) concatenate to `decode(ids)`.
#[pyclass(module = "rllm._rllm")]
pub struct Detokenizer {
    inner: StreamDecoder,
}

fn id32(vocab: &Vocab, id: i64) -> Result<u32, Error> {
    u32::try_from(id).map_err(|_| Error::TokenOutOfRange {
        id,
        n_vocab: vocab.n_vocab(),
    })
}

#[pymethods]
impl Detokenizer {
    #[new]
    #[pyo3(signature = (model, skip_special = false))]
    fn new(py: Python<'_>, model: &Model, skip_special: bool) -> PyResult<Self> {
        let vocab = py.detach(|| catch(|| model.inner.vocab()))?;
        Ok(Detokenizer {
            inner: StreamDecoder::new(vocab, skip_special),
        })
    }

    /// From GGUF metadata as a dict (the one `Tokenizer.from_metadata` takes); only the
    /// tokenizer keys are read.
    #[staticmethod]
    #[pyo3(signature = (meta, skip_special = false))]
    fn from_metadata(
        py: Python<'_>,
        meta: &Bound<'_, PyDict>,
        skip_special: bool,
    ) -> PyResult<Self> {
        let mut m = Metadata::default();
        for key in KEYS.iter().chain(&OLD_KEYS) {
            if let Some(v) = meta.get_item(key)? {
                m.insert((*key).to_owned(), to_value(key, &v)?)
                    .map_err(|e| PyTypeError::new_err(e.to_string()))?;
            }
        }
        let vocab = py.detach(|| catch(|| Vocab::from_metadata(&m)))?;
        Ok(Self::with(vocab, skip_special))
    }

    #[getter]
    fn n_vocab(&self) -> usize {
        self.inner.vocab().n_vocab()
    }

    #[getter]
    fn skip_special(&self) -> bool {
        self.inner.skip_special()
    }

    /// The text `id` completes (maybe empty); an out-of-range id raises ValueError.
    fn push(&mut self, id: i64) -> PyResult<String> {
        let inner = &mut self.inner;
        Ok(catch(|| inner.push(id32(inner.vocab(), id)?))?)
    }

    /// The text still held back; the detokenizer starts over afterwards.
    fn flush(&mut self) -> String {
        self.inner.flush()
    }

    /// The whole text of `ids` with this detokenizer's skip_special; does not touch the
    /// incremental state.
    fn decode(&self, py: Python<'_>, ids: Vec<i64>) -> PyResult<String> {
        let vocab = self.inner.vocab();
        let skip = self.inner.skip_special();
        Ok(py.detach(|| {
            catch(|| {
                let ids = ids
                    .iter()
                    .map(|&i| id32(vocab, i))
                    .collect::<Result<Vec<u32>, _>>()?;
                vocab.decode(&ids, skip)
            })
        })?)
    }
}

impl Detokenizer {
    fn with(vocab: Vocab, skip_special: bool) -> Self {
        Detokenizer {
            inner: StreamDecoder::new(Arc::new(vocab), skip_special),
        }
    }
}

/// A Python metadata value as a GGUF value: bool, int, float, str, or a list/tuple of one of
/// those.
fn to_value(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Value> {
    let bad = || PyTypeError::new_err(format!("metadata key {key:?}: unsupported value {v}"));
    if v.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(v.extract()?));
    }
    if v.is_instance_of::<PyInt>() {
        return Ok(Value::I64(v.extract().map_err(|_| bad())?));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(Value::F64(v.extract()?));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(Value::String(v.extract()?));
    }
    if !(v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>()) {
        return Err(bad());
    }
    let items: Vec<Bound<'_, PyAny>> = v.try_iter()?.collect::<PyResult<_>>()?;
    let all = |f: fn(&Bound<'_, PyAny>) -> bool| items.iter().all(f);
    Ok(Value::Array(if all(|x| x.is_instance_of::<PyString>()) {
        Array::String(v.extract()?)
    } else if all(|x| x.is_instance_of::<PyInt>() && !x.is_instance_of::<PyBool>()) {
        Array::I64(v.extract().map_err(|_| bad())?)
    } else {
        return Err(bad());
    }))
}
