//! The WebSocket transport of the streaming server, framed as kubelet's
//! `wsstream` does (what client-go's WebSocket executor and crictl
//! `--transport websocket` speak).
//!
//! * Every message carries one channel: the first byte is the channel
//!   number (binary subprotocols) or the ASCII digit `'0' + n` followed by
//!   the payload in standard base64 (`base64.` subprotocols, text
//!   messages).
//! * exec/attach: 0 stdin, 1 stdout, 2 stderr, 3 error (the final Status),
//!   4 resize. The server first sends an empty message on the lowest of
//!   stdout, stderr, error it writes, so the client knows the streams are
//!   up. v5 adds the close signal: a binary message `[255, n]` from the
//!   client means "no more data on channel n" (stdin EOF).
//! * port-forward (`v4.channel.k8s.io`, ports from the `port` query
//!   parameters): port i gets data channel 2i and error channel 2i+1; the
//!   first message on each carries the port, two bytes little-endian.
//! * The subprotocol is the first one the client offers that we speak
//!   (kubelet's rule); none offered means binary `channel.k8s.io`.
//!
//! Bounds (the peer is untrusted): incoming messages are at most
//! [`MAX_MESSAGE_BYTES`]; tungstenite's write buffer is capped, so pongs for
//! a peer that pings without reading are not queued without end; more pings
//! than [`PingBudget`] allows end the session; and a session with no message
//! either way for its idle timeout is cut.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::PollSender;

use super::remotecommand::{self, ProtocolVersion, RemoteStreams};
use super::{StreamContext, StreamRequest};

/// Channel numbers of exec and attach.
pub mod channel {
    /// Client to process.
    pub const STDIN: u8 = 0;
    /// Process stdout (and terminal output).
    pub const STDOUT: u8 = 1;
    /// Process stderr.
    pub const STDERR: u8 = 2;
    /// The final Status.
    pub const ERROR: u8 = 3;
    /// Terminal sizes.
    pub const RESIZE: u8 = 4;
    /// v5: `[CLOSE, n]` closes channel n.
    pub const CLOSE: u8 = 255;
}

/// The subprotocol the client and we agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsProtocol {
    /// exec/attach channels of a remotecommand version.
    Remote {
        /// The version (decides the Status format and the close signal).
        version: ProtocolVersion,
        /// Text messages with base64 payloads.
        base64: bool,
    },
    /// kubelet's own WebSocket port-forward framing.
    PortForward {
        /// Text messages with base64 payloads.
        base64: bool,
    },
    /// `SPDY/3.1+portforward.k8s.io`: SPDY frames carried in binary
    /// messages (client-go's tunnelling dialer, used by crictl's websocket
    /// port-forward); served by `stream::spdy`.
    SpdyTunnel,
}

/// Remotecommand subprotocols we speak.
const REMOTE: &[(&str, ProtocolVersion, bool)] = &[
    ("v5.channel.k8s.io", ProtocolVersion::V5, false),
    ("v5.base64.channel.k8s.io", ProtocolVersion::V5, true),
    ("v4.channel.k8s.io", ProtocolVersion::V4, false),
    ("v4.base64.channel.k8s.io", ProtocolVersion::V4, true),
    ("v3.channel.k8s.io", ProtocolVersion::V3, false),
    ("v2.channel.k8s.io", ProtocolVersion::V2, false),
    ("channel.k8s.io", ProtocolVersion::V1, false),
    ("base64.channel.k8s.io", ProtocolVersion::V1, true),
];

