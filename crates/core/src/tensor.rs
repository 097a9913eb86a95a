//! Typed views of weights. Matrices stay in the memory map, as byte ranges resolved against
//! the model's file at compute time; small vectors (norms, biases) are read into `Vec<f32>`.

use rllm_kernels::gemm::Gemm;
use rllm_kernels::{DotKernel, GgmlType};

use crate::error::Result;
use crate::gguf::{GgufError, GgufFile, TensorInfo};

/// A 2-D weight `[rows, cols]` (ggml: ne0 = cols) kept in the file's map.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// The tensor's place in its file.
    info: TensorInfo,
    pub kernel: DotKernel,
    /// The prompt-sized product, where the type and tier have one.
    pub gemm: Option<Gemm>,
}

impl Matrix {
    /// This matrix's bytes, in the model's map.
    #[inline]
    pub fn data<'a>(&self, file: &'a GgufFile) -> &'a [u8] {
        file.tensor_data(&self.info)
    }

    /// Bytes of the whole matrix.
    pub fn byte_len(&self) -> usize {
        self.info.size
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.info.size / self.rows
    }

    /// Row `r` dequantized into `out` (len `cols`).
    pub fn dequantize_row(&self, file: &GgufFile, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        let data = self.data(file);
        rllm_kernels::dequantize_row(self.ty, &data[r * rb..(r + 1) * rb], out);
    }
}

/// Looks up tensors by name with shape checks, and records which ones were used so the loader
/// can reject files with tensors it does not understand.
pub struct TensorLoader<'a> {
    pub file: &'a GgufFile,
    used: Vec<bool>,
}

impl<'a> TensorLoader<'a> {
    pub fn new(file: &'a GgufFile) -> Self {
        TensorLoader {
            file,
            used: vec![false; file.tensors.len()],
        }
    }

    fn find(&mut self, name: &str) -> Option<&'a TensorInfo> {
        let idx = self.file.tensor_position(name)?;
        self.used[idx] = true;
        Some(&self.file.tensors[idx])
    }

    fn check_shape(&self, t: &TensorInfo, expected: &[u64]) -> Result<()> {
        if t.dims != expected {
            return Err(self.file.error(GgufError::WrongShape {
                name: t.name.clone(),
                expected: expected.to_vec(),
                got: t.dims.clone(),
            }));
        }
        Ok(())
    }

    /// A required matrix of `rows` rows of `cols` elements.
    pub fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        self.opt_matrix(name, rows, cols)?
            .ok_or_else(|| self.file.error(GgufError::MissingTensor(name.to_owned())))
    }

    pub fn opt_matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Option<Matrix>> {
        let Some(t) = self.find(name) else {
            return Ok(None);
        };
        self.check_shape(t, &[cols as u64, rows as u64])?;
        let kernel = rllm_kernels::dot_kernel(t.ty).ok_or_else(|| {
            self.file.error(GgufError::UnsupportedTensorType {
                name: name.to_owned(),
                ty: t.ty,
            })
        })?;
        Ok(Some(Matrix {
            name: name.to_owned(),
            ty: t.ty,
            rows,
            cols,
            info: t.clone(),
            kernel,
            gemm: Gemm::new(t.ty, kernel.isa),
        }))
    }

    /// A required 1-D tensor of `n` elements, read as f32.
    pub fn vector(&mut self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.opt_vector(name, n)?
            .ok_or_else(|| self.file.error(GgufError::MissingTensor(name.to_owned())))
    }

    pub fn opt_vector(&mut self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        let Some(t) = self.find(name) else {
            return Ok(None);
        };
        self.check_shape(t, &[n as u64])?;
        if !rllm_kernels::supports(t.ty) {
            return Err(self.file.error(GgufError::UnsupportedTensorType {
                name: name.to_owned(),
                ty: t.ty,
            }));
        }
        let mut v = vec![0.0; n];
        rllm_kernels::dequantize_row(t.ty, self.file.tensor_data(t), &mut v);
        Ok(Some(v))
    }

    /// Fails if the file holds tensors that no `matrix`/`vector` call asked for.
    pub fn finish(self, arch: &str) -> Result<()> {
        match self.used.iter().position(|u| !u) {
            None => Ok(()),
            Some(i) => Err(self.file.error(GgufError::UnusedTensor {
                name: self.file.tensors[i].name.clone(),
                arch: arch.to_owned(),
            })),
        }
    }
}
