//! `rllm._rllm.quantize_model` and friends: argument conversion for `rllm_core::quantize`.
//! The work runs detached from the interpreter; the progress callback (and a Ctrl-C check)
//! re-attaches once per tensor.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rllm_core::quantize::{self, Ftype, Imatrix, QuantizeParams, Summary, TensorPlan, PRESETS};
use rllm_kernels::GgmlType;

use crate::errors::catch;

fn parse_type(name: &str, what: &str) -> PyResult<GgmlType> {
    GgmlType::from_name(name)
        .ok_or_else(|| PyValueError::new_err(format!("{what}: unknown ggml type {name:?}")))
}

fn plan_dict<'py>(py: Python<'py>, t: &TensorPlan) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &t.name)?;
    d.set_item("shape", t.dims.clone())?;
    d.set_item("old_type", t.old_type.name())?;
    d.set_item("new_type", t.new_type.name())?;
    d.set_item("old_bytes", t.old_bytes)?;
    d.set_item("new_bytes", t.new_bytes)?;
    d.set_item("fallback_from", t.fallback_from.map(|f| f.name()))?;
    Ok(d)
}

fn summary_dict<'py>(py: Python<'py>, s: &Summary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let tensors = s
        .tensors
        .iter()
        .map(|t| plan_dict(py, t))
        .collect::<PyResult<Vec<_>>>()?;
    d.set_item("tensors", tensors)?;
    d.set_item("file_type", s.file_type)?;
    d.set_item("n_elements", s.n_elements)?;
    d.set_item("old_bytes", s.old_bytes)?;
    d.set_item("new_bytes", s.new_bytes)?;
    d.set_item("n_fallback", s.n_fallback)?;
    Ok(d)
}

/// Quantize the GGUF file `input` into `output` with llama-quantize's preset `ftype` (or
/// `"COPY"`). `progress(done, total, tensor)` is called after each tensor with a dict
/// describing it; an exception it raises (or Ctrl-C) cancels, and no output file is left.
/// Returns the summary dict (tensors, sizes, file type).
#[pyfunction]
#[pyo3(signature = (input, output, ftype, *, allow_requantize=false, pure=false,
    output_tensor_type=None, token_embedding_type=None, leave_output_tensor=false,
    imatrix=None, n_threads=None, progress=None))]
fn quantize_model<'py>(
    py: Python<'py>,
    input: PathBuf,
    output: PathBuf,
    ftype: &str,
    allow_requantize: bool,
    pure: bool,
    output_tensor_type: Option<&str>,
    token_embedding_type: Option<&str>,
    leave_output_tensor: bool,
    imatrix: Option<PathBuf>,
    n_threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let ftype = if ftype.eq_ignore_ascii_case("COPY") {
        None
    } else {
        Some(Ftype::from_name(ftype).map_err(|e| PyValueError::new_err(e.to_string()))?)
    };
    let mut params = QuantizeParams::new(ftype);
    params.allow_requantize = allow_requantize;
    params.pure = pure;
    params.leave_output_tensor = leave_output_tensor;
    params.output_tensor_type = output_tensor_type
        .map(|t| parse_type(t, "output_tensor_type"))
        .transpose()?;
    params.token_embedding_type = token_embedding_type
        .map(|t| parse_type(t, "token_embedding_type"))
        .transpose()?;
    if n_threads == Some(0) {
        return Err(PyValueError::new_err("n_threads must be at least 1"));
    }
    let progress = progress.map(Bound::unbind);
    let mut cancelled: Option<PyErr> = None;
    let result = py.detach(|| {
        catch(|| {
            if let Some(path) = &imatrix {
                params.imatrix = Some(Imatrix::load(path)?);
            }
            let mut on_tensor = |i: usize, n: usize, t: &TensorPlan| -> bool {
                Python::attach(|py| {
                    let r = py.check_signals().and_then(|()| match &progress {
                        Some(cb) => cb.call1(py, (i, n, plan_dict(py, t)?)).map(drop),
                        None => Ok(()),
                    });
                    match r {
                        Ok(()) => true,
                        Err(e) => {
                            cancelled = Some(e);
                            false
                        }
                    }
                })
            };
            params.n_threads = n_threads;
            quantize::quantize_file(&input, &output, &params, &mut on_tensor)
        })
    });
    if let Some(e) = cancelled {
        return Err(e);
    }
    let summary = result.map_err(PyErr::from)?;
    summary_dict(py, &summary)
}

/// The preset names `quantize_model` accepts (llama-quantize's, less the ones that need a
/// quantizer rllm does not have), then `"COPY"`.
#[pyfunction]
fn quantize_presets() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).chain(["COPY"]).collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(quantize_model, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_presets, m)?)?;
    Ok(())
}
