//! Joining the shim that already serves a task's group, as the Go shim's `start` does when
//! the group's socket answers: same socket address, same `address` file in the bundle.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::flags::StartFlags;

/// The annotations that name a task's shim group, in the Go shim's order of precedence.
const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// The part of the bundle's runtime spec that names the group.
#[derive(Deserialize)]
struct Spec {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// The address of the running shim of the task's group, after writing it to the bundle's
/// `address` file; `None` when there is no group, its shim does not answer, or anything is
/// out of the ordinary (the Go shim then decides).
pub fn join(start: &StartFlags, bundle: &Path, socket_dir: &Path) -> Option<String> {
    let spec = std::fs::read(bundle.join("config.json")).ok()?;
    let spec: Spec = serde_json::from_slice(&spec).ok()?;
    let group = GROUP_ANNOTATIONS
        .iter()
        .find_map(|key| spec.annotations.get(*key))?;
    let socket = socket_dir.join(socket_name(&start.address, &start.namespace, group)?);
    UnixStream::connect(&socket).ok()?;
    let address = format!("unix://{}", socket.to_str()?);
    write_address(bundle, &address).ok()?;
    Some(address)
}

/// The socket file name of a group's shim: the SHA-256 of Go's
/// `filepath.Join(containerd_address, namespace, group)`. Only paths that join to what they
/// spell are hashed here; one that Go's path cleaning would change is left to the Go shim.
fn socket_name(containerd_address: &str, namespace: &str, group: &str) -> Option<String> {
    let plain = |part: &str| !part.is_empty() && part != "." && part != ".." && !part.contains('/');
    let address_is_clean =
        containerd_address.starts_with('/') && containerd_address[1..].split('/').all(plain);
    if !(address_is_clean && plain(namespace) && plain(group)) {
        return None;
    }
    let joined = format!("{containerd_address}/{namespace}/{group}");
    Some(format!("{:x}", Sha256::digest(joined.as_bytes())))
}

/// Write `address` to the bundle's `address` file the way the Go shim does: a fresh hidden
/// file renamed into place, so containerd never reads half an address.
fn write_address(bundle: &Path, address: &str) -> std::io::Result<()> {
    let temp = bundle.join(".address");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)?;
    if let Err(e) = file
        .write_all(address.as_bytes())
        .and_then(|()| file.sync_all())
    {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    std::fs::rename(&temp, bundle.join("address"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    fn start(address: &str) -> StartFlags {
        StartFlags {
            namespace: "skiff-n1".into(),
            address: address.into(),
            id: "pod-a-app".into(),
        }
    }

    fn bundle_with(annotations: &str) -> tempfile::TempDir {
        let bundle = tempfile::tempdir().expect("tempdir");
        let spec = format!(r#"{{"ociVersion":"1.0.2","annotations":{annotations}}}"#);
        std::fs::write(bundle.path().join("config.json"), spec).expect("config.json");
        bundle
    }

    #[test]
    fn socket_names_match_the_go_shims() {
        // Taken from containerd 1.6.20 with `-address /tmp/shx/c.sock -namespace t1 -id c1`.
        assert_eq!(
            socket_name("/tmp/shx/c.sock", "t1", "c1").as_deref(),
            Some("2a16d6f2530264cda206d3d12ca083e2f7049c468471c6ed17b0cebc6f8b5320")
        );
        for (address, namespace, group) in [
            ("relative.sock", "n", "g"),
            ("/run//c.sock", "n", "g"),
            ("/run/c.sock/", "n", "g"),
            ("/run/../c.sock", "n", "g"),
            ("/run/c.sock", "..", "g"),
            ("/run/c.sock", "n", "a/b"),
            ("/run/c.sock", "n", ""),
        ] {
            assert_eq!(
                socket_name(address, namespace, group),
                None,
                "{address} {namespace} {group}"
            );
        }
    }

    #[test]
    fn a_task_joins_its_groups_answering_shim_and_records_the_address() {
        let sockets = tempfile::tempdir().expect("tempdir");
        let bundle = bundle_with(r#"{"io.containerd.runc.v2.group":"sandbox-1"}"#);
        let name = socket_name("/run/c.sock", "skiff-n1", "sandbox-1").expect("name");
        let _shim = UnixListener::bind(sockets.path().join(&name)).expect("listen");

        let address = join(&start("/run/c.sock"), bundle.path(), sockets.path());

        let expected = format!("unix://{}/{name}", sockets.path().display());
        assert_eq!(address.as_deref(), Some(expected.as_str()));
        let written = std::fs::read_to_string(bundle.path().join("address")).expect("address");
        assert_eq!(written, expected);
        assert!(!bundle.path().join(".address").exists());
    }

    #[test]
    fn no_group_or_no_answering_shim_is_left_to_the_go_shim() {
        let sockets = tempfile::tempdir().expect("tempdir");
        let ungrouped = bundle_with(r#"{"other":"x"}"#);
        assert_eq!(
            join(&start("/run/c.sock"), ungrouped.path(), sockets.path()),
            None
        );

        // A socket file whose shim has exited: the Go shim removes it and starts a new one.
        let grouped = bundle_with(r#"{"io.kubernetes.cri.sandbox-id":"gone"}"#);
        let name = socket_name("/run/c.sock", "skiff-n1", "gone").expect("name");
        drop(UnixListener::bind(sockets.path().join(&name)).expect("listen"));
        assert_eq!(
            join(&start("/run/c.sock"), grouped.path(), sockets.path()),
            None
        );
        assert!(!grouped.path().join("address").exists());
    }
}
