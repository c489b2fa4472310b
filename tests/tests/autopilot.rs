//! The leader's autopilot with real members: a new member becomes a voter only after keeping
//! up for `--member-stabilization`; a voter dead past `--dead-member-timeout` is removed once
//! its replacement has joined; the dead member's data directory is refused when it comes back.

use std::time::{Duration, Instant};

use skiff_e2e::{init_tracing, Cluster, MemberOptions};
use skiff_proto::pb;
use skiff_proto::{Client, ClientConfig};
use tracing::info;

fn opts(args: &[&str]) -> MemberOptions {
    MemberOptions {
        extra_args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn patient(cluster: &Cluster, endpoints: &[String]) -> Client {
    Client::with_config(
        endpoints,
        ClientConfig {
            call_deadline: Duration::from_secs(60),
            ..cluster.client_config()
        },
    )
    .expect("client")
}

/// Member `id` as the leader lists it: `Some(voter?)`, or `None` when not a member.
fn membership(list: &pb::MemberListResponse, id: u64) -> Option<bool> {
    list.members.iter().find(|m| m.id == id).map(|m| m.voter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_member_is_promoted_only_after_keeping_up_for_the_stabilization_time() {
    init_tracing();
    let mut cluster = Cluster::start(3, opts(&["--member-stabilization", "2s"]));
    cluster.wait_leader(Duration::from_secs(10)).await;
    let client = patient(&cluster, &cluster.endpoints());
    for i in 0..50 {
        client.put(format!("k/{i}"), "v").await.expect("a write");
    }
    let addr = cluster.start_joiner(4, MemberOptions::default());
    let adding = {
        let client = client.clone();
        tokio::spawn(async move { client.member_add(4, &addr, true).await })
    };

    info!("the member caught up and is a learner; it stops answering (SIGSTOP)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while membership(&client.members().await.expect("members"), 4) != Some(false) {
        assert!(Instant::now() < deadline, "member 4 never became a learner");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.pause(4, true);
    let paused_at = Instant::now();
    while paused_at.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            membership(&client.members().await.expect("members"), 4),
            Some(false),
            "a member that stopped answering was promoted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    info!("it answers again: promoted once it has kept up for 2 s");
    cluster.pause(4, false);
    let resumed_at = Instant::now();
    let added = adding.await.expect("add task").expect("member 4 added");
    let took = resumed_at.elapsed();
    info!(?took, "promoted after resuming");
    assert_eq!(membership(&added, 4), Some(true), "member 4 is a voter");
    assert!(
        took >= Duration::from_secs(2),
        "promoted {took:?} after it resumed; it had to keep up for 2 s first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_member_is_removed_once_its_replacement_joins_and_its_data_is_refused_after() {
    init_tracing();
    let mut cluster = Cluster::start(3, opts(&["--dead-member-timeout", "3s"]));
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let dead = (1..=3).find(|id| *id != leader).expect("a follower");
    let live: Vec<String> = cluster
        .members
        .values()
        .filter(|m| m.id != dead)
        .map(|m| m.addr.clone())
        .collect();
    let client = patient(&cluster, &live);
    client.put("before", "1").await.expect("a write");

    info!(dead, "kill -9 of a follower, for good");
    cluster.kill9(dead);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let list = client.members().await.expect("members");
    assert_eq!(
        membership(&list, dead),
        Some(true),
        "a dead member of three voters stays until its replacement has joined"
    );

    info!("the replacement joins: the only thing the operator does");
    let addr = cluster.start_joiner(4, MemberOptions::default());
    client
        .member_add(4, &addr, true)
        .await
        .expect("member 4 added");
    let deadline = Instant::now() + Duration::from_secs(20);
    let list = loop {
        let list = client.members().await.expect("members");
        if membership(&list, dead).is_none() {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "dead member {dead} was not removed: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let voters: Vec<u64> = list
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    assert_eq!(voters.len(), 3, "back to three voters: {voters:?}");
    assert!(voters.contains(&4));
    client.put("after", "2").await.expect("writes go on");

    info!("the dead member comes back with its old data directory: refused");
    cluster.restart(dead);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = cluster.exit_status(dead) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the removed member kept running:\n{}",
            cluster.log_of(dead)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "it exits with an error");
    let log = cluster.log_of(dead);
    assert!(
        log.contains(&format!("member {dead} was removed from cluster"))
            && log.contains("wipe it and join again"),
        "the log says what happened and what to do:\n{log}"
    );
    let list = client.members().await.expect("members");
    assert!(
        membership(&list, dead).is_none(),
        "and it did not get back in"
    );
    assert_eq!(
        client
            .range(pb::RangeRequest {
                key: b"after".to_vec(),
                ..Default::default()
            })
            .await
            .expect("read")
            .kvs
            .len(),
        1
    );
}
