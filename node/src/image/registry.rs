//! Pulling over the OCI distribution protocol (containerd 1.6 has no transfer service, so the
//! agent pulls on the client side): manifest (via the index for this platform), config and
//! layers streamed into containerd's content store under a lease.

use std::collections::HashMap;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;

use super::content;
use super::oci::{self, Descriptor, Index, Manifest};
use super::reference::ImageRef;
use crate::ctd::{Conn, Lease};
use crate::error::{Error, Result};

const ACCEPTED: &[&str] = &[
    oci::MEDIA_MANIFEST,
    oci::MEDIA_DOCKER_MANIFEST,
    oci::MEDIA_INDEX,
    oci::MEDIA_DOCKER_LIST,
];

/// What a pull brought into the content store.
pub struct Pulled {
    /// The platform manifest's descriptor (the image record's target).
    pub target: Descriptor,
    /// The manifest.
    pub manifest: Manifest,
    /// The config blob.
    pub config: Vec<u8>,
}

fn pull_error(image: &ImageRef, e: impl std::fmt::Display) -> Error {
    Error::Pull {
        image: image.to_string(),
        message: e.to_string(),
    }
}

/// Pull `image` into the content store; registries in `insecure` (and loopback ones) are
/// reached over plain HTTP.
pub async fn pull(
    conn: &Conn,
    lease: &Lease,
    image: &ImageRef,
    insecure: &[String],
) -> Result<Pulled> {
    let protocol = if image.is_loopback() || insecure.contains(&image.registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    // One TLS stack in the whole system: rustls with ring, as every gRPC connection; the
    // registry's certificate is checked against the system's roots.
    skiff_proto::tls::live::install_process_provider();
    let client = oci_client::Client::try_from(ClientConfig {
        protocol,
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..Default::default()
    })
    .map_err(|e| pull_error(image, e))?;
    let auth = RegistryAuth::Anonymous;
    // Built from the parts already parsed: `Reference::from_str` compiles a large Unicode
    // regex on first use, which left ~25 MiB of heap in the agent for good.
    let (registry, repository) = (image.registry.clone(), image.repository.clone());
    let reference = match (&image.digest, &image.tag) {
        (Some(d), _) => Reference::with_digest(registry, repository, d.clone()),
        (None, t) => Reference::with_tag(
            registry,
            repository,
            t.clone().unwrap_or_else(|| "latest".into()),
        ),
    };
    let (bytes, digest) = client
        .pull_manifest_raw(&reference, &auth, ACCEPTED)
        .await
        .map_err(|e| pull_error(image, e))?;
    let mut bytes = bytes.to_vec();
    let mut digest = digest;
    let mut doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| pull_error(image, e))?;
    let mut media_type = doc
        .get("mediaType")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let mut reference = reference;
    if oci::is_index(&media_type, &doc) {
        let index: Index = serde_json::from_value(doc).map_err(|e| pull_error(image, e))?;
        let entry = oci::pick_platform(&index).ok_or_else(|| {
            pull_error(
                image,
                "the index has no manifest for linux on this architecture",
            )
        })?;
        reference = format!("{}/{}@{}", image.registry, image.repository, entry.digest)
            .parse()
            .map_err(|e| pull_error(image, e))?;
        let (b, d) = client
            .pull_manifest_raw(&reference, &auth, ACCEPTED)
            .await
            .map_err(|e| pull_error(image, e))?;
        bytes = b.to_vec();
        digest = d;
        doc = serde_json::from_slice(&bytes).map_err(|e| pull_error(image, e))?;
        media_type = entry.media_type.clone();
    }
    if content::digest_of(&bytes) != digest {
        return Err(pull_error(
            image,
            "manifest digest does not match its bytes",
        ));
    }
    let manifest: Manifest = serde_json::from_value(doc).map_err(|e| pull_error(image, e))?;
    if media_type.is_empty() {
        media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| oci::MEDIA_MANIFEST.into());
    }

    // Layers and config first, the manifest last, each with references to what it holds so
    // that containerd's collector keeps the whole tree once the image record points at it.
    for layer in &manifest.layers {
        let desc = oci_descriptor(layer);
        let blob = client
            .pull_blob_stream(&reference, &desc)
            .await
            .map_err(|e| pull_error(image, e))?;
        let image_name = image.to_string();
        let chunks = blob.stream.map(move |c| {
            c.map(|b| b.to_vec()).map_err(|e| Error::Pull {
                image: image_name.clone(),
                message: e.to_string(),
            })
        });
        content::write_stream(
            conn,
            lease,
            &layer.digest,
            layer.size,
            chunks,
            HashMap::new(),
        )
        .await?;
    }
    let mut config = Vec::new();
    client
        .pull_blob(&reference, &oci_descriptor(&manifest.config), &mut config)
        .await
        .map_err(|e| pull_error(image, e))?;
    content::write_bytes(
        conn,
        lease,
        &manifest.config.digest,
        config.clone(),
        HashMap::new(),
    )
    .await?;
    content::write_bytes(
        conn,
        lease,
        &digest,
        bytes.clone(),
        manifest_gc_labels(&manifest),
    )
    .await?;
    Ok(Pulled {
        target: Descriptor {
            media_type,
            digest,
            size: bytes.len() as i64,
            platform: None,
            annotations: None,
        },
        manifest,
        config,
    })
}

fn oci_descriptor(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}

/// containerd's garbage-collection references from a manifest to its config and layers.
pub fn manifest_gc_labels(manifest: &Manifest) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    labels.insert(
        "containerd.io/gc.ref.content.config".to_string(),
        manifest.config.digest.clone(),
    );
    for (i, l) in manifest.layers.iter().enumerate() {
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.clone(),
        );
    }
    labels
}
