//! A streaming client that speaks SPDY/3.1 to the URLs berthd returns from
//! `Exec`, `Attach` and `PortForward`, the way client-go's SPDY executor and
//! port-forwarder (kubelet's proxy, kubectl, crictl) do: an HTTP/1.1
//! `Upgrade: SPDY/3.1` request offering `X-Stream-Protocol-Version`s, then
//! one SPDY stream per channel, each named by its `streamType` header and
//! opened in client-go's order (error first).

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use berth_spdy::{Headers, Role, Session, Stream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The remotecommand versions client-go offers, newest first.
pub const REMOTECOMMAND_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The port-forward protocol.
pub const PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of client-go's tunnelling port-forward dialer
/// (`crictl port-forward --transport websocket`, kubectl ≥ 1.30): the SPDY
/// port-forward session, carried in binary WebSocket messages.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// An upgraded connection.
pub struct Upgraded {
    pub session: Session,
    /// What the server chose (`X-Stream-Protocol-Version`).
    pub protocol: String,
}

/// The HTTP answer when the server refused to upgrade.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl std::error::Error for Refused {}

/// POSTs an upgrade request to `url` (`http://host:port/path`).
pub async fn upgrade(url: &str, protocols: &[&str]) -> anyhow::Result<Upgraded> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http URL: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut tcp = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connect {authority}"))?;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await?;
    let (status, headers, body) = read_response(&mut tcp).await?;
    if status != 101 {
        return Err(Refused { status, body }.into());
    }
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    if !header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        bail!("101 without Upgrade: SPDY/3.1: {headers:?}");
    }
    let protocol = header("x-stream-protocol-version").unwrap_or_default();
    let (session, _incoming) = Session::new(tcp, Role::Client);
    Ok(Upgraded { session, protocol })
}

/// Reads a response head (and, for non-101 answers, a Content-Length body).
async fn read_response(tcp: &mut TcpStream) -> anyhow::Result<(u16, Vec<(String, String)>, String)> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    // Byte by byte: SPDY frames may follow the head directly.
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut b).await? == 0 {
            bail!(
                "connection closed in the response head: {:?}",
                String::from_utf8_lossy(&head)
            );
        }
        head.push(b[0]);
        if head.len() > 64 * 1024 {
            bail!("response head too long");
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = String::new();
    if status != 101 {
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let mut buf = vec![0u8; len.unwrap_or(0).min(1 << 20)];
        if len.is_some() {
            tcp.read_exact(&mut buf).await?;
        } else {
            let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut buf)).await;
        }
        body = String::from_utf8_lossy(&buf).into_owned();
    }
    Ok((status, headers, body))
}

/// What to attach for an exec or attach call (mirrors the CRI request).
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// Bytes to send on stdin, then close it (None: no stdin stream).
    pub stdin: Option<Vec<u8>>,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// Terminal sizes to send on the resize stream (tty only), (width, height).
    pub resizes: Vec<(u16, u16)>,
    /// Wait this long after the last resize before closing stdin.
    pub stdin_delay: Duration,
    /// The protocol versions to offer; empty: client-go's
    /// [`REMOTECOMMAND_PROTOCOLS`].
    pub protocols: Vec<&'static str>,
}

/// The outcome of an exec/attach.
#[derive(Debug, Default)]
pub struct StreamResult {
    pub protocol: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// What arrived on the error stream (v4+: a metav1.Status JSON).
    pub error: String,
}

