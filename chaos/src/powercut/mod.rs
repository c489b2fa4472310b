//! The power-cut filesystem: a FUSE mount of the suite's own, in the manner of Jepsen's
//! LazyFS. A node's data directory is mounted over a backing directory; written data stays in
//! the suite's memory until the file is fsynced, and [`PowerCutMount::cut`] drops whatever was
//! not, as a power cut would. sled's own `flush` ends in `sync_file_range`, which never reaches
//! a FUSE filesystem as an fsync, so only an explicit fsync/fdatasync makes data durable here.

mod fs;
mod pages;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Errors of the power-cut filesystem.
#[derive(Debug, thiserror::Error)]
pub enum PowerCutError {
    /// The mount failed.
    #[error("mounting the power-cut filesystem on {path}: {source} (needs /dev/fuse and fusermount3; Debian: apt-get install fuse3)")]
    Mount {
        /// Mount point.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The backing directory could not be made.
    #[error("creating {path}: {source}")]
    Backing {
        /// The directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// One mounted power-cut filesystem; unmounted when dropped.
pub struct PowerCutMount {
    state: Arc<Mutex<fs::State>>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl PowerCutMount {
    /// Mount a power-cut filesystem at `mountpoint` (created if missing), backed by `backing`.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<Self, PowerCutError> {
        for dir in [backing, mountpoint] {
            std::fs::create_dir_all(dir).map_err(|source| PowerCutError::Backing {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let state = Arc::new(Mutex::new(fs::State::new(backing.to_path_buf())));
        let session = fuser::spawn_mount2(
            fs::PowerCutFs {
                state: state.clone(),
            },
            mountpoint,
            &[
                fuser::MountOption::FSName("skiff-powercut".into()),
                fuser::MountOption::RW,
            ],
        )
        .map_err(|source| PowerCutError::Mount {
            path: mountpoint.to_path_buf(),
            source,
        })?;
        Ok(Self {
            state,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// Cut the power: every byte written but not fsynced is gone. Call it only once the
    /// processes using the mount are dead. Returns how many files lost data.
    pub fn cut(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).cut()
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for PowerCutMount {
    fn drop(&mut self) {
        // A lazy unmount cannot fail on a busy mount (a dying process may still hold a file),
        // and it ends the session's thread, which is then left to finish on its own.
        let _ = std::process::Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&self.mountpoint)
            .stderr(std::process::Stdio::null())
            .status();
        drop(self.session.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A real mount: unsynced data is gone after a cut, synced data stays.
    #[test]
    fn a_cut_drops_what_was_not_fsynced() {
        assert!(
            Path::new("/dev/fuse").exists(),
            "the power-cut file system needs /dev/fuse (and fuse3, which make test installs)"
        );
        let dir = tempfile::tempdir().unwrap();
        let m = PowerCutMount::mount(&dir.path().join("backing"), &dir.path().join("mnt")).unwrap();
        let synced = m.mountpoint().join("synced");
        let lost = m.mountpoint().join("lost");
        let mut f = std::fs::File::create(&synced).unwrap();
        f.write_all(b"kept").unwrap();
        f.sync_data().unwrap();
        f.write_all(b" and not kept").unwrap();
        drop(f);
        std::fs::write(&lost, b"never synced").unwrap();
        assert_eq!(std::fs::read(&synced).unwrap(), b"kept and not kept");
        assert_eq!(m.cut(), 2);
        assert_eq!(std::fs::read(&synced).unwrap(), b"kept");
        // Metadata is journaled: the file exists, its data did not survive.
        assert_eq!(std::fs::read(&lost).unwrap(), b"");
        drop(m);
        assert_eq!(
            std::fs::read(dir.path().join("backing/synced")).unwrap(),
            b"kept"
        );
    }
}
