//! Python bindings of rllm (`rllm._rllm`): argument conversion only. Compute runs with the
//! interpreter detached so other Python threads keep running.

use pyo3::prelude::*;

mod batch;
mod context;
mod convert;
mod detok;
mod embed;
mod errors;
mod grammar;
mod kernels;
mod model;
mod quantize;
mod sampler;
mod scheduler;
mod tokenizer;

#[pymodule]
fn _rllm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<model::Model>()?;
    m.add_class::<model::GgufFile>()?;
    m.add_function(wrap_pyfunction!(model::memory_bandwidth, m)?)?;
    m.add_function(wrap_pyfunction!(model::profile_ops, m)?)?;
    m.add_function(wrap_pyfunction!(model::take_op_times, m)?)?;
    m.add_function(wrap_pyfunction!(tokenizer::spm_merges, m)?)?;
    m.add_class::<context::Context>()?;
    m.add_class::<embed::Embedder>()?;
    m.add_class::<batch::BatchEngine>()?;
    m.add_class::<context::TokenStream>()?;
    m.add_class::<sampler::Sampler>()?;
    m.add_class::<grammar::Grammar>()?;
    m.add_class::<scheduler::Scheduler>()?;
    m.add_class::<scheduler::Chunk>()?;
    m.add_class::<scheduler::TokenLogprob>()?;
    m.add_class::<detok::Detokenizer>()?;
    kernels::register(m)?;
    quantize::register(m)?;
    convert::register(m)?;
    Ok(())
}
