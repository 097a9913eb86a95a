//! Constrained decoding: JSON schemas, regexes, Lark and GBNF grammars compiled by
//! [llguidance](https://github.com/guidance-ai/llguidance) into token masks over a model's
//! vocabulary, applied in the token loop as a [`LogitsProcessor`].
//!
//! ```text
//! GrammarSpec (checked when made) ──▶ TokenEnv (one per model: the GGUF token table as a trie)
//!     ──▶ GrammarProcessor (one per sequence: an llguidance Matcher)
//! ```
//!
//! The mask is lazy, as llama.cpp's sampler does it (`common/sampling.cpp`): the sampler draws
//! from the untouched logits, the matcher checks that one token, and only when it is refused
//! is the whole vocabulary masked and the token drawn again. Greedy decoding picks the same
//! token either way; most steps of a model that follows its instructions pay for one check.

mod gbnf;

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use toktrie::{ApproximateTokEnv, TokRxInfo, TokTrie};

pub use gbnf::gbnf_to_lark;

use crate::detok::Vocab;
use crate::error::{Error, Result};
use crate::generate::LogitsProcessor;

/// What a grammar was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrammarKind {
    JsonSchema,
    Regex,
    Lark,
    Gbnf,
}

impl GrammarKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GrammarKind::JsonSchema => "json_schema",
            GrammarKind::Regex => "regex",
            GrammarKind::Lark => "lark",
            GrammarKind::Gbnf => "gbnf",
        }
    }
}

/// A grammar checked for syntax (compiled once against a byte-level vocabulary) but not yet
/// bound to a model's vocabulary.
#[derive(Clone, Debug)]
pub struct GrammarSpec {
    pub kind: GrammarKind,
    /// The text the caller gave (a JSON schema as JSON text).
    pub source: String,
    /// What llguidance compiles: a JSON schema value, or Lark text.
    compiled: Compiled,
}

#[derive(Clone, Debug)]
enum Compiled {
    Json(serde_json::Value),
    Lark(String),
}

fn invalid(kind: GrammarKind, msg: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("invalid {}: {msg}", kind.as_str()))
}

impl GrammarSpec {
    /// A JSON schema, as JSON text. Unless the schema sets llguidance's `x-guidance` options,
    /// the output is one line with `", "` and `": "` between items, so whitespace cannot run
    /// on forever.
    pub fn json_schema(schema: &str) -> Result<Self> {
        let kind = GrammarKind::JsonSchema;
        let mut value: serde_json::Value =
            serde_json::from_str(schema).map_err(|e| invalid(kind, format!("not JSON: {e}")))?;
        match &value {
            serde_json::Value::Object(_) => {}
            serde_json::Value::Bool(true) => value = serde_json::json!({}),
            _ => return Err(invalid(kind, "a schema must be a JSON object")),
        }
        if value.get("x-guidance").is_none() {
            llguidance::JsonCompileOptions {
                item_separator: ", ".into(),
                key_separator: ": ".into(),
                whitespace_flexible: false,
                ..Default::default()
            }
            .apply_to(&mut value);
        }
        Self::checked(kind, schema.to_owned(), Compiled::Json(value))
    }

    /// Any JSON object (OpenAI's `{"type": "json_object"}`).
    pub fn json_object() -> Self {
        Self::json_schema(r#"{"type": "object"}"#).expect("a fixed, valid schema")
    }

    /// A regular expression (Rust `regex` syntax) the whole output must match.
    pub fn regex(rx: &str) -> Result<Self> {
        let kind = GrammarKind::Regex;
        if rx.is_empty() {
            return Err(invalid(kind, "empty regular expression"));
        }
        let lark = format!("start: /{}/", llguidance::regex_to_lark(rx, ""));
        Self::checked(kind, rx.to_owned(), Compiled::Lark(lark))
    }

    /// llguidance's Lark dialect.
    pub fn lark(src: &str) -> Result<Self> {
        Self::checked(
            GrammarKind::Lark,
            src.to_owned(),
            Compiled::Lark(src.to_owned()),
        )
    }

    /// A llama.cpp GBNF grammar (start rule `root`).
    pub fn gbnf(src: &str) -> Result<Self> {
        let kind = GrammarKind::Gbnf;
        let lark = gbnf_to_lark(src).map_err(|e| invalid(kind, e))?;
        Self::checked(kind, src.to_owned(), Compiled::Lark(lark))
    }

    /// The Lark text llguidance compiles (`None` for a JSON schema).
    pub fn lark_text(&self) -> Option<&str> {
        match &self.compiled {
            Compiled::Lark(s) => Some(s),
            Compiled::Json(_) => None,
        }
    }

    /// Whether `text` is a whole sentence of the language (checked byte by byte).
    pub fn matches(&self, text: &[u8]) -> bool {
        let Ok(parser) = byte_factory().create_parser(self.top_level()) else {
            return false;
        };
        let mut m = Matcher::new(Ok(parser));
        let tokens: Vec<u32> = text.iter().map(|&b| u32::from(b)).collect();
        matches!(m.try_consume_tokens(&tokens), Ok(n) if n == tokens.len())
            && (m.is_stopped() && !m.is_error() || m.is_accepting().unwrap_or(false))
    }

    fn top_level(&self) -> TopLevelGrammar {
        match &self.compiled {
            Compiled::Json(v) => TopLevelGrammar::from_json_schema(v.clone()),
            Compiled::Lark(s) => TopLevelGrammar::from_lark(s.clone()),
        }
    }

    fn checked(kind: GrammarKind, source: String, compiled: Compiled) -> Result<Self> {
        let spec = GrammarSpec {
            kind,
            source,
            compiled,
        };
        let factory = byte_factory();
        factory
            .create_parser(spec.top_level())
            .map_err(|e| invalid(kind, tidy(&e.to_string())))?;
        Ok(spec)
    }
}

/// llguidance's message, without the blank lines around it.
fn tidy(msg: &str) -> String {
    msg.trim().to_owned()
}

/// A vocabulary of the 256 bytes and an end token: enough to compile any grammar, so that a
/// bad one fails when it is made rather than when a model first uses it.
fn byte_factory() -> &'static ParserFactory {
    static FACTORY: OnceLock<ParserFactory> = OnceLock::new();
    FACTORY.get_or_init(|| {
        let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        words.push(b"\xff<eos>".to_vec());
        let info = TokRxInfo::new(words.len() as u32, 256);
        let trie = TokTrie::from(&info, &words);
        let env: toktrie::TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut f = ParserFactory::new_simple(&env).expect("the byte vocabulary is valid");
        f.quiet();
        f
    })
}

