//! Token ids -> text from the GGUF token table, as llama.cpp's `llama_token_to_piece` and
//! `llama_detokenize` (`src/llama-vocab.cpp`) produce it: byte-level BPE (`gpt2`) and
//! SentencePiece with byte fallback (`llama`), control and user-defined tokens, the first
//! token's space strip, BOS/EOS removal and the `clean_spaces` rewrite.
//!
//! It mirrors `python/rllm/tokenizer.py` (`Tokenizer._load`, `_make_piece`, `decode_bytes`,
//! `Detokenizer`) rule for rule; tests/test_detok_rust.py checks it against llama.cpp's
//! fixtures and the Python decoder. Not yet used by the front ends.
//! [`Vocab`] computes every token's bytes once; [`StreamDecoder`] turns ids into text one at a
//! time, never splitting a UTF-8 character, and its pieces concatenate to [`Vocab::decode`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gguf::{Array, Metadata, Value};

// llama.h `llama_token_attr` bits.
const ATTR_UNKNOWN: u32 = 1 << 0;
const ATTR_UNUSED: u32 = 1 << 1;
const ATTR_NORMAL: u32 = 1 << 2;
const ATTR_CONTROL: u32 = 1 << 3;
const ATTR_USER_DEFINED: u32 = 1 << 4;
const ATTR_BYTE: u32 = 1 << 5;
/// Hidden unless special tokens are rendered.
const ATTR_SPECIAL: u32 = ATTR_UNKNOWN | ATTR_CONTROL;

