//! `-o jsonpath=TEMPLATE`, as kubectl reads it: text, `{.path}` expressions (JSONPath, the
//! `$` implied; `@` the current node), `{"literal"}` strings with `\n` and `\t`, and
//! `{range .path}...{end}` loops. Several results of one expression print space-separated;
//! strings print bare, everything else as compact JSON.

use anyhow::{anyhow, bail};
use serde_json::Value;
use serde_json_path::JsonPath;

/// One piece of a template.
#[derive(Debug)]
enum Piece {
    Text(String),
    Path(JsonPath),
    Range(JsonPath, Vec<Piece>),
}

/// The `{...}` blocks and the text between them, in order.
fn tokens(template: &str) -> anyhow::Result<Vec<(bool, String)>> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '{' {
            text.push(c);
            continue;
        }
        if !text.is_empty() {
            out.push((false, std::mem::take(&mut text)));
        }
        let mut inner = String::new();
        let mut quote: Option<char> = None;
        loop {
            let Some(c) = chars.next() else {
                bail!("jsonpath {template:?}: a {{ is not closed");
            };
            match (quote, c) {
                (None, '}') => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), _) if c == q => quote = None,
                (Some(_), '\\') => {
                    inner.push(c);
                    if let Some(n) = chars.next() {
                        inner.push(n);
                    }
                    continue;
                }
                _ => {}
            }
            inner.push(c);
        }
        out.push((true, inner.trim().to_string()));
    }
    if !text.is_empty() {
        out.push((false, text));
    }
    Ok(out)
}

fn path(expr: &str) -> anyhow::Result<JsonPath> {
    let query = if expr == "@" || expr == "$" {
        "$".to_string()
    } else if let Some(rest) = expr.strip_prefix('@') {
        format!("${rest}")
    } else if expr.starts_with('$') {
        expr.to_string()
    } else if expr.starts_with('.') || expr.starts_with('[') {
        format!("${expr}")
    } else {
        format!("$.{expr}")
    };
    JsonPath::parse(&query).map_err(|e| anyhow!("jsonpath {{{expr}}}: {e}"))
}

fn literal(quoted: &str) -> String {
    let body = &quoted[1..quoted.len().saturating_sub(1).max(1)];
    body.replace("\\n", "\n")
        .replace("\\t", "\t")
        .replace("\\\"", "\"")
}

fn parse_pieces(
    tokens: &mut std::vec::IntoIter<(bool, String)>,
    in_range: bool,
) -> anyhow::Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    while let Some((block, s)) = tokens.next() {
        if !block {
            pieces.push(Piece::Text(s));
        } else if s == "end" {
            if !in_range {
                bail!("jsonpath: {{end}} without {{range}}");
            }
            return Ok(pieces);
        } else if let Some(over) = s.strip_prefix("range ") {
            let body = parse_pieces(tokens, true)?;
            pieces.push(Piece::Range(path(over.trim())?, body));
        } else if s.starts_with('"') || s.starts_with('\'') {
            pieces.push(Piece::Text(literal(&s)));
        } else {
            pieces.push(Piece::Path(path(&s)?));
        }
    }
    if in_range {
        bail!("jsonpath: {{range}} without {{end}}");
    }
    Ok(pieces)
}

/// A parsed template.
#[derive(Debug)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parse `template` (what follows `jsonpath=`).
    pub fn parse(template: &str) -> anyhow::Result<Self> {
        let mut tokens = tokens(template)?.into_iter();
        Ok(Self(parse_pieces(&mut tokens, false)?))
    }

    /// The template applied to `root`.
    pub fn render(&self, root: &Value) -> String {
        let mut out = String::new();
        render(&self.0, root, &mut out);
        out
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render(pieces: &[Piece], node: &Value, out: &mut String) {
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Path(q) => {
                let found: Vec<String> = q.query(node).all().into_iter().map(show).collect();
                out.push_str(&found.join(" "));
            }
            Piece::Range(q, body) => {
                for item in q.query(node).all() {
                    render(body, item, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(template: &str, v: &Value) -> String {
        Template::parse(template).expect("parses").render(v)
    }

    #[test]
    fn templates_read_as_kubectl_reads_them() {
        let pod = json!({"metadata": {"name": "web-1", "labels": {"app": "web"}},
                         "status": {"podIP": "10.0.0.7", "phase": "Running"}});
        assert_eq!(run("{.status.podIP}", &pod), "10.0.0.7");
        assert_eq!(
            run("ip={.status.podIP} name={.metadata.name}", &pod),
            "ip=10.0.0.7 name=web-1"
        );
        assert_eq!(run("{.metadata.labels}", &pod), r#"{"app":"web"}"#);
        let list = json!({"items": [
            {"metadata": {"name": "a"}, "status": {"phase": "Running"}},
            {"metadata": {"name": "b"}, "status": {"phase": "Pending"}},
        ]});
        assert_eq!(run("{.items[*].metadata.name}", &list), "a b");
        assert_eq!(
            run(
                r#"{range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\n"}{end}"#,
                &list
            ),
            "a\tRunning\nb\tPending\n"
        );
        assert_eq!(
            run(
                r#"{.items[?(@.status.phase=="Running")].metadata.name}"#,
                &list
            ),
            "a"
        );
    }

    #[test]
    fn broken_templates_say_what_is_wrong() {
        for (t, says) in [
            ("{.status", "not closed"),
            ("{range .items[*]}{.x}", "without {end}"),
            ("{end}", "without {range}"),
            ("{.items[}", "jsonpath"),
        ] {
            let e = Template::parse(t).expect_err(t).to_string();
            assert!(e.contains(says), "{t}: {e}");
        }
    }
}
