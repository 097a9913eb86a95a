//! The decoder forward pass over a batch of tokens, shared by every architecture: embedding,
//! blocks of attention + gated FFN (with the optional parts an architecture declares), final
//! norm, output head for the rows whose logits are wanted.
//! Reference graphs: llama.cpp `src/models/{llama,qwen2,gemma3,phi3}.cpp`.

use std::cell::RefCell;
use std::sync::OnceLock;

use half::f16;
use rllm_kernels::gemm::{self, GemmActs, GemmInput};
use rllm_kernels::pool::{chunks, ThreadPool};
use rllm_kernels::{attn, matmul, GgmlType};

use crate::arch::{Activation, HParams, Layer, NormKind, Positions, Qkv};
use crate::bench::op_times::{self, Op};
use crate::gguf::GgufFile;
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::ops::{self, RopeTable};
use crate::tensor::Matrix;

/// Activations of one batch, allocated once per context for `n_batch` tokens.
pub struct Scratch {
    pub n_batch: usize,
    /// `[n_batch, n_embd]` residual stream
    x: Vec<f32>,
    /// `[n_batch, n_embd]` normed input of the current sub-layer; once attention's Q/K/V are
    /// projected from it, `[n_head, n_batch, head_dim]` attention output, head-major so heads
    /// fill it in parallel (sized for the larger of the two)
    xn: Vec<f32>,
    /// `[n_batch, q_dim + 2 kv_dim]` fused QKV projection, before it is split
    qkv: Vec<f32>,
    /// `[n_batch, q_dim]` queries, then the attention output token-major (the input of the
    /// output projection)
    q: Vec<f32>,
    /// `[n_batch, kv_dim]`
    k: Vec<f32>,
    /// `[n_batch, kv_dim]`
    v: Vec<f32>,
    /// `[n_batch, n_embd]` output of a projection back to the residual width
    proj: Vec<f32>,
    /// `[FFN_ROWS, 2 n_ff]` gate (or fused gate/up) projection
    gate: Vec<f32>,
    /// `[FFN_ROWS, n_ff]`
    up: Vec<f32>,
    /// Positions each KV cache holds (the longest row of attention scores).
    n_ctx: usize,
    /// Activations quantized for the weight kernels (see [`ActCache`]).
    act: ActCache,
    /// `[n_batch]` (sequence index, position) of each row of the batch
    rows: Vec<(usize, usize)>,
}

/// Rows of a batch the FFN takes at a time: its hidden activations (3 n_ff floats a row) are
/// the largest scratch, and a GEMM of this many rows already runs at full speed (llama.cpp
/// caps its compute buffers the same way, at 512-row micro-batches).
const FFN_ROWS: usize = 256;

impl Scratch {
    pub fn new(hp: &HParams, n_batch: usize, n_ctx: usize) -> Self {
        let z = |n: usize| vec![0.0f32; n];
        let (q, kv) = (hp.q_dim(), hp.kv_dim());
        Scratch {
            n_batch,
            x: z(n_batch * hp.n_embd),
            xn: z(n_batch * hp.n_embd.max(q)),
            qkv: z(n_batch * (q + 2 * kv)),
            q: z(n_batch * q),
            k: z(n_batch * kv),
            v: z(n_batch * kv),
            proj: z(n_batch * hp.n_embd),
            gate: z(n_batch.min(FFN_ROWS) * 2 * hp.n_ff),
            up: z(n_batch.min(FFN_ROWS) * hp.n_ff),
            n_ctx,
            act: ActCache::default(),
            rows: Vec::with_capacity(n_batch),
        }
    }
}

/// The current sub-layer input, quantized to one activation format. Projections that share an
/// input and an activation format (Q, K, V; gate, up) quantize it once.
#[derive(Default)]
struct ActCache {
    format: Option<ActFormat>,
    bytes: Vec<u8>,
    gemm: GemmActs,
}

/// Which form [`ActCache`] holds: a dot kernel's activation blocks, or the GEMM's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ActFormat {
    Dot(GgmlType),
    Gemm,
}

impl ActCache {
    fn invalidate(&mut self) {
        self.format = None;
    }

