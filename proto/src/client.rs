//! The Skiff client: a list of control-node endpoints with fail-over.
//!
//! Any control node serves any call (followers forward to the leader), so the client sticks
//! to one endpoint and moves to the next when it fails. Writes carry a request id that stays
//! the same across retries, so a write retried after a leader change is applied at most
//! once; when the client gives up it reports the outcome as unknown, never as failed.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Status;

use crate::pb::auth_client::AuthClient;
use crate::pb::cluster_client::ClusterClient;
use crate::pb::kv_client::KvClient;
use crate::pb::{self};
use crate::status::{expired_compacted, is_retryable};
use crate::transport::{self, MAX_MESSAGE_BYTES};

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint was given.
    #[error("no endpoints: give at least one control node address (host:port)")]
    NoEndpoints,
    /// An endpoint address is malformed.
    #[error("endpoint {addr:?} is not a valid address")]
    BadEndpoint {
        /// The address as given.
        addr: String,
        /// Why it is invalid.
        #[source]
        source: tonic::transport::Error,
    },
    /// No endpoint could serve the call before the deadline. For a write the outcome is
    /// unknown: it may or may not have been applied.
    #[error("no control node could serve the call within {waited:?} (last error: {last})")]
    Unavailable {
        /// How long the client tried.
        waited: Duration,
        /// The last error seen.
        last: Status,
    },
    /// The watch start revision is older than the retained history; re-list.
    #[error("EXPIRED: history is retained only after revision {compacted}")]
    Expired {
        /// The newest compacted revision.
        compacted: u64,
    },
    /// The client's credentials could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The server refused the call; the status says why (its message names the field).
    #[error("{}", rejection(.0))]
    Rejected(Status),
}

/// Result of client calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A refusal as the user reads it: the server's message, or what kind of refusal it was when
/// it gave none (a member of an older release answers `UNIMPLEMENTED` to calls it lacks).
fn rejection(status: &Status) -> String {
    match status.message() {
        "" if status.code() == tonic::Code::Unimplemented => {
            "the control node does not know this call (is it of an older release?)".into()
        }
        "" => format!("refused: {}", status.code().description()),
        message => message.to_string(),
    }
}

/// Settings of the client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Deadline of one attempt on one endpoint.
    pub attempt_timeout: Duration,
    /// How long a call keeps trying other endpoints before giving up.
    pub call_deadline: Duration,
    /// Start at a random endpoint (spreads load); otherwise at the first.
    pub random_start: bool,
    /// Mutual TLS with these credentials (renewed ones are presented from the next
    /// connection on); plaintext without.
    pub tls: Option<crate::tls::LiveCredentials>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(5),
            call_deadline: Duration::from_secs(15),
            random_start: true,
            tls: None,
        }
    }
}

/// Response metadata by which a follower that forwarded a write names the leader's address.
pub const LEADER_METADATA: &str = "skiff-leader";

/// [`Inner::leader`] when no leader is known.
const NO_LEADER: usize = usize::MAX;

/// How long one attempt of a call that waits on the cluster by design may take.
const PATIENT_ATTEMPT: Duration = Duration::from_secs(300);

struct Inner {
    addrs: Vec<String>,
    channels: Vec<Channel>,
    preferred: AtomicUsize,
    /// The endpoint that last served a write as the leader (or [`NO_LEADER`]): writes go
    /// there first and skip a follower's forwarding hop. Reads stay spread.
    leader: AtomicUsize,
    config: ClientConfig,
}

/// A cloneable client of a Skiff cluster.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A fresh 16-byte request id.
pub fn new_request_id() -> Vec<u8> {
    uuid::Uuid::new_v4().as_bytes().to_vec()
}

/// One item of a watch: events, or a progress bookmark at a revision.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// Events in revision order.
    Events(Vec<pb::Event>),
    /// Nothing more matched up to this revision.
    Progress(u64),
}

pub(crate) fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::thread_rng().gen_range(0.8..1.2);
    d.mul_f64(f)
}

