//! A data directory written by the previous release (`tests/fixtures/previous-release`, made
//! by its `make.sh` with that release's binaries) opens with this one, keeps every key and
//! object, and members of this release join it and take over.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use skiff_e2e::{control, init_tracing, Proc};
use skiff_proto::{pb, Client, ClientConfig};
use tracing::info;

/// Where the fixture's member listens: its address is in its membership.
const FIXTURE_ADDR: &str = "127.0.0.1:17390";
const FIXTURE_CLUSTER: &str = "previous-release";

fn client(addrs: &[String]) -> Client {
    Client::with_config(
        addrs,
        ClientConfig {
            call_deadline: Duration::from_secs(30),
            ..Default::default()
        },
    )
    .expect("client")
}

async fn wait_answering(client: &Client, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.status().await.map(|s| s.leader).unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "{what} did not answer with a leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_fixture_data(client: &Client) {
    let kvs = client
        .range(pb::RangeRequest {
            key: b"fixture/key-".to_vec(),
            prefix: true,
            ..Default::default()
        })
        .await
        .expect("a linearizable read")
        .kvs;
    assert_eq!(kvs.len(), 250, "every key the previous release wrote");
    for kv in kvs {
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        let n = key.trim_start_matches("fixture/key-");
        assert_eq!(kv.value, format!("value-{n}").into_bytes(), "{key}");
    }
    let cm = client
        .get_object(
            "configmaps",
            "default",
            "written-by-the-previous-release",
            false,
        )
        .await
        .expect("the ConfigMap");
    let cm: serde_json::Value = serde_json::from_slice(&cm.object).expect("json");
    assert_eq!(cm["data"]["release"], "636922c");
}

fn joiner(dir: &Path, id: u64) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", skiff_e2e::free_port());
    let data = dir.join(format!("member-{id}"));
    let proc = control(
        dir,
        &format!("member-{id}"),
        &[
            "--id",
            &id.to_string(),
            "--listen",
            &addr,
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--join",
            "--cluster-id",
            FIXTURE_CLUSTER,
            "--member-stabilization",
            "1s",
        ],
    );
    (proc, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_previous_release_opens_and_new_members_join_it() {
    init_tracing();
    assert!(
        std::net::TcpListener::bind(FIXTURE_ADDR).is_ok(),
        "{FIXTURE_ADDR}, the fixture member's address, is taken"
    );
    let tmp = tempfile::Builder::new()
        .prefix("skiff-e2e-")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/previous-release/member-1.tar.gz");
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(dir)
        .output()
        .expect("tar runs");
    assert!(out.status.success(), "unpacking {}", fixture.display());
    let member_json =
        std::fs::read_to_string(dir.join("member-1/member.json")).expect("member.json");
    assert!(
        !member_json.contains("format"),
        "the fixture predates recorded formats: {member_json}"
    );

    info!("the previous release's data directory opens with this release");
    let data = dir.join("member-1");
    let mut one = control(
        dir,
        "member-1",
        &[
            "--id",
            "1",
            "--listen",
            FIXTURE_ADDR,
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--initial-cluster",
            &format!("1={FIXTURE_ADDR}"),
            "--cluster-id",
            FIXTURE_CLUSTER,
            "--member-stabilization",
            "1s",
        ],
    );
    let first = client(&[FIXTURE_ADDR.to_string()]);
    wait_answering(&first, "the fixture's member").await;
    assert_fixture_data(&first).await;
    let member_json = std::fs::read_to_string(data.join("member.json")).expect("member.json");
    let meta: serde_json::Value = serde_json::from_str(&member_json).expect("json");
    assert_eq!(
        meta["format"],
        skiff_raft::versions::DATA_FORMAT,
        "the directory records this release's format, so the previous one refuses it"
    );
    for store in ["log", "state"] {
        let format = std::fs::read_to_string(data.join(store).join("store/engine-format"))
            .unwrap_or_else(|e| panic!("{store}: the store was brought to this format: {e}"));
        assert_eq!(format.trim(), "2", "{store}");
    }
    first
        .put("written-by-this-release", "1")
        .await
        .expect("a write");

    info!("two members of this release join it");
    let (_two, addr2) = joiner(dir, 2);
    let (_three, addr3) = joiner(dir, 3);
    first.member_add(2, &addr2, true).await.expect("member 2");
    first.member_add(3, &addr3, true).await.expect("member 3");
    let list = first.members().await.expect("members");
    assert_eq!(
        list.members.iter().filter(|m| m.voter).count(),
        3,
        "{list:?}"
    );

    info!("the old member stops (handing over); the new ones hold everything");
    assert!(one.stop().success(), "member 1 stopped cleanly");
    let new = client(&[addr2, addr3]);
    wait_answering(&new, "the new members").await;
    assert_fixture_data(&new).await;
    let got = new
        .range(pb::RangeRequest {
            key: b"written-by-this-release".to_vec(),
            ..Default::default()
        })
        .await
        .expect("read")
        .kvs;
    assert_eq!(got.len(), 1);
}
