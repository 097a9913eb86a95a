//! Per-layer key/value storage in f16, as llama.cpp keeps it by default. Keys and values are
//! both stored transposed, one row of positions per dimension (`[kv_dim, n_ctx]`; llama.cpp
//! transposes the values only): the scores of a query fill vectors of positions, with no
//! horizontal sum per key, and the queries of one KV head share each key and value load
//! ([`rllm_kernels::attn`]).

use half::f16;
use rllm_kernels::pool::{chunks, ThreadPool};

use crate::forward::PAR_ROWS;

/// Keys and values of every layer.
pub struct KvCache {
    pub n_ctx: usize,
    pub kv_dim: usize,
    pub head_dim: usize,
    /// `[n_layer, kv_dim, n_ctx]`
    kt: Vec<f16>,
    /// `[n_layer, kv_dim, n_ctx]`
    vt: Vec<f16>,
}

/// One layer's keys and values.
pub struct KvLayer<'a> {
    n_ctx: usize,
    kt: &'a [f16],
    vt: &'a [f16],
}

/// Rows `dims` of a `[_, n_ctx]` layer at positions `positions`, as f16 bytes: from the first
/// row's first position to the last row's last, and the stride in bytes between rows.
fn dims_at(
    rows: &[f16],
    n_ctx: usize,
    dims: std::ops::Range<usize>,
    positions: std::ops::RangeInclusive<usize>,
) -> (&[u8], usize) {
    let (first, last) = (*positions.start(), *positions.end());
    let start = dims.start * n_ctx + first;
    let end = (dims.end - 1) * n_ctx + last + 1;
    (bytemuck::cast_slice(&rows[start..end]), 2 * n_ctx)
}

