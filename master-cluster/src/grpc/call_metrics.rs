//! A tower layer on the gRPC server that times every call by its `Service/Method` and counts
//! those answered with an error status.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;

use crate::replica::metrics::ReplicaMetrics;

#[derive(Debug, Clone)]
pub struct CallMetricsLayer {
    pub metrics: Arc<ReplicaMetrics>,
}

impl<S> tower::Layer<S> for CallMetricsLayer {
    type Service = CallMetrics<S>;

    fn layer(&self, inner: S) -> CallMetrics<S> {
        CallMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CallMetrics<S> {
    inner: S,
    metrics: Arc<ReplicaMetrics>,
}

/// `Service/Method` from a gRPC path `/slapcluster.v1.Service/Method`.
fn call_name(path: &str) -> &str {
    let call = path.trim_start_matches('/');
    call.strip_prefix("slapcluster.v1.").unwrap_or(call)
}

/// The gRPC status code of a response whose status is in its headers (every error our
/// services return, a trailers-only response); 0 otherwise.
fn status_code<B>(response: &http::Response<B>) -> i32 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl<S, B, RB> tower::Service<http::Request<B>> for CallMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = call_name(request.uri().path()).to_string();
        let started = Instant::now();
        let response = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = response.await;
            let code = response.as_ref().map_or(0, status_code);
            // Unknown methods answer Unimplemented: one label for all of them, so that a
            // caller cannot grow the metrics with made-up paths.
            let call = if code == tonic::Code::Unimplemented as i32 {
                "(unimplemented)"
            } else {
                &call
            };
            metrics.calls.get(call).observe(started.elapsed());
            if code != 0 {
                metrics.call_errors.get(call).inc();
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_named_by_service_and_method() {
        assert_eq!(
            call_name("/slapcluster.v1.User/RequestInstance"),
            "User/RequestInstance"
        );
        assert_eq!(call_name("/other.Svc/M"), "other.Svc/M");
    }
}
