//! `rllm quantize`: rewrite a GGUF file with its weights in another type, choosing each
//! tensor's type the way llama-quantize does (its presets, the per-tensor mixtures of the K
//! presets, and the fallbacks for rows that are not whole 256-blocks), so that the output is
//! byte-identical to llama-quantize's for the same input and options.
//! Spec: llama.cpp `src/llama-quant.cpp` (`llama_tensor_get_type`, `llama_model_quantize_impl`),
//! `tools/quantize/quantize.cpp` (preset names, imatrix keys), `include/llama.h` (`llama_ftype`).

mod select;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rllm_kernels::blocks::{can_dequantize, can_quantize, dequantize_row};
use rllm_kernels::GgmlType;

use crate::error::{Error, Result};
use crate::gguf::writer::{layout, write_padded, KvList, TensorEntry};
use crate::gguf::{Array, GgufError, GgufFile, TensorInfo, Value};

pub use select::{Ftype, PRESETS};

/// llama.cpp's `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// Options of one quantization, named as llama-quantize's flags.
#[derive(Clone, Debug)]
pub struct QuantizeParams {
    /// The preset (`--` positional `TYPE`); `None` means COPY: keep every tensor's type.
    pub ftype: Option<Ftype>,
    /// `--allow-requantize`: accept input tensors that are already quantized.
    pub allow_requantize: bool,
    /// `--pure`: every quantizable tensor gets the preset's base type (fallbacks still apply).
    pub pure: bool,
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--leave-output-tensor`: keep `output.weight` as it is.
    pub leave_output_tensor: bool,
    /// An importance matrix (`--imatrix`).
    pub imatrix: Option<Imatrix>,
    /// Threads (`-t`); `None` uses the current rayon pool.
    pub n_threads: Option<usize>,
}

impl QuantizeParams {
    pub fn new(ftype: Option<Ftype>) -> Self {
        QuantizeParams {
            ftype,
            allow_requantize: false,
            pure: false,
            output_tensor_type: None,
            token_embedding_type: None,
            leave_output_tensor: false,
            imatrix: None,
            n_threads: None,
        }
    }
}

/// llama.cpp's importance matrix: per weight name, one mean squared activation per column
/// (per expert for 3-D weights).
#[derive(Clone, Debug, Default)]
pub struct Imatrix {
    /// The file it was read from, as given (written to `quantize.imatrix.file`).
    pub file: String,
    pub entries: HashMap<String, Vec<f32>>,
    pub datasets: Vec<String>,
    pub chunk_count: u32,
}

impl Imatrix {
    /// Read an imatrix GGUF (`general.type = imatrix`, tensors `<name>.in_sum2` and
    /// `<name>.counts`), normalizing the sums by the counts as llama-quantize does.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let f = GgufFile::open(path)?;
        let bad = |name: &str, why: String| {
            f.error(GgufError::BadTensor {
                name: name.to_owned(),
                why,
            })
        };
        let mut entries = HashMap::new();
        for t in &f.tensors {
            let Some(name) = t.name.strip_suffix(".in_sum2") else {
                continue;
            };
            let counts_name = format!("{name}.counts");
            let counts = f
                .tensor(&counts_name)
                .ok_or_else(|| f.error(GgufError::MissingTensor(counts_name.clone())))?;
            for u in [t, counts] {
                if u.ty != GgmlType::F32 {
                    return Err(bad(
                        &u.name,
                        format!("imatrix tensors must be F32, not {}", u.ty),
                    ));
                }
            }
            let sums = f32s(f.tensor_data(t));
            let counts = f32s(f.tensor_data(counts));
            if counts.is_empty() || sums.len() % counts.len() != 0 {
                return Err(bad(
                    &t.name,
                    format!(
                        "{} sums do not split into the {} experts of '{counts_name}'",
                        sums.len(),
                        counts.len()
                    ),
                ));
            }
            let ne0 = sums.len() / counts.len();
            let mut e = vec![1f32; sums.len()];
            for (j, &c) in counts.iter().enumerate() {
                if c > 0.0 {
                    for i in 0..ne0 {
                        e[j * ne0 + i] = sums[j * ne0 + i] / c;
                    }
                }
            }
            if e.iter().any(|v| !v.is_finite()) {
                return Err(bad(&t.name, "holds a non-finite value".into()));
            }
            entries.insert(name.to_owned(), e);
        }
        if entries.is_empty() {
            return Err(f.error(GgufError::NotImatrix));
        }
        let datasets = match f.metadata.get("imatrix.datasets") {
            Some(Value::Array(Array::String(v))) => v.clone(),
            _ => Vec::new(),
        };
        let chunk_count = f.metadata.u64("imatrix.chunk_count").unwrap_or(0) as u32;
        Ok(Imatrix {
            file: path.display().to_string(),
            entries,
            datasets,
            chunk_count,
        })
    }
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// What happens to one tensor.
#[derive(Clone, Debug)]
pub struct TensorPlan {
    pub name: String,
    /// ggml order.
    pub dims: Vec<u64>,
    pub old_type: GgmlType,
    pub new_type: GgmlType,
    pub old_bytes: u64,
    pub new_bytes: u64,
    /// Set when the row length forced a type other than the one the preset chose.
    pub fallback_from: Option<GgmlType>,
}

/// The plan and totals of a finished (or planned) quantization.
#[derive(Clone, Debug)]
pub struct Summary {
    pub tensors: Vec<TensorPlan>,
    /// `general.file_type` written.
    pub file_type: u32,
    pub n_elements: u64,
    pub old_bytes: u64,
    pub new_bytes: u64,
    pub n_fallback: usize,
}

/// Decide every tensor's type and the output header; fail before anything is written if the
/// options cannot be honoured (requantization refused, a type without a quantizer, ...).
pub fn plan(input: &GgufFile, params: &QuantizeParams) -> Result<(Summary, KvList)> {
    let bad = |msg: String| Error::InvalidArgument(msg);
    let info = select::ModelInfo::from_file(input)?;
    let order = select::llama_order(input);
    let mut sel = select::Selector::new(&info, params, &order, input);
    let mut tensors = Vec::with_capacity(order.len());
    for &i in &order {
        let t = &input.tensors[i];
        let (new_type, fallback_from) = sel.target_type(t)?;
        let entry = TensorEntry {
            name: t.name.clone(),
            ty: new_type,
            dims: t.dims.clone(),
        };
        let new_bytes = entry.n_bytes().ok_or_else(|| {
            bad(format!(
                "tensor '{}': shape {:?} does not fit {new_type}",
                t.name, t.dims
            ))
        })?;
        if new_type != t.ty {
            if t.ty.is_quantized() && !params.allow_requantize {
                return Err(bad(format!(
                    "tensor '{}' is already quantized ({}); requantizing from {} is disabled \
                     (pass --allow-requantize to allow it)",
                    t.name, t.ty, t.ty
                )));
            }
            if !can_dequantize(t.ty) {
                return Err(bad(format!(
                    "tensor '{}': cannot read type {}",
                    t.name, t.ty
                )));
            }
            if !can_quantize(new_type) {
                return Err(bad(format!(
                    "tensor '{}': rllm has no quantizer for {new_type}",
                    t.name
                )));
            }
            sel.check_imatrix(t, new_type)?;
            check_imatrix_size(params.imatrix.as_ref(), t)?;
        }
        tensors.push(TensorPlan {
            name: t.name.clone(),
            dims: t.dims.clone(),
            old_type: t.ty,
            new_type,
            old_bytes: t.size as u64,
            new_bytes,
            fallback_from,
        });
    }
    let file_type = match params.ftype {
        Some(f) => f.id(),
        None => select::input_ftype(input),
    };
    let mut kv = KvList::new();
    for (k, v) in input.metadata.iter() {
        kv.set(k, v.clone());
    }
    kv.set(
        "general.quantization_version",
        Value::U32(QUANTIZATION_VERSION),
    );
    kv.set("general.file_type", Value::U32(file_type));
    for k in ["split.no", "split.count", "split.tensors.count"] {
        kv.remove(k);
    }
    if let Some(im) = &params.imatrix {
        let trunc = |s: &str| s.chars().take(127).collect::<String>();
        kv.set("quantize.imatrix.file", Value::String(trunc(&im.file)));
        if let Some(d) = im.datasets.first() {
            kv.set("quantize.imatrix.dataset", Value::String(trunc(d)));
        }
        kv.set(
            "quantize.imatrix.entries_count",
            Value::U32(im.entries.len() as u32),
        );
        if im.chunk_count > 0 {
            kv.set("quantize.imatrix.chunks_count", Value::U32(im.chunk_count));
        }
    }
    let summary = Summary {
        n_elements: input.tensors.iter().map(|t| t.n_elements()).sum(),
        old_bytes: tensors.iter().map(|t| t.old_bytes).sum(),
        new_bytes: tensors.iter().map(|t| t.new_bytes).sum(),
        n_fallback: tensors.iter().filter(|t| t.fallback_from.is_some()).count(),
        file_type,
        tensors,
    };
    Ok((summary, kv))
}

/// The importance matrix of `t`, if any, holds one value per column of each expert
/// (llama-quantize's "imatrix size ... is different from tensor size" check, made before
/// anything is written and naming the imatrix file).
fn check_imatrix_size(imatrix: Option<&Imatrix>, t: &TensorInfo) -> Result<()> {
    let Some((im, m)) = imatrix.and_then(|im| Some((im, im.entries.get(&t.name)?))) else {
        return Ok(());
    };
    let n_cols = t.dims.first().copied().unwrap_or(1);
    let n_experts: u64 = t.dims.iter().skip(2).product();
    let expected = n_cols.checked_mul(n_experts);
    if expected != Some(m.len() as u64) {
        return Err(Error::gguf(
            &im.file,
            GgufError::BadTensor {
                name: format!("{}.in_sum2", t.name),
                why: format!(
                    "{} values, but the model's tensor of shape {:?} needs {}",
                    m.len(),
                    t.dims,
                    n_cols.saturating_mul(n_experts)
                ),
            },
        ));
    }
    Ok(())
}

/// Where the output goes until it is complete: a hidden file beside `out`.
fn temp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out.gguf".into());
    out.with_file_name(format!(".{name}.rllm-tmp-{}", std::process::id()))
}

/// Quantize `input` into `output` on the current rayon pool. `progress(i, n, tensor)` is called
/// after each tensor is written; returning `false` cancels. The output appears only when
/// complete: data goes to a temporary file beside it, renamed at the end and removed on any
/// error or cancellation.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    params: &QuantizeParams,
    progress: &mut dyn FnMut(usize, usize, &TensorPlan) -> bool,
) -> Result<Summary> {
    let file = GgufFile::open(input)?;
    if let (Ok(a), Ok(b)) = (input.canonicalize(), output.canonicalize()) {
        if a == b {
            return Err(Error::InvalidArgument(format!(
                "input and output are the same file: {}",
                input.display()
            )));
        }
    }
    let (summary, kv) = plan(&file, params)?;
    let tmp = temp_path(output);
    let pool = match params.n_threads {
        Some(n) => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| Error::InvalidArgument(format!("cannot start {n} threads: {e}")))?,
        ),
        None => None,
    };
    let result = write_all(&file, &summary, &kv, params, pool.as_ref(), &tmp, progress);
    match result {
        Ok(()) => std::fs::rename(&tmp, output).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            Error::Io {
                path: output.to_path_buf(),
                source,
            }
        })?,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    Ok(summary)
}

fn write_all(
    file: &GgufFile,
    summary: &Summary,
    kv: &KvList,
    params: &QuantizeParams,
    pool: Option<&rayon::ThreadPool>,
    tmp: &Path,
    progress: &mut dyn FnMut(usize, usize, &TensorPlan) -> bool,
) -> Result<()> {
    let io_err = |source| Error::Io {
        path: tmp.to_path_buf(),
        source,
    };
    let entries: Vec<TensorEntry> = summary
        .tensors
        .iter()
        .map(|t| TensorEntry {
            name: t.name.clone(),
            ty: t.new_type,
            dims: t.dims.clone(),
        })
        .collect();
    let lay = layout(kv, &entries).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let mut w = BufWriter::with_capacity(1 << 20, File::create(tmp).map_err(io_err)?);
    w.write_all(&lay.header).map_err(io_err)?;
    let n = summary.tensors.len();
    for (i, t) in summary.tensors.iter().enumerate() {
        let info = file
            .tensor(&t.name)
            .ok_or_else(|| Error::InvalidArgument(format!("tensor '{}' vanished", t.name)))?;
        let src = file.tensor_data(info);
        if t.new_type == t.old_type {
            write_padded(&mut w, src, lay.alignment).map_err(io_err)?;
        } else {
            let imatrix = params
                .imatrix
                .as_ref()
                .and_then(|m| m.entries.get(&t.name))
                .map(Vec::as_slice);
            let data = match pool {
                Some(p) => p.install(|| convert(t, src, imatrix))?,
                None => convert(t, src, imatrix)?,
            };
            write_padded(&mut w, &data, lay.alignment).map_err(io_err)?;
        }
        if !progress(i + 1, n, t) {
            return Err(Error::InvalidArgument("quantization cancelled".into()));
        }
    }
    w.flush().map_err(io_err)?;
    w.into_inner()
        .map_err(|e| io_err(e.into_error()))?
        .sync_all()
        .map_err(io_err)
}

/// Dequantize a tensor to f32 and quantize it to its new type, in parallel over rows.
fn convert(t: &TensorPlan, src: &[u8], imatrix: Option<&[f32]>) -> Result<Vec<u8>> {
    let n_cols = t.dims.first().copied().unwrap_or(1) as usize;
    let n_rows: usize = t.dims.iter().skip(1).product::<u64>() as usize;
    let rows_per_expert = t.dims.get(1).copied().unwrap_or(1).max(1) as usize;
    let in_row = t.old_type.row_bytes(n_cols).unwrap_or(0);
    let out_row = t.new_type.row_bytes(n_cols).unwrap_or(0);
    if n_rows == 0 || in_row == 0 || out_row == 0 {
        // An empty tensor (some dimension is 0): nothing to convert, and chunks of 0 bytes
        // would not be chunks.
        return Ok(Vec::new());
    }
    if let Some(m) = imatrix {
        // plan() checked the size against the imatrix file; one row of values per expert.
        let n_experts = t.dims.iter().skip(2).product::<u64>() as usize;
        if m.len() != n_cols * n_experts {
            return Err(Error::InvalidArgument(format!(
                "imatrix size {} is different from tensor size {} for {}",
                m.len(),
                n_cols * n_experts,
                t.name
            )));
        }
    }
    let mut out = vec![0u8; n_rows * out_row];
    // Rows in chunks so each task converts a few thousand values at a time.
    let per_task = (32768 / n_cols.max(1)).max(1);
    out.par_chunks_mut(out_row * per_task)
        .zip(src.par_chunks(in_row * per_task))
        .enumerate()
        .for_each(|(c, (o, s))| {
            let mut row = vec![0f32; n_cols];
            for (k, (or, sr)) in o
                .chunks_exact_mut(out_row)
                .zip(s.chunks_exact(in_row))
                .enumerate()
            {
                dequantize_row(t.old_type, sr, &mut row);
                let r = c * per_task + k;
                let qw = imatrix.map(|m| {
                    let e = r / rows_per_expert;
                    &m[e * n_cols..(e + 1) * n_cols]
                });
                rllm_kernels::blocks::quantize_row(t.new_type, &row, or, qw);
            }
        });
    Ok(out)
}
