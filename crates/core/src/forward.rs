//! The decoder forward pass over a batch of tokens: embedding, blocks of attention + SwiGLU,
//! final norm, output head for the rows whose logits are wanted.
//! Reference graph: llama.cpp `src/models/llama.cpp` (`llm_build_llama`).

use half::{f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;
use rllm_kernels::{matmul, GgmlType};

use crate::arch::{HParams, Layer};
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::ops::{self, RopeTable};
use crate::tensor::Matrix;

/// Activations of one batch, allocated once per context for `n_batch` tokens.
pub struct Scratch {
    pub n_batch: usize,
    /// `[n_batch, n_embd]` residual stream
    x: Vec<f32>,
    /// `[n_batch, n_embd]` normed input of the current sub-layer
    xn: Vec<f32>,
    /// `[n_batch, q_dim]`
    q: Vec<f32>,
    /// `[n_batch, kv_dim]`
    k: Vec<f32>,
    /// `[n_batch, kv_dim]`
    v: Vec<f32>,
    /// `[n_head, n_batch, head_dim]` attention output, head-major so heads fill it in parallel
    att_heads: Vec<f32>,
    /// `[n_batch, q_dim]` attention output, token-major
    att: Vec<f32>,
    /// `[n_batch, n_embd]` output of a projection back to the residual width
    proj: Vec<f32>,
    /// `[n_batch, n_ff]`
    gate: Vec<f32>,
    /// `[n_batch, n_ff]`
    up: Vec<f32>,
    /// `[n_head, n_ctx]` attention scores, one row per head
    scores: Vec<f32>,
    /// `[n_head, 2 * head_dim]` per-head temporaries of attention: the query, one K/V row
    head_tmp: Vec<f32>,
    /// Activations quantized for the weight kernels (see [`ActCache`]).
    act: ActCache,
}

impl Scratch {
    pub fn new(hp: &HParams, n_batch: usize, n_ctx: usize) -> Self {
        let z = |n: usize| vec![0.0f32; n];
        Scratch {
            n_batch,
            x: z(n_batch * hp.n_embd),
            xn: z(n_batch * hp.n_embd),
            q: z(n_batch * hp.q_dim()),
            k: z(n_batch * hp.kv_dim()),
            v: z(n_batch * hp.kv_dim()),
            att_heads: z(n_batch * hp.q_dim()),
            att: z(n_batch * hp.q_dim()),
            proj: z(n_batch * hp.n_embd),
            gate: z(n_batch * hp.n_ff),
            up: z(n_batch * hp.n_ff),
            scores: z(hp.n_head * n_ctx),
            head_tmp: z(hp.n_head * 2 * hp.head_dim),
            act: ActCache::default(),
        }
    }
}

/// The current sub-layer input, quantized to one activation format. Projections that share an
/// input and an activation format (Q, K, V; gate, up) quantize it once.
#[derive(Default)]
struct ActCache {
    format: Option<GgmlType>,
    bytes: Vec<u8>,
}

impl ActCache {
    fn invalidate(&mut self) {
        self.format = None;
    }

    /// `out[m, w.rows] = x[m, w.cols] · wᵀ`
    fn project(&mut self, map: &[u8], w: &Matrix, x: &[f32], m: usize, out: &mut [f32]) {
        let k = &w.kernel;
        if self.format != Some(k.act) {
            matmul::quantize_rows(k, &x[..m * w.cols], w.cols, &mut self.bytes);
            self.format = Some(k.act);
        }
        matmul::matmul(
            k,
            w.data(map),
            w.rows,
            w.cols,
            &self.bytes,
            m,
            &mut out[..m * w.rows],
        );
    }
}

/// Which rows of the batch need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
}

/// Run `tokens` (at positions `pos0..`) through the model, storing their keys and values in
/// `kv`, and write the logits of the requested rows (`[n_rows, n_vocab]`) into `logits`.
/// Token ids must be valid and the batch must fit in `scratch` and `kv`; the caller checks.
pub fn forward(
    model: &Model,
    kv: &mut KvCache,
    rope: &RopeTable,
    s: &mut Scratch,
    tokens: &[u32],
    pos0: usize,
    want: Logits,
    logits: &mut Vec<f32>,
) {
    let hp = &model.hparams;
    let w = &model.weights;
    let map = model.file.bytes();
    let m = tokens.len();
    let e = hp.n_embd;
    debug_assert!(m <= s.n_batch && pos0 + m <= kv.n_ctx);

    for (t, &tok) in tokens.iter().enumerate() {
        w.token_embd
            .dequantize_row(map, tok as usize, &mut s.x[t * e..(t + 1) * e]);
    }

    for (l, layer) in w.layers.iter().enumerate() {
        attention_block(hp, map, layer, l, kv, rope, s, m, pos0);
        ffn_block(hp, map, layer, s, m);
    }

    let rows = match want {
        Logits::All => 0..m,
        Logits::Last => m - 1..m,
    };
    let n_rows = rows.len();
    s.xn[..n_rows * e].copy_from_slice(&s.x[rows.start * e..rows.end * e]);
    for row in s.xn[..n_rows * e].chunks_exact_mut(e) {
        ops::rms_norm(row, &w.output_norm, hp.rms_eps);
    }
    logits.resize(n_rows * hp.n_vocab, 0.0);
    s.act.invalidate();
    s.act.project(map, &w.output, &s.xn, n_rows, logits);
}

