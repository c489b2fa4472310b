//! Joining with a token against a real three-member cluster: a control token brings a new
//! member in by itself (it pins the CA by the token's hash, gets the CA, adds itself); a node
//! token cannot make a control member; revoked, expired and foreign tokens are refused.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use skiff_e2e::{control, init_tracing, Cluster, MemberOptions};
use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::holder::Holder;
use skiff_proto::tls::token::{self, secret_hash, JoinError, JoinToken};
use skiff_proto::tls::{self as skiff_tls};

use skiff_e2e::{skiffctl_with as skiffctl, text};

fn token_of(config: &Path, role: &str) -> String {
    let out = skiffctl(config, &["token", "create", "--role", role, "--ttl", "1h"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// Wait until member `id`'s process ends; its exit must be a failure whose log says `why`.
async fn refused_to_join(cluster: &mut Cluster, id: u64, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = cluster.exit_status(id) {
            assert!(!status.success(), "member {id} exited with success");
            let log = cluster.log_of(id);
            assert!(log.contains(why), "member {id} log lacks {why:?}: {log}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "member {id} still runs: {}",
            cluster.log_of(id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_token_brings_a_member_in_and_other_tokens_do_not() {
    init_tracing();
    let mut cluster = Cluster::start(3, MemberOptions::default());
    cluster.wait_leader(Duration::from_secs(10)).await;
    let config = cluster.config_file();
    let server = cluster.endpoints()[0].clone();
    let admin = cluster.client();

    // A node token cannot make a control member.
    let node_token = token_of(&config, "node");
    cluster.start_token_joiner(4, &node_token, &server);
    refused_to_join(&mut cluster, 4, "a node token cannot join a control member").await;

    // A control token brings member 5 in: it adds itself and becomes a voter.
    let control_token = token_of(&config, "control");
    let addr5 = cluster.start_token_joiner(5, &control_token, &server);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let members = admin.members().await.expect("members");
        if members
            .members
            .iter()
            .any(|m| m.id == 5 && m.voter && m.addr == addr5)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member 5 did not join: {members:?}\n{}",
            cluster.log_of(5)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It serves the cluster's data with the cluster's CA: the admin reads through it alone.
    admin
        .put("/joined", b"yes".to_vec())
        .await
        .expect("a write");
    let five = cluster.client_to(std::slice::from_ref(&addr5));
    let got = five
        .get("/joined", false)
        .await
        .expect("a read through the new member")
        .expect("the key");
    assert_eq!(got.value, b"yes");

    // Listed, then revoked: nothing joins with it any more.
    let list = skiffctl(&config, &["token", "list"]);
    let id = control_token
        .split("::")
        .nth(1)
        .and_then(|c| c.split('.').next())
        .expect("token id");
    assert!(text(&list.stdout).contains(id), "{}", text(&list.stdout));
    assert!(!text(&list.stdout).contains(control_token.split('.').next_back().expect("secret")));
    let revoked = skiffctl(&config, &["token", "revoke", id]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    cluster.start_token_joiner(6, &control_token, &server);
    refused_to_join(&mut cluster, 6, "not known to this cluster").await;

    // An expired token, and one of another cluster, are refused too.
    let ca = ClusterCa::load(&cluster.dir().join("member-1/pki"))
        .expect("CA")
        .expect("CA kept");
    let expired = JoinToken::generate(&ca.cert).expect("token");
    let past = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    let obj = json!({"apiVersion": "auth.skiff.dev/v1", "kind": "JoinToken",
                     "metadata": {"name": expired.id},
                     "spec": {"role": "node", "secretHash": secret_hash(&expired.secret), "expires": past}});
    admin
        .create_object("jointokens", "", serde_json::to_vec(&obj).unwrap())
        .await
        .expect("a token that has expired");
    let (_, csr) = skiff_tls::signing_request(&Holder::Node("late".into())).expect("csr");
    match token::join(&server, &expired, &csr).await {
        Err(JoinError::Refused { status, .. }) => {
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
            assert!(
                status.message().contains("expired at"),
                "{}",
                status.message()
            );
        }
        other => panic!("an expired token joined: {other:?}"),
    }
    let foreign = JoinToken {
        ca_hash: "0".repeat(64),
        ..JoinToken::generate(&ca.cert).expect("token")
    };
    let err = token::join(&server, &foreign, &csr)
        .await
        .expect_err("a token of another cluster");
    assert!(err.to_string().contains("hash"), "{err}");

    // A valid node token gets a node certificate, which the cluster accepts as that node's.
    let node_token: JoinToken = node_token.parse().expect("node token");
    let (key, csr) = skiff_tls::signing_request(&Holder::Node("n9".into())).expect("csr");
    let joined = token::join(&server, &node_token, &csr)
        .await
        .expect("a node joins");
    let creds = skiff_tls::Credentials {
        ca: joined.ca_pem,
        cert: joined.certificate_pem,
        key,
    };
    assert_eq!(creds.holder().expect("holder"), Holder::Node("n9".into()));
    let node_client = skiff_proto::Client::with_config(
        &cluster.endpoints(),
        skiff_proto::ClientConfig {
            tls: Some(skiff_e2e::live(&creds)),
            ..Default::default()
        },
    )
    .expect("client");
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n9"}});
    node_client
        .create_object("nodes", "", serde_json::to_vec(&node).unwrap())
        .await
        .expect("the node registers itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_prints_tokens_and_a_second_member_joins_with_one() {
    init_tracing();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (a, b) = (
        format!("127.0.0.1:{}", skiff_e2e::free_port()),
        format!("127.0.0.1:{}", skiff_e2e::free_port()),
    );
    let d1 = dir.join("one");
    let _one = control(
        dir,
        "one",
        &[
            "--init",
            "--id",
            "1",
            "--listen",
            &a,
            "--data-dir",
            d1.to_str().unwrap(),
        ],
    );
    let token_file = d1.join("token");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !token_file.exists() {
        assert!(
            Instant::now() < deadline,
            "no token: {}",
            std::fs::read_to_string(dir.join("one.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let printed = std::fs::read_to_string(dir.join("one.log")).unwrap_or_default();
    let token = std::fs::read_to_string(&token_file).expect("token");
    assert!(
        printed.contains(token.trim()),
        "the token is printed: {printed}"
    );
    let d2 = dir.join("two");
    let _two = control(
        dir,
        "two",
        &[
            "--id",
            "2",
            "--listen",
            &b,
            "--data-dir",
            d2.to_str().unwrap(),
            "--join",
            token.trim(),
            "--server",
            &a,
        ],
    );
    let admin = d1.join("admin.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = skiffctl(&admin, &["cluster", "status"]);
        let status = text(&out.stdout);
        if out.status.success() && status.contains("leader") && status.contains("follower") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member 2 did not join: {status}{}\n{}",
            text(&out.stderr),
            std::fs::read_to_string(dir.join("two.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
