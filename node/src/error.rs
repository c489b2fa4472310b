//! The agent's errors. Each variant says which part failed and keeps its cause.

use std::path::PathBuf;

/// What went wrong in the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// containerd could not be reached at its socket.
    #[error("connecting to containerd at {socket}")]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A containerd call failed.
    #[error("containerd {call}: {}", .status.message())]
    Containerd {
        /// Which call.
        call: &'static str,
        /// containerd's answer.
        status: tonic::Status,
    },
    /// Pulling an image from its registry failed (`ErrImagePull`).
    #[error("pulling image {image}: {message}")]
    Pull {
        /// The image reference.
        image: String,
        /// The registry's or the client's error.
        message: String,
    },
    /// The image is not present and the pull policy forbids a pull.
    #[error("image {image} is not present with pull policy Never")]
    ImageNeverPulled {
        /// The image reference.
        image: String,
    },
    /// An image reference could not be parsed.
    #[error("image reference {image:?}: {reason}")]
    BadReference {
        /// The reference as written.
        image: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An image's manifest, index or config is not what OCI says it should be.
    #[error("image {image}: {reason}")]
    BadImage {
        /// The image.
        image: String,
        /// What is wrong.
        reason: String,
    },
    /// A CNI plugin failed.
    #[error("CNI {plugin} {command}: {message}")]
    Cni {
        /// The plugin.
        plugin: String,
        /// ADD or DEL.
        command: &'static str,
        /// The plugin's error.
        message: String,
    },
    /// A host command (`ip`) failed.
    #[error("{command}: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output.
        message: String,
    },
    /// A file of the agent could not be read or written.
    #[error("{}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The control plane refused or failed a call.
    #[error("control plane")]
    Api(#[from] skiff_proto::objects::ApiError),
    /// A pod's spec asks for what the agent cannot do.
    #[error("{field}: {reason}")]
    InvalidSpec {
        /// The field, as `spec.containers[0].image`.
        field: String,
        /// Why.
        reason: String,
    },
    /// The control plane at an endpoint belongs to another cluster than the one named.
    #[error("the control plane at {endpoint} is cluster {found:?}, not {expected:?}: refusing to join it")]
    WrongCluster {
        /// The endpoint that answered.
        endpoint: String,
        /// The cluster id the agent was given.
        expected: String,
        /// The cluster id it answered with.
        found: String,
    },
    /// A call timed out.
    #[error("{what} timed out")]
    Timeout {
        /// What.
        what: String,
    },
}

impl Error {
    /// A containerd error from a failed call.
    pub fn containerd(call: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Containerd { call, status }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// A failed system call `what` on `path` (a mount, an unshare).
    pub fn syscall(path: &std::path::Path, what: &str) -> impl FnOnce(nix::Error) -> Self {
        let command = format!("{what} {}", path.display());
        move |e| Self::Command {
            command,
            message: e.desc().to_string(),
        }
    }

    /// Whether containerd said "not found".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Containerd { status, .. } if status.code() == tonic::Code::NotFound)
    }
}

/// The agent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `e`'s message followed by those of its causes: a client's own message alone often hides
/// why (an unknown certificate authority, a refused connection).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let message = with_causes(&e);
        match &e {
            Error::InvalidSpec { .. } | Error::BadReference { .. } | Error::BadImage { .. } => {
                tonic::Status::invalid_argument(message)
            }
            Error::Containerd { status, .. } if status.code() == tonic::Code::NotFound => {
                tonic::Status::not_found(message)
            }
            Error::Timeout { .. } => tonic::Status::deadline_exceeded(message),
            Error::Connect { .. } => tonic::Status::unavailable(message),
            _ => tonic::Status::internal(message),
        }
    }
}
