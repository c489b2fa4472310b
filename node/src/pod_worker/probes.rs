//! Liveness, readiness and startup probes (exec, httpGet over HTTP or HTTPS with its headers,
//! tcpSocket, gRPC's standard health check), with the kubelet's timing: initial delay,
//! period, timeout, and success/failure thresholds. As the kubelet, an HTTPS probe does not
//! check the pod's certificate: it asks whether the server answers, not who it is.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, HTTPHeader, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime::ContainerRuntime;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Restart when it fails.
    Liveness,
    /// Out of rotation when it fails.
    Readiness,
    /// Holds the others until it passes once.
    Startup,
}

/// A probe's running state.
#[derive(Debug, Clone)]
pub struct ProbeState {
    /// The probe spec.
    pub spec: Probe,
    /// Which one.
    pub kind: Kind,
    /// Its current verdict.
    pub passing: bool,
    successes: i32,
    failures: i32,
    next: Instant,
    /// The last failure's message.
    pub last_message: String,
}

impl ProbeState {
    /// A probe of a container that started at `started`.
    pub fn new(spec: Probe, kind: Kind, started: Instant) -> Self {
        let delay = Duration::from_secs(spec.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        Self {
            // Readiness starts failing; liveness and startup start passing (the kubelet's
            // initial results).
            passing: kind != Kind::Readiness && kind != Kind::Startup,
            spec,
            kind,
            successes: 0,
            failures: 0,
            next: started + delay,
            last_message: String::new(),
        }
    }

    /// Whether the probe is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// When it is next due.
    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// Consecutive failures.
    pub fn failures(&self) -> i32 {
        self.failures
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.spec.period_seconds.unwrap_or(10).max(1) as u64)
    }

    /// Record a result at `now`; returns whether the verdict changed.
    pub fn record(&mut self, ok: bool, message: String, now: Instant) -> bool {
        self.next = now + self.period();
        let before = self.passing;
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= self.spec.success_threshold.unwrap_or(1).max(1) {
                self.passing = true;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            self.last_message = message;
            if self.failures >= self.spec.failure_threshold.unwrap_or(3).max(1) {
                self.passing = false;
            }
        }
        before != self.passing
    }
}

/// The probes a container declares.
pub fn probes_of(c: &Container, started: Instant) -> Vec<ProbeState> {
    [
        (&c.startup_probe, Kind::Startup),
        (&c.liveness_probe, Kind::Liveness),
        (&c.readiness_probe, Kind::Readiness),
    ]
    .into_iter()
    .filter_map(|(p, k)| p.clone().map(|p| ProbeState::new(p, k, started)))
    .collect()
}

fn port_of(port: &IntOrString, c: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Run one probe against a container at `pod_ip`; (passed, message).
pub async fn run<R: ContainerRuntime>(
    probe: &Probe,
    container: &Container,
    container_id: &str,
    pod_ip: &str,
    runtime: &R,
) -> (bool, String) {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        return match runtime.exec(container_id, &argv, timeout).await {
            Ok(out) if out.exit_code == 0 => (true, String::new()),
            Ok(out) => (
                false,
                format!(
                    "exec {argv:?} exited {}: {}",
                    out.exit_code,
                    String::from_utf8_lossy(&out.output).trim()
                ),
            ),
            Err(e) => (false, format!("exec {argv:?}: {e}")),
        };
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = port_of(&http.port, container) else {
            return (
                false,
                format!("httpGet: port {:?} is not defined", http.port),
            );
        };
        let host = http.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let https = http.scheme.as_deref() == Some("HTTPS");
        let url = format!(
            "{}://{host}:{port}{path}",
            if https { "https" } else { "http" }
        );
        let headers = http.http_headers.as_deref().unwrap_or_default();
        let get = http_get(&host, port, &path, headers, https);
        return match tokio::time::timeout(timeout, get).await {
            Ok(Ok(code)) if (200..400).contains(&code) => (true, String::new()),
            Ok(Ok(code)) => (false, format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(e)) => (false, format!("Get {url}: {e}")),
            Err(_) => (false, format!("Get {url}: timed out")),
        };
    }
    if let Some(g) = &probe.grpc {
        let Ok(port) = u16::try_from(g.port) else {
            return (false, format!("grpc: port {} is not a port", g.port));
        };
        let service = g.service.clone().unwrap_or_default();
        return match tokio::time::timeout(timeout, grpc_check(pod_ip, port, service)).await {
            Ok(Ok(())) => (true, String::new()),
            Ok(Err(e)) => (false, e),
            Err(_) => (
                false,
                format!("timeout: health rpc did not complete within {timeout:?}"),
            ),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port_of(&tcp.port, container) else {
            return (
                false,
                format!("tcpSocket: port {:?} is not defined", tcp.port),
            );
        };
        let host = tcp.host.clone().unwrap_or_else(|| pod_ip.to_string());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => (true, String::new()),
            Ok(Err(e)) => (false, format!("dial tcp {host}:{port}: {e}")),
            Err(_) => (false, format!("dial tcp {host}:{port}: timed out")),
        };
    }
    (
        false,
        "the probe names no handler (exec, httpGet, tcpSocket, grpc)".into(),
    )
}