impl KvLayer<'_> {
    /// Key dimensions `dims` at positions `positions` ([`rllm_kernels::attn::scores_f16t`]'s
    /// keys and stride).
    pub fn key_dims(
        &self,
        dims: std::ops::Range<usize>,
        positions: std::ops::RangeInclusive<usize>,
    ) -> (&[u8], usize) {
        dims_at(self.kt, self.n_ctx, dims, positions)
    }

    /// Value dimensions `dims` at positions `positions` (the values and stride of
    /// [`rllm_kernels::attn::weighted_values_f16t`]).
    pub fn value_dims(
        &self,
        dims: std::ops::Range<usize>,
        positions: std::ops::RangeInclusive<usize>,
    ) -> (&[u8], usize) {
        dims_at(self.vt, self.n_ctx, dims, positions)
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
            kt: vec![f16::ZERO; n],
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
            kt: &self.kt[r.clone()],
            vt: &self.vt[r],
        }
    }

    /// Store rows `k` and `v` (`[m, kv_dim]`) at positions `pos0..pos0 + m` of `layer`: in
    /// parallel over dimensions for prompts, where a serial store would hold every other
    /// thread up.
    pub fn store(&mut self, pool: &ThreadPool, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let (d, n_ctx) = (self.kv_dim, self.n_ctx);
        let m = k.len() / d;
        let r = self.layer_range(layer);
        let (keys, values) = (&mut self.kt[r.clone()], &mut self.vt[r]);
        for (src, rows) in [(k, keys), (v, values)] {
            let store = |dims: std::ops::Range<usize>, rows: &mut [f16]| {
                for (i, dst) in dims.zip(rows.chunks_exact_mut(n_ctx)) {
                    for (o, row) in dst[pos0..pos0 + m].iter_mut().zip(src.chunks_exact(d)) {
                        *o = f16::from_f32(row[i]);
                    }
                }
            };
            if m >= PAR_ROWS {
                pool.split(chunks(rows, n_ctx), store);
            } else {
                store(0..d, rows);
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
        let (d, hd, n_ctx) = (self.kv_dim, self.head_dim, self.n_ctx);
        let mut row = vec![0.0f32; hd];
        for layer in 0..n_layer {
            let base = self.layer_range(layer).start;
            for g in 0..d / hd {
                let head = base + g * hd * n_ctx;
                // Ascending: each destination was read before (it lies n_discard back).
                for p in n_keep + n_discard..n_past {
                    for (i, x) in row.iter_mut().enumerate() {
                        *x = self.kt[head + i * n_ctx + p].to_f32();
                    }
                    rerotate(layer, &mut row);
                    for (i, x) in row.iter().enumerate() {
                        self.kt[head + i * n_ctx + p - n_discard] = f16::from_f32(*x);
                    }
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
                let head = base + g * hd * n_ctx;
                (0..n).flat_map(move |p| (0..hd).map(move |i| &self.kt[head + i * n_ctx + p]))
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
                let head = base + g * hd * n_ctx;
                for p in 0..n {
                    for (i, v) in (0..hd).zip(&mut values) {
                        self.kt[head + i * n_ctx + p] = v;
                    }
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
        (self.kt.len() + self.vt.len()) * std::mem::size_of::<f16>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key or value element (dimension `i`, position `p`) of layer `l` as stored: small
    /// integers, exact in f16.
    fn elem(l: usize, p: usize, i: usize, key: bool) -> f32 {
        (l * 100 + p * 10 + i) as f32 * if key { 1.0 } else { -1.0 }
    }

    fn filled(n_layer: usize, n_ctx: usize, n_head_kv: usize, hd: usize, n: usize) -> KvCache {
        let pool = ThreadPool::new(1).unwrap();
        let mut kv = KvCache::new(n_layer, n_ctx, n_head_kv, hd);
        let d = n_head_kv * hd;
        for l in 0..n_layer {
            let rows =
                |key| -> Vec<f32> { (0..n * d).map(|x| elem(l, x / d, x % d, key)).collect() };
            kv.store(&pool, l, 0, &rows(true), &rows(false));
        }
        kv
    }

    fn at(rows: (&[u8], usize), i: usize, p: usize) -> f32 {
        let (b, stride) = rows;
        let o = i * stride + 2 * p;
        f16::from_le_bytes([b[o], b[o + 1]]).to_f32()
    }

    #[test]
    fn stored_rows_read_back_by_dimension() {
        let kv = filled(2, 16, 2, 4, 9);
        for l in 0..2 {
            let layer = kv.layer(l);
            for p in 0..9 {
                for i in 0..8 {
                    assert_eq!(at(layer.key_dims(0..8, 0..=8), i, p), elem(l, p, i, true));
                    assert_eq!(
                        at(layer.value_dims(0..8, 0..=8), i, p),
                        elem(l, p, i, false)
                    );
                }
            }
            // A window of dimensions and positions starts at its first element.
            assert_eq!(at(layer.key_dims(4..8, 3..=5), 1, 2), elem(l, 5, 5, true));
        }
    }

    #[test]
    fn shift_drops_positions_and_moves_later_keys_through_rerotate() {
        let (n_keep, n_discard, n_past) = (2, 3, 9);
        let mut kv = filled(2, 16, 2, 4, n_past);
        // "Rerotation" that marks each moved key row.
        kv.shift(2, n_keep, n_discard, n_past, |l, row| {
            row.iter_mut().for_each(|x| *x += 0.5 + l as f32)
        });
        for l in 0..2 {
            let layer = kv.layer(l);
            for p in 0..n_past - n_discard {
                let (src, moved) = if p < n_keep {
                    (p, 0.0)
                } else {
                    (p + n_discard, 0.5 + l as f32)
                };
                for i in 0..8 {
                    let k = at(layer.key_dims(0..8, 0..=15), i, p);
                    assert_eq!(
                        k,
                        elem(l, src, i, true) + moved,
                        "layer {l} pos {p} dim {i}"
                    );
                    assert_eq!(
                        at(layer.value_dims(0..8, 0..=15), i, p),
                        elem(l, src, i, false)
                    );
                }
            }
        }
    }

    #[test]
    fn state_round_trips_in_the_by_position_format() {
        let kv = filled(2, 16, 2, 4, 5);
        let mut state = Vec::new();
        kv.write_state(2, 5, &mut state);
        // Keys by head then position (a key row is contiguous), then values by dimension.
        let read = |k: usize| f16::from_le_bytes([state[2 * k], state[2 * k + 1]]).to_f32();
        assert_eq!(read(0), elem(0, 0, 0, true));
        assert_eq!(read(1), elem(0, 0, 1, true));
        assert_eq!(read(4), elem(0, 1, 0, true)); // head 0, position 1
        assert_eq!(read(20), elem(0, 0, 4, true)); // head 1, position 0
        assert_eq!(read(40), elem(0, 0, 0, false));
        assert_eq!(read(41), elem(0, 1, 0, false));
        let mut back = KvCache::new(2, 16, 2, 4);
        back.read_state(2, 5, &state);
        assert_eq!(back.kt, kv.kt);
        assert_eq!(back.vt, kv.vt);
    }
}
