//! `skiff up` supervises what it starts: a process that exits is reported once and started
//! again after a back-off that doubles while it keeps failing soon after its start; one that
//! keeps failing stops the whole cluster, saying why, rather than flapping forever.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// The first wait before a restart.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run at least this long was a good one: the next exit starts the count again.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// Exits in a row, each soon after its start, that make `skiff up` give up.
const GIVE_UP_AFTER: u32 = 5;

/// How to start one process.
#[derive(Debug, Clone)]
pub struct Spec {
    /// What it is, as the operator reads it: `control node 2 (127.0.0.1:7402)`.
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Its output goes here (appended).
    pub log: PathBuf,
    /// In a process group of its own, out of reach of the terminal's Ctrl-C (containerd must
    /// outlive the agent until the pods are stopped through it).
    pub own_group: bool,
}

/// What became of a supervised process at a check.
#[derive(Debug, PartialEq, Eq)]
pub enum Tended {
    /// It runs, or waits for its restart.
    Fine,
    /// It was started again.
    Restarted,
}

/// One supervised process.
pub struct Supervised {
    spec: Spec,
    child: Option<Child>,
    started: Instant,
    /// Exits in a row that came soon after a start.
    quick_exits: u32,
    restart_at: Option<Instant>,
}

impl Supervised {
    /// Start it.
    pub fn start(spec: Spec) -> anyhow::Result<Self> {
        let child = spawn(&spec)?;
        Ok(Self {
            spec,
            child: Some(child),
            started: Instant::now(),
            quick_exits: 0,
            restart_at: None,
        })
    }

    /// Whether it runs now.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Report an exit (once), restart when its back-off is over; an error when it keeps
    /// failing.
    pub fn tend(&mut self) -> anyhow::Result<Tended> {
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(None) => return Ok(Tended::Fine),
                Ok(Some(status)) => {
                    self.child = None;
                    self.exited(Some(status))?;
                }
                Err(e) => {
                    anyhow::bail!("{}: waiting for it: {e}", self.spec.name);
                }
            }
        }
        match self.restart_at {
            Some(at) if Instant::now() >= at => {
                self.restart_at = None;
                match spawn(&self.spec) {
                    Ok(child) => {
                        self.child = Some(child);
                        self.started = Instant::now();
                        println!("{} started again", self.spec.name);
                        Ok(Tended::Restarted)
                    }
                    Err(e) => {
                        eprintln!("{}: {e:#}", self.spec.name);
                        self.exited(None)?;
                        Ok(Tended::Fine)
                    }
                }
            }
            _ => Ok(Tended::Fine),
        }
    }

    /// Count an exit (or a failed start) and plan the restart.
    fn exited(&mut self, status: Option<ExitStatus>) -> anyhow::Result<()> {
        let what = status.map_or_else(|| "could not start".to_string(), |s| s.to_string());
        if self.started.elapsed() >= STABLE_RUN {
            self.quick_exits = 0;
        }
        self.quick_exits += 1;
        if self.quick_exits >= GIVE_UP_AFTER {
            anyhow::bail!(
                "{} keeps failing: it exited {} times in a row, each within {} s of its start \
                 (last: {what}); see {}",
                self.spec.name,
                self.quick_exits,
                STABLE_RUN.as_secs(),
                self.spec.log.display()
            );
        }
        let backoff = backoff(self.quick_exits);
        eprintln!(
            "{} exited ({what}); starting it again in {} s; see {}",
            self.spec.name,
            backoff.as_secs(),
            self.spec.log.display()
        );
        self.restart_at = Some(Instant::now() + backoff);
        Ok(())
    }

    /// SIGTERM, then SIGKILL past `grace`. It is not restarted after this.
    pub async fn stop(&mut self, grace: Duration) {
        self.restart_at = None;
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            eprintln!(
                "{} did not stop in {} s; killing it",
                self.spec.name,
                grace.as_secs()
            );
            let _ = child.kill().await;
        }
    }

    /// SIGTERM now, without waiting (several are stopped side by side, then [`Self::stop`]
    /// waits for each).
    pub fn terminate(&mut self) {
        self.restart_at = None;
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
}

/// The wait before the restart after `quick_exits` quick exits in a row: 1 s, 2 s, 4 s, ...
fn backoff(quick_exits: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1 << quick_exits.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF)
}

fn spawn(spec: &Spec) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("{}: {}", spec.name, spec.log.display()))?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    if spec.own_group {
        command.process_group(0);
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", spec.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, script: &str) -> Spec {
        Spec {
            name: "test process".into(),
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            log: dir.join("log"),
            own_group: false,
        }
    }

    #[test]
    fn back_off_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn an_exited_process_is_started_again_after_its_back_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marks = dir.path().join("marks");
        let script = format!("echo run >> {}; exit 3", marks.display());
        let mut p = Supervised::start(spec(dir.path(), &script)).expect("start");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if p.tend().expect("tend") == Tended::Restarted {
                break;
            }
            assert!(Instant::now() < deadline, "never restarted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Restarted exactly once so far: the first back-off is a second.
        assert_eq!(p.quick_exits, 1);
        p.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn a_process_that_keeps_failing_is_given_up_naming_it_and_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Supervised::start(spec(dir.path(), "exit 1")).expect("start");
        // As if it had already failed quickly all but the last time.
        p.quick_exits = GIVE_UP_AFTER - 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = loop {
            match p.tend() {
                Ok(_) => {}
                Err(e) => break e.to_string(),
            }
            assert!(Instant::now() < deadline, "never gave up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            err.contains("test process keeps failing") && err.contains("log"),
            "{err}"
        );
    }
}
