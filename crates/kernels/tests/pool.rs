//! The forward pass's thread pool (`rllm_kernels::pool`): every task runs exactly once, with
//! any number of threads, spin time and timing; panics reach the caller; nested and
//! concurrent calls; stopping. No test measures time: the stress tests vary timing (spin of
//! zero, so both sides park after every job; more threads than cores; tasks that yield or
//! sleep) and check only the counts, so a lost wakeup shows up as a hang, a lost or repeated
//! task as a failure.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use rllm_kernels::pool::{chunks, columns, ThreadPool, DEFAULT_SPIN, MAX_THREADS};

/// Counters for `n` tasks.
fn counters(n: usize) -> Vec<AtomicUsize> {
    (0..n).map(|_| AtomicUsize::new(0)).collect()
}

fn all_once(hits: &[AtomicUsize]) -> bool {
    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1)
}

/// Deterministic xorshift, for varying shapes and timing.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn thread_counts_are_clamped() {
    assert_eq!(ThreadPool::new(0).unwrap().n_threads(), 1);
    assert_eq!(ThreadPool::new(5).unwrap().n_threads(), 5);
    assert_eq!(MAX_THREADS, 1 << 14);
}

#[test]
fn run_runs_every_task_once() {
    for n in [1, 2, 3, 8] {
        let pool = ThreadPool::new(n).unwrap();
        assert_eq!(pool.n_threads(), n);
        for n_tasks in [0, 1, 2, 5, 100] {
            for _ in 0..50 {
                let hits = counters(n_tasks);
                pool.run(n_tasks, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(all_once(&hits), "{n} threads, {n_tasks} tasks");
            }
        }
    }
}

#[test]
fn split_covers_every_element_once() {
    for threads in [1, 3, 16] {
        let pool = ThreadPool::new(threads).unwrap();
        for len in [0, 1, 2, 5, 7, 64, 1000] {
            for unit in [1, 3, 16] {
                let mut v = vec![0u32; len];
                pool.split(chunks(&mut v, unit), |units, block| {
                    assert!(block.len() <= units.len() * unit);
                    for (j, x) in block.iter_mut().enumerate() {
                        *x += (units.start * unit + j) as u32 + 1;
                    }
                });
                assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 + 1));
            }
        }
    }
}

#[test]
fn split_parts_runs_each_part_once_in_tasks_of_about_equal_size() {
    let pool = ThreadPool::new(4).unwrap();
    for lens in [
        [0, 0, 0],
        [0, 5, 0],
        [2048, 512, 512],
        [576, 192, 192],
        [1, 1, 1000],
    ] {
        let mut data: Vec<Vec<usize>> = lens.iter().map(|&n| vec![0; n]).collect();
        let sizes = Mutex::new(Vec::new());
        let parts: Vec<_> = data.iter_mut().map(|d| chunks(d, 1)).collect();
        pool.split_parts(&parts, |j, units, block| {
            assert_eq!(block.len(), units.len());
            for (i, x) in block.iter_mut().enumerate() {
                *x += (j << 32) + units.start + i + 1;
            }
            sizes.lock().unwrap().push((lens[j], units.len()));
        });
        for (j, d) in data.iter().enumerate() {
            assert!(d.iter().enumerate().all(|(i, &x)| x == (j << 32) + i + 1));
        }
        // No task is more than twice the size of another of a part of more than one task.
        let sizes = sizes.into_inner().unwrap();
        let big = sizes.iter().filter(|&&(n, _)| n >= 64).map(|&(_, s)| s);
        if let (Some(lo), Some(hi)) = (big.clone().min(), big.max()) {
            assert!(hi <= 2 * lo, "{lens:?}: tasks of {lo} to {hi} units");
        }
    }
}

