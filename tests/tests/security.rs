//! Mutual TLS as a stranger meets it, against a `skiff up` cluster: a plaintext client, a
//! client without a certificate, one with a certificate of another CA and one with an expired
//! certificate of the cluster's own CA are each refused by the control nodes and by the node
//! agent, and nothing in the store changes. A holder of a valid certificate that is not a
//! member cannot cast a Raft vote (the term stays), nor call an agent directly.

use std::path::Path;
use std::time::Duration;

use openraft::{CommittedLeaderId, LogId, Vote};

use skiff_e2e::node_env::require_system_parts;
use skiff_e2e::skiff_up::{free_base_port, Up};
use skiff_proto::config_file::ConfigFile;
use skiff_proto::pb::kv_client::KvClient;
use skiff_proto::pb::node_agent_client::NodeAgentClient;
use skiff_proto::pb::raft_client::RaftClient;
use skiff_proto::pb::{ExecRequest, PutRequest, RaftRequest};
use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::holder::{Holder, ADMIN_GROUP};
use skiff_proto::tls::{ClientTls, Credentials, CONTROL_SERVER_NAME, NODE_SERVER_NAME};
use skiff_proto::{transport, Client, ClientConfig};

/// How each stranger connects to a server known by `server_name`: `None` is plaintext.
fn strangers(ca: &ClusterCa, server_name: &str) -> Vec<(&'static str, Option<ClientTls>)> {
    let now = time::OffsetDateTime::now_utc();
    let admin = Holder::User("admin".into());
    let other_ca = ClusterCa::generate("another-cluster")
        .expect("another CA")
        .issue(&admin, &[])
        .expect("issue");
    let expired = ca
        .issue_between(
            &admin,
            &[ADMIN_GROUP],
            &[],
            now - time::Duration::days(2),
            now - time::Duration::days(1),
        )
        .expect("issue");
    vec![
        ("a plaintext client", None),
        (
            "a client without a certificate",
            Some(ClientTls::without_certificate(&ca.cert, server_name).expect("tls")),
        ),
        (
            "a client with another CA's certificate",
            Some(
                // It trusts the cluster's CA, so only its own certificate is wrong.
                Credentials {
                    ca: ca.cert.clone(),
                    ..other_ca
                }
                .client_tls(server_name)
                .expect("tls"),
            ),
        ),
        (
            "a client with an expired certificate",
            Some(expired.client_tls(server_name).expect("tls")),
        ),
    ]
}

fn admin_of(dir: &Path) -> Credentials {
    let config = ConfigFile::load(&dir.join(".skiff/config.json")).expect("client config");
    config.contexts[0]
        .credentials
        .clone()
        .expect("skiff up writes the admin's credentials")
}

/// An exec call straight to the agent at `agent` (of a pod that does not exist: only the
/// refusal, or its absence, matters).
async fn exec_on(
    agent: &str,
    tls: Option<&ClientTls>,
) -> Result<tonic::Response<skiff_proto::pb::ExecResponse>, tonic::Status> {
    let channel = transport::channel(agent, tls).expect("channel");
    NodeAgentClient::new(channel)
        .exec(ExecRequest {
            namespace: "default".into(),
            pod: "none".into(),
            command: vec!["true".into()],
            ..Default::default()
        })
        .await
}

