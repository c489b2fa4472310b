//! Transport settings for every gRPC connection and server: deadlines, keep-alive, message
//! limits and TLS are set here and nowhere else.
//!
//! TLS is rustls under tonic rather than tonic's own TLS settings, which are fixed once a
//! server or channel is built: here each handshake takes the certificate current at that
//! moment (see [`crate::tls::live`]), so certificates are renewed without a restart.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt as _;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::{client, server};
use tonic::codegen::http::Uri;
use tonic::codegen::Service;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Channel, Endpoint, Server};

use crate::tls::{ClientTls, ServerTls};

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
/// Skiff's settings. TLS, when wanted, comes with [`channel`] or [`connect`].
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    // The scheme stays http: TLS is done by this module's connector, below tonic.
    Ok(
        Endpoint::from_shared(format!("http://{}", host_port(addr)))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .initial_connection_window_size(4 << 20)
            .initial_stream_window_size(2 << 20),
    )
}

/// A lazily connected channel to `addr`, over mutual TLS when `tls` is given; reconnects by
/// itself after failures.
pub fn channel(addr: &str, tls: Option<&ClientTls>) -> Result<Channel, tonic::transport::Error> {
    let endpoint = endpoint(addr)?;
    Ok(match tls {
        Some(tls) => endpoint.connect_with_connector_lazy(TlsConnect(tls.clone())),
        None => endpoint.connect_lazy(),
    })
}

/// A channel on `endpoint`, connected before it is returned.
pub async fn connect(
    endpoint: Endpoint,
    tls: Option<&ClientTls>,
) -> Result<Channel, tonic::transport::Error> {
    match tls {
        Some(tls) => {
            endpoint
                .connect_with_connector(TlsConnect(tls.clone()))
                .await
        }
        None => endpoint.connect().await,
    }
}

/// Dials TCP and does the client's TLS handshake (bounded by [`TLS_HANDSHAKE_TIMEOUT`]).
#[derive(Clone)]
struct TlsConnect(ClientTls);

impl Service<Uri> for TlsConnect {
    type Response = TokioIo<client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.0.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            let port = uri.port_u16().unwrap_or(80);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let handshake = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(tls.server_name.clone(), tcp);
            let stream = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The server builder every Skiff server starts from; TLS comes with [`serve`].
pub fn server() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .initial_connection_window_size(4 << 20)
        .initial_stream_window_size(2 << 20)
}

/// Serve `router` on `listener` until `shutdown`: over mutual TLS with `tls` (only holders of
/// the cluster CA's certificates get through, unless it lets anonymous clients in), plaintext
/// without.
pub async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    match tls {
        None => {
            router
                .serve_with_incoming_shutdown(incoming(listener), shutdown)
                .await
        }
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls_incoming(listener, tls), shutdown)
                .await
        }
    }
}

/// Accepted connections of `listener` with Skiff's socket settings. The server builder's own
/// `tcp_nodelay` applies only to listeners it binds itself, so a listener bound by the caller
/// must come through here, or Nagle's algorithm meets delayed ACKs and adds ~40 ms per call.
fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)))
}

/// Connections of `listener` that completed the server's TLS handshake. Each handshake runs
/// in its own task, so a slow or silent client holds up nobody else; one that fails or takes
/// longer than [`TLS_HANDSHAKE_TIMEOUT`] is dropped.
fn tls_incoming(
    listener: tokio::net::TcpListener,
    tls: ServerTls,
) -> tokio_stream::wrappers::ReceiverStream<Result<server::TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    tokio::spawn(async move {
        let mut tcp = incoming(listener);
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = tcp.next() => next,
            };
            let stream = match next {
                Some(Ok(stream)) => stream,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
                None => return,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let peer = stream.peer_addr().ok();
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        // The server has stopped when nobody receives; the connection goes.
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(?peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
