//! Starting a control node safely.
//!
//! - Flags are checked before anything touches the disk: member ids, addresses, and that
//!   this member is one of the initial cluster.
//! - The data directory is claimed by writing `member.json` (cluster id, member id) on first
//!   start; a later start with another cluster id or member id is refused, so a data
//!   directory is never mixed into the wrong cluster.
//! - A fresh cluster is initialised once, by the member with the lowest id, and only if no
//!   peer already reports a cluster; a restart resumes from disk.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use skiff_raft::{NodeId, RaftNode};

/// Errors found while starting a control node.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// An address flag is malformed.
    #[error("{field}: {value:?} is not a valid address ({reason}); expected host:port, e.g. 127.0.0.1:7401")]
    BadAddress {
        /// The flag.
        field: String,
        /// The value given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// `--initial-cluster` is malformed.
    #[error("--initial-cluster: {0}; expected ID=HOST:PORT[,ID=HOST:PORT...], e.g. 1=127.0.0.1:7401,2=127.0.0.1:7402")]
    BadInitialCluster(String),
    /// This member is not one of the initial cluster.
    #[error("--id {id} is not a member of --initial-cluster (members: {members})")]
    UnknownMember {
        /// This member's id.
        id: NodeId,
        /// The ids given.
        members: String,
    },
    /// The data directory was written by a newer release.
    #[error("data directory {dir} is of format {found}; this build reads format {supported} and older: run the release that wrote it (or a newer one)")]
    NewerFormat {
        /// The directory.
        dir: PathBuf,
        /// Its format.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The data directory belongs to another cluster.
    #[error("data directory {dir} belongs to cluster {found:?}, not {expected:?}; use that cluster's id or another directory")]
    ForeignCluster {
        /// The directory.
        dir: PathBuf,
        /// The cluster id on disk.
        found: String,
        /// The cluster id given.
        expected: String,
    },
    /// The data directory belongs to another member id.
    #[error("data directory {dir} belongs to member {found}, not {expected}")]
    ForeignMember {
        /// The directory.
        dir: PathBuf,
        /// The member id on disk.
        found: NodeId,
        /// The member id given.
        expected: NodeId,
    },
    /// Reading or writing the data directory failed.
    #[error("data directory {dir}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `member.json` exists but is not readable.
    #[error("{path} is corrupt")]
    CorruptMeta {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Check an address flag and resolve it.
pub fn parse_addr(field: &str, value: &str) -> Result<SocketAddr, BootstrapError> {
    let bad = |reason: &str| BootstrapError::BadAddress {
        field: field.into(),
        value: value.into(),
        reason: reason.into(),
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&e.to_string()))?
        .next()
        .ok_or_else(|| bad("the host does not resolve"))
}

/// Parse `1=host:port,2=host:port,...`.
pub fn parse_initial_cluster(value: &str) -> Result<BTreeMap<NodeId, String>, BootstrapError> {
    let mut members = BTreeMap::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| BootstrapError::BadInitialCluster(format!("{part:?} has no '='")))?;
        let id: NodeId = id.trim().parse().map_err(|_| {
            BootstrapError::BadInitialCluster(format!("member id {id:?} is not a positive integer"))
        })?;
        if id == 0 {
            return Err(BootstrapError::BadInitialCluster(
                "member ids start at 1".into(),
            ));
        }
        parse_addr(&format!("--initial-cluster member {id}"), addr.trim())?;
        if members.insert(id, addr.trim().to_string()).is_some() {
            return Err(BootstrapError::BadInitialCluster(format!(
                "member {id} is listed twice"
            )));
        }
    }
    if members.is_empty() {
        return Err(BootstrapError::BadInitialCluster("no members".into()));
    }
    Ok(members)
}

/// A cluster id derived from the initial members, for operators who do not set one.
pub fn derived_cluster_id(members: &BTreeMap<NodeId, String>) -> String {
    // FNV-1a: stable across builds and platforms, unlike the std hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for (id, addr) in members {
        for b in format!("{id}={addr};").bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("skiff-{h:016x}")
}

/// What `member.json` holds.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct MemberMeta {
    cluster_id: String,
    member_id: NodeId,
    /// The data directory's format (absent in directories from before formats: 1).
    #[serde(default = "first_format")]
    format: u32,
}

fn first_format() -> u32 {
    1
}

/// Whether the data directory was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDir {
    /// Claimed now.
    Fresh,
    /// Claimed before by this cluster and member.
    Existing,
}

/// The cluster `dir` was claimed for, if it was.
pub fn claimed_cluster_id(dir: &Path) -> Result<Option<String>, BootstrapError> {
    Ok(claimed_member(dir)?.map(|(cluster, _)| cluster))
}

