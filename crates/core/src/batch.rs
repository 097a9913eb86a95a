//! Several sequences decoded together: N slots, each with its own KV cache and tokens, and one
//! forward pass per step over every slot that has work. Sequences join and leave between steps
//! (continuous batching); a slot keeps its cache, so a new request that shares a prefix with
//! the slot's previous one only evaluates the rest. Used by the server, offline batched
//! generation and perplexity.

use std::sync::Arc;

use crate::context::{ContextParams, Engine};
use crate::error::{Error, Result};
use crate::forward::Seq;
use crate::kv_cache::KvCache;
use crate::model::Model;

struct Slot {
    kv: KvCache,
    /// Tokens whose keys and values are in the cache.
    tokens: Vec<u32>,
}

/// What one slot evaluates in a step.
pub struct Work<'a> {
    pub slot: usize,
    pub tokens: &'a [u32],
    /// Which of `tokens` need logits.
    pub logit_rows: std::ops::Range<usize>,
}

pub struct BatchEngine {
    engine: Engine,
    slots: Vec<Slot>,
}

impl BatchEngine {
    /// `n_slots` sequences of up to `params.n_ctx` tokens each; forward passes of at most
    /// `params.n_batch` tokens (all slots together).
    pub fn new(model: Arc<Model>, n_slots: usize, params: &ContextParams) -> Result<Self> {
        if n_slots == 0 || n_slots > 1024 {
            return Err(Error::InvalidArgument(format!(
                "n_slots must be in 1..=1024, got {n_slots}"
            )));
        }
        model.check_generates()?;
        let engine = Engine::new(model, params)?;
        let slots = (0..n_slots)
            .map(|_| Slot {
                kv: engine.new_kv(),
                tokens: Vec::new(),
            })
            .collect();
        Ok(BatchEngine { engine, slots })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.engine.model
    }

    pub fn n_slots(&self) -> usize {
        self.slots.len()
    }

    /// Tokens each slot holds at most.
    pub fn n_ctx(&self) -> usize {
        self.engine.n_ctx
    }

    pub fn n_batch(&self) -> usize {
        self.engine.scratch.n_batch
    }

    /// Fails unless every id of `ids` is in the vocabulary.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        self.engine.check_ids(ids)
    }

    fn slot(&self, slot: usize) -> Result<&Slot> {
        self.slots.get(slot).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "slot {slot} does not exist (there are {})",
                self.slots.len()
            ))
        })
    }

    /// The tokens in `slot`'s cache.
    pub fn tokens(&self, slot: usize) -> Result<&[u32]> {
        Ok(&self.slot(slot)?.tokens)
    }

    /// Keep the first `n` tokens of `slot` (0 empties it).
    pub fn truncate(&mut self, slot: usize, n: usize) -> Result<()> {
        let held = self.slot(slot)?.tokens.len();
        if n > held {
            return Err(Error::InvalidArgument(format!(
                "cannot truncate slot {slot} to {n} tokens: it holds {held}"
            )));
        }
        self.slots[slot].tokens.truncate(n);
        Ok(())
    }

    /// Evaluate every item of `work` (at most one per slot), packing them into as few forward
    /// passes of `n_batch` tokens as possible. Returns the logits of each item's `logit_rows`,
    /// `[rows, n_vocab]` per item, in `work` order. On error nothing is evaluated.
    pub fn step(&mut self, work: &[Work]) -> Result<Vec<Vec<f32>>> {
        let n_vocab = self.engine.model.hparams.n_vocab;
        let mut seen = vec![false; self.slots.len()];
        for w in work {
            let held = self.slot(w.slot)?.tokens.len();
            if std::mem::replace(&mut seen[w.slot], true) {
                return Err(Error::InvalidArgument(format!(
                    "slot {} appears twice in one step",
                    w.slot
                )));
            }
            if w.tokens.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "no tokens to evaluate for slot {}",
                    w.slot
                )));
            }
            if w.logit_rows.start > w.logit_rows.end || w.logit_rows.end > w.tokens.len() {
                return Err(Error::InvalidArgument(format!(
                    "logit rows {:?} of slot {} are outside its {} tokens",
                    w.logit_rows,
                    w.slot,
                    w.tokens.len()
                )));
            }
            self.engine.check_ids(w.tokens)?;
            let needed = held + w.tokens.len();
            if needed > self.engine.n_ctx {
                return Err(Error::ContextFull {
                    n_ctx: self.engine.n_ctx,
                    needed,
                });
            }
        }

        let mut out: Vec<Vec<f32>> = work
            .iter()
            .map(|w| Vec::with_capacity(w.logit_rows.len() * n_vocab))
            .collect();
        // (work index, first token of this piece) still to do, in order.
        let mut done = vec![0usize; work.len()];
        let mut logits = Vec::new();
        let n_batch = self.engine.scratch.n_batch;
        while let Some(first) = (0..work.len()).find(|&i| done[i] < work[i].tokens.len()) {
            // Fill one pass: whole items while they fit, then a piece of the next.
            let mut plan: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
            let mut room = n_batch;
            for i in first..work.len() {
                if room == 0 {
                    break;
                }
                let left = work[i].tokens.len() - done[i];
                if left == 0 {
                    continue;
                }
                let take = left.min(room);
                plan.push((i, done[i]..done[i] + take));
                room -= take;
            }
            // Each slot's cache is borrowed mutably once, in plan order.
            let mut by_slot: Vec<Option<&mut Slot>> = self.slots.iter_mut().map(Some).collect();
            let mut seqs: Vec<Seq> = Vec::with_capacity(plan.len());
            for (i, piece) in &plan {
                let w = &work[*i];
                let slot = by_slot[w.slot].take().expect("one piece per slot per pass");
                let rows = w.logit_rows.start.max(piece.start)..w.logit_rows.end.min(piece.end);
                let rows = if rows.start < rows.end {
                    rows.start - piece.start..rows.end - piece.start
                } else {
                    0..0
                };
                seqs.push(Seq {
                    pos0: slot.tokens.len(),
                    kv: &mut slot.kv,
                    tokens: &w.tokens[piece.clone()],
                    logit_rows: rows,
                });
            }
            let n_rows: Vec<usize> = seqs.iter().map(|s| s.logit_rows.len()).collect();
            self.engine.run(&mut seqs, &mut logits);
            drop(seqs);
            let mut offset = 0;
            for ((i, piece), rows) in plan.iter().zip(n_rows) {
                out[*i].extend_from_slice(&logits[offset * n_vocab..(offset + rows) * n_vocab]);
                offset += rows;
                let w = &work[*i];
                self.slots[w.slot]
                    .tokens
                    .extend_from_slice(&w.tokens[piece.clone()]);
                done[*i] = piece.end;
            }
        }
        Ok(out)
    }
}
