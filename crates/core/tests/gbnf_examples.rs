//! llama.cpp's example grammars (tests/fixtures/gbnf) are accepted as they are, and each
//! accepts sentences of its language and refuses others.

use std::path::PathBuf;

use rllm_core::GrammarSpec;

fn example(name: &str) -> GrammarSpec {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gbnf")
        .join(format!("{name}.gbnf"));
    let src = std::fs::read_to_string(&path).unwrap();
    GrammarSpec::gbnf(&src).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_example_parses() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gbnf");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "gbnf") {
            let src = std::fs::read_to_string(&path).unwrap();
            GrammarSpec::gbnf(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 8, "only {n} examples");
}

#[test]
fn examples_accept_their_language_only() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "json",
            &[
                "{\"a\": [1, 2.5e3, true, null], \"b\": {\"c\": \"x\\n\\u00e9\"}}",
                "{}",
                "{\n  \"k\": -0.5\n}",
            ],
            &["[1]", "{\"a\" 1}", "{'a': 1}", "{\"a\": 01}", "{} x"],
        ),
        (
            "json_arr",
            &["[\n1,\n\"a\"]", "[\n]"],
            &["[1]", "{}", "[\n1,]"],
        ),
        (
            "arithmetic",
            &["1+2= 3\n", "(a +b)*c= x\n10/2= 5\n"],
            &["1+2\n", "= 3\n", "1+2= 3"],
        ),
        (
            "list",
            &["- milk\n- eggs\n", "- a\n"],
            &["milk\n", "- \n", "- a"],
        ),
        (
            "chess",
            &["1. e4 e5\n2. Nf3 Nc6\n", "1. d4 d5\n2. O-O Qxd8+\n"],
            &["1. e4 e5\n", "1. e9 e5\n2. a1 a2\n", "e4 e5\n"],
        ),
        (
            "c",
            &["int main(){return 0;}", "int f(int x){x = x+1;return x;}"],
            &["main(){}", "int main(){return 0}"],
        ),
        (
            "english",
            &["Hello, world!", "a b\nc"],
            &["", "héllo", "a  b"],
        ),
        ("japanese", &["こんにちは", "カタカナ 漢字"], &["hello", ""]),
    ];
    for (name, good, bad) in cases {
        let g = example(name);
        for s in *good {
            assert!(g.matches(s.as_bytes()), "{name} should accept {s:?}");
        }
        for s in *bad {
            assert!(!g.matches(s.as_bytes()), "{name} should refuse {s:?}");
        }
    }
}
