//! A local OCI registry (Debian's `docker-registry`) for the tests, and a push over the
//! distribution protocol's plain HTTP calls.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::holder::Holder;

use super::image::{digest, OciImage};

/// A running registry.
pub struct Registry {
    /// host:port it serves on.
    pub addr: String,
    storage: PathBuf,
    child: Child,
}

fn http(addr: &str, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let (code, resp) = crate::http_request(addr, method, path, content_type, body);
    assert!(code != 0, "the registry at {addr} does not answer");
    (code, resp)
}

impl Registry {
    /// Start a registry listening on `ip` (a free port), storing under `dir`.
    pub fn start(ip: &str, dir: &Path) -> Self {
        Self::spawn(ip, dir, "registry", &dir.join("registry-data"), "")
    }

    /// A twin serving the same images over TLS, with a certificate for its address from a CA
    /// of its own (`name`'s files under `dir`); returns it and that CA's certificate file.
    pub fn twin_over_tls(&self, dir: &Path, name: &str) -> (Registry, PathBuf) {
        let ip = self.addr.rsplit_once(':').expect("host:port").0;
        let ca = ClusterCa::generate(name).expect("a CA");
        let creds = ca
            .issue(&Holder::Control(1), &[ip.parse().expect("an IP address")])
            .expect("a certificate");
        let (cert, key, ca_file) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
            dir.join(format!("{name}-ca.crt")),
        );
        std::fs::write(&cert, &creds.cert).expect("certificate");
        std::fs::write(&key, &creds.key).expect("key");
        std::fs::write(&ca_file, &ca.cert).expect("CA");
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        (Self::spawn(ip, dir, name, &self.storage, &tls), ca_file)
    }

    /// A twin serving the same images over plain HTTP to `user` with `password` only
    /// (htpasswd, bcrypt), as registries that need a login do.
    pub fn twin_with_login(&self, dir: &Path, name: &str, user: &str, password: &str) -> Registry {
        let ip = self.addr.rsplit_once(':').expect("host:port").0;
        let hash = bcrypt::hash(password, 4).expect("bcrypt");
        let file = dir.join(format!("{name}.htpasswd"));
        std::fs::write(&file, format!("{user}:{hash}\n")).expect("htpasswd");
        // The config's last section, at the top level.
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
            file.display()
        );
        Self::spawn(ip, dir, name, &self.storage, &auth)
    }

    fn spawn(ip: &str, dir: &Path, name: &str, storage: &Path, http_extra: &str) -> Self {
        let port = {
            let l = std::net::TcpListener::bind((ip, 0)).expect("free port");
            l.local_addr().expect("addr").port()
        };
        let addr = format!("{ip}:{port}");
        let config = dir.join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{http_extra}",
                storage.display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry is not installed (Debian: apt-get install docker-registry); make test installs it");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            addr,
            storage: storage.to_path_buf(),
            child,
        }
    }

    /// Push `image` as `repo:tag`; returns the image reference.
    pub fn push(&self, image: &OciImage, repo: &str, tag: &str) -> String {
        for blob in [&image.layer, &image.config] {
            let (code, resp) = http(
                &self.addr,
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                "application/octet-stream",
                &[],
            );
            assert_eq!(code, 202, "starting an upload: {resp}");
            let location = resp
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Location: ")
                        .or_else(|| l.strip_prefix("location: "))
                })
                .expect("upload location")
                .trim()
                .to_string();
            let path = match location.find("/v2/") {
                Some(i) => location[i..].to_string(),
                None => location,
            };
            let sep = if path.contains('?') { '&' } else { '?' };
            let (code, resp) = http(
                &self.addr,
                "PUT",
                &format!("{path}{sep}digest={}", digest(blob)),
                "application/octet-stream",
                blob,
            );
            assert_eq!(code, 201, "uploading a blob: {resp}");
        }
        let (code, resp) = http(
            &self.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            "application/vnd.oci.image.manifest.v1+json",
            &image.manifest,
        );
        assert_eq!(code, 201, "pushing the manifest: {resp}");
        format!("{}/{repo}:{tag}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
