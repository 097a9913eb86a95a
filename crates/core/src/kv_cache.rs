//! Per-layer key/value storage in f16, as llama.cpp keeps it by default.

use half::f16;

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

    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * std::mem::size_of::<f16>()
    }
}