impl StreamResult {
    /// The exit code client-go would report: 0 for Success, the ExitCode
    /// cause for NonZeroExitCode.
    pub fn exit_code(&self) -> anyhow::Result<i32> {
        if self.error.is_empty() {
            return Ok(0);
        }
        let v: serde_json::Value =
            serde_json::from_str(&self.error).with_context(|| format!("status {:?}", self.error))?;
        match v["status"].as_str() {
            Some("Success") => Ok(0),
            Some("Failure") if v["reason"] == "NonZeroExitCode" => {
                let causes = v["details"]["causes"].as_array().cloned().unwrap_or_default();
                let code = causes
                    .iter()
                    .find(|c| c["reason"] == "ExitCode")
                    .and_then(|c| c["message"].as_str())
                    .ok_or_else(|| anyhow!("NonZeroExitCode without an ExitCode cause: {v}"))?;
                Ok(code.parse()?)
            }
            _ => bail!("error stream: {v}"),
        }
    }
}

async fn open(s: &Session, kind: &str) -> anyhow::Result<Stream> {
    s.open(Headers::new().with("streamType", kind), false)
        .await
        .with_context(|| format!("open the {kind} stream"))
}

async fn read_all(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v).await;
    v
}

/// Runs an exec or attach URL to completion, as client-go's SPDY executor
/// does (v4 unless `opts.protocols` offers others).
pub async fn run(url: &str, opts: &StreamOptions) -> anyhow::Result<StreamResult> {
    let offered = match opts.protocols.as_slice() {
        [] => REMOTECOMMAND_PROTOCOLS,
        some => some,
    };
    let up = upgrade(url, offered).await?;
    let s = &up.session;
    let error = open(s, "error").await?;
    let stdin = match &opts.stdin {
        Some(_) => Some(open(s, "stdin").await?),
        None => None,
    };
    let stdout = if opts.stdout {
        Some(open(s, "stdout").await?)
    } else {
        None
    };
    let stderr = if opts.stderr && !opts.tty {
        Some(open(s, "stderr").await?)
    } else {
        None
    };
    let resize = if opts.tty && up.protocol != "channel.k8s.io" && up.protocol != "v2.channel.k8s.io" {
        Some(open(s, "resize").await?)
    } else {
        None
    };
    let (mut err_r, mut err_w) = tokio::io::split(error);
    // client-go never writes on the error stream: half-close it.
    err_w.shutdown().await?;
    let out_task = stdout.map(|st| tokio::spawn(read_all(st)));
    let errout_task = stderr.map(|st| tokio::spawn(read_all(st)));
    let resize_task = resize.map(|mut r| {
        let sizes = opts.resizes.clone();
        tokio::spawn(async move {
            for (w, h) in sizes {
                let msg = format!("{{\"Width\":{w},\"Height\":{h}}}");
                if r.write_all(msg.as_bytes()).await.is_err() {
                    break;
                }
            }
            r
        })
    });
    if let (Some(mut st), Some(data)) = (stdin, opts.stdin.clone()) {
        let delay = opts.stdin_delay;
        tokio::spawn(async move {
            let _ = st.write_all(&data).await;
            tokio::time::sleep(delay).await;
            let _ = st.shutdown().await;
            // Keep the stream (and its read side) until the server is done.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
    }
    let mut result = StreamResult {
        protocol: up.protocol.clone(),
        ..Default::default()
    };
    if let Some(t) = out_task {
        result.stdout = t.await?;
    }
    if let Some(t) = errout_task {
        result.stderr = t.await?;
    }
    let mut e = Vec::new();
    err_r.read_to_end(&mut e).await?;
    result.error = String::from_utf8_lossy(&e).into_owned();
    if let Some(t) = resize_task {
        t.abort();
    }
    Ok(result)
}

/// One forwarded connection: a data and an error stream sharing a
/// `requestID`, as client-go's port-forwarder opens them.
pub struct Forward {
    pub data: Stream,
    pub error: Stream,
}

impl Forward {
    /// Waits for an error message on the error stream (empty if none).
    pub async fn error_text(self) -> String {
        let (mut r, _w) = tokio::io::split(self.error);
        let mut v = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut v)).await;
        String::from_utf8_lossy(&v).into_owned()
    }
}

/// A port-forward session; each [`PortForward::connect`] is one TCP
/// connection into the pod.
pub struct PortForward {
    pub up: Upgraded,
    next_request: u32,
}

