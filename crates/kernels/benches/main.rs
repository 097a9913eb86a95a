//! Kernel throughput per weight type: `matmul` of one activation row against a 4096×4096
//! weight matrix (the decode case, bound by reading the weights) on 1 and 2 threads, one
//! 4096-element `dot` per type and ISA (throughput in bytes of weights), and the prompt GEMM
//! of 128 activation rows against a 2048×2048 matrix per type and ISA on one thread
//! (throughput in multiply-adds).
//!
//! `cargo bench -p rllm-kernels` (criterion; `-- matmul`, `-- dot` or `-- gemm` to pick a
//! group).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rllm_kernels::blocks::can_quantize;
use rllm_kernels::dispatch::{available_isas, dot_kernel_for};
use rllm_kernels::gemm::{Gemm, GemmActs, GemmInput};
use rllm_kernels::matmul::{matmul, quantize_rows};
use rllm_kernels::{active_isa, GgmlType};
use std::time::Duration;

const K: usize = 4096;
const ROWS: usize = 4096;

/// Deterministic pseudo-random f32 in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A weight matrix of `ty`: quantized from random values where rllm has a quantizer, else
/// random bytes with small f16 scales at the start of each block.
fn weights(ty: GgmlType, rows: usize) -> Vec<u8> {
    weights_k(ty, rows, K)
}

fn weights_k(ty: GgmlType, rows: usize, k: usize) -> Vec<u8> {
    let row = ty.row_bytes(k).unwrap();
    let mut w = vec![0u8; rows * row];
    if can_quantize(ty) {
        let x = values(rows * k, ty.id() as u64 + 1);
        rllm_kernels::quantize_rows(ty, &x, k, &mut w, None);
    } else {
        let bytes = values(w.len(), 7);
        for (b, v) in w.iter_mut().zip(bytes) {
            *b = (v * 127.0 + 128.0) as u8;
        }
        let scale = half::f16::from_f32(0.01).to_bits().to_le_bytes();
        for b in w.chunks_exact_mut(ty.type_size()) {
            let at = if ty == GgmlType::IQ1_M { 54 } else { 0 };
            b[at..at + 2].copy_from_slice(&scale);
        }
    }
    w
}

fn types() -> Vec<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|&t| rllm_kernels::supports(t) && t != GgmlType::Q8_1 && t != GgmlType::Q8_K)
        .collect()
}

fn bench_matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    let x = values(K, 99);
    for ty in types() {
        let k = dot_kernel_for(ty, active_isa()).unwrap();
        let w = weights(ty, ROWS);
        let mut a = Vec::new();
        quantize_rows(
            &rllm_kernels::ThreadPool::new(1).unwrap(),
            &k,
            &x,
            K,
            &mut a,
        );
        let mut y = vec![0f32; ROWS];
        g.throughput(Throughput::Bytes(w.len() as u64));
        for threads in [1, 2] {
            let pool = rllm_kernels::ThreadPool::new(threads).unwrap();
            let id = BenchmarkId::new(ty.name(), format!("t{threads}"));
            g.bench_function(id, |b| {
                b.iter(|| matmul(&pool, &k, &w, ROWS, K, &a, 1, &mut y))
            });
        }
    }
    g.finish();
}

fn bench_dot(c: &mut Criterion) {
    let mut g = c.benchmark_group("dot");
    g.sample_size(10)
        .measurement_time(Duration::from_millis(500))
        .warm_up_time(Duration::from_millis(100));
    let x = values(K, 5);
    for ty in types() {
        let w = weights(ty, 1);
        g.throughput(Throughput::Bytes(w.len() as u64));
        for isa in available_isas() {
            let k = dot_kernel_for(ty, isa).unwrap();
            let mut a = vec![0u8; k.act_row_bytes(K)];
            k.quantize_act(&x, &mut a);
            let id = BenchmarkId::new(ty.name(), isa.name());
            g.bench_function(id, |b| b.iter(|| k.dot(K, &w, &a)));
        }
    }
    g.finish();
}

fn bench_gemm(c: &mut Criterion) {
    const N: usize = 2048;
    const M: usize = 128;
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    g.throughput(Throughput::Elements((M * N * N) as u64));
    let x = values(M * N, 11);
    let pool = rllm_kernels::ThreadPool::new(1).unwrap();
    for ty in types() {
        let w = weights_k(ty, N, N);
        let mut y = vec![0f32; M * N];
        for isa in available_isas() {
            let Some(gemm) = Gemm::new(ty, isa) else {
                continue;
            };
            let id = BenchmarkId::new(ty.name(), isa.name());
            match gemm.input() {
                GemmInput::Blocks32 => {
                    let mut a = GemmActs::default();
                    a.quantize(&pool, &x, N);
                    g.bench_function(id, |b| b.iter(|| gemm.matmul(&pool, &w, N, N, &a, &mut y)));
                }
                GemmInput::Q8K => {
                    let k = dot_kernel_for(ty, isa).unwrap();
                    let mut a = Vec::new();
                    quantize_rows(&pool, &k, &x, N, &mut a);
                    g.bench_function(id, |b| {
                        b.iter(|| gemm.matmul_q8k(&pool, &w, N, N, &a, M, &mut y))
                    });
                }
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench_matmul, bench_dot, bench_gemm);
criterion_main!(benches);
