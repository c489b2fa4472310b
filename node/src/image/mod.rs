//! Images in containerd: pulled from a registry ([`registry`]) or imported from an OCI archive
//! ([`archive`]) into the content store, unpacked into snapshots ([`unpack`]), and recorded
//! under their normalised name ([`reference`]). Everything is written under a containerd lease
//! that ends when the pull does, so nothing half-pulled is collected mid-way or left behind.
//!
//! ```text
//! registry ─HTTP─▶ content store (layers, config, manifest + gc labels) ─diff.Apply─▶ snapshots
//! archive  ──────▶                                                      image record ─┘
//! ```

pub mod archive;
pub mod content;
pub mod credentials;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod unpack;
pub mod user;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    CreateImageRequest, GetImageRequest, Image, UpdateImageRequest,
};
use containerd_client::types::Descriptor as CtdDescriptor;
use prost_types::FieldMask;

use self::credentials::Credentials;
use self::oci::{Descriptor, ImageConfig, Manifest};
use self::reference::ImageRef;
use crate::ctd::{Conn, Lease};
use crate::error::{Error, Result};
use crate::runtime::{ImageInfo, PullPolicy};

/// How long a pull's lease lasts if the agent dies before ending it.
const LEASE_TTL: Duration = Duration::from_secs(3600);

/// The agent's images.
pub struct ImageStore {
    conn: Conn,
    registries: registry::Registries,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// What a manifest digest resolves to: content under a digest never changes, so a pod
    /// start need not read and parse the manifest and config again.
    by_digest: Mutex<HashMap<String, ImageInfo>>,
    /// Each pull is timed into this.
    pull_timing: prometheus_client::metrics::histogram::Histogram,
}

impl ImageStore {
    /// Images of `conn`'s namespace, pulled as `registries` says, each pull timed into
    /// `pull_timing`.
    pub fn new(
        conn: Conn,
        registries: registry::Registries,
        pull_timing: prometheus_client::metrics::histogram::Histogram,
    ) -> Self {
        Self {
            conn,
            registries,
            locks: Mutex::default(),
            by_digest: Mutex::default(),
            pull_timing,
        }
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(name.to_string()).or_default().clone()
    }

    /// `image` if it is here and `policy` lets it be used without pulling. Needs no lock:
    /// pod starts of one image would otherwise queue behind each other.
    pub async fn local(&self, image: &str, policy: PullPolicy) -> Option<ImageInfo> {
        if policy == PullPolicy::Always {
            return None;
        }
        let r = ImageRef::parse(image).ok()?;
        self.resolve(&r.to_string()).await.ok().flatten()
    }

    /// Make `image` present as `policy` says, pulling with `credentials` if given; one pull
    /// per image at a time.
    pub async fn ensure(
        &self,
        image: &str,
        policy: PullPolicy,
        credentials: Option<&Credentials>,
    ) -> Result<ImageInfo> {
        let r = ImageRef::parse(image)?;
        let name = r.to_string();
        let lock = self.lock_for(&name);
        let _held = lock.lock().await;
        if policy != PullPolicy::Always {
            if let Some(info) = self.resolve(&name).await? {
                return Ok(info);
            }
        }
        if policy == PullPolicy::Never {
            return Err(Error::ImageNeverPulled { image: name });
        }
        tracing::info!(image = %name, "pulling");
        let started = std::time::Instant::now();
        let lease = self.conn.lease(LEASE_TTL).await?;
        let result = async {
            let pulled =
                registry::pull(&self.conn, &lease, &r, &self.registries, credentials).await?;
            self.record(
                &name,
                &lease,
                &pulled.target,
                &pulled.manifest,
                &pulled.config,
            )
            .await
        }
        .await;
        lease.release().await;
        if result.is_ok() {
            self.pull_timing.observe(started.elapsed().as_secs_f64());
            tracing::info!(image = %name, elapsed_ms = started.elapsed().as_millis() as u64, "pulled");
        }
        result
    }

    /// Import every image of the OCI archive at `path`; returns their names.
    pub async fn import_archive(&self, path: &Path) -> Result<Vec<String>> {
        let path = path.to_path_buf();
        let layout = tokio::task::spawn_blocking(move || archive::read(&path))
            .await
            .map_err(|e| Error::BadImage {
                image: "archive".into(),
                reason: e.to_string(),
            })??;
        let lease = self.conn.lease(LEASE_TTL).await?;
        let result = self.import_layout(&layout, &lease).await;
        lease.release().await;
        result
    }

