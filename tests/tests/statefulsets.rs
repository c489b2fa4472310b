//! End-to-end test of a StatefulSet with persistent volumes on a real node agent: a
//! three-node control plane, containerd and `skiff node` in a test host. Pods come up in
//! order, find each other by their stable DNS names, keep their data on `local-path`
//! volumes across a pod's deletion and a scale down and up, and a claim's folder goes with
//! its volume.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use skiff_e2e::node_env::image::OciImage;
use skiff_e2e::node_env::require_system_parts;
use skiff_e2e::node_env::world::{ok, skiffctl, wait_until, world};
use skiff_proto::objects::Api;
use tracing::info;

fn manifest(image: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: None
  selector:
    app: web
  ports:
  - port: 80
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "[ -f /data/ordinal ] || hostname > /data/ordinal; date >> /data/starts; exec sleep 3600"]
        volumeMounts:
        - name: data
          mountPath: /data
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 64Mi
"#
    )
}

fn exec(w: &skiff_e2e::node_env::world::World, pod: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", pod, "--timeout", "10", "--"];
    args.extend_from_slice(cmd);
    ok(&skiffctl(&w.cluster, &args, None)).trim().to_string()
}

fn ready_since(p: &Pod) -> Option<i64> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0.as_millisecond())
}

async fn ready_pods(pods: &Api<Pod>) -> Vec<Pod> {
    let (list, _) = pods.list("app=web", "").await.unwrap_or_default();
    list.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && ready_since(p).is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_set_keeps_names_and_data_across_deletes_and_scaling() {
    require_system_parts();
    let w = world(&[]).await;
    let client = w.cluster.client();
    let image = w
        .registry
        .push(&OciImage::busybox("sts"), "skiff/busybox", "1");
    let pods: Api<Pod> = Api::new(client.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::new(client.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::new(client.clone(), "");

    info!("phase: three pods come up in order, each on its own claim");
    ok(&skiffctl(
        &w.cluster,
        &["apply", "-f", "-"],
        Some(&manifest(&image)),
    ));
    let out = ok(&skiffctl(
        &w.cluster,
        &["rollout", "status", "statefulset/web", "--timeout", "120s"],
        None,
    ));
    assert!(out.contains("successfully rolled out"), "{out}");
    let mut all = ready_pods(&pods).await;
    all.sort_by_key(|p| p.metadata.name.clone());
    let names: Vec<String> = all.iter().filter_map(|p| p.metadata.name.clone()).collect();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    for pair in all.windows(2) {
        let made = pair[1]
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond() / 1000)
            .unwrap_or(0);
        let before_ready = ready_since(&pair[0]).unwrap_or(i64::MAX) / 1000;
        assert!(
            made >= before_ready,
            "{:?} was made before {:?} was ready",
            pair[1].metadata.name,
            pair[0].metadata.name
        );
    }
    for i in 0..3 {
        let claim = claims.get(&format!("data-web-{i}")).await.expect("claim");
        let status = claim.status.unwrap_or_default();
        assert_eq!(status.phase.as_deref(), Some("Bound"), "data-web-{i}");
        assert_eq!(
            exec(&w, &format!("web-{i}"), &["cat", "/data/ordinal"]),
            format!("web-{i}")
        );
    }
    let described = ok(&skiffctl(&w.cluster, &["describe", "pod", "web-0"], None));
    assert!(
        described.contains("Scheduled")
            && described.contains("Successfully assigned default/web-0 to n1"),
        "{described}"
    );
    let listed = ok(&skiffctl(&w.cluster, &["get", "pvc"], None));
    assert!(
        listed.contains("data-web-2") && listed.contains("local-path"),
        "{listed}"
    );

    info!("phase: each pod finds its peers by their stable names");
    for i in 0..3 {
        for j in (0..3).filter(|j| *j != i) {
            let name = format!("web-{j}.web.default.svc.cluster.local");
            let ip = all[j]
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            let answer = exec(&w, &format!("web-{i}"), &["nslookup", "-type=a", &name]);
            assert!(answer.contains(&ip), "web-{i} resolving {name}: {answer}");
        }
    }

    info!("phase: a deleted pod comes back with the same claim and data");
    let old_uid = all[1].metadata.uid.clone();
    ok(&skiffctl(&w.cluster, &["delete", "pod", "web-1"], None));
    wait_until(Duration::from_secs(60), "web-1 back and ready", || async {
        ready_pods(&pods)
            .await
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("web-1") && p.metadata.uid != old_uid)
    })
    .await;
    assert_eq!(exec(&w, "web-1", &["cat", "/data/ordinal"]), "web-1");
    assert_eq!(
        exec(&w, "web-1", &["grep", "-c", "", "/data/starts"])
            .split_whitespace()
            .next(),
        Some("2")
    );

    info!("phase: scaled to 1 (the highest ordinal first) and back to 3, the data stays");
    ok(&skiffctl(
        &w.cluster,
        &["scale", "sts/web", "--replicas", "1"],
        None,
    ));
    let mut gone_order: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while gone_order.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "web-1 and web-2 not gone: {gone_order:?}"
        );
        let (list, _) = pods.list("app=web", "").await.unwrap_or_default();
        for name in ["web-2", "web-1"] {
            let present = list
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(name));
            if !present && !gone_order.iter().any(|n| n == name) {
                gone_order.push(name.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gone_order, ["web-2", "web-1"], "removed in reverse order");
    for i in 1..3 {
        assert!(
            claims.get(&format!("data-web-{i}")).await.is_ok(),
            "data-web-{i} kept"
        );
    }
    ok(&skiffctl(
        &w.cluster,
        &["scale", "sts/web", "--replicas", "3"],
        None,
    ));
    ok(&skiffctl(
        &w.cluster,
        &["rollout", "status", "sts/web", "--timeout", "120s"],
        None,
    ));
    for (i, starts) in [(1, "3"), (2, "2")] {
        let pod = format!("web-{i}");
        assert_eq!(exec(&w, &pod, &["cat", "/data/ordinal"]), pod);
        let lines = exec(&w, &pod, &["grep", "-c", "", "/data/starts"]);
        assert_eq!(lines.split_whitespace().next(), Some(starts), "{pod}");
    }

    info!("phase: a claim in use stays until its pod is gone; then its volume and folder go");
    let claim = claims.get("data-web-2").await.expect("claim");
    let volume = claim
        .spec
        .and_then(|s| s.volume_name)
        .expect("bound claim names its volume");
    let folder = volumes
        .get(&volume)
        .await
        .ok()
        .and_then(|v| v.spec?.host_path.map(|h| h.path))
        .expect("a local-path volume is a host folder");
    assert!(std::path::Path::new(&folder).is_dir(), "{folder}");
    ok(&skiffctl(
        &w.cluster,
        &["delete", "pvc", "data-web-2"],
        None,
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = claims
        .get("data-web-2")
        .await
        .expect("protected claim stays");
    assert!(held.metadata.deletion_timestamp.is_some());
    ok(&skiffctl(
        &w.cluster,
        &["scale", "sts/web", "--replicas", "2"],
        None,
    ));
    wait_until(
        Duration::from_secs(60),
        "claim, volume and folder gone",
        || async {
            claims.get("data-web-2").await.is_err()
                && volumes.get(&volume).await.is_err()
                && !std::path::Path::new(&folder).exists()
        },
    )
    .await;
    assert!(claims.get("data-web-1").await.is_ok(), "other claims stay");
}
