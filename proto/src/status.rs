//! The mapping between Skiff's errors and gRPC status codes, used by servers and clients.
//!
//! | meaning | code |
//! |---|---|
//! | bad input (names the field) | `INVALID_ARGUMENT` |
//! | watch start older than retained history | `OUT_OF_RANGE`, message starts `EXPIRED` |
//! | no leader / leader unreachable / shutting down (retry elsewhere) | `UNAVAILABLE` |
//! | membership change refused | `FAILED_PRECONDITION` |
//! | unknown member | `NOT_FOUND` |
//! | store failure | `INTERNAL` |

use tonic::{Code, Status};

/// Metadata key carrying the compacted revision on an `EXPIRED` status.
pub const COMPACTED_KEY: &str = "skiff-compacted-revision";

/// Bad input: `field` names what is wrong, `reason` says why.
pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

/// The requested revision is older than the retained history.
pub fn expired(requested: u64, compacted: u64) -> Status {
    let mut s = Status::out_of_range(format!(
        "EXPIRED: revision {requested} is compacted; history is retained after revision {compacted}"
    ));
    if let Ok(v) = compacted.to_string().parse() {
        s.metadata_mut().insert(COMPACTED_KEY, v);
    }
    s
}

/// The call cannot be served here now; the client should try again, possibly elsewhere.
pub fn unavailable(reason: impl std::fmt::Display) -> Status {
    Status::unavailable(reason.to_string())
}

/// Whether a client may retry after this status, on this or another endpoint.
pub fn is_retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

/// If `s` is an `EXPIRED` status, the compacted revision it names.
pub fn expired_compacted(s: &Status) -> Option<u64> {
    if s.code() != Code::OutOfRange || !s.message().starts_with("EXPIRED") {
        return None;
    }
    Some(
        s.metadata()
            .get(COMPACTED_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}
