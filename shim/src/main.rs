//! `skiff-shim`: the shim binary the node agent names in its containers' records.
//!
//! containerd 1.6 runs the shim binary's `start` action for every task, even one that joins a
//! shim already serving its group (the pod's sandbox). The Go shim's `start` then only hashes
//! the group into a socket address, sees that socket answer, writes the `address` file and
//! prints the address — yet starting the Go runtime to do so costs ~5 ms of CPU a container,
//! on a burst that is CPU-bound. This binary does that one case itself in well under a
//! millisecond and hands every other call (a new shim, `delete`, anything it does not
//! recognise) to `containerd-shim-runc-v2` unchanged, by exec.
//!
//! ```text
//! containerd ── start ──▶ skiff-shim ── group shim answers? ──yes──▶ print its address
//!                                     └─no / any other action──▶ exec containerd-shim-runc-v2
//! ```
//!
//! Before the exec it drops the entries of `LD_LIBRARY_PATH` that cannot provide a library
//! (see [`library_path`]): the shim daemon and the OCI runtime it runs inherit the variable.
//!
//! Nothing may be written to stderr on the fast path: containerd reads the address from the
//! combined output.

mod flags;
mod group_shim;
mod library_path;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

/// The shim every call this binary does not answer itself goes to (found in PATH).
const GO_SHIM: &str = "containerd-shim-runc-v2";

/// Where containerd 1.6's shims put their sockets, whatever containerd's state folder.
const SOCKET_DIR: &str = "/run/containerd/s";

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let running = flags::StartFlags::parse(&args)
        .and_then(|start| group_shim::join(&start, Path::new("."), Path::new(SOCKET_DIR)));
    if let Some(address) = running {
        let mut out = std::io::stdout().lock();
        return match out.write_all(address.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let mut go_shim = Command::new(GO_SHIM);
    go_shim.args(&args);
    if let Some(value) = std::env::var_os(library_path::VAR) {
        match library_path::useful(&value) {
            Some(kept) => go_shim.env(library_path::VAR, kept),
            None => go_shim.env_remove(library_path::VAR),
        };
    }
    let err = go_shim.exec();
    eprintln!("skiff-shim: cannot run {GO_SHIM}: {err} (Debian: apt-get install containerd)");
    ExitCode::FAILURE
}
