//! One tower layer turns a panic inside a CRI handler into an Internal error
//! for that call. Without it the panic unwinds the connection's task: the
//! client (kubelet keeps one connection for everything) loses every call in
//! flight on it and sees a transport error instead of a status.
//!
//! The client gets no panic text (it may name internals); berthd's log has
//! it, with the RPC.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tonic::codegen::http;

use crate::error::Error;

/// Adds [`CatchPanic`] around a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

impl<S> tower::Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

/// Answers a call whose handler panicked with gRPC Internal.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for CatchPanic<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(fut) => fut,
            Err(panic) => {
                let resp = internal(&method, panic);
                return Box::pin(async move { Ok(resp) });
            }
        };
        Box::pin(async move {
            match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r,
                Err(panic) => Ok(internal(&method, panic)),
            }
        })
    }
}

/// Logs the panic and builds the Internal status response.
fn internal<RB: Default>(method: &str, panic: Box<dyn Any + Send>) -> http::Response<RB> {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    tracing::error!(rpc = %method, panic = %text, "CRI handler panicked; the call fails with Internal");
    tonic::Status::from(Error::Internal(format!(
        "{method} failed unexpectedly (see berthd's log)"
    )))
    .into_http()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use tower::{Layer, Service, ServiceExt};

    use super::*;

    /// A handler that panics when the request path says so: the seam the
    /// test drives.
    fn handler() -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<String>,
        Error = std::convert::Infallible,
        Future = impl Send + 'static,
    > + Clone {
        tower::service_fn(|req: http::Request<()>| async move {
            if req.uri().path().ends_with("/Panic") {
                panic!("injected handler panic");
            }
            Ok(http::Response::new("ok".to_string()))
        })
    }

    fn request(rpc: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(format!("/runtime.v1.RuntimeService/{rpc}"))
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_the_next_call_works() {
        let mut svc = CatchPanicLayer.layer(handler());
        let resp = svc.ready().await.unwrap().call(request("Panic")).await.unwrap();
        let status = tonic::Status::from_header_map(resp.headers()).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            !status.message().contains("injected"),
            "panic text stays in the log: {status:?}"
        );
        assert!(status.message().contains("Panic"), "{status:?}");
        let resp = svc.ready().await.unwrap().call(request("Version")).await.unwrap();
        assert_eq!(resp.body(), "ok");
        assert!(tonic::Status::from_header_map(resp.headers()).is_none());
    }

    #[tokio::test]
    async fn a_panic_while_building_the_call_is_caught_too() {
        let armed = Arc::new(AtomicBool::new(true));
        let a = armed.clone();
        let inner = tower::service_fn(move |_: http::Request<()>| {
            if a.swap(false, Ordering::SeqCst) {
                panic!("in call()");
            }
            std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
                String::new(),
            )))
        });
        // service_fn runs the closure inside call(): the synchronous part.
        let mut svc = CatchPanicLayer.layer(inner);
        let resp = svc.ready().await.unwrap().call(request("Status")).await.unwrap();
        let status = tonic::Status::from_header_map(resp.headers()).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::Internal);
        let resp = svc.ready().await.unwrap().call(request("Status")).await.unwrap();
        assert!(tonic::Status::from_header_map(resp.headers()).is_none());
    }
}