    /// `out[m, w.rows] = x[m, w.cols] · wᵀ`: the GEMM for prompt-sized `m` where the weight
    /// type has one, else a dot product per (weight row, activation row).
    fn project(
        &mut self,
        pool: &ThreadPool,
        map: &GgufFile,
        w: &Matrix,
        x: &[f32],
        m: usize,
        out: &mut [f32],
    ) {
        let _t = op_times::time(Op::Matmul);
        let x = &x[..m * w.cols];
        let out = &mut out[..m * w.rows];
        let gemm = w.gemm.filter(|_| m >= gemm::MIN_ROWS);
        if let Some(g) = gemm.filter(|g| g.input() == GemmInput::Blocks32) {
            if self.format != Some(ActFormat::Gemm) {
                let _q = op_times::time(Op::Quantize);
                self.gemm.quantize(pool, x, w.cols);
                self.format = Some(ActFormat::Gemm);
            }
            g.matmul(pool, w.data(map), w.rows, w.cols, &self.gemm, out);
            return;
        }
        let k = &w.kernel;
        if self.format != Some(ActFormat::Dot(k.act)) {
            let _q = op_times::time(Op::Quantize);
            matmul::quantize_rows(pool, k, x, w.cols, &mut self.bytes);
            self.format = Some(ActFormat::Dot(k.act));
        }
        match gemm {
            // K-quants: the GEMM reads the dot path's Q8_K rows.
            Some(g) => g.matmul_q8k(pool, w.data(map), w.rows, w.cols, &self.bytes, m, out),
            None => matmul::matmul(pool, k, w.data(map), w.rows, w.cols, &self.bytes, m, out),
        }
    }

    /// [`Self::project`] of one input `x` with several matrices (Q, K, V; gate, up). Where
    /// they all take the dot path with one activation format (decode and small batches), the
    /// products run as one parallel job, which saves a fork-join per extra matrix; prompts,
    /// whose products are long, take them one at a time. The outputs are the same either way.
    fn project_parts<const N: usize>(
        &mut self,
        pool: &ThreadPool,
        map: &GgufFile,
        ws: [&Matrix; N],
        x: &[f32],
        m: usize,
        outs: [&mut [f32]; N],
    ) {
        let Some(&first) = ws.first() else {
            return;
        };
        let one_job = ws.iter().all(|w| {
            w.kernel.act == first.kernel.act
                && w.cols == first.cols
                && (m < gemm::MIN_ROWS || w.gemm.is_none())
        });
        if !one_job {
            for (w, out) in ws.into_iter().zip(outs) {
                self.project(pool, map, w, x, m, out);
            }
            return;
        }
        let _t = op_times::time(Op::Matmul);
        let k = &first.kernel;
        if self.format != Some(ActFormat::Dot(k.act)) {
            let _q = op_times::time(Op::Quantize);
            matmul::quantize_rows(pool, k, &x[..m * first.cols], first.cols, &mut self.bytes);
            self.format = Some(ActFormat::Dot(k.act));
        }
        let mut outs = outs.into_iter();
        let outs = std::array::from_fn(|j| outs.next().unwrap().split_at_mut(m * ws[j].rows).0);
        let ws = ws.map(|w| matmul::Weights {
            kernel: &w.kernel,
            w: w.data(map),
            n_rows: w.rows,
        });
        matmul::matmul_parts(pool, ws, first.cols, &self.bytes, m, outs);
    }
}

/// One sequence's part of a batch: its tokens, where they go, and its own KV cache.
pub struct Seq<'a> {
    pub kv: &'a mut KvCache,
    pub tokens: &'a [u32],
    /// Position of the first token.
    pub pos0: usize,
    /// Which of `tokens` need logits (e.g. the last one to sample from; all for perplexity).
    pub logit_rows: std::ops::Range<usize>,
}

/// What a forward pass writes for the rows its sequences ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// `[rows, n_vocab]` logits through the output head.
    Logits,
    /// `[rows, n_embd]` hidden states after the final norm (the model's token embeddings,
    /// llama.cpp's `t_embd`).
    Embeddings,
}

/// Rotary tables of a context: the global one and the sliding-window layers' one.
pub struct Ropes {
    pub global: RopeTable,
    pub swa: RopeTable,
}

impl Ropes {
    pub fn for_layer(&self, hp: &HParams, layer: usize) -> &RopeTable {
        if hp.swa_layers[layer] {
            &self.swa
        } else {
            &self.global
        }
    }
}

