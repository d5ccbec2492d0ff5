//! The streaming server: where `kubectl exec/attach/port-forward` (through
//! kubelet) and `crictl exec/attach/port-forward` carry their data.
//!
//! The CRI `Exec`, `Attach` and `PortForward` RPCs validate the request,
//! store it under a single-use token (`tokens.rs`) and answer
//! `http://<address>/<exec|attach|portforward>/<token>`. The client then
//! upgrades an HTTP/1.1 request on that URL:
//! * `Upgrade: websocket` → `websocket.rs` (channel framing), then the
//!   transport-independent cores `remotecommand.rs` (exec, attach) and
//!   `portforward.rs`;
//! * `Upgrade: SPDY/3.1` → `spdy.rs` (the SPDY/3.1 session itself is the
//!   `berth-spdy` crate), then the same cores; `spdy.rs` also serves the
//!   SPDY-in-WebSocket port-forward tunnel.
//!
//! The server listens on `stream_address` (default 127.0.0.1 with a port
//! the kernel picks): kubelet reaches it on the node's loopback. It has no
//! TLS and no authentication beyond the token, so it must not listen where
//! untrusted clients can reach it.

pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod tokens;
pub mod websocket;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use berth_proto::cri;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::container::ContainerManager;
use crate::error::{Error, Result};
use crate::sandbox::SandboxManager;
use remotecommand::ProtocolVersion;
use tokens::{Kind, TokenCache, TokenError};
use websocket::WsProtocol;

/// What the streaming sessions reach.
#[derive(Clone)]
pub struct StreamContext {
    /// Containers (exec, attach go through their shims).
    pub containers: Arc<ContainerManager>,
    /// Sandboxes (port-forward needs the pod's network namespace).
    pub sandboxes: Arc<SandboxManager>,
}

/// A validated CRI request waiting for its client.
#[derive(Debug, Clone)]
pub enum StreamRequest {
    /// From the Exec RPC.
    Exec(cri::ExecRequest),
    /// From the Attach RPC.
    Attach(cri::AttachRequest),
    /// From the PortForward RPC.
    PortForward(cri::PortForwardRequest),
}

impl Kind for StreamRequest {
    fn kind(&self) -> &'static str {
        match self {
            StreamRequest::Exec(_) => "exec",
            StreamRequest::Attach(_) => "attach",
            StreamRequest::PortForward(_) => "portforward",
        }
    }
}

/// The running streaming server.
pub struct StreamServer {
    addr: SocketAddr,
    tokens: TokenCache<StreamRequest>,
    ctx: StreamContext,
    /// A session with nothing moving either way this long is cut.
    idle_timeout: std::time::Duration,
}

type Body = Full<Bytes>;

