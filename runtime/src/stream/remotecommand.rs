//! The transport-independent core of exec and attach (Kubernetes'
//! "remotecommand" protocol).
//!
//! A transport (WebSocket here, SPDY in `stream::spdy`) turns its channels
//! or streams into a [`RemoteStreams`] and calls [`serve_exec`] or
//! [`serve_attach`]; this module runs the session through the pod's shim
//! and ends it with the Status the clients parse on the error stream:
//! * v4 and later: the JSON of a `metav1.Status` — `{"metadata":{},
//!   "status":"Success"}`, or for a non-zero exit `"Failure"` with reason
//!   `NonZeroExitCode` and a cause `{"reason":"ExitCode","message":"<n>"}`
//!   (client-go reads the code from that cause, 0..=255);
//! * v1-v3: nothing on success, the error's message as text otherwise.
//!
//! The resize stream carries JSON objects `{"Width":w,"Height":h}` one
//! after the other (client-go encodes them with a json.Encoder, so they are
//! newline separated, but any whitespace between them is accepted).

use berth_proto::cri;
use berth_proto::shim::stream_input::Input;
use berth_proto::shim::stream_output::Output;
use berth_proto::shim::{AttachStart, ExecStart, StreamInput, TerminalSize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::StreamContext;
use crate::error::Error;

/// The remotecommand protocol version a transport negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// `channel.k8s.io` (no resize; text errors).
    V1,
    /// `v2.channel.k8s.io`.
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a JSON Status.
    V4,
    /// `v5.channel.k8s.io`: adds closing stdin (WebSocket close signal).
    V5,
}

impl ProtocolVersion {
    /// Whether the final status is JSON (v4+) rather than text.
    pub fn json_status(self) -> bool {
        self >= ProtocolVersion::V4
    }
}

/// A boxed reader of one client stream.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// A boxed writer of one client stream.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The client's streams, as the transport opened them.
pub struct RemoteStreams {
    /// What the client types; EOF closes the process's stdin.
    pub stdin: Option<Reader>,
    /// The process's stdout (and a terminal's output).
    pub stdout: Option<Writer>,
    /// The process's stderr (never with a terminal).
    pub stderr: Option<Writer>,
    /// Where the final Status goes; shut down at the end of the session.
    pub error: Writer,
    /// Terminal size changes.
    pub resize: Option<Reader>,
    /// The negotiated protocol version.
    pub version: ProtocolVersion,
}

/// How a session ended, before it is written as a Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited 0 (or the attach ended).
    Success,
    /// The process exited with this code.
    ExitCode(i32),
    /// The session could not run (no container, exec failed, shim gone).
    Error(String),
}

