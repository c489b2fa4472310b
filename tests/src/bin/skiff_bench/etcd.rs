//! Three etcd 3.4 members (Debian's `etcd-server`) on loopback, plaintext or with mutual TLS
//! on both its client and peer ports, for the store benchmark to compare Skiff with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use skiff_e2e::free_port;
use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::holder::Holder;

/// Certificates for an etcd cluster and its clients, as etcd's own guide makes them: one CA,
/// a certificate per member for both its ports (server and client use, 127.0.0.1), and a
/// client certificate.
struct EtcdTls {
    dir: PathBuf,
    client: TlsOptions,
}

impl EtcdTls {
    fn make(dir: &Path) -> anyhow::Result<Self> {
        let ca = ClusterCa::generate("skiff-bench-etcd")?;
        let loopback = [std::net::Ipv4Addr::LOCALHOST.into()];
        let member = ca.issue(&Holder::Control(1), &loopback)?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))
        };
        write("ca.crt", &ca.cert)?;
        write("member.crt", &member.cert)?;
        write("member.key", &member.key)?;
        let user = ca.issue(&Holder::User("bench".into()), &[])?;
        let client = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&ca.cert))
            .identity(Identity::from_pem(&user.cert, &user.key));
        Ok(Self {
            dir: dir.to_path_buf(),
            client,
        })
    }

    /// etcd's flags for mutual TLS on client and peer ports.
    fn flags(&self) -> Vec<String> {
        let f = |name: &str| self.dir.join(name).display().to_string();
        [
            ("--cert-file", f("member.crt")),
            ("--key-file", f("member.key")),
            ("--trusted-ca-file", f("ca.crt")),
            ("--client-cert-auth", "true".into()),
            ("--peer-cert-file", f("member.crt")),
            ("--peer-key-file", f("member.key")),
            ("--peer-trusted-ca-file", f("ca.crt")),
            ("--peer-client-cert-auth", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
    }
}

/// Three etcd members on loopback.
pub struct Etcd {
    procs: BTreeMap<u64, (String, Vec<String>, Option<Child>)>,
    tls: Option<EtcdTls>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Start three members, with mutual TLS on every port when `tls`, and `flags` more.
    pub fn start(tls: bool, flags: &[String]) -> anyhow::Result<Self> {
        let bin = etcd_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("skiff-bench-etcd-")
            .tempdir()?;
        let tls = tls.then(|| EtcdTls::make(dir.path())).transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{}={scheme}://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut procs = BTreeMap::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let mut args = vec![
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                dir.path().join(&name).display().to_string(),
                "--listen-client-urls".into(),
                format!("{scheme}://127.0.0.1:{client}"),
                "--advertise-client-urls".into(),
                format!("{scheme}://127.0.0.1:{client}"),
                "--listen-peer-urls".into(),
                format!("{scheme}://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("{scheme}://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                "skiff-bench".into(),
                "--log-level".into(),
                "error".into(),
            ];
            args.extend(tls.iter().flat_map(EtcdTls::flags));
            args.extend(flags.iter().cloned());
            let child = spawn(&bin, &args)?;
            procs.insert(
                i as u64 + 1,
                (format!("{scheme}://127.0.0.1:{client}"), args, Some(child)),
            );
        }
        Ok(Self {
            procs,
            tls,
            _dir: dir,
        })
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.procs.values().map(|(a, _, _)| a.clone()).collect()
    }

    /// A client of `endpoint`, with a client certificate when the cluster runs TLS.
    pub async fn connect(&self, endpoint: &str) -> anyhow::Result<etcd_client::Client> {
        let options = self
            .tls
            .as_ref()
            .map(|t| ConnectOptions::new().with_tls(t.client.clone()));
        Ok(etcd_client::Client::connect([endpoint], options).await?)
    }

    /// A client of every member (etcd's client balances over them).
    pub async fn connect_all(&self) -> anyhow::Result<etcd_client::Client> {
        let options = self
            .tls
            .as_ref()
            .map(|t| ConnectOptions::new().with_tls(t.client.clone()));
        Ok(etcd_client::Client::connect(self.endpoints(), options).await?)
    }

    /// The index (1-based) of the leader, by asking each member.
    pub async fn leader(&self) -> Option<u64> {
        let mut ids = BTreeMap::new();
        let mut leader = None;
        for (i, (addr, _, child)) in &self.procs {
            if child.is_none() {
                continue;
            }
            let Ok(Ok(mut c)) =
                tokio::time::timeout(Duration::from_millis(500), self.connect(addr)).await
            else {
                continue;
            };
            let Ok(Ok(st)) = tokio::time::timeout(Duration::from_millis(500), c.status()).await
            else {
                continue;
            };
            if let Some(h) = st.header() {
                ids.insert(h.member_id(), *i);
            }
            leader = leader.or(Some(st.leader()).filter(|l| *l != 0));
        }
        leader.and_then(|l| ids.get(&l).copied())
    }

    /// `kill -9` member `i`.
    pub fn kill9(&mut self, i: u64) {
        if let Some((_, _, child)) = self.procs.get_mut(&i) {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Start member `i` again; it rejoins its cluster from disk.
    pub fn restart(&mut self, i: u64) -> anyhow::Result<()> {
        let bin = etcd_binary()?;
        if let Some((_, args, child)) = self.procs.get_mut(&i) {
            let mut args = args.clone();
            if let Some(pos) = args.iter().position(|a| a == "new") {
                args[pos] = "existing".into();
            }
            *child = Some(spawn(&bin, &args)?);
        }
        Ok(())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for (_, _, child) in self.procs.values_mut() {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn spawn(bin: &Path, args: &[String]) -> anyhow::Result<Child> {
    Ok(Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn etcd_binary() -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| {
            p.to_str()?
                .split(':')
                .map(|d| PathBuf::from(d).join("etcd"))
                .find(|p| p.exists())
        })
        .context("etcd is not installed: apt-get install etcd-server")
}
