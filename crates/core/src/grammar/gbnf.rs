//! llama.cpp's GBNF grammars (`grammars/README.md` there) rewritten as llguidance Lark.
//!
//! GBNF is a character-level context-free grammar: `name ::= alternatives`, string literals,
//! character classes `[a-z]` / `[^"]`, `.` (any character), groups, `|`, and the repetitions
//! `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`, `{,n}`. The rule `root` is the start. llguidance's
//! Lark (`docs/syntax.md` in llguidance) has the same operators, an Earley parser over a
//! dynamic lexer, and the `{m,n}` repetition; what differs is the spelling: rules are written
//! `name: ...` and must be lowercase, strings are JSON strings, and character classes are
//! regexes `/[...]/`. So the conversion parses GBNF the way llama.cpp's `grammar-parser` does
//! (a newline ends a rule unless it is inside parentheses or after `|` or `::=`) and prints each
//! rule on one line.

use std::collections::HashMap;
use std::fmt::Write;

/// Parses `src` as GBNF and prints the same grammar in llguidance Lark, starting at `root`.
/// Fails naming the line and what is wrong.
pub fn gbnf_to_lark(src: &str) -> Result<String, String> {
    let rules = Parser::new(src).grammar()?;
    let mut names: HashMap<&str, String> = HashMap::new();
    let mut taken: Vec<String> = vec!["start".into()];
    for (name, _, _) in &rules {
        if names.contains_key(name.as_str()) {
            continue;
        }
        let mut lark: String = name
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c == '-' { '_' } else { c })
            .collect();
        if !lark.starts_with(|c: char| c.is_ascii_lowercase()) {
            lark.insert_str(0, "r_");
        }
        let base = lark.clone();
        let mut n = 1;
        while taken.contains(&lark) {
            n += 1;
            lark = format!("{base}_{n}");
        }
        taken.push(lark.clone());
        names.insert(name, lark);
    }
    let root = names
        .get("root")
        .ok_or("the grammar has no 'root' rule (GBNF starts at root)")?;
    let mut out = format!("start: {root}\n");
    let mut bodies: HashMap<&str, Vec<&Expr>> = HashMap::new();
    let mut order = Vec::new();
    for (name, line, body) in &rules {
        for r in body.refs() {
            if !names.contains_key(r) {
                return Err(format!("line {line}: undefined rule '{r}'"));
            }
        }
        // A name defined twice gets both definitions as alternatives, as in llama.cpp.
        let entry = bodies.entry(name.as_str()).or_default();
        if entry.is_empty() {
            order.push(name.as_str());
        }
        entry.push(body);
    }
    for name in order {
        let alts: Vec<String> = bodies[name].iter().map(|e| e.lark(&names)).collect();
        let _ = writeln!(out, "{}: {}", names[name], alts.join(" | "));
    }
    Ok(out)
}

/// One GBNF expression.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Alt(Vec<Expr>),
    Seq(Vec<Expr>),
    Literal(String),
    /// `[...]`: inclusive code point ranges; `negated` for `[^...]`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Any,
    Ref(String),
    Repeat {
        inner: Box<Expr>,
        min: u32,
        max: Option<u32>,
    },
}

impl Expr {
    fn refs(&self) -> Vec<&str> {
        match self {
            Expr::Alt(v) | Expr::Seq(v) => v.iter().flat_map(Expr::refs).collect(),
            Expr::Ref(r) => vec![r.as_str()],
            Expr::Repeat { inner, .. } => inner.refs(),
            _ => Vec::new(),
        }
    }

