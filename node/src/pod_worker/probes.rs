//! Liveness, readiness and startup probes (exec, httpGet, tcpSocket), with the kubelet's
//! timing: initial delay, period, timeout, and success/failure thresholds.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
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
        return match tokio::time::timeout(timeout, http_get(&host, port, &path)).await {
            Ok(Ok(code)) if (200..400).contains(&code) => (true, String::new()),
            Ok(Ok(code)) => (false, format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(e)) => (false, format!("Get http://{host}:{port}{path}: {e}")),
            Err(_) => (false, format!("Get http://{host}:{port}{path}: timed out")),
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
        "the probe names no handler (exec, httpGet, tcpSocket)".into(),
    )
}

/// A minimal HTTP/1.0 GET; returns the status code.
async fn http_get(host: &str, port: u16, path: &str) -> std::io::Result<u16> {
    let mut s = tokio::net::TcpStream::connect((host, port)).await?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: skiff-probe/1.0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
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
