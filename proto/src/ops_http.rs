//! The plain-HTTP operations endpoint every Skiff process may serve (`--metrics-listen`):
//! `/metrics` (Prometheus' text format), `/healthz` (and `/livez`), `/readyz` (503 with the
//! reason while not ready), as scrapers and load balancers expect them. What is measured and
//! what "ready" means is the process's own ([`OpsSource`]).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What a process reports.
pub trait OpsSource: Send + Sync + 'static {
    /// Its metrics, in Prometheus' text format.
    fn metrics(&self) -> String;
    /// Why it is not ready, if it is not.
    fn not_ready(&self) -> Option<String>;
}

/// `registry` in Prometheus' text format.
pub fn encode(registry: &Mutex<prometheus_client::registry::Registry>) -> String {
    let mut text = String::new();
    let registry = registry.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    text
}

fn answer(source: &dyn OpsSource, path: &str) -> (StatusCode, String, &'static str) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/metrics" => (
            StatusCode::OK,
            source.metrics(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/healthz" | "/livez" => (StatusCode::OK, "ok\n".into(), TEXT),
        "/readyz" => match source.not_ready() {
            None => (StatusCode::OK, "ok\n".into(), TEXT),
            Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"), TEXT),
        },
        _ => (StatusCode::NOT_FOUND, "not found\n".into(), TEXT),
    }
}

/// Serve `source` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, source: Arc<dyn OpsSource>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "operations endpoint: accept");
                continue;
            }
        };
        let source = source.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let source = source.clone();
                async move {
                    let (status, body, kind) = answer(source.as_ref(), req.uri().path());
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
                tracing::debug!(error = %e, "operations endpoint: connection");
            }
        });
    }
}
