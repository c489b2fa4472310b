//! End-to-end tests of pod fields the node agent carries out, on a real agent and
//! containerd: image pull secrets against a registry that needs a login, gRPC probes against
//! a server of gRPC's standard health service, postStart hooks, a pod's
//! `activeDeadlineSeconds`, resources and service links in the environment, termination
//! messages, and host ports reached from another host.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use skiff_e2e::node_env::image::OciImage;
use skiff_e2e::node_env::world::{ok, skiffctl, wait_until, world, World, LOCKED_LOGIN};
use skiff_e2e::node_env::{require_system_parts, TestHost};
use skiff_proto::objects::Api;
use skiff_proto::Client;
use tracing::info;

async fn pod(client: &Client, name: &str) -> Option<Pod> {
    Api::<Pod>::new(client.clone(), "default")
        .get(name)
        .await
        .ok()
}

fn waiting_reason(p: &Pod) -> Option<(String, String)> {
    let w = p
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .clone()?;
    Some((w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map(|c| c.restart_count)
        .unwrap_or(0)
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn apply(w: &World, manifest: &str) {
    ok(&skiffctl(&w.cluster, &["apply", "-f", "-"], Some(manifest)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_open_a_locked_registry_and_grpc_probes_ask_the_health_service() {
    require_system_parts();
    let w = world(&[]).await;
    let client = w.cluster.client();

    info!("phase: an image behind a login fails without credentials, with the reason");
    w.registry
        .push(&OciImage::busybox("locked"), "skiff/locked", "1");
    let locked = &w.locked_registry;
    let image = format!("{}/skiff/locked:1", locked.addr);
    let pod_of = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n{extra}  containers: [{{name: c, image: \"{image}\", command: [sleep, \"3600\"]}}]\n"
        )
    };
    apply(&w, &pod_of("anonymous", ""));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (reason, message) = loop {
        let got = pod(&client, "anonymous")
            .await
            .as_ref()
            .and_then(waiting_reason);
        match got {
            Some((r, m)) if r == "ErrImagePull" || r == "ImagePullBackOff" => break (r, m),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "no pull error on the anonymous pod"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lower = message.to_ascii_lowercase();
    assert!(
        lower.contains("not authorized") || lower.contains("unauthorized"),
        "{reason}: {message}"
    );

    info!("phase: the same image pulls with a kubernetes.io/dockerconfigjson Secret");
    let config = format!(
        r#"{{"auths": {{"{}": {{"username": "{}", "password": "{}"}}}}}}"#,
        locked.addr, LOCKED_LOGIN.0, LOCKED_LOGIN.1
    );
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: regcred}}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{config}'\n"
    );
    apply(&w, &secret);
    apply(
        &w,
        &pod_of("with-secret", "  imagePullSecrets: [{name: regcred}]\n"),
    );
    wait_until(
        Duration::from_secs(60),
        "the pod with the secret runs",
        || async {
            pod(&client, "with-secret")
                .await
                .is_some_and(|p| running(&p))
        },
    )
    .await;
    let events = ok(&skiffctl(
        &w.cluster,
        &["describe", "pod", "with-secret"],
        None,
    ));
    assert!(events.contains("Pulled"), "{events}");

    info!("phase: gRPC probes: a serving service passes, a not-serving one restarts its container");
    let server = skiff_e2e::binary("skiff-test-grpc-health");
    let grpc = w.registry.push(
        &OciImage::busybox_with("grpc", &[("skiff-test-grpc-health", server.as_path())]),
        "skiff/grpc-health",
        "1",
    );
    let probed = |name: &str, service: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: "{grpc}"
    command: [skiff-test-grpc-health, "9090"]
    ports: [{{containerPort: 9090}}]
    readinessProbe:
      grpc: {{port: 9090, service: ready}}
      periodSeconds: 1
    livenessProbe:
      grpc: {{port: 9090, service: {service}}}
      initialDelaySeconds: 1
      periodSeconds: 1
      failureThreshold: 2
"#
        )
    };
    apply(&w, &probed("serving", "\"\""));
    apply(&w, &probed("not-serving", "down"));
    wait_until(Duration::from_secs(60), "the serving pod ready", || async {
        pod(&client, "serving").await.is_some_and(|p| ready(&p))
    })
    .await;
    wait_until(
        Duration::from_secs(60),
        "the not-serving pod restarted",
        || async {
            pod(&client, "not-serving")
                .await
                .is_some_and(|p| restarts(&p) >= 1)
        },
    )
    .await;
    // Several probe periods later the serving one never restarted.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let serving = pod(&client, "serving").await.expect("pod");
    assert_eq!(restarts(&serving), 0);
    assert!(ready(&serving));
    let events = ok(&skiffctl(
        &w.cluster,
        &["describe", "pod", "not-serving"],
        None,
    ));
    assert!(
        events.contains("Unhealthy") && events.contains("NOT_SERVING"),
        "{events}"
    );

    info!("phase: a postStart hook runs before the container counts as running; a failing one restarts it");
    apply(
        &w,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web-front}\nspec:\n  selector: {app: nothing}\n  ports: [{name: http, port: 80}]\n",
    );
    let front_ip = ok(&skiffctl(
        &w.cluster,
        &[
            "get",
            "svc",
            "web-front",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    ))
    .trim()
    .to_string();
    let busybox = w
        .registry
        .push(&OciImage::busybox("fields"), "skiff/busybox", "1");
    let hooked = |name: &str, hook: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: "{busybox}"
    command: [sleep, "3600"]
    resources:
      limits: {{cpu: 250m, memory: 64Mi}}
    env:
    - name: MEMORY_MI
      valueFrom:
        resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}
    - name: CPU_MILLIS
      valueFrom:
        resourceFieldRef: {{resource: limits.cpu, divisor: 1m}}
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, "{hook}"]}}
"#
        )
    };
    apply(&w, &hooked("hooked", "echo ran > /tmp/post-start"));
    apply(&w, &hooked("hook-fails", "exit 3"));
    wait_until(
        Duration::from_secs(60),
        "the hooked pod running",
        || async { pod(&client, "hooked").await.is_some_and(|p| running(&p)) },
    )
    .await;
    let exec = |pod: &str, cmd: &[&str]| {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(cmd);
        ok(&skiffctl(&w.cluster, &args, None)).trim().to_string()
    };
    assert_eq!(exec("hooked", &["cat", "/tmp/post-start"]), "ran");
    assert_eq!(
        exec("hooked", &["sh", "-c", "echo $MEMORY_MI $CPU_MILLIS"]),
        "64 250"
    );
    assert_eq!(
        exec(
            "hooked",
            &[
                "sh",
                "-c",
                "echo $WEB_FRONT_SERVICE_HOST $WEB_FRONT_SERVICE_PORT_HTTP"
            ]
        ),
        format!("{front_ip} 80"),
        "service links"
    );
    wait_until(
        Duration::from_secs(60),
        "the failing hook's container restarted",
        || async {
            pod(&client, "hook-fails")
                .await
                .is_some_and(|p| restarts(&p) >= 1)
        },
    )
    .await;
    let events = ok(&skiffctl(
        &w.cluster,
        &["describe", "pod", "hook-fails"],
        None,
    ));
    assert!(events.contains("FailedPostStartHook"), "{events}");

    info!("phase: a pod past its activeDeadlineSeconds is stopped and Failed DeadlineExceeded");
    let deadline = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: deadline}}\nspec:\n  activeDeadlineSeconds: 3\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: \"{busybox}\", command: [sleep, \"3600\"]}}]\n"
    );
    apply(&w, &deadline);
    wait_until(
        Duration::from_secs(30),
        "the pod Failed past its deadline",
        || async {
            pod(&client, "deadline").await.is_some_and(|p| {
                let s = p.status.unwrap_or_default();
                s.phase.as_deref() == Some("Failed")
                    && s.reason.as_deref() == Some("DeadlineExceeded")
            })
        },
    )
    .await;
    // It stays stopped.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = pod(&client, "deadline").await.expect("pod");
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Failed"));

    info!(
        "phase: termination messages: the file a container writes, or its log's end when it failed"
    );
    let ended = |name: &str, extra: &str, script: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n{extra}  containers:\n  - name: c\n    image: \"{busybox}\"\n    terminationMessagePolicy: FallbackToLogsOnError\n    command: [sh, -c, '{script}']\n"
        )
    };
    apply(
        &w,
        &ended(
            "says",
            "  enableServiceLinks: false\n",
            "echo done ${WEB_FRONT_SERVICE_HOST:-unlinked} > /dev/termination-log",
        ),
    );
    apply(&w, &ended("fails", "", "echo oops; exit 2"));
    let message = |p: &Pod| {
        p.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .state
            .as_ref()?
            .terminated
            .as_ref()?
            .message
            .clone()
    };
    for (name, want) in [("says", "done unlinked"), ("fails", "oops")] {
        wait_until(
            Duration::from_secs(60),
            &format!("{name} ended with its message"),
            || async {
                pod(&client, name)
                    .await
                    .as_ref()
                    .and_then(message)
                    .is_some_and(|m| m.trim() == want)
            },
        )
        .await;
    }

    info!("phase: a host port answers on the node's address from another host");
    apply(
        &w,
        &format!(
            r#"apiVersion: v1
kind: Namespace
metadata:
  name: edge
  labels: {{pod-security.kubernetes.io/enforce: privileged}}
---
apiVersion: v1
kind: Pod
metadata: {{name: door, namespace: edge}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: "{busybox}"
    command: [sh, -c, "mkdir -p /www && echo door > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: [{{containerPort: 80, hostPort: 18080}}]
"#
        ),
    );
    let edge: Api<Pod> = Api::new(client.clone(), "edge");
    wait_until(Duration::from_secs(60), "the door pod running", || async {
        edge.get("door").await.is_ok_and(|p| running(&p))
    })
    .await;
    let other = TestHost::create();
    let (node_addr, _) = w.host.link(&other);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = other.sh(&format!(
            "busybox wget -q -O- http://{node_addr}:18080/ || echo FAILED"
        ));
        if out.trim() == "door" {
            break;
        }
        if Instant::now() > deadline {
            let node_side = w.host.sh(&format!(
                "busybox wget -q -O- http://{node_addr}:18080/ 2>&1; nft list ruleset 2>&1 | grep -B2 -A12 hostports; ip route; sysctl net.ipv4.ip_forward"
            ));
            panic!("the host port does not answer from another host: {out}\nfrom the node: {node_side}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    info!("phase: a pod on the node's network, processes and IPC answers on the node's address");
    apply(
        &w,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: on-host, namespace: edge}}
spec:
  terminationGracePeriodSeconds: 1
  hostNetwork: true
  hostPID: true
  hostIPC: true
  containers:
  - name: c
    image: "{busybox}"
    command: [sh, -c, "mkdir -p /www && for n in net pid ipc uts; do readlink /proc/self/ns/$n; done > /www/index.html && hostname >> /www/index.html && exec httpd -f -p 18081 -h /www"]
    ports: [{{containerPort: 18081}}]
"#
        ),
    );
    wait_until(
        Duration::from_secs(60),
        "the on-host pod running",
        || async { edge.get("on-host").await.is_ok_and(|p| running(&p)) },
    )
    .await;
    let on_host = edge.get("on-host").await.expect("the on-host pod");
    let status = on_host.status.clone().unwrap_or_default();
    assert!(status.pod_ip.is_some(), "{status:?}");
    assert_eq!(
        status.pod_ip, status.host_ip,
        "the pod has the node's address"
    );
    let ports = on_host
        .spec
        .as_ref()
        .map(|s| s.containers[0].ports.clone().unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(ports[0].host_port, Some(18081), "{ports:?}");
    let node_side = w
        .host
        .sh("for n in net pid ipc uts; do readlink /proc/self/ns/$n; done; hostname");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = other.sh(&format!(
            "busybox wget -q -O- http://{node_addr}:18081/ || echo FAILED"
        ));
        if out.trim() == node_side.trim() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the on-host pod does not answer with the node's namespaces and name: {out}\nthe node's: {node_side}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    info!("phase: deleting it releases nothing of the node's: the host port still answers");
    ok(&skiffctl(
        &w.cluster,
        &["delete", "pod", "on-host", "-n", "edge"],
        None,
    ));
    wait_until(Duration::from_secs(30), "the on-host pod gone", || async {
        edge.get("on-host").await.is_err()
    })
    .await;
    let out = other.sh(&format!(
        "busybox wget -q -O- http://{node_addr}:18080/ || echo FAILED"
    ));
    assert_eq!(out.trim(), "door", "after the on-host pod went");
}
