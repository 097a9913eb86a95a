//! Per-layer key/value storage in f16, as llama.cpp keeps it by default. Keys are stored per
//! KV head by position (`[n_head_kv, n_ctx, head_dim]`), values transposed (`[kv_dim, n_ctx]`)
//! as llama.cpp does without flash attention: both products of attention then stream
//! contiguous f16 memory.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rllm_kernels::pool::{chunks, ThreadPool};

use crate::forward::PAR_ROWS;

/// Keys and values of every layer.
pub struct KvCache {
    pub n_ctx: usize,
    pub kv_dim: usize,
    pub head_dim: usize,
    /// `[n_layer, n_head_kv, n_ctx, head_dim]`
    k: Vec<f16>,
    /// `[n_layer, kv_dim, n_ctx]`
    vt: Vec<f16>,
}

/// One layer's keys and values.
pub struct KvLayer<'a> {
    n_ctx: usize,
    head_dim: usize,
    k: &'a [f16],
    vt: &'a [f16],
}

impl KvLayer<'_> {
    /// Key of KV head `head` at position `pos`, as f16 bytes.
    #[inline]
    pub fn key(&self, head: usize, pos: usize) -> &[u8] {
        let start = (head * self.n_ctx + pos) * self.head_dim;
        bytemuck::cast_slice(&self.k[start..start + self.head_dim])
    }

    /// Keys of KV head `head` at positions `positions`, as consecutive f16 rows.
    #[inline]
    pub fn keys(&self, head: usize, positions: std::ops::RangeInclusive<usize>) -> &[u8] {
        let (first, last) = (*positions.start(), *positions.end());
        let start = (head * self.n_ctx + first) * self.head_dim;
        let end = (head * self.n_ctx + last + 1) * self.head_dim;
        bytemuck::cast_slice(&self.k[start..end])
    }

    /// Value dimensions `dims` at positions `positions`, as f16 bytes: the bytes from the
    /// first dimension's first position to the last one's last, and the stride in bytes
    /// between dimensions (for `DotKernel::dot_rows_strided`).
    pub fn value_dims(
        &self,
        dims: std::ops::Range<usize>,
        positions: std::ops::RangeInclusive<usize>,
    ) -> (&[u8], usize) {
        let (first, last) = (*positions.start(), *positions.end());
        let start = dims.start * self.n_ctx + first;
        let end = (dims.end - 1) * self.n_ctx + last + 1;
        (bytemuck::cast_slice(&self.vt[start..end]), 2 * self.n_ctx)
    }
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, n_head_kv: usize, head_dim: usize) -> Self {
        let kv_dim = n_head_kv * head_dim;
        let n = n_layer * n_ctx * kv_dim;
        KvCache {
            n_ctx,
            kv_dim,
            head_dim,
            k: vec![f16::ZERO; n],
            vt: vec![f16::ZERO; n],
        }
    }

    fn layer_range(&self, layer: usize) -> std::ops::Range<usize> {
        let n = self.n_ctx * self.kv_dim;
        layer * n..(layer + 1) * n
    }

    pub fn layer(&self, layer: usize) -> KvLayer<'_> {
        let r = self.layer_range(layer);
        KvLayer {
            n_ctx: self.n_ctx,
            head_dim: self.head_dim,
            k: &self.k[r.clone()],
            vt: &self.vt[r],
        }
    }

    /// Store rows `k` and `v` (`[m, kv_dim]`) at positions `pos0..pos0 + m` of `layer`: in
    /// parallel over KV heads (keys) and dimensions (values) for prompts, where a serial store
    /// would hold every other thread up.
    pub fn store(&mut self, pool: &ThreadPool, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let (d, hd, n_ctx) = (self.kv_dim, self.head_dim, self.n_ctx);
        let m = k.len() / d;
        let r = self.layer_range(layer);
        let store_keys = |heads: std::ops::Range<usize>, rows: &mut [f16]| {
            for (g, dst) in heads.zip(rows.chunks_exact_mut(n_ctx * hd)) {
                let dst = &mut dst[pos0 * hd..(pos0 + m) * hd];
                for (row, out) in k.chunks_exact(d).zip(dst.chunks_exact_mut(hd)) {
                    out.convert_from_f32_slice(&row[g * hd..(g + 1) * hd]);
                }
            }
        };
        let store_values = |dims: std::ops::Range<usize>, rows: &mut [f16]| {
            for (i, dst) in dims.zip(rows.chunks_exact_mut(n_ctx)) {
                for (o, row) in dst[pos0..pos0 + m].iter_mut().zip(v.chunks_exact(d)) {
                    *o = f16::from_f32(row[i]);
                }
            }
        };
        let (keys, values) = (&mut self.k[r.clone()], &mut self.vt[r]);
        if m >= PAR_ROWS {
            pool.split(chunks(keys, n_ctx * hd), store_keys);
            pool.split(chunks(values, n_ctx), store_values);
        } else {
            store_keys(0..d / hd, keys);
            store_values(0..d, values);
        }
    }

    /// Drop positions `n_keep..n_keep + n_discard` of the first `n_past` and slide the later
    /// ones down; `rerotate` moves each key row from its old position to its new one.
    pub fn shift(
        &mut self,
        n_layer: usize,
        n_keep: usize,
        n_discard: usize,
        n_past: usize,
        mut rerotate: impl FnMut(usize, &mut [f32]),
    ) {
        let (d, hd, n_ctx) = (self.kv_dim, self.head_dim, self.n_ctx);
        let mut row = vec![0.0f32; hd];
        for layer in 0..n_layer {
            let base = self.layer_range(layer).start;
            for g in 0..d / hd {
                let head = base + g * n_ctx * hd;
                for p in n_keep + n_discard..n_past {
                    let (src, dst) = (head + p * hd, head + (p - n_discard) * hd);
                    self.k[src..src + hd].convert_to_f32_slice(&mut row);
                    rerotate(layer, &mut row);
                    self.k[dst..dst + hd].convert_from_f32_slice(&row);
                }
            }
            for i in 0..d {
                let r = base + i * n_ctx;
                self.vt
                    .copy_within(r + n_keep + n_discard..r + n_past, r + n_keep);
            }
        }
    }

    /// Keys (by head, then position) then values (by dimension) of positions `0..n` of every
    /// layer, as little-endian f16 bytes.
    pub fn write_state(&self, n_layer: usize, n: usize, out: &mut Vec<u8>) {
        let (d, hd, n_ctx) = (self.kv_dim, self.head_dim, self.n_ctx);
        for layer in 0..n_layer {
            let base = self.layer_range(layer).start;
            let keys = (0..d / hd).flat_map(|g| {
                let head = base + g * n_ctx * hd;
                &self.k[head..head + n * hd]
            });
            let values = (0..d).flat_map(|i| &self.vt[base + i * n_ctx..base + i * n_ctx + n]);
            for x in keys.chain(values) {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }

    /// The inverse of [`KvCache::write_state`]; `data` must hold exactly that many bytes.
    pub fn read_state(&mut self, n_layer: usize, n: usize, data: &[u8]) {
        let (d, hd, n_ctx) = (self.kv_dim, self.head_dim, self.n_ctx);
        let mut values = data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]));
        for layer in 0..n_layer {
            let base = self.layer_range(layer).start;
            for g in 0..d / hd {
                let head = base + g * n_ctx * hd;
                for (x, v) in self.k[head..head + n * hd].iter_mut().zip(&mut values) {
                    *x = v;
                }
            }
            for i in 0..d {
                let row = &mut self.vt[base + i * n_ctx..base + i * n_ctx + n];
                for (x, v) in row.iter_mut().zip(&mut values) {
                    *x = v;
                }
            }
        }
    }

    pub fn bytes(&self) -> usize {
        (self.k.len() + self.vt.len()) * std::mem::size_of::<f16>()
    }
}