    async fn import_layout(&self, layout: &archive::Layout, lease: &Lease) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for (name, desc) in &layout.images {
            let name = ImageRef::parse(name)?.to_string();
            let target = layout.platform_manifest(desc)?;
            let manifest_bytes = layout.blob(&target.digest)?;
            let manifest: Manifest =
                serde_json::from_slice(manifest_bytes).map_err(|e| Error::BadImage {
                    image: name.clone(),
                    reason: format!("manifest: {e}"),
                })?;
            for l in &manifest.layers {
                content::write_bytes(
                    &self.conn,
                    lease,
                    &l.digest,
                    layout.blob(&l.digest)?.clone(),
                    HashMap::new(),
                )
                .await?;
            }
            let config = layout.blob(&manifest.config.digest)?.clone();
            content::write_bytes(
                &self.conn,
                lease,
                &manifest.config.digest,
                config.clone(),
                HashMap::new(),
            )
            .await?;
            content::write_bytes(
                &self.conn,
                lease,
                &target.digest,
                manifest_bytes.clone(),
                registry::manifest_gc_labels(&manifest),
            )
            .await?;
            let lock = self.lock_for(&name);
            let _held = lock.lock().await;
            self.record(&name, lease, &target, &manifest, &config)
                .await?;
            tracing::info!(image = %name, "imported");
            names.push(name);
        }
        Ok(names)
    }

    /// Unpack what is in the content store and point the image record `name` at it.
    async fn record(
        &self,
        name: &str,
        lease: &Lease,
        target: &Descriptor,
        manifest: &Manifest,
        config_bytes: &[u8],
    ) -> Result<ImageInfo> {
        let config: ImageConfig =
            serde_json::from_slice(config_bytes).map_err(|e| Error::BadImage {
                image: name.into(),
                reason: format!("config: {e}"),
            })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::BadImage {
                image: name.into(),
                reason: format!(
                    "{} layers but {} diff ids in the config",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        let chain =
            unpack::unpack(&self.conn, lease, &manifest.layers, &config.rootfs.diff_ids).await?;
        content::set_labels(
            &self.conn,
            &manifest.config.digest,
            HashMap::from([(
                format!("containerd.io/gc.ref.snapshot.{}", self.conn.snapshotter),
                chain.clone(),
            )]),
        )
        .await?;
        let image = Image {
            name: name.into(),
            labels: HashMap::new(),
            target: Some(CtdDescriptor {
                media_type: target.media_type.clone(),
                digest: target.digest.clone(),
                size: target.size,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.conn.channel());
        let created = images
            .create(self.conn.req_leased(
                CreateImageRequest {
                    image: Some(image.clone()),
                    source_date_epoch: None,
                },
                lease,
            ))
            .await;
        match created {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                images
                    .update(self.conn.req(UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(FieldMask {
                            paths: vec!["target".into()],
                        }),
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(Error::containerd("images.Update"))?;
            }
            Err(s) => return Err(Error::containerd("images.Create")(s)),
        }
        let mut info = info_of(name, &target.digest, chain, config);
        info.user = user::resolve(&self.conn, &info.chain_id, &info.user).await?;
        Ok(info)
    }

    /// The image recorded as `name`, if it is present and unpacked.
    pub async fn resolve(&self, name: &str) -> Result<Option<ImageInfo>> {
        let got = ImagesClient::new(self.conn.channel())
            .get(self.conn.req(GetImageRequest { name: name.into() }))
            .await;
        let image = match got {
            Ok(r) => r.into_inner().image,
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(Error::containerd("images.Get")(s)),
        };
        let Some(target) = image.and_then(|i| i.target) else {
            return Ok(None);
        };
        let cached = self
            .by_digest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target.digest)
            .cloned();
        if let Some(mut info) = cached {
            if unpack::snapshot_exists(&self.conn, &info.chain_id).await? {
                info.name = name.into();
                return Ok(Some(info));
            }
        }
        let bytes = match content::read(&self.conn, &target.digest).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::BadImage {
            image: name.into(),
            reason: format!("manifest: {e}"),
        })?;
        let config_bytes = content::read(&self.conn, &manifest.config.digest).await?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| Error::BadImage {
                image: name.into(),
                reason: format!("config: {e}"),
            })?;
        let chains = oci::chain_ids(&config.rootfs.diff_ids);
        let Some(top) = chains.last().cloned() else {
            return Ok(None);
        };
        if !unpack::snapshot_exists(&self.conn, &top).await? {
            // Content is here but the snapshots were removed: unpack again.
            let lease = self.conn.lease(LEASE_TTL).await?;
            let r = unpack::unpack(
                &self.conn,
                &lease,
                &manifest.layers,
                &config.rootfs.diff_ids,
            )
            .await;
            lease.release().await;
            r?;
        }
        let mut info = info_of(name, &target.digest, top, config);
        info.user = user::resolve(&self.conn, &info.chain_id, &info.user).await?;
        self.by_digest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.digest.clone(), info.clone());
        Ok(Some(info))
    }
}

fn info_of(name: &str, digest: &str, chain_id: String, config: ImageConfig) -> ImageInfo {
    let run = config.config.unwrap_or_default();
    ImageInfo {
        name: name.into(),
        digest: digest.into(),
        chain_id,
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        env: run.env.unwrap_or_default(),
        working_dir: run.working_dir.unwrap_or_default(),
        user: run.user.unwrap_or_default(),
    }
}
