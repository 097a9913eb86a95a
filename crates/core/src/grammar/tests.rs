//! The grammar processor in the token loop, on a small byte-level BPE vocabulary with
//! pseudo-random logits: whatever the logits say, the text stays in the grammar's language.

use super::*;
use crate::generate::{Finish, GenParams, SeqDecoder};
use crate::gguf::{Array, Metadata, Value};
use crate::sampler::{Sampler, SamplerParams};

/// Printable ASCII one character per token (space as GPT-2's "Ġ"), some longer pieces that
/// cross grammar boundaries, and two end-of-generation control tokens.
fn vocab() -> Arc<Vocab> {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_end|>".into()];
    tokens.extend((b'!'..=b'~').map(|b| (b as char).to_string()));
    for t in [
        "Ġ", "Ċ", "{\"", "\":", "\",Ġ\"", "true", "12", "ĠĠ", "abc", "\"}", "<tool>",
    ] {
        tokens.push(t.into());
    }
    let mut types = vec![3; 2];
    types.resize(tokens.len(), 1);
    let mut m = Metadata::default();
    let mut put = |k: &str, v: Value| m.insert(k.to_owned(), v).unwrap();
    put("tokenizer.ggml.model", Value::String("gpt2".into()));
    put("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    put("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    put("tokenizer.ggml.eos_token_id", Value::U32(0));
    put("tokenizer.ggml.eot_token_id", Value::U32(1));
    Arc::new(Vocab::from_metadata(&m).unwrap())
}

/// Generates under `spec` with logits from a small LCG; returns the text and how it ended.
fn run(spec: &GrammarSpec, seed: u64, temperature: f32, max_tokens: usize) -> (String, Finish) {
    let v = vocab();
    let env = Arc::new(TokenEnv::new(&v).unwrap());
    let params = GenParams {
        max_tokens: Some(max_tokens),
        ..GenParams::default()
    };
    let mut dec = SeqDecoder::new(Arc::clone(&v), &params, &[], None);
    dec.add_processor(Box::new(env.processor(spec).unwrap()));
    let mut sampler = Sampler::new(SamplerParams {
        temperature,
        seed: Some(seed),
        ..SamplerParams::default()
    })
    .unwrap();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut text = String::new();
    loop {
        let mut logits: Vec<f32> = (0..v.n_vocab())
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) * 8.0
            })
            .collect();
        let (chunk, next) = dec.step(&mut logits, &mut sampler);
        text.push_str(&chunk.text);
        if let Some(f) = chunk.finish {
            assert!(next.is_none());
            assert_eq!(chunk.error, None, "{text:?}");
            return (text, f);
        }
    }
}

#[test]
fn json_schema_output_parses_and_validates() {
    let spec = GrammarSpec::json_schema(
        r#"{"type": "object", "properties": {"ok": {"type": "boolean"},
            "n": {"type": "integer", "minimum": 0, "maximum": 99},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}},
            "required": ["ok", "n", "tags"], "additionalProperties": false}"#,
    )
    .unwrap();
    for seed in 0..12 {
        for temperature in [0.0, 1.0] {
            let (text, finish) = run(&spec, seed, temperature, 200);
            assert_eq!(finish, Finish::Stop, "seed {seed}: {text:?}");
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("seed {seed}: {text:?}: {e}"));
            assert!(v["ok"].is_boolean(), "{text}");
            let n = v["n"].as_i64().unwrap();
            assert!((0..=99).contains(&n), "{text}");
            let tags = v["tags"].as_array().unwrap();
            assert!(
                tags.len() <= 3 && tags.iter().all(|t| t == "a" || t == "b"),
                "{text}"
            );
            assert_eq!(v.as_object().unwrap().len(), 3, "{text}");
        }
    }
}

#[test]
fn regex_and_gbnf_constrain_the_text() {
    let rx = GrammarSpec::regex("[0-9]{3}-[a-c]+").unwrap();
    let gbnf = GrammarSpec::gbnf(
        "root ::= item (\",\" ws item)*\nitem ::= \"true\" | [a-c]{1,3} | \"12\"\nws ::= \" \"?\n",
    )
    .unwrap();
    for seed in 0..20 {
        let (text, _) = run(&rx, seed, 1.0, 12);
        let (digits, letters) = text.split_once('-').unwrap_or_else(|| panic!("{text:?}"));
        assert!(
            digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit()),
            "{text:?}"
        );
        assert!(
            letters.bytes().all(|b| (b'a'..=b'c').contains(&b)),
            "{text:?}"
        );
        let (text, _) = run(&gbnf, seed, 1.0, 30);
        for item in text.split(',') {
            let item = item.strip_prefix(' ').unwrap_or(item);
            let ok = item == "true"
                || item == "12"
                || (1..=3).contains(&item.len()) && item.bytes().all(|b| (b'a'..=b'c').contains(&b))
                // The last item may be cut short by max_tokens.
                || text.ends_with(item);
            assert!(ok, "{text:?}: {item:?}");
        }
    }
}

