//! Container log files: `<pod dir>/logs/<container>/<attempt>.log`, appended by containerd's
//! shim (stdout and stderr together), rotated by copy-and-truncate past a size (the shim
//! appends, so it carries on at the new end), kept for the previous attempt (`--previous`).

use std::path::{Path, PathBuf};

/// The log file of attempt `attempt` of `container` in the pod folder `pod_dir`.
pub fn path(pod_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_dir
        .join("logs")
        .join(container)
        .join(format!("{attempt}.log"))
}

/// Rotate `file` to `file.1` if it is larger than `max` bytes.
pub fn rotate_if_large(file: &Path, max: u64) -> std::io::Result<bool> {
    let Ok(meta) = std::fs::metadata(file) else {
        return Ok(false);
    };
    if meta.len() <= max {
        return Ok(false);
    }
    let rotated = file.with_extension("log.1");
    std::fs::copy(file, &rotated)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)?
        .set_len(0)?;
    Ok(true)
}

/// Remove log files of attempts older than `keep_from`.
pub fn prune(pod_dir: &Path, container: &str, keep_from: u32) {
    let dir = pod_dir.join("logs").join(container);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let attempt = name.split('.').next().and_then(|n| n.parse::<u32>().ok());
        if attempt.is_some_and(|a| a < keep_from) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The text of a container's log: the rotated part, then the current file.
pub fn read(pod_dir: &Path, container: &str, attempt: u32) -> std::io::Result<Vec<u8>> {
    let file = path(pod_dir, container, attempt);
    let mut out = std::fs::read(file.with_extension("log.1")).unwrap_or_default();
    out.extend(std::fs::read(&file)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_text_and_prune_drops_old_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "web", 1);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"0123456789").unwrap();
        assert!(!rotate_if_large(&p, 100).unwrap());
        assert!(rotate_if_large(&p, 5).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(read(dir.path(), "web", 1).unwrap(), b"0123456789abc");
        std::fs::write(path(dir.path(), "web", 0), b"old").unwrap();
        prune(dir.path(), "web", 1);
        assert!(!path(dir.path(), "web", 0).exists());
        assert!(p.exists());
    }
}
