//! Image references as Kubernetes and Docker write them, normalised to the full name containerd
//! records (`busybox` → `docker.io/library/busybox:latest`).
//!
//! Why not oci-client's `Reference`, which parses the same forms: its parser compiles a large
//! Unicode regex on first use, and that left about 25 MiB of heap in every agent for good
//! (measured with the node agent's memory benchmark); this parser holds none. Pulls still hand
//! oci-client a `Reference` built from the parts parsed here, without its parser.

use crate::error::{Error, Result};

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host\[:port\].
    pub registry: String,
    /// Repository path.
    pub repository: String,
    /// Tag, if no digest pins it.
    pub tag: Option<String>,
    /// Digest (`sha256:…`), if pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parse and normalise `image`.
    pub fn parse(image: &str) -> Result<Self> {
        let bad = |reason: &str| Error::BadReference {
            image: image.to_string(),
            reason: reason.to_string(),
        };
        if image.is_empty() {
            return Err(bad("is empty"));
        }
        if image.chars().any(char::is_whitespace) {
            return Err(bad("must have no spaces (as registry/repository:tag)"));
        }
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("digest must be sha256:<64 hex digits>"))?;
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(bad("digest must be sha256:<64 hex digits>"));
                }
                (r, Some(d.to_string()))
            }
            None => (image, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), rest.to_string()),
        };
        // Docker Hub's old name is the same registry.
        let registry = if registry == "index.docker.io" {
            "docker.io".to_string()
        } else {
            registry
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), Some(tag.to_string())),
            _ => (path, None),
        };
        if repository.is_empty() || repository.split('/').any(str::is_empty) {
            return Err(bad("repository name is empty"));
        }
        // Registry hosts and tags may have capitals; repository names may not.
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("the repository name must be lower case"));
        }
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if tag.as_deref() == Some("") {
            return Err(bad("tag is empty"));
        }
        let tag = match (&digest, tag) {
            (None, None) => Some("latest".to_string()),
            (_, t) => t,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Whether the registry is on this machine's loopback, which is reached over plain HTTP
    /// (as Docker treats `localhost` registries as insecure).
    pub fn is_loopback(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.registry);
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_kubernetes_accepts_resolves_as_containerd_records_it() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let cases = [
            ("busybox", "docker.io/library/busybox:latest".to_string()),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "index.docker.io/library/busybox:1.36",
                "docker.io/library/busybox:1.36".into(),
            ),
            ("me/app:V1.2", "docker.io/me/app:V1.2".into()),
            ("localhost:5000/app", "localhost:5000/app:latest".into()),
            (
                "Reg.Example:5000/team/app",
                "Reg.Example:5000/team/app:latest".into(),
            ),
            ("[::1]:5000/app:1", "[::1]:5000/app:1".into()),
            ("quay.io/org/sub/app:v2", "quay.io/org/sub/app:v2".into()),
            (
                &format!("app@{digest}")[..],
                format!("docker.io/library/app@{digest}"),
            ),
            (
                &format!("reg.example:5000/app:1.0@{digest}")[..],
                format!("reg.example:5000/app:1.0@{digest}"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(ImageRef::parse(input).unwrap().to_string(), want, "{input}");
        }
        let pinned = ImageRef::parse(&format!("reg.example:5000/app:1.0@{digest}")).unwrap();
        assert_eq!(pinned.registry, "reg.example:5000");
        assert_eq!(pinned.tag.as_deref(), Some("1.0"));
        assert_eq!(pinned.digest.as_deref(), Some(digest));
    }

    #[test]
    fn short_names_are_normalised_as_docker_does() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("me/app", "docker.io/me/app:latest"),
            ("127.0.0.1:5000/skiff/busybox:1", "127.0.0.1:5000/skiff/busybox:1"),
            ("localhost/app", "localhost/app:latest"),
            (
                "reg.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "reg.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(ImageRef::parse(input).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn malformed_references_say_why() {
        for (input, why) in [
            ("", "empty"),
            ("Busybox", "lower case"),
            ("a b", "no spaces"),
            ("app@sha256:12", "digest"),
            ("app:", "tag is empty"),
            ("reg.example/", "repository"),
        ] {
            let e = ImageRef::parse(input).unwrap_err().to_string();
            assert!(e.contains(why), "{input}: {e}");
        }
    }

    #[test]
    fn loopback_registries_are_recognised() {
        assert!(ImageRef::parse("127.0.0.1:5000/a").unwrap().is_loopback());
        assert!(ImageRef::parse("localhost:5000/a").unwrap().is_loopback());
        assert!(!ImageRef::parse("reg.example/a").unwrap().is_loopback());
    }
}