impl Client {
    /// A client of the cluster reachable at `endpoints` (`host:port` each).
    pub fn new(endpoints: &[String]) -> Result<Self> {
        Self::with_config(endpoints, ClientConfig::default())
    }

    /// A client with explicit settings.
    pub fn with_config(endpoints: &[String], config: ClientConfig) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let tls = config
            .tls
            .as_ref()
            .map(|c| c.client_tls(crate::tls::CONTROL_SERVER_NAME))
            .transpose()?;
        let mut channels = Vec::with_capacity(endpoints.len());
        for addr in endpoints {
            let ch = transport::channel(addr, tls.as_ref()).map_err(|source| {
                ClientError::BadEndpoint {
                    addr: addr.clone(),
                    source,
                }
            })?;
            channels.push(ch);
        }
        let start = if config.random_start {
            rand::thread_rng().gen_range(0..endpoints.len())
        } else {
            0
        };
        Ok(Self {
            inner: Arc::new(Inner {
                addrs: endpoints.to_vec(),
                channels,
                preferred: AtomicUsize::new(start),
                leader: AtomicUsize::new(NO_LEADER),
                config,
            }),
        })
    }

    /// The preferred endpoint's index and channel.
    pub(crate) fn current(&self) -> (usize, Channel) {
        let i = self.inner.preferred.load(Ordering::Relaxed) % self.inner.channels.len();
        (i, self.inner.channels[i].clone())
    }

    /// Move on from endpoint `i` (if it is still the preferred one).
    pub(crate) fn rotate(&self, i: usize) {
        let n = self.inner.channels.len();
        let _ = self.inner.preferred.compare_exchange(
            i,
            (i + 1) % n,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The credentials it connects with now (mutual TLS), if any.
    pub fn credentials(&self) -> Option<crate::tls::Credentials> {
        self.inner.config.tls.as_ref().map(|c| c.current())
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.addrs
    }

    fn kv(ch: Channel) -> KvClient<Channel> {
        KvClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn cluster(ch: Channel) -> ClusterClient<Channel> {
        ClusterClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Run `f` against the preferred endpoint, failing over until the call deadline.
    pub(crate) async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        self.call_routed(false, self.inner.config.attempt_timeout, f)
            .await
    }

    /// Run a call that waits on the cluster for long by design (a member catching up, then
    /// keeping up for the stabilization time), each attempt allowed [`PATIENT_ATTEMPT`].
    pub(crate) async fn call_patient<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let attempt = self.inner.config.attempt_timeout.max(PATIENT_ATTEMPT);
        self.call_routed(false, attempt, f).await
    }

    /// Run a write: first at the endpoint known to lead, else as [`Client::call`].
    pub(crate) async fn call_write<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        self.call_routed(true, self.inner.config.attempt_timeout, f)
            .await
    }

    /// After endpoint `i` served a write: it leads, unless it names another leader.
    fn learn_leader(&self, i: usize, meta: &tonic::metadata::MetadataMap) {
        let named = meta
            .get(LEADER_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(|addr| self.inner.addrs.iter().position(|a| a == addr));
        let leader = match named {
            None => i,
            Some(Some(j)) => j,
            // The leader by an address this client was not given (it reaches the members
            // through other names: a NAT, a gateway, DNS names). Let the next write try the
            // next endpoint: the one that leads answers without naming another.
            Some(None) => {
                self.rotate(i);
                NO_LEADER
            }
        };
        self.inner.leader.store(leader, Ordering::Relaxed);
    }

    /// The endpoint the client last found leading, to which it sends writes first.
    pub fn leader_endpoint(&self) -> Option<&str> {
        let i = self.inner.leader.load(Ordering::Relaxed);
        self.inner.addrs.get(i).map(String::as_str)
    }

    async fn call_routed<T, F, Fut>(&self, write: bool, attempt: Duration, mut f: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let n = self.inner.channels.len();
        let mut backoff = Duration::from_millis(20);
        let mut tries_since_sleep = 0;
        let mut leader = if write {
            self.inner.leader.load(Ordering::Relaxed)
        } else {
            NO_LEADER
        };
        loop {
            let i = if leader < n {
                leader
            } else {
                self.inner.preferred.load(Ordering::Relaxed) % n
            };
            let answer = tokio::time::timeout(attempt, f(self.inner.channels[i].clone())).await;
            let status = match answer {
                Ok(Ok(resp)) => {
                    if write {
                        self.learn_leader(i, resp.metadata());
                    }
                    return Ok(resp.into_inner());
                }
                Ok(Err(s)) => s,
                Err(_) => Status::deadline_exceeded(format!(
                    "{} did not answer in time",
                    self.inner.addrs[i]
                )),
            };
            if !is_retryable(&status) {
                return Err(ClientError::Rejected(status));
            }
            if leader < n {
                // The leader moved or went away: find it again through any member.
                leader = NO_LEADER;
                self.inner.leader.store(NO_LEADER, Ordering::Relaxed);
            }
            let waited = started.elapsed();
            if waited >= self.inner.config.call_deadline {
                return Err(ClientError::Unavailable {
                    waited,
                    last: status,
                });
            }
            tracing::debug!(endpoint = %self.inner.addrs[i], error = %status, "retrying on another endpoint");
            let _ = self.inner.preferred.compare_exchange(
                i,
                (i + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            tries_since_sleep += 1;
            // Try every endpoint once quickly, then back off before the next round.
            if tries_since_sleep >= n
                || status.code() == tonic::Code::Unavailable
                    && status.message().contains("no leader")
            {
                tries_since_sleep = 0;
                tokio::time::sleep(jitter(backoff)).await;
                // Capped low, as etcd's client does (25 ms steps): an election takes a few
                // hundred milliseconds, and a client asleep for longer than a retry costs
                // outlasts the outage. A "no leader" answer is cheap to give.
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
        }
    }

    /// Read one key; linearizable unless `stale`.
    pub async fn get(&self, key: impl Into<Vec<u8>>, stale: bool) -> Result<Option<pb::KeyValue>> {
        let req = pb::RangeRequest {
            key: key.into(),
            stale,
            ..Default::default()
        };
        Ok(self.range(req).await?.kvs.into_iter().next())
    }

    /// A range read.
    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse> {
        self.call(|ch| {
            let req = req.clone();
            async move { Self::kv(ch).range(req).await }
        })
        .await
    }

    /// Set a key. The response carries no previous value (ask with a `Txn` whose put sets
    /// `prev_kv`), as etcd's put without `prev_kv`.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<pb::PutResponse> {
        let req = pb::PutRequest {
            key: key.into(),
            value: value.into(),
            request_id: new_request_id(),
            prev_kv: false,
        };
        self.call_write(|ch| {
            let req = req.clone();
            async move { Self::kv(ch).put(req).await }
        })
        .await
    }

    /// Remove a key, or every key with the prefix.
    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        prefix: bool,
    ) -> Result<pb::DeleteResponse> {
        let req = pb::DeleteRequest {
            key: key.into(),
            prefix,
            request_id: new_request_id(),
        };
        self.call_write(|ch| {
            let req = req.clone();
            async move { Self::kv(ch).delete(req).await }
        })
        .await
    }

    /// A transaction; a request id is added if it has none.
    pub async fn txn(&self, mut req: pb::TxnRequest) -> Result<pb::TxnResponse> {
        if req.request_id.is_empty() {
            req.request_id = new_request_id();
        }
        self.call_write(|ch| {
            let req = req.clone();
            async move { Self::kv(ch).txn(req).await }
        })
        .await
    }

    /// Whether the control node this client is on answers SERVING on the standard gRPC health
    /// service (`grpc.health.v1`, the whole server): it knows a leader and has applied its log.
    pub async fn serving(&self) -> Result<bool> {
        use tonic_health::pb::health_check_response::ServingStatus;
        let (_, ch) = self.current();
        let resp = tonic_health::pb::health_client::HealthClient::new(ch)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(ClientError::Rejected)?;
        Ok(resp.into_inner().status == ServingStatus::Serving as i32)
    }

    /// Status of whichever member answers.
    pub async fn status(&self) -> Result<pb::StatusResponse> {
        self.call(|ch| async move { Self::kv(ch).status(pb::StatusRequest {}).await })
            .await
    }

    /// A channel to the member at `addr` alone, each call on it allowed `timeout`.
    async fn member_channel(
        addr: &str,
        tls: Option<&crate::tls::Credentials>,
        timeout: Duration,
    ) -> std::result::Result<Channel, Status> {
        let tls = tls
            .map(|c| c.client_tls(crate::tls::CONTROL_SERVER_NAME))
            .transpose()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let endpoint = transport::endpoint(addr)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .timeout(timeout);
        transport::connect(endpoint, tls.as_ref())
            .await
            .map_err(|e| Status::unavailable(format!("{addr}: {e}")))
    }

    /// Status of the member at `addr`, without fail-over.
    pub async fn status_of(
        addr: &str,
        tls: Option<&crate::tls::Credentials>,
    ) -> std::result::Result<pb::StatusResponse, Status> {
        let ch = Self::member_channel(addr, tls, Duration::from_secs(2)).await?;
        Ok(Self::kv(ch)
            .status(pb::StatusRequest {})
            .await?
            .into_inner())
    }

    /// Compact the member at `addr`: a Raft snapshot now and its log purged behind it.
    pub async fn compact_member(
        addr: &str,
        tls: Option<&crate::tls::Credentials>,
    ) -> std::result::Result<pb::CompactResponse, Status> {
        let ch = Self::member_channel(addr, tls, PATIENT_ATTEMPT).await?;
        Ok(Self::cluster(ch)
            .compact(pb::CompactRequest {})
            .await?
            .into_inner())
    }

    /// The members of the Raft group.
    pub async fn members(&self) -> Result<pb::MemberListResponse> {
        self.call(|ch| async move {
            Self::cluster(ch)
                .member_list(pb::MemberListRequest {})
                .await
        })
        .await
    }

    /// A backup as it is sent: the file's pieces, in order (see [`Client::backup`]).
    pub async fn backup_stream(&self) -> Result<tonic::Streaming<pb::BackupChunk>> {
        self.call(|ch| async move { Self::cluster(ch).backup(pb::BackupRequest {}).await })
            .await
    }

    /// A backup of the whole store, holding every write acknowledged before the call (the
    /// file as `skiffctl snapshot save` writes it), in memory.
    pub async fn backup(&self) -> Result<Vec<u8>> {
        self.call(|ch| async move {
            let mut stream = Self::cluster(ch)
                .backup(pb::BackupRequest {})
                .await?
                .into_inner();
            let mut file = Vec::new();
            while let Some(chunk) = stream.message().await? {
                file.extend_from_slice(&chunk.data);
            }
            Ok(tonic::Response::new(file))
        })
        .await
    }

    /// Whether the caller (or, for an admin, `req.as_user`) may do what `req` names.
    pub async fn can_i(&self, req: pb::CanIRequest) -> Result<pb::CanIResponse> {
        self.call(|ch| {
            let req = req.clone();
            async move { AuthClient::new(ch).can_i(req).await }
        })
        .await
    }

    /// Have the cluster CA sign `csr_pem` (admins only); the certificate and the CA's.
    pub async fn issue_certificate(&self, csr_pem: &str) -> Result<pb::IssueCertificateResponse> {
        let req = pb::IssueCertificateRequest {
            csr_pem: csr_pem.to_string(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { AuthClient::new(ch).issue_certificate(req).await }
        })
        .await
    }

    /// Add a member as a learner, wait for it to catch up, and make it a voter if `promote`.
    pub async fn member_add(
        &self,
        id: u64,
        addr: &str,
        promote: bool,
    ) -> Result<pb::MemberListResponse> {
        let req = pb::MemberAddRequest {
            id,
            addr: addr.to_string(),
            promote,
        };
        self.call_patient(|ch| {
            let req = req.clone();
            async move { Self::cluster(ch).member_add(req).await }
        })
        .await
    }

    /// Make a learner a voter.
    pub async fn member_promote(&self, id: u64) -> Result<pb::MemberListResponse> {
        self.call(|ch| async move {
            Self::cluster(ch)
                .member_promote(pb::MemberPromoteRequest { id })
                .await
        })
        .await
    }

    /// Remove a member.
    pub async fn member_remove(&self, id: u64) -> Result<pb::MemberListResponse> {
        self.call(|ch| async move {
            Self::cluster(ch)
                .member_remove(pb::MemberRemoveRequest { id })
                .await
        })
        .await
    }

    /// Hand leadership to voter `id` (`None`: the voter furthest along); answered once
    /// another member leads.
    pub async fn transfer_leader(&self, id: Option<u64>) -> Result<pb::MemberListResponse> {
        let id = id.unwrap_or(0);
        self.call(|ch| async move {
            Self::cluster(ch)
                .transfer_leader(pb::TransferLeaderRequest { id })
                .await
        })
        .await
    }

    /// Watch `key` (or the prefix) from `start_revision` (0 = now). The watch survives the
    /// loss of the member serving it: it resumes on another from the next revision, so events
    /// arrive once each and in order. It ends with [`ClientError::Expired`] if the history it
    /// needs is gone.
    pub fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        prefix: bool,
        start_revision: u64,
    ) -> mpsc::Receiver<Result<WatchEvent>> {
        let (tx, rx) = mpsc::channel(256);
        let client = self.clone();
        let key = key.into();
        tokio::spawn(async move { client.watch_loop(key, prefix, start_revision, tx).await });
        rx
    }

    async fn watch_loop(
        &self,
        key: Vec<u8>,
        prefix: bool,
        start: u64,
        tx: mpsc::Sender<Result<WatchEvent>>,
    ) {
        let n = self.inner.channels.len();
        // `next` is the first revision not yet delivered; 0 until we know where "now" is.
        let mut next = start;
        let mut backoff = Duration::from_millis(100);
        loop {
            let i = self.inner.preferred.load(Ordering::Relaxed) % n;
            let req = pb::WatchRequest {
                key: key.clone(),
                prefix,
                start_revision: next,
                progress_interval_ms: 0,
            };
            let result = Self::kv(self.inner.channels[i].clone()).watch(req).await;
            let mut stream = match result {
                Ok(s) => s.into_inner(),
                Err(s) => {
                    if let Some(compacted) = expired_compacted(&s) {
                        let _ = tx.send(Err(ClientError::Expired { compacted })).await;
                        return;
                    }
                    if !is_retryable(&s) {
                        let _ = tx.send(Err(ClientError::Rejected(s))).await;
                        return;
                    }
                    let _ = self.inner.preferred.compare_exchange(
                        i,
                        (i + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tx.closed() => return,
                };
                match msg {
                    Ok(Some(resp)) => {
                        backoff = Duration::from_millis(100);
                        let rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
                        let item = if resp.progress {
                            next = next.max(rev + 1);
                            WatchEvent::Progress(rev)
                        } else {
                            if let Some(last) = resp.events.last().and_then(|e| e.kv.as_ref()) {
                                next = next.max(last.mod_revision + 1);
                            }
                            WatchEvent::Events(resp.events)
                        };
                        if tx.send(Ok(item)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(s) => {
                        if let Some(compacted) = expired_compacted(&s) {
                            let _ = tx.send(Err(ClientError::Expired { compacted })).await;
                            return;
                        }
                        if !is_retryable(&s) {
                            let _ = tx.send(Err(ClientError::Rejected(s))).await;
                            return;
                        }
                        break;
                    }
                }
            }
            let _ = self.inner.preferred.compare_exchange(
                i,
                (i + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}
