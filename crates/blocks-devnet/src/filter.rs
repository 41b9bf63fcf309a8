//! Subscribe filter expressions on publish `meta` (PubNub syntax subset):
//! `meta.X == 'v'`, `meta.X != "v"`, combined with `&&`, `||` and parentheses.

use serde_json::Value;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `meta.<path> == value`
    Eq(Vec<String>, String),
    /// `meta.<path> != value`
    Ne(Vec<String>, String),
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
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
        let mut left = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.atom()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            left = Filter::And(Box::new(left), Box::new(self.atom()?));
        }
        Ok(left)
    }
    fn atom(&mut self) -> Result<Filter, String> {
        match self.next() {
            Some(Tok::Open) => {
                let f = self.or()?;
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
    /// Parse a filter expression.
    pub fn parse(s: &str) -> Result<Filter, String> {
        let toks = lex(s)?;
        if toks.is_empty() {
            return Err("empty filter expression".into());
        }
        let mut p = Parser { toks, pos: 0 };
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
            Filter::And(a, b) => a.matches(meta) && b.matches(meta),
            Filter::Or(a, b) => a.matches(meta) || b.matches(meta),
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
}
