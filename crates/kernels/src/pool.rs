//! A persistent thread pool for the forward pass: each parallel operation is one fork-join
//! that costs a few atomic operations, not a task queue and work stealing.
//!
//! A decode step runs hundreds of small operations (per layer: projections and attention),
//! each a few microseconds long, so the fork-join latency bounds how far decode scales with
//! threads. Like ggml's CPU threadpool (`ggml-cpu.c`: `ggml_graph_compute_thread`, the
//! `n_graph` counter, `ggml_graph_compute_poll_for_work` then the condition variable), workers
//! poll for the next job for a while after each one, so it starts within nanoseconds, and then
//! sleep, so an idle process uses no CPU.
//!
//! A job is `n_tasks` tasks of fixed bounds that the threads claim from a shared counter, as
//! ggml's `mul_mat` claims chunks (`current_chunk`). The caller takes part and never waits for
//! a worker that has not started: a worker *joins* a job while it is open, the caller *closes*
//! it once every task is claimed, then waits only for the workers that joined. On an idle
//! machine every thread takes about the same share; on a busy one a thread the OS has not
//! scheduled costs nothing, as the others take its tasks (a fixed split per thread made decode
//! 4x slower when one of two cores was busy). Each output element is computed by the same
//! operations whichever thread runs its task, so results never depend on the thread count or
//! on timing.
//!
//! The protocol, on one atomic word (`Shared::state`: epoch, closed flag, joined and done
//! counts), so that joining, finishing and closing are ordered against each other:
//! - the caller stores the job pointer, then opens a new epoch (joined = done = 0);
//! - a worker joins with a compare-exchange that succeeds only while that epoch is open, which
//!   also acquires the job pointer; it claims tasks until none is left, then adds one to done;
//! - the caller claims tasks too; when none is left it sets the closed flag (no join can
//!   succeed after it), then waits until done equals joined, and only then lets the job (on
//!   its stack) go out of scope.
//!
//! Sleeping on both sides is a Dekker pattern over SeqCst operations: a worker counts itself
//! in `sleeping` before its last look at `state`, and the caller reads `sleeping` after
//! opening; the caller sets `caller_parked` before its last look at `state`, and the last
//! worker reads it after adding to done. Either the sleeper sees the change, or the other side
//! sees the sleeper and unparks it.
//!
//! After a `fork` the child has the pool but none of its workers: no one joins, so its jobs
//! run on the caller alone, with the same results.

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

/// Tasks per thread that [`ThreadPool::split`] cuts its data into: enough for the others to
/// make up for a late thread, few enough that each task is a long contiguous run.
pub const TASKS_PER_THREAD: usize = 4;

/// The most threads a pool holds: the joined and done counts are 15-bit fields of `state`.
pub const MAX_THREADS: usize = 1 << 14;

/// Polls with a spin hint before polling turns to yielding the core (see [`Poll`]).
const SPINS_BEFORE_YIELD: u32 = 16;

// `Shared::state`: epoch (bits 32..64), closed (bit 31), workers joined (bits 16..31),
// workers done (bits 0..15).
const CLOSED: u64 = 1 << 31;
const JOINED_ONE: u64 = 1 << 16;
const DONE_ONE: u64 = 1;
const COUNT_MASK: u64 = 0x7FFF;

fn epoch(s: u64) -> u64 {
    s >> 32
}

/// Whether every worker that joined the job of `s` is done with it.
fn all_done(s: u64) -> bool {
    (s >> 16) & COUNT_MASK == s & COUNT_MASK
}

/// A fixed set of threads that run one job at a time; the calling thread takes part, so a
/// pool of `n` threads starts `n - 1` workers. Dropping it stops and joins them.
pub struct ThreadPool {
    shared: Arc<Shared>,
    /// `[n_threads - 1]` worker handles, for unparking them.
    threads: Vec<Thread>,
    joins: Vec<JoinHandle<()>>,
}

/// One job, on the caller's stack: `f(task)` for every task, each claimed once from `next`.
/// Aligned to a cache line, so that claiming does not contend with the caller's other locals.
#[repr(align(64))]
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n_tasks: usize,
    next: AtomicUsize,
}

impl Job<'_> {
    /// Claim and run tasks until none is left; returns the first panic among them. A task
    /// that panics does not stop the others, so every task runs once whatever happens.
    fn work(&self) -> Option<Box<dyn Any + Send>> {
        let (f, n_tasks) = (self.f, self.n_tasks);
        let mut panicked = None;
        loop {
            let t = self.next.fetch_add(1, Ordering::Relaxed);
            if t >= n_tasks {
                return panicked;
            }
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| f(t))) {
                panicked.get_or_insert(p);
            }
        }
    }
}

/// State shared by the caller and the workers.
struct Shared {
    n_threads: usize,
    spin: Duration,
    /// Epoch, closed flag, joined and done counts of the current job (see the constants and
    /// the module comment). Between jobs it is closed with done equal to joined.
    state: AtomicU64,
    /// The current job; valid for a worker from its join until it adds itself to done.
    job: AtomicPtr<Job<'static>>,
    /// Workers parked (or about to park): the caller unparks them only when this is nonzero.
    sleeping: AtomicUsize,
    /// Whether the caller parked waiting for workers; `caller` then holds its handle.
    caller_parked: AtomicBool,
    caller: Mutex<Option<Thread>>,
    /// The first panic of a worker in the current job, re-raised on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// A job is running: a call from inside a task, or from a second thread, runs serially.
    busy: AtomicBool,
    stop: AtomicBool,
}

