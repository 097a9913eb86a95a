//! Map core errors onto the Python exception tree defined in `rllm/errors.py`, and keep Rust
//! panics from reaching Python as anything but an `RllmError`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use rllm_core::Error;

/// An exception class of `rllm.errors`, looked up once.
fn exception<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static CLASSES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = CLASSES.get_or_try_init(py, || py.import("rllm.errors").map(Bound::unbind))?;
    Ok(module.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

fn raise(name: &'static str, msg: String) -> PyErr {
    Python::attach(|py| match exception(py, name) {
        Ok(ty) => PyErr::from_type(ty, msg),
        Err(e) => e,
    })
}

pub fn to_py(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        Error::Io { .. } => PyOSError::new_err(msg),
        Error::Gguf { .. } => raise("GGUFError", msg),
        Error::UnsupportedArchitecture { .. } => raise("UnsupportedArchitectureError", msg),
        Error::ContextFull { .. } => raise("ContextFullError", msg),
        Error::InvalidArgument(_) | Error::TokenOutOfRange { .. } => PyValueError::new_err(msg),
        Error::Tokenizer(_) => raise("GGUFError", msg),
    }
}

/// Why a call into the core failed: an error it returned, or a panic it raised.
pub enum Failure {
    Core(Error),
    Panic(String),
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        match f {
            Failure::Core(e) => to_py(e),
            Failure::Panic(what) => raise("RllmError", format!("internal error: {what}")),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Core(e)
    }
}

/// Run `f` (usually detached from the interpreter), catching panics so that they surface as
/// `RllmError` rather than unwinding into Python.
pub fn catch<T>(f: impl FnOnce() -> rllm_core::Result<T>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(Failure::Core),
        Err(panic) => Err(Failure::Panic(
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into()),
        )),
    }
}
