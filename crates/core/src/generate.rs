//! The one token loop: what happens to a sequence's row of logits once a forward pass made it.
//!
//! ```text
//! logits ─▶ logits processors (logit bias, end-of-generation ban; grammar masks next)
//!        ─▶ logprobs (when asked) ─▶ Sampler ─▶ token
//!        ─▶ stops: end-of-generation token, max tokens, room in the context
//!        ─▶ StreamDecoder (whole UTF-8 only) ─▶ stop strings (held back while they may start)
//!        ─▶ Chunk { text, tokens, logprobs, finish }
//! ```
//!
//! [`SeqDecoder`] is that loop for one sequence. It does not evaluate anything: the caller feeds
//! it logits and evaluates the token it returns. [`crate::scheduler::Scheduler`] drives many
//! of them over a [`crate::BatchEngine`] (the server, batched generation), and
//! [`ContextStream`] drives one over a [`Context`] (`Model.generate`, the REPL), so every front
//! end gets the same sampling, detokenizing and stopping.
//!
//! A draft-and-verify step (speculative decoding) fits here too: the verifier evaluates the
//! drafted tokens in one pass and calls [`SeqDecoder::step`] on each row in turn, keeping the
//! drafted tokens while the sampled token agrees.

use std::sync::Arc;

use crate::context::Context;
use crate::detok::{StreamDecoder, Vocab};
use crate::error::{Error, Result};
use crate::grammar::GrammarSpec;
use crate::sampler::Sampler;

/// Most alternatives a caller may ask for per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// When a generation stops and what it reports besides text.
#[derive(Clone, Debug, Default)]
pub struct GenParams {
    /// Completion tokens at most; `None` = until a stop or a full context.
    pub max_tokens: Option<usize>,
    /// Strings that end the generation; the text stops before the first one found.
    pub stop: Vec<String>,
    /// Added to the logits of those tokens before sampling.
    pub logit_bias: Vec<(u32, f32)>,
    /// Never sample an end-of-generation token.
    pub ignore_eos: bool,
    /// `Some(k)`: each token's log-probability and the `k` most likely alternatives.
    pub logprobs: Option<usize>,
    /// Tokens that end the generation after they are handed out (end-of-generation tokens
    /// always end it, unshown).
    pub stop_ids: Vec<u32>,
    /// Leave control tokens out of the text (as llama.cpp's terminal programs print).
    pub skip_special: bool,
    /// The language the completion must be in (a JSON schema, regex or grammar).
    pub grammar: Option<GrammarSpec>,
}

impl GenParams {
    /// Fails naming the first bad field.
    pub fn validate(&self, n_vocab: usize) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if self.max_tokens == Some(0) {
            return bad("max_tokens must be >= 1, got 0".into());
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop strings must not be empty".into());
        }
        if let Some(&tok) = self.stop_ids.iter().find(|&&t| t as usize >= n_vocab) {
            return bad(format!("stop id {tok} out of range [0, {n_vocab})"));
        }
        for &(tok, bias) in &self.logit_bias {
            if tok as usize >= n_vocab {
                return bad(format!(
                    "logit_bias: token id {tok} out of range [0, {n_vocab})"
                ));
            }
            if bias.is_nan() {
                return bad(format!("logit_bias: the bias of token {tok} is NaN"));
            }
        }
        if let Some(k) = self.logprobs {
            if k > MAX_TOP_LOGPROBS {
                return bad(format!(
                    "logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {k}"
                ));
            }
        }
        Ok(())
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// No room left in the context.
    ContextFull,
    /// The caller cancelled it.
    Cancelled,
    /// Evaluation failed; [`Chunk::error`] says why.
    Error,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ContextFull => "context_full",
            Finish::Cancelled => "cancelled",
            Finish::Error => "error",
        }
    }
}

/// A chosen token, its log-probability, and the most likely tokens at its position.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// What one token step hands out. `text` may be empty while bytes of a character or the
/// start of a possible stop string are held back; `tokens` is the completion token (none for
/// an ending end-of-generation token); the last chunk has `finish`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chunk {
    pub text: String,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<TokenLogprob>,
    pub finish: Option<Finish>,
    /// The stop string that ended the generation, if one did.
    pub stop: Option<String>,
    pub error: Option<String>,
}

