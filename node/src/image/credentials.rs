//! Registry credentials from a pod's image pull secrets: the Docker config a
//! `kubernetes.io/dockerconfigjson` Secret holds (`{"auths": {"host": {"auth": ...}}}`, or
//! the older `.dockercfg` form without `auths`), matched to the registry of the image as the
//! kubelet matches them (by host and port, any scheme or path in the key ignored).

use base64::Engine;
use serde_json::Value;

/// A user and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The Secret keys a Docker config is found under, newest form first.
pub const CONFIG_KEYS: [&str; 2] = [".dockerconfigjson", ".dockercfg"];

/// `host[:port]` of a config key: `https://index.docker.io/v1/` is `index.docker.io`.
fn host_of(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// Docker Hub goes by several names.
fn same_registry(a: &str, b: &str) -> bool {
    const HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    a == b || (HUB.contains(&a) && HUB.contains(&b))
}

/// The credentials Docker config `config` holds for `registry` (`host[:port]`), if any.
pub fn for_registry(config: &[u8], registry: &str) -> Result<Option<Credentials>, String> {
    let doc: Value =
        serde_json::from_slice(config).map_err(|e| format!("not a Docker config: {e}"))?;
    let auths = doc.get("auths").unwrap_or(&doc);
    let Some(map) = auths.as_object() else {
        return Err("not a Docker config: `auths` is not an object".into());
    };
    let Some(entry) = map
        .iter()
        .find_map(|(k, v)| same_registry(host_of(k), registry).then_some(v))
    else {
        return Ok(None);
    };
    let field = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_string);
    if let (Some(username), Some(password)) = (field("username"), field("password")) {
        return Ok(Some(Credentials { username, password }));
    }
    let Some(auth) = field("auth") else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("the `auth` of {registry} is not base64: {e}"))?;
    let text =
        String::from_utf8(decoded).map_err(|_| format!("the `auth` of {registry} is not text"))?;
    let (username, password) = text
        .split_once(':')
        .ok_or_else(|| format!("the `auth` of {registry} is not `user:password`"))?;
    Ok(Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_by_host_whatever_the_key_looks_like() {
        let config = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
            "127.0.0.1:5000": {"username": "u", "password": "p"}
        }}"#;
        let hub = for_registry(config, "docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "secret")
        );
        let local = for_registry(config, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(local.username, "u");
        assert_eq!(for_registry(config, "other:5000").unwrap(), None);
        let legacy = br#"{"registry.example": {"auth": "YTpi"}}"#;
        assert_eq!(
            for_registry(legacy, "registry.example")
                .unwrap()
                .unwrap()
                .password,
            "b"
        );
        assert!(for_registry(b"nope", "x").is_err());
        assert!(format!("{local:?}").contains("<redacted>"));
    }
}
