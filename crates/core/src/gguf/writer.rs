//! Serialize a GGUF header: magic, version 3, key-value pairs in order, tensor infos with
//! offsets padded to the alignment. Byte for byte what ggml's `gguf_write_out` produces for the
//! same keys and tensors, so a quantized file can equal llama-quantize's.
//! Spec: ggml `docs/gguf.md`; layout and padding: ggml `src/gguf.cpp` (`gguf_writer_base`).

use std::io::{self, Write};

use rllm_kernels::GgmlType;

use super::metadata::{Array, Value};
use super::{DEFAULT_ALIGNMENT, MAX_DIMS};

/// The GGUF version written (ggml's `GGUF_VERSION`).
pub const GGUF_VERSION: u32 = 3;

/// Key-value pairs in file order, with ggml's `gguf_set_val_*` semantics: setting a key
/// removes any earlier entry and appends the new one at the end.
#[derive(Clone, Debug, Default)]
pub struct KvList {
    entries: Vec<(String, Value)>,
}

impl KvList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remove `key` (if present), then append it with `value`.
    pub fn set(&mut self, key: &str, value: Value) {
        self.remove(key);
        self.entries.push((key.to_owned(), value));
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One tensor as the header describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
}

impl TensorEntry {
    /// Bytes of the tensor's data (`None` if the row length is not whole blocks or overflows).
    pub fn n_bytes(&self) -> Option<u64> {
        let ne0 = *self.dims.first().unwrap_or(&1);
        let rows: u64 = self.dims.iter().skip(1).product();
        let row = self.ty.row_bytes(usize::try_from(ne0).ok()?)? as u64;
        row.checked_mul(rows)
    }

    /// ggml's `ggml_n_dims`: trailing dimensions of size 1 are not written (at least one is).
    fn n_dims(&self) -> usize {
        let mut n = self.dims.len().min(MAX_DIMS as usize);
        while n > 1 && self.dims[n - 1] == 1 {
            n -= 1;
        }
        n.max(1)
    }
}

/// The layout of a GGUF file to be written: the header bytes and where each tensor's data
/// goes, relative to the start of the data section.
#[derive(Clone, Debug)]
pub struct Layout {
    pub header: Vec<u8>,
    pub offsets: Vec<u64>,
    pub sizes: Vec<u64>,
    pub alignment: u64,
}

impl Layout {
    /// Total file size.
    pub fn file_size(&self) -> u64 {
        let data: u64 = self
            .sizes
            .iter()
            .map(|&s| s.div_ceil(self.alignment) * self.alignment)
            .sum();
        self.header.len() as u64 + data
    }
}

/// Why a header cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("tensor '{0}': its shape is not a whole number of blocks of its type")]
    BadShape(String),
    #[error("tensor name '{0}' is longer than 63 bytes")]
    NameTooLong(String),
    #[error("alignment {0} is not a power of two")]
    BadAlignment(u64),
}

/// Build the header for `kv` and `tensors`. The alignment is `general.alignment` when `kv`
/// sets it, else 32.
pub fn layout(kv: &KvList, tensors: &[TensorEntry]) -> Result<Layout, WriteError> {
    let alignment = match kv.get("general.alignment") {
        Some(v) => {
            let a = v.as_i128().unwrap_or(0);
            let a = u64::try_from(a).unwrap_or(0);
            if a == 0 || !a.is_power_of_two() {
                return Err(WriteError::BadAlignment(a));
            }
            a
        }
        None => DEFAULT_ALIGNMENT,
    };
    let mut h = Vec::new();
    h.extend_from_slice(b"GGUF");
    h.extend_from_slice(&GGUF_VERSION.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    h.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (k, v) in kv.iter() {
        put_str(&mut h, k);
        put_value(&mut h, v);
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in tensors {
        if t.name.len() > 63 {
            return Err(WriteError::NameTooLong(t.name.clone()));
        }
        let size = t
            .n_bytes()
            .ok_or_else(|| WriteError::BadShape(t.name.clone()))?;
        put_str(&mut h, &t.name);
        let n_dims = t.n_dims();
        h.extend_from_slice(&(n_dims as u32).to_le_bytes());
        for &d in &t.dims[..n_dims.min(t.dims.len())] {
            h.extend_from_slice(&d.to_le_bytes());
        }
        for _ in t.dims.len()..n_dims {
            h.extend_from_slice(&1u64.to_le_bytes());
        }
        h.extend_from_slice(&t.ty.id().to_le_bytes());
        h.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        sizes.push(size);
        offset += size.div_ceil(alignment) * alignment;
    }
    while h.len() as u64 % alignment != 0 {
        h.push(0);
    }
    Ok(Layout {
        header: h,
        offsets,
        sizes,
        alignment,
    })
}

/// Write `data` followed by zeros up to the next multiple of `alignment`.
pub fn write_padded(w: &mut impl Write, data: &[u8], alignment: u64) -> io::Result<()> {
    w.write_all(data)?;
    let pad = (data.len() as u64).div_ceil(alignment) * alignment - data.len() as u64;
    w.write_all(&vec![0u8; pad as usize])
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn type_id(v: &Value) -> u32 {
    v.value_type() as u32
}

fn put_value(h: &mut Vec<u8>, v: &Value) {
    h.extend_from_slice(&type_id(v).to_le_bytes());
    put_payload(h, v);
}

fn put_payload(h: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => h.push(*x),
        Value::I8(x) => h.push(*x as u8),
        Value::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => h.push(*x as u8),
        Value::String(s) => put_str(h, s),
        Value::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => put_array(h, a),
    }
}

fn put_array(h: &mut Vec<u8>, a: &Array) {
    h.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    h.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                h.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => h.extend_from_slice(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Bool(v) => h.extend(v.iter().map(|&b| b as u8)),
        Array::String(v) => {
            for s in v {
                put_str(h, s);
            }
        }
        Array::Array(v) => {
            for inner in v {
                put_array(h, inner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::reader::parse;

    #[test]
    fn header_round_trips_through_the_reader() {
        let mut kv = KvList::new();
        kv.set("general.architecture", Value::String("llama".into()));
        kv.set("a.u32", Value::U32(7));
        kv.set(
            "a.list",
            Value::Array(Array::String(vec!["x".into(), "yz".into()])),
        );
        kv.set("a.flags", Value::Array(Array::Bool(vec![true, false])));
        kv.set("a.u32", Value::U32(8)); // moves to the end
        let tensors = vec![
            TensorEntry {
                name: "w".into(),
                ty: GgmlType::Q4_0,
                dims: vec![64, 3],
            },
            TensorEntry {
                name: "n".into(),
                ty: GgmlType::F32,
                dims: vec![5, 1],
            },
        ];
        let l = layout(&kv, &tensors).unwrap();
        assert_eq!(l.offsets, vec![0, 128]);
        assert_eq!(l.sizes, vec![108, 20]);
        let mut file = l.header.clone();
        write_padded(&mut file, &[1u8; 108], 32).unwrap();
        write_padded(&mut file, &[2u8; 20], 32).unwrap();
        assert_eq!(file.len() as u64, l.file_size());
        let h = parse(&file).unwrap();
        let keys: Vec<&str> = h.metadata.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["general.architecture", "a.list", "a.flags", "a.u32"]);
        assert_eq!(h.metadata.u64("a.u32").unwrap(), 8);
        assert_eq!(h.tensors[1].dims, vec![5]); // trailing 1 dropped, as ggml_n_dims does
        assert_eq!(h.tensors[1].offset, 128);
    }
}