impl Chunk {
    pub fn ended(finish: Finish, error: Option<String>) -> Self {
        Chunk {
            finish: Some(finish),
            error,
            ..Chunk::default()
        }
    }
}

/// Changes one sequence's logits before sampling (logit bias, grammar masks). A processor sees
/// every step of its sequence and is told which token was chosen.
///
/// A lazy processor (a grammar) leaves `process` empty and judges the sampled token in
/// `allows`; when it refuses, the loop calls `mask` on the untouched logits and samples again.
pub trait LogitsProcessor: Send + Sync {
    fn process(&mut self, logits: &mut [f32]);
    /// Whether `token`, sampled from logits `process` left alone, may stand.
    fn allows(&mut self, _token: u32) -> bool {
        true
    }
    /// Leaves only the tokens `allows` would accept (the others at `-inf`).
    fn mask(&mut self, _logits: &mut [f32]) {}
    fn accept(&mut self, _token: u32) {}
    /// Set when the processor can no longer constrain the sequence; the generation ends with
    /// this message.
    fn error(&self) -> Option<String> {
        None
    }
}

/// Adds fixed values to some tokens' logits (`-inf` bans a token).
struct LogitBias(Vec<(u32, f32)>);

impl LogitsProcessor for LogitBias {
    fn process(&mut self, logits: &mut [f32]) {
        for &(tok, bias) in &self.0 {
            if let Some(l) = logits.get_mut(tok as usize) {
                *l += bias;
            }
        }
    }
}

/// The token loop of one sequence; see the module docs.
pub struct SeqDecoder {
    vocab: Arc<Vocab>,
    detok: StreamDecoder,
    processors: Vec<Box<dyn LogitsProcessor>>,
    stop: Vec<String>,
    stop_ids: Vec<u32>,
    logprobs: Option<usize>,
    max_tokens: Option<usize>,
    /// Tokens that fit in the context after the prompt; `None` = the caller makes room.
    room: Option<usize>,
    /// Text that may be the start of a stop string.
    held: String,
    /// Prompt and completion, for the repetition penalties.
    history: Vec<u32>,
    /// Completion tokens so far (an ending end-of-generation token is not one).
    pub n_generated: usize,
    /// Tokens sampled so far, an ending end-of-generation token included.
    pub n_sampled: usize,
    /// The token sampled last.
    pub last_token: Option<u32>,
    pub finish: Option<Finish>,
}

impl SeqDecoder {
    /// After `prompt` (every token in the context before the completion); `params` must have
    /// passed [`GenParams::validate`].
    pub fn new(vocab: Arc<Vocab>, params: &GenParams, prompt: &[u32], room: Option<usize>) -> Self {
        let mut bias = params.logit_bias.clone();
        if params.ignore_eos {
            bias.extend(
                vocab
                    .eog_tokens()
                    .into_iter()
                    .map(|t| (t, f32::NEG_INFINITY)),
            );
        }
        let mut processors: Vec<Box<dyn LogitsProcessor>> = Vec::new();
        if !bias.is_empty() {
            processors.push(Box::new(LogitBias(bias)));
        }
        SeqDecoder {
            detok: StreamDecoder::new(Arc::clone(&vocab), params.skip_special),
            vocab,
            processors,
            stop: params.stop.clone(),
            stop_ids: params.stop_ids.clone(),
            logprobs: params.logprobs,
            max_tokens: params.max_tokens,
            room,
            held: String::new(),
            history: prompt.to_vec(),
            n_generated: 0,
            n_sampled: 0,
            last_token: None,
            finish: None,
        }
    }

    /// Runs after those the parameters asked for (logit bias), in the order added.
    pub fn add_processor(&mut self, p: Box<dyn LogitsProcessor>) {
        self.processors.push(p);
    }

