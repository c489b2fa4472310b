//! Faults, injected on a schedule drawn from the run's seed.

use rand::rngs::StdRng;
use rand::Rng;
use serde::Serialize;
use skiff_proto::Client;

use crate::cluster::ChaosCluster;
use crate::net::TestNet;

/// A named scenario: which faults it injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// `kill -9` of the leader, then restart.
    KillLeader,
    /// `kill -9` of a follower, then restart.
    KillFollower,
    /// `kill -9` of a random node, then restart.
    KillRandom,
    /// SIGSTOP of the leader, then SIGCONT: the stale-read-after-pause class.
    PauseLeader,
    /// The leader cut off from the other nodes by nftables drop rules.
    PartitionLeader,
    /// A random minority/majority split.
    PartitionMinority,
    /// A bridge: two halves that cannot see each other, one node that sees both.
    PartitionBridge,
    /// Random packet loss (nftables `numgen random`) on every node.
    PacketLoss,
    /// Every node killed at once, then restarted.
    KillAll,
    /// A minority partition switched on and off every few hundred milliseconds.
    PartitionFlapping,
    /// A follower removed from the membership, wiped, and added back (learner, then voter)
    /// while the leader is killed in the middle of it.
    MembershipChange,
    /// Latency between hosts through the suite's TCP delay proxy: every link 10-100 ms, or
    /// the leader's links 200-600 ms (a slow leader).
    Delay,
    /// History compaction running all the time (the nodes keep 500 revisions), while the
    /// leader is `kill -9`ed or paused: watchers resume around compacted revisions.
    Compaction,
    /// Power cut of one node (a minority): `kill -9`, and its unsynced writes are dropped by
    /// the power-cut filesystem under its data directory.
    PowerCutMinority,
    /// Power cut of every node at once: an acknowledged write that was not durable is lost.
    PowerCutAll,
    /// Leadership handed to a random voter (`transfer-leader`), then the new leader stopped
    /// with SIGTERM (it hands over again as it stops): the planned moves of a rolling restart.
    HandOver,
}

impl Scenario {
    /// Every scenario.
    pub fn all() -> Vec<Scenario> {
        use clap::ValueEnum;
        Scenario::value_variants().to_vec()
    }

    /// Whether the data directories must be power-cut filesystems.
    pub fn uses_power_cut(&self) -> bool {
        matches!(self, Scenario::PowerCutMinority | Scenario::PowerCutAll)
    }

    /// Flags the scenario adds to every `skiff control`.
    pub fn node_args(&self) -> Vec<String> {
        match self {
            Scenario::Compaction => vec!["--history-revisions".into(), "500".into()],
            _ => Vec::new(),
        }
    }

    /// Its command-line name.
    pub fn name(&self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// One injected fault, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// µs since the run started.
    pub at_us: u64,
    /// What was done.
    pub what: String,
}

/// Find the leader among running nodes.
pub async fn leader(cluster: &ChaosCluster) -> Option<u8> {
    for n in &cluster.nodes {
        if !cluster.is_up(n.id) {
            continue;
        }
        if let Ok(Ok(st)) = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            Client::status_of(&n.addr, Some(cluster.credentials())),
        )
        .await
        {
            if st.leader != 0 {
                return u8::try_from(st.leader).ok();
            }
        }
    }
    None
}

fn drop_from(net: &TestNet, peers: &[u8]) -> Vec<String> {
    peers
        .iter()
        .map(|p| format!("ip saddr {} drop", net.addr(*p)))
        .collect()
}