/// Run a batch of sequences through the model in one pass: their rows share every matrix
/// product (each weight is read once for all of them), while each attends to its own KV cache.
/// Keys and values are stored in each sequence's cache; for the rows each sequence asks for
/// (`logit_rows`), `head` says what is written to `out`, in sequence order. A sequence attends
/// to its earlier tokens, or with non-causal attention (`HParams::causal`, bert) to all the
/// tokens it has in this batch and its cache.
/// Token ids must be valid, the batch must fit in `scratch` and each cache, and a model
/// without an output head is only asked for embeddings; callers check.
/// Parallel steps run on `pool`.
pub fn forward(
    pool: &ThreadPool,
    model: &Model,
    ropes: &Ropes,
    s: &mut Scratch,
    seqs: &mut [Seq],
    head: Head,
    out: &mut Vec<f32>,
) {
    let _t = op_times::time(Op::Forward);
    let hp = &model.hparams;
    let w = &model.weights;
    let map = &model.file;
    let e = hp.n_embd;
    s.rows.clear();
    for (i, seq) in seqs.iter().enumerate() {
        debug_assert!(seq.pos0 + seq.tokens.len() <= seq.kv.n_ctx);
        s.rows
            .extend((0..seq.tokens.len()).map(|t| (i, seq.pos0 + t)));
    }
    let m = s.rows.len();
    debug_assert!(m <= s.n_batch);

    let tokens = seqs.iter().flat_map(|q| q.tokens.iter());
    for (t, &tok) in tokens.enumerate() {
        let row = &mut s.x[t * e..(t + 1) * e];
        w.token_embd.dequantize_row(map, tok as usize, row);
        if let Some(scale) = hp.embd_scale {
            row.iter_mut().for_each(|v| *v *= scale);
        }
        if let Some(types) = &w.type_embd {
            ops::add_assign(row, types);
        }
        if let Some(pos) = &w.pos_embd {
            let tmp = &mut s.xn[..e];
            pos.dequantize_row(map, s.rows[t].1, tmp);
            ops::add_assign(row, tmp);
        }
        if let Some((nw, nb)) = &w.embd_norm {
            ops::layer_norm(row, nw, Some(nb), hp.norm_eps);
        }
    }

    for (l, layer) in w.layers.iter().enumerate() {
        let rope = ropes.for_layer(hp, l);
        attention_block(pool, hp, map, layer, l, seqs, rope, s, m);
        ffn_block(pool, hp, map, layer, s, m);
    }

    // Gather the rows that need logits, in order, then one output product for all of them.
    let mut n_rows = 0;
    let mut start = 0;
    for seq in seqs.iter() {
        for r in seq.logit_rows.clone() {
            let src = &s.x[(start + r) * e..(start + r + 1) * e];
            s.xn[n_rows * e..(n_rows + 1) * e].copy_from_slice(src);
            n_rows += 1;
        }
        start += seq.tokens.len();
    }
    if let Some(norm) = &w.output_norm {
        for row in s.xn[..n_rows * e].chunks_exact_mut(e) {
            ops::rms_norm(row, norm, hp.norm_eps);
        }
    }
    let output = match (head, &w.output) {
        (Head::Logits, Some(output)) => output,
        (Head::Logits, None) => panic!("{} has no output head: it only embeds", hp.arch),
        (Head::Embeddings, _) => {
            out.clear();
            out.extend_from_slice(&s.xn[..n_rows * e]);
            return;
        }
    };
    out.resize(n_rows * hp.n_vocab, 0.0);
    if n_rows == 0 {
        return;
    }
    s.act.invalidate();
    s.act.project(pool, map, output, &s.xn, n_rows, out);
    for row in out.chunks_exact_mut(hp.n_vocab) {
        if let Some(b) = &w.output_bias {
            ops::add_assign(row, b);
        }
        if let Some(cap) = hp.final_softcap {
            row.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
        }
    }
}

/// Rows from which row-wise steps (norms, RoPE, activations) are spread over the threads;
/// below it (decode, small batches) they stay on the calling thread, where a fork-join would
/// cost more than the work.
pub(crate) const PAR_ROWS: usize = 16;

/// `f(t, row)` for each of the `m` rows of `len` values in `x`, in parallel for prompts.
fn for_rows(
    pool: &ThreadPool,
    x: &mut [f32],
    len: usize,
    m: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let x = &mut x[..m * len];
    if m >= PAR_ROWS {
        pool.split(chunks(x, len), |rows, xs| {
            rows.zip(xs.chunks_mut(len)).for_each(|(t, row)| f(t, row));
        });
    } else {
        x.chunks_mut(len).enumerate().for_each(|(t, row)| f(t, row));
    }
}

