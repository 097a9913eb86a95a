//! Parse and validate a GGUF file from a memory map. Tensor data stays in the map (of the
//! file, or of a private copy: [`Hold`]): [`GgufFile::tensor_data`] lends slices of it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut};
use rllm_kernels::GgmlType;

use super::metadata::{Array, Metadata, Value, ValueType};
use super::GgufError;
use crate::error::{Error, Result};

pub const MAX_DIMS: u32 = 4;
pub const DEFAULT_ALIGNMENT: u64 = 32;
const MAGIC: &[u8; 4] = b"GGUF";
/// Longest tensor name ggml accepts, in bytes (`GGML_MAX_NAME` - 1).
const MAX_NAME_LEN: u64 = 63;
/// Arrays of arrays are allowed by the spec; cap the depth so a hostile file cannot recurse forever.
const MAX_ARRAY_DEPTH: usize = 8;

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// Dimensions in ggml order: `dims[0]` is the contiguous row length (ne0).
    pub dims: Vec<u64>,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: usize,
    /// Which file of a split model holds the data (0 for single-file models).
    pub shard: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row length (ne0) and number of rows (product of the other dims).
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = self.dims.first().copied().unwrap_or(1) as usize;
        let rows = self.dims.iter().skip(1).product::<u64>() as usize;
        (rows, cols)
    }
}

/// A validated GGUF model: header parsed into owned structures, tensor data left in the map.
/// A split model (`NAME-00001-of-0000N.gguf`, `split.*` keys) is opened through its first
/// file and reads as one: metadata from the first file, tensors from all of them.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset where tensor data begins in the first file.
    pub data_offset: u64,
    /// How the bytes are held: [`Hold::Map`] or [`Hold::Copy`].
    pub held: Hold,
    tensor_index: HashMap<String, usize>,
    shards: Vec<Shard>,
}

/// One mapped file of a (possibly split) model.
struct Shard {
    map: Mmap,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("n_files", &self.shards.len())
            .finish()
    }
}

/// How a model file's bytes are held in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hold {
    /// Map the file: no copy, pages shared with every process that maps it, read on demand.
    #[default]
    Map,
    /// Copy the file into private memory advised for transparent huge pages (Linux). Decode
    /// streams every weight once per token, and 2 MiB pages spare it the TLB misses of 4 KiB
    /// ones: 1B Q4_K_M / Q4_0 decode at 2 threads ran 5-12% faster on AMD Zen 4.
    Copy,
    /// [`Hold::Copy`] where the kernel offers transparent huge pages and the file takes at
    /// most half the available memory; otherwise [`Hold::Map`].
    Auto,
}

impl Hold {
    /// `Map` or `Copy` for a file of `len` bytes on this machine.
    fn resolve(self, len: usize) -> Hold {
        match self {
            Hold::Auto if copy_pays(len, huge_pages(), available_memory()) => Hold::Copy,
            Hold::Auto => Hold::Map,
            h => h,
        }
    }
}

/// Whether [`Hold::Auto`] copies a file of `len` bytes: only where huge pages make the copy
/// faster to read, and never so large that the copy could push the machine into swap.
fn copy_pays(len: usize, huge_pages: bool, available: Option<u64>) -> bool {
    huge_pages && available.is_some_and(|a| (len as u64).saturating_mul(2) <= a)
}

/// Whether `madvise(MADV_HUGEPAGE)` gets transparent huge pages here.
fn huge_pages() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"))
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = info.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    kib.trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(1024)
}

