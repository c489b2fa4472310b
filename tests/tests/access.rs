//! Users, roles and node credentials against a real three-member cluster over mutual TLS:
//! each role does what it is for, a refusal names who, what and which kind, and a refused
//! request changes nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_e2e::{binary, init_tracing, keys_written_between, Cluster, MemberOptions};
use skiff_proto::config_file::ConfigFile;
use skiff_proto::objects::Selection;
use skiff_proto::tls::holder::Holder;
use skiff_proto::{Client, ClientConfig, ClientError};

use skiff_e2e::{skiffctl_with as skiffctl, text};

async fn ready_cluster() -> Cluster {
    init_tracing();
    let cluster = Cluster::start(3, MemberOptions::default());
    cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .get_object("namespaces", "", "skiff-system", false)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "no built-in namespaces");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster
}

/// The leader's revision now.
async fn revision(cluster: &Cluster) -> u64 {
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let addr = cluster.endpoints()[usize::try_from(leader - 1).expect("id")].clone();
    Client::status_of(&addr, cluster.credentials())
        .await
        .expect("status")
        .revision
}

fn client_as(cluster: &Cluster, config: &Path) -> Client {
    let file = ConfigFile::load(config).expect("client config");
    let creds = file.contexts[0].credentials.clone().expect("credentials");
    Client::with_config(
        &cluster.endpoints(),
        ClientConfig {
            tls: Some(skiff_e2e::live(&creds)),
            ..Default::default()
        },
    )
    .expect("client")
}