#[test]
fn unsatisfiable_within_max_tokens_ends_with_length() {
    let spec = GrammarSpec::regex("a{50}").unwrap();
    let (text, finish) = run(&spec, 3, 1.0, 10);
    assert_eq!(finish, Finish::Length);
    assert_eq!(text, "a".repeat(10));
}

#[test]
fn lazy_mask_picks_the_greedy_masked_token() {
    // With temperature 0 the loop's choice (sample, check, mask on refusal) must be the argmax
    // over the tokens the full mask allows.
    let v = vocab();
    let env = Arc::new(TokenEnv::new(&v).unwrap());
    let spec =
        GrammarSpec::json_schema(r#"{"type": "array", "items": {"type": "integer"}}"#).unwrap();
    let mut eager = env.processor(&spec).unwrap();
    let mut lazy = env.processor(&spec).unwrap();
    let mut sampler = Sampler::new(SamplerParams {
        temperature: 0.0,
        ..SamplerParams::default()
    })
    .unwrap();
    let mut state = 7u64;
    for _ in 0..20 {
        let logits: Vec<f32> = (0..v.n_vocab())
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 40) as f32
            })
            .collect();
        let mut masked = logits.clone();
        eager.mask(&mut masked);
        let want = sampler.sample(&masked, &[]);
        let mut got = sampler.sample(&logits, &[]);
        if !lazy.allows(got) {
            let mut m = logits.clone();
            LogitsProcessor::mask(&mut lazy, &mut m);
            got = sampler.sample(&m, &[]);
        }
        assert_eq!(got, want);
        if v.is_eog(got) {
            break;
        }
        eager.accept(got);
        lazy.accept(got);
    }
    assert!(lazy.n_checks >= 1);
}

#[test]
fn control_tokens_are_never_grammar_text() {
    // "<tool>" is text-like but a user-defined token; "<|im_end|>" is control: a grammar that
    // asks for the characters "<|im_end|>" must spell them, not sample the control token.
    let v = vocab();
    let env = Arc::new(TokenEnv::new(&v).unwrap());
    let spec = GrammarSpec::regex("<\\|im_end\\|>x").unwrap();
    let mut p = env.processor(&spec).unwrap();
    assert!(!p.allows(1));
    assert!(p.allows(u32::from(b'<' - b'!') + 2));
}

#[test]
fn end_tokens_follow_the_grammar() {
    let v = vocab();
    let env = Arc::new(TokenEnv::new(&v).unwrap());
    let spec = GrammarSpec::regex("ab?").unwrap();
    let mut p = env.processor(&spec).unwrap();
    let a = u32::from(b'a' - b'!') + 2;
    assert!(!p.allows(0), "nothing generated yet");
    p.accept(a);
    assert!(
        p.allows(0) && p.allows(1),
        "both end tokens end an accepted text"
    );
    let mut logits = vec![0.0; v.n_vocab()];
    p.mask(&mut logits);
    let allowed: Vec<usize> = (0..logits.len()).filter(|&t| logits[t] == 0.0).collect();
    assert_eq!(allowed, vec![0, 1, a as usize + 1]);
}

#[test]
fn bad_grammars_are_invalid_arguments_naming_the_problem() {
    let cases: Vec<(Result<GrammarSpec>, &str)> = vec![
        (
            GrammarSpec::json_schema("{"),
            "invalid json_schema: not JSON",
        ),
        (GrammarSpec::json_schema("[1]"), "must be a JSON object"),
        (
            GrammarSpec::json_schema(r#"{"type": "frobnicate"}"#),
            "invalid json_schema",
        ),
        (GrammarSpec::regex("(a"), "invalid regex"),
        (GrammarSpec::regex(""), "empty regular expression"),
        (GrammarSpec::lark("start: foo"), "invalid lark"),
        (GrammarSpec::gbnf("root ::= x"), "undefined rule 'x'"),
    ];
    for (r, want) in cases {
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains(want), "{msg}");
    }
    assert!(GrammarSpec::json_object().lark_text().is_none());
}
