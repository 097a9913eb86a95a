//! Unit tests of `detok` on tiny vocabularies (tests/test_detok_rust.py checks real ones
//! against llama.cpp).

use super::*;

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER: i32 = 4;
const BYTE: i32 = 6;

fn meta(model: &str, tokens: &[(&str, i32)], extra: Vec<(&str, Value)>) -> Metadata {
    let mut m = Metadata::default();
    let mut put = |k: &str, v: Value| m.insert(k.to_owned(), v).unwrap();
    put(KEY_MODEL, Value::String(model.into()));
    put(
        KEY_TOKENS,
        Value::Array(Array::String(
            tokens.iter().map(|t| t.0.to_owned()).collect(),
        )),
    );
    put(
        KEY_TYPES,
        Value::Array(Array::I32(tokens.iter().map(|t| t.1).collect())),
    );
    for (k, v) in extra {
        put(k, v);
    }
    m
}

fn vocab(model: &str, tokens: &[(&str, i32)], extra: Vec<(&str, Value)>) -> Arc<Vocab> {
    Arc::new(Vocab::from_metadata(&meta(model, tokens, extra)).unwrap())
}

/// Byte-level BPE: "é" (C3 A9) is "Ã" + "©"; "€" (E2 82 AC) is "â" + "Ĥ" + "¬"; space is "Ġ".
fn bpe(pre: &str) -> Arc<Vocab> {
    let tokens = [
        ("<|endoftext|>", CONTROL),
        ("<|im_end|>", CONTROL),
        ("<tool>", USER),
        ("Hello", NORMAL),
        ("Ġworld", NORMAL),
        ("Ã", NORMAL),
        ("©", NORMAL),
        ("â", NORMAL),
        ("Ĥ", NORMAL),
        ("¬", NORMAL),
        ("Ġ,", NORMAL),
        ("Ġ'", NORMAL),
        ("s", NORMAL),
        ("Ġ.", NORMAL),
        ("re", NORMAL),
        ("Ġ", NORMAL),
        ("ĠĠ", NORMAL),
        ("Ċ", NORMAL),
        ("x y", NORMAL), // ' ' is no byte-level char
        ("<unused>", 5),
        ("", CONTROL),
    ];
    vocab("gpt2", &tokens, vec![(KEY_PRE, Value::String(pre.into()))])
}

/// SentencePiece with byte fallback.
fn spm(extra: Vec<(&str, Value)>) -> Arc<Vocab> {
    let tokens = [
        ("<unk>", UNKNOWN),
        ("<s>", CONTROL),
        ("</s>", CONTROL),
        ("▁Hello", NORMAL),
        ("<0xE2>", BYTE),
        ("<0x82>", BYTE),
        ("<0xAC>", BYTE),
        ("▁world", NORMAL),
        ("<0x0A>", BYTE),
        ("▁", NORMAL),
        ("<start_of_turn>", USER),
    ];
    vocab("llama", &tokens, extra)
}

fn stream(v: &Arc<Vocab>, ids: &[u32], skip: bool) -> Vec<String> {
    let mut d = StreamDecoder::new(Arc::clone(v), skip);
    let mut out: Vec<String> = ids.iter().map(|&i| d.push(i).unwrap()).collect();
    out.push(d.flush());
    out
}

/// Every id sequence up to `len` long: the stream concatenates to decode().
fn check_all_streams(v: &Arc<Vocab>, len: u32) {
    let n = v.n_vocab() as u32;
    for skip in [false, true] {
        for count in 0..=n.pow(len) {
            let k = count.checked_ilog(n).unwrap_or(0) + 1;
            let ids: Vec<u32> = (0..k.min(len)).map(|j| count / n.pow(j) % n).collect();
            let whole = v.decode(&ids, skip).unwrap();
            assert_eq!(stream(v, &ids, skip).concat(), whole, "{ids:?} skip={skip}");
        }
    }
}