fn refused(e: ClientError) -> String {
    match e {
        ClientError::Rejected(s) if s.code() == tonic::Code::PermissionDenied => {
            s.message().to_string()
        }
        other => panic!("expected PERMISSION_DENIED, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_what_it_is_for_and_a_refusal_changes_nothing() {
    let cluster = ready_cluster().await;
    let admin = cluster.config_file();
    let dir = cluster.dir().to_path_buf();
    let admin_client = cluster.client();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                        "stringData": {"password": "hunter2"}});
    admin_client
        .create_object("secrets", "default", serde_json::to_vec(&secret).unwrap())
        .await
        .expect("the admin writes a Secret");

    // Users are made by the admin, each with a client config of its own.
    for (name, role) in [("viewer", "view"), ("editor", "edit")] {
        let out = dir.join(format!("{name}.json"));
        let made = skiffctl(
            &admin,
            &[
                "user",
                "create",
                name,
                "--role",
                role,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(made.status.success(), "{}", text(&made.stderr));
        assert!(
            text(&made.stdout).contains(&format!("user/{name} created with role {role}")),
            "{}",
            text(&made.stdout)
        );
    }
    let bad_role = skiffctl(&admin, &["user", "create", "root", "--role", "root"]);
    assert!(!bad_role.status.success());
    assert!(
        text(&bad_role.stderr).contains("spec.role"),
        "{}",
        text(&bad_role.stderr)
    );
    let viewer_cfg = dir.join("viewer.json");
    let editor_cfg = dir.join("editor.json");
    let viewer = client_as(&cluster, &viewer_cfg);
    let editor = client_as(&cluster, &editor_cfg);

    // A viewer reads, but not Secrets, and writes nothing.
    let before = revision(&cluster).await;
    viewer
        .list_objects("configmaps", &Selection::default())
        .await
        .expect("a viewer lists ConfigMaps");
    let why = refused(
        viewer
            .get_object("secrets", "default", "db", false)
            .await
            .expect_err("a viewer reads a Secret"),
    );
    assert!(
        why.contains("user:viewer") && why.contains("get") && why.contains("secrets"),
        "{why}"
    );
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-viewer"}});
    let why = refused(
        viewer
            .create_object("configmaps", "default", serde_json::to_vec(&cm).unwrap())
            .await
            .expect_err("a viewer writes"),
    );
    assert!(
        why.contains("user:viewer") && why.contains("create") && why.contains("configmaps"),
        "{why}"
    );
    let applied = Command::new(binary("skiffctl"))
        .args(["apply", "-f", "-"])
        .env("SKIFFCONFIG", &viewer_cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(cm.to_string().as_bytes())?;
            c.wait_with_output()
        })
        .expect("skiffctl apply");
    assert!(!applied.status.success());
    assert!(
        text(&applied.stderr).contains("PERMISSION_DENIED")
            || text(&applied.stderr).contains("may not"),
        "{}",
        text(&applied.stderr)
    );

    // An editor writes namespaced objects, but not the raw kv API nor membership.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-editor"}});
    editor
        .create_object("configmaps", "default", serde_json::to_vec(&cm).unwrap())
        .await
        .expect("an editor writes a ConfigMap");
    let mid = revision(&cluster).await;
    let why = refused(
        editor
            .put("/editor/key", b"v".to_vec())
            .await
            .expect_err("an editor writes raw keys"),
    );
    assert!(why.contains("user:editor") && why.contains("kv"), "{why}");
    let why = refused(
        editor
            .member_add(9, "127.0.0.1:1", false)
            .await
            .expect_err("an editor adds a member"),
    );
    assert!(why.contains("members"), "{why}");
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "from-editor"}});
    let why = refused(
        editor
            .create_object("nodes", "", serde_json::to_vec(&node).unwrap())
            .await
            .expect_err("an editor registers a node"),
    );
    assert!(why.contains("nodes"), "{why}");
    let members = admin_client.members().await.expect("members");
    assert_eq!(members.members.len(), 3, "membership unchanged");

    // Nothing the refused requests asked for was written.
    let after = revision(&cluster).await;
    let written = keys_written_between(&admin_client, "", before, after).await;
    let from_refused: Vec<_> = written
        .iter()
        .filter(|(k, _)| {
            k.contains("from-viewer") || k.starts_with("/editor") || k.contains("nodes/from-editor")
        })
        .collect();
    assert!(from_refused.is_empty(), "{from_refused:?}");
    assert!(
        written
            .iter()
            .any(|(k, r)| k.ends_with("/configmaps/default/from-editor") && *r <= mid),
        "the editor's ConfigMap was written: {written:?}"
    );

    // can-i answers with the rule, for oneself or (as an admin) for another.
    let no = skiffctl(&viewer_cfg, &["auth", "can-i", "get", "secrets"]);
    assert_eq!(no.status.code(), Some(1));
    assert!(
        text(&no.stdout).starts_with(
            "no (user:viewer as view: view: reads every object but Secrets and join tokens)"
        ),
        "{}",
        text(&no.stdout)
    );
    let yes = skiffctl(
        &admin,
        &["auth", "can-i", "create", "deploy", "--as", "editor"],
    );
    assert!(yes.status.success(), "{}", text(&yes.stderr));
    assert!(
        text(&yes.stdout).starts_with("yes (user:editor as edit"),
        "{}",
        text(&yes.stdout)
    );
    let not_admin = skiffctl(
        &editor_cfg,
        &["auth", "can-i", "get", "pods", "--as", "viewer"],
    );
    assert!(!not_admin.status.success());
    assert!(
        text(&not_admin.stderr).contains("only admins"),
        "{}",
        text(&not_admin.stderr)
    );

    // A deleted user is a stranger at once.
    let gone = skiffctl(&admin, &["delete", "user", "viewer"]);
    assert!(gone.status.success(), "{}", text(&gone.stderr));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match viewer
            .list_objects("configmaps", &Selection::default())
            .await
        {
            Err(ClientError::Rejected(s)) if s.code() == tonic::Code::PermissionDenied => {
                assert!(s.message().contains("not a user"), "{}", s.message());
                break;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "a deleted user still reads: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_credentials_reach_only_their_own_node_and_what_its_pods_use() {
    let cluster = ready_cluster().await;
    let admin = cluster.client();
    let n1 = Client::with_config(
        &cluster.endpoints(),
        ClientConfig {
            tls: Some(skiff_e2e::live(&cluster.issue(&Holder::Node("n1".into())))),
            ..Default::default()
        },
    )
    .expect("client");
    let create = |c: &Client, resource: &'static str, ns: &'static str, v: Value| {
        let c = c.clone();
        async move {
            c.create_object(resource, ns, serde_json::to_vec(&v).unwrap())
                .await
        }
    };
    // n1 registers itself; n2 is someone else's.
    create(
        &n1,
        "nodes",
        "",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    )
    .await
    .expect("a node registers itself");
    create(
        &admin,
        "nodes",
        "",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}),
    )
    .await
    .expect("n2");
    for (name, secret) in [("on-n1", "used"), ("on-n2", "other")] {
        let node = if name == "on-n1" { "n1" } else { "n2" };
        create(
            &admin,
            "secrets",
            "default",
            json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret}, "stringData": {"k": "v"}}),
        )
        .await
        .expect("secret");
        create(&admin, "pods", "default", json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]}]}}))
        .await
        .expect("pod");
    }
    let before = revision(&cluster).await;

    // What n1 may: its pods, the Secret they use, its own Node's status.
    let own = Selection {
        fields: "spec.nodeName=n1".into(),
        ..Default::default()
    };
    let pods = n1
        .list_objects("pods", &own)
        .await
        .expect("n1 lists its pods");
    assert_eq!(pods.items.len(), 1);
    n1.get_object("secrets", "default", "used", false)
        .await
        .expect("n1 reads the Secret its pod uses");

    // What it may not.
    let mut refusals = Vec::new();
    refusals.push(
        n1.get_object("secrets", "default", "other", false)
            .await
            .expect_err("n1 reads another node's pod's Secret"),
    );
    refusals.push(
        n1.list_objects("secrets", &Selection::default())
            .await
            .expect_err("n1 lists Secrets"),
    );
    refusals.push(
        n1.list_objects("pods", &Selection::default())
            .await
            .expect_err("n1 lists every pod"),
    );
    let mut n2 = skiff_e2e::object_json(&admin, "nodes", "", "n2").await;
    n2["metadata"]["labels"] = json!({"taken": "by-n1"});
    refusals.push(
        n1.update_object("nodes", "", serde_json::to_vec(&n2).unwrap(), false)
            .await
            .expect_err("n1 changes n2's Node"),
    );
    refusals.push(
        create(
            &n1,
            "leases",
            "skiff-system",
            json!({"apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease", "metadata": {"name": "n2", "namespace": "skiff-system"}}),
        )
        .await
        .expect_err("n1 takes n2's Lease"),
    );
    let mut pod = skiff_e2e::object_json(&admin, "pods", "default", "on-n2").await;
    pod["status"] = json!({"phase": "Failed"});
    refusals.push(
        n1.update_object("pods", "default", serde_json::to_vec(&pod).unwrap(), true)
            .await
            .expect_err("n1 sets the status of n2's pod"),
    );
    refusals.push(
        n1.delete_object("pods", "default", "on-n2", &Default::default())
            .await
            .expect_err("n1 deletes n2's pod"),
    );
    refusals.push(
        create(
            &n1,
            "pods",
            "default",
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "sneaky"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        )
        .await
        .expect_err("n1 creates a pod"),
    );
    for e in refusals {
        let why = refused(e);
        assert!(why.starts_with("node:n1 (node) may not"), "{why}");
    }
    let after = revision(&cluster).await;
    let written = keys_written_between(&admin, "/registry/", before, after).await;
    let touched: Vec<_> = written
        .iter()
        .filter(|(k, _)| {
            k.ends_with("/nodes/n2")
                || k.contains("leases/skiff-system/n2")
                || k.ends_with("/on-n2")
                || k.ends_with("/sneaky")
        })
        .collect();
    assert!(touched.is_empty(), "{touched:?}");

    // can-i for a node depends on the object.
    let config = cluster.config_file();
    let yes = skiffctl(
        &config,
        &["auth", "can-i", "get", "secret", "used", "--as", "node:n1"],
    );
    assert!(yes.status.success(), "{}", text(&yes.stdout));
    let no = skiffctl(
        &config,
        &["auth", "can-i", "get", "secret", "other", "--as", "node:n1"],
    );
    assert_eq!(no.status.code(), Some(1), "{}", text(&no.stdout));
    assert!(
        text(&no.stdout).contains("no pod on node n1 uses secrets default/other"),
        "{}",
        text(&no.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_or_watch_limit_is_told_to_wait_and_admins_are_not() {
    init_tracing();
    let cluster = Cluster::start(
        3,
        MemberOptions {
            extra_args: vec![
                "--user-requests-per-second".into(),
                "5".into(),
                "--max-watches-per-user".into(),
                "2".into(),
            ],
            ..Default::default()
        },
    );
    cluster.wait_leader(Duration::from_secs(10)).await;
    let admin = cluster.client();
    let user = json!({"apiVersion": "auth.skiff.dev/v1", "kind": "User",
                      "metadata": {"name": "viewer"}, "spec": {"role": "view"}});
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin
        .create_object("users", "", serde_json::to_vec(&user).unwrap())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "no User");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One member, so every call meets the same limits.
    let one = vec![cluster.endpoints()[0].clone()];
    let viewer = Client::with_config(
        &one,
        ClientConfig {
            tls: Some(skiff_e2e::live(
                &cluster.issue(&Holder::User("viewer".into())),
            )),
            ..Default::default()
        },
    )
    .expect("client");

    // Two watches at once, not three; a closed one frees its place.
    let sel = Selection::default();
    let mut first = viewer.watch_objects("configmaps", &sel, 0);
    let mut second = viewer.watch_objects("configmaps", &sel, 0);
    for w in [&mut first, &mut second] {
        let item = tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .expect("a first item")
            .expect("open");
        assert!(item.is_ok(), "{item:?}");
    }
    let mut third = viewer.watch_objects("configmaps", &sel, 0);
    match tokio::time::timeout(Duration::from_secs(5), third.recv())
        .await
        .expect("an answer")
    {
        Some(Err(ClientError::Rejected(s))) => {
            assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
            assert!(
                s.message().contains("user:viewer has 2 watches open"),
                "{}",
                s.message()
            );
        }
        other => panic!("a third watch: {other:?}"),
    }
    drop(first);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut fourth = viewer.watch_objects("configmaps", &sel, 0);
    let item = tokio::time::timeout(Duration::from_secs(5), fourth.recv())
        .await
        .expect("a first item")
        .expect("open");
    assert!(item.is_ok(), "a closed watch frees its place: {item:?}");

    // Over five requests a second (bursts of ten), the viewer is told when to retry.
    let mut refused = Vec::new();
    for _ in 0..40 {
        if let Err(ClientError::Rejected(s)) = viewer.list_objects("configmaps", &sel).await {
            refused.push(s);
        }
    }
    assert!(refused.len() >= 20, "{} of 40 refused", refused.len());
    let s = &refused[0];
    assert_eq!(s.code(), tonic::Code::ResourceExhausted);
    assert!(s.message().contains("retry in"), "{}", s.message());
    assert!(s.metadata().get("retry-after-ms").is_some(), "a retry hint");
    // The admin is not limited.
    let admin_one = cluster.client_to(&one);
    for _ in 0..40 {
        admin_one
            .list_objects("configmaps", &sel)
            .await
            .expect("the admin is not limited");
    }
}