#[test]
fn columns_and_tuples_split_together() {
    let pool = ThreadPool::new(4).unwrap();
    let (rows, width) = (5, 37);
    let mut m = vec![0usize; rows * width];
    let mut tag = vec![0usize; width];
    pool.split(
        (columns(&mut m, width, 2), chunks(&mut tag, 2)),
        |_, (mut c, t)| {
            let c0 = c.cols().start;
            for r in 0..rows {
                for (j, x) in c.row(r).iter_mut().enumerate() {
                    *x = r * width + c0 + j;
                }
            }
            t.fill(c.cols().start);
        },
    );
    assert!(m.iter().enumerate().all(|(i, &x)| x == i));
    // Each tag is the first column of the block that holds it.
    assert!(tag.iter().enumerate().all(|(i, &x)| x <= i && x % 2 == 0));
    // A zero width holds nothing.
    pool.split(columns(&mut [0u8; 0][..], 0, 1), |_, _| unreachable!());
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // Each output is a function of its index alone, however the tasks fall.
    let reference: Vec<f32> = (0..4099).map(|i| (i as f32 * 0.37).sin() / 3.0).collect();
    for threads in [1, 2, 3, 5, 16] {
        for spin in [Duration::ZERO, DEFAULT_SPIN] {
            let pool = ThreadPool::with_spin(threads, spin).unwrap();
            let mut out = vec![0f32; reference.len()];
            pool.split(chunks(&mut out, 7), |units, block| {
                for (j, x) in block.iter_mut().enumerate() {
                    *x = ((units.start * 7 + j) as f32 * 0.37).sin() / 3.0;
                }
            });
            assert!(out
                .iter()
                .zip(&reference)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}

/// The panic's message.
fn message(p: Box<dyn std::any::Any + Send>) -> String {
    match p.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p.downcast_ref::<&str>().unwrap().to_string(),
    }
}

#[test]
fn panics_reach_the_caller_after_every_other_task_ran() {
    let pool = ThreadPool::new(3).unwrap();
    for n_tasks in [2, 3, 50] {
        for bad in [0, 1, n_tasks - 1] {
            let hits = counters(n_tasks);
            let r = panic::catch_unwind(AssertUnwindSafe(|| {
                pool.run(n_tasks, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                    assert!(i != bad, "task {i} failed");
                });
            }));
            assert_eq!(message(r.unwrap_err()), format!("task {bad} failed"));
            assert!(all_once(&hits));
        }
    }
    // Every task panics: one panic comes back, and the pool still works.
    let r = panic::catch_unwind(AssertUnwindSafe(|| pool.run(40, |_| panic!("all"))));
    assert_eq!(message(r.unwrap_err()), "all");
    let hits = counters(7);
    pool.run(7, |i| {
        hits[i].fetch_add(1, Ordering::Relaxed);
    });
    assert!(all_once(&hits));
}

#[test]
fn nested_calls_run_serially_on_the_calling_thread() {
    let pool = ThreadPool::new(4).unwrap();
    let hits = counters(8 * 5);
    pool.run(8, |i| {
        let outer = thread::current().id();
        pool.run(5, |j| {
            assert_eq!(thread::current().id(), outer);
            hits[i * 5 + j].fetch_add(1, Ordering::Relaxed);
        });
    });
    assert!(all_once(&hits));
    // A panic inside a nested call reaches the outer caller too.
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        pool.run(4, |i| pool.run(3, |j| assert!(i + j != 4, "nested")));
    }));
    assert_eq!(message(r.unwrap_err()), "nested");
}

#[test]
fn concurrent_callers_share_one_pool() {
    let pool = ThreadPool::new(3).unwrap();
    let total = AtomicUsize::new(0);
    thread::scope(|s| {
        for c in 0..3 {
            let (pool, total) = (&pool, &total);
            s.spawn(move || {
                for k in 0..2000 {
                    let n_tasks = 1 + (k + c) % 9;
                    let hits = counters(n_tasks);
                    pool.run(n_tasks, |i| {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(all_once(&hits));
                    total.fetch_add(n_tasks, Ordering::Relaxed);
                }
            });
        }
    });
    let want: usize = (0..3)
        .map(|c| (0..2000).map(|k| 1 + (k + c) % 9).sum::<usize>())
        .sum();
    assert_eq!(total.load(Ordering::Relaxed), want);
}

#[test]
fn pools_stop_whether_new_polling_or_parked() {
    // Dropped before the workers have started.
    drop(ThreadPool::new(8).unwrap());
    // Dropped while the workers poll for the next job.
    let pool = ThreadPool::with_spin(4, Duration::from_secs(3600)).unwrap();
    pool.run(8, |_| {});
    drop(pool);
    // Dropped while the workers are parked.
    let pool = ThreadPool::with_spin(4, Duration::ZERO).unwrap();
    pool.run(8, |_| {});
    thread::sleep(Duration::from_millis(5));
    drop(pool);
    // Dropped after a job that panicked.
    let pool = ThreadPool::new(3).unwrap();
    let r = panic::catch_unwind(AssertUnwindSafe(|| pool.run(9, |_| panic!("x"))));
    assert!(r.is_err());
    drop(pool);
}

#[test]
fn many_quick_jobs_lose_no_wakeup() {
    // With no spin, workers park after every job and the caller parks whenever it waits, so
    // each job goes through both sleep handshakes; a lost wakeup would hang here.
    for threads in [2, 4, 16] {
        let pool = ThreadPool::with_spin(threads, Duration::ZERO).unwrap();
        let count = AtomicUsize::new(0);
        for k in 0..3000 {
            let n_tasks = 2 + k % (2 * threads);
            pool.run(n_tasks, |_| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        }
        let want: usize = (0..3000).map(|k| 2 + k % (2 * threads)).sum();
        assert_eq!(count.load(Ordering::Relaxed), want);
    }
}

#[test]
fn stress_random_shapes_and_timing() {
    // More threads than cores, spins from none to long, tasks that yield or sleep so that
    // workers join late, miss jobs, or are preempted inside one.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..24 {
        let threads = 1 + rng.below(12);
        let spin = [Duration::ZERO, Duration::from_micros(1), DEFAULT_SPIN][round % 3];
        let pool = ThreadPool::with_spin(threads, spin).unwrap();
        for _ in 0..150 {
            let n_tasks = rng.below(40);
            let delay = rng.below(4);
            let hits = counters(n_tasks);
            pool.run(n_tasks, |i| {
                match (i + delay) % 7 {
                    0 => thread::yield_now(),
                    1 if delay == 0 => thread::sleep(Duration::from_micros(50)),
                    _ => {}
                }
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(all_once(&hits), "{threads} threads, {n_tasks} tasks");
            if rng.below(10) == 0 {
                // Long enough for workers to park.
                thread::sleep(Duration::from_micros(300));
            }
        }
    }
}
