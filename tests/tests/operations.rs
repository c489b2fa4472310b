//! Operating a cluster: each control member's metrics, health and readiness endpoints
//! (`skiff control --metrics-listen`), scraped as Prometheus and a load balancer's probe do.

use std::time::{Duration, Instant};

use skiff_e2e::{http_get as get, init_tracing, prometheus_samples, Cluster, MemberOptions};
use skiff_proto::Client;
use tracing::info;

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_serve_metrics_health_and_readiness_and_one_without_a_quorum_is_not_ready() {
    init_tracing();
    let mut cluster = Cluster::start(
        3,
        MemberOptions {
            metrics: true,
            ..Default::default()
        },
    );
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "scraped"}, "data": {"a": "1"}});
    cluster
        .client()
        .create_object(
            "configmaps",
            "default",
            serde_json::to_vec(&cm).expect("json"),
        )
        .await
        .expect("a write");

    info!("phase: every member is healthy and ready, and its metrics say who leads");
    let metrics = cluster.metrics.clone();
    for (id, addr) in &metrics {
        assert_eq!(get(addr, "/healthz"), (200, "ok\n".into()), "member {id}");
        wait_for(&format!("member {id} ready"), || {
            get(addr, "/readyz").0 == 200
        });
        let (code, text) = get(addr, "/metrics");
        assert_eq!(code, 200);
        let leads = if *id == leader { 1 } else { 0 };
        assert!(
            text.contains(&format!("skiff_raft_is_leader {leads}")),
            "member {id}:\n{text}"
        );
        assert!(
            text.contains(&format!("skiff_raft_leader {leader}")),
            "{text}"
        );
        assert!(text.contains("skiff_raft_term "), "{text}");
        assert!(text.contains("skiff_raft_applied_index "), "{text}");
        let samples = prometheus_samples(&text);
        for series in [
            "skiff_raft_snapshot_index",
            "skiff_raft_snapshot_bytes",
            "skiff_store_data_bytes",
            "skiff_backup_newest_timestamp_seconds",
            "skiff_raft_leader_changes_total",
            "skiff_raft_log_fsync_duration_seconds_count",
            "skiff_raft_proposal_duration_seconds_count",
            "skiff_raft_snapshot_duration_seconds_count",
            "skiff_watches_open",
        ] {
            assert!(samples.contains_key(series), "{series}: {text}");
        }
        assert!(
            samples["skiff_raft_log_fsync_duration_seconds_count"] >= 1.0,
            "every member fsyncs its log: {text}"
        );
        if *id == leader {
            assert!(
                text.contains("skiff_raft_follower_lag_entries{follower="),
                "the leader reports each follower: {text}"
            );
            assert!(
                samples["skiff_raft_proposal_duration_seconds_count"] >= 1.0,
                "the leader times its proposals: {text}"
            );
            assert!(
                text.contains("skiff_controller_queue_depth{controller=\"scheduler\"}"),
                "the scheduler's queue: {text}"
            );
        }
        // The create went through one member or another (a follower forwards it).
        if samples
            .keys()
            .any(|k| k.starts_with("skiff_api_requests_total{") && k.contains("verb=\"Create\""))
        {
            assert!(
                samples.contains_key(
                    "skiff_api_requests_total{service=\"Objects\",verb=\"Create\",kind=\"configmaps\",code=\"Ok\"}"
                ),
                "API requests by service, verb, kind and code: {text}"
            );
            assert!(
                samples.contains_key(
                    "skiff_api_request_duration_seconds_count{service=\"Objects\",verb=\"Create\",kind=\"configmaps\"}"
                ),
                "the request's latency: {text}"
            );
        }
    }
    assert_eq!(get(&metrics[&leader], "/nothing").0, 404);
    // The health service follows the member's Raft state as it changes: a moment after
    // /readyz, at most.
    for id in metrics.keys() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cluster.client_of(*id).serving().await.expect("gRPC health") {
            assert!(
                Instant::now() < deadline,
                "member {id} SERVING on the gRPC health service"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    info!("phase: the leader and one follower die: the last member says it is not ready, and why");
    let survivor = *metrics
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let other = *metrics
        .keys()
        .find(|id| **id != leader && **id != survivor)
        .expect("another follower");
    let leader_changes = |id: u64| {
        prometheus_samples(&get(&metrics[&id], "/metrics").1)["skiff_raft_leader_changes_total"]
    };
    let before = leader_changes(survivor);
    cluster.kill9(leader);
    wait_for("the survivor to count the leader's change", || {
        leader_changes(survivor) == before + 1.0
    });
    cluster.kill9(other);
    let addr = &metrics[&survivor];
    wait_for("the survivor to turn not ready", || {
        get(addr, "/readyz").0 == 503
    });
    let (_, why) = get(addr, "/readyz");
    assert!(
        why.contains("no leader") || why.contains("without a quorum"),
        "{why}"
    );
    assert_eq!(get(addr, "/healthz").0, 200, "alive all the same");
    let survivor_client = cluster.client_of(survivor);
    let deadline = Instant::now() + Duration::from_secs(10);
    while survivor_client
        .serving()
        .await
        .expect("gRPC health answers")
    {
        assert!(
            Instant::now() < deadline,
            "the survivor still SERVING on the gRPC health service"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_flags_an_unreachable_member_and_a_cluster_without_fault_tolerance() {
    init_tracing();
    let mut cluster = Cluster::start(3, MemberOptions::default());
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    cluster.client().put("/test/k", "v").await.expect("a write");
    let config = cluster.config_file();
    let healthy = skiff_e2e::skiffctl_with(&config, &["cluster", "status"]);
    let text = skiff_e2e::text(&healthy.stdout);
    assert!(
        healthy.status.success(),
        "{}",
        skiff_e2e::text(&healthy.stderr)
    );
    assert!(text.contains("DATA") && text.contains("DISK"), "{text}");
    assert!(!text.contains("unreachable"), "a healthy cluster: {text}");
    assert!(
        !text.contains("fault tolerance"),
        "a healthy cluster: {text}"
    );

    let gone = (1..=3).find(|i| *i != leader).expect("a follower");
    cluster.kill9(gone);
    let degraded = skiff_e2e::skiffctl_with(&config, &["cluster", "status"]);
    let text = skiff_e2e::text(&degraded.stdout);
    assert!(
        text.contains(&format!("warning: member {gone} is unreachable")),
        "{text}"
    );
    assert!(
        text.contains("warning: no fault tolerance: 2 of 3 voters answer"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_speaking_a_newer_raft_protocol_is_refused_naming_both_versions() {
    use skiff_proto::pb::raft_client::RaftClient;
    use skiff_proto::pb::RaftRequest;
    use skiff_proto::tls::holder::Holder;
    use skiff_proto::tls::CONTROL_SERVER_NAME;

    init_tracing();
    let cluster = Cluster::start(3, MemberOptions::default());
    cluster.wait_leader(Duration::from_secs(10)).await;
    let before = cluster.client().status().await.expect("status").term;
    // Member 2's own credentials, as a member upgraded to a future release would hold them.
    let member = cluster.issue(&Holder::Control(2));
    let vote = openraft::raft::VoteRequest::<u64> {
        vote: openraft::Vote::new(before + 5, 2),
        last_log_id: None,
    };
    let addr = cluster.members[&1].addr.clone();
    let channel = skiff_proto::transport::channel(
        &addr,
        Some(&member.client_tls(CONTROL_SERVER_NAME).expect("tls")),
    )
    .expect("channel");
    let refused = RaftClient::new(channel)
        .vote(RaftRequest {
            cluster_id: cluster.cluster_id.clone(),
            payload: bincode::serialize(&vote).expect("encode"),
            protocol: skiff_raft::versions::RAFT_PROTOCOL + 1,
        })
        .await
        .expect_err("a newer protocol");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("protocol 2") && refused.message().contains("protocol 1"),
        "{}",
        refused.message()
    );
    let after = cluster.client().status().await.expect("status").term;
    assert_eq!(after, before, "the vote was not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_compact_snapshots_every_member_and_purges_its_log() {
    init_tracing();
    let cluster = Cluster::start(3, MemberOptions::default());
    cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client();
    // One entry per write: more than the 1,000 entries a purge keeps behind a snapshot.
    for i in 0..1_500 {
        client
            .put(format!("compact/{i}"), vec![b'c'; 1024])
            .await
            .expect("a write");
    }
    let config = cluster.config_file();
    let out = skiff_e2e::skiffctl_with(&config, &["cluster", "compact"]);
    let table = skiff_e2e::text(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        skiff_e2e::text(&out.stderr)
    );
    info!("{table}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "a row per member:\n{table}");
    for id in 1..=3u64 {
        let st = Client::status_of(&cluster.members[&id].addr, cluster.credentials())
            .await
            .expect("status");
        assert!(
            st.snapshot_index >= 1_500,
            "member {id}'s snapshot covers the writes: {st:?}"
        );
        assert!(
            st.purged_index >= 500,
            "member {id}'s log is purged behind it: {st:?}"
        );
    }
    let kvs = client
        .range(skiff_proto::pb::RangeRequest {
            key: b"compact/".to_vec(),
            prefix: true,
            ..Default::default()
        })
        .await
        .expect("read")
        .kvs;
    assert_eq!(kvs.len(), 1_500, "nothing lost");
}