/// The first `len` bytes of `file` in private memory advised for huge pages. Read with
/// positioned `read` calls rather than copied from a map: no page faults on the file's side,
/// and its pages never count in this process's RSS. Up to 8 threads read whole 2 MiB pages
/// each: the kernel's zeroing of the new pages, most of the cost, spreads over cores.
fn copy_to_private(file: &File, len: usize) -> std::io::Result<Mmap> {
    const HUGE_PAGE: usize = 2 << 20;
    let mut copy = MmapMut::map_anon(len)?;
    #[cfg(target_os = "linux")]
    // Best effort: without transparent huge pages the copy is still correct.
    let _ = copy.advise(memmap2::Advice::HugePage);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let part = len.div_ceil(threads).div_ceil(HUGE_PAGE).max(1) * HUGE_PAGE;
    std::thread::scope(|s| {
        let reads: Vec<_> = copy
            .chunks_mut(part)
            .enumerate()
            .map(|(i, dst)| s.spawn(move || read_at(file, dst, (i * part) as u64)))
            .collect();
        reads
            .into_iter()
            .try_for_each(|r| r.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
    })?;
    copy.make_read_only()
}

/// Fill `buf` from `file` at byte `offset` (an error if the file ends first).
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Fill `buf` from `file` at byte `offset` (an error if the file ends first).
#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// The file at `path` held as `hold` says (resolved to `Map` or `Copy`), and its header.
fn map_and_parse(path: &Path, hold: Hold) -> Result<(Mmap, Hold, Header)> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    if file.metadata().map_err(io_err)?.is_dir() {
        return Err(io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a directory, not a GGUF file",
        )));
    }
    // SAFETY: the map is read-only. Another process truncating the file while it is mapped
    // would fault; that is the accepted contract of every mmap-based model loader.
    let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
    let header = parse(&map).map_err(|kind| Error::gguf(path, kind))?;
    // Copied after the header checks: a bad file fails before any copy is made.
    let hold = hold.resolve(map.len());
    let map = match hold {
        Hold::Copy => copy_to_private(&file, map.len()).map_err(io_err)?,
        _ => map,
    };
    Ok((map, hold, header))
}

/// `split.no` and `split.count` of a header, if it is part of a split model.
fn split_position(header: &Header) -> Result<Option<(u64, u64)>, GgufError> {
    let m = &header.metadata;
    if !m.contains("split.count") {
        return Ok(None);
    }
    let (no, count) = (m.u64("split.no")?, m.u64("split.count")?);
    if count == 0 || no >= count || count > 9999 {
        return Err(GgufError::InvalidValue {
            key: "split.no".into(),
            why: format!("file {no} of {count} is not a valid split position"),
        });
    }
    Ok(Some((no, count)).filter(|&(_, count)| count > 1))
}

/// The path of file `no` (0-based) of a split model whose first file is `first`
/// (llama.cpp's `PREFIX-%05d-of-%05d.gguf` naming).
fn split_path(first: &Path, no: u64, count: u64) -> Option<PathBuf> {
    let name = first.file_name()?.to_str()?;
    let suffix = format!("-00001-of-{count:05}.gguf");
    let prefix = name.strip_suffix(&suffix)?;
    Some(first.with_file_name(format!("{prefix}-{:05}-of-{count:05}.gguf", no + 1)))
}

impl GgufFile {
    /// Map `path` (and, for a split model, its other files) and validate every header and
    /// tensor table.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, Hold::Map)
    }

    /// [`GgufFile::open`], holding the bytes as `hold` says.
    pub fn open_with(path: impl AsRef<Path>, hold: Hold) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let (map, held, header) = map_and_parse(&path, hold)?;
        let err = |kind| Error::gguf(&path, kind);
        let split = split_position(&header).map_err(err)?;
        let mut tensors = header.tensors;
        let mut shards = vec![Shard {
            map,
            data_offset: header.data_offset,
        }];
        if let Some((no, count)) = split {
            if no != 0 {
                return Err(err(GgufError::InvalidValue {
                    key: "split.no".into(),
                    why: format!(
                        "this is file {} of a {count}-file model: open the first file",
                        no + 1
                    ),
                }));
            }
            for i in 1..count {
                let other = split_path(&path, i, count).ok_or_else(|| {
                    err(GgufError::InvalidValue {
                        key: "split.count".into(),
                        why: format!(
                            "a {count}-file model's first file must be named \
                             NAME-00001-of-{count:05}.gguf"
                        ),
                    })
                })?;
                let (map, _, h) = match map_and_parse(&other, held) {
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        return Err(err(GgufError::MissingShard {
                            no: i + 1,
                            count,
                            file: other,
                        }))
                    }
                    r => r?,
                };
                if split_position(&h).map_err(|k| Error::gguf(&other, k))? != Some((i, count)) {
                    return Err(Error::gguf(
                        &other,
                        GgufError::InvalidValue {
                            key: "split.no".into(),
                            why: format!("expected file {} of {count}", i + 1),
                        },
                    ));
                }
                tensors.extend(h.tensors.into_iter().map(|t| TensorInfo {
                    shard: shards.len(),
                    ..t
                }));
                shards.push(Shard {
                    map,
                    data_offset: h.data_offset,
                });
            }
        }
        let mut tensor_index = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if tensor_index.insert(t.name.clone(), i).is_some() {
                return Err(err(GgufError::DuplicateTensor(t.name.clone())));
            }
        }
        Ok(GgufFile {
            path,
            version: header.version,
            alignment: header.alignment,
            metadata: header.metadata,
            tensor_index,
            tensors,
            data_offset: header.data_offset,
            held,
            shards,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_position(name).map(|i| &self.tensors[i])
    }

    /// Index of the tensor called `name` in [`GgufFile::tensors`].
    pub fn tensor_position(&self, name: &str) -> Option<usize> {
        self.tensor_index.get(name).copied()
    }

    /// The bytes of a tensor, borrowed from its file's map. [`parse`] checked that every
    /// tensor of the table lies inside its file, so the slice cannot fail for them.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let shard = &self.shards[info.shard];
        let start = (shard.data_offset + info.offset) as usize;
        &shard.map[start..start + info.size]
    }

    /// Number of files of the model (1 unless split).
    pub fn n_files(&self) -> usize {
        self.shards.len()
    }

    /// The whole of the first mapped file.
    pub fn bytes(&self) -> &[u8] {
        &self.shards[0].map
    }

    /// An error about this file.
    pub fn error(&self, kind: GgufError) -> Error {
        Error::gguf(&self.path, kind)
    }
}