/// The tunnelled SPDY port-forward subprotocol.
pub const SPDY_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Picks the subprotocol for a request of `kind` from the client's offer
/// (in the client's order). Returns the name to echo (None when the
/// client offered none) or the error to answer.
pub fn select_protocol(kind: &str, offered: &[&str]) -> Result<(Option<String>, WsProtocol), String> {
    if offered.is_empty() {
        let p = if kind == "portforward" {
            WsProtocol::PortForward { base64: false }
        } else {
            WsProtocol::Remote {
                version: ProtocolVersion::V1,
                base64: false,
            }
        };
        return Ok((None, p));
    }
    for name in offered {
        let found = if kind == "portforward" {
            match *name {
                "v4.channel.k8s.io" => Some(WsProtocol::PortForward { base64: false }),
                "v4.base64.channel.k8s.io" => Some(WsProtocol::PortForward { base64: true }),
                SPDY_TUNNEL_PROTOCOL => Some(WsProtocol::SpdyTunnel),
                _ => None,
            }
        } else {
            REMOTE
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, version, base64)| WsProtocol::Remote {
                    version: *version,
                    base64: *base64,
                })
        };
        if let Some(p) = found {
            return Ok((Some(name.to_string()), p));
        }
    }
    let ours: Vec<&str> = if kind == "portforward" {
        vec![
            "v4.channel.k8s.io",
            "v4.base64.channel.k8s.io",
            SPDY_TUNNEL_PROTOCOL,
        ]
    } else {
        REMOTE.iter().map(|(n, _, _)| *n).collect()
    };
    Err(format!(
        "none of the offered WebSocket subprotocols {offered:?} is supported; berth speaks {ours:?}"
    ))
}

/// One message's content.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Payload for a channel.
    Data(u8, Vec<u8>),
    /// v5 close signal for a channel.
    Close(u8),
}

/// Frames `data` for `channel`.
pub fn encode(base64: bool, channel: u8, data: &[u8]) -> Message {
    if base64 {
        let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        s.push((b'0' + channel) as char);
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Message::text(s)
    } else {
        let mut v = Vec::with_capacity(data.len() + 1);
        v.push(channel);
        v.extend_from_slice(data);
        Message::binary(v)
    }
}

/// Reads a client message; None for control and empty messages.
pub fn decode(base64: bool, close_signal: bool, msg: &Message) -> Result<Option<Frame>, String> {
    let raw: &[u8] = match msg {
        Message::Binary(b) => b,
        Message::Text(t) => t.as_bytes(),
        _ => return Ok(None),
    };
    let Some((&first, rest)) = raw.split_first() else {
        return Ok(None);
    };
    if close_signal && first == channel::CLOSE {
        return match rest {
            [n] => Ok(Some(Frame::Close(*n))),
            _ => Err(format!(
                "a close signal must name exactly one channel, got {} bytes",
                rest.len()
            )),
        };
    }
    if base64 {
        let ch = first
            .checked_sub(b'0')
            .ok_or_else(|| format!("bad channel character {first:#x}"))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|e| format!("bad base64 on channel {ch}: {e}"))?;
        Ok(Some(Frame::Data(ch, data)))
    } else {
        Ok(Some(Frame::Data(first, rest.to_vec())))
    }
}

/// The largest message a client may send (client-go sends at most 32 KiB).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// The largest payload Berth puts in one message.
const MAX_OUT_CHUNK: usize = 64 * 1024;
/// Bytes tungstenite may hold for a peer that does not read. Above it a
/// pong waits in its single slot (later pings replace it) and our own sends
/// wait, so nothing grows.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// The WebSocket settings of every streaming connection.
pub fn ws_config() -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.max_message_size = Some(MAX_MESSAGE_BYTES);
    c.max_frame_size = Some(MAX_MESSAGE_BYTES);
    c.max_write_buffer_size = MAX_WRITE_BUFFER;
    c
}

/// Pings a client may send: a burst, then a steady rate. client-go's
/// heartbeat pings every few seconds; a peer far above that is flooding.
#[derive(Debug)]
pub struct PingBudget {
    tokens: f64,
    last: tokio::time::Instant,
}

impl PingBudget {
    const BURST: f64 = 64.0;
    const PER_SECOND: f64 = 8.0;

    pub fn new() -> Self {
        PingBudget {
            tokens: Self::BURST,
            last: tokio::time::Instant::now(),
        }
    }

