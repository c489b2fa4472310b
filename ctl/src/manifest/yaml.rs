//! YAML read as Kubernetes reads it. kubectl and the API server decode YAML with go-yaml v2,
//! which resolves plain scalars by YAML 1.1's rules: `0644` is the octal 420 (as in
//! `defaultMode: 0644`), `yes`, `on` and `off` are booleans, `0x1F` and `0b101` are numbers,
//! `1_000` is 1000. A YAML 1.2 reader takes some of these for strings or other numbers, and the
//! manifest would mean something else here than with kubectl. Quoted scalars stay strings.
//!
//! Built on yaml-rust2's event parser (it reports each scalar's style); anchors, aliases and
//! merge keys (`<<`) are resolved as go-yaml does.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Why a text is not YAML, and where.
#[derive(Debug, thiserror::Error)]
#[error("malformed YAML at line {line} column {column}: {reason}")]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub reason: String,
}

/// Every document of `text` (an empty document is `Null`).
pub fn documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|e| {
            let mut reason = e.info().to_string();
            // An unclosed `[` or `{` is found where the text ends: name where it opened.
            let flow = reason.contains("flow sequence") || reason.contains("flow mapping");
            if let (true, Some(open)) = (flow, builder.starts.last()) {
                reason = format!(
                    "{reason} (the one opened at line {} column {} is not closed)",
                    open.line(),
                    open.col() + 1
                );
            }
            YamlError {
                line: e.marker().line(),
                column: e.marker().col() + 1,
                reason,
            }
        })?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.docs)
}

/// A collection being built.
enum Open {
    Seq(Vec<Value>, usize),
    /// Entries, the key waiting for its value, the anchor.
    Map(Map<String, Value>, Option<String>, usize, Vec<Value>),
}

#[derive(Default)]
struct Builder {
    docs: Vec<Value>,
    stack: Vec<Open>,
    /// Where each open collection started.
    starts: Vec<Marker>,
    anchors: HashMap<usize, Value>,
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, mark: Marker, reason: String) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                line: mark.line(),
                column: mark.col() + 1,
                reason,
            });
        }
    }

    /// Put a finished value where it belongs: into the open collection, or as a document.
    fn place(&mut self, value: Value, anchor: usize, mark: Marker) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(value),
            Some(Open::Seq(items, _)) => items.push(value),
            Some(Open::Map(entries, key, _, merges)) => match key.take() {
                None => match value {
                    Value::String(s) => *key = Some(s),
                    Value::Number(n) => *key = Some(n.to_string()),
                    Value::Bool(b) => *key = Some(b.to_string()),
                    Value::Null => *key = Some("null".into()),
                    other => {
                        let what = if other.is_array() {
                            "a list"
                        } else {
                            "a mapping"
                        };
                        self.fail(mark, format!("{what} as a mapping key is not supported"));
                    }
                },
                Some(k) if k == "<<" => merges.push(value),
                Some(k) => {
                    entries.insert(k, value);
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(text, style, tag.as_ref());
                self.place(value, anchor, mark);
            }
            Event::SequenceStart(anchor, _) => {
                self.starts.push(mark);
                self.stack.push(Open::Seq(Vec::new(), anchor))
            }
            Event::MappingStart(anchor, _) => {
                self.starts.push(mark);
                self.stack
                    .push(Open::Map(Map::new(), None, anchor, Vec::new()))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.starts.pop();
                self.close(mark);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(v) => self.place(v, 0, mark),
                None => self.fail(mark, "an alias to an unknown anchor".into()),
            },
            // An empty document comes as an empty plain scalar: a `Null` document.
            Event::DocumentStart
            | Event::DocumentEnd
            | Event::StreamStart
            | Event::StreamEnd
            | Event::Nothing => {}
        }
    }
}

impl Builder {
    /// Close the innermost open collection and place it.
    fn close(&mut self, mark: Marker) {
        match self.stack.pop() {
            Some(Open::Seq(items, anchor)) => self.place(Value::Array(items), anchor, mark),
            Some(Open::Map(mut entries, _, anchor, merges)) => {
                // Merge keys: the mapping's own entries win, then earlier merged ones.
                for merged in merges {
                    let sources = match merged {
                        Value::Array(list) => list,
                        other => vec![other],
                    };
                    for source in sources {
                        if let Value::Object(m) = source {
                            for (k, v) in m {
                                entries.entry(k).or_insert(v);
                            }
                        }
                    }
                }
                self.place(Value::Object(entries), anchor, mark)
            }
            None => {}
        }
    }
}

