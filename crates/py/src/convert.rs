//! `rllm._rllm.gguf_header`: serialize a GGUF header (typed key-value pairs and tensor infos)
//! with rllm's writer, for `rllm.convert`, which streams the tensor data after it.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rllm_core::gguf::writer::{layout, KvList, TensorEntry};
use rllm_core::gguf::{Array, Value};
use rllm_kernels::GgmlType;

/// A metadata value from its GGUF type name (`u32`, `f32`, `str`, `bool`, ..., or `[T]` for an
/// array of T) and a Python value.
fn value(ty: &str, v: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Some(inner) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        macro_rules! arr {
            ($variant:ident, $t:ty) => {
                Array::$variant(v.extract::<Vec<$t>>()?)
            };
        }
        let a = match inner {
            "u8" => arr!(U8, u8),
            "i8" => arr!(I8, i8),
            "u16" => arr!(U16, u16),
            "i16" => arr!(I16, i16),
            "u32" => arr!(U32, u32),
            "i32" => arr!(I32, i32),
            "f32" => arr!(F32, f32),
            "u64" => arr!(U64, u64),
            "i64" => arr!(I64, i64),
            "f64" => arr!(F64, f64),
            "bool" => arr!(Bool, bool),
            "str" => arr!(String, String),
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown array type [{other}]"
                )))
            }
        };
        return Ok(Value::Array(a));
    }
    Ok(match ty {
        "u8" => Value::U8(v.extract()?),
        "i8" => Value::I8(v.extract()?),
        "u16" => Value::U16(v.extract()?),
        "i16" => Value::I16(v.extract()?),
        "u32" => Value::U32(v.extract()?),
        "i32" => Value::I32(v.extract()?),
        "f32" => Value::F32(v.extract()?),
        "u64" => Value::U64(v.extract()?),
        "i64" => Value::I64(v.extract()?),
        "f64" => Value::F64(v.extract()?),
        "bool" => Value::Bool(v.extract()?),
        "str" => Value::String(v.extract()?),
        other => return Err(PyValueError::new_err(format!("unknown value type {other}"))),
    })
}

/// The header bytes of a GGUF file (version 3) holding `kv` (`(key, type, value)` in order)
/// and `tensors` (`(name, ggml type, shape in ggml order)`), padded to the alignment; with the
/// offset of each tensor's data from the end of the header, and the alignment.
#[pyfunction]
fn gguf_header<'py>(
    py: Python<'py>,
    kv: Vec<(String, String, Bound<'py, PyAny>)>,
    tensors: Vec<(String, String, Vec<u64>)>,
) -> PyResult<(Bound<'py, PyBytes>, Vec<u64>, u64)> {
    let mut list = KvList::new();
    for (k, ty, v) in &kv {
        list.set(k, value(ty, v)?);
    }
    let entries = tensors
        .into_iter()
        .map(|(name, ty, dims)| {
            let ty = GgmlType::from_name(&ty)
                .ok_or_else(|| PyValueError::new_err(format!("unknown ggml type {ty:?}")))?;
            Ok(TensorEntry { name, ty, dims })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let lay = layout(&list, &entries).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((PyBytes::new(py, &lay.header), lay.offsets, lay.alignment))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(gguf_header, m)?)?;
    Ok(())
}
