//! Leadership moved on purpose: `skiffctl cluster transfer-leader`, and a rolling restart in
//! which each member is stopped as systemd stops it (SIGTERM) — a leader hands over first —
//! under a steady write and watch load; and leadership that moves on while the new leader's
//! controllers are still starting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_e2e::{http_get, init_tracing, prometheus_samples, Cluster, MemberOptions};
use skiff_proto::pb;
use skiff_proto::{Client, ClientConfig, WatchEvent};
use tracing::info;

/// A steady write load: writers put unique keys under a prefix, recording each acknowledged
/// key and when each acknowledgement came.
struct Load {
    acked: Arc<Mutex<BTreeSet<String>>>,
    ack_times: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &Client, prefix: &str, writers: usize) -> Self {
        let acked: Arc<Mutex<BTreeSet<String>>> = Default::default();
        let ack_times: Arc<Mutex<Vec<Instant>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writers = (0..writers)
            .map(|w| {
                let (client, acked, times, stop) = (
                    client.clone(),
                    acked.clone(),
                    ack_times.clone(),
                    stop.clone(),
                );
                let prefix = prefix.to_string();
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("{prefix}/{w}/{i:06}");
                        if client.put(key.clone(), "v").await.is_ok() {
                            acked.lock().unwrap().insert(key);
                            times.lock().unwrap().push(Instant::now());
                        }
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self {
            acked,
            ack_times,
            stop,
            writers,
        }
    }

    /// Stop the writers; returns the acknowledged keys and the longest time without an
    /// acknowledgement between `from` and the end.
    async fn finish(self, from: Instant) -> (BTreeSet<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.writers {
            w.await.expect("writer");
        }
        let mut times = self.ack_times.lock().unwrap().clone();
        times.sort();
        let mut longest = Duration::ZERO;
        let mut previous = from;
        for t in times.into_iter().filter(|t| *t >= from) {
            longest = longest.max(t - previous);
            previous = t;
        }
        let acked = self.acked.lock().unwrap().clone();
        (acked, longest)
    }
}

/// Keys stored under `prefix`, read linearizably.
async fn stored(client: &Client, prefix: &str) -> BTreeSet<String> {
    client
        .range(pb::RangeRequest {
            key: format!("{prefix}/").into_bytes(),
            prefix: true,
            ..Default::default()
        })
        .await
        .expect("linearizable range read")
        .kvs
        .into_iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn client(cluster: &Cluster) -> Client {
    Client::with_config(
        &cluster.endpoints(),
        ClientConfig {
            call_deadline: Duration::from_secs(20),
            ..cluster.client_config()
        },
    )
    .expect("client")
}

async fn term(cluster: &Cluster, id: u64) -> u64 {
    Client::status_of(&cluster.members[&id].addr, cluster.credentials())
        .await
        .expect("status")
        .term
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_leader_hands_over_in_one_election_and_loses_no_write() {
    init_tracing();
    let cluster = Cluster::start(3, MemberOptions::default());
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let client = client(&cluster);
    let load = Load::start(&client, "moved", 4);
    tokio::time::sleep(Duration::from_millis(800)).await;

    info!("a member that is not in the cluster is refused, and the leader stays");
    let err = client
        .transfer_leader(Some(9))
        .await
        .expect_err("member 9 does not exist");
    assert!(
        err.to_string().contains("member 9 is not a voter"),
        "the error names the member: {err}"
    );
    assert_eq!(cluster.wait_leader(Duration::from_secs(5)).await, leader);

    let target = (1..=3).find(|id| *id != leader).expect("another member");
    let term_before = term(&cluster, leader).await;
    info!(leader, target, term_before, "transfer-leader");
    let started = Instant::now();
    let moved = client
        .transfer_leader(Some(target))
        .await
        .expect("leadership handed over");
    info!(took = ?started.elapsed(), "handed over");
    assert_eq!(moved.leader, target, "the member asked for leads");
    assert_eq!(
        moved.term,
        term_before + 1,
        "one election, at the next term, decided it"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (acked, longest) = load.finish(started).await;
    info!(?longest, acked = acked.len(), "writes across the handover");
    assert!(
        longest < Duration::from_secs(1),
        "writes waited {longest:?} across the handover"
    );
    assert_eq!(cluster.wait_leader(Duration::from_secs(5)).await, target);
    let stored = stored(&client, "moved").await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    info!("with no member named, the voter furthest along takes over");
    let again = client
        .transfer_leader(None)
        .await
        .expect("leadership handed over");
    assert_ne!(again.leader, target);
    assert_eq!(again.term, term_before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_loses_no_write_and_no_watch_event() {
    init_tracing();
    let mut cluster = Cluster::start(3, MemberOptions::default());
    let first_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let client = client(&cluster);
    let start = client
        .put("rolling-start", "x")
        .await
        .expect("a write")
        .header
        .expect("header")
        .revision;
    let mut watch = client.watch("roll/", true, start + 1);
    let seen: Arc<Mutex<Vec<(u64, String)>>> = Default::default();
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(item) = watch.recv().await {
                match item {
                    Ok(WatchEvent::Events(events)) => {
                        let mut seen = seen.lock().unwrap();
                        for e in events {
                            let kv = e.kv.expect("event kv");
                            seen.push((
                                kv.mod_revision,
                                String::from_utf8_lossy(&kv.key).into_owned(),
                            ));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("the watch ended: {e}"),
                }
            }
        })
    };
    let load = Load::start(&client, "roll", 4);
    let began = Instant::now();
    let term_before = term(&cluster, first_leader).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Followers first, the leader last, as an operator rolls a cluster.
    let mut order: Vec<u64> = (1..=3).filter(|id| *id != first_leader).collect();
    order.push(first_leader);
    for id in order {
        info!(member = id, "stopping (SIGTERM)");
        let status = cluster.stop(id);
        assert!(status.success(), "member {id} stopped cleanly: {status}");
        if id == first_leader {
            // It handed over before it exited: another member leads already, with no
            // election timeout waited out.
            let mut leads = false;
            for other in (1..=3).filter(|o| *o != id) {
                if let Ok(st) =
                    Client::status_of(&cluster.members[&other].addr, cluster.credentials()).await
                {
                    leads |= st.leader == other;
                }
            }
            assert!(leads, "no member led the moment the old leader exited");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        info!(member = id, "starting again");
        cluster.restart(id);
        assert!(
            cluster.caught_up(id, Duration::from_secs(20)).await,
            "member {id} did not catch up:\n{}",
            cluster.log_of(id)
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, longest) = load.finish(began).await;
    let last_leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let term_after = term(&cluster, last_leader).await;
    info!(
        ?longest,
        acked = acked.len(),
        term_before,
        term_after,
        "rolled"
    );

    let stored = stored(&client, "roll").await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(
        longest < Duration::from_secs(1),
        "the API answered no write for {longest:?}"
    );
    assert!(
        term_after - term_before <= 3,
        "{} elections for three restarts",
        term_after - term_before
    );

    info!("the watch saw every stored key once, in revision order");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got: BTreeSet<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, k)| k.clone())
            .collect();
        if got == stored || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.abort();
    let seen = seen.lock().unwrap().clone();
    let revisions: Vec<u64> = seen.iter().map(|(r, _)| *r).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "events out of order or duplicated"
    );
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, k) in &seen {
        *counts.entry(k.as_str()).or_default() += 1;
    }
    let got: BTreeSet<String> = counts.keys().map(|k| k.to_string()).collect();
    assert_eq!(got, stored, "the watch saw exactly the stored keys");
    assert!(counts.values().all(|c| *c == 1), "a key's event came twice");
}

/// Object watches a member serves, from its metrics.
fn watches_open(cluster: &Cluster, id: u64) -> f64 {
    let (code, text) = http_get(&cluster.metrics[&id], "/metrics");
    assert_eq!(code, 200, "member {id}'s metrics");
    prometheus_samples(&text)
        .get("skiff_watches_open")
        .copied()
        .unwrap_or_else(|| panic!("member {id} counts its watches: {text}"))
}

/// The controllers watch what they cache through their own member's API, so the watches a
/// member serves (nobody else watches here) are its controllers'. Leadership moved on again
/// and again, each time as soon as the new leader took over (while its controllers were
/// still listing what they watch), must leave none of them behind: once it settles, the
/// members that do not lead serve no watch, and the leader as many as a leader that started
/// undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controllers_stopped_while_starting_leave_no_watch_behind() {
    init_tracing();
    let cluster = Cluster::start(
        3,
        MemberOptions {
            metrics: true,
            ..Default::default()
        },
    );
    let first = cluster.wait_leader(Duration::from_secs(10)).await;
    let client = client(&cluster);
    // Something for the controllers to list: they cache every Lease (a node's, in their own
    // namespace, concerns them; these in `default` do not).
    for i in 0..50 {
        let lease = serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": format!("listed-{i}")}, "spec": {"holderIdentity": "test"}});
        client
            .create_object(
                "leases",
                "default",
                serde_json::to_vec(&lease).expect("json"),
            )
            .await
            .expect("a Lease");
    }
    let settled = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // A leader's controllers, started undisturbed: the count stops changing.
    settled("the first leader's controllers to start", &|| {
        let now = watches_open(&cluster, first);
        std::thread::sleep(Duration::from_millis(500));
        now > 0.0 && now == watches_open(&cluster, first)
    });
    let one_set = watches_open(&cluster, first);
    info!(one_set, "watches of one leader's controllers");
    for id in cluster.members.keys().filter(|id| **id != first) {
        assert_eq!(
            watches_open(&cluster, *id),
            0.0,
            "follower {id} serves no watch"
        );
    }

    info!("leadership moved on six times, each as soon as the last move took effect");
    for _ in 0..6 {
        client
            .transfer_leader(None)
            .await
            .expect("leadership handed over");
    }
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    info!(leader, "settled");
    settled("the members that do not lead to serve no watch", &|| {
        cluster
            .members
            .keys()
            .filter(|id| **id != leader)
            .all(|id| watches_open(&cluster, *id) == 0.0)
    });
    settled(
        "the leader to serve its controllers' watches, once",
        &|| watches_open(&cluster, leader) == one_set,
    );
    // And it stays so: nothing left behind comes back.
    std::thread::sleep(Duration::from_secs(2));
    for id in cluster.members.keys() {
        let want = if *id == leader { one_set } else { 0.0 };
        assert_eq!(watches_open(&cluster, *id), want, "member {id}");
    }
}
