//! GGUF files: a memory-mapped, fully validated reader.
//! Spec: ggml `docs/gguf.md`; validation rules follow ggml `src/gguf.cpp`.

mod metadata;
mod reader;
pub mod writer;

pub use metadata::{Array, Metadata, Value, ValueType};
pub use reader::{GgufFile, Hold, TensorInfo, DEFAULT_ALIGNMENT, MAX_DIMS};

use std::path::PathBuf;

use rllm_kernels::GgmlType;

/// What is wrong with a GGUF file. The file path is added by [`crate::Error::Gguf`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file (magic bytes {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("GGUF version {0} is not supported (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    #[error("file is truncated: {what} at offset {offset} needs {need} bytes, the file has {len}")]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        len: u64,
    },
    #[error(
        "{what} at offset {offset} claims {count} {unit}, more than the rest of the file can hold"
    )]
    CountTooLarge {
        what: String,
        offset: u64,
        count: u64,
        unit: &'static str,
    },
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error("metadata key '{key}' has unknown value type {id}")]
    UnknownValueType { key: String, id: u32 },
    #[error("metadata key '{key}' nests arrays deeper than {max} levels")]
    NestingTooDeep { key: String, max: usize },
    #[error("metadata key '{key}': bool byte {byte} is neither 0 nor 1")]
    InvalidBool { key: String, byte: u8 },
    #[error("duplicate metadata key '{0}'")]
    DuplicateKey(String),
    #[error("missing metadata key '{0}'")]
    MissingKey(String),
    #[error("metadata key '{key}' is a {got}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        got: &'static str,
    },
    #[error("metadata key '{key}': {why}")]
    InvalidValue { key: String, why: String },
    #[error("general.alignment = {0} is not a power of two")]
    BadAlignment(u64),
    #[error("tensor '{name}' has unknown ggml type id {id}")]
    UnknownTensorType { name: String, id: u32 },
    #[error("tensor '{name}' has {n_dims} dimensions (at most {MAX_DIMS} allowed)")]
    TooManyDims { name: String, n_dims: u32 },
    #[error("tensor '{name}' has shape {dims:?} whose element count overflows or is zero-sized")]
    BadDims { name: String, dims: Vec<u64> },
    #[error("tensor '{name}': row length {ne0} is not a multiple of the {ty} block size {block}")]
    NotBlockMultiple {
        name: String,
        ne0: u64,
        ty: GgmlType,
        block: usize,
    },
    #[error("tensor '{name}': offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor '{name}': data [{start}, {end}) lies outside the file's data section of {len} bytes")]
    TensorOutOfBounds {
        name: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error(
        "the tensor data section starts at offset {data_offset} (the header's end aligned to \
         {alignment}), past the end of the file at {len}: truncated inside the padding"
    )]
    DataSectionOutsideFile {
        data_offset: u64,
        alignment: u64,
        len: u64,
    },
    #[error("tensors '{first}' and '{second}' overlap in the data section")]
    OverlappingTensors { first: String, second: String },
    #[error("tensor name at offset {offset} is {len} bytes long (at most 63 allowed)")]
    NameTooLong { offset: u64, len: u64 },
    #[error("duplicate tensor name '{0}'")]
    DuplicateTensor(String),
    #[error("file {no} of this {count}-file split model, {}, is missing", file.display())]
    MissingShard { no: u64, count: u64, file: PathBuf },
    #[error("tensor '{name}': {why}")]
    BadTensor { name: String, why: String },
    #[error("no '<name>.in_sum2' tensors: not an importance matrix (imatrix GGUF) file")]
    NotImatrix,
    #[error("missing tensor '{0}'")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {got:?}, expected {expected:?}")]
    WrongShape {
        name: String,
        expected: Vec<u64>,
        got: Vec<u64>,
    },
    #[error("tensor '{name}' has type {ty}, which rllm cannot compute with yet")]
    UnsupportedTensorType { name: String, ty: GgmlType },
    #[error("tensor '{name}' is not used by the {arch} architecture")]
    UnusedTensor { name: String, arch: String },
}