impl StreamServer {
    /// Binds `addr` (port 0: the kernel picks one) and starts serving;
    /// tokens live `token_ttl`, sessions end after `idle_timeout` of silence.
    pub async fn start(
        addr: SocketAddr,
        token_ttl: std::time::Duration,
        idle_timeout: std::time::Duration,
        ctx: StreamContext,
    ) -> Result<Arc<Self>> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("listen for streaming on {addr}"), e))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::io("streaming server address", e))?;
        let server = Arc::new(StreamServer {
            addr: bound,
            tokens: TokenCache::new(token_ttl),
            ctx,
            idle_timeout,
        });
        tracing::info!(address = %bound, "streaming server listening");
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming server accept");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, std::convert::Infallible>(s.handle(req).await) }
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "streaming connection ended");
                    }
                });
            }
        });
        Ok(server)
    }

    /// Registers a validated request; returns the URL its client must use.
    pub fn register(&self, request: StreamRequest) -> Result<String> {
        let kind = request.kind();
        let token = self.tokens.insert(request)?;
        Ok(format!("http://{}/{kind}/{token}", self.addr))
    }

    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (kind, token) = match (parts.next(), parts.next()) {
            (Some(k @ ("exec" | "attach" | "portforward")), Some(t)) if !t.is_empty() && !t.contains('/') => {
                (k, t)
            }
            _ => {
                return plain(
                    StatusCode::NOT_FOUND,
                    "no such streaming endpoint (/exec|/attach|/portforward/<token>)",
                )
            }
        };
        let kind: &'static str = match kind {
            "exec" => "exec",
            "attach" => "attach",
            _ => "portforward",
        };
        let upgrade = header(&req, UPGRADE).to_ascii_lowercase();
        let is_ws = upgrade == "websocket";
        let is_spdy = upgrade.starts_with("spdy/3.1");
        if !is_ws && !is_spdy {
            return plain(
                StatusCode::BAD_REQUEST,
                "a streaming request must upgrade to websocket or SPDY/3.1",
            );
        }
        // Pick the subprotocol before spending the token on a request we
        // would refuse anyway.
        let choice = if is_ws {
            let offered_raw = header(&req, SEC_WEBSOCKET_PROTOCOL);
            let offered: Vec<&str> = offered_raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            match websocket::select_protocol(kind, &offered) {
                Ok((name, protocol)) => Choice::WebSocket(name, protocol),
                Err(msg) => return plain(StatusCode::BAD_REQUEST, &msg),
            }
        } else {
            match spdy_choice(&req, kind) {
                Ok(c) => c,
                Err(resp) => return resp,
            }
        };
        let request = match self.tokens.consume(token, kind) {
            Ok(r) => r,
            Err(e) => {
                let code = match e {
                    TokenError::Unknown | TokenError::WrongKind(_) => StatusCode::NOT_FOUND,
                    TokenError::Expired(_) | TokenError::Used => StatusCode::GONE,
                };
                tracing::info!(kind, error = %e, "streaming request refused");
                return plain(code, &e.to_string());
            }
        };
        let netns = match &request {
            StreamRequest::PortForward(pf) => match self.netns_of(&pf.pod_sandbox_id) {
                Ok(ns) => ns,
                Err(e) => return plain(StatusCode::NOT_FOUND, &e.to_string()),
            },
            _ => None,
        };
        let (name, protocol) = match choice {
            Choice::Spdy(name, version) => return self.spdy_upgrade(&mut req, name, version, request, netns),
            Choice::WebSocket(name, protocol) => (name, protocol),
        };
        let ports = match &request {
            StreamRequest::PortForward(pf) if protocol != WsProtocol::SpdyTunnel => {
                match forward_ports(req.uri().query(), &pf.port) {
                    Ok(p) => p,
                    Err(msg) => return plain(StatusCode::BAD_REQUEST, &msg),
                }
            }
            _ => Vec::new(),
        };
        let mut resp = match accept_websocket(&req, name.as_deref()) {
            Ok(r) => r,
            Err(msg) => return plain(StatusCode::BAD_REQUEST, &msg),
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let ctx = self.ctx.clone();
        let idle = self.idle_timeout;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::info!(error = %e, "WebSocket upgrade failed");
                    return;
                }
            };
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(websocket::ws_config()),
            )
            .await;
            match (protocol, request) {
                (
                    WsProtocol::Remote { version, base64 },
                    r @ (StreamRequest::Exec(_) | StreamRequest::Attach(_)),
                ) => websocket::serve_remote(ws, version, base64, ctx, r, idle).await,
                (WsProtocol::PortForward { base64 }, StreamRequest::PortForward(pf)) => {
                    websocket::serve_port_forward(ws, base64, pf.pod_sandbox_id, netns, ports, idle).await
                }
                (WsProtocol::SpdyTunnel, StreamRequest::PortForward(pf)) => {
                    spdy::serve_port_forward(spdy::WsTunnel::new(ws), pf.pod_sandbox_id, netns, idle).await
                }
                _ => tracing::warn!("WebSocket subprotocol does not fit the request"),
            }
        });
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp
    }

    /// Answers `Upgrade: SPDY/3.1` with 101 and the chosen protocol, then
    /// serves the SPDY session on the upgraded connection.
    fn spdy_upgrade(
        &self,
        req: &mut Request<Incoming>,
        protocol: &'static str,
        version: Option<ProtocolVersion>,
        request: StreamRequest,
        netns: Option<PathBuf>,
    ) -> Response<Body> {
        let on_upgrade = hyper::upgrade::on(req);
        let ctx = self.ctx.clone();
        let idle = self.idle_timeout;
        tokio::spawn(async move {
            let io = match on_upgrade.await {
                Ok(u) => TokioIo::new(u),
                Err(e) => {
                    tracing::info!(error = %e, "SPDY upgrade failed");
                    return;
                }
            };
            match (request, version) {
                (StreamRequest::PortForward(pf), _) => {
                    spdy::serve_port_forward(io, pf.pod_sandbox_id, netns, idle).await
                }
                (r, Some(v)) => spdy::serve_remote(io, v, ctx, r, idle).await,
                (_, None) => tracing::warn!("SPDY protocol does not fit the request"),
            }
        });
        let mut resp = Response::new(Body::default());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(PROTOCOL_VERSION_HEADER, HeaderValue::from_static(protocol));
        resp
    }

    /// The pinned network namespace of a ready pod (None: host network).
    fn netns_of(&self, sandbox_id: &str) -> Result<Option<PathBuf>> {
        let sb = self.ctx.sandboxes.get(sandbox_id)?;
        if !sb.is_ready() {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {sandbox_id} is not ready"
            )));
        }
        Ok(sb.record().ns_paths.get("net").cloned())
    }
}