#[test]
fn bpe_pieces_and_split_characters() {
    let v = bpe("qwen2");
    assert!(!v.clean_spaces);
    assert_eq!(v.piece(4).unwrap(), b" world");
    assert_eq!(v.decode(&[3, 4], false).unwrap(), "Hello world");
    assert_eq!(v.decode(&[3, 5, 6], false).unwrap(), "Helloé");
    assert_eq!(v.decode(&[7, 8, 9], false).unwrap(), "€");
    assert_eq!(stream(&v, &[3, 5, 6], false), ["Hello", "", "é", ""]);
    assert_eq!(stream(&v, &[7, 8, 9], false), ["", "", "€", ""]);
    // a split character that never completes: one U+FFFD per maximal invalid subpart
    assert_eq!(v.decode(&[7, 8, 3], false).unwrap(), "\u{FFFD}Hello");
    assert_eq!(stream(&v, &[7, 8, 3], false), ["", "", "\u{FFFD}Hello", ""]);
    assert_eq!(stream(&v, &[7, 8], false), ["", "", "\u{FFFD}"]);
    assert_eq!(v.decode(&[6, 6], false).unwrap(), "\u{FFFD}\u{FFFD}");
    assert_eq!(v.piece(17).unwrap(), b"\n");
    assert_eq!(v.piece(18).unwrap(), b"x[UNK_BYTE_0x20x y]y");
    assert_eq!(v.piece(19).unwrap(), b"");
    assert_eq!(v.piece(20).unwrap(), b"[EMPTY_20]");
    check_all_streams(&v, 3);
}

#[test]
fn control_and_user_defined_tokens() {
    let v = bpe("qwen2");
    assert_eq!(
        v.decode(&[0, 3, 2, 1], false).unwrap(),
        "<|endoftext|>Hello<tool><|im_end|>"
    );
    assert_eq!(v.decode(&[0, 3, 2, 1], true).unwrap(), "Hello<tool>");
    assert_eq!(stream(&v, &[0, 3, 2, 1], true).concat(), "Hello<tool>");
    assert!(v.is_control(1).unwrap() && !v.is_control(2).unwrap());
    assert!(v.is_eog(0) && v.is_eog(1) && !v.is_eog(2));
}

#[test]
fn spm_byte_fallback_and_space_prefix() {
    let v = spm(vec![]);
    assert!(v.add_space_prefix && v.add_bos && !v.clean_spaces);
    assert_eq!(v.piece(3).unwrap(), b" Hello");
    assert_eq!(v.decode(&[3, 7], false).unwrap(), "Hello world");
    assert_eq!(v.decode(&[1, 3, 7], false).unwrap(), "<s> Hello world");
    // BOS removed with skip_special: the next token keeps its space, as llama.cpp
    assert_eq!(v.decode(&[1, 3, 7], true).unwrap(), " Hello world");
    assert_eq!(v.decode(&[4, 5, 6, 8], false).unwrap(), "€\n");
    assert_eq!(stream(&v, &[3, 4, 5, 6], false), ["Hello", "", "", "€", ""]);
    assert_eq!(stream(&v, &[9, 9, 3], false), ["", " ", " Hello", ""]);
    assert_eq!(v.decode(&[0, 10], true).unwrap(), "<start_of_turn>");
    check_all_streams(&v, 3);
    let no_prefix = spm(vec![(KEY_SPACE_PREFIX, Value::Bool(false))]);
    assert_eq!(no_prefix.decode(&[3, 7], false).unwrap(), " Hello world");
}

#[test]
fn eos_removed_only_at_the_end() {
    let v = spm(vec![
        (KEY_ADD_EOS, Value::Bool(true)),
        (KEY_EOS, Value::U32(7)),
    ]);
    assert_eq!(v.decode(&[3, 7], true).unwrap(), "Hello");
    assert_eq!(v.decode(&[3, 7, 3], true).unwrap(), "Hello world Hello");
    assert_eq!(stream(&v, &[3, 7], true), ["Hello", "", ""]);
    assert_eq!(
        stream(&v, &[3, 7, 7, 3], true).concat(),
        "Hello world world Hello"
    );
    check_all_streams(&v, 3);
}

