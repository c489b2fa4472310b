//! The client configuration file: named contexts, each with the endpoints of one cluster and
//! the credentials to reach it with (mutual TLS). `skiff up` writes `.skiff/config.json`;
//! `skiffctl` reads it. The transport settings of a client are [`crate::ClientConfig`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One cluster a client can talk to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Context {
    /// The context's name.
    pub name: String,
    /// Control node addresses (`host:port`).
    pub endpoints: Vec<String>,
    /// The user's credentials; none for a cluster that serves plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<crate::tls::Credentials>,
}

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub struct ConfigFile {
    /// The context used when none is named.
    pub current_context: String,
    /// Known contexts.
    pub contexts: Vec<Context>,
}

/// Errors reading or writing the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("cannot read or write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path} is not a valid client config")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The named context is not in the file.
    #[error("context {name:?} is not in {path}")]
    NoContext {
        /// The name.
        name: String,
        /// The file.
        path: PathBuf,
    },
}

impl ConfigFile {
    /// A file with one context.
    pub fn single(
        name: &str,
        endpoints: Vec<String>,
        credentials: Option<crate::tls::Credentials>,
    ) -> Self {
        Self {
            current_context: name.into(),
            contexts: vec![Context {
                name: name.into(),
                endpoints,
                credentials,
            }],
        }
    }

    /// Read `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }

    /// Write `path`, readable by its owner only (it holds a private key).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        crate::private_file::write(path, &bytes).map_err(io)
    }

    /// The context named `name`, or the current one.
    pub fn context(&self, name: Option<&str>, path: &Path) -> Result<&Context, ConfigError> {
        let name = name.unwrap_or(&self.current_context);
        self.contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ConfigError::NoContext {
                name: name.into(),
                path: path.into(),
            })
    }
}
