//! API requests counted by service, verb (the gRPC method), kind and gRPC code, with their
//! latency, as `skiff_api_requests_total` and `skiff_api_request_duration_seconds`.
//!
//! [`Measured`] wraps a whole gRPC service: the method comes from the path, the code from
//! the response's `grpc-status` (absent: OK; a stream's code is that of its opening, and its
//! latency the time to open it). The kind is in the request's body, which only the service
//! decodes: the wrapper puts a [`KindSlot`] in the request's extensions and the guard notes
//! the resource in it ([`note_kind`]).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tonic::codegen::http;
use tonic::codegen::{Context, Poll, Service};
use tonic::server::NamedService;

/// Labels of a request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `Objects`, `Kv`, `Cluster`, `NodeAgent`, `Auth`.
    pub service: String,
    /// The gRPC method: `Create`, `List`, `Watch`, `Put`, ...
    pub verb: String,
    /// The resource (`pods`), empty where a call names none.
    pub kind: String,
    /// The gRPC code: `Ok`, `NotFound`, `PermissionDenied`, ...
    pub code: String,
}

/// Labels of a latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// As in [`RequestLabels`].
    pub service: String,
    /// As in [`RequestLabels`].
    pub verb: String,
    /// As in [`RequestLabels`].
    pub kind: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The API's families; cheap to clone (shared).
#[derive(Clone)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<CallLabels, Histogram, fn() -> Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl std::fmt::Debug for ApiMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiMetrics")
    }
}

impl ApiMetrics {
    /// Families registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let me = Self::default();
        registry.register(
            "skiff_api_requests",
            "API requests by service, verb, kind and gRPC code",
            me.requests.clone(),
        );
        registry.register(
            "skiff_api_request_duration_seconds",
            "Time an API request took (a stream: until it opened)",
            me.latency.clone(),
        );
        me
    }

    fn record(&self, call: CallLabels, code: tonic::Code, took: f64) {
        let labels = RequestLabels {
            service: call.service.clone(),
            verb: call.verb.clone(),
            kind: call.kind.clone(),
            code: format!("{code:?}"),
        };
        // One statement each: a family's guard lives to the end of its statement.
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&call).observe(took);
    }
}

/// Where the guard notes the resource a request names.
#[derive(Clone, Default)]
pub struct KindSlot(Arc<OnceLock<String>>);

/// Note that `request` is about `resource`, for its count.
pub fn note_kind<T>(request: &tonic::Request<T>, resource: &str) {
    if let Some(slot) = request.extensions().get::<KindSlot>() {
        let _ = slot.0.set(resource.to_string());
    }
}

/// A gRPC service whose requests are counted into [`ApiMetrics`].
#[derive(Clone)]
pub struct Measured<S> {
    inner: S,
    metrics: ApiMetrics,
}

impl<S> Measured<S> {
    /// `inner`, counted into `metrics`.
    pub fn new(inner: S, metrics: ApiMetrics) -> Self {
        Self { inner, metrics }
    }
}

impl<S: NamedService> NamedService for Measured<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> Service<http::Request<B>> for Measured<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let (service, verb) = split_path(request.uri().path());
        let slot = KindSlot::default();
        request.extensions_mut().insert(slot.clone());
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from_i32);
            let call = CallLabels {
                service,
                verb,
                kind: slot.0.get().cloned().unwrap_or_default(),
            };
            metrics.record(call, code, started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

/// `/skiff.v1.Objects/Create` → (`Objects`, `Create`).
fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let service = service.rsplit('.').next().unwrap_or(service);
    (
        service.to_string(),
        parts.next().unwrap_or_default().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_path_names_the_service_and_the_verb() {
        assert_eq!(
            split_path("/skiff.v1.Objects/Create"),
            ("Objects".into(), "Create".into())
        );
        assert_eq!(
            split_path("/grpc.health.v1.Health/Check"),
            ("Health".into(), "Check".into())
        );
        assert_eq!(split_path("/"), (String::new(), String::new()));
    }
}