/// The block norm `hp.norm` of one row, in place.
fn block_norm(hp: &HParams, row: &mut [f32], weight: &[f32], bias: Option<&Vec<f32>>) {
    match hp.norm {
        NormKind::RmsPre => ops::rms_norm(row, weight, hp.norm_eps),
        NormKind::LayerPost => ops::layer_norm(row, weight, bias.map(|b| &b[..]), hp.norm_eps),
    }
}

/// The input of a sub-layer: with pre-norm, the normed residual stream written to `xn`; with
/// post-norm, the stream `x` itself.
fn sublayer_input<'a>(
    pool: &ThreadPool,
    hp: &HParams,
    x: &'a [f32],
    xn: &'a mut [f32],
    weight: &[f32],
    m: usize,
) -> &'a [f32] {
    if hp.norm != NormKind::RmsPre {
        return x;
    }
    let e = weight.len();
    for_rows(pool, xn, e, m, |t, row| {
        row.copy_from_slice(&x[t * e..(t + 1) * e]);
        ops::rms_norm(row, weight, hp.norm_eps);
    });
    xn
}

/// A sub-layer's output `proj` into the residual stream `x`: `proj` normed first where the
/// architecture norms sub-layer outputs (`out_norm`, Gemma), then `x += proj`, then with
/// post-norm the sub-layer's norm of the sum.
fn residual_add(
    pool: &ThreadPool,
    hp: &HParams,
    x: &mut [f32],
    proj: &mut [f32],
    out_norm: Option<&[f32]>,
    norm: (&[f32], Option<&Vec<f32>>),
    m: usize,
) {
    let e = hp.n_embd;
    if let Some(w) = out_norm {
        for_rows(pool, proj, e, m, |_, row| {
            ops::rms_norm(row, w, hp.norm_eps)
        });
    }
    let proj = &*proj;
    let post = hp.norm != NormKind::RmsPre;
    for_rows(pool, x, e, m, |t, x| {
        ops::add_assign(x, &proj[t * e..(t + 1) * e]);
        if post {
            block_norm(hp, x, norm.0, norm.1);
        }
    });
}

fn add_bias(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        ops::add_assign(row, bias);
    }
}

