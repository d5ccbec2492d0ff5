//! A streaming client that speaks WebSocket the way client-go's WebSocket
//! executor (crictl `--transport websocket`, kubectl) and kubelet-style
//! port-forward clients do: channel-prefixed messages, base64 variants, the
//! v5 close signal, the Status JSON on the error channel.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The client's remotecommand subprotocols, newest first (client-go's list).
pub const REMOTE_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// An open streaming WebSocket.
pub struct WsClient {
    ws: WebSocketStream<TcpStream>,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
    base64: bool,
}

/// The server refused the upgrade: HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    /// HTTP status code.
    pub status: u16,
    /// The body (berth's explanation).
    pub body: String,
}

impl WsClient {
    /// Connects to a streaming URL (`http://host:port/...`) offering `protocols`.
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<Self, Refused> {
        let ws_url = url.replacen("http://", "ws://", 1);
        let mut req = ws_url.as_str().into_client_request().map_err(|e| Refused {
            status: 0,
            body: e.to_string(),
        })?;
        if !protocols.is_empty() {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(&protocols.join(", ")).unwrap(),
            );
        }
        let host = req.uri().authority().unwrap().to_string();
        let tcp = TcpStream::connect(&host).await.map_err(|e| Refused {
            status: 0,
            body: e.to_string(),
        })?;
        match tokio_tungstenite::client_async(req, tcp).await {
            Ok((ws, resp)) => {
                let protocol = resp
                    .headers()
                    .get("Sec-WebSocket-Protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let base64 = protocol.as_deref().is_some_and(|p| p.contains("base64"));
                Ok(WsClient { ws, protocol, base64 })
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Err(e) => Err(Refused {
                status: 0,
                body: e.to_string(),
            }),
        }
    }

    /// Sends `data` on `channel`.
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> anyhow::Result<()> {
        let msg = if self.base64 {
            Message::text(format!(
                "{}{}",
                (b'0' + channel) as char,
                base64::engine::general_purpose::STANDARD.encode(data)
            ))
        } else {
            let mut v = vec![channel];
            v.extend_from_slice(data);
            Message::binary(v)
        };
        self.ws.send(msg).await?;
        Ok(())
    }

    /// v5: no more data on `channel` (stdin EOF).
    pub async fn close_channel(&mut self, channel: u8) -> anyhow::Result<()> {
        self.ws.send(Message::binary(vec![255, channel])).await?;
        Ok(())
    }

    /// The next channel message; None once the server closed.
    pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            let msg = self.ws.next().await?.ok()?;
            let raw: Vec<u8> = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => return None,
                _ => continue,
            };
            let (&first, rest) = raw.split_first()?;
            return Some(if self.base64 {
                (
                    first - b'0',
                    base64::engine::general_purpose::STANDARD.decode(rest).ok()?,
                )
            } else {
                (first, rest.to_vec())
            });
        }
    }

    /// Reads until the server closes (or `timeout`); every channel's bytes.
    pub async fn collect(&mut self, timeout: Duration) -> BTreeMap<u8, Vec<u8>> {
        let mut out: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        let _ = tokio::time::timeout(timeout, async {
            while let Some((ch, data)) = self.recv().await {
                out.entry(ch).or_default().extend_from_slice(&data);
            }
        })
        .await;
        out
    }

    /// Reads until `channel`'s bytes so far contain `needle` (or `timeout`);
    /// returns everything read on `channel`.
    pub async fn read_until(&mut self, channel: u8, needle: &str, timeout: Duration) -> String {
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(timeout, async {
            while let Some((ch, data)) = self.recv().await {
                if ch == channel {
                    seen.extend_from_slice(&data);
                    if String::from_utf8_lossy(&seen).contains(needle) {
                        return;
                    }
                }
            }
        })
        .await;
        String::from_utf8_lossy(&seen).into_owned()
    }
}

/// What a finished exec session sent.
#[derive(Debug, Default)]
pub struct ExecOutput {
    /// Channel 1.
    pub stdout: String,
    /// Channel 2.
    pub stderr: String,
    /// Channel 3, parsed (v4+: the Status JSON).
    pub status: Option<serde_json::Value>,
    /// Channel 3 as text.
    pub error_text: String,
}

impl ExecOutput {
    /// From a [`WsClient::collect`] result.
    pub fn from_channels(mut ch: BTreeMap<u8, Vec<u8>>) -> Self {
        let text = |v: Option<Vec<u8>>| String::from_utf8_lossy(&v.unwrap_or_default()).into_owned();
        let error_text = text(ch.remove(&3));
        ExecOutput {
            stdout: text(ch.remove(&1)),
            stderr: text(ch.remove(&2)),
            status: serde_json::from_str(&error_text).ok(),
            error_text,
        }
    }

    /// The exit code as client-go reads it from the Status: 0 on Success,
    /// the ExitCode cause for NonZeroExitCode, None for anything else.
    pub fn exit_code(&self) -> Option<i32> {
        let s = self.status.as_ref()?;
        match s["status"].as_str()? {
            "Success" => Some(0),
            "Failure" if s["reason"] == "NonZeroExitCode" => s["details"]["causes"]
                .as_array()?
                .iter()
                .find(|c| c["reason"] == "ExitCode")?["message"]
                .as_str()?
                .parse::<u8>()
                .ok()
                .map(i32::from),
            _ => None,
        }
    }
}

/// The client's side of a resize message.
pub fn resize_message(width: u16, height: u16) -> Vec<u8> {
    format!("{{\"Width\":{width},\"Height\":{height}}}\n").into_bytes()
}

/// Runs a non-interactive exec in container `id` to its end over
/// `protocols` (collecting for at most 20 s).
pub async fn exec(c: &mut crate::CriClient, id: &str, cmd: &[&str], protocols: &[&str]) -> ExecOutput {
    let url = c.exec_url(crate::exec_request(id, cmd, false, false)).await;
    let mut ws = WsClient::connect(&url, protocols).await.expect("connect");
    ExecOutput::from_channels(ws.collect(Duration::from_secs(20)).await)
}
