//! Continuous batching: requests queue, enter sequence slots of a [`BatchEngine`], and each
//! [`Scheduler::step`] runs one forward pass over every slot with work, then one token step
//! ([`SeqDecoder`]) for each sequence whose logits came back.
//!
//! A step:
//! 1. ends cancelled sequences (their slot is free at once);
//! 2. admits queued requests into free slots, choosing the slot whose cached tokens share the
//!    longest prefix with the prompt (least recently used on a tie), so that a follow-up chat
//!    turn only evaluates what is new;
//! 3. packs one batch: the last sampled token of every decoding sequence, then pieces of the
//!    prompts still being evaluated, up to `n_batch` tokens in all;
//! 4. evaluates it, samples, detokenizes and checks the stops, and reports a [`Chunk`] per
//!    sequence that produced one.
//!
//! The forward pass is exact per sequence, so greedy output does not depend on what else is in
//! the batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::batch::{BatchEngine, Work};
use crate::context::ContextParams;
use crate::detok::Vocab;
use crate::error::{Error, Result};
use crate::generate::{Chunk, Finish, GenParams, SeqDecoder};
use crate::grammar::GrammarProcessor;
use crate::model::Model;
use crate::sampler::Sampler;

/// A request's handle, unique within its scheduler.
pub type SeqId = u64;

struct Waiting {
    id: SeqId,
    prompt: Vec<u32>,
    params: GenParams,
    sampler: Sampler,
    /// Built at submission, so that a grammar that does not fit the vocabulary fails there.
    grammar: Option<GrammarProcessor>,
}

struct Running {
    id: SeqId,
    /// Prompt tokens still to evaluate.
    todo: Vec<u32>,
    /// The sampled token to evaluate in the next step.
    next: Option<u32>,
    dec: SeqDecoder,
    sampler: Sampler,
    cancelled: bool,
}

/// What one step did.
#[derive(Debug, Default)]
pub struct StepReport {
    /// Requests that entered a slot, with how many prompt tokens its cache already held.
    pub admitted: Vec<(SeqId, usize)>,
    /// Chunks in slot order; a request's last one has `finish` set.
    pub chunks: Vec<(SeqId, Chunk)>,
    /// Whether a forward pass ran.
    pub evaluated: bool,
}

/// The slots and the queue; the [`Scheduler`] handle keeps them behind a lock.
struct Inner {
    engine: BatchEngine,
    vocab: Arc<Vocab>,
    /// Tokens per step; at least one per slot, so every decoding sequence fits.
    n_batch: usize,
    slots: Vec<Option<Running>>,
    queue: VecDeque<Waiting>,
    /// Chunks of requests cancelled while queued, reported by the next step.
    ended: Vec<(SeqId, Chunk)>,
    last_used: Vec<u64>,
    clock: u64,
}

/// Requests submitted or cancelled since the last step.
#[derive(Default)]
struct Inbox {
    submits: Vec<Waiting>,
    cancels: Vec<SeqId>,
}

/// Continuous batching over `n_slots` sequences; see the module docs. Every method takes
/// `&self`: any thread may submit and cancel while another runs the steps (submitting never
/// waits for a forward pass).
pub struct Scheduler {
    model: Arc<Model>,
    n_ctx: usize,
    n_vocab: usize,
    n_slots: usize,
    n_batch: usize,
    inbox: Mutex<Inbox>,
    work_arrived: Condvar,
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    /// Queued (inbox included) and running requests, for gauges that must not wait for a step.
    queued: AtomicUsize,
    running: AtomicUsize,
}

impl Scheduler {
    pub fn new(model: Arc<Model>, n_slots: usize, params: &ContextParams) -> Result<Self> {
        model.check_generates()?;
        let vocab = model.vocab()?;
        let n_vocab = model.hparams.n_vocab;
        let engine = BatchEngine::new(Arc::clone(&model), n_slots, params)?;
        let n_batch = engine.n_batch().max(n_slots);
        Ok(Scheduler {
            model,
            n_ctx: engine.n_ctx(),
            n_vocab,
            n_slots,
            n_batch,
            inbox: Mutex::default(),
            work_arrived: Condvar::new(),
            inner: Mutex::new(Inner {
                n_batch,
                slots: (0..n_slots).map(|_| None).collect(),
                last_used: vec![0; n_slots],
                engine,
                vocab,
                queue: VecDeque::new(),
                ended: Vec::new(),
                clock: 0,
            }),
            next_id: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
        })
    }

    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Tokens each sequence holds at most, prompt and completion together.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Tokens per forward pass.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// Requests waiting for a slot.
    pub fn n_queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Requests in a slot.
    pub fn n_running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// The tokens in `slot`'s cache (waits for a running step).
    pub fn cached_tokens(&self, slot: usize) -> Result<Vec<u32>> {
        Ok(self.lock_inner().engine.tokens(slot)?.to_vec())
    }