    fn lark(&self, names: &HashMap<&str, String>) -> String {
        match self {
            Expr::Alt(v) => v
                .iter()
                .map(|e| e.lark(names))
                .collect::<Vec<_>>()
                .join(" | "),
            Expr::Seq(v) if v.is_empty() => "\"\"".into(),
            Expr::Seq(v) => v
                .iter()
                .map(|e| match e {
                    Expr::Alt(_) => format!("({})", e.lark(names)),
                    _ => e.lark(names),
                })
                .collect::<Vec<_>>()
                .join(" "),
            Expr::Literal(s) => json_string(s),
            Expr::Class { negated, ranges } => {
                let mut rx = String::from("/[");
                if *negated {
                    rx.push('^');
                }
                for &(lo, hi) in ranges {
                    rx.push_str(&regex_char(lo));
                    if hi != lo {
                        rx.push('-');
                        rx.push_str(&regex_char(hi));
                    }
                }
                rx.push_str("]/");
                rx
            }
            Expr::Any => "/(?s:.)/".into(),
            Expr::Ref(r) => names[r.as_str()].clone(),
            Expr::Repeat { inner, min, max } => {
                let inner = format!("({})", inner.lark(names));
                match (min, max) {
                    (0, None) => format!("{inner}*"),
                    (1, None) => format!("{inner}+"),
                    (0, Some(1)) => format!("{inner}?"),
                    (m, None) => format!("{inner}{{{m},}}"),
                    (m, Some(n)) if m == n => format!("{inner}{{{m}}}"),
                    (m, Some(n)) => format!("{inner}{{{m},{n}}}"),
                }
            }
        }
    }
}

