//! Where skiffctl finds the cluster: flags, then the config file.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use skiff_proto::config_file::ConfigFile;

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

/// The endpoints to use.
pub fn resolve(
    flag: &[String],
    config: Option<&Path>,
    context: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    if !flag.is_empty() {
        return Ok(flag.to_vec());
    }
    let path = config.map(Path::to_path_buf).or_else(default_config).context(
        "no cluster given: pass --endpoints HOST:PORT,... or run `skiff up` here (it writes .skiff/config.json)",
    )?;
    let cfg = ConfigFile::load(&path)?;
    Ok(cfg.context(context, &path)?.endpoints.clone())
}
