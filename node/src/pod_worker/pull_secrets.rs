//! The registry credentials of a pod's `imagePullSecrets`: the first of its Secrets that
//! holds a Docker config with an entry for the image's registry. A Secret that is missing
//! or holds no readable config is reported and skipped, as the kubelet does: the pull goes
//! on with what is left (anonymously, if nothing is).

use k8s_openapi::api::core::v1::Pod;

use super::api::PodApi;
use super::config_sources::SourceKind;
use crate::image::credentials::{self, Credentials, CONFIG_KEYS};
use crate::image::reference::ImageRef;

/// The credentials for `image` among `pod`'s pull secrets, and what was wrong with the
/// secrets that could not be read.
pub async fn credentials_for(
    api: &impl PodApi,
    pod: &Pod,
    image: &str,
) -> (Option<Credentials>, Vec<String>) {
    let mut problems = Vec::new();
    let Ok(reference) = ImageRef::parse(image) else {
        return (None, problems);
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let names = pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.as_str());
    for name in names {
        let data = match api.source_data(ns, SourceKind::Secret, name).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                problems.push(format!("secret {name:?} not found"));
                continue;
            }
            Err(e) => {
                problems.push(format!("secret {name:?}: {}", e.0));
                continue;
            }
        };
        let Some(config) = CONFIG_KEYS.iter().find_map(|k| data.get(*k)) else {
            problems.push(format!(
                "secret {name:?} holds no {} key",
                CONFIG_KEYS.join(" or ")
            ));
            continue;
        };
        match credentials::for_registry(config, &reference.registry) {
            Ok(Some(c)) => return (Some(c), problems),
            Ok(None) => {}
            Err(e) => problems.push(format!("secret {name:?}: {e}")),
        }
    }
    (None, problems)
}
