//! The register workload: concurrent clients read, write and compare-and-set a few keys,
//! recording every operation; watchers follow the key prefix and record what they see.

use crate::cluster::Access;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skiff_proto::pb::{self, compare, txn_op};
use skiff_proto::{Client, ClientConfig, ClientError, WatchEvent};

use crate::history::{Operation, Outcome, RegisterOp, SeenEvent};

/// Prefix of every key the workload writes.
pub const PREFIX: &str = "reg/";

/// What the workload recorded.
#[derive(Default)]
pub struct Recorded {
    /// Register operations.
    pub ops: Mutex<Vec<Operation>>,
    /// Watch events.
    pub events: Mutex<Vec<SeenEvent>>,
    /// Watch errors (an expired watch is a finding).
    pub watch_errors: Mutex<Vec<String>>,
}

fn client(access: &Access) -> Client {
    access.client(ClientConfig {
        attempt_timeout: Duration::from_millis(700),
        call_deadline: Duration::from_millis(1500),
        random_start: true,
        ..Default::default()
    })
}

fn outcome_of(e: &ClientError) -> Outcome {
    match e {
        // Refused by validation: certainly not applied.
        ClientError::Rejected(s) if s.code() == tonic::Code::InvalidArgument => Outcome::Fail,
        _ => Outcome::Unknown,
    }
}

/// Run `clients` register clients until `stop`.
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
        .map(|p| {
            let access = access.clone();
            let rec = rec.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let c = client(&access);
                let mut rng =
                    StdRng::seed_from_u64(seed ^ u64::from(p).wrapping_mul(0x9e3779b97f4a7c15));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("{PREFIX}{}", rng.gen_range(0..keys));
                    let roll: u8 = rng.gen_range(0..10);
                    if roll < 4 {
                        read(&c, p, &key, start, &rec).await;
                    } else if roll < 7 {
                        let value = format!("{p}-{n}");
                        write(&c, p, &key, value, start, &rec).await;
                    } else {
                        cas(&c, p, &key, format!("{p}-{n}"), start, &rec).await;
                    }
                }
            })
        })
        .collect()
}

fn us(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// A linearizable read, recorded.
pub async fn read(
    c: &Client,
    p: u32,
    key: &str,
    start: Instant,
    rec: &Recorded,
) -> Option<(Option<String>, u64)> {
    let t0 = us(start);
    let r = c.get(key.to_string(), false).await;
    let t1 = us(start);
    let (value, outcome, mod_rev) = match &r {
        Ok(kv) => (
            kv.as_ref()
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
            Outcome::Ok,
            kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0),
        ),
        Err(e) => (None, outcome_of(e), 0),
    };
    rec.ops
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Operation {
            process: p,
            key: key.into(),
            op: RegisterOp::Read {
                value: value.clone(),
            },
            invoke_us: t0,
            complete_us: t1,
            outcome,
            revision: None,
        });
    (outcome == Outcome::Ok).then_some((value, mod_rev))
}

async fn write(c: &Client, p: u32, key: &str, value: String, start: Instant, rec: &Recorded) {
    let t0 = us(start);
    let r = c.put(key.to_string(), value.clone()).await;
    let t1 = us(start);
    let (outcome, revision) = match &r {
        Ok(resp) => (Outcome::Ok, resp.header.as_ref().map(|h| h.revision)),
        Err(e) => (outcome_of(e), None),
    };
    rec.ops
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Operation {
            process: p,
            key: key.into(),
            op: RegisterOp::Write { value },
            invoke_us: t0,
            complete_us: t1,
            outcome,
            revision,
        });
}

/// Read, then compare-and-set on the read's mod revision. Values are unique, so "the key still
/// has the revision we read" is "the register still holds the value we read".
async fn cas(c: &Client, p: u32, key: &str, to: String, start: Instant, rec: &Recorded) {
    let Some((Some(from), mod_rev)) = read(c, p, key, start, rec).await else {
        return;
    };
    let t0 = us(start);
    let txn = pb::TxnRequest {
        compares: vec![pb::Compare {
            target: compare::Target::ModRevision as i32,
            key: key.as_bytes().to_vec(),
            mod_revision: mod_rev,
        }],
        success: vec![pb::TxnOp {
            op: Some(txn_op::Op::Put(pb::PutRequest {
                key: key.as_bytes().to_vec(),
                value: to.clone().into_bytes(),
                request_id: vec![],
                prev_kv: false,
            })),
        }],
        failure: vec![],
        request_id: vec![],
    };
    let r = c.txn(txn).await;
    let t1 = us(start);
    let (outcome, swapped, revision) = match &r {
        Ok(resp) => (
            Outcome::Ok,
            resp.succeeded,
            resp.succeeded
                .then(|| resp.header.as_ref().map(|h| h.revision))
                .flatten(),
        ),
        Err(e) => (outcome_of(e), true, None),
    };
    rec.ops
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Operation {
            process: p,
            key: key.into(),
            op: RegisterOp::Cas { from, to, swapped },
            invoke_us: t0,
            complete_us: t1,
            outcome,
            revision,
        });
}

/// Run `n` watchers of the prefix from revision 1 until `stop`.
pub fn spawn_watchers(
    access: Access,
    n: u32,
    rec: Arc<Recorded>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|w| {
            let c = client(&access);
            let rec = rec.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                // The whole key space: every revision is then seen, so a gap is a real gap.
                let mut rx = c.watch("", true, 1);
                while !stop.load(Ordering::Relaxed) {
                    let item =
                        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                            Ok(Some(item)) => item,
                            Ok(None) => return,
                            Err(_) => continue,
                        };
                    match item {
                        Ok(WatchEvent::Events(evs)) => {
                            let mut out = rec.events.lock().unwrap_or_else(|p| p.into_inner());
                            for e in evs {
                                let kv = e.kv.unwrap_or_default();
                                let deleted = e.r#type == pb::event::EventType::Delete as i32;
                                let key = String::from_utf8_lossy(&kv.key).into_owned();
                                // Registers as written; the object workload's ConfigMaps as
                                // their register value; anything else (namespaces the
                                // control plane writes) only for its revision.
                                let (key, value) = if key.starts_with(PREFIX) {
                                    let v = (!deleted)
                                        .then(|| String::from_utf8_lossy(&kv.value).into_owned());
                                    (key, v)
                                } else if let Some(k) =
                                    key.strip_prefix(crate::object_workload::STORE_PREFIX)
                                {
                                    let v = if deleted {
                                        None
                                    } else {
                                        crate::object_workload::value_of(&kv.value)
                                    };
                                    (format!("{}{k}", crate::object_workload::HISTORY_PREFIX), v)
                                } else {
                                    (key, None)
                                };
                                out.push(SeenEvent {
                                    watcher: w,
                                    revision: kv.mod_revision,
                                    key,
                                    value,
                                });
                            }
                        }
                        Ok(WatchEvent::Progress(_)) => {}
                        Err(e) => {
                            rec.watch_errors
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("watcher {w}: {e}"));
                            return;
                        }
                    }
                }
            })
        })
        .collect()
}