/// A scalar as go-yaml v2 resolves it.
fn scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(tag) = tag {
        match tag.suffix.as_str() {
            "str" => return Value::String(text),
            "int" | "float" | "bool" | "null" => {}
            _ => return Value::String(text),
        }
    } else if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    resolve_plain(&text).unwrap_or(Value::String(text))
}

fn resolve_plain(s: &str) -> Option<Value> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Some(Value::Bool(true))
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Some(Value::Bool(false))
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            // JSON has no infinities or NaN: kept as written, as the API would refuse them.
            return Some(Value::String(s.to_string()));
        }
        _ => {}
    }
    if let Some(i) = int(s) {
        return Some(Value::Number(i.into()));
    }
    float(s).and_then(Number::from_f64).map(Value::Number)
}

/// YAML 1.1 integers: decimal, `0` octal, `0x` hex, `0b` binary, signs and `_` separators.
fn int(s: &str) -> Option<i64> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let body = body.replace('_', "");
    if body.is_empty() {
        return None;
    }
    let (radix, digits) = if let Some(d) = body.strip_prefix("0x") {
        (16, d.to_string())
    } else if let Some(d) = body.strip_prefix("0b") {
        (2, d.to_string())
    } else if body.len() > 1 && body.starts_with('0') {
        (8, body[1..].to_string())
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i64::from_str_radix(&digits, radix).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// YAML 1.1 floats: `[-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?` (a dot required, as
/// go-yaml v2 resolves them), and plain exponent forms Go's parser takes.
fn float(s: &str) -> Option<f64> {
    let t = s.replace('_', "");
    let digits = t.trim_start_matches(['-', '+']);
    if !digits.contains(['.', 'e', 'E'])
        || !digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        documents(text).expect("yaml").remove(0)
    }

    #[test]
    fn plain_scalars_resolve_as_kubectl_resolves_them() {
        let v = one(
            "octal: 0644\nhex: 0x1F\nbin: 0b101\nsep: 1_000\ndec: 420\nneg: -12\n\
             a_yes: yes\na_on: on\na_off: Off\na_n: n\nfloat: 1.5\nexp: 1.0e+3\ntilde: ~\n\
             empty:\nstring: hello\nversion: 1.2.3\nzero: 0\nquoted: '0644'\n\
             dquoted: \"yes\"\ntagged: !!str 0644\nnotoctal: 0689\non: 1\n",
        );
        assert_eq!(
            v,
            json!({"octal": 420, "hex": 31, "bin": 5, "sep": 1000, "dec": 420, "neg": -12,
                   "a_yes": true, "a_on": true, "a_off": false, "a_n": false, "float": 1.5,
                   "exp": 1000.0, "tilde": null, "empty": null, "string": "hello",
                   "version": "1.2.3", "zero": 0, "quoted": "0644", "dquoted": "yes",
                   "tagged": "0644", "notoctal": "0689", "true": 1})
        );
    }

    #[test]
    fn documents_anchors_aliases_and_merge_keys() {
        let docs = documents(
            "base: &b {a: 1, b: 2}\nlist: [*b]\nmerged:\n  <<: *b\n  b: 3\n---\n---\nkind: Second\n",
        )
        .expect("yaml");
        let docs: Vec<_> = docs.into_iter().filter(|d| !d.is_null()).collect();
        assert_eq!(docs.len(), 2, "{docs:?}");
        assert_eq!(docs[0]["list"], json!([{"a": 1, "b": 2}]));
        assert_eq!(docs[0]["merged"], json!({"a": 1, "b": 3}));
        assert_eq!(docs[1]["kind"], "Second");
    }

    #[test]
    fn malformed_yaml_names_its_line() {
        let e = documents("a: 1\nb: [unclosed\n").unwrap_err().to_string();
        assert!(e.contains("opened at line 2 column 4"), "{e}");
    }
}