/// The cluster and member `dir` was claimed for, if it was.
pub fn claimed_member(dir: &Path) -> Result<Option<(String, NodeId)>, BootstrapError> {
    let path = dir.join("member.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<MemberMeta>(&bytes)
            .map(|m| Some((m.cluster_id, m.member_id)))
            .map_err(|source| BootstrapError::CorruptMeta { path, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BootstrapError::Io {
            dir: dir.to_path_buf(),
            source,
        }),
    }
}

/// Claim `dir` for `cluster_id` and member `id`, or check an earlier claim.
pub fn claim_data_dir(dir: &Path, cluster_id: &str, id: NodeId) -> Result<DataDir, BootstrapError> {
    let io_err = |source| BootstrapError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let path = dir.join("member.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let meta: MemberMeta =
                serde_json::from_slice(&bytes).map_err(|source| BootstrapError::CorruptMeta {
                    path: path.clone(),
                    source,
                })?;
            if meta.format > skiff_raft::versions::DATA_FORMAT {
                return Err(BootstrapError::NewerFormat {
                    dir: dir.into(),
                    found: meta.format,
                    supported: skiff_raft::versions::DATA_FORMAT,
                });
            }
            if meta.cluster_id != cluster_id {
                return Err(BootstrapError::ForeignCluster {
                    dir: dir.into(),
                    found: meta.cluster_id,
                    expected: cluster_id.into(),
                });
            }
            if meta.member_id != id {
                return Err(BootstrapError::ForeignMember {
                    dir: dir.into(),
                    found: meta.member_id,
                    expected: id,
                });
            }
            if meta.format < skiff_raft::versions::DATA_FORMAT {
                // Recorded before the stores are opened (and brought to this format), so that
                // an older release refuses the directory from here on instead of misreading it.
                tracing::info!(
                    dir = %dir.display(),
                    from = meta.format,
                    to = skiff_raft::versions::DATA_FORMAT,
                    "upgrading the data directory's format; older releases will refuse it"
                );
                write_meta(
                    dir,
                    &MemberMeta {
                        format: skiff_raft::versions::DATA_FORMAT,
                        ..meta
                    },
                )
                .map_err(io_err)?;
            }
            Ok(DataDir::Existing)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io_err)?;
            let meta = MemberMeta {
                cluster_id: cluster_id.into(),
                member_id: id,
                format: skiff_raft::versions::DATA_FORMAT,
            };
            write_meta(dir, &meta).map_err(io_err)?;
            Ok(DataDir::Fresh)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Write `member.json` whole or not at all.
fn write_meta(dir: &Path, meta: &MemberMeta) -> io::Result<()> {
    let tmp = dir.join("member.json.tmp");
    let bytes = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join("member.json"))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Initialise the cluster if this member should and nobody has yet. Returns whether it did.
pub async fn initialize_once(
    node: &RaftNode,
    members: &BTreeMap<NodeId, String>,
) -> Result<bool, skiff_raft::StoreError> {
    if node.is_initialized().await? {
        return Ok(false);
    }
    if members.keys().next() != Some(&node.id()) {
        tracing::info!(
            "waiting for member {} to initialise the cluster",
            members.keys().next().copied().unwrap_or(0)
        );
        return Ok(false);
    }
    let creds = node.config().tls.as_ref().map(|c| c.current());
    for (id, addr) in members {
        if *id == node.id() {
            continue;
        }
        if let Ok(st) = skiff_proto::Client::status_of(addr, creds.as_ref()).await {
            if st.leader != 0 || st.last_log_index > 0 {
                tracing::warn!(
                    peer = id,
                    "peer already belongs to an initialised cluster; not initialising a new one. \
                     If this member's data was lost, remove it and add it back with `skiffctl cluster add`"
                );
                return Ok(false);
            }
        }
    }
    match node.initialize(members.clone()).await {
        Ok(()) => {
            tracing::info!(members = ?members, "initialised a new cluster");
            Ok(true)
        }
        Err(skiff_raft::StoreError::Initialize(e)) => {
            tracing::info!("cluster already initialised: {e}");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_rejects_bad_input() {
        let m = parse_initial_cluster("1=127.0.0.1:7401, 2=127.0.0.1:7402").unwrap();
        assert_eq!(m.len(), 2);
        assert!(parse_initial_cluster("1=127.0.0.1")
            .unwrap_err()
            .to_string()
            .contains("no port"));
        assert!(parse_initial_cluster("x=127.0.0.1:1")
            .unwrap_err()
            .to_string()
            .contains("not a positive integer"));
        assert!(parse_initial_cluster("1=127.0.0.1:1,1=127.0.0.1:2")
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(parse_addr("--listen", "127.0.0.1:99999")
            .unwrap_err()
            .to_string()
            .contains("--listen"));
    }

    #[test]
    fn data_dir_of_another_cluster_or_member_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(claim_data_dir(dir.path(), "a", 1).unwrap(), DataDir::Fresh);
        assert_eq!(
            claim_data_dir(dir.path(), "a", 1).unwrap(),
            DataDir::Existing
        );
        assert!(matches!(
            claim_data_dir(dir.path(), "b", 1),
            Err(BootstrapError::ForeignCluster { .. })
        ));
        assert!(matches!(
            claim_data_dir(dir.path(), "a", 2),
            Err(BootstrapError::ForeignMember { .. })
        ));
    }

    #[test]
    fn a_data_dir_from_before_formats_opens_and_one_of_a_newer_format_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("member.json");
        // As members wrote it before formats.
        std::fs::write(&meta, r#"{"cluster_id": "a", "member_id": 1}"#).unwrap();
        assert_eq!(
            claim_data_dir(dir.path(), "a", 1).unwrap(),
            DataDir::Existing
        );
        let recorded: MemberMeta = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        assert_eq!(
            recorded.format,
            skiff_raft::versions::DATA_FORMAT,
            "the format is upgraded once opened"
        );
        let newer = skiff_raft::versions::DATA_FORMAT + 1;
        std::fs::write(
            &meta,
            format!(r#"{{"cluster_id": "a", "member_id": 1, "format": {newer}}}"#),
        )
        .unwrap();
        let e = claim_data_dir(dir.path(), "a", 1).unwrap_err().to_string();
        assert!(
            e.contains(&format!("format {newer}"))
                && e.contains(&format!("format {}", skiff_raft::versions::DATA_FORMAT)),
            "{e}"
        );
    }
}
