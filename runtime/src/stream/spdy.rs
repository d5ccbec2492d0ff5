//! The SPDY/3.1 transport of the streaming server: what kubelet, kubectl
//! (through kubelet) and crictl's default transport speak.
//!
//! After the `Upgrade: SPDY/3.1` handshake (protocol chosen from the
//! client's `X-Stream-Protocol-Version` values, in the client's order) the
//! client opens one SPDY stream per channel, named by its `streamType`
//! header:
//! * exec/attach (`v4`…`v1.channel.k8s.io`): `error`, then `stdin`,
//!   `stdout`, `stderr` as the CRI request asked, and `resize` for a
//!   terminal (v3+). The session starts once all of them have arrived
//!   (within [`STREAM_CREATION_TIMEOUT`], kubelet's default) and runs in
//!   `remotecommand.rs`.
//! * port-forward (`portforward.k8s.io`): any number of `error` + `data`
//!   pairs sharing a `requestID` and naming a `port`; each pair is one TCP
//!   connection into the pod (`portforward.rs`).
//!
//! `SPDY/3.1+portforward.k8s.io` is the same port-forward SPDY session
//! carried in WebSocket binary messages (client-go's tunnelling dialer,
//! `crictl port-forward --transport websocket`): [`WsTunnel`] turns the
//! WebSocket back into a byte stream and the same code serves it.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use berth_spdy::{Role, Session, SessionConfig, Stream};
use bytes::Bytes;
use futures_util::{Sink, Stream as _};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::remotecommand::{self, ProtocolVersion, RemoteStreams};
use super::{portforward, StreamContext, StreamRequest};

/// How long the client has to open all its streams (kubelet's default
/// `streamCreationTimeout`).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The remotecommand protocols over SPDY, newest first (v5 is WebSocket-only).
pub const REMOTECOMMAND_PROTOCOLS: &[(&str, ProtocolVersion)] = &[
    ("v4.channel.k8s.io", ProtocolVersion::V4),
    ("v3.channel.k8s.io", ProtocolVersion::V3),
    ("v2.channel.k8s.io", ProtocolVersion::V2),
    ("channel.k8s.io", ProtocolVersion::V1),
];
/// The port-forward protocol.
pub const PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// Picks the first protocol the client offers (values of every
/// `X-Stream-Protocol-Version` header, each possibly comma-separated) that
/// Berth supports for `kind`. `Err` carries the supported list, for the
/// `X-Accepted-Stream-Protocol-Versions` header of the refusal.
pub fn negotiate(
    kind: &str,
    offered: &[&str],
) -> Result<(&'static str, Option<ProtocolVersion>), Vec<&'static str>> {
    let supported: Vec<(&'static str, Option<ProtocolVersion>)> = if kind == "portforward" {
        vec![(PORTFORWARD_PROTOCOL, None)]
    } else {
        REMOTECOMMAND_PROTOCOLS
            .iter()
            .map(|(n, v)| (*n, Some(*v)))
            .collect()
    };
    offered
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|o| supported.iter().find(|(n, _)| *n == o).copied())
        .ok_or_else(|| supported.iter().map(|(n, _)| *n).collect())
}