impl PortForward {
    pub async fn start(url: &str) -> anyhow::Result<Self> {
        let up = upgrade(url, &[PORTFORWARD_PROTOCOL]).await?;
        if up.protocol != PORTFORWARD_PROTOCOL {
            bail!("server chose {:?}", up.protocol);
        }
        Ok(PortForward { up, next_request: 0 })
    }

    /// The same session through a WebSocket tunnel: a GET upgrading to
    /// WebSocket with [`TUNNEL_PROTOCOL`], then SPDY inside binary messages.
    pub async fn start_tunnelled(url: &str) -> anyhow::Result<Self> {
        let mut req = url.replacen("http://", "ws://", 1).into_client_request()?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(TUNNEL_PROTOCOL),
        );
        let authority = req.uri().authority().context("no host in the URL")?.to_string();
        let tcp = TcpStream::connect(&authority)
            .await
            .with_context(|| format!("connect {authority}"))?;
        let (ws, resp) = match tokio_tungstenite::client_async(req, tcp).await {
            Ok(r) => r,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp.body().as_deref().unwrap_or_default();
                return Err(Refused {
                    status: resp.status().as_u16(),
                    body: String::from_utf8_lossy(body).into_owned(),
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        let protocol = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if protocol != TUNNEL_PROTOCOL {
            bail!("server chose {protocol:?}");
        }
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(pump_tunnel(ws, theirs));
        let (session, _incoming) = Session::new(ours, Role::Client);
        Ok(PortForward {
            up: Upgraded { session, protocol },
            next_request: 0,
        })
    }

    pub async fn connect(&mut self, port: u16) -> anyhow::Result<Forward> {
        let id = self.next_request.to_string();
        self.next_request += 1;
        let h = |kind: &str| {
            Headers::new()
                .with("streamType", kind)
                .with("port", &port.to_string())
                .with("requestID", &id)
        };
        let mut error = self.up.session.open(h("error"), false).await?;
        // The client never writes on the error stream.
        error.shutdown().await?;
        let data = self.up.session.open(h("data"), false).await?;
        Ok(Forward { data, error })
    }
}

/// An HTTP GET over a forwarded connection; returns the whole response.
pub async fn http_get(data: &mut Stream, path: &str) -> anyhow::Result<String> {
    let req = format!("GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n");
    data.write_all(req.as_bytes()).await?;
    let mut v = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), data.read_to_end(&mut v))
        .await
        .context("HTTP response timed out")??;
    Ok(String::from_utf8_lossy(&v).into_owned())
}

/// Moves the SPDY bytes between `io` and the WebSocket as client-go's
/// tunnelling connection does: each write one binary message, each binary
/// message read in order; a Close (or the end) is the end of the stream.
async fn pump_tunnel(ws: WebSocketStream<TcpStream>, io: DuplexStream) {
    let (mut sink, mut source) = ws.split();
    let (mut from_session, mut to_session) = tokio::io::split(io);
    let up = async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = from_session.read(&mut buf).await {
            if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    };
    let down = async move {
        while let Some(Ok(msg)) = source.next().await {
            let written = match msg {
                Message::Binary(b) => to_session.write_all(&b).await,
                Message::Close(_) => break,
                _ => Ok(()),
            };
            if written.is_err() {
                break;
            }
        }
        let _ = to_session.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Runs `cmd` in container `id` over SPDY to its end, with stdout and
/// stderr (no tty, no stdin); panics if it fails or takes over 30 s.
pub async fn exec(c: &mut crate::CriClient, id: &str, cmd: &[&str]) -> StreamResult {
    let url = c.exec_url(crate::exec_request(id, cmd, false, false)).await;
    let opts = StreamOptions {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    tokio::time::timeout(Duration::from_secs(30), run(&url, &opts))
        .await
        .expect("exec finished")
        .expect("exec")
}
