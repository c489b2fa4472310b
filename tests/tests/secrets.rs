//! Secrets at rest, on a real three-member cluster: a Secret's value appears in no file under
//! any member's data directory (log, state, snapshots), yet the API and watches serve it; after
//! `skiffctl secrets rotate-key` it is still readable, sealed under the new data key, and the
//! old data key is gone from the store. With a new key put first in the key file, a rotation
//! leaves nothing the old key file opens, and a member restarted with the new key alone reads
//! the Secret.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use skiff_e2e::{binary, init_tracing, Cluster, MemberOptions};
use skiff_proto::objects::{Selection, WatchItem};

/// Whether `needle` occurs in any file under `dir`.
fn found_under(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_ciphertext_on_every_disk_and_survives_key_rotation() {
    init_tracing();
    let mut cluster = Cluster::start(
        3,
        MemberOptions {
            // Snapshots soon, so they are on disk to be searched too.
            extra_args: vec!["--snapshot-every".into(), "20".into()],
            ..Default::default()
        },
    );
    cluster.wait_leader(Duration::from_secs(10)).await;
    let admin = cluster.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin
        .get_object("namespaces", "", "default", false)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "no default namespace");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut watch = admin.watch_objects("secrets", &Selection::default(), 0);

    let marker: [u8; 32] = rand::random();
    let marker_hex = hex_of(&marker);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                        "data": {"raw": base64::engine::general_purpose::STANDARD.encode(marker)},
                        "stringData": {"hex": marker_hex}});
    admin
        .create_object("secrets", "default", serde_json::to_vec(&secret).unwrap())
        .await
        .expect("create the Secret");
    // Enough further writes that every member takes a snapshot.
    for i in 0..40 {
        admin
            .put(format!("/filler/{i}"), vec![b'x'; 64])
            .await
            .expect("filler");
    }

    // Readable through the API, and through a watch.
    let read = |v: &Value| {
        (
            v.pointer("/data/raw")
                .and_then(Value::as_str)
                .map(str::to_string),
            v.pointer("/data/hex")
                .and_then(Value::as_str)
                .map(str::to_string),
        )
    };
    let want = (
        Some(base64::engine::general_purpose::STANDARD.encode(marker)),
        Some(base64::engine::general_purpose::STANDARD.encode(&marker_hex)),
    );
    let got = skiff_e2e::object_json(&admin, "secrets", "default", "db").await;
    assert_eq!(read(&got), want, "{got}");
    let deadline = Instant::now() + Duration::from_secs(10);
    'watch: loop {
        let item = tokio::time::timeout(Duration::from_secs(5), watch.recv())
            .await
            .expect("a watch event")
            .expect("the watch runs")
            .expect("no watch error");
        if let WatchItem::Added(object) = item {
            let v: Value = serde_json::from_slice(&object).expect("JSON");
            if v.pointer("/metadata/name") == Some(&json!("db")) {
                assert_eq!(read(&v), want, "{v}");
                break 'watch;
            }
        }
        assert!(Instant::now() < deadline, "no event for the Secret");
    }

    // Nowhere on disk, in any form.
    let b64 = base64::engine::general_purpose::STANDARD.encode(marker);
    for m in cluster.members.values() {
        for needle in [&marker[..], marker_hex.as_bytes(), b64.as_bytes()] {
            let hits = found_under(&m.data_dir, needle);
            assert!(hits.is_empty(), "the Secret's value is in {hits:?}");
        }
    }

    // Rotation: a new data key, the Secret sealed again under it, the old key gone.
    let key = "/registry/core/secrets/default/db";
    let before = admin
        .get(key, false)
        .await
        .expect("raw read")
        .expect("stored");
    let text = rotate_key(&cluster);
    assert!(
        text.contains("data key 2") && text.contains("1 sealed again"),
        "{text}"
    );
    let after = admin
        .get(key, false)
        .await
        .expect("raw read")
        .expect("stored");
    assert_ne!(before.value, after.value);
    let prefix = b"skiff:enc:aesgcm:v1:";
    assert!(after.value.starts_with(prefix), "sealed");
    assert_eq!(
        &after.value[prefix.len()..prefix.len() + 4],
        &2u32.to_be_bytes()
    );
    assert!(
        admin
            .get("/registry/encryption/keys/00000001", false)
            .await
            .expect("raw read")
            .is_none(),
        "the old data key is deleted"
    );
    let got = skiff_e2e::object_json(&admin, "secrets", "default", "db").await;
    assert_eq!(read(&got), want, "readable after rotation: {got}");
    for m in cluster.members.values() {
        assert!(found_under(&m.data_dir, b64.as_bytes()).is_empty());
    }

    // Replacing the key file's key, as an operator does: the new key first (on every member;
    // one file serves them all here), the old one after it until the rotation is done.
    let key_file = cluster.encryption_key_file();
    let old_key = std::fs::read_to_string(&key_file).expect("key file");
    let new_key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    std::fs::write(&key_file, format!("{new_key}\n{}", old_key.trim())).expect("key file");
    let text = rotate_key(&cluster);
    assert!(text.contains("data key 3"), "{text}");
    let stored_keys = admin
        .range(skiff_proto::pb::RangeRequest {
            key: b"/registry/encryption/keys/".to_vec(),
            prefix: true,
            ..Default::default()
        })
        .await
        .expect("raw read");
    assert_eq!(stored_keys.kvs.len(), 1, "one data key is left");
    let wrapped = &stored_keys.kvs[0].value;
    assert!(opens(&new_key, wrapped), "the new key opens the data key");
    assert!(
        !opens(&old_key, wrapped),
        "the old key file no longer opens anything in the store"
    );
    // The old key leaves the file; a member restarted with the new key alone reads the Secret.
    std::fs::write(&key_file, &new_key).expect("key file");
    cluster.kill9(1);
    cluster.restart(1);
    let member = cluster.client_of(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        match member.get_object("secrets", "default", "db", false).await {
            Ok(o) => break serde_json::from_slice::<Value>(&o.object).expect("JSON"),
            Err(e) => assert!(Instant::now() < deadline, "member 1 after restart: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(read(&got), want, "readable with the new key alone: {got}");
}

/// `skiffctl secrets rotate-key`, which must succeed; what it printed.
fn rotate_key(cluster: &Cluster) -> String {
    let out = Command::new(binary("skiffctl"))
        .args(["secrets", "rotate-key"])
        .env("SKIFFCONFIG", cluster.config_file())
        .output()
        .expect("skiffctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the key file text `key` opens a wrapped data key (nonce, then ciphertext).
fn opens(key: &str, wrapped: &[u8]) -> bool {
    use aes_gcm::aead::{Aead, KeyInit};
    let key = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .expect("a key file line");
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).expect("32 bytes");
    let (nonce, body) = wrapped.split_at(12);
    cipher
        .decrypt(aes_gcm::Nonce::from_slice(nonce), body)
        .is_ok()
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
