//! An image's `USER` given by name (`nobody`, `app:staff`, `1000:staff`), turned into ids from
//! the image's own `/etc/passwd` and `/etc/group`, as Docker and containerd's CRI do: the
//! files are read through a read-only view of the image's top snapshot, mounted for a moment.
//! A user named alone gets its primary group from `/etc/passwd`.

use std::path::PathBuf;
use std::time::Duration;

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{RemoveSnapshotRequest, ViewSnapshotRequest};

use crate::ctd::Conn;
use crate::error::{Error, Result};
use crate::runtime::root_mount;

/// How long the view's lease lasts if the agent dies while it reads.
const LEASE_TTL: Duration = Duration::from_secs(300);

/// `user` as `uid:gid` when it names a user or group by name and the image's files know them;
/// as it was otherwise (empty, numeric, or a name the image does not know: the container's
/// start then says so).
pub async fn resolve(conn: &Conn, chain_id: &str, user: &str) -> Result<String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let numeric = |s: &str| s.parse::<u32>().is_ok();
    if user.is_empty() || (numeric(u) && g.is_none_or(numeric)) {
        return Ok(user.to_string());
    }
    let (passwd, group) = read_files(conn, chain_id).await?;
    Ok(ids(u, g, &passwd, &group)
        .map(|(uid, gid)| format!("{uid}:{gid}"))
        .unwrap_or_else(|| user.to_string()))
}

/// The ids of user `u` and group `g` (or the user's primary group) in the files' text.
fn ids(u: &str, g: Option<&str>, passwd: &str, group: &str) -> Option<(u32, u32)> {
    // name:password:uid:gid:...
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == u || (f[2] == u && u.parse::<u32>().is_ok())));
    let uid = match u.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry.as_ref()?.get(2)?.parse().ok()?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            // name:password:gid:members
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)?
                .get(2)?
                .parse()
                .ok()?,
        },
        None => match &entry {
            Some(f) => f.get(3)?.parse().ok()?,
            None => 0,
        },
    };
    Some((uid, gid))
}

/// `/etc/passwd` and `/etc/group` of the snapshot `chain_id` (empty when absent).
async fn read_files(conn: &Conn, chain_id: &str) -> Result<(String, String)> {
    let lease = conn.lease(LEASE_TTL).await?;
    let key = format!("skiff-user-view-{}", uuid::Uuid::new_v4());
    let mut snapshots = SnapshotsClient::new(conn.channel());
    let viewed = snapshots
        .view(conn.req_leased(
            ViewSnapshotRequest {
                snapshotter: conn.snapshotter.clone(),
                key: key.clone(),
                parent: chain_id.into(),
                labels: Default::default(),
            },
            &lease,
        ))
        .await
        .map_err(Error::containerd("snapshots.View"));
    let read = match viewed {
        Ok(view) => read_mounted(&view.into_inner().mounts),
        Err(e) => Err(e),
    };
    if let Err(s) = snapshots
        .remove(conn.req(RemoveSnapshotRequest {
            snapshotter: conn.snapshotter.clone(),
            key: key.clone(),
        }))
        .await
    {
        tracing::warn!(%key, error = %s, "removing the view of an image's users");
    }
    lease.release().await;
    read
}

fn read_mounted(mounts: &[containerd_client::types::Mount]) -> Result<(String, String)> {
    let dir: PathBuf = std::env::temp_dir().join(format!("skiff-user-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&dir).map_err(Error::io(&dir))?;
    let read = root_mount::mount_all(mounts, &dir).map(|()| {
        let file = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        (file("etc/passwd"), file("etc/group"))
    });
    let detached = root_mount::detach(&dir);
    if let Err(e) = std::fs::remove_dir(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "removing a view's mount point");
    }
    let read = read?;
    detached?;
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                          app:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1001:\n";

    #[test]
    fn names_resolve_through_the_images_files() {
        assert_eq!(ids("nobody", None, PASSWD, GROUP), Some((65534, 65534)));
        assert_eq!(ids("app", None, PASSWD, GROUP), Some((1000, 1001)));
        assert_eq!(ids("app", Some("staff"), PASSWD, GROUP), Some((1000, 50)));
        assert_eq!(ids("1000", Some("staff"), PASSWD, GROUP), Some((1000, 50)));
        assert_eq!(ids("app", Some("7"), PASSWD, GROUP), Some((1000, 7)));
        assert_eq!(ids("ghost", None, PASSWD, GROUP), None);
        assert_eq!(ids("app", Some("ghosts"), PASSWD, GROUP), None);
    }
}
