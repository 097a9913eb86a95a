//! Per-layer key/value storage in f16, as llama.cpp keeps it by default.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Keys and values of every layer: `[n_layer, n_ctx, kv_dim]` each.
pub struct KvCache {
    pub n_ctx: usize,
    pub kv_dim: usize,
    k: Vec<f16>,
    v: Vec<f16>,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, kv_dim: usize) -> Self {
        let n = n_layer * n_ctx * kv_dim;
        KvCache {
            n_ctx,
            kv_dim,
            k: vec![f16::ZERO; n],
            v: vec![f16::ZERO; n],
        }
    }

    fn layer_range(&self, layer: usize) -> std::ops::Range<usize> {
        let n = self.n_ctx * self.kv_dim;
        layer * n..(layer + 1) * n
    }

    /// Keys and values of `layer`, `[n_ctx, kv_dim]` each.
    pub fn layer(&self, layer: usize) -> (&[f16], &[f16]) {
        let r = self.layer_range(layer);
        (&self.k[r.clone()], &self.v[r])
    }

    /// Store rows `k` and `v` (`[m, kv_dim]`) at positions `pos0..pos0 + m` of `layer`.
    pub fn store(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let base = self.layer_range(layer).start + pos0 * self.kv_dim;
        for (dst, src) in self.k[base..base + k.len()].iter_mut().zip(k) {
            *dst = f16::from_f32(*src);
        }
        for (dst, src) in self.v[base..base + v.len()].iter_mut().zip(v) {
            *dst = f16::from_f32(*src);
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
        let d = self.kv_dim;
        let mut row = vec![0.0f32; d];
        for layer in 0..n_layer {
            let base = self.layer_range(layer).start;
            for p in n_keep + n_discard..n_past {
                let (src, dst) = (base + p * d, base + (p - n_discard) * d);
                self.v.copy_within(src..src + d, dst);
                self.k[src..src + d].convert_to_f32_slice(&mut row);
                rerotate(layer, &mut row);
                self.k[dst..dst + d].convert_from_f32_slice(&row);
            }
        }
    }

    /// Keys then values of positions `0..n` of every layer, as little-endian f16 bytes.
    pub fn write_state(&self, n_layer: usize, n: usize, out: &mut Vec<u8>) {
        for layer in 0..n_layer {
            let r = self.layer_range(layer);
            for cache in [&self.k, &self.v] {
                for x in &cache[r.start..r.start + n * self.kv_dim] {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }

    /// The inverse of [`KvCache::write_state`]; `data` must hold exactly that many bytes.
    pub fn read_state(&mut self, n_layer: usize, n: usize, data: &[u8]) {
        let mut chunks = data.chunks_exact(2);
        for layer in 0..n_layer {
            let r = self.layer_range(layer);
            let d = self.kv_dim;
            for cache in [&mut self.k, &mut self.v] {
                for (x, c) in cache[r.start..r.start + n * d].iter_mut().zip(&mut chunks) {
                    *x = f16::from_le_bytes([c[0], c[1]]);
                }
            }
        }
    }

    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * std::mem::size_of::<f16>()
    }
}
