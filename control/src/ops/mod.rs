//! A control node's operations endpoint (`skiff control --metrics-listen ADDR`): plain HTTP for
//! the scrapers and probes that expect it, as etcd's and the API server's.
//!
//! - `GET /metrics`: Prometheus' text format ([`raft_metrics`] read at each scrape, and the
//!   controllers' families);
//! - `GET /healthz`: 200 while the process serves;
//! - `GET /readyz`: 200 once a leader is known and this member has applied what it knows
//!   committed; else 503 with the reason.

pub mod raft_metrics;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use skiff_raft::RaftNode;
use tokio::net::TcpListener;

use self::raft_metrics::RaftFigures;
use crate::controllers::ControllerMetrics;

/// What the endpoint serves.
pub struct Ops {
    node: RaftNode,
    registry: Mutex<Registry>,
    raft: RaftFigures,
}

impl Ops {
    /// The endpoint of `node`, with the controllers' families in `controllers`.
    pub fn new(node: RaftNode) -> (Arc<Self>, ControllerMetrics) {
        let mut registry = Registry::default();
        let raft = RaftFigures::register(&mut registry);
        let controllers = ControllerMetrics::register(&mut registry);
        (
            Arc::new(Self {
                node,
                registry: Mutex::new(registry),
                raft,
            }),
            controllers,
        )
    }

    fn metrics(&self) -> String {
        self.raft.update(&self.node);
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        text
    }

    /// Why this member is not ready, if it is not.
    pub fn not_ready(&self) -> Option<String> {
        let m = self.node.raft().metrics().borrow().clone();
        if m.current_leader.is_none() {
            return Some("no leader known".into());
        }
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let committed = m.last_log_index.unwrap_or(0);
        (applied < committed).then(|| format!("applied {applied} of {committed} log entries"))
    }

    fn answer(&self, path: &str) -> (StatusCode, String, &'static str) {
        const TEXT: &str = "text/plain; charset=utf-8";
        match path {
            "/metrics" => (
                StatusCode::OK,
                self.metrics(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            "/healthz" | "/livez" => (StatusCode::OK, "ok\n".into(), TEXT),
            "/readyz" => match self.not_ready() {
                None => (StatusCode::OK, "ok\n".into(), TEXT),
                Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"), TEXT),
            },
            _ => (StatusCode::NOT_FOUND, "not found\n".into(), TEXT),
        }
    }
}

/// Serve `ops` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, ops: Arc<Ops>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept");
                continue;
            }
        };
        let ops = ops.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let ops = ops.clone();
                async move {
                    let (status, body, kind) = ops.answer(req.uri().path());
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
                        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics endpoint: connection");
            }
        });
    }
}