/// GGUF `tokenizer.ggml.token_type` -> attribute bits.
fn type_to_attr(t: i128) -> u32 {
    match t {
        1 => ATTR_NORMAL,
        2 => ATTR_UNKNOWN,
        3 => ATTR_CONTROL,
        4 => ATTR_USER_DEFINED,
        5 => ATTR_UNUSED,
        6 => ATTR_BYTE,
        _ => 0,
    }
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const KEY_EOT: &str = "tokenizer.ggml.eot_token_id";
const KEY_EOM: &str = "tokenizer.ggml.eom_token_id";

/// FIM keys, the deprecated key llama.cpp still reads into each, and the token texts it looks
/// for when neither names a token (llama_vocab::impl::load).
const FIM: [(&str, Option<&str>, &[&str]); 6] = [
    (
        "tokenizer.ggml.fim_pre_token_id",
        Some("tokenizer.ggml.prefix_token_id"),
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_suf_token_id",
        Some("tokenizer.ggml.suffix_token_id"),
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_mid_token_id",
        Some("tokenizer.ggml.middle_token_id"),
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_pad_token_id",
        None,
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        "tokenizer.ggml.fim_rep_token_id",
        None,
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("tokenizer.ggml.fim_sep_token_id", None, &["<|file_sep|>"]),
];

/// Every metadata key [`Vocab::from_metadata`] reads (a binding converts only these).
pub const KEYS: [&str; 17] = [
    KEY_MODEL,
    KEY_TOKENS,
    KEY_TYPES,
    KEY_PRE,
    KEY_SPACE_PREFIX,
    KEY_ADD_BOS,
    KEY_ADD_EOS,
    KEY_BOS,
    KEY_EOS,
    KEY_EOT,
    KEY_EOM,
    FIM[0].0,
    FIM[1].0,
    FIM[2].0,
    FIM[3].0,
    FIM[4].0,
    FIM[5].0,
];
/// The deprecated FIM keys, read too.
pub const OLD_KEYS: [&str; 3] = [
    "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.suffix_token_id",
    "tokenizer.ggml.middle_token_id",
];

/// `tokenizer.ggml.pre` -> (clean_spaces, add_bos by default): tokenizer.py `_PRE_SPECS`.
const PRE_SPECS: &[(&str, bool, bool)] = &[
    ("default", true, false),
    ("llama3", true, true),
    ("llama-v3", true, true),
    ("llama-bpe", true, true),
    ("falcon3", true, true),
    ("falcon-h1", true, true),
    ("pixtral", true, true),
    ("midm-2.0", true, true),
    ("lfm2", true, true),
    ("jina-v5-nano", true, true),
    ("dbrx", true, false),
    ("smaug-bpe", true, false),
    ("qwen2", false, false),
    ("deepseek-r1-qwen", false, false),
    ("kormo", false, false),
    ("f2llmv2", false, false),
    ("megrez", true, false),
    ("stablelm2", true, false),
    ("starcoder", true, false),
    ("refact", true, false),
    ("codeshell", true, false),
    ("exaone", true, false),
    ("minerva-7b", true, false),
    ("mellum2", true, false),
    ("smollm", false, false),
    ("command-r", false, false),
    ("gpt-2", true, false),
    ("phi-2", true, false),
    ("gigachat", true, false),
    ("a.x-4.0", true, false),
    ("mellum", true, false),
    ("mpt", true, false),
    ("olmo", true, false),
    ("jais", true, false),
    ("exaone4", true, false),
    ("trillion", false, false),
    ("granite-docling", false, false),
];

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// gpt-oss tokens that are always rendered.
const ALWAYS_RENDERED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

const SPM_SPACE: char = '\u{2581}'; // '▁'

fn tok_err(msg: String) -> Error {
    Error::Tokenizer(msg)
}

/// A GGUF vocabulary reduced to what detokenizing needs: every token's bytes (computed once,
/// in one arena), which tokens are hidden without special rendering, and the BOS/EOS rules.
#[derive(Clone, Debug)]
pub struct Vocab {
    arena: Vec<u8>,
    offsets: Vec<usize>, // [n_vocab + 1]
    hidden: Vec<bool>,   // [n_vocab] control or unknown
    eog: HashSet<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    /// llama_detokenize's clean_spaces (set by `tokenizer.ggml.pre`).
    pub clean_spaces: bool,
}

impl Vocab {
    /// Builds the vocabulary from GGUF metadata (the keys in [`KEYS`] and [`OLD_KEYS`]).
    pub fn from_metadata(meta: &Metadata) -> Result<Self> {
        let is_spm = match meta.get(KEY_MODEL) {
            Some(Value::String(s)) if s == "gpt2" || s == "llama" => s == "llama",
            v => {
                let got = v.map_or("None".to_owned(), |v| v.display(4));
                return Err(tok_err(format!(
                    "unsupported {KEY_MODEL} {got} (supported: 'gpt2', 'llama')"
                )));
            }
        };
        let tokens = match meta.get(KEY_TOKENS) {
            None => return Err(tok_err(format!("{KEY_TOKENS} is missing or empty"))),
            Some(Value::Array(a)) if a.is_empty() => {
                return Err(tok_err(format!("{KEY_TOKENS} is missing or empty")))
            }
            Some(Value::Array(Array::String(t))) => t,
            Some(_) => return Err(tok_err(format!("{KEY_TOKENS} must be an array of strings"))),
        };
        let n = tokens.len();
        if u32::try_from(n).is_err() {
            return Err(tok_err(format!("{KEY_TOKENS} has {n} entries, too many")));
        }
        // llama.cpp renames empty tokens so that every text is non-empty
        let texts: Vec<Cow<'_, str>> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| match t.is_empty() {
                true => Cow::Owned(format!("[EMPTY_{i}]")),
                false => Cow::Borrowed(t.as_str()),
            })
            .collect();
        let mut lookup: HashMap<&str, u32> = HashMap::with_capacity(n);
        for (i, t) in texts.iter().enumerate() {
            if lookup.insert(t, i as u32).is_some() {
                return Err(tok_err(format!("{KEY_TOKENS} has a duplicate token {t:?}")));
            }
        }

        let mut attrs = match meta.get(KEY_TYPES) {
            None => vec![ATTR_NORMAL; n],
            Some(Value::Array(a)) if a.len() >= n => (0..n)
                .map(|i| match a.get(i).and_then(|v| v.as_i128()) {
                    Some(t) => Ok(type_to_attr(t)),
                    None => Err(tok_err(format!("{KEY_TYPES} must be an array of integers"))),
                })
                .collect::<Result<Vec<u32>>>()?,
            Some(Value::Array(a)) => {
                return Err(tok_err(format!(
                    "{KEY_TYPES} has {} entries, fewer than the {n} tokens",
                    a.len()
                )))
            }
            Some(v) => {
                return Err(tok_err(format!(
                    "{KEY_TYPES} must be an array, got {}",
                    v.value_type().name()
                )))
            }
        };

        let (clean_spaces, add_bos_default, space_prefix_default, defaults) = if is_spm {
            (false, true, true, [Some(1), Some(2)])
        } else {
            let pre = match meta.get(KEY_PRE) {
                None => "default",
                Some(Value::String(s)) if s.is_empty() => "default",
                Some(Value::String(s)) => s.as_str(),
                Some(v) => return Err(tok_err(format!("{KEY_PRE} must be a string, got {v}"))),
            };
            let Some(&(_, clean, add_bos)) = PRE_SPECS.iter().find(|s| s.0 == pre) else {
                let mut names: Vec<&str> = PRE_SPECS.iter().map(|s| s.0).collect();
                names.sort_unstable();
                return Err(tok_err(format!(
                    "unsupported {KEY_PRE} {pre:?} for {KEY_MODEL} 'gpt2' (supported: {})",
                    names.join(", ")
                )));
            };
            (clean, add_bos, false, [Some(11), Some(11)])
        };
        let add_space_prefix = flag(meta, KEY_SPACE_PREFIX, space_prefix_default)?;

        // a valid id from the key, else the default when that is in range
        let special = |key: &str, default: Option<u32>| -> Result<Option<u32>> {
            let default = default.filter(|&d| (d as usize) < n);
            Ok(match get_id(meta, key)? {
                Some(v) if (0..n as i128).contains(&v) => Some(v as u32),
                _ => default,
            })
        };
        let bos = special(KEY_BOS, defaults[0])?;
        let eos = special(KEY_EOS, defaults[1])?;
        let mut eot = special(KEY_EOT, None)?;
        let mut eom = special(KEY_EOM, None)?;
        let mut fim = [None; 6];
        for (slot, (key, old, _)) in fim.iter_mut().zip(FIM) {
            *slot = special(key, None)?;
            if let Some(old) = old {
                *slot = special(old, *slot)?;
            }
        }
        let add_bos = flag(meta, KEY_ADD_BOS, add_bos_default)?;
        let add_eos = flag(meta, KEY_ADD_EOS, false)?;
        if add_bos && bos.is_none() {
            return Err(tok_err(format!(
                "{KEY_ADD_BOS} is set but there is no BOS token"
            )));
        }
        if add_eos && eos.is_none() {
            return Err(tok_err(format!(
                "{KEY_ADD_EOS} is set but there is no EOS token"
            )));
        }

        // tokenizer.py `_mark_special_tokens`: find EOT/EOM/FIM/EOG tokens by text and fix
        // their attributes, as llama.cpp does
        let find = |attrs: &mut [u32], list: &[&str]| -> Option<u32> {
            let id = list.iter().find_map(|t| lookup.get(t).copied())?;
            attrs[id as usize] |= ATTR_CONTROL;
            Some(id)
        };
        if eot.is_none() {
            eot = find(&mut attrs, EOT_TEXTS);
        }
        if eom.is_none() {
            eom = find(&mut attrs, EOM_TEXTS);
        }
        for (slot, (_, _, list)) in fim.iter_mut().zip(FIM) {
            if slot.is_none() {
                *slot = find(&mut attrs, list);
            }
        }
        let mut eog: HashSet<u32> = fim[3..].iter().flatten().copied().collect();
        for t in EOG_TEXTS {
            if let Some(&id) = lookup.get(t) {
                eog.insert(id);
                attrs[id as usize] |= ATTR_CONTROL;
            }
        }
        for t in ALWAYS_RENDERED {
            if let Some(&id) = lookup.get(t) {
                attrs[id as usize] = ATTR_USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        let eog_texts: HashSet<&str> = eog.iter().map(|&t| &*texts[t as usize]).collect();
        let has = |list: &[&str]| list.iter().any(|t| eog_texts.contains(t));
        // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation
        if eog_texts.contains("<|end|>")
            && has(&["<|call|>", "<|calls|>"])
            && has(&["<|return|>", "<|flush|>"])
        {
            let end = lookup["<|end|>"];
            eog.remove(&end);
            attrs[end as usize] = ATTR_USER_DEFINED;
        }
        // gemma4 / plamo: "</s>" is an ordinary token there
        if let Some(&s) = lookup.get("</s>") {
            if eog.contains(&s) && has(&["<|tool_response>", "<|plamo:eos|>"]) {
                eog.remove(&s);
                attrs[s as usize] = ATTR_NORMAL;
            }
        }

        let gpt2 = Gpt2Bytes::new();
        let mut arena = Vec::with_capacity(texts.iter().map(|t| t.len()).sum());
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        for (text, &attr) in texts.iter().zip(&attrs) {
            make_piece(&mut arena, attr, text, is_spm, &gpt2);
            offsets.push(arena.len());
        }
        let hidden = attrs.iter().map(|a| a & ATTR_SPECIAL != 0).collect();
        Ok(Vocab {
            arena,
            offsets,
            hidden,
            eog,
            bos,
            eos,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.hidden.len()
    }

    fn check(&self, id: u32) -> Result<usize> {
        let i = id as usize;
        if i < self.n_vocab() {
            Ok(i)
        } else {
            Err(Error::TokenOutOfRange {
                id: id.into(),
                n_vocab: self.n_vocab(),
            })
        }
    }

    /// Bytes `id` contributes to text (`llama_token_to_piece` with special=true).
    pub fn piece(&self, id: u32) -> Result<&[u8]> {
        let i = self.check(id)?;
        Ok(&self.arena[self.offsets[i]..self.offsets[i + 1]])
    }

    /// The piece, or nothing for a control/unknown token when special tokens are hidden.
    fn piece_for(&self, id: u32, special: bool) -> Result<&[u8]> {
        let piece = self.piece(id)?;
        Ok(if !special && self.hidden[id as usize] {
            &[]
        } else {
            piece
        })
    }

    /// True for control and unknown tokens (hidden from text unless rendering special ones).
    pub fn is_control(&self, id: u32) -> Result<bool> {
        Ok(self.hidden[self.check(id)?])
    }

    /// True for tokens that end generation (`llama_vocab_is_eog`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Every end-of-generation token, in increasing order.
    pub fn eog_tokens(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eog.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Bytes of `llama_detokenize(remove_special=skip_special, unparse_special=!skip_special)`.
    pub fn decode_bytes(&self, ids: &[u32], skip_special: bool) -> Result<Vec<u8>> {
        for &id in ids {
            self.check(id)?;
        }
        let mut ids = ids;
        let mut strip_first = self.add_space_prefix;
        if skip_special {
            if let Some((&first, rest)) = ids.split_first() {
                if self.add_bos && Some(first) == self.bos {
                    strip_first = false;
                    ids = rest;
                }
            }
            if let Some((&last, rest)) = ids.split_last() {
                if self.add_eos && Some(last) == self.eos {
                    ids = rest;
                }
            }
        }
        let mut raw = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            let mut piece = self.piece_for(id, !skip_special)?;
            if k == 0 && strip_first && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
            raw.extend_from_slice(piece);
        }
        Ok(if self.clean_spaces {
            clean_spaces(&raw)
        } else {
            raw
        })
    }

    /// Text of `ids` (see [`Vocab::decode_bytes`]); invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let raw = self.decode_bytes(ids, skip_special)?;
        Ok(match String::from_utf8(raw) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

/// A boolean key (integers count as their truth value), or `default` when absent.
fn flag(meta: &Metadata, key: &str, default: bool) -> Result<bool> {
    Ok(match meta.get(key) {
        None => default,
        Some(Value::Bool(b)) => *b,
        Some(v) => match v.as_i128() {
            Some(i) => i != 0,
            None => return Err(tok_err(format!("{key} must be a bool, got {v}"))),
        },
    })
}

/// An integer key; absent and boolean values count as absent (tokenizer.py `_get_id`).
fn get_id(meta: &Metadata, key: &str) -> Result<Option<i128>> {
    match meta.get(key) {
        None | Some(Value::Bool(_)) => Ok(None),
        Some(v) => match (v.as_i128(), v.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.is_finite() => Ok(Some(f.trunc() as i128)),
            _ => Err(tok_err(format!("{key} must be an integer, got {v}"))),
        },
    }
}

/// GPT-2's bytes_to_unicode reversed (llama.cpp `unicode_utf8_to_byte`): printable bytes stand
/// for themselves, the other 68 for U+0100.. in byte order.
struct Gpt2Bytes {
    shifted: Vec<u8>,
}

impl Gpt2Bytes {
    fn printable(b: u32) -> bool {
        matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
    }

    fn new() -> Self {
        let shifted = (0u8..=255)
            .filter(|&b| !Self::printable(b.into()))
            .collect();
        Gpt2Bytes { shifted }
    }

    fn byte(&self, c: char) -> Option<u8> {
        let c = c as u32;
        if c < 256 {
            return Self::printable(c).then_some(c as u8);
        }
        self.shifted.get((c - 256) as usize).copied()
    }
}

/// Appends the bytes of one token (tokenizer.py `_make_piece`).
fn make_piece(out: &mut Vec<u8>, attr: u32, text: &str, is_spm: bool, gpt2: &Gpt2Bytes) {
    if attr & (ATTR_SPECIAL | ATTR_USER_DEFINED) != 0 {
        out.extend_from_slice(text.as_bytes());
    } else if attr & ATTR_NORMAL != 0 {
        if is_spm {
            for c in text.chars() {
                let c = if c == SPM_SPACE { ' ' } else { c };
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
        } else {
            for c in text.chars() {
                match gpt2.byte(c) {
                    Some(b) => out.push(b),
                    None => {
                        // llama.cpp writes a marker (and, oddly, the whole token text)
                        out.extend_from_slice(b"[UNK_BYTE_0x");
                        for b in c.encode_utf8(&mut [0; 4]).bytes() {
                            out.extend_from_slice(format!("{b:02x}").as_bytes());
                        }
                        out.extend_from_slice(text.as_bytes());
                        out.push(b']');
                    }
                }
            }
        }
    } else if attr & ATTR_BYTE != 0 {
        // "<0xXX>"; llama.cpp: strtol(text.substr(3, 2), 16)
        let digits: String = text
            .chars()
            .skip(3)
            .take(2)
            .take_while(char::is_ascii_hexdigit)
            .collect();
        out.push(u8::from_str_radix(&digits, 16).unwrap_or(0));
    }
    // unused / undefined tokens render as nothing
}

/// llama_detokenize's clean_spaces, as tokenizer.py `_clean_spaces`: " ?" " !" " ." " ," lose
/// the space; a lone " ' " becomes "'"; " 's" " 'm" " 're" " 've" lose the space.
pub fn clean_spaces(raw: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(raw.len());
    for (i, &b) in raw.iter().enumerate() {
        if b == b' ' && matches!(raw.get(i + 1), Some(b'?' | b'!' | b'.' | b',')) {
            continue;
        }
        a.push(b);
    }
    let mut b = Vec::with_capacity(a.len());
    let mut i = 0;
    while i < a.len() {
        if a[i..].starts_with(b" ' ") {
            b.push(b'\'');
            i += 3;
        } else {
            b.push(a[i]);
            i += 1;
        }
    }
    let mut c = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b" '")
            && [&b"s"[..], b"m", b"re", b"ve"]
                .iter()
                .any(|t| rest[2..].starts_with(t))
        {
            c.push(b'\'');
            i += 2;
        } else {
            c.push(b[i]);
            i += 1;
        }
    }
    c
}

/// Largest k such that `clean_spaces(raw[..k])` is final whatever follows: every rewrite
/// involves a space or an apostrophe and looks at most two bytes past the apostrophe.
pub fn clean_cut(raw: &[u8]) -> usize {
    let mut k = raw.len();
    while k > 0 && (raw[k - 1] == b' ' || raw[k.saturating_sub(3)..k].contains(&b'\'')) {
        k -= 1;
    }
    k
}

/// Lossy UTF-8 decoding of `buf` (U+FFFD per maximal invalid subpart, as Python and
/// `String::from_utf8_lossy`); an incomplete character at the end stays in `buf` unless
/// `last`.
fn take_utf8(buf: &mut Vec<u8>, last: bool) -> String {
    let mut out = String::new();
    let mut rest: &[u8] = buf;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.push_str(&String::from_utf8_lossy(valid));
                match e.error_len() {
                    Some(len) => {
                        out.push('\u{FFFD}');
                        rest = &after[len..];
                    }
                    None => {
                        if last {
                            out.push('\u{FFFD}');
                            rest = &[];
                        } else {
                            rest = after;
                        }
                        break;
                    }
                }
            }
        }
    }
    let consumed = buf.len() - rest.len();
    buf.drain(..consumed);
    out
}

/// Incremental detokenizing: push ids one at a time, get only complete UTF-8 text back.
///
/// The pieces (with [`StreamDecoder::flush`]'s) concatenate to `vocab.decode(ids,
/// skip_special)`. Bytes of a character split across tokens are held back, and so are trailing
/// spaces/apostrophes while clean_spaces could still rewrite them. With skip_special and
/// add_eos, an EOS is held back too: decode() drops it when it is the last id.
#[derive(Clone, Debug)]
pub struct StreamDecoder {
    vocab: Arc<Vocab>,
    skip_special: bool,
    first: bool,
    pending: Vec<u8>, // raw bytes clean_spaces may still rewrite
    held_eos: Vec<u8>,
    utf8: Vec<u8>, // an incomplete UTF-8 character
}

impl StreamDecoder {
    pub fn new(vocab: Arc<Vocab>, skip_special: bool) -> Self {
        StreamDecoder {
            vocab,
            skip_special,
            first: true,
            pending: Vec::new(),
            held_eos: Vec::new(),
            utf8: Vec::new(),
        }
    }

    pub fn vocab(&self) -> &Arc<Vocab> {
        &self.vocab
    }

    pub fn skip_special(&self) -> bool {
        self.skip_special
    }

    /// Forgets everything pushed so far.
    pub fn reset(&mut self) {
        self.first = true;
        self.pending.clear();
        self.held_eos.clear();
        self.utf8.clear();
    }

    /// The text `id` completes. An out-of-range id is an error and changes nothing.
    pub fn push(&mut self, id: u32) -> Result<String> {
        let vocab = Arc::clone(&self.vocab);
        let mut piece = vocab.piece_for(id, !self.skip_special)?;
        if self.first {
            self.first = false;
            if self.skip_special && vocab.add_bos && Some(id) == vocab.bos {
                return Ok(String::new());
            }
            if vocab.add_space_prefix && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
        }
        let mut bytes = std::mem::take(&mut self.held_eos);
        if self.skip_special && vocab.add_eos && Some(id) == vocab.eos {
            self.held_eos.extend_from_slice(piece);
        } else {
            bytes.extend_from_slice(piece);
        }
        Ok(self.feed(&bytes))
    }

    /// The text still held back; the decoder starts over afterwards.
    pub fn flush(&mut self) -> String {
        if self.vocab.clean_spaces {
            let tail = clean_spaces(&self.pending);
            self.utf8.extend_from_slice(&tail);
        }
        let text = take_utf8(&mut self.utf8, true);
        self.reset();
        text
    }

    fn feed(&mut self, bytes: &[u8]) -> String {
        if !self.vocab.clean_spaces {
            self.utf8.extend_from_slice(bytes);
            return take_utf8(&mut self.utf8, false);
        }
        self.pending.extend_from_slice(bytes);
        let k = clean_cut(&self.pending);
        if k == 0 {
            return String::new();
        }
        let ready = clean_spaces(&self.pending[..k]);
        self.pending.drain(..k);
        self.utf8.extend_from_slice(&ready);
        take_utf8(&mut self.utf8, false)
    }
}

#[cfg(test)]
#[path = "detok_tests.rs"]
mod tests;