    /// Queue a generation after `prompt`, sampled by `sampler`. Fails, queueing nothing, for
    /// an empty prompt, an id outside the vocabulary, bad parameters, or a prompt (with
    /// `max_tokens`) longer than a sequence holds.
    pub fn submit(&self, prompt: Vec<u32>, sampler: Sampler, params: GenParams) -> Result<SeqId> {
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= self.n_vocab) {
            return Err(Error::TokenOutOfRange {
                id: bad.into(),
                n_vocab: self.n_vocab,
            });
        }
        params.validate(self.n_vocab)?;
        let needed = prompt.len() + params.max_tokens.unwrap_or(1);
        if needed > self.n_ctx {
            return Err(Error::ContextFull {
                n_ctx: self.n_ctx,
                needed,
            });
        }
        let grammar = match &params.grammar {
            Some(spec) => Some(self.model.token_env()?.processor(spec)?),
            None => None,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.lock_inbox().submits.push(Waiting {
            id,
            prompt,
            params,
            sampler,
            grammar,
        });
        self.work_arrived.notify_all();
        Ok(id)
    }

    /// Cancel request `id`, queued or running; its last chunk (finish `Cancelled`) comes with
    /// a coming step. Unknown or finished ids are ignored.
    pub fn cancel(&self, id: SeqId) {
        self.lock_inbox().cancels.push(id);
        self.work_arrived.notify_all();
    }

    /// Wake a [`Scheduler::step`] that waits for work.
    pub fn wake(&self) {
        let _inbox = self.lock_inbox();
        self.work_arrived.notify_all();
    }

