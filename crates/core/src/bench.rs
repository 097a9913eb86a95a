//! Machine measurements for `rllm bench`: the memory bandwidth that bounds decoding speed.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Read-only memory bandwidth in bytes per second with `n_threads` threads, streaming a buffer
/// of `bytes` (make it much larger than the caches); the best of `reps` passes.
pub fn memory_bandwidth(n_threads: usize, bytes: usize, reps: usize) -> Result<f64> {
    if n_threads == 0 || reps == 0 || bytes < 1 << 20 {
        return Err(Error::InvalidArgument(
            "memory_bandwidth needs n_threads >= 1, reps >= 1 and at least 1 MiB".into(),
        ));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {n_threads} threads: {e}")))?;
    // Filled (not zeroed) so that every page is really mapped before timing.
    let buf = vec![1u64; bytes / 8];
    let chunk = buf.len().div_ceil(n_threads * 4);
    let mut best = 0.0f64;
    for _ in 0..reps {
        let start = std::time::Instant::now();
        let sum: u64 = pool.install(|| {
            buf.par_chunks(chunk)
                .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
                .sum()
        });
        let secs = start.elapsed().as_secs_f64();
        // Using the sum keeps the reads from being optimized away.
        if sum != buf.len() as u64 {
            return Err(Error::InvalidArgument("memory check failed".into()));
        }
        best = best.max((buf.len() * 8) as f64 / secs);
    }
    Ok(best)
}
