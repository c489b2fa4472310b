//! `skiffctl wait --for=condition=NAME[=VALUE] | --for=delete KIND/NAME ... [--timeout]`:
//! wait until each object shows the condition (True unless a value is given; names match
//! in any case, as kubectl's), or is gone.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;
use skiff_proto::{Client, ClientError};

use super::{display_name, parse, targets, ExitWith};

#[derive(Args)]
pub struct WaitArgs {
    /// KIND/NAME ..., or KIND NAME ...
    #[arg(required = true)]
    pub args: Vec<String>,
    /// `condition=Complete`, `condition=Ready=False`, or `delete`.
    #[arg(long = "for")]
    pub wait_for: String,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// How long to wait for all of them.
    #[arg(long, default_value = "30s", value_parser = skiff_proto::duration::parse)]
    pub timeout: Duration,
}

/// What to wait for.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Condition { type_: String, status: String },
    Deleted,
}

fn wanted(spec: &str) -> anyhow::Result<Wanted> {
    if spec == "delete" {
        return Ok(Wanted::Deleted);
    }
    let Some(rest) = spec.strip_prefix("condition=") else {
        anyhow::bail!("--for={spec}: expected condition=NAME[=VALUE] or delete");
    };
    let (type_, status) = rest.split_once('=').unwrap_or((rest, "True"));
    if type_.is_empty() {
        anyhow::bail!("--for={spec}: the condition has no name");
    }
    Ok(Wanted::Condition {
        type_: type_.into(),
        status: status.into(),
    })
}

fn shows(obj: &Value, type_: &str, status: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case(type_))
                    && c["status"]
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(status))
            })
        })
}

pub async fn run(client: &Client, a: WaitArgs) -> anyhow::Result<()> {
    let wanted = wanted(&a.wait_for)?;
    let deadline = Instant::now() + a.timeout;
    for (kind, name) in targets(&a.args)? {
        let ns = if kind.namespaced {
            a.namespace.as_str()
        } else {
            ""
        };
        loop {
            let met = match client.get_object(kind.plural, ns, &name, false).await {
                Ok(got) => {
                    let obj = parse(&got.object)?;
                    match &wanted {
                        Wanted::Condition { type_, status } if shows(&obj, type_, status) => {
                            println!("{} condition met", display_name(kind, &obj));
                            true
                        }
                        _ => false,
                    }
                }
                Err(ClientError::Rejected(s)) if s.code() == tonic::Code::NotFound => {
                    if wanted != Wanted::Deleted {
                        return Err(ExitWith {
                            code: 1,
                            message: format!("{}/{name} not found", kind.plural),
                        }
                        .into());
                    }
                    println!("{}/{name} deleted", kind.qualified_singular());
                    true
                }
                Err(e) => return Err(e.into()),
            };
            if met {
                break;
            }
            if Instant::now() >= deadline {
                return Err(ExitWith {
                    code: 1,
                    message: format!(
                        "timed out waiting for the condition on {}/{name}",
                        kind.plural
                    ),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn conditions_match_in_any_case_and_default_to_true() {
        let job = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        let Wanted::Condition { type_, status } = wanted("condition=complete").unwrap() else {
            panic!("a condition");
        };
        assert!(shows(&job, &type_, &status));
        assert!(!shows(&job, "Failed", "True"));
        assert!(!shows(&job, "Complete", "False"));
        assert_eq!(wanted("delete").unwrap(), Wanted::Deleted);
        assert!(wanted("jsonpath={.x}").is_err());
        assert!(wanted("condition=").is_err());
    }
}