/// Serves an exec or attach on an upgraded connection.
pub async fn serve_remote<T>(
    io: T,
    version: ProtocolVersion,
    ctx: StreamContext,
    request: StreamRequest,
    idle: Duration,
) where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (stdin, stdout, stderr, tty) = match &request {
        StreamRequest::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
        StreamRequest::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
        StreamRequest::PortForward(_) => return,
    };
    let want = Wanted {
        stdin,
        stdout,
        // A terminal merges stderr into stdout; clients open no stderr stream.
        stderr: stderr && !tty,
        resize: tty && version >= ProtocolVersion::V3,
    };
    let (session, mut incoming) = Session::with_config(io, Role::Server, session_config(idle));
    let got = match accept_remote(&mut incoming, &want, STREAM_CREATION_TIMEOUT).await {
        Ok(g) => g,
        Err(e) => {
            tracing::info!(kind = request_kind(&request), error = %e, "SPDY streaming session not started");
            return;
        }
    };
    let streams = RemoteStreams {
        stdin: got.stdin.map(|s| Box::new(s) as remotecommand::Reader),
        stdout: got.stdout.map(|s| Box::new(s) as remotecommand::Writer),
        stderr: got.stderr.map(|s| Box::new(s) as remotecommand::Writer),
        error: Box::new(got.error),
        resize: got.resize.map(|s| Box::new(s) as remotecommand::Reader),
        version,
    };
    let serve = async {
        match &request {
            StreamRequest::Exec(r) => remotecommand::serve_exec(&ctx, r, streams).await,
            StreamRequest::Attach(r) => remotecommand::serve_attach(&ctx, r, streams).await,
            StreamRequest::PortForward(_) => {}
        }
    };
    tokio::select! {
        _ = serve => {}
        // Cut (idle, a flood, a vanished client): nobody is left to serve.
        _ = session.closed() => {
            tracing::info!(kind = request_kind(&request), "SPDY streaming session ended before the process");
        }
    }
    // GOAWAY; the socket closes once the client hangs up (or after a grace).
    session.close();
}

fn session_config(idle: Duration) -> SessionConfig {
    SessionConfig {
        idle_timeout: Some(idle),
    }
}

fn request_kind(r: &StreamRequest) -> &'static str {
    match r {
        StreamRequest::Exec(_) => "exec",
        StreamRequest::Attach(_) => "attach",
        StreamRequest::PortForward(_) => "portforward",
    }
}

/// The streams an exec/attach waits for (the error stream always).
#[derive(Debug, Clone, Copy)]
struct Wanted {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
}

struct Accepted {
    error: Stream,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

async fn accept_remote(
    incoming: &mut berth_spdy::Incoming,
    want: &Wanted,
    timeout: Duration,
) -> Result<Accepted, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut error, mut stdin, mut stdout, mut stderr, mut resize) = (None, None, None, None, None);
    let complete = |e: &Option<Stream>,
                    i: &Option<Stream>,
                    o: &Option<Stream>,
                    r: &Option<Stream>,
                    z: &Option<Stream>| {
        e.is_some()
            && i.is_some() == want.stdin
            && o.is_some() == want.stdout
            && r.is_some() == want.stderr
            && z.is_some() == want.resize
    };
    while !complete(&error, &stdin, &stdout, &stderr, &resize) {
        let s = match tokio::time::timeout_at(deadline, incoming.accept()).await {
            Err(_) => {
                return Err(format!(
                    "timed out after {timeout:?} waiting for the client's streams"
                ))
            }
            Ok(None) => return Err("the client closed the connection before opening its streams".into()),
            Ok(Some(s)) => s,
        };
        let kind = s
            .headers()
            .get("streamType")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let slot = match kind.as_str() {
            "error" => &mut error,
            "stdin" if want.stdin => &mut stdin,
            "stdout" if want.stdout => &mut stdout,
            "stderr" if want.stderr => &mut stderr,
            "resize" if want.resize => &mut resize,
            other => {
                tracing::info!(stream_type = other, "ignoring an unexpected SPDY stream");
                continue;
            }
        };
        if slot.is_some() {
            tracing::info!(stream_type = %kind, "ignoring a second SPDY stream of the same type");
            continue;
        }
        *slot = Some(s);
    }
    Ok(Accepted {
        error: error.expect("complete"),
        stdin,
        stdout,
        stderr,
        resize,
    })
}

/// A port-forward request's streams, until both have arrived.
#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
    since: Option<Instant>,
}

