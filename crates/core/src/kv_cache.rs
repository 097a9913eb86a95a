//! Per-layer key/value storage in f16, as llama.cpp keeps it by default. Keys are stored by
//! position (`[n_ctx, kv_dim]`), values transposed (`[kv_dim, n_ctx]`) as llama.cpp does
//! without flash attention: both products of attention then read contiguous f16 runs.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Keys and values of every layer.
pub struct KvCache {
    pub n_ctx: usize,
    pub kv_dim: usize,
    /// `[n_layer, n_ctx, kv_dim]`
    k: Vec<f16>,
    /// `[n_layer, kv_dim, n_ctx]`
    vt: Vec<f16>,
}

/// One layer's keys and values.
pub struct KvLayer<'a> {
    n_ctx: usize,
    kv_dim: usize,
    k: &'a [f16],
    vt: &'a [f16],
}

impl KvLayer<'_> {
    /// Key of position `pos`, dims `dims` (e.g. one head), as f16 bytes.
    #[inline]
    pub fn key(&self, pos: usize, dims: std::ops::Range<usize>) -> &[u8] {
        let start = pos * self.kv_dim;
        bytemuck::cast_slice(&self.k[start + dims.start..start + dims.end])
    }

    /// Value dimension `dim` at positions `positions`, as f16 bytes.
    #[inline]
    pub fn value_dim(&self, dim: usize, positions: std::ops::RangeInclusive<usize>) -> &[u8] {
        let row = &self.vt[dim * self.n_ctx..(dim + 1) * self.n_ctx];
        bytemuck::cast_slice(&row[positions])
    }
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, kv_dim: usize) -> Self {
        let n = n_layer * n_ctx * kv_dim;
        KvCache {
            n_ctx,
            kv_dim,
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
            kv_dim: self.kv_dim,
            k: &self.k[r.clone()],
            vt: &self.vt[r],
        }
    }

    /// Store rows `k` and `v` (`[m, kv_dim]`) at positions `pos0..pos0 + m` of `layer`.
    pub fn store(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let (d, n_ctx) = (self.kv_dim, self.n_ctx);
        let base = self.layer_range(layer).start;
        self.k[base + pos0 * d..base + pos0 * d + k.len()].convert_from_f32_slice(k);
        let vt = &mut self.vt[base..base + d * n_ctx];
        for (t, row) in v.chunks_exact(d).enumerate() {
            for (i, x) in row.iter().enumerate() {
                vt[i * n_ctx + pos0 + t] = f16::from_f32(*x);
            }
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
        let (d, n_ctx) = (self.kv_dim, self.n_ctx);
        let mut row = vec![0.0f32; d];
        for layer in 0..n_layer {
            let base = self.layer_range(layer).start;
            for p in n_keep + n_discard..n_past {
                let (src, dst) = (base + p * d, base + (p - n_discard) * d);
                self.k[src..src + d].convert_to_f32_slice(&mut row);
                rerotate(layer, &mut row);
                self.k[dst..dst + d].convert_from_f32_slice(&row);
            }
            for i in 0..d {
                let r = base + i * n_ctx;
                self.vt
                    .copy_within(r + n_keep + n_discard..r + n_past, r + n_keep);
            }
        }
    }

    /// Keys (by position) then values (by dimension) of positions `0..n` of every layer, as
    /// little-endian f16 bytes.
    pub fn write_state(&self, n_layer: usize, n: usize, out: &mut Vec<u8>) {
        let (d, n_ctx) = (self.kv_dim, self.n_ctx);
        for layer in 0..n_layer {
            let base = self.layer_range(layer).start;
            let keys = &self.k[base..base + n * d];
            let values = (0..d).flat_map(|i| &self.vt[base + i * n_ctx..base + i * n_ctx + n]);
            for x in keys.iter().chain(values) {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }

    /// The inverse of [`KvCache::write_state`]; `data` must hold exactly that many bytes.
    pub fn read_state(&mut self, n_layer: usize, n: usize, data: &[u8]) {
        let (d, n_ctx) = (self.kv_dim, self.n_ctx);
        let mut values = data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]));
        for layer in 0..n_layer {
            let base = self.layer_range(layer).start;
            for (x, v) in self.k[base..base + n * d].iter_mut().zip(&mut values) {
                *x = v;
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
