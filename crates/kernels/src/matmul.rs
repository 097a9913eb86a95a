//! Row-parallel matrix products over a [`DotKernel`]: `y = a · wᵀ` for quantized weight rows
//! and quantized activation rows, on a [`ThreadPool`].
//!
//! Work is split by weight rows: each task owns one contiguous run of rows and computes
//! their outputs for every activation row, so each weight row is read from memory once per
//! call (decode, m = 1, is bound by that read). Prompt-sized products of the common types go to
//! [`crate::gemm`] instead; this path serves decode, small batches and the remaining types.

use crate::dispatch::DotKernel;
use crate::pool::{chunks, columns, ThreadPool};

/// Weight rows a thread takes at a time when there are several activation rows: those rows
/// stay in cache while every activation row is multiplied with them.
const ROWS_PER_PASS: usize = 64;

/// `y[t * n_rows + r] = dot(weight row r, activation row t)` for `t < m`, `r < n_rows`.
///
/// `w` holds `n_rows` rows of `k.weight.row_bytes(n_cols)` bytes, `a` holds `m` rows of
/// `k.act_row_bytes(n_cols)` bytes (from [`quantize_rows`]), and `y.len() == m * n_rows`.
/// Panics if a length disagrees.
pub fn matmul(
    pool: &ThreadPool,
    k: &DotKernel,
    w: &[u8],
    n_rows: usize,
    n_cols: usize,
    a: &[u8],
    m: usize,
    y: &mut [f32],
) {
    let weights = Weights {
        kernel: k,
        w,
        n_rows,
    };
    matmul_parts(pool, [weights], n_cols, a, m, [y]);
}

/// One weight matrix of [`matmul_parts`]: `n_rows` rows of `kernel.weight` in `w`.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    pub kernel: &'a DotKernel,
    pub w: &'a [u8],
    pub n_rows: usize,
}