    /// One token from `logits` (the processors change them in place): the chunk to hand out,
    /// and the token to evaluate next, `None` when the generation has ended.
    pub fn step(&mut self, logits: &mut [f32], sampler: &mut Sampler) -> (Chunk, Option<u32>) {
        debug_assert!(self.finish.is_none(), "step after the end");
        // Logprobs describe the model's own distribution (as llama-cpp-python reports them),
        // not what the processors and the sampler made of it.
        let raw = self.logprobs.map(|_| logits.to_vec());
        for p in &mut self.processors {
            p.process(logits);
        }
        let mut tok = sampler.sample(logits, &self.history);
        if self.processors.iter_mut().any(|p| !p.allows(tok)) {
            for p in &mut self.processors {
                p.mask(logits);
            }
            if logits.iter().all(|&l| l == f32::NEG_INFINITY) {
                let why = self.processors.iter().find_map(|p| p.error());
                let mut end = self.end(Finish::Error);
                end.error =
                    Some(why.unwrap_or_else(|| "no token satisfies the constraints".into()));
                return (end, None);
            }
            tok = sampler.sample(logits, &self.history);
        }
        for p in &mut self.processors {
            p.accept(tok);
        }
        if let Some(why) = self.processors.iter().find_map(|p| p.error()) {
            let mut end = self.end(Finish::Error);
            end.error = Some(why);
            return (end, None);
        }
        self.n_sampled += 1;
        self.last_token = Some(tok);
        if self.vocab.is_eog(tok) {
            return (self.end(Finish::Stop), None);
        }
        let mut chunk = Chunk::default();
        self.n_generated += 1;
        chunk.tokens.push(tok);
        if let (Some(k), Some(raw)) = (self.logprobs, &raw) {
            chunk.logprobs.push(logprob(raw, tok, k));
        }
        self.history.push(tok);
        match self.detok.push(tok) {
            Ok(text) => self.held.push_str(&text),
            Err(e) => {
                let mut end = self.end(Finish::Error);
                end.error = Some(format!("the model sampled a token with no text: {e}"));
                return (end, None);
            }
        }
        let limit = match (self.max_tokens, self.room) {
            (Some(max), Some(room)) if room < max => Some((room, Finish::ContextFull)),
            (Some(max), _) => Some((max, Finish::Length)),
            (None, Some(room)) => Some((room, Finish::ContextFull)),
            (None, None) => None,
        };
        if find_stop(&self.held, &self.stop).is_some() {
            let mut end = self.end(Finish::Stop);
            end.tokens = chunk.tokens;
            end.logprobs = chunk.logprobs;
            return (end, None);
        }
        let at_stop_id = self.stop_ids.contains(&tok).then_some(Finish::Stop);
        if let Some(why) = at_stop_id.or(limit
            .filter(|&(n, _)| self.n_generated >= n)
            .map(|(_, why)| why))
        {
            let mut end = self.end(why);
            end.tokens = chunk.tokens;
            end.logprobs = chunk.logprobs;
            return (end, None);
        }
        let safe = self.held.len() - partial_stop(&self.held, &self.stop);
        chunk.text = self.held[..safe].to_owned();
        self.held.drain(..safe);
        (chunk, Some(tok))
    }

    /// Ends the generation: the held text (cut at a stop string), and `why`, or `Stop` if
    /// the held text holds a stop string.
    pub fn end(&mut self, why: Finish) -> Chunk {
        if self.finish.is_some() {
            return Chunk::ended(self.finish.unwrap_or(why), None);
        }
        let mut chunk = Chunk::ended(why, None);
        if why != Finish::Cancelled && why != Finish::Error {
            self.held.push_str(&self.detok.flush());
            if let Some((at, s)) = find_stop(&self.held, &self.stop) {
                self.held.truncate(at);
                chunk.finish = Some(Finish::Stop);
                chunk.stop = Some(s.to_owned());
            }
            chunk.text = std::mem::take(&mut self.held);
        }
        self.finish = chunk.finish;
        chunk
    }
}

/// Where the earliest stop string starts in `text`, and which one.
fn find_stop<'s>(text: &str, stops: &'s [String]) -> Option<(usize, &'s str)> {
    stops
        .iter()
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s.as_str())))
        .min_by_key(|&(at, _)| at)
}

/// Bytes of the longest suffix of `text` that is a proper prefix of a stop string (held back
/// until the next token says whether the stop string follows).
fn partial_stop(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        for n in (best + 1..s.len().min(text.len() + 1)).rev() {
            if s.is_char_boundary(n) && text.ends_with(&s[..n]) {
                best = n;
                break;
            }
        }
    }
    best
}

