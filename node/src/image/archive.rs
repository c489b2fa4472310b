//! OCI image archives (a tar of an OCI image layout: `oci-layout`, `index.json`,
//! `blobs/sha256/…`), as `ctr image export`, `skopeo copy oci-archive:` or `docker save` of
//! recent Docker write them, for nodes that cannot reach a registry.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::oci::{self, Descriptor, Index};
use crate::error::{Error, Result};

/// Annotation naming the image (containerd's).
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Annotation naming the image (OCI's; often only a tag).
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The blobs of an archive, by digest, and the images it names.
pub struct Layout {
    /// Blobs by `sha256:…`.
    pub blobs: HashMap<String, Vec<u8>>,
    /// (image name, manifest or index descriptor).
    pub images: Vec<(String, Descriptor)>,
}

/// Read an OCI archive at `path`.
pub fn read(path: &Path) -> Result<Layout> {
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    read_from(file, &path.display().to_string())
}

/// Read an OCI archive from `reader`; `what` names it in errors.
pub fn read_from(reader: impl Read, what: &str) -> Result<Layout> {
    let bad = |reason: String| Error::BadImage {
        image: what.to_string(),
        reason,
    };
    let mut blobs = HashMap::new();
    let mut index_json = None;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("reading the archive: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| bad(format!("entry name: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut data = Vec::new();
        if name == "index.json" || name.starts_with("blobs/sha256/") {
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("reading {name}: {e}")))?;
        }
        if name == "index.json" {
            index_json = Some(data);
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            if !hex.is_empty() {
                blobs.insert(format!("sha256:{hex}"), data);
            }
        }
    }
    let index_json =
        index_json.ok_or_else(|| bad("no index.json: not an OCI image layout".into()))?;
    let index: Index =
        serde_json::from_slice(&index_json).map_err(|e| bad(format!("index.json: {e}")))?;
    let mut images = Vec::new();
    for d in index.manifests {
        let ann = d.annotations.clone().unwrap_or_default();
        let name = ann
            .get(CONTAINERD_NAME)
            .or_else(|| ann.get(OCI_REF_NAME))
            .cloned()
            .ok_or_else(|| {
                bad(format!(
                    "manifest {} has no {CONTAINERD_NAME} or {OCI_REF_NAME} annotation naming it",
                    d.digest
                ))
            })?;
        images.push((name, d));
    }
    for (digest, data) in &blobs {
        if super::content::digest_of(data) != *digest {
            return Err(bad(format!("blob {digest} does not match its digest")));
        }
    }
    Ok(Layout { blobs, images })
}

impl Layout {
    /// A blob, or an error naming it.
    pub fn blob(&self, digest: &str) -> Result<&Vec<u8>> {
        self.blobs.get(digest).ok_or_else(|| Error::BadImage {
            image: "archive".into(),
            reason: format!("blob {digest} is missing"),
        })
    }

    /// The platform manifest `d` leads to (through an index if it is one).
    pub fn platform_manifest(&self, d: &Descriptor) -> Result<Descriptor> {
        let data = self.blob(&d.digest)?;
        let doc: serde_json::Value = serde_json::from_slice(data).map_err(|e| Error::BadImage {
            image: "archive".into(),
            reason: format!("{}: {e}", d.digest),
        })?;
        if oci::is_index(&d.media_type, &doc) {
            let index: Index = serde_json::from_value(doc).map_err(|e| Error::BadImage {
                image: "archive".into(),
                reason: format!("{}: {e}", d.digest),
            })?;
            let entry = oci::pick_platform(&index).ok_or_else(|| Error::BadImage {
                image: "archive".into(),
                reason: "no manifest for linux on this architecture".into(),
            })?;
            return self.platform_manifest(entry);
        }
        Ok(d.clone())
    }
}