thread_local! {
    /// Per-thread attention scratch, grown to the longest context seen: `[group, head_dim]`
    /// queries then `[group, n_ctx]` scores.
    static ATTN_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn attention_block(
    pool: &ThreadPool,
    hp: &HParams,
    map: &GgufFile,
    layer: &Layer,
    l: usize,
    seqs: &mut [Seq],
    rope: &RopeTable,
    s: &mut Scratch,
    m: usize,
) {
    let (qd, kvd, hd) = (hp.q_dim(), hp.kv_dim(), hp.head_dim);
    let input = sublayer_input(pool, hp, &s.x, &mut s.xn, &layer.attn_norm, m);
    s.act.invalidate();
    match &layer.qkv {
        Qkv::Split { wq, wk, wv } => {
            let outs = [&mut s.q[..], &mut s.k[..], &mut s.v[..]];
            s.act.project_parts(pool, map, [wq, wk, wv], input, m, outs);
            if let Some(b) = &layer.qkv_bias {
                add_bias(&mut s.q[..m * qd], &b[..qd]);
                add_bias(&mut s.k[..m * kvd], &b[qd..qd + kvd]);
                add_bias(&mut s.v[..m * kvd], &b[qd + kvd..]);
            }
        }
        Qkv::Fused(w) => {
            let n = qd + 2 * kvd;
            s.act.project(pool, map, w, input, m, &mut s.qkv);
            if let Some(b) = &layer.qkv_bias {
                add_bias(&mut s.qkv[..m * n], b);
            }
            for t in 0..m {
                let row = &s.qkv[t * n..(t + 1) * n];
                s.q[t * qd..(t + 1) * qd].copy_from_slice(&row[..qd]);
                s.k[t * kvd..(t + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
                s.v[t * kvd..(t + 1) * kvd].copy_from_slice(&row[qd + kvd..]);
            }
        }
    }
    for (norm, x) in [
        (&layer.q_norm, &mut s.q[..m * qd]),
        (&layer.k_norm, &mut s.k[..m * kvd]),
    ] {
        if let Some(w) = norm {
            for head in x.chunks_exact_mut(hd) {
                ops::rms_norm(head, w, hp.norm_eps);
            }
        }
    }
    let rows = &s.rows;
    if hp.positions == Positions::Rope {
        for_rows(pool, &mut s.q, qd, m, |t, q| rope.apply(q, hd, rows[t].1));
        for_rows(pool, &mut s.k, kvd, m, |t, k| rope.apply(k, hd, rows[t].1));
    }
    let mut start = 0;
    for seq in seqs.iter_mut() {
        let n = seq.tokens.len();
        let rows = start * kvd..(start + n) * kvd;
        seq.kv
            .store(pool, l, seq.pos0, &s.k[rows.clone()], &s.v[rows]);
        start += n;
    }

    // Attention runs on the f16 cache as ggml's f16 products do: queries and probabilities
    // are rounded to f16, products accumulate in f32.
    let seqs: &[Seq] = seqs;
    let rows = &s.rows;
    let n_ctx = s.n_ctx;
    let group = hp.n_head / hp.n_head_kv;
    let scale = hp.attn_scale;
    let window = if hp.swa_layers[l] { hp.n_swa } else { None };
    let causal = hp.causal;
    let q = &s.q;
    // KV head g, query rows t0.. (as many as `out` holds), every query head of the group:
    // scores, softmax, weighted values (each key and value load shared by the group). `out`
    // holds each row's `group` heads side by side.
    let attend = |g: usize, t0: usize, out: &mut [f32], scratch: &mut [f32]| {
        let (qg, scores) = scratch.split_at_mut(group * hd);
        for (out, (t, &(seq, pos))) in out
            .chunks_exact_mut(group * hd)
            .zip(rows.iter().enumerate().skip(t0))
        {
            let cache = seqs[seq].kv.layer(l);
            // Keys at most `window - 1` positions back are visible (llama.cpp's SWA mask);
            // without causality, also every later one of the sequence.
            let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let last = if causal {
                pos
            } else {
                seqs[seq].pos0 + seqs[seq].tokens.len() - 1
            };
            let n = last + 1 - first;
            qg.copy_from_slice(&q[t * qd + g * group * hd..t * qd + (g + 1) * group * hd]);
            attn::round_to_f16(qg);
            let scores = &mut scores[..group * n];
            let (keys, key_stride) = cache.key_dims(g * hd..(g + 1) * hd, first..=last);
            attn::scores_f16t(keys, key_stride, hd, n, qg, scores);
            for sc in scores.chunks_exact_mut(n) {
                sc.iter_mut().for_each(|v| *v *= scale);
                ops::softmax(sc);
            }
            attn::round_to_f16(scores);
            let (values, stride) = cache.value_dims(g * hd..(g + 1) * hd, first..=last);
            attn::weighted_values_f16t(values, stride, hd, n, scores, out);
        }
    };
    // Units of one (KV head, query row): each thread takes a run of them, which covers parts
    // of one or more KV heads, and attends with its own scratch rows.
    // The normed input is spent (Q/K/V are projected): its buffer takes the heads, laid out
    // `[n_head_kv, m, group, hd]`.
    let heads = &mut s.xn[..hp.n_head * m * hd];
    let timer = op_times::time(Op::Attention);
    pool.split(chunks(heads, group * hd), |units, out| {
        ATTN_SCRATCH.with_borrow_mut(|scratch| {
            let n_scratch = group * (hd + n_ctx);
            if scratch.len() < n_scratch {
                scratch.resize(n_scratch, 0.0);
            }
            let mut out = out;
            let mut u = units.start;
            while u < units.end {
                // The rest of this KV head's query rows in the run.
                let (g, t0) = (u / m, u % m);
                let n = (units.end - u).min(m - t0);
                let (part, rest) = out.split_at_mut(n * group * hd);
                attend(g, t0, part, &mut scratch[..n_scratch]);
                out = rest;
                u += n;
            }
        });
    });
    drop(timer);
    let heads = &s.xn;
    for_rows(pool, &mut s.q, qd, m, |t, row| {
        for (g, out) in row.chunks_exact_mut(group * hd).enumerate() {
            let src = (g * m + t) * group * hd;
            out.copy_from_slice(&heads[src..src + group * hd]);
        }
    });
    s.act.invalidate();
    s.act
        .project(pool, map, &layer.wo, &s.q[..m * qd], m, &mut s.proj);
    let e = hp.n_embd;
    if let Some(b) = &layer.wo_bias {
        add_bias(&mut s.proj[..m * e], b);
    }
    let norm = (&layer.attn_norm[..], layer.attn_norm_b.as_ref());
    let out_norm = layer.post_attn_norm.as_deref();
    residual_add(pool, hp, &mut s.x, &mut s.proj, out_norm, norm, m);
}

fn ffn_block(
    pool: &ThreadPool,
    hp: &HParams,
    map: &GgufFile,
    layer: &Layer,
    s: &mut Scratch,
    m: usize,
) {
    let e = hp.n_embd;
    let input = sublayer_input(pool, hp, &s.x, &mut s.xn, &layer.ffn_norm, m);
    for c0 in (0..m).step_by(FFN_ROWS) {
        let mc = FFN_ROWS.min(m - c0);
        let proj = &mut s.proj[c0 * e..(c0 + mc) * e];
        let bufs = (&mut s.gate[..], &mut s.up[..]);
        ffn_rows(
            pool,
            hp,
            map,
            layer,
            &mut s.act,
            bufs,
            &input[c0 * e..],
            mc,
            proj,
        );
    }
    let norm = (&layer.ffn_norm[..], layer.ffn_norm_b.as_ref());
    let out_norm = layer.post_ffn_norm.as_deref();
    residual_add(pool, hp, &mut s.x, &mut s.proj, out_norm, norm, m);
}

/// The FFN of `m` rows (at most [`FFN_ROWS`]) of `input` into `proj`: the gate and up
/// projections (into `g` and `u`), the activation, the down projection and its bias.
#[allow(clippy::too_many_arguments)]
fn ffn_rows(
    pool: &ThreadPool,
    hp: &HParams,
    map: &GgufFile,
    layer: &Layer,
    act: &mut ActCache,
    (g, u): (&mut [f32], &mut [f32]),
    input: &[f32],
    m: usize,
    proj: &mut [f32],
) {
    let (f, e) = (hp.n_ff, hp.n_embd);
    act.invalidate();
    match (&layer.ffn_gate, hp.activation) {
        (Some(gate), _) => {
            act.project_parts(
                pool,
                map,
                [gate, &layer.ffn_up],
                input,
                m,
                [&mut *g, &mut *u],
            );
        }
        // No gate: the up projection goes where the activation reads.
        (None, Activation::Gelu) => act.project(pool, map, &layer.ffn_up, input, m, g),
        (None, _) => {
            // Fused [gate; up] rows: split each into the two buffers. In increasing t, each move
            // lands on rows already consumed.
            act.project(pool, map, &layer.ffn_up, input, m, g);
            for t in 0..m {
                u[t * f..(t + 1) * f].copy_from_slice(&g[t * 2 * f + f..(t + 1) * 2 * f]);
                g.copy_within(t * 2 * f..t * 2 * f + f, t * f);
            }
        }
    }
    if let Some(b) = &layer.ffn_up_b {
        let up = match hp.activation {
            Activation::Gelu => &mut g[..m * f],
            _ => &mut u[..m * f],
        };
        add_bias(up, b);
    }
    let up = &*u;
    for_rows(pool, g, f, m, |t, gate| {
        let up = &up[t * f..(t + 1) * f];
        match hp.activation {
            Activation::Silu => ops::swiglu(gate, up),
            Activation::GeluTanh => geglu(gate, up),
            Activation::Gelu => gate.iter_mut().for_each(|g| *g = gelu(*g)),
        }
    });
    act.invalidate();
    act.project(pool, map, &layer.ffn_down, g, m, proj);
    if let Some(b) = &layer.ffn_down_b {
        add_bias(&mut proj[..m * e], b);
    }
}

/// GELU-tanh(gate) · up, written into `gate`.
fn geglu(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = gelu(*g) * u;
    }
}

/// GELU-tanh as ggml computes it: read from a table indexed by the input rounded to f16
/// (values beyond ±10 pass through or vanish), so outputs match.
fn gelu(x: f32) -> f32 {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(ops::gelu_tanh(f16::from_bits(bits).to_f32())))
            .collect()
    });
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        table[f16::from_f32(x).to_bits() as usize].to_f32()
    }
}
