//! The parts of the OCI image format (and Docker's v2 schema 2, its twin) the agent reads:
//! index, manifest, config, and the chain ids that name unpacked layer snapshots.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// OCI image index.
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest.
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Platform, in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

/// An index entry's platform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
}

/// An index (or manifest list): manifests per platform.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// The entries.
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Its media type, when it says.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
}

/// An image config.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ImageConfig {
    /// How to run it.
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// The uncompressed layer digests.
    pub rootfs: RootFs,
}

/// The run settings of an image config.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// Entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Cmd.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Env, `K=V`.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// WorkingDir.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// User: `uid`, `uid:gid`, or names.
    #[serde(default)]
    pub user: Option<String>,
}

/// The rootfs of an image config.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RootFs {
    /// Uncompressed digests of the layers, base first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Whether `media_type` (or the document's shape) is an index.
pub fn is_index(media_type: &str, doc: &serde_json::Value) -> bool {
    media_type == MEDIA_INDEX
        || media_type == MEDIA_DOCKER_LIST
        || (media_type.is_empty() && doc.get("manifests").is_some())
}

/// The index entry for this machine's platform.
pub fn pick_platform(index: &Index) -> Option<&Descriptor> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    index
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| index.manifests.iter().find(|d| d.platform.is_none()))
}

/// Chain ids of the layers (OCI: `chain(n) = sha256(chain(n-1) + " " + diff(n))`), base first.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"sha256:aaaa sha256:bbbb"))
        );
        assert_eq!(ids[1], want);
    }

    #[test]
    fn the_platform_entry_of_an_index_is_picked() {
        let index: Index = serde_json::from_value(serde_json::json!({
            "manifests": [
                {"mediaType": MEDIA_MANIFEST, "digest": "sha256:arm", "size": 1,
                 "platform": {"architecture": "arm64", "os": "linux"}},
                {"mediaType": MEDIA_MANIFEST, "digest": "sha256:amd", "size": 1,
                 "platform": {"architecture": "amd64", "os": "linux"}}
            ]
        }))
        .unwrap();
        let want = if std::env::consts::ARCH == "aarch64" {
            "sha256:arm"
        } else {
            "sha256:amd"
        };
        assert_eq!(pick_platform(&index).unwrap().digest, want);
    }
}
