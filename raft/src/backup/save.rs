//! Keeping a backup that arrives in pieces: written beside its path, checked as it goes by,
//! and kept whole or not at all.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::format::{Checker, FormatError, VerifiedFile};

/// Bytes written between two flushes to disk started in the background: the final fsync then
/// has at most this much left to write, instead of the whole file.
const SYNC_EVERY: u64 = 32 << 20;

/// Why a backup was not kept.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Its pieces stopped coming.
    #[error("receiving the backup: {0}")]
    Receive(String),
    /// What arrived is not a whole, intact backup.
    #[error("the backup received: {0}")]
    Check(#[from] FormatError),
    /// It could not be written.
    #[error("writing {path}: {error}")]
    Write {
        /// The file being written.
        path: String,
        /// What failed.
        error: std::io::Error,
    },
}

/// Write the backup arriving as `chunks` to `path`: beside it first, checked as its bytes
/// go by (length and checksum, as a restore checks them), fsynced, then renamed over `path`
/// with its directory fsynced. A crash, a broken stream or a damaged backup leaves the old
/// file at `path` or none, never part of one; memory holds a piece at a time.
pub async fn save<S, E>(chunks: S, path: &Path) -> Result<VerifiedFile, SaveError>
where
    S: futures::Stream<Item = Result<Vec<u8>, E>>,
    E: std::fmt::Display,
{
    use futures::StreamExt as _;
    let joined = |e: tokio::task::JoinError| SaveError::Receive(e.to_string());
    let mut out = PartialFile::create(path)?;
    let mut checker = Checker::default();
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| SaveError::Receive(e.to_string()))?;
        // Hashing and writing block (the disk may throttle a writer): off the runtime.
        (out, checker) = tokio::task::spawn_blocking(move || {
            checker.update(&chunk)?;
            out.write(&chunk)?;
            Ok::<_, SaveError>((out, checker))
        })
        .await
        .map_err(joined)??;
    }
    let verified = checker.finish()?;
    tokio::task::spawn_blocking(move || out.keep())
        .await
        .map_err(joined)??;
    Ok(verified)
}

/// A file being written at `<path>.partial`, flushed to disk as it grows, removed unless
/// [`PartialFile::keep`] renames it over `path`.
struct PartialFile {
    path: PathBuf,
    partial: PathBuf,
    file: std::fs::File,
    written: u64,
    /// Written when the last background flush was started.
    flushed_at: u64,
    /// The background flush in progress, if any.
    flushing: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    kept: bool,
}

impl PartialFile {
    fn create(path: &Path) -> Result<Self, SaveError> {
        let partial = path.with_extension("partial");
        let file = std::fs::File::create(&partial).map_err(|error| SaveError::Write {
            path: partial.display().to_string(),
            error,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            partial,
            file,
            written: 0,
            flushed_at: 0,
            flushing: None,
            kept: false,
        })
    }

    fn failed(&self, error: std::io::Error) -> SaveError {
        SaveError::Write {
            path: self.partial.display().to_string(),
            error,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SaveError> {
        self.file.write_all(bytes).map_err(|e| self.failed(e))?;
        self.written += bytes.len() as u64;
        // The disk writes while more arrives: the kernel would otherwise hold it all until
        // the final fsync (a large machine's dirty limits are gigabytes).
        let idle = self.flushing.as_ref().is_none_or(|f| f.is_finished());
        if self.written - self.flushed_at >= SYNC_EVERY && idle {
            self.join_flush()?;
            let file = self.file.try_clone().map_err(|e| self.failed(e))?;
            self.flushing = Some(std::thread::spawn(move || file.sync_data()));
            self.flushed_at = self.written;
        }
        Ok(())
    }

    fn join_flush(&mut self) -> Result<(), SaveError> {
        match self.flushing.take().map(|f| f.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(self.failed(e)),
            Some(Err(_)) => Err(self.failed(std::io::Error::other("the flush thread panicked"))),
        }
    }

    /// fsync, rename over the path, fsync the directory.
    fn keep(mut self) -> Result<(), SaveError> {
        self.join_flush()?;
        self.file.sync_all().map_err(|e| self.failed(e))?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| self.failed(e))?;
        self.kept = true;
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::File::open(dir.unwrap_or(Path::new(".")))
            .and_then(|d| d.sync_all())
            .map_err(|error| SaveError::Write {
                path: dir.unwrap_or(Path::new(".")).display().to_string(),
                error,
            })
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = self.join_flush();
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::format::{encode, BackupHeader};

    fn backup(records: &[u8]) -> Vec<u8> {
        let header = BackupHeader {
            cluster_id: "c".into(),
            member_id: 1,
            revision: 9,
            raft_index: 10,
            raft_term: 2,
            records: 1,
            records_bytes: records.len() as u64,
            taken_at: "2026-12-07T00:00:00Z".into(),
            written_by: "test".into(),
        };
        encode(&header, 1, records).unwrap_or_default()
    }

    fn pieces(file: &[u8], size: usize) -> Vec<Result<Vec<u8>, String>> {
        file.chunks(size).map(|c| Ok(c.to_vec())).collect()
    }

    #[tokio::test]
    async fn a_backup_in_pieces_is_kept_whole_and_a_damaged_one_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.skiff");
        // Past one background flush, in pieces that do not line up with the checksum.
        let file = backup(&vec![5u8; (SYNC_EVERY + 3) as usize]);
        let stream = futures::stream::iter(pieces(&file, (1 << 20) + 7));
        let v = save(stream, &path).await.expect("a whole backup is kept");
        assert_eq!(v.header.revision, 9);
        assert_eq!(std::fs::read(&path).ok(), Some(file.clone()));

        // A damaged or broken stream leaves the file already there as it was, and no partial.
        let mut flipped = file.clone();
        flipped[1000] ^= 4;
        let cut = file[..file.len() - 1].to_vec();
        let mut broken = pieces(&file, 1 << 20);
        broken.truncate(3);
        broken.push(Err("connection reset".into()));
        for (bad, says) in [
            (pieces(&flipped, 1 << 20), "checksum"),
            (pieces(&cut, 1 << 20), "truncated"),
            (broken, "connection reset"),
        ] {
            let e = save(futures::stream::iter(bad), &path).await.unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
            assert_eq!(std::fs::read(&path).ok(), Some(file.clone()));
            assert!(!path.with_extension("partial").exists());
        }
    }
}
