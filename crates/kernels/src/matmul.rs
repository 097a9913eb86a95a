//! Row-parallel matrix products over a [`DotKernel`]: `y = a · wᵀ` for quantized weight rows
//! and quantized activation rows, on the caller's current rayon pool.
//!
//! Work is split by weight rows: each task owns a run of rows and computes their outputs for
//! every activation row, so each weight row is read from memory once per call (decode, m = 1,
//! is bound by that read). Prompt-sized products of the common types go to [`crate::gemm`]
//! instead; this path serves decode, small batches and the remaining types.

use crate::dispatch::DotKernel;
use rayon::prelude::*;

/// Weight rows per task: about four tasks per thread, within 16..=64 rows.
fn rows_per_task(n_rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    n_rows.div_ceil(4 * threads).clamp(16, 64)
}

/// `y[t * n_rows + r] = dot(weight row r, activation row t)` for `t < m`, `r < n_rows`.
///
/// `w` holds `n_rows` rows of `k.weight.row_bytes(n_cols)` bytes, `a` holds `m` rows of
/// `k.act_row_bytes(n_cols)` bytes (from [`quantize_rows`]), and `y.len() == m * n_rows`.
/// Panics if a length disagrees.
pub fn matmul(
    k: &DotKernel,
    w: &[u8],
    n_rows: usize,
    n_cols: usize,
    a: &[u8],
    m: usize,
    y: &mut [f32],
) {
    let w_row = k
        .weight
        .row_bytes(n_cols)
        .unwrap_or_else(|| panic!("matmul: {n_cols} columns do not fill {} rows", k.weight));
    let a_row = k.act_row_bytes(n_cols);
    assert_eq!(
        Some(w.len()),
        n_rows.checked_mul(w_row),
        "matmul: weight bytes for {n_rows}×{n_cols} {}",
        k.weight
    );
    assert_eq!(
        Some(a.len()),
        m.checked_mul(a_row),
        "matmul: activation bytes for {m}×{n_cols} {}",
        k.act
    );
    assert_eq!(
        Some(y.len()),
        m.checked_mul(n_rows),
        "matmul: output length"
    );
    if y.is_empty() {
        return;
    }
    if n_cols == 0 {
        y.fill(0.0);
        return;
    }

    let chunk = rows_per_task(n_rows);
    if m == 1 {
        // Decode: the output row is contiguous, so tasks take slices of it.
        y.par_chunks_mut(chunk)
            .zip(w.par_chunks(chunk * w_row))
            .for_each(|(ys, ws)| k.dot_rows(n_cols, ws, a, ys));
        return;
    }

    // Prefill: task c writes columns [c·chunk, (c+1)·chunk) of every output row, so it gets
    // one disjoint sub-slice per activation row.
    let n_tasks = n_rows.div_ceil(chunk);
    let mut outs: Vec<Vec<&mut [f32]>> = (0..n_tasks).map(|_| Vec::with_capacity(m)).collect();
    for y_t in y.chunks_mut(n_rows) {
        for (c, part) in y_t.chunks_mut(chunk).enumerate() {
            outs[c].push(part);
        }
    }
    outs.into_par_iter()
        .zip(w.par_chunks(chunk * w_row))
        .for_each(|(mut out, ws)| {
            for (t, out) in out.iter_mut().enumerate() {
                k.dot_rows(n_cols, ws, &a[t * a_row..(t + 1) * a_row], out);
            }
        });
}

/// Quantize the `x.len() / n_cols` activation rows of `x` into `out` (resized to
/// `m * k.act_row_bytes(n_cols)`), in parallel over rows.
pub fn quantize_rows(k: &DotKernel, x: &[f32], n_cols: usize, out: &mut Vec<u8>) {
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
    out.par_chunks_mut(a_row)
        .zip(x.par_chunks(n_cols))
        .for_each(|(o, xr)| k.quantize_act(xr, o));
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
                    quantize_rows(&k, &x, n_cols, &mut a);
                    let mut y = vec![f32::NAN; m * n_rows];
                    matmul(&k, &w, n_rows, n_cols, &a, m, &mut y);
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
    fn matmul_handles_empty_shapes() {
        let k = dot_kernel_for(GgmlType::Q8_0, crate::active_isa()).unwrap();
        let mut y: Vec<f32> = vec![];
        matmul(&k, &[], 0, 32, &[0u8; 34], 1, &mut y);
        matmul(&k, &[0u8; 34], 1, 32, &[], 0, &mut y);
        let mut y = vec![1.0f32; 6];
        let kf = dot_kernel_for(GgmlType::F32, crate::active_isa()).unwrap();
        matmul(&kf, &[], 3, 0, &[], 2, &mut y);
        assert_eq!(y, [0.0; 6]);
        let mut a = vec![1u8];
        quantize_rows(&k, &[], 32, &mut a);
        assert!(a.is_empty());
    }

    #[test]
    #[should_panic(expected = "output length")]
    fn matmul_checks_output_length() {
        let k = dot_kernel_for(GgmlType::Q8_0, crate::active_isa()).unwrap();
        let mut y = vec![0f32; 3];
        matmul(&k, &[0u8; 68], 2, 32, &[0u8; 34], 1, &mut y);
    }
}