    /// Spends one ping at `now`; false once the client is over its budget.
    pub fn take(&mut self, now: tokio::time::Instant) -> bool {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * Self::PER_SECOND;
        self.tokens = (self.tokens + earned).min(Self::BURST);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

impl Default for PingBudget {
    fn default() -> Self {
        Self::new()
    }
}

/// When a message last went either way on a connection.
#[derive(Debug, Clone)]
struct Activity(Arc<Mutex<tokio::time::Instant>>);

impl Activity {
    fn new() -> Self {
        Activity(Arc::new(Mutex::new(tokio::time::Instant::now())))
    }

    fn touch(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
    }

    /// Resolves once nothing moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = *self.0.lock().unwrap_or_else(|p| p.into_inner()) + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// How the client's side of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// Close frame or EOF: output may still be written.
    Closed,
    /// The client broke a rule (garbage, too large, ping flood): cut.
    Violation,
}

/// Resolves when the session must be cut: the client broke a rule, or the
/// connection was idle for `idle`. A client that merely closed its side
/// does not cut it (the exec's output and status may still go out).
async fn must_cut(
    reader: &mut tokio::task::JoinHandle<ReadEnd>,
    activity: &Activity,
    idle: Duration,
) -> &'static str {
    let mut reading = true;
    loop {
        tokio::select! {
            end = &mut *reader, if reading => match end {
                Ok(ReadEnd::Closed) => reading = false,
                Ok(ReadEnd::Violation) | Err(_) => return "the client broke the protocol",
            },
            _ = activity.idle_for(idle) => return "idle timeout",
        }
    }
}

/// Writes one channel: each write becomes one message, in order with
/// every other channel's (they share one queue to the socket).
struct ChannelWriter {
    channel: u8,
    tx: PollSender<(u8, Vec<u8>)>,
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let gone = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        match self.tx.poll_reserve(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Err(gone())),
            Poll::Ready(Ok(())) => {}
        }
        let ch = self.channel;
        let n = buf.len().min(MAX_OUT_CHUNK);
        self.tx.send_item((ch, buf[..n].to_vec())).map_err(|_| gone())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // A channel cannot be half-closed on the wire; dropping our queue
        // handle lets the connection close once every channel is done.
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

/// Buffer between the socket reader and one input channel.
const INPUT_BUFFER: usize = 64 * 1024;

/// The socket split into an outgoing queue (one task sends, in order, and
/// closes the socket once every writer is gone) and its reading half.
struct Conn<S> {
    out: mpsc::Sender<(u8, Vec<u8>)>,
    sender: tokio::task::JoinHandle<()>,
    incoming: futures_util::stream::SplitStream<WebSocketStream<S>>,
    base64: bool,
    activity: Activity,
}

/// The close frame Berth ends every WebSocket session with.
pub fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn new(ws: WebSocketStream<S>, base64: bool) -> Self {
        let (mut sink, incoming) = ws.split();
        let (out, mut rx) = mpsc::channel::<(u8, Vec<u8>)>(32);
        let activity = Activity::new();
        let sent = activity.clone();
        let sender = tokio::spawn(async move {
            while let Some((ch, data)) = rx.recv().await {
                if sink.send(encode(base64, ch, &data)).await.is_err() {
                    return;
                }
                sent.touch();
            }
            // 1000 (normal closure): client-go reads anything else, even a
            // close frame without a code (1005), as a failed stream.
            let _ = sink.send(normal_close()).await;
            let _ = sink.close().await;
        });
        Conn {
            out,
            sender,
            incoming,
            base64,
            activity,
        }
    }

    fn writer(&self, channel: u8) -> ChannelWriter {
        ChannelWriter {
            channel,
            tx: PollSender::new(self.out.clone()),
        }
    }
}

/// Copies client messages into the input channels until the client closes
/// or sends garbage; dropping `inputs` then gives every reader EOF.
async fn read_loop<S>(
    mut incoming: futures_util::stream::SplitStream<WebSocketStream<S>>,
    base64: bool,
    close_signal: bool,
    mut inputs: Vec<(u8, Option<DuplexStream>)>,
    activity: Activity,
) -> ReadEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut pings = PingBudget::new();
    loop {
        let msg = match incoming.next().await {
            None => return ReadEnd::Closed,
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                tracing::info!(error = %e, "WebSocket error from the client; closing");
                return ReadEnd::Violation;
            }
        };
        activity.touch();
        if msg.is_close() {
            return ReadEnd::Closed;
        }
        if msg.is_ping() && !pings.take(tokio::time::Instant::now()) {
            tracing::warn!("WebSocket client floods pings; cutting the connection");
            return ReadEnd::Violation;
        }
        match decode(base64, close_signal, &msg) {
            Ok(Some(Frame::Data(ch, data))) => {
                if let Some((_, Some(w))) = inputs.iter_mut().find(|(c, _)| *c == ch) {
                    if w.write_all(&data).await.is_err() {
                        inputs.retain(|(c, _)| *c != ch);
                    }
                }
            }
            Ok(Some(Frame::Close(ch))) => {
                if let Some((_, w)) = inputs.iter_mut().find(|(c, _)| *c == ch) {
                    w.take();
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::info!(error = %e, "WebSocket protocol error from the client; closing");
                return ReadEnd::Violation;
            }
        }
    }
}

