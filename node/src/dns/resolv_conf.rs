//! A pod's `/etc/resolv.conf`, as the kubelet writes it for each `dnsPolicy`:
//!
//! - `ClusterFirst` (the default) and `ClusterFirstWithHostNet`: the node's cluster DNS, the
//!   search list `ns.svc.D svc.D D` then the node's own search domains, `options ndots:5`;
//!   except that a pod on the node's network (`hostNetwork`) keeps `ClusterFirst` for the
//!   node's file as `Default` does;
//! - `Default`: the node's resolv.conf as it is;
//! - `None`: only what `dnsConfig` says.
//!
//! `dnsConfig` adds nameservers and search domains and sets options (a later option of the
//! same name replaces the earlier), for every policy; at most 3 nameservers and 32 search
//! domains are kept, as the kubelet does.

use k8s_openapi::api::core::v1::Pod;

/// At most this many nameservers (glibc's limit).
const MAX_NAMESERVERS: usize = 3;
/// At most this many search domains (the kubelet's limit).
const MAX_SEARCH: usize = 32;

/// The node's cluster DNS.
#[derive(Debug, Clone)]
pub struct PodDns {
    /// The address pods send their questions to.
    pub nameserver: String,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

/// A parsed resolv.conf: what the kubelet carries over.
#[derive(Debug, Default, Clone, PartialEq)]
struct Conf {
    nameservers: Vec<String>,
    search: Vec<String>,
    options: Vec<String>,
}

impl Conf {
    fn parse(text: &str) -> Self {
        let mut c = Self::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => c.nameservers.extend(words.next().map(String::from)),
                Some("search" | "domain") => {
                    c.search = words.map(String::from).collect();
                }
                Some("options") => c.options.extend(words.map(String::from)),
                _ => {}
            }
        }
        c
    }

    fn set_option(&mut self, option: String) {
        let name = option.split(':').next().unwrap_or("").to_string();
        self.options
            .retain(|o| o.split(':').next().unwrap_or("") != name);
        self.options.push(option);
    }

    fn render(mut self) -> String {
        self.nameservers.truncate(MAX_NAMESERVERS);
        self.search.truncate(MAX_SEARCH);
        let mut out = String::new();
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// The resolv.conf of `pod`: `host` is the node's resolv.conf, `dns` the node's cluster DNS
/// if it serves one.
pub fn for_pod(pod: &Pod, host: &str, dns: Option<&PodDns>) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host = Conf::parse(host);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let on_host = spec.host_network == Some(true);
    let mut conf = match (policy, dns) {
        ("None", _) => Conf::default(),
        // On the node's network a pod asks what the node asks, unless it says otherwise.
        ("ClusterFirst", _) if on_host => host,
        ("ClusterFirst" | "ClusterFirstWithHostNet", Some(dns)) => {
            let d = &dns.domain;
            let mut search = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            for s in &host.search {
                if !search.contains(s) {
                    search.push(s.clone());
                }
            }
            Conf {
                nameservers: vec![dns.nameserver.clone()],
                search,
                options: vec!["ndots:5".into()],
            }
        }
        // `Default`, or a node that serves no cluster DNS.
        _ => host,
    };
    if let Some(extra) = spec.dns_config {
        conf.nameservers
            .extend(extra.nameservers.unwrap_or_default());
        for s in extra.searches.unwrap_or_default() {
            if !conf.search.contains(&s) {
                conf.search.push(s);
            }
        }
        for o in extra.options.unwrap_or_default() {
            let name = o.name.unwrap_or_default();
            if name.is_empty() {
                continue;
            }
            conf.set_option(match o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    conf.render()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    const HOST: &str = "# generated\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";

    fn pod(policy: Option<&str>, config: Option<PodDNSConfig>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                dns_policy: policy.map(Into::into),
                dns_config: config,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn dns() -> PodDns {
        PodDns {
            nameserver: "10.244.1.1".into(),
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn cluster_first_points_at_the_cluster_dns_with_kubernetes_search_list() {
        assert_eq!(
            for_pod(&pod(None, None), HOST, Some(&dns())),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 10.244.1.1\noptions ndots:5\n"
        );
    }

    #[test]
    fn a_pod_on_the_node_network_asks_the_cluster_only_with_host_net() {
        let on_host = |policy: Option<&str>| {
            let mut p = pod(policy, None);
            if let Some(s) = p.spec.as_mut() {
                s.host_network = Some(true);
            }
            for_pod(&p, HOST, Some(&dns()))
        };
        assert_eq!(
            on_host(None),
            "search corp.example\nnameserver 192.0.2.53\noptions edns0\n"
        );
        assert!(on_host(Some("ClusterFirstWithHostNet")).contains("nameserver 10.244.1.1\n"));
    }

    #[test]
    fn default_takes_the_node_file_and_none_only_the_dns_config() {
        assert_eq!(
            for_pod(&pod(Some("Default"), None), HOST, Some(&dns())),
            "search corp.example\nnameserver 192.0.2.53\noptions edns0\n"
        );
        let config = PodDNSConfig {
            nameservers: Some(vec!["192.0.2.1".into()]),
            searches: Some(vec!["my.example".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        };
        assert_eq!(
            for_pod(&pod(Some("None"), Some(config.clone())), HOST, Some(&dns())),
            "search my.example\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"
        );
        // dnsConfig's options replace those of the same name.
        assert_eq!(
            for_pod(&pod(None, Some(config)), HOST, Some(&dns())),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example my.example\n\
             nameserver 10.244.1.1\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"
        );
    }
}