fn norm_rows(src: &[f32], dst: &mut [f32], weight: &[f32], eps: f32, m: usize) {
    let e = weight.len();
    dst[..m * e].copy_from_slice(&src[..m * e]);
    for row in dst[..m * e].chunks_exact_mut(e) {
        ops::rms_norm(row, weight, eps);
    }
}

fn attention_block(
    hp: &HParams,
    map: &[u8],
    layer: &Layer,
    l: usize,
    kv: &mut KvCache,
    rope: &RopeTable,
    s: &mut Scratch,
    m: usize,
    pos0: usize,
) {
    let (qd, kvd, hd) = (hp.q_dim(), hp.kv_dim(), hp.head_dim);
    norm_rows(&s.x, &mut s.xn, &layer.attn_norm, hp.rms_eps, m);
    s.act.invalidate();
    s.act.project(map, &layer.wq, &s.xn, m, &mut s.q);
    s.act.project(map, &layer.wk, &s.xn, m, &mut s.k);
    s.act.project(map, &layer.wv, &s.xn, m, &mut s.v);
    for t in 0..m {
        rope.apply(&mut s.q[t * qd..(t + 1) * qd], hd, pos0 + t);
        rope.apply(&mut s.k[t * kvd..(t + 1) * kvd], hd, pos0 + t);
    }
    kv.store(l, pos0, &s.k[..m * kvd], &s.v[..m * kvd]);

    let (k_cache, v_cache) = kv.layer(l);
    let n_ctx = kv.n_ctx;
    let group = hp.n_head / hp.n_head_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    let q = &s.q;
    s.att_heads[..hp.n_head * m * hd]
        .par_chunks_mut(m * hd)
        .zip(s.scores.par_chunks_mut(n_ctx))
        .zip(s.head_tmp.par_chunks_mut(2 * hd))
        .enumerate()
        .for_each(|(h, ((out, scores), tmp))| {
            let g = h / group;
            let (qh, row) = tmp.split_at_mut(hd);
            for t in 0..m {
                let n_kv = pos0 + t + 1;
                // llama.cpp multiplies f16 keys by queries rounded to f16 ...
                for (d, qv) in qh
                    .iter_mut()
                    .zip(&q[t * qd + h * hd..t * qd + (h + 1) * hd])
                {
                    *d = f16::from_f32(*qv).to_f32();
                }
                let sc = &mut scores[..n_kv];
                for (j, sj) in sc.iter_mut().enumerate() {
                    let start = j * kvd + g * hd;
                    k_cache[start..start + hd].convert_to_f32_slice(row);
                    *sj = dot(qh, row) * scale;
                }
                ops::softmax(sc);
                let o = &mut out[t * hd..(t + 1) * hd];
                o.fill(0.0);
                for (j, &p) in sc.iter().enumerate() {
                    // ... and values by probabilities rounded to f16.
                    let p = f16::from_f32(p).to_f32();
                    let start = j * kvd + g * hd;
                    v_cache[start..start + hd].convert_to_f32_slice(row);
                    for (od, vd) in o.iter_mut().zip(row.iter()) {
                        *od += p * vd;
                    }
                }
            }
        });
    for h in 0..hp.n_head {
        for t in 0..m {
            s.att[t * qd + h * hd..t * qd + (h + 1) * hd]
                .copy_from_slice(&s.att_heads[h * m * hd + t * hd..h * m * hd + (t + 1) * hd]);
        }
    }
    s.act.invalidate();
    s.act.project(map, &layer.wo, &s.att, m, &mut s.proj);
    ops::add_assign(&mut s.x[..m * hp.n_embd], &s.proj[..m * hp.n_embd]);
}

fn ffn_block(hp: &HParams, map: &[u8], layer: &Layer, s: &mut Scratch, m: usize) {
    let f = hp.n_ff;
    norm_rows(&s.x, &mut s.xn, &layer.ffn_norm, hp.rms_eps, m);
    s.act.invalidate();
    s.act.project(map, &layer.ffn_gate, &s.xn, m, &mut s.gate);
    s.act.project(map, &layer.ffn_up, &s.xn, m, &mut s.up);
    ops::swiglu(&mut s.gate[..m * f], &s.up[..m * f]);
    s.act.invalidate();
    s.act.project(map, &layer.ffn_down, &s.gate, m, &mut s.proj);
    ops::add_assign(&mut s.x[..m * hp.n_embd], &s.proj[..m * hp.n_embd]);
}

/// f32 dot product in eight independent lanes, so that it vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() / 8 * 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}
