//! End-to-end tests of the pod network across nodes: several `skiff node` agents, each in a
//! test host of its own on one LAN with its own containerd, real VXLAN devices and routes,
//! and real packets between pods on different nodes.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use skiff_e2e::node_env::nodes::{nodes, nodes_with, Nodes};
use skiff_e2e::node_env::upstream_dns::UpstreamDns;
use skiff_e2e::node_env::world::{ok, skiffctl, wait_until};
use skiff_e2e::node_env::{require_system_parts, TestHost};
use skiff_proto::objects::Api;
use tracing::info;

const IMAGE: &str = "example.test/net/busybox:1";

/// A pod on `node` serving its own name at `/` and the caller's address at `/cgi-bin/peer`,
/// known in the headless Service `web` as `host-NAME`.
fn server_pod(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}, tier: web}}}}
spec:
  nodeName: {node}
  hostname: host-{name}
  subdomain: web
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: {IMAGE}
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && echo {name} > /www/index.html && printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n' > /www/cgi-bin/peer && chmod +x /www/cgi-bin/peer && exec httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1}}
---
"#
    )
}

async fn pod_ip(api: &Api<Pod>, name: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(p) = api.get(name).await {
            let s = p.status.unwrap_or_default();
            if s.phase.as_deref() == Some("Running") {
                if let Some(ip) = s.pod_ip.filter(|ip| !ip.is_empty()) {
                    return ip;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pod {name} never ran with an IP"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `wget` of `url` run inside pod `pod`.
fn fetch_in(all: &Nodes, pod: &str, url: &str) -> Result<String, String> {
    let out = skiffctl(
        &all.cluster,
        &[
            "exec",
            pod,
            "--timeout",
            "5",
            "--",
            "wget",
            "-q",
            "-O",
            "-",
            url,
        ],
        None,
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// busybox httpd in a test host (not a pod), answering the caller's address at
/// `/cgi-bin/peer`; stopped on drop.
struct HostServer(std::process::Child);

impl HostServer {
    const PORT: u16 = 18080;

    fn start(host: &TestHost, dir: &std::path::Path) -> Self {
        std::fs::create_dir_all(dir.join("cgi-bin")).expect("web dir");
        let script = dir.join("cgi-bin/peer");
        std::fs::write(
            &script,
            "#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n",
        )
        .expect("cgi script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &host.netns, "busybox", "httpd", "-f", "-p"])
            .arg(Self::PORT.to_string())
            .arg("-h")
            .arg(dir)
            .spawn()
            .expect("busybox httpd");
        std::thread::sleep(Duration::from_millis(300));
        Self(child)
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The caller's address as the `peer` CGI printed it (busybox httpd gives IPv4 callers in
/// their IPv6-mapped form).
fn peer(answer: Result<String, String>) -> Result<String, String> {
    answer.map(|a| {
        a.trim_start_matches("[::ffff:")
            .trim_end_matches(']')
            .to_string()
    })
}

/// The IPv4 addresses `name` resolves to inside pod `pod` (busybox nslookup against the
/// pod's resolv.conf), or what nslookup said.
fn lookup(all: &Nodes, pod: &str, name: &str) -> Result<Vec<String>, String> {
    let out = skiffctl(
        &all.cluster,
        &[
            "exec",
            pod,
            "--timeout",
            "10",
            "--",
            "nslookup",
            "-type=a",
            name,
        ],
        None,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(text);
    }
    // Addresses after the "Name:" line (the first "Address:" names the server).
    let answers: Vec<String> = text
        .split("Name:")
        .skip(1)
        .flat_map(|block| {
            block
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Address:"))
                .map(|a| a.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    if answers.is_empty() {
        Err(text)
    } else {
        Ok(answers)
    }
}

/// The status of node `name`'s `NetworkUnavailable` condition.
async fn network_condition(all: &Nodes, name: &str) -> Option<String> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::new(all.cluster.client(), "");
    let node = nodes.get(name).await.ok()?;
    node.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "NetworkUnavailable")
        .map(|c| c.status)
}

/// The routes the pod network owns on `host`, one per line.
fn owned_routes(host: &TestHost) -> String {
    host.exec(&["ip", "-4", "route", "show", "proto", "210"])
}

async fn pods_on_two_nodes_reach_each_other(mode: &str) {
    require_system_parts();
    let mut all = nodes(2, &["--pod-network", mode]).await;
    let client = all.cluster.client();
    info!("phase: the image is imported on every Ready node (no --node)");
    let out = all.import_busybox(IMAGE, "net");
    assert!(
        out.contains("on node/n1") && out.contains("on node/n2"),
        "{out}"
    );

    info!("phase: a pod on each node; each fetches from the other by pod IP");
    let manifest = format!(
        "{}{}apiVersion: v1\nkind: Service\nmetadata: {{name: b}}\nspec:\n  type: NodePort\n  selector: {{app: b}}\n  ports: [{{port: 80, targetPort: http}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  clusterIP: None\n  selector: {{tier: web}}\n  ports: [{{name: http, port: 8080}}]\n",
        server_pod("a", "n1"),
        server_pod("b", "n2")
    );
    ok(&skiffctl(
        &all.cluster,
        &["apply", "-f", "-"],
        Some(&manifest),
    ));
    let pods: Api<Pod> = Api::new(client.clone(), "default");
    let (a_ip, b_ip) = (pod_ip(&pods, "a").await, pod_ip(&pods, "b").await);
    for host in all.nodes.iter().map(|n| &n.host) {
        for ip in [&a_ip, &b_ip] {
            let route = host.exec(&["ip", "route", "get", ip]);
            assert!(
                !route.contains(" via 10.233.") && !route.contains("dev lo"),
                "{ip} must stay inside the test network: {route}"
            );
        }
    }
    assert_eq!(
        fetch_in(&all, "a", &format!("http://{b_ip}:8080/")),
        Ok("b".into())
    );
    assert_eq!(
        fetch_in(&all, "b", &format!("http://{a_ip}:8080/")),
        Ok("a".into())
    );
    assert_eq!(
        peer(fetch_in(
            &all,
            "a",
            &format!("http://{b_ip}:8080/cgi-bin/peer")
        )),
        Ok(a_ip.clone()),
        "no NAT between pods: b sees a's own address"
    );

    info!("phase: a's traffic to an address outside the pod and service ranges (a server on n2's host) leaves as n1's address");
    let n1_ip = all.node("n1").host.node_ip.clone();
    let n2_ip = all.node("n2").host.node_ip.clone();
    let host_web = HostServer::start(&all.node("n2").host, &all.cluster.dir().join("host-web"));
    assert_eq!(
        peer(fetch_in(
            &all,
            "a",
            &format!("http://{n2_ip}:{}/cgi-bin/peer", HostServer::PORT)
        )),
        Ok(n1_ip.clone()),
        "masqueraded to its node's address"
    );
    drop(host_web);
    let services: Api<Service> = Api::new(client.clone(), "default");
    let svc = services.get("b").await.expect("service b");
    let spec = svc.spec.expect("spec");
    let cluster_ip = spec.cluster_ip.expect("a ClusterIP");
    let node_port = spec.ports.expect("ports")[0].node_port.expect("a NodePort");
    wait_until(Duration::from_secs(20), "b is a ready endpoint", || async {
        fetch_in(&all, "a", &format!("http://{cluster_ip}/")).is_ok()
    })
    .await;

    info!("phase: a Service whose only endpoint is on the other node answers by ClusterIP, with the client's address kept");
    assert_eq!(
        fetch_in(&all, "a", &format!("http://{cluster_ip}/")),
        Ok("b".into())
    );
    assert_eq!(
        peer(fetch_in(
            &all,
            "a",
            &format!("http://{cluster_ip}/cgi-bin/peer")
        )),
        Ok(a_ip.clone())
    );
    assert_eq!(
        fetch_in(&all, "b", &format!("http://{cluster_ip}/")),
        Ok("b".into()),
        "a pod reaches itself through its own Service (hairpin)"
    );

    info!("phase: the node's DNS: a Service by its short name, name.ns and full name (its only endpoint on the other node), a headless Service, a missing name, a forwarded name");
    let upstream = UpstreamDns::start(&all.lan.root_address()).await;
    for name in ["b", "b.default", "b.default.svc.cluster.local"] {
        assert_eq!(
            fetch_in(&all, "a", &format!("http://{name}/")),
            Ok("b".into()),
            "{name}"
        );
    }
    let mut heads = lookup(&all, "a", "web.default.svc.cluster.local").expect("headless");
    heads.sort();
    let mut both = vec![a_ip.clone(), b_ip.clone()];
    both.sort();
    assert_eq!(heads, both, "a headless Service is its ready pods");
    assert_eq!(
        lookup(&all, "b", "host-a.web.default.svc.cluster.local"),
        Ok(vec![a_ip.clone()]),
        "a pod's hostname in its subdomain"
    );
    let hosts = ok(&skiffctl(
        &all.cluster,
        &["exec", "a", "--", "cat", "/etc/hosts"],
        None,
    ));
    assert!(
        hosts.contains(&format!(
            "{a_ip}\thost-a.web.default.svc.cluster.local host-a"
        )),
        "{hosts}"
    );
    let missing = lookup(&all, "a", "nothing.default.svc.cluster.local").expect_err("missing");
    assert!(missing.contains("NXDOMAIN"), "{missing}");
    assert_eq!(
        lookup(&all, "a", "outside.example.test"),
        Ok(vec![UpstreamDns::ADDRESS.to_string()])
    );
    assert!(upstream.asked.load(std::sync::atomic::Ordering::Relaxed) > 0);
    drop(upstream);

    info!("phase: kube-system/kube-dns names every node's DNS, and answers through its ClusterIP");
    let dns_services: Api<Service> = Api::new(client.clone(), "kube-system");
    let kube_dns = dns_services.get("kube-dns").await.expect("kube-dns");
    let dns_ip = kube_dns
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let dns_endpoints: Api<Endpoints> = Api::new(client.clone(), "kube-system");
    let mut dns_addresses: Vec<String> = dns_endpoints
        .get("kube-dns")
        .await
        .expect("kube-dns endpoints")
        .subsets
        .into_iter()
        .flatten()
        .flat_map(|s| s.addresses.into_iter().flatten())
        .map(|a| a.ip)
        .collect();
    dns_addresses.sort();
    let gateway = |ip: &str| format!("{}.1", ip.rsplit_once('.').expect("an address").0);
    let mut gateways = vec![gateway(&a_ip), gateway(&b_ip)];
    gateways.sort();
    assert_eq!(dns_addresses, gateways);
    // Each question goes to either node's DNS at random: several, so both answer.
    for _ in 0..6 {
        let out = skiffctl(
            &all.cluster,
            &[
                "exec",
                "a",
                "--",
                "nslookup",
                "-type=a",
                "b.default.svc.cluster.local",
                &dns_ip,
            ],
            None,
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&cluster_ip),
            "a question through kube-dns' ClusterIP (UDP, balanced over the nodes): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    info!("phase: describe node shows the node's address, pod CIDR, network mode and DNS");
    let described = ok(&skiffctl(&all.cluster, &["describe", "node", "n1"], None));
    for want in [
        format!("InternalIP:  {n1_ip}"),
        format!("PodNetwork:  {mode}"),
        format!("DNS:         {}:53", gateway(&a_ip)),
    ] {
        assert!(described.contains(&want), "{want} in:\n{described}");
    }

    assert!(
        network_condition(&all, "n1").await == Some("False".to_string()),
        "n1 reports its network available"
    );
    if mode == "host-gw" {
        info!("phase: a peer whose address is off the segment cannot be routed to: NetworkUnavailable says so, and clears when it goes");
        let stray = serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "stray"},
            "spec": {"podCIDR": "10.244.250.0/24", "podCIDRs": ["10.244.250.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.99"}]}});
        client
            .create_object("nodes", "", serde_json::to_vec(&stray).expect("json"))
            .await
            .expect("a stray node");
        wait_until(
            Duration::from_secs(10),
            "n1 reports the unreachable peer",
            || async { network_condition(&all, "n1").await == Some("True".to_string()) },
        )
        .await;
        let described = ok(&skiffctl(&all.cluster, &["describe", "node", "n1"], None));
        assert!(described.contains("stray"), "{described}");
        ok(&skiffctl(&all.cluster, &["delete", "node", "stray"], None));
        wait_until(
            Duration::from_secs(10),
            "n1's network available again",
            || async { network_condition(&all, "n1").await == Some("False".to_string()) },
        )
        .await;
    }

    info!("phase: a NodePort opened on n1 from a host outside the cluster reaches b on n2");
    let mut outside = TestHost::create();
    all.lan.attach(&mut outside);
    let page = outside.exec(&[
        "timeout",
        "5",
        "busybox",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{n1_ip}:{node_port}/"),
    ]);
    assert_eq!(page.trim(), "b");

    info!("phase: n1's agent is killed: traffic between the pods goes on; restarted, its routes are the same");
    let before = owned_routes(&all.node("n1").host);
    assert_eq!(
        before.lines().count(),
        1,
        "one route, to n2's pods: {before}"
    );
    all.node_mut("n1").agent.kill9();
    for _ in 0..5 {
        assert_eq!(
            fetch_in(&all, "b", &format!("http://{a_ip}:8080/")),
            Ok("a".into())
        );
    }
    all.node_mut("n1").agent.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(owned_routes(&all.node("n1").host), before);
    assert_eq!(
        fetch_in(&all, "b", &format!("http://{a_ip}:8080/")),
        Ok("a".into())
    );

    info!("phase: a third node joins while pods run; its pod and the others reach each other");
    all.add_node().await;
    // Every Ready node: n3, and the others again (an import of what is there is harmless).
    all.import_busybox(IMAGE, "net");
    ok(&skiffctl(
        &all.cluster,
        &["apply", "-f", "-"],
        Some(&server_pod("c", "n3")),
    ));
    let c_ip = pod_ip(&pods, "c").await;
    assert_eq!(
        fetch_in(&all, "c", &format!("http://{a_ip}:8080/")),
        Ok("a".into())
    );
    assert_eq!(
        fetch_in(&all, "a", &format!("http://{c_ip}:8080/")),
        Ok("c".into())
    );
    assert_eq!(
        fetch_in(&all, "b", &format!("http://{c_ip}:8080/")),
        Ok("c".into())
    );

    info!("phase: n3 is stopped and its Node deleted: every other node drops its route, neighbour and forwarding entries");
    all.node_mut("n3").agent.kill9();
    ok(&skiffctl(&all.cluster, &["delete", "node", "n3"], None));
    let n3_cidr = {
        let c: Vec<&str> = c_ip.split('.').collect();
        format!("{}.{}.{}.0/", c[0], c[1], c[2])
    };
    for name in ["n1", "n2"] {
        let host = &all.node(name).host;
        wait_until(
            Duration::from_secs(10),
            &format!("{name} drops its route to n3's pods"),
            || async { !owned_routes(host).contains(&n3_cidr) },
        )
        .await;
        if mode == "vxlan" {
            let vtep = n3_cidr.trim_end_matches('/');
            let neigh = host.exec(&["ip", "neigh", "show", "dev", "skiff.1"]);
            assert!(!neigh.contains(&format!("{vtep} ")), "{name}: {neigh}");
            let fdb = host.exec(&["bridge", "fdb", "show", "dev", "skiff.1"]);
            let octets: Vec<u8> = vtep.split('.').filter_map(|o| o.parse().ok()).collect();
            let mac = format!(
                "0a:58:{:02x}:{:02x}:{:02x}:{:02x}",
                octets[0], octets[1], octets[2], octets[3]
            );
            assert!(!fdb.contains(&mac), "{name}: {fdb}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_pods_on_different_nodes_reach_each_other_and_services_without_nat() {
    pods_on_two_nodes_reach_each_other("vxlan").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_gw_pods_on_different_nodes_reach_each_other_and_services_without_nat() {
    pods_on_two_nodes_reach_each_other("host-gw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_for_good_has_its_pods_recreated_and_its_service_answers_again_by_name() {
    require_system_parts();
    let mut all = nodes_with(
        2,
        &[],
        &[
            "--node-grace-seconds",
            "2",
            "--eviction-toleration-seconds",
            "1",
        ],
    )
    .await;
    let client = all.cluster.client();
    all.import_busybox(IMAGE, "net");

    // The asker gives each try 2 s (a connection to a host that is gone hangs, it does not
    // fail): busybox nc with -w, since busybox wget's own timeout is broken in Debian's build.
    info!("phase: a one-replica Deployment behind a Service; a client on the other node asks it by name in a loop");
    let web = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {IMAGE}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http}}]
"#
    );
    ok(&skiffctl(&all.cluster, &["apply", "-f", "-"], Some(&web)));
    let pods: Api<Pod> = Api::new(client.clone(), "default");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (first, doomed) = loop {
        let (list, _) = pods.list("app=web", "").await.expect("pods");
        let running = list.into_iter().find(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("web-"))
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        });
        if let Some(p) = running {
            let node = p.spec.and_then(|s| s.node_name).expect("a node");
            break (p.metadata.name.expect("name"), node);
        }
        assert!(std::time::Instant::now() < deadline, "web never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let survivor = if doomed == "n1" { "n2" } else { "n1" };
    let loop_pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: asker}}\nspec:\n  nodeName: {survivor}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"while true; do printf 'GET / HTTP/1.0\\\\r\\\\n\\\\r\\\\n' | nc -w 2 web 80 | grep web- || echo FAILED; sleep 0.3; done\"]\n"
    );
    ok(&skiffctl(
        &all.cluster,
        &["apply", "-f", "-"],
        Some(&loop_pod),
    ));
    pod_ip(&pods, "asker").await;
    let logs = |all: &Nodes| ok(&skiffctl(&all.cluster, &["logs", "asker"], None));
    wait_until(
        Duration::from_secs(30),
        "the asker reaches web by name",
        || async { logs(&all).contains(&first) },
    )
    .await;

    info!(node = %doomed, "phase: the web pod's node stops for good: its agent killed, its host cut off the LAN");
    all.node_mut(&doomed).agent.kill9();
    all.node(&doomed)
        .host
        .exec(&["ip", "link", "set", "lan0", "down"]);

    info!("phase: web is recreated on the other node and the same loop, unchanged, gets answers from it");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let second = loop {
        let (list, _) = pods.list("app=web", "").await.expect("pods");
        let moved = list.into_iter().find(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("web-") && n != first)
                && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(survivor)
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        });
        if let Some(p) = moved {
            break p.metadata.name.expect("name");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "web was not recreated on {survivor}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !logs(&all).contains(&second) {
        assert!(
            std::time::Instant::now() < deadline,
            "the asker's loop was never answered by {second}: {}\nendpoints: {}",
            logs(&all)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | "),
            ok(&skiffctl(
                &all.cluster,
                &["get", "endpoints", "web", "-o", "json"],
                None
            ))
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = logs(&all);
    assert!(
        out.contains("FAILED"),
        "the outage was seen by the loop:\n{out}"
    );
    // From then on the new pod answers every try.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = logs(&all);
        let tail: Vec<&str> = out.lines().rev().take(3).collect();
        if tail.iter().all(|l| *l == second) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not steadily answered by {second}: {tail:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
