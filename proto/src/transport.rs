//! Transport settings for every gRPC connection and server: deadlines, keep-alive and
//! message limits are set here and nowhere else.

use std::time::Duration;

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Server, ServerTlsConfig};

/// Largest gRPC message accepted or sent. Above the 1.5 MiB value limit so an oversized value
/// reaches validation and gets a precise error instead of a transport failure.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// How long a TLS handshake may take, on either side. Without a bound, a peer (or a middlebox)
/// that takes the TCP connection but never answers the handshake holds a channel in
/// "connecting" for good, and every call on it times out (a Raft peer stops hearing from the
/// leader). Long enough for two round trips over a slow WAN link; Go's HTTP client allows 10 s.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest value the store accepts.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// `host:port` of an address given as `host:port`, `http://host:port` or `https://host:port`.
pub fn host_port(addr: &str) -> &str {
    addr.strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr)
}

/// Parse `host:port` (or `http://host:port`, `https://host:port`) into an endpoint with
/// Skiff's settings; over mutual TLS when `tls` is given.
pub fn endpoint(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
) -> Result<Endpoint, tonic::transport::Error> {
    let host = host_port(addr);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{host}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .initial_connection_window_size(4 << 20)
        .initial_stream_window_size(2 << 20);
    match tls {
        Some(tls) => endpoint.tls_config(tls.clone().timeout(TLS_HANDSHAKE_TIMEOUT)),
        None => Ok(endpoint),
    }
}

/// A lazily connected channel to `addr`; reconnects by itself after failures.
pub fn channel(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(addr, tls)?.connect_lazy())
}

/// The server builder every Skiff server starts from; with `tls`, it accepts only mutual TLS
/// connections from holders of the cluster CA's certificates.
pub fn server(tls: Option<ServerTlsConfig>) -> Result<Server, tonic::transport::Error> {
    let server = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .initial_connection_window_size(4 << 20)
        .initial_stream_window_size(2 << 20);
    match tls {
        Some(tls) => server.tls_config(tls.timeout(TLS_HANDSHAKE_TIMEOUT)),
        None => Ok(server),
    }
}

/// Accepted connections of `listener` with Skiff's socket settings. The server builder's own
/// `tcp_nodelay` applies only to listeners it binds itself, so a listener bound by the caller
/// must come through here, or Nagle's algorithm meets delayed ACKs and adds ~40 ms per call.
pub fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)))
}
