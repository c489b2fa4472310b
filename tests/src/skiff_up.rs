//! `skiff up` as a test runs it: in a folder of its own, in a process group of its own as a
//! shell starts a foreground job, logging to a file; stopped with Ctrl-C when dropped.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::binary;

/// A running `skiff up` in `dir`, in a process group of its own as a shell starts a
/// foreground job, logging to `log`.
pub struct Up {
    /// The `skiff up` process.
    pub child: std::process::Child,
    /// Its process group.
    pub group: Pid,
    /// The folder it runs in.
    pub dir: std::path::PathBuf,
    /// Its output.
    pub log: std::path::PathBuf,
}

impl Up {
    /// Start it on `base_port`; returns once it says it is up.
    pub fn start(dir: &Path, base_port: u16, log_name: &str) -> Self {
        Self::start_with(dir, base_port, log_name, &[])
    }

    /// [`Self::start`] with more flags.
    pub fn start_with(dir: &Path, base_port: u16, log_name: &str, extra: &[&str]) -> Self {
        let log = dir.join(log_name);
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(binary("skiff"))
            .args(["up", "--base-port", &base_port.to_string()])
            .args(extra)
            .current_dir(dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("skiff up");
        let mut up = Self {
            group: Pid::from_raw(child.id() as i32),
            child,
            dir: dir.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !up.log().contains("Skiff is up") {
            assert!(
                up.child.try_wait().expect("wait").is_none(),
                "skiff up exited: {}",
                up.log()
            );
            assert!(Instant::now() < deadline, "skiff up: {}", up.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        up
    }

    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Up {
    /// Ctrl-C for a `skiff up` a failed assertion left running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none()
            && killpg(self.group, Signal::SIGINT).is_ok()
        {
            std::thread::sleep(Duration::from_secs(10));
        }
    }
}

/// A base port whose four ports (three members, the agent) are free and clear of `others`'.
pub fn free_base_port(others: &[u16]) -> u16 {
    loop {
        let p = crate::free_port();
        let clear = others.iter().all(|o| p.abs_diff(*o) > 8);
        let free = (p..p + 4).all(|q| std::net::TcpListener::bind(("0.0.0.0", q)).is_ok());
        if clear && free && p < u16::MAX - 8 {
            return p;
        }
    }
}
