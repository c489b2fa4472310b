//! The object workload: clients read ConfigMaps through the object API and update them with
//! resourceVersion compare-and-swap. Each ConfigMap is a register (`data.v`) in the history
//! under the key `cm/<name>`, so the same linearizability checker judges it; a conflict is a
//! compare that did not hold.

use crate::cluster::Access;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use skiff_proto::{Client, ClientConfig, ClientError};

use crate::history::{Operation, Outcome, RegisterOp};
use crate::workload::Recorded;

/// Store key prefix of the workload's ConfigMaps.
pub const STORE_PREFIX: &str = "/registry/core/configmaps/default/obj-";
/// History key prefix of the workload's ConfigMaps.
pub const HISTORY_PREFIX: &str = "cm/obj-";

fn client(access: &Access) -> Client {
    access.client(ClientConfig {
        attempt_timeout: Duration::from_millis(700),
        call_deadline: Duration::from_millis(1500),
        random_start: true,
        ..Default::default()
    })
}

fn us(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

fn record(rec: &Recorded, op: Operation) {
    rec.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
}

/// The register value of a ConfigMap's JSON.
pub fn value_of(json: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(json)
        .ok()?
        .pointer("/data/v")?
        .as_str()
        .map(str::to_string)
}

/// Create the ConfigMaps (recorded as the first write of each register).
pub async fn setup(
    access: &Access,
    keys: u32,
    start: Instant,
    rec: &Recorded,
) -> anyhow::Result<()> {
    let c = access.client(ClientConfig {
        call_deadline: Duration::from_secs(30),
        ..Default::default()
    });
    for k in 0..keys {
        let value = format!("init-{k}");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("obj-{k}")}, "data": {"v": value}});
        let t0 = us(start);
        let r = c
            .create_object("configmaps", "default", serde_json::to_vec(&cm)?)
            .await?;
        record(
            rec,
            Operation {
                process: 499,
                key: format!("{HISTORY_PREFIX}{k}"),
                op: RegisterOp::Write { value },
                invoke_us: t0,
                complete_us: us(start),
                outcome: Outcome::Ok,
                revision: Some(r.revision),
            },
        );
    }
    Ok(())
}

/// A linearizable read of ConfigMap `k`, recorded; its value and resourceVersion.
pub async fn read(
    c: &Client,
    p: u32,
    k: u32,
    start: Instant,
    rec: &Recorded,
) -> Option<(Value, String)> {
    let t0 = us(start);
    let r = c
        .get_object("configmaps", "default", &format!("obj-{k}"), false)
        .await;
    let t1 = us(start);
    let (obj, outcome) = match &r {
        Ok(resp) => (
            serde_json::from_slice::<Value>(&resp.object).ok(),
            Outcome::Ok,
        ),
        Err(_) => (None, Outcome::Unknown),
    };
    let value = obj
        .as_ref()
        .and_then(|o| o.pointer("/data/v"))
        .and_then(Value::as_str)
        .map(str::to_string);
    record(
        rec,
        Operation {
            process: p,
            key: format!("{HISTORY_PREFIX}{k}"),
            op: RegisterOp::Read {
                value: value.clone(),
            },
            invoke_us: t0,
            complete_us: t1,
            outcome,
            revision: None,
        },
    );
    Some((obj?, value?))
}

async fn cas(c: &Client, p: u32, k: u32, to: String, start: Instant, rec: &Recorded) {
    let Some((mut obj, from)) = read(c, p, k, start, rec).await else {
        return;
    };
    obj["data"]["v"] = Value::String(to.clone());
    let t0 = us(start);
    // The object carries the resourceVersion read: a change in between is a conflict.
    let r = c
        .update_object(
            "configmaps",
            "default",
            serde_json::to_vec(&obj).unwrap_or_default(),
            false,
        )
        .await;
    let t1 = us(start);
    let (outcome, swapped, revision) = match &r {
        Ok(resp) => (Outcome::Ok, true, Some(resp.revision)),
        Err(ClientError::Rejected(s)) if s.code() == tonic::Code::Aborted => {
            (Outcome::Ok, false, None)
        }
        Err(ClientError::Rejected(s)) if s.code() == tonic::Code::InvalidArgument => {
            (Outcome::Fail, true, None)
        }
        Err(_) => (Outcome::Unknown, true, None),
    };
    record(
        rec,
        Operation {
            process: p,
            key: format!("{HISTORY_PREFIX}{k}"),
            op: RegisterOp::Cas { from, to, swapped },
            invoke_us: t0,
            complete_us: t1,
            outcome,
            revision,
        },
    );
}

/// Run `clients` object clients until `stop`.
pub fn spawn_clients(
    access: Access,
    clients: u32,
    keys: u32,
    seed: u64,
    start: Instant,
    rec: Arc<Recorded>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|i| {
            let (access, rec, stop) = (access.clone(), rec.clone(), stop.clone());
            let p = 500 + i;
            tokio::spawn(async move {
                let c = client(&access);
                let mut rng = StdRng::seed_from_u64(
                    seed ^ 0x000b_1ec7 ^ u64::from(p).wrapping_mul(0x9e3779b97f4a7c15),
                );
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let k = rng.gen_range(0..keys);
                    if rng.gen_range(0..10) < 4 {
                        read(&c, p, k, start, &rec).await;
                    } else {
                        cas(&c, p, k, format!("o{p}-{n}"), start, &rec).await;
                    }
                }
            })
        })
        .collect()
}
