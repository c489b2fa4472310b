//! The engine's on-disk layout, and the one-time copy of a store written before it.
//!
//! Format 1 kept sled's files right in the store's directory, every value as it came (large
//! ones in sled blob files that a power cut could lose). Format 2 keeps them in `store/` under
//! it, with an `engine-format` file naming the format, values tagged and large ones in pieces
//! ([`super::pieces`]). `store/` is made whole as `store.new/` and renamed into place, so it
//! exists only once complete: a fresh one holds its format file, a copied one every record of
//! the format-1 files beside it, which are removed after. A crash at any point leaves either
//! the old files or the new store whole, and the next open finishes or restarts the work. The
//! store's directory itself is never renamed (it may be a mount point).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{backend, redo, sled_config, SledEngine, DEFAULT_CACHE_BYTES, REDO_KEY};
use crate::engine::{BatchOp, Engine, EngineError, Result};

/// The format this build writes and reads.
pub(super) const FORMAT: u32 = 2;

/// The file in `store/` that names its format.
const FORMAT_FILE: &str = "engine-format";
const STORE: &str = "store";
const STORE_NEW: &str = "store.new";

/// The directory sled's files are in under `dir`, whatever its format; `None` with no store.
pub(super) fn sled_dir(dir: &Path) -> Option<PathBuf> {
    let store = dir.join(STORE);
    if store.exists() {
        Some(store)
    } else if dir.join("db").exists() {
        Some(dir.to_path_buf())
    } else {
        None
    }
}

/// Bring `dir` to [`FORMAT`], making a store if it holds none, and return the directory sled's
/// files are in.
pub(super) fn open_layout(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(backend)?;
    let store = dir.join(STORE);
    let new = dir.join(STORE_NEW);
    // A store made or copied only in part: made again below.
    remove_dir(&new)?;
    if !store.exists() {
        std::fs::create_dir(&new).map_err(backend)?;
        write_synced(&new.join(FORMAT_FILE), format!("{FORMAT}\n").as_bytes())?;
        if dir.join("db").exists() {
            copy_format_1(dir, &new)?;
        }
        sync_dir(&new)?;
        std::fs::rename(&new, &store).map_err(backend)?;
        sync_dir(dir)?;
    }
    check_format(&store)?;
    remove_format_1(dir)?;
    Ok(store)
}

fn check_format(store: &Path) -> Result<()> {
    let found = match std::fs::read_to_string(store.join(FORMAT_FILE)) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "unknown (no format file)".into(),
        Err(e) => return Err(backend(e)),
    };
    if found == FORMAT.to_string() {
        return Ok(());
    }
    Err(EngineError::Format {
        dir: store.to_path_buf(),
        found,
        supported: FORMAT,
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(backend)?;
    f.write_all(bytes).map_err(backend)?;
    f.sync_all().map_err(backend)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(backend)
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(backend(e)),
    }
}

/// Whether `name` is one of the files sled 0.34 keeps in its directory.
fn is_sled_file(name: &str) -> bool {
    matches!(name, "db" | "conf" | "blobs") || name.starts_with("snap.")
}

/// Remove format-1 files left beside a whole `store/` (a copy whose clean-up a crash cut
/// short). With none, this reads one small directory.
fn remove_format_1(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(backend)? {
        let entry = entry.map_err(backend)?;
        let name = entry.file_name();
        if !is_sled_file(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path).map_err(backend)?;
        }
    }
    Ok(())
}

/// Copy every record of the format-1 store in `dir` into the new store at `new`.
fn copy_format_1(dir: &Path, new: &Path) -> Result<()> {
    let started = Instant::now();
    tracing::info!(dir = %dir.display(), "copying a store of engine format 1 into format {FORMAT}");
    let (mut records, mut bytes) = (0u64, 0u64);
    let source = sled_config(dir, DEFAULT_CACHE_BYTES)
        .open()
        .map_err(backend)?;
    let target = SledEngine::open_sled(new, DEFAULT_CACHE_BYTES)?;
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
        let db = sled_config(dir, DEFAULT_CACHE_BYTES).open().expect("sled");
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

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("ls")
            .map(|d| d.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_format_1_store_is_copied_into_format_2_once_with_every_value() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("state");
        write_format_1(&dir);
        {
            let e = SledEngine::open(&dir).expect("open");
            assert_copied(&e);
        }
        assert_eq!(names(&dir), vec![STORE], "the format-1 files are gone");
        assert_eq!(
            std::fs::read_to_string(dir.join(STORE).join(FORMAT_FILE)).expect("format file"),
            "2\n"
        );
        let e = SledEngine::open(&dir).expect("reopen");
        assert_copied(&e);
    }

    #[test]
    fn a_copy_cut_short_is_made_again_and_one_whose_clean_up_was_cut_short_is_finished() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("state");
        write_format_1(&dir);
        // Cut short: part of a copy beside the format-1 files, which are all still there.
        std::fs::create_dir_all(dir.join(STORE_NEW).join("db")).expect("mkdir");
        {
            let e = SledEngine::open(&dir).expect("open");
            assert_copied(&e);
        }
        // Renamed into place, the format-1 files not yet removed.
        let store_only = names(&dir);
        write_format_1(&dir);
        assert!(names(&dir).len() > store_only.len());
        let e = SledEngine::open(&dir).expect("open");
        assert_copied(&e);
        assert_eq!(names(&dir), store_only);
    }

    #[test]
    fn a_store_of_another_format_is_refused_naming_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(STORE)).expect("mkdir");
        std::fs::write(dir.path().join(STORE).join(FORMAT_FILE), "3\n").expect("write");
        let e = SledEngine::open(dir.path()).err().expect("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("engine format 3") && msg.contains("reads format 2"),
            "{msg}"
        );
    }
}
