//! The engine's on-disk format, and the one-time copy of a store written before it.
//!
//! Format 1 (no format file) kept every value as it came, large ones in sled blob files that a
//! power cut could lose. Format 2 keeps values tagged, large ones in pieces ([`super::pieces`]),
//! and names itself in a file beside sled's. A format-1 store is copied into a new directory in
//! format 2 beside it and swapped in by two renames, so a crash at any point leaves either the
//! old store or the new one whole: [`finish_interrupted`] tells which when the engine opens.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{backend, redo, sled_config, SledEngine, REDO_KEY};
use crate::engine::{BatchOp, Engine, EngineError, Result};

/// The format this build writes and reads.
pub(super) const FORMAT: u32 = 2;

/// The file, beside sled's own, that names the directory's format.
const FORMAT_FILE: &str = "engine-format";

/// Bring the store in `dir` to [`FORMAT`]. True when `dir` holds no store yet.
pub(super) fn to_current(dir: &Path) -> Result<bool> {
    finish_interrupted(dir)?;
    match read_format(dir)? {
        Some(found) if found == FORMAT.to_string() => Ok(false),
        Some(found) => Err(EngineError::Format {
            dir: dir.to_path_buf(),
            found,
            supported: FORMAT,
        }),
        None if dir.join("db").exists() => {
            copy_format_1(dir)?;
            Ok(false)
        }
        None => Ok(true),
    }
}

/// Record that `dir` is in [`FORMAT`].
pub(super) fn mark_current(dir: &Path) -> Result<()> {
    let io = |e| backend(e);
    let mut f = File::create(dir.join(FORMAT_FILE)).map_err(io)?;
    f.write_all(format!("{FORMAT}\n").as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

fn read_format(dir: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(dir.join(FORMAT_FILE)) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(backend(e)),
    }
}

/// `dir` with `suffix` after its last component: `state` → `state.migrating`.
fn beside(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(dir.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

fn sync_parent(dir: &Path) -> Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(backend)
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(backend(e)),
    }
}

/// Finish or undo a copy a crash interrupted. The new store is renamed into place only once
/// whole, so: an old store put aside means the copy was whole; a copy with the old store still
/// in place was cut short.
fn finish_interrupted(dir: &Path) -> Result<()> {
    let copy = beside(dir, ".migrating");
    let old = beside(dir, ".format-1");
    if old.exists() {
        if !dir.exists() {
            std::fs::rename(&copy, dir).map_err(backend)?;
            sync_parent(dir)?;
        }
        tracing::info!(dir = %dir.display(), "removing the store's format-1 copy");
        remove_dir(&old)?;
    }
    remove_dir(&copy)
}

/// Copy the format-1 store in `dir` into format 2, then swap the copy in.
fn copy_format_1(dir: &Path) -> Result<()> {
    let started = Instant::now();
    let copy = beside(dir, ".migrating");
    let old = beside(dir, ".format-1");
    tracing::info!(dir = %dir.display(), "copying a store of engine format 1 into format {FORMAT}");
    let (mut records, mut bytes) = (0u64, 0u64);
    {
        let source = sled_config(dir).open().map_err(backend)?;
        let target = SledEngine::open_current(&copy)?;
        for item in source.iter() {
            let (k, v) = item.map_err(backend)?;
            if k == REDO_KEY {
                continue;
            }
            records += 1;
            bytes += (k.len() + v.len()) as u64;
            target.apply_in_order(vec![BatchOp::Put(k.to_vec(), v.to_vec())])?;
        }
        // A batch a crash interrupted in the old store: finish it in the copy.
        if let Some(record) = source.get(REDO_KEY).map_err(backend)? {
            let ops = redo::decode(&record).ok_or(EngineError::BadRedo)?;
            target.apply_in_order(ops)?;
        }
        target.sync()?;
    }
    mark_current(&copy)?;
    std::fs::rename(dir, &old).map_err(backend)?;
    std::fs::rename(&copy, dir).map_err(backend)?;
    sync_parent(dir)?;
    remove_dir(&old)?;
    tracing::info!(
        dir = %dir.display(),
        records,
        bytes,
        took_ms = started.elapsed().as_millis() as u64,
        "the store is in engine format {FORMAT}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LARGE: usize = 512 << 10;

    /// A store as format 1 wrote it: every value as is, a redo record of a batch cut short.
    fn write_format_1(dir: &Path) {
        let db = sled_config(dir).open().expect("sled");
        for i in 0..40u8 {
            db.insert(format!("\x01big-{i:03}"), vec![i; LARGE])
                .expect("insert");
        }
        db.insert(b"\x01small", &b"kept"[..]).expect("insert");
        let interrupted = vec![
            BatchOp::Put(b"\x01small".to_vec(), b"finished".to_vec()),
            BatchOp::Delete(b"\x01big-000".to_vec()),
        ];
        db.insert(
            REDO_KEY,
            redo::encode(&interrupted, redo::encoded_len(&interrupted)),
        )
        .expect("redo record");
        db.flush().expect("flush");
    }

    fn assert_copied(e: &SledEngine) {
        assert_eq!(
            e.get(b"\x01small").expect("get").as_deref(),
            Some(&b"finished"[..]),
            "the interrupted batch is finished"
        );
        assert_eq!(e.get(b"\x01big-000").expect("get"), None);
        for i in 1..40u8 {
            let value = e.get(format!("\x01big-{i:03}").as_bytes()).expect("get");
            assert!(value == Some(vec![i; LARGE]), "value {i}");
        }
        assert_eq!(e.get(REDO_KEY).expect("get"), None);
    }

    #[test]
    fn a_format_1_store_is_copied_into_format_2_once_with_every_value() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("state");
        write_format_1(&dir);
        assert_eq!(read_format(&dir).expect("read"), None);
        {
            let e = SledEngine::open(&dir).expect("open");
            assert_copied(&e);
        }
        assert_eq!(read_format(&dir).expect("read").as_deref(), Some("2"));
        let left: Vec<_> = std::fs::read_dir(base.path())
            .expect("ls")
            .map(|d| d.expect("entry").file_name())
            .collect();
        assert_eq!(
            left,
            vec![OsString::from("state")],
            "nothing left beside it"
        );
        let e = SledEngine::open(&dir).expect("reopen");
        assert_copied(&e);
    }

    #[test]
    fn a_copy_interrupted_between_its_renames_is_finished_and_one_cut_short_is_undone() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("state");
        write_format_1(&dir);
        // Cut short: a partial copy beside the old store, which is still in place.
        std::fs::create_dir_all(beside(&dir, ".migrating").join("db")).expect("mkdir");
        {
            let e = SledEngine::open(&dir).expect("open");
            assert_copied(&e);
        }
        // Between the renames: the new store whole beside, the old one put aside.
        std::fs::rename(&dir, beside(&dir, ".migrating")).expect("rename");
        write_format_1(&beside(&dir, ".format-1"));
        let e = SledEngine::open(&dir).expect("open");
        assert_copied(&e);
        assert!(!beside(&dir, ".format-1").exists());
        assert!(!beside(&dir, ".migrating").exists());
    }

    #[test]
    fn a_store_in_a_newer_format_is_refused_naming_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FORMAT_FILE), "3\n").expect("write");
        let e = SledEngine::open(dir.path()).err().expect("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("engine format 3") && msg.contains("reads format 2"),
            "{msg}"
        );
    }
}