/// [`matmul`] of the same activation rows `a` with several weight matrices whose kernels share
/// an activation format, in one parallel job: `ys[j] = a · ws[j]ᵀ`. Each output is what
/// [`matmul`] would write, so fusing products changes nothing but the fork-joins spent.
pub fn matmul_parts<const N: usize>(
    pool: &ThreadPool,
    ws: [Weights<'_>; N],
    n_cols: usize,
    a: &[u8],
    m: usize,
    ys: [&mut [f32]; N],
) {
    let Some(first) = ws.first() else {
        return;
    };
    let a_row = first.kernel.act_row_bytes(n_cols);
    assert_eq!(
        Some(a.len()),
        m.checked_mul(a_row),
        "matmul: activation bytes for {m}×{n_cols} {}",
        first.kernel.act
    );
    let w_rows = ws.map(
        |Weights {
             kernel: k,
             w,
             n_rows,
         }| {
            assert_eq!(k.act, first.kernel.act, "matmul: activation formats differ");
            let w_row = k.weight.row_bytes(n_cols).unwrap_or_else(|| {
                panic!("matmul: {n_cols} columns do not fill {} rows", k.weight)
            });
            assert_eq!(
                Some(w.len()),
                n_rows.checked_mul(w_row),
                "matmul: weight bytes for {n_rows}×{n_cols} {}",
                k.weight
            );
            w_row
        },
    );
    for (wt, y) in ws.iter().zip(&ys) {
        assert_eq!(
            Some(y.len()),
            m.checked_mul(wt.n_rows),
            "matmul: output length"
        );
    }
    if ys.iter().all(|y| y.is_empty()) {
        return;
    }
    if n_cols == 0 {
        ys.into_iter().for_each(|y| y.fill(0.0));
        return;
    }

    // A task owns a run of one matrix's weight rows, and writes their outputs (columns) for
    // every activation row: each weight row is read from memory once. For decode (m = 1) the
    // task's output is one contiguous run.
    let mut ys = ys.into_iter();
    let parts: [_; N] = std::array::from_fn(|j| columns(ys.next().unwrap(), ws[j].n_rows, 1));
    pool.split_parts(&parts, |j, rows, mut out| {
        let (k, w, w_row) = (ws[j].kernel, ws[j].w, w_rows[j]);
        if m == 1 {
            // One activation row: no reuse to block for, and the kernel reads the whole run
            // (several rows side by side where it can).
            k.dot_rows(
                n_cols,
                &w[rows.start * w_row..rows.end * w_row],
                a,
                out.row(0),
            );
            return;
        }
        for r0 in rows.clone().step_by(ROWS_PER_PASS) {
            let r1 = rows.end.min(r0 + ROWS_PER_PASS);
            let wr = &w[r0 * w_row..r1 * w_row];
            let local = r0 - rows.start..r1 - rows.start;
            for t in 0..m {
                let at = &a[t * a_row..(t + 1) * a_row];
                k.dot_rows(n_cols, wr, at, &mut out.row(t)[local.clone()]);
            }
        }
    });
}

/// Quantize the `x.len() / n_cols` activation rows of `x` into `out` (resized to
/// `m * k.act_row_bytes(n_cols)`), in parallel over rows.
pub fn quantize_rows(
    pool: &ThreadPool,
    k: &DotKernel,
    x: &[f32],
    n_cols: usize,
    out: &mut Vec<u8>,
) {
    let a_row = k.act_row_bytes(n_cols);
    if n_cols == 0 {
        out.clear();
        return;
    }
    assert!(
        x.len() % n_cols == 0,
        "quantize_rows: {} values are not whole rows of {n_cols}",
        x.len()
    );
    let m = x.len() / n_cols;
    out.resize(m * a_row, 0);
    pool.split(chunks(out.as_mut_slice(), a_row), |rows, o| {
        let xs = &x[rows.start * n_cols..rows.end * n_cols];
        for (o, xr) in o.chunks_exact_mut(a_row).zip(xs.chunks_exact(n_cols)) {
            k.quantize_act(xr, o);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::{available_isas, dot_kernel_for};
    use crate::types::GgmlType;

    /// Deterministic xorshift bytes.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    /// Weight rows with small finite f16 scales: patch the scale fields after random fill.
    fn weights(ty: GgmlType, n_rows: usize, n_cols: usize, seed: u64) -> Vec<u8> {
        let mut w = bytes(n_rows * ty.row_bytes(n_cols).unwrap(), seed);
        let scale = half::f16::from_f32(0.01).to_bits().to_le_bytes();
        let offsets: &[usize] = match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            _ => &[],
        };
        for b in w.chunks_exact_mut(ty.type_size()) {
            for &o in offsets {
                b[o..o + 2].copy_from_slice(&scale);
            }
        }
        if ty == GgmlType::F16 {
            for (i, v) in w.chunks_exact_mut(2).enumerate() {
                let x = ((i * 7919) % 200) as f32 / 100.0 - 1.0;
                v.copy_from_slice(&half::f16::from_f32(x).to_bits().to_le_bytes());
            }
        }
        w
    }

    #[test]
    fn matmul_equals_loop_of_dots() {
        let pool = ThreadPool::new(3).unwrap();
        for isa in available_isas() {
            for (ty, n_cols) in [
                (GgmlType::Q4_0, 64),
                (GgmlType::Q4_K, 512),
                (GgmlType::Q6_K, 256),
                (GgmlType::F16, 40),
            ] {
                let k = dot_kernel_for(ty, isa).unwrap();
                for (n_rows, m) in [(1, 1), (37, 1), (100, 3), (70, 17), (130, 40)] {
                    let w = weights(ty, n_rows, n_cols, 7 + n_rows as u64);
                    let x: Vec<f32> = (0..m * n_cols)
                        .map(|i| ((i * 31) % 97) as f32 / 48.0 - 1.0)
                        .collect();
                    let mut a = Vec::new();
                    quantize_rows(&pool, &k, &x, n_cols, &mut a);
                    let mut y = vec![f32::NAN; m * n_rows];
                    matmul(&pool, &k, &w, n_rows, n_cols, &a, m, &mut y);
                    let wr = ty.row_bytes(n_cols).unwrap();
                    let ar = k.act_row_bytes(n_cols);
                    for t in 0..m {
                        let mut one = vec![0u8; ar];
                        k.quantize_act(&x[t * n_cols..(t + 1) * n_cols], &mut one);
                        assert_eq!(one, &a[t * ar..(t + 1) * ar]);
                        for r in 0..n_rows {
                            let want = k.dot(n_cols, &w[r * wr..(r + 1) * wr], &one);
                            // Many-rows kernels reduce their sums in another order.
                            let got = y[t * n_rows + r];
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "{ty} {isa}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn results_are_the_same_bits_for_any_thread_count_and_fusion() {
        let isa = crate::active_isa();
        let (n_cols, m) = (256, 3);
        let kq = dot_kernel_for(GgmlType::Q4_K, isa).unwrap();
        let k6 = dot_kernel_for(GgmlType::Q6_K, isa).unwrap();
        let (wq, wv) = (
            weights(GgmlType::Q4_K, 97, n_cols, 3),
            weights(GgmlType::Q6_K, 33, n_cols, 4),
        );
        let x: Vec<f32> = (0..m * n_cols).map(|i| (i as f32 * 0.13).cos()).collect();
        let mut a = Vec::new();
        quantize_rows(&ThreadPool::new(1).unwrap(), &kq, &x, n_cols, &mut a);
        let mut want = (vec![0f32; m * 97], vec![0f32; m * 33]);
        let one = ThreadPool::new(1).unwrap();
        matmul(&one, &kq, &wq, 97, n_cols, &a, m, &mut want.0);
        matmul(&one, &k6, &wv, 33, n_cols, &a, m, &mut want.1);
        for threads in [2, 3, 5, 16] {
            let pool = ThreadPool::new(threads).unwrap();
            for m in [1, m] {
                let (mut q, mut v) = (vec![f32::NAN; m * 97], vec![f32::NAN; m * 33]);
                let ws = [
                    Weights {
                        kernel: &kq,
                        w: &wq,
                        n_rows: 97,
                    },
                    Weights {
                        kernel: &k6,
                        w: &wv,
                        n_rows: 33,
                    },
                ];
                let a = &a[..m * kq.act_row_bytes(n_cols)];
                matmul_parts(&pool, ws, n_cols, a, m, [&mut q[..], &mut v[..]]);
                let same = |got: &[f32], want: &[f32]| {
                    got.iter()
                        .zip(want)
                        .all(|(g, w)| g.to_bits() == w.to_bits())
                };
                assert!(same(&q, &want.0[..m * 97]), "{threads} threads, m = {m}");
                assert!(same(&v, &want.1[..m * 33]), "{threads} threads, m = {m}");
            }
        }
    }

    #[test]
    fn matmul_handles_empty_shapes() {
        let pool = ThreadPool::new(2).unwrap();
        let k = dot_kernel_for(GgmlType::Q8_0, crate::active_isa()).unwrap();
        let mut y: Vec<f32> = vec![];
        matmul(&pool, &k, &[], 0, 32, &[0u8; 34], 1, &mut y);
        matmul(&pool, &k, &[0u8; 34], 1, 32, &[], 0, &mut y);
        let mut y = vec![1.0f32; 6];
        let kf = dot_kernel_for(GgmlType::F32, crate::active_isa()).unwrap();
        matmul(&pool, &kf, &[], 3, 0, &[], 2, &mut y);
        assert_eq!(y, [0.0; 6]);
        let mut a = vec![1u8];
        quantize_rows(&pool, &k, &[], 32, &mut a);
        assert!(a.is_empty());
    }

    #[test]
    #[should_panic(expected = "output length")]
    fn matmul_checks_output_length() {
        let pool = ThreadPool::new(2).unwrap();
        let k = dot_kernel_for(GgmlType::Q8_0, crate::active_isa()).unwrap();
        let mut y = vec![0f32; 3];
        matmul(&pool, &k, &[0u8; 68], 2, 32, &[0u8; 34], 1, &mut y);
    }
}