/// How the client wants to talk, decided before its token is spent.
enum Choice {
    /// A WebSocket subprotocol (name to echo, if any).
    WebSocket(Option<String>, WsProtocol),
    /// A SPDY stream protocol and, for exec/attach, its version.
    Spdy(&'static str, Option<ProtocolVersion>),
}

/// The header in which SPDY clients offer, and the server names, the
/// stream protocol.
const PROTOCOL_VERSION_HEADER: &str = "x-stream-protocol-version";

/// The SPDY stream protocol for a request, as kubelet negotiates it: the
/// client must offer one; if none fits, 403 names the ones Berth accepts.
#[allow(clippy::result_large_err)]
fn spdy_choice(req: &Request<Incoming>, kind: &str) -> std::result::Result<Choice, Response<Body>> {
    let offered: Vec<&str> = req
        .headers()
        .get_all(PROTOCOL_VERSION_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if offered.is_empty() {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: the X-Stream-Protocol-Version header is required",
        ));
    }
    match spdy::negotiate(kind, &offered) {
        Ok((name, version)) => Ok(Choice::Spdy(name, version)),
        Err(supported) => {
            let mut r = plain(
                StatusCode::FORBIDDEN,
                &format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"),
            );
            for s in supported {
                r.headers_mut()
                    .append("x-accepted-stream-protocol-versions", HeaderValue::from_static(s));
            }
            Err(r)
        }
    }
}

/// The ports of a WebSocket port-forward: the `port` query parameters
/// (kubelet's rule), else the ports the PortForward RPC named.
pub fn forward_ports(query: Option<&str>, requested: &[i32]) -> std::result::Result<Vec<u16>, String> {
    let from_query: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("port="))
        .collect();
    let ports: Vec<i64> = if from_query.is_empty() {
        requested.iter().map(|p| i64::from(*p)).collect()
    } else {
        from_query
            .iter()
            .map(|p| {
                p.parse::<i64>()
                    .map_err(|_| format!("port {p:?} is not a number"))
            })
            .collect::<std::result::Result<_, _>>()?
    };
    if ports.is_empty() {
        return Err("port-forward needs at least one port (query parameter \"port\")".into());
    }
    // Two channels per port, numbered from 0, in one byte.
    if ports.len() > 127 {
        return Err(format!("{} ports in one port-forward; at most 127", ports.len()));
    }
    ports
        .into_iter()
        .map(|p| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {p} is not in 1-65535"))
        })
        .collect()
}

fn header(req: &Request<Incoming>, name: hyper::header::HeaderName) -> &str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The 101 answer to a WebSocket handshake (RFC 6455 §4.2.2).
fn accept_websocket(
    req: &Request<Incoming>,
    protocol: Option<&str>,
) -> std::result::Result<Response<Body>, String> {
    if header(req, hyper::header::SEC_WEBSOCKET_VERSION) != "13" {
        return Err("WebSocket version 13 is required".into());
    }
    let key = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .ok_or("Sec-WebSocket-Key is missing")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::new(Body::default());
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|e| e.to_string())?,
    );
    if let Some(p) = protocol {
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(p).map_err(|e| e.to_string())?,
        );
    }
    Ok(resp)
}

fn plain(code: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{msg}\n")));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query_then_the_request() {
        assert_eq!(forward_ports(Some("port=80&port=8080"), &[1]), Ok(vec![80, 8080]));
        assert_eq!(forward_ports(None, &[443]), Ok(vec![443]));
        assert_eq!(forward_ports(Some("x=1"), &[22, 80]), Ok(vec![22, 80]));
        assert!(forward_ports(None, &[]).is_err());
        assert!(forward_ports(Some("port=0"), &[]).is_err());
        assert!(forward_ports(Some("port=65536"), &[]).is_err());
        assert!(forward_ports(Some("port=http"), &[]).is_err());
        assert!(forward_ports(None, &[-1]).is_err());
        let many: Vec<i32> = (1..=128).collect();
        assert!(forward_ports(None, &many).is_err());
    }
}
