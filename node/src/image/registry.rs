//! Pulling over the OCI distribution protocol (containerd 1.6 has no transfer service, so the
//! agent pulls on the client side): manifest (via the index for this platform), config and
//! layers streamed into containerd's content store under a lease.

use std::collections::HashMap;
use std::path::PathBuf;

use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;

use super::content;
use super::credentials::Credentials;
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

/// A failed pull, with the whole chain of causes.
fn pull_error(image: &ImageRef, e: impl std::error::Error) -> Error {
    pull_failed(image, crate::error::with_causes(&e))
}

fn pull_failed(image: &ImageRef, message: impl Into<String>) -> Error {
    Error::Pull {
        image: image.to_string(),
        message: message.into(),
    }
}

/// How the agent reaches registries.
#[derive(Debug, Clone, Default)]
pub struct Registries {
    /// Registries (host\[:port\]) reached over plain HTTP; loopback ones are too, unless
    /// they have a CA of their own.
    pub insecure: Vec<String>,
    /// Private registries' CA bundles (PEM), trusted for that registry beside the system's
    /// roots. Read at each pull, so a replaced file counts from the next pull on.
    pub cas: Vec<(String, PathBuf)>,
}

impl Registries {
    fn ca_of(&self, registry: &str) -> Option<&PathBuf> {
        self.cas
            .iter()
            .find_map(|(host, path)| (host == registry).then_some(path))
    }

    /// The client for `image`'s registry: plain HTTP for insecure and loopback ones, else
    /// TLS checked against the system's roots and the registry's own CA.
    fn client_for(&self, image: &ImageRef) -> Result<oci_client::Client> {
        let ca = self.ca_of(&image.registry);
        let plain =
            ca.is_none() && (image.is_loopback() || self.insecure.contains(&image.registry));
        let mut extra_root_certificates = Vec::new();
        if let Some(path) = ca {
            let data = std::fs::read(path).map_err(|e| {
                pull_failed(
                    image,
                    format!("reading the registry's CA {}: {e}", path.display()),
                )
            })?;
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        // One TLS stack in the whole system: rustls with ring, as every gRPC connection.
        skiff_proto::tls::live::install_process_provider();
        oci_client::Client::try_from(ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        })
        .map_err(|e| pull_error(image, e))
    }
}

/// Pull `image` into the content store.
pub async fn pull(
    conn: &Conn,
    lease: &Lease,
    image: &ImageRef,
    registries: &Registries,
    credentials: Option<&Credentials>,
) -> Result<Pulled> {
    let client = registries.client_for(image)?;
    let auth = match credentials {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    };
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
            pull_failed(
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
        return Err(pull_failed(
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