/// Serves an exec or attach on an upgraded connection.
pub async fn serve_remote<S>(
    ws: WebSocketStream<S>,
    version: ProtocolVersion,
    base64: bool,
    ctx: StreamContext,
    request: StreamRequest,
    idle: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stdin, stdout, stderr, tty) = match &request {
        StreamRequest::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
        StreamRequest::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
        StreamRequest::PortForward(_) => return,
    };
    let conn = Conn::new(ws, base64);
    let mut inputs = Vec::new();
    let mut open_input = |ch: u8, want: bool| -> Option<remotecommand::Reader> {
        if !want {
            return None;
        }
        let (ours, theirs) = tokio::io::duplex(INPUT_BUFFER);
        inputs.push((ch, Some(ours)));
        Some(Box::new(theirs))
    };
    let stdin_r = open_input(channel::STDIN, stdin);
    let resize_r = open_input(channel::RESIZE, tty && version >= ProtocolVersion::V3);
    let streams = RemoteStreams {
        stdin: stdin_r,
        stdout: stdout.then(|| Box::new(conn.writer(channel::STDOUT)) as remotecommand::Writer),
        stderr: stderr.then(|| Box::new(conn.writer(channel::STDERR)) as remotecommand::Writer),
        error: Box::new(conn.writer(channel::ERROR)),
        resize: resize_r,
        version,
    };
    // "Connected": an empty message on the lowest channel we write.
    let first = if stdout {
        channel::STDOUT
    } else if stderr {
        channel::STDERR
    } else {
        channel::ERROR
    };
    let _ = conn.out.send((first, Vec::new())).await;
    let Conn {
        out,
        mut sender,
        incoming,
        base64,
        activity,
    } = conn;
    drop(out);
    let mut reader = tokio::spawn(read_loop(
        incoming,
        base64,
        version >= ProtocolVersion::V5,
        inputs,
        activity.clone(),
    ));
    let serve = async {
        match &request {
            StreamRequest::Exec(r) => remotecommand::serve_exec(&ctx, r, streams).await,
            StreamRequest::Attach(r) => remotecommand::serve_attach(&ctx, r, streams).await,
            StreamRequest::PortForward(_) => {}
        }
        let _ = (&mut sender).await;
    };
    tokio::select! {
        _ = serve => {}
        why = must_cut(&mut reader, &activity, idle) => {
            tracing::info!(reason = why, "WebSocket streaming session cut");
        }
    }
    // Both halves go, so the socket closes even if the peer never reads.
    sender.abort();
    reader.abort();
}

