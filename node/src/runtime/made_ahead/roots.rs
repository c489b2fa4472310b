//! Container roots made ahead of time: while the node is idle, snapshots of the image this
//! node last started a container of, prepared for writing and mounted under
//! `<data-dir>/warm-roots/<key>`, waiting for a container of that image. A container that
//! takes one runs on that snapshot (its record names it) and its shim binds the mounted root
//! into the task's bundle instead of mounting the image's layers itself. A pod start so skips
//! the snapshot's preparation (containerd's folders for it) and overlayfs's set-up at mount
//! (its work folder and its probes of the upper file system): new inodes that, on an ext4
//! without a journal (as on some VMs), each scan past the inodes freed in the last minute, and
//! were 10-20% of a burst's CPU after a burst of deletions. Off unless `--warm-roots N` asks
//! for N. On a burst of three images, where it serves the third of the pods whose image
//! started last, it still lowered the p50 by 12% (docs/BENCHMARKS.md).
//!
//! Roots of an image the node no longer starts are dropped, once the node is quiet again. A
//! restarted agent drops the roots an earlier run left, except those a container runs on.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use super::quiet::Quiet;
use super::MadeAheadRuntime;
use crate::runtime::{labels, ContainerInfo, ImageInfo, PreparedRoot, PullPolicy};

/// The start of every root's snapshot key.
const KEY_PREFIX: &str = "skiff-root-";

/// How long after a root of an image could not be made another is tried.
const RETRY_AFTER: Duration = Duration::from_secs(300);

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
    /// `skiff-root-<this agent>-`: the keys of this agent's roots, apart from those of other
    /// agents on the same containerd.
    agent_prefix: String,
    /// `<agent prefix><this run>-`: keys stay unique across restarts, since a container keeps
    /// the snapshot it took.
    prefix: String,
    /// Roots taken whose snapshots are still gc roots (see [`WarmRoots::unpin_taken`]).
    taken: Mutex<Vec<String>>,
    /// The image of the last container started here: the one roots are made for.
    image: Mutex<Option<ImageInfo>>,
    ready: Mutex<Vec<Ready>>,
    /// The image whose last root could not be made, and when: not tried again for a while
    /// (an image of too many layers for one overlay mount would fail every time).
    failed: Mutex<Option<(String, Instant)>>,
    quiet: Quiet,
    next: AtomicU64,
    wanted: Notify,
}

impl<R: MadeAheadRuntime> WarmRoots<R> {
    /// A pool of `target` roots mounted under `dir`; [`WarmRoots::keep_filled`] fills it.
    pub fn new(runtime: Arc<R>, dir: PathBuf, target: usize) -> Self {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let agent_prefix = format!("{KEY_PREFIX}{:08x}-", super::sandboxes::path_hash(&dir));
        Self {
            prefix: format!("{agent_prefix}{run:x}-"),
            agent_prefix,
            taken: Mutex::new(Vec::new()),
            runtime,
            dir,
            target,
            image: Mutex::new(None),
            ready: Mutex::new(Vec::new()),
            failed: Mutex::new(None),
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
        if let Ok(mut t) = self.taken.lock() {
            t.push(taken.key.clone());
        }
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
                // Bounded: an image whose root failed is tried again after a while.
                let _ = tokio::time::timeout(RETRY_AFTER, self.wanted.notified()).await;
                continue;
            }
            self.quiet.wait(&gate, gate_size).await;
            self.unpin_taken().await;
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
        if self.taken.lock().is_ok_and(|t| !t.is_empty()) {
            return true;
        }
        let may_make = self.may_make(&image);
        self.ready.lock().is_ok_and(|ready| {
            (may_make && ready.len() < self.target)
                || ready.iter().any(|r| r.chain_id != image.chain_id)
        })
    }

    /// Whether roots of `image` may be made: not for a while after one failed.
    fn may_make(&self, image: &ImageInfo) -> bool {
        self.failed.lock().is_ok_and(|f| {
            f.as_ref()
                .is_none_or(|(chain, at)| *chain != image.chain_id || at.elapsed() > RETRY_AFTER)
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
        (ready.len() < self.target && self.may_make(&image)).then_some(Work::Make(image))
    }

    /// The snapshots of roots taken since the last call stop being gc roots: their containers
    /// name them now, and containerd collects them as any container's once those go. Done
    /// when the node is quiet, not in the pod start.
    async fn unpin_taken(&self) {
        let keys = match self.taken.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return,
        };
        for key in keys {
            if let Err(e) = self.runtime.unpin_root(&key).await {
                tracing::warn!(%key, error = %e, "unpinning a taken root");
            }
        }
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
                tracing::warn!(%key, image = %image.name, error = %e, "making a root ahead; not trying this image again for a while");
                if let Ok(mut f) = self.failed.lock() {
                    *f = Some((image.chain_id.clone(), Instant::now()));
                }
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
    /// Roots are found by their folders and by their snapshots' keys, so one whose folder is
    /// gone (or whose snapshot was never unpinned) is found too.
    async fn release_left_over(&self, containers: &[ContainerInfo]) {
        let mut keys: HashSet<String> = folder_names(&self.dir).into_iter().collect();
        match self.runtime.snapshots_named(&self.agent_prefix).await {
            Ok(named) => keys.extend(named),
            Err(e) => tracing::warn!(error = %e, "listing snapshots for left-over roots"),
        }
        let in_use: HashSet<&str> = containers.iter().map(|c| c.snapshot_key.as_str()).collect();
        for key in keys {
            let dir = self.dir.join(&key);
            let used = in_use.contains(key.as_str());
            tracing::info!(%key, used, "releasing a root left by an earlier run");
            if let Err(e) = self.runtime.drop_root(&key, &dir, used).await {
                tracing::warn!(%key, error = %e, "dropping a left-over root");
            }
            if used {
                if let Err(e) = self.runtime.unpin_root(&key).await {
                    tracing::warn!(%key, error = %e, "unpinning a root a container runs on");
                }
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
