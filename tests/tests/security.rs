//! Mutual TLS as a stranger meets it, against a `skiff up` cluster: a plaintext client, a
//! client without a certificate, one with a certificate of another CA and one with an expired
//! certificate of the cluster's own CA are each refused by the control nodes and by the node
//! agent, and nothing in the store changes. A holder of a valid certificate that is not a
//! member cannot cast a Raft vote (the term stays), nor call an agent directly. Certificates
//! are renewed before they expire, without a restart.

use std::path::{Path, PathBuf};
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

/// A client of `endpoints` holding the admin's credentials.
fn admin_client(endpoints: &[String], admin: &Credentials) -> Client {
    Client::with_config(
        endpoints,
        ClientConfig {
            tls: Some(skiff_e2e::live(admin)),
            ..Default::default()
        },
    )
    .expect("client")
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

/// A `skiff up` with `flags` in a folder of its own: the folder (kept while the test runs),
/// its path, the first port, and the running `skiff up`.
async fn up_with(flags: &'static [&'static str]) -> (tempfile::TempDir, PathBuf, u16, Up) {
    require_system_parts();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = std::fs::canonicalize(tmp.path()).expect("canonical dir");
    let base = free_base_port(&[]);
    let up = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || Up::start_with(&dir, base, "up.log", flags)
    })
    .await
    .expect("skiff up");
    (tmp, dir, base, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_by_control_nodes_and_agents_and_nothing_changes() {
    let (_tmp, dir, base, _up) = up_with(&[]).await;
    let endpoints: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let agent = format!("127.0.0.1:{}", base + 3);
    let admin = admin_of(&dir);
    let ca = ClusterCa::load(&dir.join(".skiff/pki"))
        .expect("read the CA")
        .expect("skiff up made a CA");
    let client = admin_client(&endpoints, &admin);
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
    // The standard gRPC health service answers on the agent's port, SERVING once the agent
    // knows its pods.
    let channel = transport::channel(
        &agent,
        Some(&admin.client_tls(NODE_SERVER_NAME).expect("tls")),
    )
    .expect("channel");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "skiff.v1.NodeAgent".into(),
            })
            .await
            .expect("the agent's health")
            .into_inner()
            .status;
        if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent is not SERVING: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A valid user certificate is still not a control node's: the agent refuses it too.
    let exec = exec_on(
        &agent,
        Some(&admin.client_tls(NODE_SERVER_NAME).expect("tls")),
    )
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
        let channel = transport::channel(
            e,
            Some(&admin.client_tls(CONTROL_SERVER_NAME).expect("tls")),
        )
        .expect("channel");
        let forged = RaftClient::new(channel)
            .vote(RaftRequest {
                cluster_id: cluster_id.clone(),
                payload: bincode::serialize(&vote).expect("encode"),
                protocol: 1,
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

/// The certificate (DER) the server at `addr` presents to `client`, which expects
/// `server_name`; the handshake itself checks that it is of the CA and valid now.
async fn presented(addr: &str, server_name: &str, client: &Credentials) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(client.ca.as_bytes()).map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    let cert = CertificateDer::from_pem_slice(client.cert.as_bytes()).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(client.key.as_bytes()).map_err(|e| e.to_string())?;
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let (_, session) = tls.get_ref();
    session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| format!("{addr} presented no certificate"))
}

/// The `skiff` processes (control nodes, the agent) in process group `group`.
fn skiff_processes(group: nix::unistd::Pid) -> std::collections::BTreeSet<i32> {
    let mut found = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The fields after the command's closing parenthesis: state, ppid, pgrp.
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|p| p.parse::<i32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
        let is_skiff = args.next().is_some_and(|a| a.ends_with("/skiff"));
        let role = args.next().unwrap_or_default();
        if pgrp == Some(group.as_raw()) && is_skiff && (role == "control" || role == "node") {
            found.insert(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_before_they_expire_without_a_restart() {
    let validity = Duration::from_secs(30);
    let (_tmp, dir, base, up) = up_with(&["--cert-validity", "30s"]).await;
    let endpoints: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let agent = format!("127.0.0.1:{}", base + 3);
    let admin = admin_of(&dir);
    let servers: Vec<(&str, &str)> = endpoints
        .iter()
        .map(|e| (e.as_str(), CONTROL_SERVER_NAME))
        .chain([(agent.as_str(), NODE_SERVER_NAME)])
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut first = Vec::new();
    for (addr, name) in &servers {
        // The agent listens once it has registered.
        let cert = loop {
            match presented(addr, name, &admin).await {
                Ok(cert) => break cert,
                Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        first.push(cert);
    }
    let processes = skiff_processes(up.group);
    assert_eq!(processes.len(), 4, "three control nodes and an agent");

    // Past the first certificates' end (they were issued before they were first seen).
    tokio::time::sleep(validity + Duration::from_secs(5)).await;

    for ((addr, name), before) in servers.iter().zip(&first) {
        let now = presented(addr, name, &admin)
            .await
            .unwrap_or_else(|e| panic!("{addr} after its first certificate expired: {e}"));
        assert_ne!(&now, before, "{addr} presents a renewed certificate");
    }
    // A new connection from a control node to the agent: both ends present renewed
    // certificates, or the import is refused in the handshake.
    let archive = dir.join("busybox.tar");
    std::fs::write(
        &archive,
        skiff_e2e::node_env::image::OciImage::busybox("renewal")
            .archive("example.test/renewal/busybox:1"),
    )
    .expect("archive");
    let import = std::process::Command::new(skiff_e2e::binary("skiffctl"))
        .args([
            "image",
            "import",
            archive.to_str().expect("path"),
            "--node",
            "local",
        ])
        .env("SKIFFCONFIG", dir.join(".skiff/config.json"))
        .output()
        .expect("skiffctl");
    assert!(
        import.status.success(),
        "{}{}",
        String::from_utf8_lossy(&import.stdout),
        String::from_utf8_lossy(&import.stderr)
    );
    // Writes still commit, and the agent still renews its lease.
    let client = admin_client(&endpoints, &admin);
    client
        .put("/renewal/marker", b"written".to_vec())
        .await
        .expect("a write after every first certificate expired");
    let lease = |v: serde_json::Value| v.pointer("/spec/renewTime").cloned();
    let before = lease(skiff_e2e::object_json(&client, "leases", "skiff-system", "local").await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = lease(skiff_e2e::object_json(&client, "leases", "skiff-system", "local").await);
    assert!(
        before.is_some() && after != before,
        "the agent's lease is renewed: {before:?} {after:?}"
    );
    assert_eq!(
        skiff_processes(up.group),
        processes,
        "no control node or agent was restarted"
    );
}