impl ThreadPool {
    /// A pool of `n_threads` threads (clamped to 1..=[`MAX_THREADS`]) whose workers poll for
    /// [`DEFAULT_SPIN`] before they sleep.
    pub fn new(n_threads: usize) -> std::io::Result<ThreadPool> {
        ThreadPool::with_spin(n_threads, DEFAULT_SPIN)
    }

    /// A pool whose idle workers (and whose caller, waiting for them) poll for `spin` before
    /// they park.
    pub fn with_spin(n_threads: usize, spin: Duration) -> std::io::Result<ThreadPool> {
        let n_threads = n_threads.clamp(1, MAX_THREADS);
        let shared = Arc::new(Shared {
            n_threads,
            spin,
            // Epoch 0, closed: nothing to join.
            state: AtomicU64::new(CLOSED),
            job: AtomicPtr::new(std::ptr::null_mut()),
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
                .spawn(move || shared.work())?;
            pool.threads.push(join.thread().clone());
            pool.joins.push(join);
        }
        Ok(pool)
    }

    /// Threads of the pool, the caller included.
    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// `f(task)` once for every `task < n_tasks`, in parallel; returns when all have returned.
    /// A panic in a task is re-raised here once every other task has run. A call made while
    /// the pool is busy (from inside a task, or from another thread) runs on the calling
    /// thread alone.
    pub fn run(&self, n_tasks: usize, f: impl Fn(usize) + Sync) {
        self.run_dyn(n_tasks, &f);
    }

    /// Split `data` into `min(n_units, TASKS_PER_THREAD · n_threads)` tasks of nearly equal
    /// contiguous runs of units (task `i` of `k` gets units `[i·n/k, (i+1)·n/k)`) and call
    /// `f(units, block)` with each task's block of `data`, in parallel.
    pub fn split<S: Split>(&self, data: S, f: impl Fn(Range<usize>, S::Block) + Sync) {
        self.split_parts(&[data], |_, units, block| f(units, block));
    }

    /// [`Self::split`] over several data sets in one job: the tasks hold about the same number
    /// of units whichever part they come from (part `j` of `n_j` units out of `n` in all gets
    /// `⌈n_j·k/n⌉` of them), no task spans two parts, and `f(j, units, block)` gets the part's
    /// index. For operations that are independent but would otherwise each cost a fork-join,
    /// such as the Q, K and V projections of one input.
    pub fn split_parts<S: Split>(
        &self,
        parts: &[S],
        f: impl Fn(usize, Range<usize>, S::Block) + Sync,
    ) {
        let n: usize = parts.iter().map(S::n_units).sum();
        let k = n.min(TASKS_PER_THREAD * self.n_threads());
        let tasks_of = |units: usize| (units * k).div_ceil(n.max(1));
        let n_tasks = parts.iter().map(|p| tasks_of(p.n_units())).sum();
        self.run_dyn(n_tasks, &|mut i| {
            for (j, part) in parts.iter().enumerate() {
                let (n_j, k_j) = (part.n_units(), tasks_of(part.n_units()));
                if i < k_j {
                    let units = n_j * i / k_j..n_j * (i + 1) / k_j;
                    // SAFETY: `run_dyn` runs each task once, and the tasks of one part have
                    // disjoint unit ranges within `0..n_j`.
                    let block = unsafe { part.block(units.clone()) };
                    return f(j, units, block);
                }
                i -= k_j;
            }
        });
    }

    fn run_dyn(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let sh = &*self.shared;
        if n_tasks <= 1 || sh.n_threads == 1 || sh.busy.swap(true, Ordering::Acquire) {
            (0..n_tasks).for_each(f);
            return;
        }
        let job = Job {
            f,
            n_tasks,
            next: AtomicUsize::new(0),
        };
        let ptr: *const Job<'_> = &job;
        sh.job.store(ptr.cast_mut().cast(), Ordering::Relaxed);
        // Open a new epoch, no one joined. The previous job is closed with every worker that
        // joined it done, so no worker writes the old word any more: a join's compare-exchange
        // expects an open state and fails. The store releases the job pointer to the joins.
        let e = epoch(sh.state.load(Ordering::Relaxed)).wrapping_add(1);
        sh.state.store(e << 32, Ordering::SeqCst);
        if sh.sleeping.load(Ordering::SeqCst) > 0 {
            self.threads.iter().for_each(Thread::unpark);
        }
        let ours = job.work();
        // Every task is claimed: close the job to latecomers, then wait for those that joined,
        // who use `job` until they are done.
        let s = sh.state.fetch_or(CLOSED, Ordering::SeqCst);
        if !all_done(s) {
            sh.wait_for_workers();
        }
        sh.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        let theirs = sh
            .panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        sh.busy.store(false, Ordering::Release);
        if let Some(p) = ours.or(theirs) {
            panic::resume_unwind(p);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        // No job runs (`run_dyn` waited for every worker that joined one). Unparking after
        // the store lets a parked worker see it; a polling one sees it on its next poll.
        self.shared.stop.store(true, Ordering::SeqCst);
        self.threads.iter().for_each(Thread::unpark);
        for j in self.joins.drain(..) {
            // Workers catch the panics of tasks, so a join error cannot happen.
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
    /// A worker's life: wait for a new open job, join it, claim its tasks, report, repeat.
    fn work(&self) {
        let mut seen = 0;
        while let Some(e) = self.join_next(seen) {
            seen = e;
            let job = self.job.load(Ordering::Relaxed);
            // SAFETY: the caller stored a pointer to a `Job` on its stack before it opened the
            // epoch we joined (our successful compare-exchange acquired that store), and keeps
            // the job alive until every worker that joined is done, which needs our `DONE_ONE`
            // below; it stores the next job's pointer only after that.
            let job = unsafe { &*job };
            if let Some(p) = job.work() {
                let mut slot = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
                slot.get_or_insert(p);
            }
            // From here on the job may be gone.
            let s = self.state.fetch_add(DONE_ONE, Ordering::SeqCst) + DONE_ONE;
            if s & CLOSED != 0 && all_done(s) && self.caller_parked.load(Ordering::SeqCst) {
                let caller = self.caller.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(t) = &*caller {
                    t.unpark();
                }
            }
        }
    }

    /// Wait for an epoch after `seen` and join it if it is still open: poll for `spin`, then
    /// park. Returns the epoch joined, or `None` when the pool stops.
    fn join_next(&self, mut seen: u64) -> Option<u64> {
        let mut poll = Poll::new(self.spin);
        let mut asleep = false;
        let joined = loop {
            if self.stop.load(Ordering::Relaxed) {
                break None;
            }
            let s = self.state.load(Ordering::SeqCst);
            if epoch(s) != seen {
                if s & CLOSED == 0 {
                    let join = self.state.compare_exchange_weak(
                        s,
                        s + JOINED_ONE,
                        Ordering::SeqCst,
                        Ordering::Relaxed,
                    );
                    match join {
                        Ok(_) => break Some(epoch(s)),
                        // Another worker joined first (or the job closed): look again.
                        Err(_) => continue,
                    }
                }
                // Closed before we came: wait for the next one.
                seen = epoch(s);
            }
            if asleep {
                // Wakes on the caller's unpark, or spuriously; both look at `state` again.
                thread::park();
            } else if !poll.again() {
                // Counted before the next look at `state`, which comes before parking.
                self.sleeping.fetch_add(1, Ordering::SeqCst);
                asleep = true;
            }
        };
        if asleep {
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
        joined
    }

    /// The caller's wait, after closing the job, for every worker that joined to be done:
    /// poll for `spin`, then park until the last one unparks it (parking also frees this core
    /// for a worker the OS preempted, which then gets to finish).
    fn wait_for_workers(&self) {
        let mut poll = Poll::new(self.spin);
        while !all_done(self.state.load(Ordering::Acquire)) {
            if !poll.again() {
                *self.caller.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(thread::current());
                self.caller_parked.store(true, Ordering::SeqCst);
                while !all_done(self.state.load(Ordering::SeqCst)) {
                    thread::park();
                }
                self.caller_parked.store(false, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The pause between two looks at shared state while waiting, for at most `spin`: a few spin
/// hints, then a yield of the core at each poll, so that a thread the OS would run instead
/// (another process, or a thread of this pool preempted on this core) runs now rather than
/// after this one's time slice; on an idle core the yield returns at once. Without it a worker
/// that shares a core with a busy process keeps joining jobs until the OS preempts it in the
/// middle of a task, which the caller then waits for (decode at 2 threads on 2 cores with one
/// busy: 91 t/s spinning, 125 yielding, 126 on 1 thread).
struct Poll {
    start: Instant,
    spin: Duration,
    polls: u32,
}

impl Poll {
    fn new(spin: Duration) -> Poll {
        Poll {
            start: Instant::now(),
            spin,
            polls: 0,
        }
    }

    /// Pause once; false once `spin` has passed (time to park).
    fn again(&mut self) -> bool {
        self.polls = self.polls.saturating_add(1);
        if self.polls <= SPINS_BEFORE_YIELD {
            std::hint::spin_loop();
            true
        } else {
            thread::yield_now();
            self.start.elapsed() < self.spin
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
/// last may be narrower): a block is those columns of every row. `unit` must be positive and
/// `width` must divide `data.len()` (a width of zero holds no data and no units).
pub fn columns<T: Send>(data: &mut [T], width: usize, unit: usize) -> Columns<'_, T> {
    assert!(unit > 0, "columns: units of zero columns");
    assert!(
        data.len().checked_rem(width).unwrap_or(data.len()) == 0,
        "columns: {} elements are not rows of {width}",
        data.len()
    );
    Columns {
        ptr: data.as_mut_ptr(),
        n_rows: data.len().checked_div(width).unwrap_or(0),
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