/// Inject one fault of `scenario`; returns what was done.
pub async fn inject(
    scenario: Scenario,
    rng: &mut StdRng,
    net: &TestNet,
    cluster: &mut ChaosCluster,
) -> anyhow::Result<String> {
    let ids: Vec<u8> = (1..=net.hosts).collect();
    let leader = leader(cluster).await;
    let pick = |rng: &mut StdRng| ids[rng.gen_range(0..ids.len())];
    Ok(match scenario {
        Scenario::KillLeader => {
            let id = leader.unwrap_or_else(|| pick(rng));
            cluster.kill9(id);
            format!("kill -9 leader {id}")
        }
        Scenario::KillFollower => {
            let followers: Vec<u8> = ids.iter().copied().filter(|i| Some(*i) != leader).collect();
            let id = followers[rng.gen_range(0..followers.len())];
            cluster.kill9(id);
            format!("kill -9 follower {id}")
        }
        Scenario::KillRandom => {
            let id = pick(rng);
            cluster.kill9(id);
            format!("kill -9 node {id}")
        }
        Scenario::PauseLeader => {
            let id = leader.unwrap_or_else(|| pick(rng));
            cluster.pause(id, true);
            format!("SIGSTOP leader {id}")
        }
        Scenario::PartitionLeader => {
            let id = leader.unwrap_or_else(|| pick(rng));
            let others: Vec<u8> = ids.iter().copied().filter(|i| *i != id).collect();
            net.set_rules(id, &drop_from(net, &others))?;
            for o in &others {
                net.set_rules(*o, &drop_from(net, &[id]))?;
            }
            format!("isolate leader {id}")
        }
        Scenario::PartitionMinority => {
            let id = pick(rng);
            let others: Vec<u8> = ids.iter().copied().filter(|i| *i != id).collect();
            net.set_rules(id, &drop_from(net, &others))?;
            for o in &others {
                net.set_rules(*o, &drop_from(net, &[id]))?;
            }
            format!("split {{{id}}} from {others:?}")
        }
        Scenario::PartitionBridge => {
            // With three nodes: a and b cannot see each other; c sees both.
            let mut v = ids.clone();
            let c = v.remove(rng.gen_range(0..v.len()));
            let (a, b) = (v[0], v[1]);
            net.set_rules(a, &drop_from(net, &[b]))?;
            net.set_rules(b, &drop_from(net, &[a]))?;
            format!("bridge: {a} and {b} apart, {c} sees both")
        }
        Scenario::PacketLoss => {
            let pct = rng.gen_range(10..40);
            for i in &ids {
                let peers: Vec<String> = ids
                    .iter()
                    .filter(|p| *p != i)
                    .map(|p| net.addr(*p))
                    .collect();
                net.set_rules(
                    *i,
                    &[format!(
                        "ip saddr {{ {} }} numgen random mod 100 < {pct} drop",
                        peers.join(", ")
                    )],
                )?;
            }
            format!("{pct}% packet loss between nodes")
        }
        Scenario::Delay => {
            let Some(proxy) = &cluster.delay else {
                anyhow::bail!("the delay scenario needs the delay proxy");
            };
            let slow = if rng.gen_bool(0.5) { leader } else { None };
            let mut shown = Vec::new();
            for from in &ids {
                for to in ids.iter().filter(|t| *t != from) {
                    let ms = match slow {
                        Some(l) if l == *from || l == *to => rng.gen_range(200..600),
                        Some(_) => 0,
                        None => rng.gen_range(10..100),
                    };
                    let from_ip = net.addr(*from).parse()?;
                    proxy.set(from_ip, *to, std::time::Duration::from_millis(ms));
                    shown.push(format!("{from}->{to} {ms}ms"));
                }
            }
            for id in &ids {
                net.set_delay(*id, crate::cluster::PORT, proxy.base_port)?;
            }
            let relayed = proxy.relayed();
            match slow {
                Some(l) => format!(
                    "slow leader {l}: {} ({relayed} connections relayed before)",
                    shown.join(", ")
                ),
                None => format!(
                    "delays: {} ({relayed} connections relayed before)",
                    shown.join(", ")
                ),
            }
        }
        Scenario::Compaction => {
            let id = leader.unwrap_or_else(|| pick(rng));
            if rng.gen_bool(0.5) {
                cluster.kill9(id);
                format!("compaction running; kill -9 leader {id}")
            } else {
                cluster.pause(id, true);
                format!("compaction running; SIGSTOP leader {id}")
            }
        }
        Scenario::PowerCutMinority => {
            let id = pick(rng);
            let lost = cluster.power_cut(&[id]);
            format!("power cut of node {id} ({lost} files lost unsynced data)")
        }
        Scenario::PowerCutAll => {
            let lost = cluster.power_cut(&ids);
            format!("power cut of every node ({lost} files lost unsynced data)")
        }
        Scenario::KillAll => {
            for id in &ids {
                cluster.kill9(*id);
            }
            "kill -9 of every node".to_string()
        }
        Scenario::PartitionFlapping => {
            let id = pick(rng);
            let others: Vec<u8> = ids.iter().copied().filter(|i| *i != id).collect();
            let flips = rng.gen_range(4..10);
            for flip in 0..flips {
                if flip % 2 == 0 {
                    net.set_rules(id, &drop_from(net, &others))?;
                    for o in &others {
                        net.set_rules(*o, &drop_from(net, &[id]))?;
                    }
                } else {
                    for i in &ids {
                        net.clear_rules(*i);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(rng.gen_range(100..400))).await;
            }
            format!("flapping partition of {{{id}}}: {flips} flips")
        }
        Scenario::HandOver => {
            let others: Vec<u8> = ids.iter().copied().filter(|i| Some(*i) != leader).collect();
            let to = others[rng.gen_range(0..others.len())];
            let admin = admin_client(cluster, &ids)?;
            let moved = match admin.transfer_leader(Some(u64::from(to))).await {
                Ok(r) => format!("leadership handed to {to} (now {})", r.leader),
                Err(e) => format!("leadership not handed to {to}: {e}"),
            };
            let now = self::leader(cluster).await.unwrap_or(to);
            cluster.stop(now);
            format!("{moved}; leader {now} stopped with SIGTERM")
        }
        Scenario::MembershipChange => {
            let followers: Vec<u8> = ids.iter().copied().filter(|i| Some(*i) != leader).collect();
            let id = followers[rng.gen_range(0..followers.len())];
            let others: Vec<u8> = ids.iter().copied().filter(|i| *i != id).collect();
            let admin = admin_client(cluster, &others)?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                match admin.member_remove(u64::from(id)).await {
                    Ok(_) => break,
                    // The removal took effect but its answer was lost.
                    Err(_) if membership_of(&admin, id).await == Some(None) => break,
                    Err(e) if std::time::Instant::now() > deadline => return Err(e.into()),
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            }
            cluster.replace_with_empty(net, id)?;
            let addr = cluster
                .nodes
                .iter()
                .find(|n| n.id == id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            // The fault within the fault: the leader dies while the member is re-added.
            let kill_leader = rng.gen_bool(0.5);
            let add = admin.member_add(u64::from(id), &addr, true);
            let mut killed = None;
            if kill_leader {
                tokio::time::sleep(std::time::Duration::from_millis(rng.gen_range(50..300))).await;
                if let Some(l) = self::leader(cluster).await.filter(|l| *l != id) {
                    cluster.kill9(l);
                    killed = Some(l);
                }
            }
            let victim = killed;
            let mut result = add.await;
            // A change cut short by the leader's death is finished by the next leader; until
            // then a new change is refused ("already undergoing a configuration change"), so
            // keep trying for a while rather than give up.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                if result.is_ok() {
                    break;
                }
                // The addition took effect but its answer was lost.
                if membership_of(&admin, id).await == Some(Some(true)) {
                    result = admin.members().await;
                    break;
                }
                if let Some(l) = killed.take() {
                    cluster.restart(net, l)?;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                // It may already be a learner from the attempt that was cut short.
                result = match admin.member_add(u64::from(id), &addr, true).await {
                    Ok(r) => Ok(r),
                    Err(_) => admin.member_promote(u64::from(id)).await,
                };
            }
            result?;
            match victim {
                Some(l) => {
                    format!("member {id} removed, wiped and re-added; leader {l} killed meanwhile")
                }
                None => format!("member {id} removed, wiped and re-added"),
            }
        }
    })
}

/// Member `id` as the leader sees it: `Some(None)` if not a member, `Some(Some(voter))` if
/// one, `None` if the list could not be had.
async fn membership_of(admin: &Client, id: u8) -> Option<Option<bool>> {
    let list = admin.members().await.ok()?;
    Some(
        list.members
            .iter()
            .find(|m| m.id == u64::from(id))
            .map(|m| m.voter),
    )
}

/// An admin client of the members `ids`, patient enough to ride out an election.
fn admin_client(cluster: &ChaosCluster, ids: &[u8]) -> anyhow::Result<Client> {
    let addrs: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| ids.contains(&n.id))
        .map(|n| n.addr.clone())
        .collect();
    Ok(Client::with_config(
        &addrs,
        skiff_proto::ClientConfig {
            call_deadline: std::time::Duration::from_secs(20),
            tls: Some(cluster.client_tls().clone()),
            ..Default::default()
        },
    )?)
}

/// Undo every fault: rules removed, paused nodes resumed, killed nodes restarted.
pub fn heal(net: &TestNet, cluster: &mut ChaosCluster) -> anyhow::Result<()> {
    for i in 1..=net.hosts {
        net.clear_rules(i);
    }
    if let Some(d) = &cluster.delay {
        d.reset();
    }
    cluster.heal(net)
}
