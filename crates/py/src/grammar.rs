//! `rllm._rllm.Grammar`: a JSON schema, regex, Lark or GBNF grammar, checked when made, that
//! `Context.generate` and `Scheduler.submit` constrain a completion to.

use pyo3::prelude::*;
use pyo3::types::PyString;
use rllm_core::GrammarSpec;

use crate::errors::catch;

/// The language a completion must be in. Make one with `from_json_schema`, `from_regex`,
/// `from_lark`, `from_gbnf` or `json_object`; a bad schema or grammar raises ValueError.
#[pyclass(module = "rllm._rllm", frozen)]
pub struct Grammar {
    pub(crate) spec: GrammarSpec,
}

/// A schema given as JSON text, a dict, or a class with `model_json_schema` (pydantic).
fn schema_text(schema: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = schema.cast::<PyString>() {
        return s.extract();
    }
    let value = if schema.hasattr("model_json_schema")? {
        schema.call_method0("model_json_schema")?
    } else {
        schema.clone()
    };
    let json = schema.py().import("json")?;
    json.call_method1("dumps", (value,))?.extract()
}

#[pymethods]
impl Grammar {
    /// A JSON schema: JSON text, a dict, or a pydantic model class.
    #[staticmethod]
    fn from_json_schema(schema: &Bound<'_, PyAny>) -> PyResult<Self> {
        let text = schema_text(schema)?;
        let spec = schema
            .py()
            .detach(|| catch(|| GrammarSpec::json_schema(&text)))?;
        Ok(Grammar { spec })
    }

    /// Any JSON object (OpenAI's `{"type": "json_object"}`).
    #[staticmethod]
    fn json_object() -> Self {
        Grammar {
            spec: GrammarSpec::json_object(),
        }
    }

    /// A regular expression (Rust `regex` syntax) the whole completion matches.
    #[staticmethod]
    fn from_regex(py: Python<'_>, pattern: &str) -> PyResult<Self> {
        let spec = py.detach(|| catch(|| GrammarSpec::regex(pattern)))?;
        Ok(Grammar { spec })
    }

    /// A grammar in llguidance's Lark dialect.
    #[staticmethod]
    fn from_lark(py: Python<'_>, grammar: &str) -> PyResult<Self> {
        let spec = py.detach(|| catch(|| GrammarSpec::lark(grammar)))?;
        Ok(Grammar { spec })
    }

    /// A llama.cpp GBNF grammar (its start rule is `root`).
    #[staticmethod]
    fn from_gbnf(py: Python<'_>, grammar: &str) -> PyResult<Self> {
        let spec = py.detach(|| catch(|| GrammarSpec::gbnf(grammar)))?;
        Ok(Grammar { spec })
    }

    /// "json_schema", "regex", "lark" or "gbnf".
    #[getter]
    fn kind(&self) -> &'static str {
        self.spec.kind.as_str()
    }

    /// The schema or grammar as given (a schema as JSON text).
    #[getter]
    fn source(&self) -> &str {
        &self.spec.source
    }

    /// The Lark text the grammar compiles to (None for a JSON schema).
    #[getter]
    fn lark(&self) -> Option<&str> {
        self.spec.lark_text()
    }

    /// Whether `text` is a whole sentence of the language.
    fn matches(&self, py: Python<'_>, text: &str) -> bool {
        py.detach(|| self.spec.matches(text.as_bytes()))
    }

    fn __repr__(&self) -> String {
        let src: String = self.spec.source.chars().take(60).collect();
        let more = if self.spec.source.chars().count() > 60 {
            "..."
        } else {
            ""
        };
        format!("Grammar.{}({src:?}{more})", self.spec.kind.as_str())
    }
}