/// A JSON string literal (what llguidance's Lark reads in quotes).
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One character inside a regex class: letters and digits as they are, the rest as `\x{..}`
/// so that nothing (`]`, `^`, `-`, `\`, or the `/` that ends a Lark regex) is read as syntax.
fn regex_char(c: char) -> String {
    if c.is_ascii_alphanumeric() {
        c.to_string()
    } else {
        format!("\\x{{{:X}}}", c as u32)
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn line(&self) -> usize {
        self.src[..self.pos].matches('\n').count() + 1
    }

    fn err<T>(&self, what: impl std::fmt::Display) -> Result<T, String> {
        let near: String = self.rest().chars().take(20).collect();
        Err(format!("line {}: {what} (at {near:?})", self.line()))
    }

    /// Skips blanks and `#` comments; newlines too when `newline_ok`.
    fn space(&mut self, newline_ok: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\r' | '\n' if newline_ok => self.pos += 1,
                '#' => {
                    let end = self.rest().find('\n').unwrap_or(self.rest().len());
                    self.pos += end;
                }
                _ => break,
            }
        }
    }

    fn name(&mut self) -> Option<String> {
        let n = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(self.rest().len());
        if n == 0 {
            return None;
        }
        let name = self.rest()[..n].to_owned();
        self.pos += n;
        Some(name)
    }

    fn grammar(&mut self) -> Result<Vec<(String, usize, Expr)>, String> {
        let mut rules = Vec::new();
        self.space(true);
        while self.pos < self.src.len() {
            let line = self.line();
            let Some(name) = self.name() else {
                return self.err("expected a rule name");
            };
            self.space(false);
            if !self.rest().starts_with("::=") {
                return self.err(format!("expected '::=' after '{name}'"));
            }
            self.pos += 3;
            self.space(true);
            let body = self.alternates(false)?;
            rules.push((name, line, body));
            self.space(false);
            match self.peek() {
                None => {}
                Some('\n' | '\r') => self.space(true),
                Some(_) => return self.err("expected the end of the rule"),
            }
        }
        if rules.is_empty() {
            return Err("the grammar is empty".into());
        }
        Ok(rules)
    }

    fn alternates(&mut self, nested: bool) -> Result<Expr, String> {
        let mut alts = vec![self.sequence(nested)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            self.space(true);
            alts.push(self.sequence(nested)?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(Expr::Seq(Vec::new()))
        } else {
            Expr::Alt(alts)
        })
    }

    fn sequence(&mut self, nested: bool) -> Result<Expr, String> {
        let mut seq: Vec<Expr> = Vec::new();
        loop {
            let item = match self.peek() {
                Some('"') => {
                    self.pos += 1;
                    let mut s = String::new();
                    loop {
                        match self.peek() {
                            None | Some('\n') => return self.err("unterminated string"),
                            Some('"') => {
                                self.pos += 1;
                                break;
                            }
                            Some(_) => s.push(self.char_in_literal()?),
                        }
                    }
                    Expr::Literal(s)
                }
                Some('[') => {
                    self.pos += 1;
                    let negated = self.rest().starts_with('^');
                    if negated {
                        self.pos += 1;
                    }
                    let mut ranges = Vec::new();
                    loop {
                        match self.peek() {
                            None => return self.err("unterminated character class"),
                            Some(']') => {
                                self.pos += 1;
                                break;
                            }
                            Some(_) => {
                                let lo = self.char_in_literal()?;
                                let mut hi = lo;
                                if self.rest().starts_with('-') && !self.rest().starts_with("-]") {
                                    self.pos += 1;
                                    hi = self.char_in_literal()?;
                                    if hi < lo {
                                        return self
                                            .err(format!("empty character range {lo:?}-{hi:?}"));
                                    }
                                }
                                ranges.push((lo, hi));
                            }
                        }
                    }
                    Expr::Class { negated, ranges }
                }
                Some('.') => {
                    self.pos += 1;
                    Expr::Any
                }
                Some('(') => {
                    self.pos += 1;
                    self.space(true);
                    let inner = self.alternates(true)?;
                    if self.peek() != Some(')') {
                        return self.err("expected ')'");
                    }
                    self.pos += 1;
                    inner
                }
                Some('<') => {
                    return self.err("token references (<...>) are not supported");
                }
                Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_' => {
                    let name = self.name().unwrap_or_default();
                    if self
                        .rest()
                        .trim_start_matches([' ', '\t'])
                        .starts_with("::=")
                    {
                        return self.err(format!(
                            "rule '{name}' starts before the previous rule ended (missing newline?)"
                        ));
                    }
                    Expr::Ref(name)
                }
                Some('*' | '+' | '?') => {
                    let op = self.peek().unwrap_or('*');
                    let Some(last) = seq.pop() else {
                        return self.err(format!("'{op}' with nothing before it"));
                    };
                    self.pos += 1;
                    let (min, max) = match op {
                        '*' => (0, None),
                        '+' => (1, None),
                        _ => (0, Some(1)),
                    };
                    Expr::Repeat {
                        inner: Box::new(last),
                        min,
                        max,
                    }
                }
                Some('{') => {
                    let Some(last) = seq.pop() else {
                        return self.err("'{' with nothing before it");
                    };
                    self.pos += 1;
                    let (min, max) = self.braces()?;
                    Expr::Repeat {
                        inner: Box::new(last),
                        min,
                        max,
                    }
                }
                _ => break,
            };
            seq.push(item);
            self.space(nested);
        }
        Ok(if seq.len() == 1 {
            seq.pop().unwrap_or(Expr::Seq(Vec::new()))
        } else {
            Expr::Seq(seq)
        })
    }

    /// `{m}`, `{m,}`, `{m,n}`, `{,n}` after the `{`.
    fn braces(&mut self) -> Result<(u32, Option<u32>), String> {
        let Some(end) = self.rest().find('}') else {
            return self.err("unterminated '{'");
        };
        let body: String = self.rest()[..end].chars().filter(|c| *c != ' ').collect();
        let num = |s: &str| -> Result<Option<u32>, String> {
            if s.is_empty() {
                return Ok(None);
            }
            s.parse::<u32>()
                .map(Some)
                .map_err(|_| format!("line {}: bad repetition count '{s}'", self.line()))
        };
        let (min, max) = match body.split_once(',') {
            None => {
                let n = num(&body)?;
                if n.is_none() {
                    return self.err("empty repetition '{}'");
                }
                (n, n)
            }
            Some((a, b)) => (num(a)?, num(b)?),
        };
        let min = min.unwrap_or(0);
        if let Some(max) = max {
            if max < min {
                return self.err(format!("repetition {{{min},{max}}} has max < min"));
            }
        }
        self.pos += end + 1;
        Ok((min, max))
    }

    /// One character of a literal or class, with GBNF's escapes.
    fn char_in_literal(&mut self) -> Result<char, String> {
        let Some(c) = self.peek() else {
            return self.err("unexpected end of the grammar");
        };
        self.pos += c.len_utf8();
        if c != '\\' {
            return Ok(c);
        }
        let Some(e) = self.peek() else {
            return self.err("unexpected end after '\\'");
        };
        self.pos += e.len_utf8();
        let hex = |p: &mut Self, n: usize| -> Result<char, String> {
            let digits = p.rest().get(..n).unwrap_or("");
            let v = (digits.len() == n)
                .then(|| u32::from_str_radix(digits, 16).ok())
                .flatten()
                .and_then(char::from_u32);
            match v {
                Some(ch) => {
                    p.pos += n;
                    Ok(ch)
                }
                None => p.err(format!("bad escape '\\{e}{digits}'")),
            }
        };
        match e {
            'x' => hex(self, 2),
            'u' => hex(self, 4),
            'U' => hex(self, 8),
            't' => Ok('\t'),
            'r' => Ok('\r'),
            'n' => Ok('\n'),
            '\\' | '"' | '[' | ']' => Ok(e),
            _ => self.err(format!("unknown escape '\\{e}'")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_print_on_one_line_each() {
        let lark = gbnf_to_lark(
            "root ::= greeting (\" \" name)?\n\
             greeting ::= \"hi\" | \"hello\"   # a comment\n\
             name ::=\n  [A-Z] [a-z]{1,8}\n",
        )
        .unwrap();
        assert_eq!(
            lark,
            "start: root\n\
             root: greeting (\" \" name)?\n\
             greeting: \"hi\" | \"hello\"\n\
             name: /[A-Z]/ (/[a-z]/){1,8}\n"
        );
    }

    #[test]
    fn names_become_lowercase_and_unique() {
        let lark =
            gbnf_to_lark("root ::= Start start-x\nStart ::= \"a\"\nstart-x ::= \"b\"\n").unwrap();
        assert!(lark.contains("start_2: \"a\""), "{lark}");
        assert!(lark.contains("start_x: \"b\""), "{lark}");
        assert!(lark.contains("root: start_2 start_x"), "{lark}");
    }

    #[test]
    fn escapes_and_classes() {
        let lark = gbnf_to_lark(r#"root ::= "\"\n\x41" [^"\\\x7F\x00-\x1F/] . "" | "#).unwrap();
        assert_eq!(
            lark,
            "start: root\nroot: \"\\\"\\nA\" /[^\\x{22}\\x{5C}\\x{7F}\\x{0}-\\x{1F}\\x{2F}]/ /(?s:.)/ \"\" | \"\"\n"
        );
    }

    #[test]
    fn nested_groups_span_lines() {
        let lark = gbnf_to_lark("root ::= (\n  \"a\" |\n  \"b\"\n)* \"c\"{2,}\n").unwrap();
        assert_eq!(lark, "start: root\nroot: (\"a\" | \"b\")* (\"c\"){2,}\n");
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("root ::= foo\n", "line 1: undefined rule 'foo'"),
            ("a ::= \"x\"\n", "no 'root' rule"),
            ("root ::= \"x\n", "line 1: unterminated string"),
            ("root ::= [ab", "line 1: unterminated character class"),
            (
                "root ::= \"a\"\nx = \"b\"\n",
                "line 2: expected '::=' after 'x'",
            ),
            ("root ::= (\"a\"\n", "expected ')'"),
            ("root ::= \"a\"{3,1}\n", "max < min"),
            ("root ::= *\n", "'*' with nothing before it"),
            ("root ::= \"\\q\"\n", "unknown escape '\\q'"),
            ("root ::= \"\\x4\"\n", "bad escape"),
            ("root ::= [z-a]\n", "empty character range"),
            ("", "the grammar is empty"),
            ("root ::= <tok>\n", "token references"),
        ];
        for (src, want) in cases {
            let err = gbnf_to_lark(src).unwrap_err();
            assert!(err.contains(want), "{src:?}: {err}");
        }
    }
}
