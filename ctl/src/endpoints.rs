//! Where skiffctl finds the cluster: flags, then the config file.

use std::path::{Path, PathBuf};

use skiff_proto::config_file::ConfigFile;
use skiff_proto::tls::Credentials;

fn default_config() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SKIFFCONFIG") {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from(".skiff/config.json");
    if local.exists() {
        return Some(local);
    }
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".skiff/config.json"))?;
    home.exists().then_some(home)
}

/// The endpoints to use and the credentials to reach them with: `--endpoints` overrides the
/// context's endpoints (its credentials still apply, as kubectl's `--server` does).
pub fn resolve(
    flag: &[String],
    config: Option<&Path>,
    context: Option<&str>,
) -> anyhow::Result<(Vec<String>, Option<Credentials>)> {
    let path = config.map(Path::to_path_buf).or_else(default_config);
    let Some(path) = path else {
        if !flag.is_empty() {
            return Ok((flag.to_vec(), None));
        }
        anyhow::bail!(
            "no cluster given: pass --endpoints HOST:PORT,... or run `skiff up` here (it writes .skiff/config.json)"
        );
    };
    let cfg = ConfigFile::load(&path)?;
    let ctx = cfg.context(context, &path)?;
    let endpoints = if flag.is_empty() {
        ctx.endpoints.clone()
    } else {
        flag.to_vec()
    };
    Ok((endpoints, ctx.credentials.clone()))
}