/// Serves a port-forward session: every `data`+`error` pair becomes one
/// connection to its `port` inside the pod. Ends when the client closes
/// the session and every forwarded connection has ended.
pub async fn serve_port_forward<T>(io: T, sandbox_id: String, netns: Option<PathBuf>, idle: Duration)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (session, mut incoming) = Session::with_config(io, Role::Server, session_config(idle));
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut conns = JoinSet::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let s = tokio::select! {
            s = incoming.accept() => match s {
                Some(s) => s,
                None => break,
            },
            _ = sweep.tick() => {
                expire_pairs(&mut pending, STREAM_CREATION_TIMEOUT).await;
                continue;
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let kind = s
            .headers()
            .get("streamType")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let Some(id) = request_id(&s, &kind) else {
            tracing::info!(stream_type = %kind, "ignoring a port-forward stream that is neither data nor error");
            continue;
        };
        let pair = pending.entry(id.clone()).or_default();
        pair.since.get_or_insert_with(Instant::now);
        let slot = if kind == "data" {
            &mut pair.data
        } else {
            &mut pair.error
        };
        if slot.is_some() {
            tracing::info!(request_id = %id, stream_type = %kind, "ignoring a duplicate port-forward stream");
            continue;
        }
        *slot = Some(s);
        if pair.data.is_some() && pair.error.is_some() {
            let pair = pending.remove(&id).expect("just filled");
            let (data, error) = (pair.data.expect("some"), pair.error.expect("some"));
            let (sandbox, netns) = (sandbox_id.clone(), netns.clone());
            conns.spawn(async move { forward_pair(&sandbox, netns, data, error).await });
        }
    }
    // The client sent GOAWAY or hung up: let running connections finish.
    while conns.join_next().await.is_some() {}
    drop(session);
}

/// kubelet's rule: the `requestID` header, or for clients too old to send
/// one, an id derived from the stream id (error stream first, data next).
fn request_id(s: &Stream, kind: &str) -> Option<String> {
    if let Some(id) = s.headers().get("requestID").filter(|v| !v.is_empty()) {
        return Some(id.to_string());
    }
    match kind {
        "error" => Some(s.id().to_string()),
        "data" => Some(s.id().saturating_sub(2).to_string()),
        _ => None,
    }
}

async fn forward_pair(sandbox_id: &str, netns: Option<PathBuf>, data: Stream, mut error: Stream) {
    let raw = data.headers().get("port").unwrap_or_default().to_string();
    match raw.parse::<u16>() {
        Ok(port) if port > 0 => {
            portforward::serve_port_forward_conn(sandbox_id, netns, port, data, error).await
        }
        _ => {
            let msg = format!("invalid port {raw:?} in the port-forward request: it must be 1-65535");
            let _ = error.write_all(msg.as_bytes()).await;
            let _ = error.shutdown().await;
        }
    }
}

/// Pairs whose second stream did not come in time are told so and dropped.
async fn expire_pairs(pending: &mut HashMap<String, Pair>, timeout: Duration) {
    let stale: Vec<String> = pending
        .iter()
        .filter(|(_, p)| p.since.is_some_and(|t| t.elapsed() > timeout))
        .map(|(id, _)| id.clone())
        .collect();
    for id in stale {
        if let Some(Pair {
            error: Some(mut e), ..
        }) = pending.remove(&id)
        {
            let msg = format!("timed out waiting for the data stream of port-forward request {id}");
            let _ = e.write_all(msg.as_bytes()).await;
            let _ = e.shutdown().await;
        }
    }
}

/// A WebSocket carrying a byte stream in binary messages (client-go's
/// tunnelling connection), as `AsyncRead + AsyncWrite`.
pub struct WsTunnel<S> {
    ws: WebSocketStream<S>,
    unread: Bytes,
    eof: bool,
    close_sent: bool,
    pings: super::websocket::PingBudget,
}

