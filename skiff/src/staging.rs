//! A directory built beside its destination and moved in only when complete (restore and
//! recover): a refused or failed run leaves the destination as it was, and its own leftovers
//! are removed.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// A directory under construction; removed when dropped unless moved into place.
pub struct Staging {
    path: PathBuf,
    kept: bool,
}

impl Staging {
    /// A new directory beside `dest`, named for `what` (`.NAME.what-PID`); a leftover of an
    /// earlier run of the same name is removed first.
    pub fn beside(dest: &Path, what: &str) -> anyhow::Result<Self> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("--data-dir: names no directory")?;
        let path = dest.with_file_name(format!(".{name}.{what}-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing a leftover {}", path.display()))?;
        }
        Ok(Self { path, kept: false })
    }

    /// Where it is being built.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rename it to `dest` (which must not exist by now) and make the rename durable.
    pub fn move_to(mut self, dest: &Path) -> anyhow::Result<()> {
        std::fs::rename(&self.path, dest)
            .with_context(|| format!("moving {} into {}", self.path.display(), dest.display()))?;
        self.kept = true;
        if let Some(parent) = dest.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", parent.display()))?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
