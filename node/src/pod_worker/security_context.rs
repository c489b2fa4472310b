//! How a container runs: its `securityContext` over its pod's, over the image's `USER`. A
//! `runAsNonRoot` container that would run as root is refused before it is made, as
//! Kubernetes refuses it (`CreateContainerConfigError`, with the reason).

use k8s_openapi::api::core::v1::{Container, Pod};

use super::config_sources::ConfigError;
use crate::runtime::oci_spec::Security;
use crate::runtime::ImageInfo;

fn id(v: i64, field: &str) -> Result<u32, ConfigError> {
    u32::try_from(v).map_err(|_| ConfigError(format!("{field}: {v} is not a valid id")))
}

/// The image's user as (uid, gid): empty is root; `uid` or `uid:gid` (names were resolved from
/// the image's `/etc/passwd` and `/etc/group` when it was recorded); a name left is one the
/// image does not know, so it needs `runAsUser`.
fn image_user(user: &str) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = user.split_once(':').unwrap_or((user, "0"));
    match (u.parse(), g.parse()) {
        (Ok(u), Ok(g)) => Ok((u, g)),
        _ => Err(format!(
            "image's user ({user}) is not in its /etc/passwd or /etc/group: set securityContext.runAsUser"
        )),
    }
}

/// The effective security settings of container `c` of `pod` from `image`.
pub fn effective(pod: &Pod, c: &Container, image: &ImageInfo) -> Result<Security, ConfigError> {
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let run_as_user = csc.run_as_user.or(psc.run_as_user);
    let run_as_group = csc.run_as_group.or(psc.run_as_group);
    let non_root = csc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false);
    let (uid, gid) = match run_as_user {
        Some(u) => (id(u, "securityContext.runAsUser")?, 0),
        None => image_user(&image.user).map_err(ConfigError)?,
    };
    let gid = match run_as_group {
        Some(g) => id(g, "securityContext.runAsGroup")?,
        None => gid,
    };
    if non_root && uid == 0 {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        return Err(ConfigError(if run_as_user.is_some() {
            format!(
                "container's runAsUser breaks non-root policy (pod: {ns}/{name}, container: {})",
                c.name
            )
        } else {
            format!(
                "container has runAsNonRoot and image will run as root (pod: {ns}/{name}, container: {})",
                c.name
            )
        }));
    }
    let mut additional_gids = Vec::new();
    for g in psc
        .fs_group
        .into_iter()
        .chain(psc.supplemental_groups.into_iter().flatten())
    {
        let g = id(g, "securityContext.supplementalGroups")?;
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }
    let caps = csc.capabilities.unwrap_or_default();
    Ok(Security {
        uid,
        gid,
        additional_gids,
        add: caps.add.unwrap_or_default(),
        drop: caps.drop.unwrap_or_default(),
        privileged: csc.privileged.unwrap_or(false),
        allow_privilege_escalation: csc.allow_privilege_escalation.unwrap_or(false),
        read_only_root: csc.read_only_root_filesystem.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}))
            .expect("pod")
    }

    #[test]
    fn the_container_wins_over_the_pod_and_the_pod_over_the_image() {
        let p = pod(
            json!({"securityContext": {"runAsUser": 1000, "fsGroup": 2000},
                           "containers": [{"name": "c", "securityContext": {"runAsGroup": 3000,
                               "readOnlyRootFilesystem": true,
                               "capabilities": {"drop": ["NET_RAW"]}}}]}),
        );
        let c = &p.spec.as_ref().unwrap().containers[0];
        let image = ImageInfo {
            user: "5:6".into(),
            ..Default::default()
        };
        let s = effective(&p, c, &image).expect("settings");
        assert_eq!(
            (s.uid, s.gid, s.additional_gids.clone()),
            (1000, 3000, vec![2000])
        );
        assert!(s.read_only_root && !s.privileged && !s.allow_privilege_escalation);
        assert_eq!(s.drop, ["NET_RAW"]);
        let bare = pod(json!({"containers": [{"name": "c"}]}));
        let c = &bare.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            effective(&bare, c, &image).map(|s| (s.uid, s.gid)).ok(),
            Some((5, 6))
        );
    }

    #[test]
    fn run_as_non_root_refuses_root_with_the_reason() {
        let p =
            pod(json!({"containers": [{"name": "c", "securityContext": {"runAsNonRoot": true}}]}));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let e = effective(&p, c, &ImageInfo::default()).expect_err("root image");
        assert!(
            e.0.contains("runAsNonRoot and image will run as root"),
            "{}",
            e.0
        );
        let named = ImageInfo {
            user: "nobody".into(),
            ..Default::default()
        };
        assert!(effective(&p, c, &named)
            .unwrap_err()
            .0
            .contains("not in its /etc/passwd"));
    }
}