/// The parsed header of a GGUF file.
#[derive(Debug)]
pub struct Header {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub data_offset: u64,
}

/// Parse and validate the header of a GGUF file held in `buf`.
pub fn parse(buf: &[u8]) -> Result<Header, GgufError> {
    let mut r = Reader { buf, pos: 0 };
    let magic = r.bytes(4, "magic")?;
    if magic != MAGIC {
        let mut m = [0u8; 4];
        m.copy_from_slice(magic);
        return Err(GgufError::BadMagic(m));
    }
    let version = r.u32("version")?;
    match version {
        2 | 3 => {}
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => return Err(GgufError::BigEndian),
        v => return Err(GgufError::UnsupportedVersion(v)),
    }
    let n_tensors_at = r.pos as u64;
    let n_tensors = r.u64("tensor count")?;
    let n_kv_at = r.pos as u64;
    let n_kv = r.u64("metadata count")?;
    // Every key-value pair needs at least a key length, a type and one value byte;
    // every tensor info at least a name length, n_dims, type and offset.
    r.check_count(n_kv, 8 + 4 + 1, n_kv_at, "metadata count", "entries")?;
    r.check_count(
        n_tensors,
        8 + 4 + 4 + 8,
        n_tensors_at,
        "tensor count",
        "tensors",
    )?;

    let mut metadata = Metadata::default();
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let type_pos = r.pos;
        let id = r.u32(&format!("type of metadata key '{key}'"))?;
        let ty = ValueType::from_id(id).ok_or_else(|| {
            r.pos = type_pos;
            GgufError::UnknownValueType {
                key: key.clone(),
                id,
            }
        })?;
        let value = r.value(&key, ty, 0)?;
        metadata.insert(key, value)?;
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(_) => {
            let a = metadata.u64("general.alignment")?;
            if a == 0 || !a.is_power_of_two() {
                return Err(GgufError::BadAlignment(a));
            }
            a
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut seen = HashMap::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let info = r.tensor_info(alignment)?;
        if seen.insert(info.name.clone(), ()).is_some() {
            return Err(GgufError::DuplicateTensor(info.name));
        }
        tensors.push(info);
    }

    let data_offset = align_up(r.pos as u64, alignment);
    let file_len = buf.len() as u64;
    // A file whose tensors are all empty may end inside the padding before the data section;
    // it is still truncated, and a data offset past the end must never reach a slice.
    if !tensors.is_empty() && data_offset > file_len {
        return Err(GgufError::DataSectionOutsideFile {
            data_offset,
            alignment,
            len: file_len,
        });
    }
    let data_len = file_len.saturating_sub(data_offset);
    for t in &tensors {
        let end = t.offset.checked_add(t.size as u64);
        match end {
            Some(end) if end <= data_len => {}
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    name: t.name.clone(),
                    start: t.offset,
                    end: end.unwrap_or(u64::MAX),
                    len: data_len,
                })
            }
        }
    }
    check_no_overlap(&tensors)?;
    Ok(Header {
        version,
        alignment,
        metadata,
        tensors,
        data_offset,
    })
}

