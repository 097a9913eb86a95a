//! A persistent thread pool for the forward pass: each parallel operation is one fork-join
//! that costs a few atomic operations, not a task queue and work stealing.
//!
//! A decode step runs hundreds of small operations (per layer: projections, quantizations,
//! attention), each a few microseconds long, so the fork-join latency bounds how far decode
//! scales with threads. Like ggml's CPU threadpool (`ggml-cpu.c`: `ggml_graph_compute_thread`,
//! the `n_graph` counter, `ggml_graph_compute_poll_for_work` then the condition variable),
//! workers poll an epoch counter for a while after each job, so the next operation starts
//! within nanoseconds, and then sleep, so an idle process uses no CPU.
//!
//! Work is split statically: [`ThreadPool::split`] gives every thread one contiguous block of
//! nearly the same number of units. Each output element is computed by the same operations
//! whichever thread owns it, so the split never changes results.

use std::any::Any;
use std::marker::PhantomData;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long a worker (and the caller waiting for them) polls before it sleeps: long enough to
/// span the gap between two operations of a forward pass, short enough that a pool idles
/// within a fraction of a millisecond after it.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(100);

/// Polls between two readings of the clock while spinning.
const SPINS_PER_CLOCK: u32 = 64;

/// A fixed set of threads that run one job at a time; the calling thread is thread 0, so a
/// pool of `n` threads starts `n - 1` workers. Dropping it stops and joins them.
pub struct ThreadPool {
    shared: Arc<Shared>,
    /// `[n_threads - 1]` worker handles, for unparking them.
    threads: Vec<Thread>,
    joins: Vec<JoinHandle<()>>,
}

/// One job: the function every thread runs with its index, on the caller's stack.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
}

/// State shared by the caller and the workers.
struct Shared {
    n_threads: usize,
    spin: Duration,
    /// Bumped once per job (and once to stop); a worker runs the job when it sees it change.
    epoch: AtomicU64,
    /// The current job; valid from the bump of `epoch` until `pending` reaches zero.
    job: AtomicPtr<Job<'static>>,
    /// Workers that have not yet finished the current job.
    pending: AtomicUsize,
    /// Workers parked (or about to park): the caller unparks them only when this is nonzero.
    sleeping: AtomicUsize,
    /// Whether the caller parked waiting for `pending`; `caller` then holds its handle.
    caller_parked: AtomicBool,
    caller: Mutex<Option<Thread>>,
    /// The first panic of a worker in the current job, re-raised on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// A job is running: a call from inside a task, or from a second thread, runs serially.
    busy: AtomicBool,
    stop: AtomicBool,
}

impl ThreadPool {
    /// A pool of `n_threads` threads (at least 1) whose workers spin for [`DEFAULT_SPIN`]
    /// before they sleep.
    pub fn new(n_threads: usize) -> std::io::Result<ThreadPool> {
        ThreadPool::with_spin(n_threads, DEFAULT_SPIN)
    }

    /// A pool whose idle workers poll for `spin` before they park.
    pub fn with_spin(n_threads: usize, spin: Duration) -> std::io::Result<ThreadPool> {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            n_threads,
            spin,
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            pending: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            caller_parked: AtomicBool::new(false),
            caller: Mutex::new(None),
            panic: Mutex::new(None),
            busy: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let mut pool = ThreadPool {
            shared,
            threads: Vec::with_capacity(n_threads - 1),
            joins: Vec::with_capacity(n_threads - 1),
        };
        for i in 1..n_threads {
            let shared = Arc::clone(&pool.shared);
            // On failure `pool` drops here, which stops the workers already started.
            let join = thread::Builder::new()
                .name(format!("rllm-{i}"))
                .spawn(move || shared.work(i))?;
            pool.threads.push(join.thread().clone());
            pool.joins.push(join);
        }
        Ok(pool)
    }

    /// Threads of the pool, the caller included.
    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// `f(i)` once for every thread index `i < n_threads()`, in parallel, with the caller as
    /// thread 0; returns when all have returned. A panic in any of them is re-raised here
    /// once all have finished. A call made while the pool is busy (from inside `f`, or from
    /// another thread) runs every index on the calling thread instead.
    pub fn broadcast(&self, f: impl Fn(usize) + Sync) {
        self.run(&f);
    }