impl<S> WsTunnel<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WsTunnel {
            ws,
            unread: Bytes::new(),
            eof: false,
            close_sent: false,
            pings: super::websocket::PingBudget::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsTunnel<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.unread.is_empty() {
                let n = self.unread.len().min(buf.remaining());
                let chunk = self.unread.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.unread = b,
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                // Pings are answered by tungstenite; other kinds carry nothing here.
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message in a SPDY tunnel (binary only)",
                    )))
                }
                Some(Ok(Message::Ping(_))) => {
                    if !self.pings.take(tokio::time::Instant::now()) {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the client floods WebSocket pings",
                        )));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsTunnel<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A normal-closure (1000) Close frame, which client-go reads as EOF.
        if !self.close_sent {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
            Pin::new(&mut self.ws)
                .start_send(super::websocket::normal_close())
                .map_err(io::Error::other)?;
            self.close_sent = true;
        }
        Pin::new(&mut self.ws).poll_close(cx).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_clients_order() {
        let (p, v) = negotiate("exec", &["v4.channel.k8s.io", "v3.channel.k8s.io"]).unwrap();
        assert_eq!((p, v), ("v4.channel.k8s.io", Some(ProtocolVersion::V4)));
        let (p, _) = negotiate("exec", &["v2.channel.k8s.io, v4.channel.k8s.io"]).unwrap();
        assert_eq!(p, "v2.channel.k8s.io");
        // v5 is WebSocket-only: skipped over SPDY.
        let (p, _) = negotiate("attach", &["v5.channel.k8s.io", "channel.k8s.io"]).unwrap();
        assert_eq!(p, "channel.k8s.io");
        assert_eq!(
            negotiate("portforward", &["portforward.k8s.io"]).unwrap().0,
            PORTFORWARD_PROTOCOL
        );
        let refused = negotiate("portforward", &["v4.channel.k8s.io"]).unwrap_err();
        assert_eq!(refused, vec![PORTFORWARD_PROTOCOL]);
        assert!(negotiate("exec", &[]).is_err());
    }

    async fn pair() -> (Session, berth_spdy::Incoming) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (client, _) = Session::new(a, Role::Client);
        let (_server, incoming) = Session::new(b, Role::Server);
        // Keep the server session alive for the test.
        std::mem::forget(_server);
        (client, incoming)
    }

    fn h(kind: &str) -> berth_spdy::Headers {
        berth_spdy::Headers::new().with("streamType", kind)
    }

    #[tokio::test]
    async fn waits_for_exactly_the_streams_the_request_asked_for() {
        let (client, mut incoming) = pair().await;
        let want = Wanted {
            stdin: true,
            stdout: true,
            stderr: false,
            resize: true,
        };
        let opener = tokio::spawn(async move {
            let mut keep = Vec::new();
            for k in ["error", "stdin", "bogus", "stdout", "resize"] {
                keep.push(client.open(h(k), false).await.unwrap());
            }
            (client, keep)
        });
        let got = accept_remote(&mut incoming, &want, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(got.stdin.is_some() && got.stdout.is_some() && got.resize.is_some());
        assert!(got.stderr.is_none());
        assert_eq!(got.error.headers().get("streamType"), Some("error"));
        drop(opener.await.unwrap());
    }

    #[tokio::test]
    async fn a_client_that_never_opens_its_streams_times_out() {
        let (client, mut incoming) = pair().await;
        let _e = client.open(h("error"), false).await.unwrap();
        let want = Wanted {
            stdin: false,
            stdout: true,
            stderr: false,
            resize: false,
        };
        let err = accept_remote(&mut incoming, &want, Duration::from_millis(200))
            .await
            .err()
            .expect("no stdout stream");
        assert!(err.contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn request_ids_fall_back_to_stream_ids_for_old_clients() {
        let (client, mut incoming) = pair().await;
        let e = client.open(h("error"), false).await.unwrap();
        let d = client.open(h("data"), false).await.unwrap();
        let e2 = client
            .open(h("error").with("requestID", "7"), false)
            .await
            .unwrap();
        let (se, sd, se2) = (
            incoming.accept().await.unwrap(),
            incoming.accept().await.unwrap(),
            incoming.accept().await.unwrap(),
        );
        assert_eq!(request_id(&se, "error"), request_id(&sd, "data"));
        assert_eq!(request_id(&se2, "error").as_deref(), Some("7"));
        assert_eq!(request_id(&sd, "resize"), None);
        drop((e, d, e2));
    }
}
