//! Termination messages: each container gets a file of its own at its
//! `terminationMessagePath` (default `/dev/termination-log`); what it writes there before it
//! ends (at most 4 KiB) is its terminated state's `message`. With `terminationMessagePolicy:
//! FallbackToLogsOnError`, a container that failed without writing one gets the end of its
//! log instead (at most 2 KiB or 80 lines), as the kubelet does.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use super::logs;

/// The most of a message file that is read.
const MESSAGE_MAX: usize = 4096;
/// The most of a log that stands in for a message.
const FALLBACK_MAX_BYTES: usize = 2048;
const FALLBACK_MAX_LINES: usize = 80;

/// The host file behind attempt `attempt` of `container`'s message path, under `pod_dir`.
pub fn file(pod_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_dir
        .join("termination")
        .join(format!("{container}-{attempt}"))
}

/// Make the empty message file of attempt `attempt` of `c`, writable by whatever user the
/// container runs as; `None` when `c` has no message path.
pub fn prepare(pod_dir: &Path, c: &Container, attempt: u32) -> std::io::Result<Option<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    if c.termination_message_path
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        return Ok(None);
    }
    let path = file(pod_dir, &c.name, attempt);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, b"")?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    Ok(Some(path))
}

/// Remove the message file of attempt `attempt` of `container` (its message was read).
pub fn remove(pod_dir: &Path, container: &str, attempt: u32) {
    let _ = std::fs::remove_file(file(pod_dir, container, attempt));
}

fn tail(text: &[u8]) -> String {
    let start = text.len().saturating_sub(FALLBACK_MAX_BYTES);
    let text = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(FALLBACK_MAX_LINES);
    lines[from..].join("\n")
}

/// The last bytes of the log at `path` (the current file: a message is about the end).
fn log_end(path: &Path) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(FALLBACK_MAX_BYTES as u64);
    let mut out = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_ok() {
        let _ = f.read_to_end(&mut out);
    }
    out
}

/// The message of attempt `attempt` of `c`, which ended with `code`.
pub fn message(pod_dir: &Path, c: &Container, attempt: u32, code: i32) -> Option<String> {
    use std::io::Read;
    let mut written = Vec::new();
    if let Ok(f) = std::fs::File::open(file(pod_dir, &c.name, attempt)) {
        let _ = f.take(MESSAGE_MAX as u64).read_to_end(&mut written);
    }
    if !written.is_empty() {
        return Some(String::from_utf8_lossy(&written).into_owned());
    }
    let fallback = c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if fallback && code != 0 {
        let text = tail(&log_end(&logs::path(pod_dir, &c.name, attempt)));
        return (!text.is_empty()).then_some(text);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_message_is_read_and_a_failure_falls_back_to_the_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Container {
            name: "job".into(),
            termination_message_path: Some("/dev/termination-log".into()),
            termination_message_policy: Some("File".into()),
            ..Default::default()
        };
        let path = prepare(dir.path(), &c, 0).unwrap().unwrap();
        assert_eq!(message(dir.path(), &c, 0, 1), None);
        std::fs::write(&path, "done: 42 rows").unwrap();
        assert_eq!(
            message(dir.path(), &c, 0, 0).as_deref(),
            Some("done: 42 rows")
        );
        c.termination_message_policy = Some("FallbackToLogsOnError".into());
        prepare(dir.path(), &c, 1).unwrap();
        let log = logs::path(dir.path(), "job", 1);
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let many: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, many).unwrap();
        let m = message(dir.path(), &c, 1, 2).unwrap();
        assert!(m.ends_with("line 99") && m.lines().count() == 80, "{m}");
        assert_eq!(
            message(dir.path(), &c, 1, 0),
            None,
            "only a failure falls back"
        );
    }
}