    /// Split `data` among the threads: thread `i` of `t = min(n_threads, n_units)` gets the
    /// units `[i·n/t, (i+1)·n/t)` and calls `f(units, block)` with that block of `data`.
    /// With one unit (or one thread) this runs on the caller alone.
    pub fn split<S: Split>(&self, data: S, f: impl Fn(Range<usize>, S::Block) + Sync) {
        let n = data.n_units();
        let t = self.n_threads().min(n);
        if t <= 1 {
            if n > 0 {
                // SAFETY: the only block taken from `data`.
                f(0..n, unsafe { data.block(0..n) });
            }
            return;
        }
        self.run(&|i| {
            if i < t {
                let units = n * i / t..n * (i + 1) / t;
                // SAFETY: `run` calls this once per thread index, and the threads' unit
                // ranges are disjoint and within `0..n`.
                let block = unsafe { data.block(units.clone()) };
                f(units, block);
            }
        });
    }

    fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        let sh = &*self.shared;
        if sh.n_threads == 1 || sh.busy.swap(true, Ordering::Acquire) {
            (0..sh.n_threads).for_each(f);
            return;
        }
        let job = Job { f };
        sh.pending.store(sh.n_threads - 1, Ordering::Relaxed);
        let ptr: *const Job<'_> = &job;
        sh.job.store(ptr.cast_mut().cast(), Ordering::Relaxed);
        // SeqCst, against the workers' `sleeping` then `epoch` (Dekker): either a worker sees
        // the new epoch before it parks, or this sees it asleep and unparks it.
        sh.epoch.fetch_add(1, Ordering::SeqCst);
        if sh.sleeping.load(Ordering::SeqCst) > 0 {
            self.threads.iter().for_each(Thread::unpark);
        }
        // The workers use `job` until `pending` reaches zero: wait for that even if our
        // share panics.
        let ours = panic::catch_unwind(AssertUnwindSafe(|| f(0)));
        sh.wait_for_workers();
        sh.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        let theirs = sh
            .panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        sh.busy.store(false, Ordering::Release);
        if let Err(p) = ours {
            panic::resume_unwind(p);
        }
        if let Some(p) = theirs {
            panic::resume_unwind(p);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        self.threads.iter().for_each(Thread::unpark);
        for j in self.joins.drain(..) {
            // Workers catch the panics of jobs, so a join error cannot happen.
            let _ = j.join();
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.n_threads())
    }
}

