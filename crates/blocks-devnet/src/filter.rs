//! Subscribe filter expressions on publish `meta` (PubNub syntax subset):
//! `meta.X == 'v'`, `meta.X != "v"`, combined with `&&`, `||` and parentheses.
//!
//! Hostile input (issue 20): an expression comes from an unauthenticated query parameter, so
//! parsing and evaluation are bounded. PubNub documents no limit of its own; the devnet takes
//! expressions of at most [`MAX_FILTER_BYTES`] bytes nested at most [`MAX_FILTER_DEPTH`]
//! parentheses deep and answers anything larger with 400. `&&` and `||` chains are flat lists
//! (not left-deep trees), so the depth of the parsed filter, and of every recursion over it
//! (evaluation, drop), is the parenthesis depth plus two.

use serde_json::Value;

/// Longest filter expression accepted, in bytes (the spec's instance filter is under 100).
pub const MAX_FILTER_BYTES: usize = 1024;
/// Deepest parenthesis nesting accepted.
pub const MAX_FILTER_DEPTH: usize = 32;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `meta.<path> == value`
    Eq(Vec<String>, String),
    /// `meta.<path> != value`
    Ne(Vec<String>, String),
    /// Every one (`a && b && …`, two or more).
    All(Vec<Filter>),
    /// Any one (`a || b || …`, two or more).
    Any(Vec<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Eq,
    Ne,
    And,
    Or,
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Eq);
                i += 2;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Ne);
                i += 2;
            }
            '&' if chars.get(i + 1) == Some(&'&') => {
                out.push(Tok::And);
                i += 2;
            }
            '|' if chars.get(i + 1) == Some(&'|') => {
                out.push(Tok::Or);
                i += 2;
            }
            '\'' | '"' => {
                let quote = c;
                let mut j = i + 1;
                let mut v = String::new();
                while j < chars.len() && chars[j] != quote {
                    if chars[j] == '\\' && j + 1 < chars.len() {
                        j += 1;
                    }
                    v.push(chars[j]);
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(format!("unterminated string starting at position {i}"));
                }
                out.push(Tok::Str(v));
                i = j + 1;
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' || c == '-' => {
                let mut j = i;
                while j < chars.len() && (chars[j].is_alphanumeric() || matches!(chars[j], '_' | '.' | '-')) {
                    j += 1;
                }
                out.push(Tok::Ident(chars[i..j].iter().collect()));
                i = j;
            }
            other => return Err(format!("unexpected character {other:?} at position {i}")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    /// Parentheses open at the current position.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn or(&mut self) -> Result<Filter, String> {
        let mut terms = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::Any(terms)
        })
    }
    fn and(&mut self) -> Result<Filter, String> {
        let mut terms = vec![self.atom()?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            terms.push(self.atom()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::All(terms)
        })
    }
    fn atom(&mut self) -> Result<Filter, String> {
        match self.next() {
            Some(Tok::Open) => {
                // checked before recursing: the recursion depth is bounded by MAX_FILTER_DEPTH
                if self.depth >= MAX_FILTER_DEPTH {
                    return Err(format!("parentheses nested deeper than {MAX_FILTER_DEPTH} levels"));
                }
                self.depth += 1;
                let f = self.or()?;
                self.depth -= 1;
                match self.next() {
                    Some(Tok::Close) => Ok(f),
                    _ => Err("missing closing parenthesis".into()),
                }
            }
            Some(Tok::Ident(id)) => {
                let path: Vec<String> = match id.strip_prefix("meta.") {
                    Some(rest) if !rest.is_empty() => rest.split('.').map(str::to_string).collect(),
                    _ => return Err(format!("expected meta.<field>, got {id:?}")),
                };
                let op = self.next();
                let value = match self.next() {
                    Some(Tok::Str(s)) | Some(Tok::Ident(s)) => s,
                    other => return Err(format!("expected a value after the operator, got {other:?}")),
                };
                match op {
                    Some(Tok::Eq) => Ok(Filter::Eq(path, value)),
                    Some(Tok::Ne) => Ok(Filter::Ne(path, value)),
                    other => Err(format!("expected == or !=, got {other:?}")),
                }
            }
            other => Err(format!("unexpected token {other:?}")),
        }
    }
}

