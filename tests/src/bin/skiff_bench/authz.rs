//! `skiff-bench authz`: what the role check costs object creates. Each round starts two
//! fresh three-member clusters over mutual TLS, one enforcing roles (the default) and one with
//! `--authorization always-allow`, in alternating order, and creates ~1 KiB pods in each as
//! an `edit` user (the full path: certificate, User lookup, rules) and as the admin (the
//! group fast path); ratios are paired within each round, then their median is reported.

use std::time::Duration;

use serde_json::json;
use skiff_e2e::{Cluster, MemberOptions};
use skiff_proto::tls::holder::Holder;

use super::median;
use super::objects::{create_load, create_load_as, Rate};

#[derive(clap::Args, Clone)]
pub struct AuthzArgs {
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Rounds (each a pair of fresh clusters).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
}

/// Creates/s in a fresh cluster: (as the editor, as the admin).
async fn measure(args: &AuthzArgs, enforce: bool, round: usize) -> anyhow::Result<(Rate, Rate)> {
    let mode = if enforce { "roles" } else { "always-allow" };
    let cluster = Cluster::start(
        3,
        MemberOptions {
            // The per-user rate limit would measure itself: off on both sides.
            extra_args: vec![
                "--authorization".into(),
                mode.into(),
                "--user-requests-per-second".into(),
                "0".into(),
            ],
            ..Default::default()
        },
    );
    cluster.wait_leader(Duration::from_secs(20)).await;
    let admin = cluster.client();
    super::wait_for_default_namespace(&admin).await;
    let user = json!({"apiVersion": "auth.skiff.dev/v1", "kind": "User",
                      "metadata": {"name": "bench-editor"}, "spec": {"role": "edit"}});
    admin
        .create_object("users", "", serde_json::to_vec(&user)?)
        .await?;
    let editor = cluster.issue(&Holder::User("bench-editor".into()));
    let duration = Duration::from_secs(args.duration);
    let as_editor = create_load_as(
        &cluster,
        Some(&editor),
        args.clients,
        duration,
        false,
        round * 2,
    )
    .await?;
    let as_admin = create_load(&cluster, args.clients, duration, false, round * 2 + 1).await?;
    Ok((as_editor, as_admin))
}

pub async fn run(args: AuthzArgs) -> anyhow::Result<()> {
    println!(
        "# skiff-bench authz: object creates with roles enforced vs always-allow; 3 members on loopback, mutual TLS, fsync on, {} clients, {}s each, {} rounds",
        args.clients, args.duration, args.rounds
    );
    println!(
        "{:<6} {:<13} {:>16} {:>16} {:>8} {:>8}",
        "round", "writer", "roles writes/s", "allow writes/s", "ratio", "errors"
    );
    let (mut editor_ratios, mut admin_ratios) = (Vec::new(), Vec::new());
    let mut errors = 0;
    for round in 0..args.rounds {
        // Alternate which cluster goes first: the machine warms and cools.
        let (roles, allow) = if round % 2 == 0 {
            let r = measure(&args, true, round).await?;
            (r, measure(&args, false, round).await?)
        } else {
            let a = measure(&args, false, round).await?;
            (measure(&args, true, round).await?, a)
        };
        for (writer, on, off, ratios) in [
            ("edit user", &roles.0, &allow.0, &mut editor_ratios),
            ("admin", &roles.1, &allow.1, &mut admin_ratios),
        ] {
            let ratio = on.per_sec / off.per_sec;
            ratios.push(ratio);
            errors += on.errors + off.errors;
            println!(
                "{:<6} {:<13} {:>16.0} {:>16.0} {:>8.3} {:>8}",
                round + 1,
                writer,
                on.per_sec,
                off.per_sec,
                ratio,
                on.errors + off.errors
            );
        }
    }
    let (e, a) = (median(editor_ratios), median(admin_ratios));
    println!(
        "median paired ratio (roles ÷ always-allow): edit user {e:.3}, admin {a:.3}; target ≥ 0.95{}",
        if errors > 0 {
            format!("; {errors} FAILED CALLS")
        } else {
            String::new()
        }
    );
    Ok(())
}