impl Shared {
    /// A worker's life: wait for a new epoch, run its share of the job, report, repeat.
    fn work(&self, i: usize) {
        let mut seen = 0;
        loop {
            seen = self.wait_for_job(seen);
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let job = self.job.load(Ordering::Relaxed);
            // SAFETY: the caller stored a pointer to a `Job` on its stack before bumping the
            // epoch (the epoch load that returned `seen` acquired it), and keeps it alive until
            // `pending` reaches zero, which needs this worker's decrement below.
            let job = unsafe { &*job };
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| (job.f)(i))) {
                let mut slot = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
                slot.get_or_insert(p);
            }
            if self.pending.fetch_sub(1, Ordering::SeqCst) == 1
                && self.caller_parked.load(Ordering::SeqCst)
            {
                let caller = self.caller.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(t) = &*caller {
                    t.unpark();
                }
            }
        }
    }

    /// Poll `epoch` until it differs from `seen`, for `spin`, then park; returns the new epoch.
    /// An epoch cannot move twice while a worker waits: the caller waits for every worker
    /// before it starts the next job.
    fn wait_for_job(&self, seen: u64) -> u64 {
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            let e = self.epoch.load(Ordering::Acquire);
            if e != seen {
                return e;
            }
            std::hint::spin_loop();
            polls = polls.wrapping_add(1);
            if polls % SPINS_PER_CLOCK == 0 && start.elapsed() >= self.spin {
                break;
            }
        }
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        loop {
            let e = self.epoch.load(Ordering::SeqCst);
            if e != seen {
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
                return e;
            }
            // Wakes on the caller's unpark, or spuriously; both re-check the epoch.
            thread::park();
        }
    }

    /// The caller's wait for every worker to finish the job: poll, then park until the last
    /// worker unparks it.
    fn wait_for_workers(&self) {
        let start = Instant::now();
        let mut polls = 0u32;
        while self.pending.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
            polls = polls.wrapping_add(1);
            if polls % SPINS_PER_CLOCK == 0 && start.elapsed() >= self.spin {
                *self.caller.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(thread::current());
                // SeqCst against the last worker's decrement then load (Dekker).
                self.caller_parked.store(true, Ordering::SeqCst);
                while self.pending.load(Ordering::SeqCst) != 0 {
                    thread::park();
                }
                self.caller_parked.store(false, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Data that [`ThreadPool::split`] lends out to the threads in blocks of whole units.
///
/// # Safety
///
/// Blocks for disjoint unit ranges must not alias, and may be used on other threads (the
/// value is shared between the threads, hence `Sync`).
pub unsafe trait Split: Sync {
    type Block;

    /// How many units the data holds.
    fn n_units(&self) -> usize;

    /// The block of `units`.
    ///
    /// # Safety
    ///
    /// `units` lies within `0..n_units()` and overlaps no range passed before for this value.
    unsafe fn block(&self, units: Range<usize>) -> Self::Block;
}

/// A slice lent out in chunks of `unit` elements (the last may be shorter); see [`chunks`].
pub struct Chunks<'a, T> {
    ptr: *mut T,
    len: usize,
    unit: usize,
    _data: PhantomData<&'a mut [T]>,
}

/// Split `data` into units of `unit` elements (the last may be shorter): a block is the
/// sub-slice of its units. `unit` must be positive.
pub fn chunks<T: Send>(data: &mut [T], unit: usize) -> Chunks<'_, T> {
    assert!(unit > 0, "chunks of zero elements");
    Chunks {
        ptr: data.as_mut_ptr(),
        len: data.len(),
        unit,
        _data: PhantomData,
    }
}

// SAFETY: `Chunks` is a `&mut [T]` that hands out disjoint parts to other threads, which
// needs `T: Send` and nothing more (no part is shared).
unsafe impl<T: Send> Sync for Chunks<'_, T> {}

// SAFETY: disjoint unit ranges give disjoint element ranges of the borrowed slice.
unsafe impl<'a, T: Send> Split for Chunks<'a, T> {
    type Block = &'a mut [T];

    fn n_units(&self) -> usize {
        self.len.div_ceil(self.unit)
    }

    unsafe fn block(&self, units: Range<usize>) -> &'a mut [T] {
        let start = units.start * self.unit;
        let end = (units.end * self.unit).min(self.len);
        debug_assert!(start <= end && end <= self.len);
        // SAFETY: `start..end` lies in the slice `ptr` borrows for 'a, and by the caller's
        // contract no other live block overlaps it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }
}

/// A row-major matrix lent out in blocks of columns (every row's part of those columns); see
/// [`columns`].
pub struct Columns<'a, T> {
    ptr: *mut T,
    n_rows: usize,
    width: usize,
    unit: usize,
    _data: PhantomData<&'a mut [T]>,
}

/// Split the rows of `width` elements of `data` by columns, in units of `unit` columns (the
/// last may be narrower): a block is those columns of every row. `width` and `unit` must be
/// positive and `width` must divide `data.len()`.
pub fn columns<T: Send>(data: &mut [T], width: usize, unit: usize) -> Columns<'_, T> {
    assert!(width > 0 && unit > 0, "columns: zero width or unit");
    assert_eq!(data.len() % width, 0, "columns: rows of {width}");
    Columns {
        ptr: data.as_mut_ptr(),
        n_rows: data.len() / width,
        width,
        unit,
        _data: PhantomData,
    }
}

// SAFETY: as for `Chunks`.
unsafe impl<T: Send> Sync for Columns<'_, T> {}

// SAFETY: disjoint unit ranges give disjoint column ranges, so disjoint elements in every row.
unsafe impl<'a, T: Send> Split for Columns<'a, T> {
    type Block = ColumnsMut<'a, T>;

