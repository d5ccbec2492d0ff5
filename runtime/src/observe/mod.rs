//! The observability listener (`http_address`): Prometheus `/metrics`,
//! `/healthz`, `/readyz` and the z-pages `/statusz` and `/flagz`, over plain
//! HTTP/1.1. It starts before state recovery, so `/healthz` answers at once
//! and `/readyz` says when berthd can take CRI calls.

pub mod negotiate;
pub mod zpages;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
pub use zpages::ZPages;

/// The paths this listener serves (statusz lists them).
pub const PATHS: &[&str] = &["/flagz", "/healthz", "/metrics", "/readyz", "/statusz"];

/// What readiness waits for.
#[derive(Debug, Default)]
pub struct Health {
    recovered: AtomicBool,
    serving: AtomicBool,
}

impl Health {
    /// Start-up recovery has finished.
    pub fn set_recovered(&self) {
        self.recovered.store(true, Ordering::Relaxed);
    }

    /// The CRI socket is listening (or, on shutdown, no longer).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    /// Each readiness check and whether it passes.
    pub fn checks(&self) -> [(&'static str, bool); 2] {
        [
            ("state-recovered", self.recovered.load(Ordering::Relaxed)),
            ("cri-socket", self.serving.load(Ordering::Relaxed)),
        ]
    }
}

/// Everything the handlers read.
#[derive(Clone)]
pub struct Observe {
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
    /// z-page content.
    pub zpages: Arc<ZPages>,
}

/// Binds the listener (at start-up, so a bad or taken address stops berthd
/// before it touches anything).
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener> {
    let sa: SocketAddr = addr
        .parse()
        .map_err(|e| Error::InvalidArgument(format!("http_address {addr:?}: {e}")))?;
    tokio::net::TcpListener::bind(sa)
        .await
        .map_err(|e| Error::io(format!("listen on http_address {addr}"), e))
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Observe,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if let Ok(a) = listener.local_addr() {
        tracing::info!(address = %a, "observability listener (metrics, health, z-pages) serving");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io("observability listener", e))
}

fn router(state: Observe) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/statusz", get(statusz))
        .route("/flagz", get(flagz))
        .with_state(state)
}

async fn metrics(State(s): State<Observe>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
        .into_response()
}

/// Liveness: the event loop answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness in the style of Kubernetes `/readyz`: `ok`, or 503 with each
/// check's result.
async fn readyz(State(s): State<Observe>) -> Response {
    readiness(&s.health).into_response()
}

fn readiness(h: &Health) -> (StatusCode, String) {
    let checks = h.checks();
    if checks.iter().all(|(_, ok)| *ok) {
        return (StatusCode::OK, "ok".into());
    }
    let mut body = String::new();
    for (name, ok) in checks {
        body.push_str(&if ok {
            format!("[+]{name} ok\n")
        } else {
            format!("[-]{name} failed\n")
        });
    }
    body.push_str("readyz check failed\n");
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

fn page(p: zpages::Page, status: StatusCode) -> Response {
    (status, [(header::CONTENT_TYPE, p.content_type)], p.body).into_response()
}

fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

async fn statusz(State(s): State<Observe>, headers: HeaderMap) -> Response {
    match negotiate::negotiate(accept(&headers), "Statusz") {
        Ok(f) => page(s.zpages.statusz(f, std::time::SystemTime::now()), StatusCode::OK),
        Err(e) => page(zpages::not_acceptable(&e), StatusCode::NOT_ACCEPTABLE),
    }
}

async fn flagz(State(s): State<Observe>, headers: HeaderMap) -> Response {
    match negotiate::negotiate(accept(&headers), "Flagz") {
        Ok(f) => page(s.zpages.flagz(f), StatusCode::OK),
        Err(e) => page(zpages::not_acceptable(&e), StatusCode::NOT_ACCEPTABLE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_recovered_and_serving() {
        let h = Health::default();
        let (code, body) = readiness(&h);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "[-]state-recovered failed\n[-]cri-socket failed\nreadyz check failed\n"
        );
        h.set_recovered();
        let (code, body) = readiness(&h);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.starts_with("[+]state-recovered ok\n[-]cri-socket failed\n"),
            "{body}"
        );
        h.set_serving(true);
        assert_eq!(readiness(&h), (StatusCode::OK, "ok".to_string()));
        h.set_serving(false);
        assert_eq!(
            readiness(&h).0,
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready while shutting down"
        );
    }
}