/// gRPC's standard health check (`grpc.health.v1.Health/Check`) of `service` at
/// `host:port`; the kubelet's wording when it fails.
async fn grpc_check(host: &str, port: u16, service: String) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let target = format!("{host}:{port}");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| format!("failed to connect service {target:?}: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("failed to connect service {target:?}: {e}"))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
        .map_err(|s| format!("rpc error: code = {:?} desc = {}", s.code(), s.message()))?;
    let status = answer.into_inner().status;
    if status == ServingStatus::Serving as i32 {
        return Ok(());
    }
    let name = ServingStatus::try_from(status)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| status.to_string());
    Err(format!("service unhealthy (responded with {name:?})"))
}

/// The request head of a probe's GET: the probe's headers, and a Host and User-Agent of
/// ours unless it sets them.
fn request_head(host: &str, port: u16, path: &str, headers: &[HTTPHeader]) -> String {
    let has = |name: &str| headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    let mut head = format!("GET {path} HTTP/1.0\r\n");
    if !has("Host") {
        head.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !has("User-Agent") {
        head.push_str("User-Agent: skiff-probe/1.0\r\n");
    }
    for h in headers {
        // A header cannot smuggle another line into the request.
        let clean = |s: &str| s.replace(['\r', '\n'], "");
        head.push_str(&format!("{}: {}\r\n", clean(&h.name), clean(&h.value)));
    }
    head.push_str("Connection: close\r\n\r\n");
    head
}

/// A minimal HTTP/1.0 GET, over TLS when `https`; returns the status code.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[HTTPHeader],
    https: bool,
) -> std::io::Result<u16> {
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    let head = request_head(host, port, path, headers);
    if https {
        let tls = tls::connect(tcp, host).await?;
        exchange(tls, &head).await
    } else {
        exchange(tcp, &head).await
    }
}

async fn exchange<S>(mut s: S, head: &str) -> std::io::Result<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(head.as_bytes()).await?;
    let mut buf = vec![0u8; 256];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}

/// TLS for HTTPS probes: any certificate is accepted, as the kubelet's probes accept it.
mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// A TLS session over `tcp` to `host`, whatever its certificate. Ring, as every other
    /// connection of Skiff's (no post-quantum key exchange; pods' servers rarely offer it).
    #[allow(deprecated)]
    pub async fn connect(
        tcp: tokio::net::TcpStream,
        host: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_decide_the_verdict() {
        let spec = Probe {
            failure_threshold: Some(2),
            success_threshold: Some(1),
            period_seconds: Some(1),
            ..Default::default()
        };
        let now = Instant::now();
        let mut p = ProbeState::new(spec, Kind::Liveness, now);
        assert!(p.passing && p.due(now));
        assert!(!p.record(false, "no".into(), now));
        assert!(p.passing, "one failure is under the threshold");
        assert!(!p.due(now));
        assert!(p.record(false, "no".into(), now));
        assert!(!p.passing);
        assert!(p.record(true, String::new(), now));
        assert!(p.passing);
    }

    #[test]
    fn readiness_starts_failing_until_it_passes() {
        let p = ProbeState::new(Probe::default(), Kind::Readiness, Instant::now());
        assert!(!p.passing);
    }
}
