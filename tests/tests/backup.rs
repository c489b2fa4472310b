//! Backups and recovery: `skiffctl snapshot save` under writes, `snapshot inspect`, a new cluster
//! made with `skiff control restore` that holds exactly what the backup holds, and a survivor
//! of a lost quorum brought back alone with `skiff control recover`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use skiff_e2e::{binary, init_tracing, skiffctl_with, text, Cluster, MemberOptions};
use skiff_proto::{pb, Client, WatchEvent};
use tracing::info;

/// Every key under `prefix`, with its revisions.
async fn all(client: &Client, prefix: &str) -> BTreeMap<Vec<u8>, pb::KeyValue> {
    let r = client
        .range(pb::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            prefix: true,
            ..Default::default()
        })
        .await
        .expect("range");
    assert!(!r.more, "one page holds the test's keys");
    r.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect()
}

/// Wait until `client`'s member holds `n` keys under `prefix` in its own state (stale reads).
async fn wait_for_keys(client: &Client, prefix: &str, n: usize, who: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = client
            .range(pb::RangeRequest {
                key: prefix.as_bytes().to_vec(),
                prefix: true,
                stale: true,
                ..Default::default()
            })
            .await
            .map(|r| r.kvs.len());
        if got.as_ref().ok() == Some(&n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{who} holds {got:?} of {n} keys"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_saved_under_writes_restores_into_a_new_cluster_with_exactly_what_it_holds() {
    init_tracing();
    let source = Cluster::start(3, MemberOptions::default());
    source.wait_leader(Duration::from_secs(10)).await;
    let client = source.client();
    for i in 0..50 {
        client
            .put(format!("/test/before/{i:03}"), format!("value {i}"))
            .await
            .expect("put");
    }
    for i in 0..10 {
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i}")}, "data": {"i": i.to_string()}});
        client
            .create_object(
                "configmaps",
                "default",
                serde_json::to_vec(&cm).expect("json"),
            )
            .await
            .expect("a ConfigMap");
    }

    info!("phase: save a backup while a writer keeps writing new keys");
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, stop, written) = (client.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if client
                    .put(format!("/test/during/{i:06}"), format!("v{i}"))
                    .await
                    .is_ok()
                {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let file = source.dir().join("backup.skiff");
    let config = source.config_file();
    let save = {
        let (config, file) = (config.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            skiffctl_with(&config, &["snapshot", "save", &file.display().to_string()])
        })
        .await
        .expect("skiffctl")
    };
    assert!(save.status.success(), "save: {}", text(&save.stderr));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    assert!(written.load(Ordering::Relaxed) > 0, "the writer wrote");

    let inspect = skiffctl_with(
        &config,
        &["snapshot", "inspect", "--json", &file.display().to_string()],
    );
    assert!(
        inspect.status.success(),
        "inspect: {}",
        text(&inspect.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("inspect --json");
    let revision = seen["revision"].as_u64().expect("a revision");
    assert_eq!(seen["clusterId"], source.cluster_id.as_str());
    assert!(seen["objects"]["configmaps"].as_u64() >= Some(10), "{seen}");

    // The writer only ever created new keys: the source's keys at the backup's revision are
    // those whose last change is at or before it.
    let mut expected = all(&client, "/test/").await;
    let after = expected
        .values()
        .filter(|kv| kv.mod_revision > revision)
        .count();
    expected.retain(|_, kv| kv.mod_revision <= revision);
    assert!(
        after > 0,
        "writes went on after the backup's revision {revision}"
    );
    let expected_maps = all(&client, "/registry/core/configmaps/default/").await;
    info!(revision, keys = expected.len(), after, "backup saved");

    info!("phase: a new cluster from the backup");
    let restored = Cluster::start(
        3,
        MemberOptions {
            restore_from: Some(file.clone()),
            encryption_key_from: Some(source.encryption_key_file()),
            ..Default::default()
        },
    );
    restored.wait_leader(Duration::from_secs(20)).await;
    assert_eq!(restored.wait_leader(Duration::from_secs(20)).await, 1);
    let fresh = restored.client();
    assert_eq!(
        all(&fresh, "/test/").await,
        expected,
        "every key, byte for byte"
    );
    assert_eq!(
        all(&fresh, "/registry/core/configmaps/default/").await,
        expected_maps,
        "every object"
    );

    info!("phase: every member holds it, watches start from the backup's revision on");
    for id in [2, 3] {
        let who = format!("member {id}");
        wait_for_keys(&restored.client_of(id), "/test/", expected.len(), &who).await;
    }
    let mut watch = fresh.watch("/test/new", true, revision + 1);
    let put = fresh
        .put("/test/new", "after the restore")
        .await
        .expect("put");
    let written_at = put.header.map(|h| h.revision).unwrap_or(0);
    assert!(
        written_at > revision,
        "revisions go on from {revision}: {written_at}"
    );
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.recv().await {
                Some(Ok(WatchEvent::Events(e))) => return e,
                Some(Ok(WatchEvent::Progress(_))) => continue,
                other => panic!("watch ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the watch delivers");
    assert_eq!(
        event[0].kv.as_ref().map(|kv| kv.value.clone()),
        Some(b"after the restore".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_flipped_backup_is_refused_and_the_target_is_untouched() {
    init_tracing();
    let source = Cluster::start(1, MemberOptions::default());
    source.wait_leader(Duration::from_secs(10)).await;
    source.client().put("/test/k", "v").await.expect("put");
    let bytes = source.client().backup().await.expect("a backup");
    let dir = source.dir();
    let good = dir.join("good.skiff");
    std::fs::write(&good, &bytes).expect("write");
    let mut flipped = bytes.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x04;
    let cases = [
        (
            "truncated",
            bytes[..bytes.len() * 2 / 3].to_vec(),
            "truncated",
        ),
        ("flipped", flipped, "checksum"),
    ];
    for (name, content, says) in cases {
        let file = dir.join(format!("{name}.skiff"));
        std::fs::write(&file, content).expect("write");
        let inspect = skiffctl_with(
            &source.config_file(),
            &["snapshot", "inspect", &file.display().to_string()],
        );
        assert!(!inspect.status.success(), "{name}: inspect accepted it");
        assert!(
            text(&inspect.stderr).contains(says),
            "{name}: {}",
            text(&inspect.stderr)
        );

        let target = dir.join(format!("restore-{name}"));
        std::fs::create_dir_all(&target).expect("an empty target");
        let out = std::process::Command::new(binary("skiff"))
            .args(["control", "restore"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&target)
            .args(["--id", "1", "--initial-cluster", "1=127.0.0.1:1"])
            .output()
            .expect("skiff control restore runs");
        assert!(!out.status.success(), "{name}: restore accepted it");
        assert!(
            text(&out.stderr).contains(says),
            "{name}: {}",
            text(&out.stderr)
        );
        let left: Vec<_> = std::fs::read_dir(&target).expect("target").collect();
        assert!(left.is_empty(), "{name}: the target holds {left:?}");
        let siblings: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("restoring"))
            .collect();
        assert!(siblings.is_empty(), "{name}: left behind {siblings:?}");
    }
    let inspect = skiffctl_with(
        &source.config_file(),
        &["snapshot", "inspect", &good.display().to_string()],
    );
    assert!(inspect.status.success(), "{}", text(&inspect.stderr));
    assert!(
        text(&inspect.stdout).contains("(OK)"),
        "{}",
        text(&inspect.stdout)
    );
}

/// A backup in format 1 (SHA-256, counts in its header), as releases before format 2 wrote
/// it: `tests/fixtures/previous-release/backup-format-1.sh` made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_written_by_the_previous_format_still_inspects_and_restores() {
    init_tracing();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/previous-release/backup-format-1.skiff");
    let restored = Cluster::start(
        1,
        MemberOptions {
            restore_from: Some(fixture.clone()),
            ..Default::default()
        },
    );
    restored.wait_leader(Duration::from_secs(20)).await;
    let inspect = skiffctl_with(
        &restored.config_file(),
        &["snapshot", "inspect", &fixture.display().to_string()],
    );
    let out = text(&inspect.stdout);
    assert!(inspect.status.success(), "{}", text(&inspect.stderr));
    assert!(out.contains("sha256:") && out.contains("(OK)"), "{out}");
    assert!(out.contains("revision:   108"), "{out}");

    let client = restored.client();
    let keys = all(&client, "fixture/key-").await;
    assert_eq!(keys.len(), 100, "every key of the backup");
    for i in 1..=100 {
        let value = keys.get(format!("fixture/key-{i}").as_bytes());
        assert_eq!(
            value.map(|kv| kv.value.as_slice()),
            Some(format!("value-{i}").as_bytes())
        );
    }
    let maps = all(&client, "/registry/core/configmaps/default/saved-in").await;
    assert_eq!(maps.len(), 1, "the ConfigMap of the backup");
    let put = client.put("fixture/after", "v").await.expect("put");
    let at = put.header.map(|h| h.revision).unwrap_or(0);
    assert!(at > 108, "revisions go on from the backup's: {at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_of_a_lost_quorum_recovers_alone_with_every_acknowledged_write_and_new_members_join(
) {
    init_tracing();
    let mut cluster = Cluster::start(3, MemberOptions::default());
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client();
    let mut acked = BTreeMap::new();
    for i in 0..100 {
        let (k, v) = (format!("/test/acked/{i:03}"), format!("v{i}"));
        client.put(k.clone(), v.clone()).await.expect("put");
        acked.insert(k.into_bytes(), v.into_bytes());
    }
    // A follower survives: it may hold entries in its log it has not applied yet.
    let survivor = (1..=3).find(|i| *i != leader).expect("a follower");

    info!(
        survivor,
        "phase: two members destroyed, the survivor stopped"
    );
    for id in 1..=3 {
        cluster.kill9(id);
    }
    for id in (1..=3).filter(|i| *i != survivor) {
        std::fs::remove_dir_all(&cluster.members[&id].data_dir).expect("destroy");
    }
    let dir = cluster.members[&survivor].data_dir.clone();
    let out = std::process::Command::new(binary("skiff"))
        .args(["control", "recover", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("skiff control recover runs");
    assert!(out.status.success(), "recover: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("only member"),
        "{}",
        text(&out.stdout)
    );

    info!("phase: the survivor alone has every acknowledged write and takes writes");
    cluster.restart(survivor);
    let alone = cluster.client_of(survivor);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while alone.put("/test/alone", "1").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the survivor takes no writes:\n{}",
            cluster.log_of(survivor)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held: BTreeMap<Vec<u8>, Vec<u8>> = all(&alone, "/test/acked/")
        .await
        .into_iter()
        .map(|(k, kv)| (k, kv.value))
        .collect();
    assert_eq!(held, acked, "every acknowledged write");

    info!("phase: two new members join and the cluster is three voters again");
    for id in [4, 5] {
        let addr = cluster.start_joiner(id, MemberOptions::default());
        alone
            .member_add(id, &addr, true)
            .await
            .unwrap_or_else(|e| panic!("member {id} added: {e}"));
    }
    let members = alone.members().await.expect("members");
    let voters: Vec<u64> = members
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    assert_eq!(voters.len(), 3, "{voters:?}");
    cluster
        .client()
        .put("/test/after", "3 voters")
        .await
        .expect("a write");
    wait_for_keys(
        &cluster.client_of(5),
        "/test/acked/",
        acked.len(),
        "the newcomer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_takes_scheduled_backups_and_keeps_the_newest() {
    init_tracing();
    let cluster = Cluster::start(
        3,
        MemberOptions {
            extra_args: vec![
                "--snapshot-interval=1s".into(),
                "--snapshot-retention=2".into(),
            ],
            ..Default::default()
        },
    );
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    cluster.client().put("/test/k", "v").await.expect("put");
    let dir = cluster.members[&leader].data_dir.join("backups");
    // One a second: after four seconds, more than two were taken and the two newest kept.
    let started = tokio::time::Instant::now();
    let files = loop {
        let files = skiff_raft::backup::schedule::scheduled_in(&dir).unwrap_or_default();
        if files.len() == 2 && started.elapsed() >= Duration::from_secs(4) {
            break files;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "scheduled backups in {}: {files:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for f in &files {
        let i = skiff_raft::backup::inspect(f).expect("it checks");
        assert_eq!(i.header.cluster_id, cluster.cluster_id);
    }
    for id in (1..=3).filter(|i| *i != leader) {
        let theirs = cluster.members[&id].data_dir.join("backups");
        let found = skiff_raft::backup::schedule::scheduled_in(&theirs).unwrap_or_default();
        assert!(found.is_empty(), "follower {id} took backups: {found:?}");
    }
}