    /// One round of work (see the module docs). With nothing to do, waits up to `wait` for a
    /// submission, a cancellation or [`Scheduler::wake`] first.
    pub fn step(&self, wait: Duration) -> StepReport {
        let mut inner = self.lock_inner();
        let (submits, cancels) = {
            let mut inbox = self.lock_inbox();
            let idle = inner.queue.is_empty() && inner.ended.is_empty() && inner.n_running() == 0;
            if idle && inbox.submits.is_empty() && inbox.cancels.is_empty() && !wait.is_zero() {
                inbox = self
                    .work_arrived
                    .wait_timeout(inbox, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            (
                std::mem::take(&mut inbox.submits),
                std::mem::take(&mut inbox.cancels),
            )
        };
        inner.queue.extend(submits);
        for id in cancels {
            inner.cancel(id);
        }
        let report = inner.step();
        let waiting = inner.queue.len() + self.lock_inbox().submits.len();
        self.queued.store(waiting, Ordering::Relaxed);
        self.running.store(inner.n_running(), Ordering::Relaxed);
        report
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while stepping leaves the slots consistent enough to go on serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn n_ctx(&self) -> usize {
        self.engine.n_ctx()
    }

    fn n_running(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Cancel request `id`, queued or running; its last chunk (`Cancelled`) comes with the
    /// next step. False if it is unknown or already ended.
    fn cancel(&mut self, id: SeqId) -> bool {
        if let Some(i) = self.queue.iter().position(|w| w.id == id) {
            self.queue.remove(i);
            self.ended.push((id, Chunk::ended(Finish::Cancelled, None)));
            return true;
        }
        match self.slots.iter_mut().flatten().find(|r| r.id == id) {
            Some(r) if !r.cancelled => {
                r.cancelled = true;
                true
            }
            _ => false,
        }
    }

    /// One round of work; see the module docs.
    fn step(&mut self) -> StepReport {
        let mut report = StepReport {
            chunks: std::mem::take(&mut self.ended),
            ..StepReport::default()
        };
        for slot in 0..self.slots.len() {
            if self.slots[slot].as_ref().is_some_and(|r| r.cancelled) {
                self.finish(slot, Finish::Cancelled, None, &mut report);
            }
        }
        self.admit(&mut report);

        // Decode rows first: they are one token each and always fit.
        let mut plan: Vec<(usize, Vec<u32>, bool)> = Vec::new(); // (slot, tokens, wants logits)
        let mut budget = self.n_batch;
        for (slot, r) in self.slots.iter().enumerate() {
            if let Some(tok) = r.as_ref().and_then(|r| r.next) {
                plan.push((slot, vec![tok], true));
                budget -= 1;
            }
        }
        for (slot, r) in self.slots.iter().enumerate() {
            let Some(r) = r else { continue };
            if r.next.is_some() || r.todo.is_empty() || budget == 0 {
                continue;
            }
            let n = r.todo.len().min(budget);
            plan.push((slot, r.todo[..n].to_vec(), n == r.todo.len()));
            budget -= n;
        }
        if plan.is_empty() {
            return report;
        }
        let work: Vec<Work> = plan
            .iter()
            .map(|(slot, tokens, wants)| Work {
                slot: *slot,
                tokens,
                logit_rows: if *wants {
                    tokens.len() - 1..tokens.len()
                } else {
                    0..0
                },
            })
            .collect();
        let logits = match self.engine.step(&work) {
            Ok(l) => l,
            Err(e) => {
                // Nothing was evaluated; the sequences cannot go on.
                for (slot, ..) in &plan {
                    self.finish(*slot, Finish::Error, Some(e.to_string()), &mut report);
                }
                return report;
            }
        };
        report.evaluated = true;
        for ((slot, tokens, _), mut rows) in plan.into_iter().zip(logits) {
            let r = self.slots[slot].as_mut().expect("planned slots run");
            if r.next.take().is_none() {
                r.todo.drain(..tokens.len());
            }
            if rows.is_empty() {
                continue;
            }
            let (chunk, next) = r.dec.step(&mut rows, &mut r.sampler);
            r.next = next;
            let id = r.id;
            if chunk.finish.is_some() {
                self.release(slot);
            }
            report.chunks.push((id, chunk));
        }
        report
    }

    fn admit(&mut self, report: &mut StepReport) {
        while !self.queue.is_empty() {
            // The free slot sharing the longest prefix, least recently used on a tie. At least
            // one prompt token is evaluated again, for fresh logits.
            let prompt = &self.queue[0].prompt;
            let mut best: Option<(usize, usize)> = None; // (slot, kept)
            for slot in (0..self.slots.len()).filter(|&s| self.slots[s].is_none()) {
                let cached = self.engine.tokens(slot).unwrap_or(&[]);
                let kept = common_prefix(cached, prompt).min(prompt.len() - 1);
                let better = best.is_none_or(|(b, bk)| {
                    kept > bk || (kept == bk && self.last_used[slot] < self.last_used[b])
                });
                if better {
                    best = Some((slot, kept));
                }
            }
            let Some((slot, kept)) = best else { return };
            let w = self.queue.pop_front().expect("checked above");
            self.engine
                .truncate(slot, kept)
                .expect("kept tokens are cached");
            let room = self.n_ctx() - w.prompt.len();
            self.slots[slot] = Some(Running {
                id: w.id,
                todo: w.prompt[kept..].to_vec(),
                next: None,
                dec: {
                    let mut dec =
                        SeqDecoder::new(Arc::clone(&self.vocab), &w.params, &w.prompt, Some(room));
                    if let Some(g) = w.grammar {
                        dec.add_processor(Box::new(g));
                    }
                    dec
                },
                sampler: w.sampler,
                cancelled: false,
            });
            report.admitted.push((w.id, kept));
        }
    }

    fn finish(&mut self, slot: usize, why: Finish, error: Option<String>, report: &mut StepReport) {
        let Some(r) = self.slots[slot].as_mut() else {
            return;
        };
        let mut chunk = r.dec.end(why);
        chunk.error = error;
        let id = r.id;
        if why == Finish::Error {
            // What the cache holds is no longer known to match its tokens.
            let _ = self.engine.truncate(slot, 0);
        }
        self.release(slot);
        report.chunks.push((id, chunk));
    }

    fn release(&mut self, slot: usize) {
        self.slots[slot] = None;
        self.clock += 1;
        self.last_used[slot] = self.clock;
    }
}

/// Length of the common prefix of `a` and `b`.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
