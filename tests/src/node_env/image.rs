//! A small OCI image built on the spot from Debian's `busybox-static`: one uncompressed
//! layer with `/bin/busybox` and its applets as symlinks. Nothing is fetched from anywhere.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Applets linked into the image.
const APPLETS: &[&str] = &[
    "sh", "httpd", "wget", "sleep", "echo", "cat", "ls", "env", "true", "false", "hostname", "ps",
    "kill", "mkdir", "test", "id", "head", "date", "nc", "grep", "touch", "rm", "nslookup",
    "chmod", "printf",
];

/// An image's blobs.
pub struct OciImage {
    /// The layer (a tar).
    pub layer: Vec<u8>,
    /// The config JSON.
    pub config: Vec<u8>,
    /// The manifest JSON.
    pub manifest: Vec<u8>,
}

/// `sha256:<hex>`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The image's top-level folders and their modes.
const TOP_DIRS: [(&str, u32); 9] = [
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("run", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("www", 0o755),
];

fn busybox_path() -> &'static str {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!(
        "busybox is not installed (Debian: apt-get install busybox-static); make test installs it"
    )
}

/// The shared libraries (and the loader) a dynamically linked binary needs, as `ldd` lists them.
fn shared_libraries(binary: &Path) -> Vec<String> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .expect("run ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => l,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

impl OciImage {
    /// The busybox image; `marker` is written to `/etc/skiff-image` so images can differ.
    pub fn busybox(marker: &str) -> Self {
        Self::build(marker, &[], "")
    }

    /// The busybox image with `/etc/passwd` and `/etc/group` as given, whose `USER` is `user`
    /// (a name, as images often give it).
    pub fn busybox_as(marker: &str, user: &str, passwd: &str, group: &str) -> Self {
        let files = [
            ("etc/passwd".to_string(), passwd.as_bytes().to_vec()),
            ("etc/group".to_string(), group.as_bytes().to_vec()),
        ];
        Self::build(marker, &files, user)
    }

    /// The busybox image plus host binaries, each at `/bin/<name>` with the shared libraries
    /// `ldd` names at their host paths (the binaries are the workspace's own, dynamically linked).
    pub fn busybox_with(marker: &str, binaries: &[(&str, &Path)]) -> Self {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (name, path) in binaries {
            let data =
                std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            files.insert(format!("bin/{name}"), data);
            for lib in shared_libraries(path) {
                let data = std::fs::read(&lib).unwrap_or_else(|e| panic!("read {lib}: {e}"));
                files.insert(lib.trim_start_matches('/').to_string(), data);
            }
        }
        let files: Vec<(String, Vec<u8>)> = files.into_iter().collect();
        Self::build(marker, &files, "")
    }

    fn build(marker: &str, extra: &[(String, Vec<u8>)], user: &str) -> Self {
        let mut b = tar::Builder::new(Vec::new());
        // The mount points a runtime mounts on, as base images (Alpine's minirootfs) carry
        // them: without, each container start creates them in its writable layer.
        for (dir, mode) in TOP_DIRS {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(mode);
            h.set_size(0);
            b.append_data(&mut h, dir, std::io::empty())
                .expect("tar dir");
        }
        let bin = std::fs::read(busybox_path()).expect("read busybox");
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_size(bin.len() as u64);
        b.append_data(&mut h, "bin/busybox", bin.as_slice())
            .expect("tar busybox");
        for a in APPLETS {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, format!("bin/{a}"), "busybox")
                .expect("tar link");
        }
        for file in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(0);
            b.append_data(&mut h, file, std::io::empty())
                .expect("tar etc file");
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(marker.len() as u64);
        b.append_data(&mut h, "etc/skiff-image", marker.as_bytes())
            .expect("tar marker");
        let mut dirs = std::collections::BTreeSet::new();
        for (path, data) in extra {
            // Parent directories first (lib/x86_64-linux-gnu, lib64, ...).
            let mut parent = Path::new(path).parent();
            let mut chain = Vec::new();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                chain.push(p.to_path_buf());
                parent = p.parent();
            }
            for dir in chain.into_iter().rev() {
                let dir = dir.to_string_lossy().to_string();
                if TOP_DIRS.iter().any(|(d, _)| *d == dir) || !dirs.insert(dir.clone()) {
                    continue;
                }
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, &dir, std::io::empty())
                    .expect("tar dir");
            }
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data.as_slice())
                .expect("tar file");
        }
        let layer = b.into_inner().expect("tar");
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "User": user},
            "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
        }))
        .expect("config");
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": digest(&layer), "size": layer.len()}],
        }))
        .expect("manifest");
        Self {
            layer,
            config,
            manifest,
        }
    }

    /// An OCI archive (a tar of an OCI image layout) naming the image `name`.
    pub fn archive(&self, name: &str) -> Vec<u8> {
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest(&self.manifest),
                "size": self.manifest.len(),
                "annotations": {"io.containerd.image.name": name,
                                "org.opencontainers.image.ref.name": "latest"},
            }],
        }))
        .expect("index");
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        files.insert(
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        );
        files.insert("index.json".into(), index);
        for blob in [&self.layer, &self.config, &self.manifest] {
            let d = digest(blob);
            files.insert(format!("blobs/sha256/{}", &d[7..]), blob.clone());
        }
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data.as_slice()).expect("tar");
        }
        b.into_inner().expect("tar")
    }
}
