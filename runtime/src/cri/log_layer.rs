//! One tower layer logs every CRI call with its duration and gRPC status,
//! and records both in the metrics (count by gRPC code, latency histogram),
//! so no handler repeats that code.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;

/// When a call's headers reached berthd: put in the request's extensions,
/// so a handler can time what comes before its own first step
/// ([`crate::metrics::steps::arrived`]).
#[derive(Clone, Copy, Debug)]
pub struct Arrived(pub Instant);

/// The arrival stamp of `req` (none for a request that did not come
/// through [`RequestLog`]).
pub fn arrived<T>(req: &tonic::Request<T>) -> Option<Instant> {
    req.extensions().get::<Arrived>().map(|a| a.0)
}

/// Adds [`RequestLog`] around a service.
#[derive(Clone)]
pub struct RequestLogLayer {
    metrics: Arc<crate::metrics::Metrics>,
}

impl RequestLogLayer {
    /// Logs and records into `metrics`.
    pub fn new(metrics: Arc<crate::metrics::Metrics>) -> Self {
        RequestLogLayer { metrics }
    }
}

impl<S> tower::Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestLog {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Logs method, duration and status of each request at debug (errors at
/// info) and counts it. A streaming call (GetContainerEvents) is measured to
/// its response headers: the stream's own life is not a latency.
#[derive(Clone)]
pub struct RequestLog<S> {
    inner: S,
    metrics: Arc<crate::metrics::Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RequestLog<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let started = Instant::now();
        req.extensions_mut().insert(Arrived(started));
        let fut = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let resp = fut.await;
            let elapsed = started.elapsed();
            let elapsed_us = elapsed.as_micros() as u64;
            match &resp {
                Ok(r) => {
                    // Unary errors travel as trailers-only responses with grpc-status in headers.
                    let code = r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("0")
                        .to_string();
                    let grpc = code
                        .parse::<i32>()
                        .map(tonic::Code::from)
                        .unwrap_or(tonic::Code::Unknown);
                    metrics.observe_rpc(&method, grpc, elapsed.as_secs_f64());
                    if code == "0" {
                        tracing::debug!(rpc = %method, elapsed_us, "CRI call");
                    } else {
                        let msg = r
                            .headers()
                            .get("grpc-message")
                            .and_then(|v| v.to_str().ok())
                            .map(percent_decode)
                            .unwrap_or_default();
                        tracing::info!(rpc = %method, elapsed_us, grpc_code = %code, error = %msg, "CRI call failed");
                    }
                }
                Err(_) => {
                    metrics.observe_rpc(&method, tonic::Code::Unavailable, elapsed.as_secs_f64());
                    tracing::info!(rpc = %method, elapsed_us, "CRI call transport error")
                }
            }
            resp
        })
    }
}

/// gRPC percent-encodes `grpc-message` on the wire; logs show it as text.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn grpc_messages_are_logged_as_text() {
        assert_eq!(
            super::percent_decode("container%20%22nope%22%20not%20found"),
            r#"container "nope" not found"#
        );
        assert_eq!(super::percent_decode("100%"), "100%");
        assert_eq!(super::percent_decode("%zz ok"), "%zz ok");
    }
}
