//! Reading manifests: `-f FILE`, `-f DIR` (its .yaml, .yml and .json files) or `-f -`;
//! multi-document YAML (read as Kubernetes reads it: [`yaml`]) or JSON; `kind: List`
//! unwrapped. A parse error names the file and line.

pub mod yaml;

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde_json::Value;

/// One object read from a manifest, with where it came from.
pub struct Document {
    /// `FILE` or `FILE#N` for the N-th document.
    pub source: String,
    /// The object.
    pub object: Value,
}

fn files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading directory {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Parse every document of `text`.
pub fn parse(source: &str, text: &str) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    let values = yaml::documents(text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    for (i, value) in values.into_iter().enumerate() {
        if value.is_null() {
            continue; // an empty document, as between `---` separators
        }
        let source = format!("{source}#{}", i + 1);
        match value {
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                for item in m
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    docs.push(Document {
                        source: source.clone(),
                        object: item.clone(),
                    });
                }
            }
            Value::Object(_) => docs.push(Document {
                source,
                object: value,
            }),
            other => bail!(
                "{source}: a manifest document must be a mapping (an object), got {}",
                kind_of_value(&other)
            ),
        }
    }
    Ok(docs)
}

fn kind_of_value(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Read every document of the `-f` arguments.
pub fn read(paths: &[String]) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    for p in paths {
        if p == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            docs.extend(parse("<stdin>", &text)?);
            continue;
        }
        for f in files(Path::new(p))? {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            docs.extend(parse(&f.display().to_string(), &text)?);
        }
    }
    if docs.is_empty() {
        bail!("no objects found in {}", paths.join(", "));
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_lists() {
        let docs = parse("m.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].object["kind"], "Secret");
    }

    #[test]
    fn malformed_yaml_names_the_line() {
        let err = parse(
            "bad.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("bad.yaml") && err.contains("line"), "{err}");
    }
}
