//! End-to-end tests of the replicated store: real `skiff control` processes on loopback,
//! real disks, `kill -9`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_e2e::{binary, init_tracing, Cluster, MemberOptions};
use skiff_proto::pb::{self, compare, txn_op};
use skiff_proto::{Client, ClientConfig, ClientError, WatchEvent};
use tracing::info;

fn opts(args: &[&str]) -> MemberOptions {
    MemberOptions {
        extra_args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Acknowledged writes: key → value.
type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// Writers that put `prefix/w/i` keys until `stop`, recording every acknowledged write and the
/// time of each acknowledgement.
fn spawn_writers(
    client: &Client,
    prefix: &str,
    writers: usize,
    acked: Acked,
    ack_times: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let client = client.clone();
            let acked = acked.clone();
            let times = ack_times.clone();
            let stop = stop.clone();
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("{prefix}/{w}/{i}");
                    let value = format!("v{i}");
                    if client.put(key.clone(), value.clone()).await.is_ok() {
                        acked.lock().unwrap().insert(key, value);
                        times.lock().unwrap().push(Instant::now());
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

async fn assert_all_readable(client: &Client, prefix: &str, acked: &Acked) {
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "the load acknowledged nothing");
    let stored = client
        .range(pb::RangeRequest {
            key: format!("{prefix}/").into_bytes(),
            prefix: true,
            ..Default::default()
        })
        .await
        .expect("linearizable range read");
    let stored: BTreeMap<String, String> = stored
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect();
    for (k, v) in &acked {
        assert_eq!(stored.get(k), Some(v), "acknowledged write {k} was lost");
    }
    info!(count = acked.len(), "every acknowledged write is readable");
}

/// Every control node creates the built-in namespaces in the background once there is a
/// leader. Tests that count revisions wait for those writes to be behind them.
async fn builtin_namespaces_created(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .get_object("namespaces", "", "skiff-system", false)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "built-in namespaces not created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_sent_to_a_follower_succeed_and_oversized_values_are_refused() {
    init_tracing();
    let cluster = Cluster::start(3, MemberOptions::default());
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = *cluster.members.keys().find(|id| **id != leader).unwrap();
    let fc = cluster.client_of(follower);
    builtin_namespaces_created(&fc).await;

    info!(
        follower,
        "a write sent to a follower is forwarded and applied"
    );
    let put = fc.put("greeting", "hello").await.expect("put via follower");
    let rev = put.header.unwrap().revision;
    let got = cluster
        .client_of(leader)
        .get("greeting", false)
        .await
        .unwrap()
        .expect("key on leader");
    assert_eq!(got.value, b"hello");
    assert_eq!(got.mod_revision, rev);

    info!("a value over 1.5 MiB is refused with an error naming the field, and nothing changes");
    let big = vec![b'x'; 1536 * 1024 + 1];
    let err = fc
        .put("big", big)
        .await
        .expect_err("oversized value must be refused");
    let msg = err.to_string();
    assert!(
        matches!(err, ClientError::Rejected(ref s) if s.code() == tonic::Code::InvalidArgument),
        "{msg}"
    );
    assert!(
        msg.contains("value") && msg.contains("1.5 MiB"),
        "error should name the field and the limit: {msg}"
    );
    assert!(
        fc.get("big", false).await.unwrap().is_none(),
        "nothing may be stored"
    );
    // The control plane writes too (its controllers' leases), so the revision may have moved:
    // every revision since must be another key's change, none the refused write's.
    let now = fc.status().await.expect("status").revision;
    let mut changes = fc.watch("", true, rev + 1);
    let mut since = Vec::new();
    while since.last().map_or(rev, |(r, _)| *r) < now {
        let item = tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("the watch of the revisions since stalled")
            .expect("watch open")
            .expect("watch event");
        if let WatchEvent::Events(events) = item {
            since.extend(events.iter().map(|e| {
                let kv = e.kv.as_ref().expect("event kv");
                (
                    kv.mod_revision,
                    String::from_utf8_lossy(&kv.key).into_owned(),
                )
            }));
        }
    }
    // A transaction's keys share its revision: one revision, several events.
    let mut taken: Vec<u64> = since
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| *r <= now)
        .collect();
    taken.dedup();
    assert_eq!(
        taken,
        (rev + 1..=now).collect::<Vec<_>>(),
        "the refused write must not take a revision: {since:?}"
    );
    assert!(
        since.iter().all(|(_, key)| key != "big"),
        "the refused write must not be seen: {since:?}"
    );

    info!("exactly 1.5 MiB is accepted");
    let ok = vec![b'y'; 1536 * 1024];
    fc.put("big", ok.clone()).await.expect("value at the limit");
    assert_eq!(
        fc.get("big", false).await.unwrap().unwrap().value.len(),
        ok.len()
    );

    info!("a client of every member sends its next writes to the leader directly");
    let mut endpoints = vec![cluster.members[&follower].addr.clone()];
    endpoints.extend(
        cluster
            .members
            .iter()
            .filter(|(id, _)| **id != follower)
            .map(|(_, m)| m.addr.clone()),
    );
    let all = Client::with_config(
        &endpoints,
        ClientConfig {
            random_start: false,
            ..cluster.client_config()
        },
    )
    .expect("client");
    let first = all.put("routed", "1").await.expect("first put");
    assert_eq!(
        first.header.unwrap().member_id,
        follower,
        "served by the follower"
    );
    for n in 2..5 {
        let next = all.put("routed", n.to_string()).await.expect("next put");
        assert_eq!(
            next.header.unwrap().member_id,
            leader,
            "served by the leader"
        );
    }
    let read = all.get("routed", false).await.unwrap().expect("key");
    assert_eq!(read.value, b"4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill_under_load_elects_a_new_leader_fast_and_loses_no_acknowledged_write() {
    init_tracing();
    let mut cluster = Cluster::start(3, MemberOptions::default());
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let client = Client::with_config(
        &cluster.endpoints(),
        ClientConfig {
            call_deadline: Duration::from_secs(20),
            ..cluster.client_config()
        },
    )
    .unwrap();

    info!("8 writers load the cluster");
    let acked: Acked = Default::default();
    let times: Arc<Mutex<Vec<Instant>>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = spawn_writers(
        &client,
        "load",
        8,
        acked.clone(),
        times.clone(),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    info!(leader, "kill -9 of the leader");
    let killed_at = Instant::now();
    cluster.kill9(leader);
    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let first_after = times
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|t| *t > killed_at)
        .min()
        .expect("writes resumed after the kill");
    let gap = first_after - killed_at;
    info!(?gap, new_leader, "first acknowledged write after the kill");
    assert!(
        gap < Duration::from_secs(2),
        "the new leader served its first write {gap:?} after the kill; must be under 2 s"
    );

    info!("every acknowledged write is readable, also after the old leader returns");
    assert_all_readable(&client, "load", &acked).await;
    cluster.restart(leader);
    assert_all_readable(&cluster.client_of(leader), "load", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_of_all_members_then_restart_keeps_every_acknowledged_write() {
    init_tracing();
    let mut cluster = Cluster::start(3, MemberOptions::default());
    cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client();

    info!("load, then kill -9 of all three members at once");
    let acked: Acked = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = spawn_writers(
        &client,
        "all",
        8,
        acked.clone(),
        Default::default(),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in [1, 2, 3] {
        cluster.kill9(id);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let snapshot_of_acked = acked.lock().unwrap().clone();
    info!(acked = snapshot_of_acked.len(), "members killed");
    for w in writers {
        w.abort();
    }

    info!("restart from disk");
    for id in [1, 2, 3] {
        cluster.restart(id);
    }
    cluster.wait_leader(Duration::from_secs(15)).await;
    let check: Acked = Arc::new(Mutex::new(snapshot_of_acked));
    assert_all_readable(&cluster.client(), "all", &check).await;
}

/// A follower that missed tens of MiB of large values is sent them a few per message: a
/// message of 32 of them (16 MiB) took longer than the heartbeat interval openraft allows an
/// answer on a loaded machine, and was sent again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_that_missed_large_values_catches_up_on_them() {
    init_tracing();
    let cluster = Cluster::start(3, MemberOptions::default());
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap_or(1);
    let client = cluster.client_of(leader);

    info!(
        follower,
        "writes of 48 values of 512 KiB while a follower is paused"
    );
    cluster.pause(follower, true);
    let value = |i: usize| vec![b'a' + (i % 26) as u8; 512 << 10];
    let writes = (0..48).map(|i| {
        let client = client.clone();
        async move { client.put(format!("large/{i:02}"), value(i)).await }
    });
    let written = futures::future::join_all(writes).await;
    cluster.pause(follower, false);
    assert!(
        written.iter().all(|w| w.is_ok()),
        "writes with a quorum of two: {:?}",
        written.iter().filter_map(|w| w.as_ref().err()).next()
    );

    info!("the follower holds every value, byte for byte, in its own state");
    let theirs = cluster.client_of(follower);
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..48 {
        loop {
            let got = theirs
                .range(pb::RangeRequest {
                    key: format!("large/{i:02}").into_bytes(),
                    stale: true,
                    ..Default::default()
                })
                .await
                .map(|r| r.kvs.into_iter().next().map(|kv| kv.value));
            if matches!(&got, Ok(Some(v)) if *v == value(i)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "follower {follower} lacks large/{i:02}: {:?}\n{}",
                got.map(|v| v.map(|v| v.len())),
                cluster.log_of(follower)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fourth_member_added_under_load_catches_up_through_a_snapshot() {
    init_tracing();
    let small_snapshots = opts(&["--snapshot-every", "200", "--keep-behind-snapshot", "20"]);
    let mut cluster = Cluster::start(3, small_snapshots.clone());
    cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client();

    info!("write enough that the log is purged behind snapshots");
    for i in 0..600 {
        client
            .put(format!("early/{i:04}"), format!("{i}"))
            .await
            .unwrap();
    }
    let acked: Acked = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = spawn_writers(
        &client,
        "during",
        4,
        acked.clone(),
        Default::default(),
        stop.clone(),
    );

    info!("add member 4 under load, as a learner, then promote it");
    let addr = cluster.start_joiner(4, small_snapshots);
    client
        .member_add(4, &addr, false)
        .await
        .expect("add learner");
    let deadline = Instant::now() + Duration::from_secs(10);
    let st4 = loop {
        let st4 = match Client::status_of(&addr, Some(&cluster.admin)).await {
            Ok(st) => st,
            Err(e) if Instant::now() < deadline => {
                info!(error = %e, "member 4 not answering yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => panic!(
                "member 4 does not answer: {e}; its log:\n{}",
                cluster.log_of(4)
            ),
        };
        // The log was purged behind index ~580 before member 4 existed: only a snapshot can
        // have brought it the early entries.
        if st4.snapshot_index >= 400 || Instant::now() > deadline {
            break st4;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(st4.learner, "member 4 should be a learner first");
    assert!(
        st4.snapshot_index >= 400,
        "member 4 should have installed a snapshot, got snapshot index {}",
        st4.snapshot_index
    );
    client.member_promote(4).await.expect("promote");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    info!("member 4 serves stale reads of data written before it joined and during the join");
    let c4 = cluster.client_of(4);
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = acked.lock().unwrap().clone();
    loop {
        let early = c4.get("early/0000", true).await.unwrap();
        let latest_ok = {
            let mut ok = true;
            for (k, v) in want.iter().rev().take(20) {
                ok &= c4
                    .get(k.clone(), true)
                    .await
                    .unwrap()
                    .is_some_and(|kv| kv.value == v.as_bytes());
            }
            ok
        };
        if early.is_some_and(|kv| kv.value == b"0") && latest_ok {
            break;
        }
        assert!(Instant::now() < deadline, "member 4 did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let members = client.members().await.unwrap();
    assert!(
        members.members.iter().any(|m| m.id == 4 && m.voter),
        "member 4 should be a voter: {members:?}"
    );
}

fn revisions(events: &[pb::Event]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_from_a_revision_gets_every_event_once_in_order_across_a_leader_change() {
    init_tracing();
    let mut cluster = Cluster::start(3, MemberOptions::default());
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client();
    builtin_namespaces_created(&client).await;
    let mut start = 0;
    for i in 0..20 {
        let r = client.put(format!("w/{i}"), "x").await.unwrap();
        if i == 10 {
            start = r.header.unwrap().revision;
        }
    }

    info!(
        start,
        leader, "watch through the leader, from a past revision"
    );
    let mut order = vec![cluster.members[&leader].addr.clone()];
    order.extend(
        cluster
            .members
            .values()
            .filter(|m| m.id != leader)
            .map(|m| m.addr.clone()),
    );
    let watcher = Client::with_config(
        &order,
        ClientConfig {
            random_start: false,
            ..cluster.client_config()
        },
    )
    .unwrap();
    let mut rx = watcher.watch("w/", true, start);
    let mut seen = Vec::new();
    while seen.len() < 10 {
        if let WatchEvent::Events(ev) = rx.recv().await.unwrap().unwrap() {
            seen.extend(revisions(&ev));
        }
    }

    info!("kill -9 of the leader, then more writes");
    cluster.kill9(leader);
    cluster.wait_leader(Duration::from_secs(10)).await;
    let mut last = 0;
    for i in 20..40 {
        last = client
            .put(format!("w/{i}"), "y")
            .await
            .unwrap()
            .header
            .unwrap()
            .revision;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.last().copied() != Some(last) {
        let item = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        if let WatchEvent::Events(ev) = item {
            seen.extend(revisions(&ev));
        }
    }
    let want: Vec<u64> = (start..=last).collect();
    assert_eq!(seen, want, "every revision once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_from_a_compacted_revision_is_expired() {
    init_tracing();
    let cluster = Cluster::start(3, opts(&["--history-revisions", "50"]));
    cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client();
    builtin_namespaces_created(&client).await;
    for i in 0..200 {
        client.put(format!("c/{i}"), "x").await.unwrap();
    }
    let mut rx = client.watch("c/", true, 1);
    match rx.recv().await.unwrap() {
        Err(ClientError::Expired { compacted }) => {
            assert!(compacted >= 100, "compacted {compacted}")
        }
        other => panic!("expected EXPIRED, got {other:?}"),
    }
    info!("a watch from a retained revision still works");
    let mut rx = client.watch("c/", true, 190);
    loop {
        if let WatchEvent::Events(ev) = rx.recv().await.unwrap().unwrap() {
            assert_eq!(revisions(&ev)[0], 190);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_swap_increments_by_eight_writers_lose_no_update() {
    init_tracing();
    let cluster = Cluster::start(3, MemberOptions::default());
    cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client();
    client.put("counter", "0").await.unwrap();
    const PER_WRITER: u64 = 25;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = cluster.client();
            tokio::spawn(async move {
                let mut wrote = Vec::new();
                for _ in 0..PER_WRITER {
                    loop {
                        let kv = client.get("counter", false).await.unwrap().unwrap();
                        let n: u64 = String::from_utf8_lossy(&kv.value).parse().unwrap();
                        let txn = pb::TxnRequest {
                            compares: vec![pb::Compare {
                                target: compare::Target::ModRevision as i32,
                                key: b"counter".to_vec(),
                                mod_revision: kv.mod_revision,
                            }],
                            success: vec![pb::TxnOp {
                                op: Some(txn_op::Op::Put(pb::PutRequest {
                                    key: b"counter".to_vec(),
                                    value: (n + 1).to_string().into_bytes(),
                                    request_id: vec![],
                                    prev_kv: false,
                                })),
                            }],
                            failure: vec![],
                            request_id: vec![],
                        };
                        if client.txn(txn).await.unwrap().succeeded {
                            wrote.push(n + 1);
                            break;
                        }
                    }
                }
                wrote
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let total = 8 * PER_WRITER;
    assert_eq!(
        all,
        (1..=total).collect::<Vec<_>>(),
        "each increment applied exactly once"
    );
    let kv = client.get("counter", false).await.unwrap().unwrap();
    assert_eq!(kv.value, total.to_string().into_bytes());
}

fn run_control(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(binary("skiff"))
        .arg("control")
        .args(args)
        .output()
        .expect("run skiff");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn control_node_refuses_bad_flags_and_foreign_data_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("m1");
    let d = d.to_str().unwrap();
    let (ok, err) = run_control(&[
        "--id",
        "1",
        "--data-dir",
        d,
        "--listen",
        "127.0.0.1",
        "--initial-cluster",
        "1=127.0.0.1:1",
    ]);
    assert!(
        !ok && err.contains("--listen") && err.contains("no port"),
        "{err}"
    );
    let (ok, err) = run_control(&[
        "--id",
        "4",
        "--data-dir",
        d,
        "--listen",
        "127.0.0.1:1",
        "--initial-cluster",
        "1=127.0.0.1:1,2=127.0.0.1:2",
    ]);
    assert!(!ok && err.contains("--id 4 is not a member"), "{err}");
    let (ok, err) = run_control(&[
        "--id",
        "1",
        "--data-dir",
        d,
        "--listen",
        "127.0.0.1:1",
        "--initial-cluster",
        "1=127.0.0.1:1,2=nohost",
    ]);
    assert!(!ok && err.contains("--initial-cluster"), "{err}");

    // Claim the directory for cluster "a", then try to start it as cluster "b".
    std::fs::create_dir_all(d).unwrap();
    std::fs::write(
        dir.path().join("m1/member.json"),
        r#"{"cluster_id":"a","member_id":1}"#,
    )
    .unwrap();
    let port = skiff_e2e::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let (ok, err) = run_control(&[
        "--id",
        "1",
        "--data-dir",
        d,
        "--listen",
        &listen,
        "--initial-cluster",
        &format!("1={listen}"),
        "--cluster-id",
        "b",
    ]);
    assert!(!ok && err.contains("belongs to cluster \"a\""), "{err}");
    let (ok, err) = run_control(&[
        "--id",
        "2",
        "--data-dir",
        d,
        "--listen",
        &listen,
        "--initial-cluster",
        &format!("2={listen}"),
        "--cluster-id",
        "a",
    ]);
    assert!(!ok && err.contains("belongs to member 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_resent_with_its_request_id_is_applied_once_also_after_a_full_restart() {
    init_tracing();
    let mut cluster = Cluster::start(3, MemberOptions::default());
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client();
    builtin_namespaces_created(&client).await;
    client.put("hits", "-1").await.unwrap();
    let plain = client.put("hits", "0").await.unwrap();
    assert_eq!(
        plain.prev_kv, None,
        "a put reports the old value only when asked"
    );
    // What a client resends when an answer is lost: the same transaction, the same id.
    let append = |id: u8| pb::TxnRequest {
        compares: vec![],
        success: vec![pb::TxnOp {
            op: Some(txn_op::Op::Put(pb::PutRequest {
                key: b"hits".to_vec(),
                value: format!("by {id}").into_bytes(),
                request_id: vec![],
                prev_kv: true,
            })),
        }],
        failure: vec![],
        request_id: vec![id; 16],
    };
    let first = client.txn(append(7)).await.unwrap();
    let prev_value = |r: &pb::TxnResponse| match r.responses.first().and_then(|o| o.op.clone()) {
        Some(pb::txn_op_response::Op::Put(p)) => p.prev_kv.map(|kv| kv.value),
        _ => None,
    };
    assert_eq!(prev_value(&first).as_deref(), Some(&b"0"[..]), "asked for");
    let version_after = |kv: Option<pb::KeyValue>| kv.expect("hits").version;
    let version = version_after(client.get("hits", false).await.unwrap());
    let revision = revision_now(&client).await;

    info!("resent to every member: the first result, nothing applied again");
    for id in cluster.members.keys().copied().collect::<Vec<_>>() {
        let again = cluster.client_of(id).txn(append(7)).await.unwrap();
        assert_eq!(
            prev_value(&again),
            prev_value(&first),
            "the remembered result"
        );
        assert_eq!(
            again.header.unwrap().revision,
            first.header.unwrap().revision
        );
    }
    assert_eq!(
        version_after(client.get("hits", false).await.unwrap()),
        version
    );
    assert_eq!(revision_now(&client).await, revision);

    info!("a new id is a new write");
    client.txn(append(8)).await.unwrap();
    let revision = revision_now(&client).await;
    let version = version_after(client.get("hits", false).await.unwrap());

    info!("kill -9 of every member and a restart: the ids are remembered from disk");
    let ids: Vec<u64> = cluster.members.keys().copied().collect();
    for id in &ids {
        cluster.kill9(*id);
    }
    for id in &ids {
        cluster.restart(*id);
    }
    cluster.wait_leader(Duration::from_secs(10)).await;
    for id in [7, 8] {
        client.txn(append(id)).await.unwrap();
    }
    assert_eq!(
        version_after(client.get("hits", false).await.unwrap()),
        version
    );
    assert_eq!(
        revision_now(&client).await,
        revision,
        "a resent write was applied again (leader before the restart: {leader})"
    );
}

/// The store's revision as of now (a linearizable read; `status` answers from the member
/// asked, which may lag).
async fn revision_now(client: &Client) -> u64 {
    let req = pb::RangeRequest {
        key: b"hits".to_vec(),
        ..Default::default()
    };
    client.range(req).await.unwrap().header.unwrap().revision
}