/// Log-softmax of `logits` at `tok`, and the `k` largest entries, most likely first (ties:
/// lower id first).
fn logprob(logits: &[f32], tok: u32, k: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits
        .iter()
        .map(|&l| f64::from(l - max).exp())
        .sum::<f64>();
    let lse = f64::from(max) + sum.ln();
    let lp = |l: f32| (f64::from(l) - lse) as f32;
    let mut top: Vec<(u32, f32)> = Vec::new();
    if k > 0 {
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let mut all: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let k = k.min(all.len());
        if k < all.len() {
            all.select_nth_unstable_by(k - 1, order);
            all.truncate(k);
        }
        all.sort_by(order);
        top = all.into_iter().map(|(i, l)| (i, lp(l))).collect();
    }
    TokenLogprob {
        token: tok,
        logprob: lp(logits[tok as usize]),
        top,
    }
}

/// The token loop over one [`Context`]: evaluates each token it samples. With `shift_keep`,
/// a full context drops half of the tokens after the first `n_keep` (llama.cpp's context
/// shift) and goes on; without, the generation ends with [`Finish::ContextFull`].
pub struct ContextStream {
    pub dec: SeqDecoder,
    pending: Option<u32>,
    shift_keep: Option<usize>,
    /// Tokens dropped by context shifts so far.
    pub n_discarded: usize,
}

impl ContextStream {
    /// Starts after the prompt the context has evaluated (its last logits are the first
    /// step's).
    pub fn new(ctx: &Context, params: &GenParams, shift_keep: Option<usize>) -> Result<Self> {
        if ctx.last_logits().is_none() {
            return Err(Error::InvalidArgument(
                "evaluate a prompt before generating".into(),
            ));
        }
        params.validate(ctx.model().hparams.n_vocab)?;
        if let Some(keep) = shift_keep {
            if keep >= ctx.n_ctx() {
                return Err(Error::InvalidArgument(format!(
                    "n_keep {keep} leaves no room in a context of {}",
                    ctx.n_ctx()
                )));
            }
        }
        let room = shift_keep.is_none().then(|| ctx.n_ctx() - ctx.n_past());
        let vocab = ctx.model().vocab()?;
        let mut dec = SeqDecoder::new(vocab, params, ctx.tokens(), room);
        if let Some(spec) = &params.grammar {
            dec.add_processor(Box::new(ctx.model().token_env()?.processor(spec)?));
        }
        Ok(ContextStream {
            dec,
            pending: None,
            shift_keep,
            n_discarded: 0,
        })
    }

    /// The next chunk, `None` after the last one.
    pub fn next(&mut self, ctx: &mut Context, sampler: &mut Sampler) -> Result<Option<Chunk>> {
        if self.dec.finish.is_some() {
            return Ok(None);
        }
        if let Some(tok) = self.pending.take() {
            if ctx.n_past() >= ctx.n_ctx() {
                let keep = self.shift_keep.unwrap_or(ctx.n_past());
                let discard = (ctx.n_past() - keep.min(ctx.n_past())) / 2;
                if discard == 0 {
                    return Ok(Some(self.dec.end(Finish::ContextFull)));
                }
                ctx.shift(keep, discard)?;
                self.n_discarded += discard;
            }
            ctx.eval(&[tok], false)?;
        }
        let mut logits = ctx
            .last_logits()
            .ok_or_else(|| Error::InvalidArgument("evaluate a prompt before generating".into()))?
            .to_vec();
        let (chunk, next) = self.dec.step(&mut logits, sampler);
        self.pending = next;
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stop_strings_are_found_and_held() {
        let s = stops(&["END", "éa"]);
        assert_eq!(find_stop("abENDc", &s), Some((2, "END")));
        assert_eq!(find_stop("abc", &s), None);
        assert_eq!(partial_stop("abEN", &s), 2);
        assert_eq!(partial_stop("abE", &s), 1);
        assert_eq!(partial_stop("abé", &s), "é".len());
        assert_eq!(partial_stop("END", &s), 0); // whole stop strings are found, not held
        assert_eq!(partial_stop("", &s), 0);
    }

    #[test]
    fn logprobs_are_a_log_softmax() {
        let lp = logprob(&[0.0, 1.0, 1.0, -1.0], 3, 2);
        let z = (1.0f64 + 2.0 * 1f64.exp() + (-1f64).exp()).ln();
        assert!((f64::from(lp.logprob) - (-1.0 - z)).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
    }
}
