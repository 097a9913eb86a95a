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

/// Where the forward pass spends its time, for `rllm bench --profile`: wall time (of the
/// calling thread, so a parallel op counts once) per kind of op, summed over every forward
/// pass in the process while on. Off by default, when an op costs one relaxed load.
pub mod op_times {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::time::Instant;

    /// The kinds of op timed. `Matmul` includes `Quantize` (its activations' quantization);
    /// `Forward` is the whole pass, so the rest is `Forward` less `Matmul` and `Attention`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Op {
        Forward,
        Matmul,
        Quantize,
        Attention,
    }

    pub const OPS: [Op; 4] = [Op::Forward, Op::Matmul, Op::Quantize, Op::Attention];

    impl Op {
        pub fn name(self) -> &'static str {
            match self {
                Op::Forward => "forward",
                Op::Matmul => "matmul",
                Op::Quantize => "quantize",
                Op::Attention => "attention",
            }
        }
    }

    static ON: AtomicBool = AtomicBool::new(false);
    static NANOS: [AtomicU64; OPS.len()] = [const { AtomicU64::new(0) }; OPS.len()];

    /// Start (or stop) timing; the totals so far are kept until [`take`].
    pub fn set_enabled(on: bool) {
        ON.store(on, Relaxed);
    }

    /// Seconds per op since the last call, which resets them.
    pub fn take() -> [(Op, f64); OPS.len()] {
        OPS.map(|op| (op, NANOS[op as usize].swap(0, Relaxed) as f64 * 1e-9))
    }

    /// Adds the time until it is dropped to `op`'s total, when timing is on.
    pub struct Timer(Option<(Op, Instant)>);

    pub fn time(op: Op) -> Timer {
        Timer(ON.load(Relaxed).then(|| (op, Instant::now())))
    }

    impl Drop for Timer {
        fn drop(&mut self) {
            if let Some((op, start)) = self.0 {
                let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                NANOS[op as usize].fetch_add(nanos, Relaxed);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Off: nothing is added; on: a timer's time goes to its op. (Other tests' forward
        /// passes may run during the on window, so only lower bounds are checked there.)
        #[test]
        fn timers_count_only_while_on() {
            take();
            drop(time(Op::Attention));
            assert!(take().iter().all(|&(_, s)| s == 0.0));
            set_enabled(true);
            {
                let _t = time(Op::Matmul);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            set_enabled(false);
            let got = take();
            assert!(got[Op::Matmul as usize].1 >= 0.002, "{got:?}");
        }
    }
}