impl Filter {
    /// Parse a filter expression (at most [`MAX_FILTER_BYTES`] bytes, parentheses at most
    /// [`MAX_FILTER_DEPTH`] deep).
    pub fn parse(s: &str) -> Result<Filter, String> {
        if s.len() > MAX_FILTER_BYTES {
            return Err(format!(
                "the expression is {} bytes long; the limit is {MAX_FILTER_BYTES}",
                s.len()
            ));
        }
        let toks = lex(s)?;
        if toks.is_empty() {
            return Err("empty filter expression".into());
        }
        let mut p = Parser { toks, pos: 0, depth: 0 };
        let f = p.or()?;
        if p.pos != p.toks.len() {
            return Err(format!("unexpected trailing input at token {}", p.pos));
        }
        Ok(f)
    }

    fn lookup(meta: Option<&Value>, path: &[String]) -> Option<String> {
        let mut v = meta?;
        for k in path {
            v = v.get(k)?;
        }
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Evaluate against a message's meta (absent meta fails `==` and passes `!=`).
    pub fn matches(&self, meta: Option<&Value>) -> bool {
        match self {
            Filter::Eq(p, v) => Self::lookup(meta, p).as_deref() == Some(v.as_str()),
            Filter::Ne(p, v) => Self::lookup(meta, p).as_deref() != Some(v.as_str()),
            Filter::All(fs) => fs.iter().all(|f| f.matches(meta)),
            Filter::Any(fs) => fs.iter().any(|f| f.matches(meta)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instance_filter_of_the_spec() {
        let f = Filter::parse(&blocks_wire::instance_filter("AG-x-1")).unwrap();
        assert!(f.matches(Some(&json!({"instance": "AG-x-1"}))));
        assert!(f.matches(Some(&json!({"broadcast": "true"}))));
        assert!(!f.matches(Some(&json!({"instance": "AG-x-2"}))));
        assert!(!f.matches(None));
    }

    #[test]
    fn not_equal_passes_without_meta() {
        let f = Filter::parse("meta.sender != 'me'").unwrap();
        assert!(f.matches(None));
        assert!(f.matches(Some(&json!({"sender": "you"}))));
        assert!(!f.matches(Some(&json!({"sender": "me"}))));
    }

    #[test]
    fn precedence_and_parentheses() {
        let f = Filter::parse("meta.a == '1' && (meta.b == \"2\" || meta.c != '3')").unwrap();
        assert!(f.matches(Some(&json!({"a": "1", "b": "2"}))));
        assert!(f.matches(Some(&json!({"a": "1", "c": "4"}))));
        assert!(!f.matches(Some(&json!({"a": "1", "c": "3"}))));
        assert!(!f.matches(Some(&json!({"a": "2", "b": "2"}))));
        assert!(Filter::parse("meta.n == 5").unwrap().matches(Some(&json!({"n": 5}))));
        assert!(Filter::parse("meta.t == true")
            .unwrap()
            .matches(Some(&json!({"t": true}))));
    }

    #[test]
    fn bad_filters_are_errors() {
        for bad in [
            "",
            "meta.a ==",
            "a == 'b'",
            "meta.a = 'b'",
            "(meta.a == 'b'",
            "meta.a == 'b' extra",
            "meta.a == 'open",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn limits_of_length_and_depth() {
        let term = "meta.a == 'x'";
        let nested = |n: usize| format!("{}{term}{}", "(".repeat(n), ")".repeat(n));
        assert!(Filter::parse(&nested(MAX_FILTER_DEPTH)).is_ok());
        let e = Filter::parse(&nested(MAX_FILTER_DEPTH + 1)).unwrap_err();
        assert!(e.contains("nested deeper than 32"), "{e}");
        // far past the depth limit: refused without recursing (this overflowed the stack before)
        assert!(Filter::parse(&"(".repeat(1000)).is_err());
        let long = format!("{term}{}", " ".repeat(MAX_FILTER_BYTES - term.len()));
        assert!(Filter::parse(&long).is_ok());
        let e = Filter::parse(&format!("{long} ")).unwrap_err();
        assert!(e.contains("limit is 1024"), "{e}");
        // a long chain is flat: one list, not a tree as deep as the chain is long
        let chain = vec![term; 60].join(" && ");
        match Filter::parse(&chain).unwrap() {
            Filter::All(fs) => assert_eq!(fs.len(), 60),
            other => panic!("{other:?}"),
        }
    }
}
