//! Kernel-level functions of `rllm._rllm`, for tests that compare rllm's block formats and
//! SIMD tiers with an oracle (the `gguf` package) and with each other. Argument checks only:
//! every bad name, length or tier raises `ValueError` before a kernel runs.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rllm_kernels::blocks::{can_dequantize, can_quantize};
use rllm_kernels::dispatch::{self, DotKernel, Isa};
use rllm_kernels::GgmlType;

fn parse_type(name: &str) -> PyResult<GgmlType> {
    GgmlType::from_name(name)
        .ok_or_else(|| PyValueError::new_err(format!("unknown ggml type {name:?}")))
}

fn parse_isa(name: &str) -> PyResult<Isa> {
    let isa = Isa::from_name(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown isa {name:?}: expected one of {}",
            Isa::names()
        ))
    })?;
    if !isa.is_available() {
        return Err(PyValueError::new_err(format!(
            "isa {name:?} is not available on this CPU"
        )));
    }
    Ok(isa)
}

/// The dot kernel of weight type `weight_type` on tier `isa`.
fn kernel(weight_type: &str, isa: &str) -> PyResult<DotKernel> {
    let ty = parse_type(weight_type)?;
    let isa = parse_isa(isa)?;
    dispatch::dot_kernel_for(ty, isa)
        .ok_or_else(|| PyValueError::new_err(format!("no dot product for weight type {ty}")))
}

/// The values of a float32 array as an owned vector (any strides).
fn to_vec(x: &PyReadonlyArray1<'_, f32>) -> Vec<f32> {
    match x.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => x.as_array().iter().copied().collect(),
    }
}

/// Check that `n` values form whole blocks of `ty`; return the row's bytes.
fn row_bytes(ty: GgmlType, n: usize, what: &str) -> PyResult<usize> {
    ty.row_bytes(n).ok_or_else(|| {
        PyValueError::new_err(format!(
            "{what}: {n} values are not a whole number of {ty} blocks of {}",
            ty.block_size()
        ))
    })
}

/// Dequantize `n` values of ggml type `type` from the raw block bytes `data`.
#[pyfunction]
#[pyo3(signature = (data, r#type, n))]
fn dequantize<'py>(
    py: Python<'py>,
    data: &[u8],
    r#type: &str,
    n: usize,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let ty = parse_type(r#type)?;
    if !can_dequantize(ty) {
        return Err(PyValueError::new_err(format!(
            "dequantize: type {ty} is not supported"
        )));
    }
    let want = row_bytes(ty, n, "dequantize")?;
    if data.len() != want {
        return Err(PyValueError::new_err(format!(
            "dequantize: {n} values of {ty} take {want} bytes, got {}",
            data.len()
        )));
    }
    let out = py.detach(|| {
        let mut out = vec![0f32; n];
        rllm_kernels::dequantize_row(ty, data, &mut out);
        out
    });
    Ok(out.into_pyarray(py))
}

/// Quantize the activation row `x` into the activation format of `weight_type` (Q8_0, Q8_1,
/// Q8_K, or the float type itself), with the quantizer of tier `isa`.
#[pyfunction]
fn quantize_activation<'py>(
    py: Python<'py>,
    x: PyReadonlyArray1<'py, f32>,
    weight_type: &str,
    isa: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let k = kernel(weight_type, isa)?;
    let x = to_vec(&x);
    let bytes = row_bytes(k.act, x.len(), "quantize_activation")?;
    let out = py.detach(|| {
        let mut out = vec![0u8; bytes];
        k.quantize_act(&x, &mut out);
        out
    });
    Ok(PyBytes::new(py, &out))
}

/// Dot product of the weight row `w` (raw blocks of `weight_type`) with the activation row
/// `x`, which is first quantized with tier `isa`'s quantizer, as a matmul would.
#[pyfunction]
fn vec_dot(
    py: Python<'_>,
    weight_type: &str,
    w: &[u8],
    x: PyReadonlyArray1<'_, f32>,
    isa: &str,
) -> PyResult<f32> {
    let k = kernel(weight_type, isa)?;
    let x = to_vec(&x);
    let n = x.len();
    let want = row_bytes(k.weight, n, "vec_dot")?;
    if w.len() != want {
        return Err(PyValueError::new_err(format!(
            "vec_dot: {n} values of {} take {want} bytes, got {}",
            k.weight,
            w.len()
        )));
    }
    let a_bytes = row_bytes(k.act, n, "vec_dot")?;
    Ok(py.detach(|| {
        let mut a = vec![0u8; a_bytes];
        k.quantize_act(&x, &mut a);
        k.dot(n, w, &a)
    }))
}

/// Quantize the float32 array `x` to ggml type `type`, row by row (a row is the last axis; a
/// 1-D array is one row), exactly as llama-quantize would. `imatrix` holds one importance
/// weight per column.
#[pyfunction]
#[pyo3(signature = (x, r#type, imatrix=None))]
fn quantize<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    r#type: &str,
    imatrix: Option<PyReadonlyArray1<'py, f32>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let ty = parse_type(r#type)?;
    if !can_quantize(ty) {
        return Err(PyValueError::new_err(format!(
            "quantize: rllm has no quantizer for type {ty}"
        )));
    }
    let n_cols = x.shape().last().copied().unwrap_or(1);
    let values: Vec<f32> = match x.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => x.as_array().iter().copied().collect(),
    };
    let row = row_bytes(ty, n_cols, "quantize")?;
    let imatrix = imatrix.map(|m| to_vec(&m));
    if let Some(m) = &imatrix {
        if m.len() != n_cols {
            return Err(PyValueError::new_err(format!(
                "quantize: imatrix has {} values, rows have {n_cols}",
                m.len()
            )));
        }
    }
    let out = py.detach(|| {
        let n_rows = values.len().checked_div(n_cols).unwrap_or(0);
        let mut out = vec![0u8; n_rows * row];
        rllm_kernels::quantize_rows(ty, &values, n_cols, &mut out, imatrix.as_deref());
        out
    });
    Ok(PyBytes::new(py, &out))
}

/// The kernel tiers this CPU can run, `"scalar"` first.
#[pyfunction]
fn available_isas() -> Vec<&'static str> {
    dispatch::available_isas()
        .into_iter()
        .map(Isa::name)
        .collect()
}

/// The tier the model code runs on (detected once; `RLLM_ISA` forces one).
#[pyfunction]
fn active_isa() -> &'static str {
    dispatch::active_isa().name()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_activation, m)?)?;
    m.add_function(wrap_pyfunction!(vec_dot, m)?)?;
    m.add_function(wrap_pyfunction!(available_isas, m)?)?;
    m.add_function(wrap_pyfunction!(active_isa, m)?)?;
    Ok(())
}