/// Every member's term.
async fn terms(endpoints: &[String], admin: &Credentials) -> Vec<u64> {
    let mut out = Vec::new();
    for e in endpoints {
        out.push(
            Client::status_of(e, Some(admin))
                .await
                .expect("status")
                .term,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_by_control_nodes_and_agents_and_nothing_changes() {
    require_system_parts();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = std::fs::canonicalize(tmp.path()).expect("canonical dir");
    let base = free_base_port(&[]);
    let _up = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || Up::start(&dir, base, "up.log")
    })
    .await
    .expect("skiff up");
    let endpoints: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let agent = format!("127.0.0.1:{}", base + 3);
    let admin = admin_of(&dir);
    let ca = ClusterCa::load(&dir.join(".skiff/pki"))
        .expect("read the CA")
        .expect("skiff up made a CA");
    let client = Client::with_config(
        &endpoints,
        ClientConfig {
            tls: Some(skiff_e2e::live(&admin)),
            ..Default::default()
        },
    )
    .expect("client");
    client
        .put("/security/marker", "kept".as_bytes().to_vec())
        .await
        .expect("the admin writes");
    // Not even the admin writes objects through the raw kv API: they would skip validation,
    // defaults and allocations.
    let raw = client
        .put(
            "/registry/core/pods/default/forged",
            b"{\"kind\":\"Pod\"}".to_vec(),
        )
        .await
        .expect_err("a raw write into the object key space");
    assert!(
        raw.to_string().contains("/registry/") && raw.to_string().contains("reserved"),
        "{raw}"
    );
    // A certificate near its end is warned about by `skiffctl cluster status`.
    let now = time::OffsetDateTime::now_utc();
    let soon = ca
        .issue_between(
            &Holder::User("admin".into()),
            &[ADMIN_GROUP],
            &[],
            now - time::Duration::hours(1),
            now + time::Duration::days(10),
        )
        .expect("issue");
    let config = dir.join("expiring.json");
    ConfigFile::single("local", endpoints.clone(), Some(soon))
        .save(&config)
        .expect("config");
    let out = std::process::Command::new(skiff_e2e::binary("skiffctl"))
        .args(["cluster", "status"])
        .env("SKIFFCONFIG", &config)
        .output()
        .expect("skiffctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("warning: your client certificate expires in 9 days")
            || text.contains("warning: your client certificate expires in 10 days"),
        "{text}"
    );
    // The agent is up once it has registered.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client
        .get_object("nodes", "", "local", false)
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "node local never registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let terms_before = terms(&endpoints, &admin).await;
    let status = client.status().await.expect("status");
    let (revision_before, cluster_id) = (status.revision, status.cluster_id);

    for (who, tls) in strangers(&ca, CONTROL_SERVER_NAME) {
        for e in &endpoints {
            let channel = transport::channel(e, tls.as_ref()).expect("channel");
            let put = KvClient::new(channel)
                .put(PutRequest {
                    key: b"/security/marker".to_vec(),
                    value: b"stolen".to_vec(),
                    ..Default::default()
                })
                .await;
            assert!(put.is_err(), "{who} wrote through control node {e}");
        }
    }
    for (who, tls) in strangers(&ca, NODE_SERVER_NAME) {
        let exec = exec_on(&agent, tls.as_ref()).await;
        let refused = match &exec {
            Err(s) => s.code() != tonic::Code::NotFound,
            Ok(_) => false,
        };
        assert!(refused, "{who} reached the agent: {exec:?}");
    }
    // A valid user certificate is still not a control node's: the agent refuses it too.
    let exec = exec_on(&agent, Some(&admin.client_tls(NODE_SERVER_NAME).expect("tls")))
        .await
        .expect_err("a user calling the agent directly");
    assert_eq!(exec.code(), tonic::Code::PermissionDenied, "{exec:?}");
    assert!(exec.message().contains("user:admin"), "{exec:?}");

    // A forged vote for a far later term, from a holder of a valid certificate that is not a
    // member: refused before Raft sees it.
    let term = terms_before.iter().copied().max().unwrap_or(0);
    let vote = openraft::raft::VoteRequest::<u64> {
        vote: Vote::new(term + 5, 2),
        last_log_id: Some(LogId::new(CommittedLeaderId::new(term + 5, 2), 1 << 40)),
    };
    for e in &endpoints {
        let channel =
            transport::channel(e, Some(&admin.client_tls(CONTROL_SERVER_NAME).expect("tls")))
                .expect("channel");
        let forged = RaftClient::new(channel)
            .vote(RaftRequest {
                cluster_id: cluster_id.clone(),
                payload: bincode::serialize(&vote).expect("encode"),
            })
            .await
            .expect_err("a forged vote");
        assert_eq!(forged.code(), tonic::Code::PermissionDenied, "{forged:?}");
    }

    assert_eq!(
        terms(&endpoints, &admin).await,
        terms_before,
        "every member's term is unchanged"
    );
    // Meanwhile only the node's heartbeats were written.
    let revision_after = client.status().await.expect("status").revision;
    let written =
        skiff_e2e::keys_written_between(&client, "/", revision_before, revision_after).await;
    for (key, _) in written {
        assert!(
            key.starts_with("/registry/coordination.k8s.io/leases/")
                || key.starts_with("/registry/core/nodes/"),
            "{key} changed while strangers knocked"
        );
    }
    let kept = client
        .get("/security/marker", false)
        .await
        .expect("get")
        .expect("the marker");
    assert_eq!(kept.value, b"kept");
}
