//! Container roots made ahead of time: while the node is idle, snapshots of the image this
//! node last started a container of, prepared for writing and mounted under
//! `<data-dir>/warm-roots/<key>`, waiting for a container of that image. A container that
//! takes one runs on that snapshot (its record names it) and its shim binds the mounted root
//! into the task's bundle instead of mounting the image's layers itself. A pod start so skips
//! the snapshot's preparation (containerd's folders for it) and overlayfs's set-up at mount
//! (its work folder and its probes of the upper file system): new inodes that, on an ext4
//! without a journal (as on some VMs), each scan past the inodes freed in the last minute, and
//! were 10-20% of a burst's CPU after a burst of deletions. Off unless `--warm-roots N` asks
//! for N.
//!
//! Roots of an image the node no longer starts are dropped, once the node is quiet again. A
//! restarted agent drops the roots an earlier run left, except those a container runs on.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use crate::quiet::Quiet;
use crate::runtime::{
    labels, ContainerInfo, ContainerRuntime, ImageInfo, PreparedRoot, PullPolicy,
};

/// A root ready for a container of the image whose top layer is `chain_id`.
struct Ready {
    root: PreparedRoot,
    chain_id: String,
}

/// What the pool should do next.
enum Work {
    /// Make a root of this image.
    Make(ImageInfo),
    /// Drop a root of an image the node no longer starts.
    Drop(Ready),
}

/// The node's container roots made ahead.
pub struct WarmRoots<R> {
    runtime: Arc<R>,
    /// Where roots are mounted, one folder per snapshot key.
    dir: PathBuf,
    target: usize,
    /// `skiff-root-<this run>-`: keys stay unique across restarts, since a container keeps
    /// the snapshot it took.
    prefix: String,
    /// The image of the last container started here: the one roots are made for.
    image: Mutex<Option<ImageInfo>>,
    ready: Mutex<Vec<Ready>>,
    quiet: Quiet,
    next: AtomicU64,
    wanted: Notify,
}

impl<R: ContainerRuntime> WarmRoots<R> {
    /// A pool of `target` roots mounted under `dir`; [`WarmRoots::keep_filled`] fills it.
    pub fn new(runtime: Arc<R>, dir: PathBuf, target: usize) -> Self {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        Self {
            prefix: format!("skiff-root-{run:x}-"),
            runtime,
            dir,
            target,
            image: Mutex::new(None),
            ready: Mutex::new(Vec::new()),
            quiet: Quiet::default(),
            next: AtomicU64::new(0),
            wanted: Notify::new(),
        }
    }

    /// A ready root for a container of `image`, if there is one; the pool then makes roots
    /// of `image` from now on.
    pub fn take(&self, image: &ImageInfo) -> Option<PreparedRoot> {
        if self.target == 0 {
            return None;
        }
        self.remember(image);
        let taken = {
            let mut ready = self.ready.lock().ok()?;
            let i = ready.iter().position(|r| r.chain_id == image.chain_id)?;
            ready.swap_remove(i).root
        };
        self.quiet.took();
        self.wanted.notify_one();
        tracing::debug!(key = %taken.key, "took a root made ahead");
        Some(taken)
    }

    fn remember(&self, image: &ImageInfo) {
        let Ok(mut last) = self.image.lock() else {
            return;
        };
        if last.as_ref().map(|i| &i.chain_id) != Some(&image.chain_id) {
            *last = Some(image.clone());
            self.wanted.notify_one();
        }
    }