/// A model's vocabulary as llguidance sees it: each token's bytes (control tokens marked as
/// special, so no grammar text can produce them), and the end-of-generation tokens, which a
/// grammar allows wherever it may end.
pub struct TokenEnv {
    factory: ParserFactory,
    eog: Vec<u32>,
}

impl std::fmt::Debug for TokenEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEnv")
            .field("n_vocab", &self.factory.tok_env().tok_trie().vocab_size())
            .finish()
    }
}

impl TokenEnv {
    pub fn new(vocab: &Vocab) -> Result<Self> {
        let n = vocab.n_vocab();
        let eog = vocab.eog_tokens();
        let eos = vocab.eos.or_else(|| eog.first().copied()).ok_or_else(|| {
            Error::Tokenizer("the vocabulary has no end-of-generation token".into())
        })?;
        let mut words = Vec::with_capacity(n);
        for t in 0..n as u32 {
            let piece = vocab.piece(t)?;
            if vocab.is_control(t)? || vocab.is_eog(t) {
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                if piece.is_empty() {
                    w.extend_from_slice(format!("<[{t}]>").as_bytes());
                } else {
                    w.extend_from_slice(piece);
                }
                words.push(w);
            } else {
                words.push(piece.to_vec());
            }
        }
        let info = TokRxInfo::new(n as u32, eos);
        let trie = TokTrie::from(&info, &words);
        let env: toktrie::TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::Tokenizer(format!("grammar token table: {e}")))?;
        factory.quiet();
        Ok(TokenEnv { factory, eog })
    }

    pub fn n_vocab(&self) -> usize {
        self.factory.tok_env().tok_trie().vocab_size()
    }

    /// A processor for one sequence, at the start of `spec`'s language.
    pub fn processor(self: &Arc<Self>, spec: &GrammarSpec) -> Result<GrammarProcessor> {
        let parser = self
            .factory
            .create_parser(spec.top_level())
            .map_err(|e| invalid(spec.kind, tidy(&e.to_string())))?;
        Ok(GrammarProcessor {
            env: Arc::clone(self),
            matcher: Matcher::new(Ok(parser)),
            n_masks: 0,
            n_checks: 0,
        })
    }
}

/// One sequence's grammar state; see the module docs.
pub struct GrammarProcessor {
    env: Arc<TokenEnv>,
    matcher: Matcher,
    /// Whole-vocabulary masks computed (refused samples) and single-token checks so far.
    pub n_masks: usize,
    pub n_checks: usize,
}

impl GrammarProcessor {
    fn is_eog(&self, token: u32) -> bool {
        self.env.eog.binary_search(&token).is_ok()
    }

    /// Sets every token the grammar refuses to `-inf`; end-of-generation tokens count as the
    /// end token llguidance knows.
    pub fn mask(&mut self, logits: &mut [f32]) {
        self.n_masks += 1;
        match self.matcher.compute_mask_or_eos() {
            Ok(allowed) => {
                let eos = self.env.factory.tok_env().tok_trie().eos_token();
                let eos_ok = allowed.is_allowed(eos);
                for (t, l) in logits.iter_mut().enumerate() {
                    let t = t as u32;
                    // The other end-of-generation tokens end the text as the end token does.
                    if !(allowed.is_allowed(t) || eos_ok && self.is_eog(t)) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
            Err(_) => logits.fill(f32::NEG_INFINITY),
        }
    }
}

impl LogitsProcessor for GrammarProcessor {
    fn process(&mut self, _logits: &mut [f32]) {}

    fn allows(&mut self, token: u32) -> bool {
        self.n_checks += 1;
        if self.matcher.is_error() {
            return false;
        }
        if self.is_eog(token) {
            return self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false);
        }
        matches!(self.matcher.validate_tokens(&[token]), Ok(1))
    }

    fn mask(&mut self, logits: &mut [f32]) {
        GrammarProcessor::mask(self, logits);
    }

    fn accept(&mut self, token: u32) {
        if !self.is_eog(token) {
            let _ = self.matcher.consume_token(token);
        }
    }

    fn error(&self) -> Option<String> {
        self.matcher
            .get_error()
            .map(|e| format!("grammar: {}", tidy(&e)))
    }
}

#[cfg(test)]
mod tests;