/// The bytes written on the error stream for `outcome` (empty: nothing).
pub fn status_bytes(version: ProtocolVersion, outcome: &Outcome) -> Vec<u8> {
    if !version.json_status() {
        return match outcome {
            Outcome::Success => Vec::new(),
            Outcome::ExitCode(code) => {
                format!("command terminated with non-zero exit code: exit status {code}").into_bytes()
            }
            Outcome::Error(msg) => msg.clone().into_bytes(),
        };
    }
    let status = match outcome {
        Outcome::Success => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::ExitCode(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        // apierrors.NewInternalError's shape.
        Outcome::Error(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {msg}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    };
    serde_json::to_vec(&status).expect("a JSON value serialises")
}

/// Runs `req` (a validated CRI Exec) with the client's streams.
pub async fn serve_exec(ctx: &StreamContext, req: &cri::ExecRequest, streams: RemoteStreams) {
    let first = StreamInput {
        input: Some(Input::Exec(ExecStart {
            id: req.container_id.clone(),
            args: req.cmd.clone(),
            tty: req.tty,
            stdin: req.stdin && streams.stdin.is_some(),
            stdout: streams.stdout.is_some(),
            stderr: streams.stderr.is_some(),
            size: None,
        })),
    };
    let session = Session::Exec(req.container_id.clone());
    run(ctx, session, first, streams).await;
}

/// Attaches the client's streams to a running container (a validated CRI Attach).
pub async fn serve_attach(ctx: &StreamContext, req: &cri::AttachRequest, streams: RemoteStreams) {
    let first = StreamInput {
        input: Some(Input::Attach(AttachStart {
            id: req.container_id.clone(),
            stdin: req.stdin && streams.stdin.is_some(),
            stdout: streams.stdout.is_some(),
            stderr: streams.stderr.is_some(),
        })),
    };
    let session = Session::Attach(req.container_id.clone());
    run(ctx, session, first, streams).await;
}

/// Which shim call a session is.
enum Session {
    Exec(String),
    Attach(String),
}

async fn run(ctx: &StreamContext, session: Session, first: StreamInput, mut streams: RemoteStreams) {
    let version = streams.version;
    let (tx, rx) = mpsc::channel::<StreamInput>(16);
    let _ = tx.send(first).await;
    let attach = matches!(session, Session::Attach(_));
    let opened = match &session {
        Session::Exec(id) => ctx.containers.exec_stream(id, rx).await,
        Session::Attach(id) => ctx.containers.attach_stream(id, rx).await,
    };
    let outcome = match opened {
        Err(e) => Outcome::Error(error_text(attach, &e)),
        Ok(mut output) => {
            let feeders = [
                streams
                    .stdin
                    .take()
                    .map(|r| tokio::spawn(feed_stdin(r, tx.clone()))),
                streams
                    .resize
                    .take()
                    .map(|r| tokio::spawn(feed_resize(r, tx.clone()))),
            ];
            let mut exit = None;
            let mut failed = None;
            loop {
                match output.message().await {
                    Ok(Some(msg)) => {
                        let client_there = match msg.output {
                            Some(Output::Stdout(data)) => write_to(&mut streams.stdout, &data).await,
                            Some(Output::Stderr(data)) => write_to(&mut streams.stderr, &data).await,
                            Some(Output::ExitCode(code)) => {
                                exit = Some(code);
                                true
                            }
                            None => true,
                        };
                        if !client_there {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(format!("shim: {}", e.message()));
                        break;
                    }
                }
            }
            for f in feeders.into_iter().flatten() {
                f.abort();
            }
            for w in [&mut streams.stdout, &mut streams.stderr].into_iter().flatten() {
                let _ = w.shutdown().await;
            }
            match (exit, failed) {
                (_, Some(msg)) => Outcome::Error(msg),
                (Some(0), _) => Outcome::Success,
                // Attach ends when the container does, whatever its code.
                (Some(_), _) if attach => Outcome::Success,
                (Some(code), _) => Outcome::ExitCode(code),
                (None, _) => Outcome::Error("the session ended before the process exited".into()),
            }
        }
    };
    drop(tx);
    tracing::debug!(?outcome, "stream session finished");
    let bytes = status_bytes(version, &outcome);
    if !bytes.is_empty() {
        let _ = streams.error.write_all(&bytes).await;
    }
    let _ = streams.error.shutdown().await;
}

/// kubelet's wording: "error executing command in container: ..." /
/// "error attaching to container: ...".
fn error_text(attach: bool, e: &Error) -> String {
    if attach {
        format!("error attaching to container: {e}")
    } else {
        format!("error executing command in container: {e}")
    }
}

/// Writes to a stream the client asked for; false when the client is gone.
async fn write_to(w: &mut Option<Writer>, data: &[u8]) -> bool {
    match w {
        Some(w) => w.write_all(data).await.is_ok() && w.flush().await.is_ok(),
        None => true,
    }
}

async fn feed_stdin(mut r: Reader, tx: mpsc::Sender<StreamInput>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let msg = StreamInput {
                    input: Some(Input::Stdin(buf[..n].to_vec())),
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx
        .send(StreamInput {
            input: Some(Input::StdinClose(true)),
        })
        .await;
}

async fn feed_resize(mut r: Reader, tx: mpsc::Sender<StreamInput>) {
    let mut parser = ResizeParser::default();
    let mut buf = vec![0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => match parser.feed(&buf[..n]) {
                Ok(sizes) => {
                    for size in sizes {
                        let msg = StreamInput {
                            input: Some(Input::Resize(size)),
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bad terminal size on the resize stream; ignoring the stream");
                    return;
                }
            },
        }
    }
}

/// `remotecommand.TerminalSize` as client-go encodes it.
#[derive(Debug, serde::Deserialize)]
struct WireSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Splits the resize stream into sizes; keeps an unfinished object.
#[derive(Default)]
pub struct ResizeParser {
    pending: Vec<u8>,
}

impl ResizeParser {
    /// Feeds bytes; returns every complete size in them.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<TerminalSize>, serde_json::Error> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        let mut it = serde_json::Deserializer::from_slice(&self.pending).into_iter::<WireSize>();
        loop {
            match it.next() {
                Some(Ok(s)) => out.push(TerminalSize {
                    width: s.width.into(),
                    height: s.height.into(),
                }),
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        let used = it.byte_offset();
        self.pending.drain(..used);
        if self.pending.len() > 64 * 1024 {
            self.pending.clear();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &[u8]) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn v4_success_is_the_bare_status() {
        let b = status_bytes(ProtocolVersion::V4, &Outcome::Success);
        assert_eq!(b, br#"{"metadata":{},"status":"Success"}"#);
        assert_eq!(status_bytes(ProtocolVersion::V5, &Outcome::Success), b);
    }

    #[test]
    fn v4_exit_code_is_a_non_zero_exit_code_cause() {
        let v = json(&status_bytes(ProtocolVersion::V4, &Outcome::ExitCode(3)));
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        // client-go: Details.Causes[i].Type ("reason" in JSON) == "ExitCode",
        // Message parsed with ParseUint(.., 10, 8).
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert_eq!(v["metadata"], serde_json::json!({}));
    }

    #[test]
    fn v4_internal_error_carries_the_message() {
        let v = json(&status_bytes(
            ProtocolVersion::V4,
            &Outcome::Error("container x not found".into()),
        ));
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "InternalError");
        assert_eq!(v["code"], 500);
        assert!(v["message"].as_str().unwrap().contains("container x not found"));
    }

    #[test]
    fn pre_v4_errors_are_text_and_success_is_silent() {
        assert!(status_bytes(ProtocolVersion::V1, &Outcome::Success).is_empty());
        assert!(status_bytes(ProtocolVersion::V3, &Outcome::Success).is_empty());
        let t = String::from_utf8(status_bytes(ProtocolVersion::V2, &Outcome::ExitCode(7))).unwrap();
        assert!(t.contains("non-zero exit code") && t.contains('7'), "{t}");
        assert_eq!(
            status_bytes(ProtocolVersion::V1, &Outcome::Error("boom".into())),
            b"boom"
        );
    }

    #[test]
    fn resize_objects_split_across_reads() {
        let mut p = ResizeParser::default();
        let got = p.feed(b"{\"Width\":80,\"Height\":24}\n{\"Wid").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].width, got[0].height), (80, 24));
        let got = p.feed(b"th\":120,\"Height\":40}\n").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].width, got[0].height), (120, 40));
        assert!(p.feed(b"\n").unwrap().is_empty());
        let got = p
            .feed(b"{\"Width\":1,\"Height\":2}{\"Width\":3,\"Height\":4}")
            .unwrap();
        assert_eq!(got.len(), 2);
        assert!(p.feed(b"{\"Width\":-1,\"Height\":2}").is_err(), "not a size");
    }

    #[test]
    fn versions_order_and_json_status() {
        assert!(!ProtocolVersion::V3.json_status());
        assert!(ProtocolVersion::V4.json_status());
        assert!(ProtocolVersion::V5 > ProtocolVersion::V4);
    }
}