    fn n_units(&self) -> usize {
        self.width.div_ceil(self.unit)
    }

    unsafe fn block(&self, units: Range<usize>) -> ColumnsMut<'a, T> {
        let cols = units.start * self.unit..(units.end * self.unit).min(self.width);
        ColumnsMut {
            ptr: self.ptr,
            n_rows: self.n_rows,
            width: self.width,
            cols,
            _data: PhantomData,
        }
    }
}

/// Columns `cols` of every row of a row-major matrix, owned by one thread.
pub struct ColumnsMut<'a, T> {
    ptr: *mut T,
    n_rows: usize,
    width: usize,
    cols: Range<usize>,
    _data: PhantomData<&'a mut [T]>,
}

impl<T> ColumnsMut<'_, T> {
    /// The columns this block holds.
    pub fn cols(&self) -> Range<usize> {
        self.cols.clone()
    }

    /// The block's part of row `t`. Panics if `t` is not a row.
    pub fn row(&mut self, t: usize) -> &mut [T] {
        assert!(t < self.n_rows, "row {t} of {}", self.n_rows);
        // SAFETY: row `t`'s columns `cols` lie in the borrowed matrix, and belong to this
        // block alone (`Split::block`'s contract); `&mut self` keeps one row lent at a time.
        unsafe {
            let start = self.ptr.add(t * self.width + self.cols.start);
            std::slice::from_raw_parts_mut(start, self.cols.len())
        }
    }
}

// SAFETY: a pair of blocks for the same units, each of which does not alias for disjoint units.
unsafe impl<A: Split, B: Split> Split for (A, B) {
    type Block = (A::Block, B::Block);

    fn n_units(&self) -> usize {
        let n = self.0.n_units();
        assert_eq!(n, self.1.n_units(), "split: parts of different lengths");
        n
    }

    unsafe fn block(&self, units: Range<usize>) -> Self::Block {
        // SAFETY: the caller's contract, passed on to each part.
        unsafe { (self.0.block(units.clone()), self.1.block(units)) }
    }
}

// SAFETY: as for pairs.
unsafe impl<A: Split, B: Split, C: Split> Split for (A, B, C) {
    type Block = (A::Block, B::Block, C::Block);

    fn n_units(&self) -> usize {
        let n = self.0.n_units();
        assert!(
            n == self.1.n_units() && n == self.2.n_units(),
            "split: parts of different lengths"
        );
        n
    }

    unsafe fn block(&self, units: Range<usize>) -> Self::Block {
        // SAFETY: the caller's contract, passed on to each part.
        unsafe {
            (
                self.0.block(units.clone()),
                self.1.block(units.clone()),
                self.2.block(units),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn broadcast_runs_every_index_once() {
        for n in [1, 2, 3, 8] {
            let pool = ThreadPool::new(n).unwrap();
            assert_eq!(pool.n_threads(), n);
            for _ in 0..200 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.broadcast(|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn split_covers_every_element_once() {
        let pool = ThreadPool::new(3).unwrap();
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
    }

    #[test]
    fn panics_reach_the_caller_and_the_pool_survives() {
        let pool = ThreadPool::new(3).unwrap();
        for bad in 0..3 {
            let r = panic::catch_unwind(AssertUnwindSafe(|| {
                pool.broadcast(|i| assert!(i != bad, "task {i} failed"));
            }));
            let msg = r.unwrap_err();
            let msg = msg.downcast_ref::<String>().unwrap();
            assert_eq!(msg, &format!("task {bad} failed"));
        }
        let count = AtomicUsize::new(0);
        pool.broadcast(|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn nested_calls_run_serially() {
        let pool = ThreadPool::new(2).unwrap();
        let count = AtomicUsize::new(0);
        pool.broadcast(|_| {
            pool.broadcast(|_| {
                count.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert_eq!(count.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = ThreadPool::with_spin(3, Duration::ZERO).unwrap();
        for _ in 0..50 {
            let count = AtomicUsize::new(0);
            std::thread::sleep(Duration::from_micros(200));
            pool.broadcast(|_| {
                count.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(count.load(Ordering::Relaxed), 3);
        }
    }
}