    /// Release what an earlier run of the agent left, then keep `target` roots of the last
    /// image ready, making them only while no pod start holds a turn at `gate` (of
    /// `gate_size` turns).
    pub async fn keep_filled(self: Arc<Self>, gate: Arc<Semaphore>, gate_size: usize) {
        let containers = match self.runtime.list().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "listing containers; roots left by an earlier run are kept for now");
                None
            }
        };
        if let Some(containers) = &containers {
            self.release_left_over(containers).await;
        }
        if self.target == 0 {
            return;
        }
        self.remember_newest(containers.as_deref().unwrap_or_default())
            .await;
        loop {
            if !self.has_work() {
                self.wanted.notified().await;
                continue;
            }
            self.quiet.wait(&gate, gate_size).await;
            // Looked at again after the wait: a pod start may have changed what is needed.
            match self.next_work() {
                Some(Work::Make(image)) => self.make(&image).await,
                Some(Work::Drop(stale)) => {
                    if let Err(e) = self
                        .runtime
                        .drop_root(&stale.root.key, &stale.root.dir, false)
                        .await
                    {
                        tracing::warn!(key = %stale.root.key, error = %e, "dropping a root of an image no longer started");
                    }
                }
                None => {}
            }
        }
    }

    /// Whether [`WarmRoots::next_work`] would find something, leaving the pool as it is.
    fn has_work(&self) -> bool {
        let Some(image) = self.image.lock().ok().and_then(|i| i.clone()) else {
            return false;
        };
        self.ready.lock().is_ok_and(|ready| {
            ready.len() < self.target || ready.iter().any(|r| r.chain_id != image.chain_id)
        })
    }

    /// A root of an image other than the last one started (taken out of the pool), else the
    /// last image if fewer than `target` of its roots are ready.
    fn next_work(&self) -> Option<Work> {
        let image = self.image.lock().ok()?.clone()?;
        let mut ready = self.ready.lock().ok()?;
        if let Some(i) = ready.iter().position(|r| r.chain_id != image.chain_id) {
            return Some(Work::Drop(ready.swap_remove(i)));
        }
        (ready.len() < self.target).then_some(Work::Make(image))
    }

    async fn make(&self, image: &ImageInfo) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let key = format!("{}{n}", self.prefix);
        let dir = self.dir.join(&key);
        // The folder first: a snapshot of this pool always has one until a container takes it,
        // so a restarted agent finds every snapshot it must drop.
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "making a root's folder");
            tokio::time::sleep(Duration::from_secs(5)).await;
            return;
        }
        match self.runtime.prepare_root(&key, image, &dir).await {
            Ok(()) => {
                tracing::debug!(%key, image = %image.name, "root made ahead");
                if let Ok(mut r) = self.ready.lock() {
                    r.push(Ready {
                        root: PreparedRoot { key, dir },
                        chain_id: image.chain_id.clone(),
                    });
                }
            }
            Err(e) => {
                tracing::warn!(%key, image = %image.name, error = %e, "making a root ahead");
                let _ = std::fs::remove_dir(&dir);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }

    /// A restarted agent makes roots of the image of the newest container it finds, as the
    /// agent before it did.
    async fn remember_newest(&self, containers: &[ContainerInfo]) {
        let newest = containers
            .iter()
            .filter(|c| !c.label(labels::IMAGE).is_empty())
            .max_by_key(|c| c.created_at);
        if let Some(c) = newest {
            let name = c.label(labels::IMAGE);
            if let Some(image) = self.runtime.local_image(name, PullPolicy::Never).await {
                self.remember(&image);
            }
        }
    }

    /// Roots an earlier run made: each is unmounted and its folder removed; its snapshot too
    /// unless one of `containers` runs on it (the agent stopped between a take and its
    /// detach).
    async fn release_left_over(&self, containers: &[ContainerInfo]) {
        let names = folder_names(&self.dir);
        let in_use: HashSet<&str> = containers.iter().map(|c| c.snapshot_key.as_str()).collect();
        for key in names {
            let dir = self.dir.join(&key);
            tracing::info!(%key, "dropping a root left by an earlier run");
            if let Err(e) = self
                .runtime
                .drop_root(&key, &dir, in_use.contains(key.as_str()))
                .await
            {
                tracing::warn!(%key, error = %e, "dropping a left-over root");
            }
        }
    }
}

fn folder_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect()
}