/// Serves kubelet-style WebSocket port-forward of `ports` into the pod.
pub async fn serve_port_forward<S>(
    ws: WebSocketStream<S>,
    base64: bool,
    sandbox_id: String,
    netns: Option<std::path::PathBuf>,
    ports: Vec<u16>,
    idle: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Conn::new(ws, base64);
    let mut inputs = Vec::new();
    let mut conns = tokio::task::JoinSet::new();
    for (i, port) in ports.iter().enumerate() {
        let (data_ch, error_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        let _ = conn.out.send((data_ch, port.to_le_bytes().to_vec())).await;
        let _ = conn.out.send((error_ch, port.to_le_bytes().to_vec())).await;
        let (ours, theirs) = tokio::io::duplex(INPUT_BUFFER);
        inputs.push((data_ch, Some(ours)));
        let data = tokio::io::join(theirs, conn.writer(data_ch));
        let error = conn.writer(error_ch);
        let (sb, ns, port) = (sandbox_id.clone(), netns.clone(), *port);
        conns.spawn(
            async move { super::portforward::serve_port_forward_conn(&sb, ns, port, data, error).await },
        );
    }
    let Conn {
        out,
        mut sender,
        incoming,
        base64,
        activity,
    } = conn;
    drop(out);
    let mut reader = tokio::spawn(read_loop(incoming, base64, false, inputs, activity.clone()));
    let serve = async {
        while conns.join_next().await.is_some() {}
        let _ = (&mut sender).await;
    };
    tokio::select! {
        _ = serve => {}
        why = must_cut(&mut reader, &activity, idle) => {
            tracing::info!(reason = why, "WebSocket port-forward session cut");
        }
    }
    conns.abort_all();
    sender.abort();
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_base64_framing() {
        let m = encode(false, channel::STDOUT, b"hi");
        assert_eq!(m, Message::binary(vec![1, b'h', b'i']));
        let m = encode(true, channel::STDERR, b"hi");
        assert_eq!(m, Message::text("2aGk="));
        assert_eq!(
            decode(false, true, &Message::binary(vec![0, b'x'])).unwrap(),
            Some(Frame::Data(0, b"x".to_vec()))
        );
        assert_eq!(
            decode(true, false, &Message::text("0aGk=")).unwrap(),
            Some(Frame::Data(0, b"hi".to_vec()))
        );
        assert!(decode(true, false, &Message::text("0!!")).is_err());
        assert_eq!(decode(false, false, &Message::binary(Vec::new())).unwrap(), None);
        assert_eq!(
            decode(false, false, &Message::Ping(Vec::new().into())).unwrap(),
            None
        );
    }

    #[test]
    fn close_signal_only_in_v5() {
        let close = Message::binary(vec![255, 0]);
        assert_eq!(decode(false, true, &close).unwrap(), Some(Frame::Close(0)));
        // Before v5, 255 is just a (meaningless) channel number.
        assert_eq!(
            decode(false, false, &close).unwrap(),
            Some(Frame::Data(255, vec![0]))
        );
        assert!(decode(false, true, &Message::binary(vec![255])).is_err());
        assert!(decode(false, true, &Message::binary(vec![255, 0, 1])).is_err());
    }

    #[test]
    fn the_clients_first_supported_protocol_wins() {
        let (name, p) = select_protocol(
            "exec",
            &["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"],
        )
        .unwrap();
        assert_eq!(name.as_deref(), Some("v5.channel.k8s.io"));
        assert_eq!(
            p,
            WsProtocol::Remote {
                version: ProtocolVersion::V5,
                base64: false
            }
        );
        let (_, p) = select_protocol("attach", &["x", "v4.base64.channel.k8s.io"]).unwrap();
        assert_eq!(
            p,
            WsProtocol::Remote {
                version: ProtocolVersion::V4,
                base64: true
            }
        );
        let (name, p) = select_protocol("exec", &[]).unwrap();
        assert_eq!(name, None);
        assert_eq!(
            p,
            WsProtocol::Remote {
                version: ProtocolVersion::V1,
                base64: false
            }
        );
        assert!(select_protocol("exec", &["v9.channel.k8s.io"]).is_err());
        assert_eq!(
            select_protocol("portforward", &[SPDY_TUNNEL_PROTOCOL]).unwrap().1,
            WsProtocol::SpdyTunnel
        );
        assert_eq!(
            select_protocol("portforward", &["v4.channel.k8s.io"]).unwrap().1,
            WsProtocol::PortForward { base64: false }
        );
        assert!(select_protocol("portforward", &["v5.channel.k8s.io"]).is_err());
    }

    /// A whole exec-less session over an in-memory socket: the writers'
    /// messages arrive in order and the socket closes after the last one.
    #[tokio::test]
    async fn writers_share_one_ordered_queue_and_close_the_socket() {
        use tokio::io::AsyncWriteExt;
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (a, b) = tokio::io::duplex(1 << 16);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let conn = Conn::new(server, false);
        let mut out = conn.writer(channel::STDOUT);
        let mut err = conn.writer(channel::ERROR);
        drop(conn);
        out.write_all(b"one").await.unwrap();
        err.write_all(b"two").await.unwrap();
        out.write_all(b"three").await.unwrap();
        drop((out, err));
        let mut got = Vec::new();
        while let Some(Ok(m)) = client.next().await {
            if m.is_close() {
                break;
            }
            got.push(m.into_data().to_vec());
        }
        assert_eq!(
            got,
            vec![b"\x01one".to_vec(), b"\x03two".to_vec(), b"\x01three".to_vec()]
        );
    }

    const T: Duration = Duration::from_secs(10);

    /// A local TCP port that accepts and then says nothing: a quiet pod.
    async fn quiet_port() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((c, _)) = l.accept().await {
                held.push(c);
            }
        });
        port
    }

    /// A port-forward session to a quiet port over an in-memory socket of
    /// `pipe` bytes; returns the client's raw end and the serving task.
    async fn forward_session(pipe: usize, idle: Duration) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        use tokio_tungstenite::tungstenite::protocol::Role;
        let port = quiet_port().await;
        let (a, b) = tokio::io::duplex(pipe);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, Some(ws_config())).await;
        let task = tokio::spawn(serve_port_forward(
            server,
            false,
            "sb".into(),
            None,
            vec![port],
            idle,
        ));
        (b, task)
    }

    /// A client frame (masked, as RFC 6455 requires of clients) with a zero
    /// mask key, so the payload goes as is.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    /// Pings sent as fast as the socket takes them, never reading the
    /// pongs: the session is cut and the socket closed.
    #[tokio::test]
    async fn a_client_that_floods_pings_is_cut() {
        let (mut client, task) = forward_session(4096, Duration::from_secs(3600)).await;
        let batch = client_frame(0x9, b"").repeat(100);
        const LIMIT: usize = 100_000;
        let mut sent = 0;
        while sent < LIMIT {
            if client.write_all(&batch).await.is_err() {
                break;
            }
            sent += 100;
        }
        assert!(sent < LIMIT, "all {sent} pings were taken in");
        tokio::time::timeout(T, task)
            .await
            .expect("the session ended")
            .unwrap();
    }

    /// A message over MAX_MESSAGE_BYTES ends the session instead of being
    /// buffered whole.
    #[tokio::test]
    async fn a_message_over_the_limit_cuts_the_session() {
        let (mut client, task) = forward_session(1 << 16, Duration::from_secs(3600)).await;
        let mut payload = vec![0u8; 2 * MAX_MESSAGE_BYTES];
        payload[0] = 0; // the data channel of the first port
        let frame = client_frame(0x2, &payload);
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&frame).await;
            client
        });
        tokio::time::timeout(T, task)
            .await
            .expect("the session ended")
            .unwrap();
        drop(writer);
    }

    /// Nothing either way for the idle timeout: the session ends and the
    /// client sees its connection close.
    #[tokio::test]
    async fn an_idle_session_is_cut() {
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (raw, task) = forward_session(1 << 16, Duration::from_millis(200)).await;
        let mut client = WebSocketStream::from_raw_socket(raw, Role::Client, None).await;
        // The two port announcements, then silence until the cut.
        let ended = tokio::time::timeout(T, async {
            let mut got = 0;
            while let Some(Ok(m)) = client.next().await {
                if m.is_close() {
                    break;
                }
                got += 1;
            }
            got
        })
        .await
        .expect("the connection ended");
        assert_eq!(ended, 2);
        tokio::time::timeout(T, task)
            .await
            .expect("the session ended")
            .unwrap();
    }

    #[test]
    fn the_ping_budget_allows_a_burst_then_a_rate() {
        let t0 = tokio::time::Instant::now();
        let mut b = PingBudget::new();
        b.last = t0;
        for _ in 0..64 {
            assert!(b.take(t0));
        }
        assert!(!b.take(t0), "the burst is spent");
        assert!(b.take(t0 + Duration::from_millis(250)), "two pings earned");
        assert!(b.take(t0 + Duration::from_millis(250)));
        assert!(!b.take(t0 + Duration::from_millis(250)));
        // A quiet client gets its burst back, no more.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..64 {
            assert!(b.take(later));
        }
        assert!(!b.take(later));
    }
}