fn check_no_overlap(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
    order.sort_by_key(|t| t.offset);
    for w in order.windows(2) {
        if w[0].offset + w[0].size as u64 > w[1].offset {
            return Err(GgufError::OverlappingTensors {
                first: w[0].name.clone(),
                second: w[1].name.clone(),
            });
        }
    }
    Ok(())
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_owned(),
                offset: self.pos as u64,
                need: n,
                len: self.buf.len() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Fail early when `count` items of at least `min_size` bytes cannot fit in the rest of
    /// the file, so a corrupt count never turns into a huge allocation.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        offset: u64,
        what: &str,
        unit: &'static str,
    ) -> Result<(), GgufError> {
        match count.checked_mul(min_size) {
            Some(n) if n <= self.remaining() => Ok(()),
            _ => Err(GgufError::CountTooLarge {
                what: what.to_owned(),
                offset,
                count,
                unit,
            }),
        }
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len_pos = self.pos as u64;
        let len = self.u64(&format!("length of {what}"))?;
        if len > self.remaining() {
            return Err(GgufError::CountTooLarge {
                what: format!("{what} length"),
                offset: len_pos,
                count: len,
                unit: "bytes",
            });
        }
        let start = self.pos as u64;
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what.to_owned(),
            offset: start,
        })
    }

    fn value(&mut self, key: &str, ty: ValueType, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("value of metadata key '{key}'");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(&what())?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(&what())?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(&what())?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(&what())?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(&what())?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(&what())?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(&what())?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(&what())?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(&what())?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(&what())?)),
            ValueType::Bool => Value::Bool(self.bool(key)?),
            ValueType::String => Value::String(self.string(&what())?),
            ValueType::Array => Value::Array(self.array_value(key, depth)?),
        })
    }

    fn bool(&mut self, key: &str) -> Result<bool, GgufError> {
        match self.array::<1>(&format!("value of metadata key '{key}'"))?[0] {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(GgufError::InvalidBool {
                key: key.to_owned(),
                byte,
            }),
        }
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep {
                key: key.to_owned(),
                max: MAX_ARRAY_DEPTH,
            });
        }
        let id = self.u32(&format!("array type of metadata key '{key}'"))?;
        let ty = ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_owned(),
            id,
        })?;
        let count_pos = self.pos as u64;
        let n = self.u64(&format!("array length of metadata key '{key}'"))?;
        if n.checked_mul(ty.min_size())
            .is_none_or(|b| b > self.remaining())
        {
            return Err(GgufError::CountTooLarge {
                what: format!("array length of metadata key '{key}'"),
                offset: count_pos,
                count: n,
                unit: "elements",
            });
        }
        let n = n as usize;
        let what = format!("array of metadata key '{key}'");
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                const S: usize = std::mem::size_of::<$t>();
                let raw = self.bytes((n * S) as u64, &what)?;
                Array::$variant(
                    raw.chunks_exact(S)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of S bytes")))
                        .collect(),
                )
            }};
        }
        Ok(match ty {
            ValueType::U8 => Array::U8(self.bytes(n as u64, &what)?.to_vec()),
            ValueType::I8 => fixed!(I8, i8),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => {
                Array::Bool((0..n).map(|_| self.bool(key)).collect::<Result<_, _>>()?)
            }
            ValueType::String => Array::String(
                (0..n)
                    .map(|_| self.string(&format!("string in array of metadata key '{key}'")))
                    .collect::<Result<_, _>>()?,
            ),
            ValueType::Array => Array::Array(
                (0..n)
                    .map(|_| self.array_value(key, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    fn tensor_info(&mut self, alignment: u64) -> Result<TensorInfo, GgufError> {
        let name_pos = self.pos as u64;
        let name = self.string("tensor name")?;
        if name.len() as u64 > MAX_NAME_LEN {
            return Err(GgufError::NameTooLong {
                offset: name_pos,
                len: name.len() as u64,
            });
        }
        let n_dims = self.u32(&format!("dimension count of tensor '{name}'"))?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims { name, n_dims });
        }
        let dims = (0..n_dims)
            .map(|_| self.u64(&format!("dimensions of tensor '{name}'")))
            .collect::<Result<Vec<u64>, _>>()?;
        let id = self.u32(&format!("type of tensor '{name}'"))?;
        let ty = GgmlType::from_id(id).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            id,
        })?;
        let offset = self.u64(&format!("data offset of tensor '{name}'"))?;

        let bad_dims = || GgufError::BadDims {
            name: name.clone(),
            dims: dims.clone(),
        };
        // ggml keeps element counts in i64; stay below that so every product is representable.
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(bad_dims)?;
        let ne0 = dims.first().copied().unwrap_or(1);
        if ne0 % ty.block_size() as u64 != 0 {
            return Err(GgufError::NotBlockMultiple {
                name,
                ne0,
                ty,
                block: ty.block_size(),
            });
        }
        let size = (n_elements / ty.block_size() as u64)
            .checked_mul(ty.type_size() as u64)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(bad_dims)?;
        if offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                name,
                offset,
                alignment,
            });
        }
        Ok(TensorInfo {
            name,
            ty,
            dims,
            offset,
            size,
            shard: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal GGUF writer for tests.
    struct W(Vec<u8>);
    impl W {
        fn new(version: u32, n_tensors: u64, n_kv: u64) -> Self {
            let mut w = W(b"GGUF".to_vec());
            w.u32(version);
            w.u64(n_tensors);
            w.u64(n_kv);
            w
        }
        fn u32(&mut self, v: u32) {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        fn u64(&mut self, v: u64) {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        fn str(&mut self, s: &str) {
            self.u64(s.len() as u64);
            self.0.extend_from_slice(s.as_bytes());
        }
        fn pad(&mut self, a: usize) {
            while self.0.len() % a != 0 {
                self.0.push(0);
            }
        }
    }

    fn one_tensor_file(ty: GgmlType, dims: &[u64], offset: u64, data: usize) -> Vec<u8> {
        let mut w = one_tensor_header(ty, dims, offset);
        w.pad(32);
        w.0.extend(std::iter::repeat_n(0u8, data));
        w.0
    }

    /// The header of [`one_tensor_file`], without the padding that ends it.
    fn one_tensor_header(ty: GgmlType, dims: &[u64], offset: u64) -> W {
        let mut w = W::new(3, 1, 1);
        w.str("general.architecture");
        w.u32(8);
        w.str("llama");
        w.str("t");
        w.u32(dims.len() as u32);
        for &d in dims {
            w.u64(d);
        }
        w.u32(ty.id());
        w.u64(offset);
        w
    }

    /// A file in the temp folder holding `bytes`, opened; removed when the test ends.
    fn temp_file(name: &str, bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!("rllm-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn a_private_copy_holds_the_file_bytes() {
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let file = temp_file("copy", &bytes);
        let copy = copy_to_private(&file, bytes.len()).unwrap();
        assert_eq!(&copy[..], &bytes[..]);
        // From the start however far the file was read before.
        assert_eq!(&copy_to_private(&file, 10).unwrap()[..], &bytes[..10]);
        assert!(copy_to_private(&temp_file("empty", &[]), 0)
            .unwrap()
            .is_empty());
        // A file shorter than asked (truncated after it was checked) is an error, not garbage.
        assert!(copy_to_private(&temp_file("short", &bytes[..5]), 10).is_err());
    }

    #[test]
    fn auto_copies_only_with_huge_pages_and_room() {
        let gib = 1u64 << 30;
        assert!(copy_pays(1 << 30, true, Some(2 * gib)));
        assert!(!copy_pays(1 << 30, true, Some(2 * gib - 1)));
        assert!(!copy_pays(1 << 20, false, Some(64 * gib)));
        assert!(!copy_pays(1 << 20, true, None));
        assert_eq!(Hold::Map.resolve(1), Hold::Map);
        assert_eq!(Hold::Copy.resolve(usize::MAX), Hold::Copy);
        assert_ne!(Hold::Auto.resolve(1), Hold::Auto);
    }

    #[test]
    fn parses_a_valid_file() {
        let buf = one_tensor_file(GgmlType::Q4_0, &[64, 2], 0, 72);
        let h = parse(&buf).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.metadata.str("general.architecture").unwrap(), "llama");
        assert_eq!(h.tensors[0].size, 72);
        assert_eq!(h.tensors[0].rows_cols(), (2, 64));
    }

    #[test]
    fn rejects_bad_headers() {
        assert!(matches!(
            parse(b"GGUX\x03\0\0\0"),
            Err(GgufError::BadMagic(_))
        ));
        assert!(matches!(
            parse(b"GGUF\x01\0\0\0"),
            Err(GgufError::UnsupportedVersion(1))
        ));
        assert!(matches!(
            parse(b"GGUF\0\0\0\x03"),
            Err(GgufError::BigEndian)
        ));
        assert!(matches!(parse(b"GGU"), Err(GgufError::Truncated { .. })));
        let mut w = W::new(3, 0, u64::MAX / 2);
        w.u32(0);
        assert!(matches!(parse(&w.0), Err(GgufError::CountTooLarge { .. })));
    }

    #[test]
    fn rejects_bad_tensors() {
        let not_multiple = one_tensor_file(GgmlType::Q4_0, &[33, 2], 0, 72);
        assert!(matches!(
            parse(&not_multiple),
            Err(GgufError::NotBlockMultiple { .. })
        ));
        let outside = one_tensor_file(GgmlType::Q4_0, &[64, 2], 32, 72);
        assert!(matches!(
            parse(&outside),
            Err(GgufError::TensorOutOfBounds { .. })
        ));
        let misaligned = one_tensor_file(GgmlType::F32, &[4], 4, 64);
        assert!(matches!(
            parse(&misaligned),
            Err(GgufError::MisalignedTensor { .. })
        ));
        let overflow = one_tensor_file(GgmlType::F32, &[u64::MAX, 2], 0, 64);
        assert!(matches!(parse(&overflow), Err(GgufError::BadDims { .. })));
        let too_many = one_tensor_file(GgmlType::F32, &[1, 1, 1, 1, 1], 0, 64);
        assert!(matches!(
            parse(&too_many),
            Err(GgufError::TooManyDims { .. })
        ));
    }

    #[test]
    fn rejects_a_file_ending_inside_the_padding() {
        // An empty tensor at the end of a complete file is valid ...
        let whole = one_tensor_file(GgmlType::F32, &[0, 4], 0, 0);
        assert_eq!(parse(&whole).unwrap().tensors[0].size, 0);
        // ... but cut inside the padding, the data section would start past the end.
        let mut cut = one_tensor_header(GgmlType::F32, &[0, 4], 0).0;
        assert_ne!(cut.len() % 32, 0, "the header needs padding");
        cut.push(0);
        assert!(matches!(
            parse(&cut),
            Err(GgufError::DataSectionOutsideFile { data_offset, len, .. })
                if data_offset > len
        ));
    }

    /// A small deterministic fuzzer (no cargo-fuzz needed, so it runs in CI): byte flips,
    /// plausible counts and truncations of a valid header never panic the parser, including
    /// on overflow, which debug builds check.
    #[test]
    fn parse_never_panics_on_mutations() {
        let mut valid = W::new(3, 1, 2);
        valid.str("general.alignment");
        valid.u32(4); // u32
        valid.u32(64);
        valid.str("a");
        valid.u32(9); // an array
        valid.u32(8); // of strings
        valid.u64(2);
        valid.str("x");
        valid.str("yz");
        valid.str("t");
        valid.u32(2);
        valid.u64(64);
        valid.u64(2);
        valid.u32(GgmlType::Q8_0.id());
        valid.u64(0);
        valid.pad(64);
        valid.0.extend(std::iter::repeat_n(1u8, 136));
        parse(&valid.0).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut buf = valid.0.clone();
            for _ in 0..1 + next() % 4 {
                let pos = (next() % buf.len() as u64) as usize;
                match next() % 3 {
                    0 => buf[pos] = next() as u8,
                    1 => {
                        let v = 1u64 << (next() % 64);
                        let end = (pos + 8).min(buf.len());
                        buf[pos..end].copy_from_slice(&v.to_le_bytes()[..end - pos]);
                    }
                    _ => buf.truncate(pos),
                }
                if buf.is_empty() {
                    break;
                }
            }
            if let Ok(h) = parse(&buf) {
                for t in &h.tensors {
                    let start = (h.data_offset + t.offset) as usize;
                    assert!(start + t.size <= buf.len(), "{t:?} outside {}", buf.len());
                }
            }
        }
    }

    #[test]
    fn reads_nested_arrays_and_rejects_invalid_utf8() {
        let mut w = W::new(3, 0, 1);
        w.str("a");
        w.u32(9); // array
        w.u32(9); // of arrays
        w.u64(2);
        for _ in 0..2 {
            w.u32(8); // of strings
            w.u64(1);
            w.str("x");
        }
        let h = parse(&w.0).unwrap();
        let Value::Array(Array::Array(inner)) = h.metadata.get("a").unwrap() else {
            panic!("expected nested array")
        };
        assert_eq!(inner.len(), 2);

        let mut w = W::new(3, 0, 1);
        w.u64(2);
        w.0.extend_from_slice(&[0xff, 0xfe]);
        w.u32(4);
        w.u32(0);
        assert!(matches!(parse(&w.0), Err(GgufError::InvalidUtf8 { .. })));
    }
}