#[test]
fn clean_spaces_rules() {
    let c = |s: &str| String::from_utf8(clean_spaces(s.as_bytes())).unwrap();
    assert_eq!(c("a , b . c ? d !"), "a, b. c? d!");
    assert_eq!(c("  ."), " .");
    assert_eq!(c("a ' b"), "a'b");
    assert_eq!(c(" ' ' "), "'' ");
    assert_eq!(
        c("it 's we 're I 'm you 've 'd"),
        "it's we're I'm you've 'd"
    );
    assert_eq!(c("a 'r"), "a 'r");
    for s in ["ab ", "a'", "a'b", "a'bc", "ab.", "x 'v"] {
        assert!(clean_cut(s.as_bytes()) <= s.len());
    }
    assert_eq!(clean_cut(b"ab "), 2);
    assert_eq!(clean_cut(b"a'bc"), 1);
    assert_eq!(clean_cut(b"a'bcd"), 5);
}

#[test]
fn clean_spaces_in_decode_and_stream() {
    let v = bpe("gpt-2");
    assert!(v.clean_spaces);
    // Hello , Hello 's Hello . 're
    let ids = [3, 10, 3, 11, 12, 3, 13, 11, 14];
    assert_eq!(v.decode(&ids, false).unwrap(), "Hello,Hello'sHello.'re");
    assert_eq!(stream(&v, &ids, false).concat(), "Hello,Hello'sHello.'re");
    check_all_streams(&v, 3);
}

#[test]
fn errors_not_panics() {
    let v = spm(vec![]);
    let n = v.n_vocab() as u32;
    assert!(matches!(
        v.decode(&[3, n], false),
        Err(Error::TokenOutOfRange { id, n_vocab }) if id == i64::from(n) && n_vocab == 11
    ));
    assert!(v.piece(u32::MAX).is_err());
    let mut d = StreamDecoder::new(Arc::clone(&v), false);
    assert_eq!(d.push(4).unwrap(), "");
    assert!(d.push(n).is_err());
    assert_eq!(d.push(5).unwrap(), "");
    assert_eq!(d.push(6).unwrap(), "€");

    let bad = |model: &str, tokens: &[(&str, i32)], extra| {
        Vocab::from_metadata(&meta(model, tokens, extra))
            .unwrap_err()
            .to_string()
    };
    assert!(bad("bert", &[("a", 1)], vec![]).contains("unsupported tokenizer.ggml.model"));
    assert!(bad("gpt2", &[], vec![]).contains("missing or empty"));
    assert!(bad("gpt2", &[("a", 1), ("a", 1)], vec![]).contains("duplicate token"));
    let pre = vec![(KEY_PRE, Value::String("nope".into()))];
    assert!(bad("gpt2", &[("a", 1)], pre).contains("unsupported tokenizer.ggml.pre"));
    // gpt2 defaults BOS/EOS to 11, out of range here
    let add_bos = vec![(KEY_ADD_BOS, Value::Bool(true))];
    assert!(bad("gpt2", &[("a", 1)], add_bos).contains("no BOS token"));
}

#[test]
fn special_tokens_found_by_text() {
    // "<|end|>" is marked control by text even when typed normal; "<|channel|>" always shown
    let tokens = [
        ("a", NORMAL),
        ("<|end|>", NORMAL),
        ("<|channel|>", CONTROL),
        ("<|fim_pad|>", NORMAL),
    ];
    let v = vocab("gpt2", &tokens, vec![]);
    assert_eq!(v.decode(&[0, 1, 2, 3], true).unwrap(), "a<|channel|>");
    assert!(v.is_eog(1) && v.is_eog(3));
    // o200k_harmony: "<|end|>" is rendered when "<|call|>" and "<|return|>" end generation
    let tokens = [
        ("a", NORMAL),
        ("<|end|>", CONTROL),
        ("<|call|>", CONTROL),
        ("<|return|>", CONTROL),
    ];
    let v = vocab("gpt2", &tokens, vec![]);
    assert_eq!(v.decode(&[0, 1, 2], true).unwrap(), "a<|end|>");
    assert!(!v.is_eog(1) && v.is_eog(2));
}
