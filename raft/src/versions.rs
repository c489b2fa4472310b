//! The versions a member speaks and reads, so that members of different releases can run
//! side by side during a rolling upgrade and refuse, naming both versions, what they cannot.
//!
//! - The Raft protocol (the messages between members): every request carries its sender's
//!   version; a member refuses one newer than its own. Members from before versions send none
//!   (read as 1), which is the same protocol.
//! - The data directory (its `member.json` says which format wrote it): a member refuses a
//!   newer format than it reads (checked in `skiff_control::bootstrap`).
//! - Backup files carry their own format ([`crate::backup::format::FORMAT`]).

use tonic::Status;

/// The Raft protocol this build speaks.
pub const RAFT_PROTOCOL: u32 = 1;
/// The data directory format this build writes and reads. 2: the stores keep large values in
/// pieces (see `engine::sled_engine::pieces`); a directory of format 1 is brought to 2 when
/// opened, after which format-1 builds refuse it.
pub const DATA_FORMAT: u32 = 2;

/// Refuse a request from a peer speaking a newer Raft protocol than this member.
pub fn check_peer_protocol(sent: u32) -> Result<(), Status> {
    let sent = sent.max(1);
    if sent > RAFT_PROTOCOL {
        return Err(Status::failed_precondition(format!(
            "the peer speaks Raft protocol {sent}; this member speaks protocol {RAFT_PROTOCOL}: \
             upgrade this member (a newer member runs beside older ones only while it speaks \
             their protocol)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_and_unversioned_peers_are_heard_and_a_newer_one_is_refused_naming_both() {
        assert!(check_peer_protocol(0).is_ok());
        assert!(check_peer_protocol(RAFT_PROTOCOL).is_ok());
        let e = check_peer_protocol(RAFT_PROTOCOL + 1).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("protocol 2") && e.message().contains("protocol 1"));
    }
}
