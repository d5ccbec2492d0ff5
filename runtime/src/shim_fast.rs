//! berthd's end of the shim API's fast path ([`berth_proto::fast`]): the
//! shim's Create and Start as one frame each way on a plain connection to
//! the shim's socket, instead of a call on the pod's HTTP/2 connection.
//!
//! Each call has a connection to itself, so concurrent calls to one shim
//! never wait for each other; a finished call's connection is kept for the
//! next (a few at most), and one is opened when berthd connects to the
//! shim, so a pod's first Create finds one ready. A shim that takes no fast
//! connection (one an older berthd started) is called over gRPC as before.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use berth_proto::fast;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tonic::{Response, Status};

#[cfg(test)]
use berth_proto::shim as shimpb;

/// Idle fast connections kept per shim.
const IDLE_MAX: usize = 2;

/// One shim's fast connections between calls.
#[derive(Debug)]
pub struct FastConns {
    socket: PathBuf,
    idle: Mutex<Vec<UnixStream>>,
    /// The shim hung up on the magic: it has no fast path, and every call
    /// goes over gRPC without trying.
    refused: AtomicBool,
}

impl FastConns {
    /// No connection yet to the shim at `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            refused: AtomicBool::new(false),
        }
    }

    /// Opens a connection ahead of the first call: its connect, the
    /// shim's accept and the greeting are then off that call's path (and a
    /// shim without the fast path is known before it). Failing is fine:
    /// the call connects itself, or goes over gRPC.
    pub async fn open_one(&self) {
        let Ok(mut stream) = UnixStream::connect(&self.socket).await else {
            return;
        };
        if self.greet(&mut stream, fast::MAGIC).await.is_ok() {
            self.keep(stream);
        }
    }

    /// Sends `out` (the magic, and maybe a first request) on a new
    /// connection and reads the shim's magic back. Err: the shim refused
    /// the fast path (marked, for every later call) or the connection failed.
    async fn greet(&self, stream: &mut UnixStream, out: &[u8]) -> std::io::Result<()> {
        let mut greeting = [0u8; fast::MAGIC.len()];
        let got = match stream.write_all(out).await {
            Ok(()) => stream.read_exact(&mut greeting).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if got.is_ok() && &greeting == fast::MAGIC {
            return Ok(());
        }
        // EOF, a refused write or an HTTP/2 error: a shim from before the
        // fast path, which hung up on the magic without running anything.
        tracing::debug!(socket = %self.socket.display(), "the shim takes no fast call");
        self.refused.store(true, Ordering::Relaxed);
        Err(std::io::Error::other("the shim takes no fast call"))
    }

    fn keep(&self, c: UnixStream) {
        let mut idle = self.idle.lock();
        if idle.len() < IDLE_MAX {
            idle.push(c);
        }
    }
}

/// One fast call. None: the call was not made (no connection could be
/// opened, or the shim has no fast path), so the caller uses gRPC.
pub async fn call<Req: prost::Message, Resp: prost::Message + Default>(
    conns: &FastConns,
    tag: u8,
    req: &Req,
) -> Option<Result<Response<Resp>, Status>> {
    if conns.refused.load(Ordering::Relaxed) {
        return None;
    }
    let frame = fast::request(tag, req)?;
    let lost = |e: std::io::Error| Status::unavailable(format!("shim fast call: {e}"));
    let kept = conns.idle.lock().pop();
    let mut c = match kept {
        Some(mut c) => {
            if let Err(e) = c.write_all(&frame).await {
                return Some(Err(lost(e)));
            }
            c
        }
        None => {
            let mut c = match UnixStream::connect(&conns.socket).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(socket = %conns.socket.display(), error = %e, "no fast connection to the shim");
                    return None;
                }
            };
            // The magic and the request in one write.
            let out = [fast::MAGIC.as_slice(), &frame].concat();
            conns.greet(&mut c, &out).await.ok()?;
            c
        }
    };
    let mut h = [0u8; fast::HEAD];
    if let Err(e) = c.read_exact(&mut h).await {
        return Some(Err(lost(e)));
    }
    let (code, len) = match fast::head(&h) {
        Ok(v) => v,
        Err(s) => return Some(Err(s)),
    };
    let mut body = vec![0u8; len];
    if let Err(e) = c.read_exact(&mut body).await {
        return Some(Err(lost(e)));
    }
    conns.keep(c);
    Some(fast::parse_reply(code, &body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// Serves one connection on `l` with `answer`, given the bytes it read
    /// up to the request's end.
    fn serve_once(l: UnixListener, answer: impl FnOnce(Vec<u8>) -> Vec<u8> + Send + 'static) {
        tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut got = vec![0u8; fast::MAGIC.len() + fast::HEAD];
            c.read_exact(&mut got).await.unwrap();
            let (_, len) = fast::head(got[fast::MAGIC.len()..].try_into().unwrap()).unwrap();
            let mut body = vec![0u8; len];
            c.read_exact(&mut body).await.unwrap();
            got.extend(body);
            let out = answer(got);
            c.write_all(&out).await.unwrap();
        });
    }

    /// A Start with a default request on a fresh set of connections.
    async fn start_on(path: &Path) -> Option<Result<Response<shimpb::StartResponse>, Status>> {
        call(
            &FastConns::new(path),
            fast::START,
            &shimpb::StartRequest::default(),
        )
        .await
    }

    fn listening() -> (tempfile::TempDir, std::path::PathBuf, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = UnixListener::bind(&path).unwrap();
        (dir, path, l)
    }

    /// The request goes out after the magic as one Start frame; the
    /// shim's reply (after its magic) is the call's result.
    #[tokio::test]
    async fn a_call_sends_one_frame_and_reads_the_reply() {
        let (_d, path, l) = listening();
        serve_once(l, |got| {
            assert_eq!(&got[..fast::MAGIC.len()], fast::MAGIC);
            let (tag, _) = fast::head(got[fast::MAGIC.len()..][..fast::HEAD].try_into().unwrap()).unwrap();
            assert_eq!(tag, fast::START);
            let req: shimpb::StartRequest = fast::decode(&got[fast::MAGIC.len() + fast::HEAD..]).unwrap();
            assert_eq!(req.id, "c1");
            let mut out = fast::MAGIC.to_vec();
            out.extend(fast::reply(Ok(Response::new(shimpb::StartResponse {
                pid: 7,
                ..Default::default()
            }))));
            out
        });
        let r = call::<_, shimpb::StartResponse>(
            &FastConns::new(&path),
            fast::START,
            &shimpb::StartRequest { id: "c1".into() },
        )
        .await
        .expect("a fast call");
        assert_eq!(r.unwrap().into_inner().pid, 7);
    }

    /// A shim's status comes back with its code.
    #[tokio::test]
    async fn a_refusal_keeps_its_code() {
        let (_d, path, l) = listening();
        serve_once(l, |_| {
            let mut out = fast::MAGIC.to_vec();
            out.extend(fast::reply::<shimpb::CreateResponse>(Err(
                Status::failed_precondition("no"),
            )));
            out
        });
        let s = call::<_, shimpb::CreateResponse>(
            &FastConns::new(&path),
            fast::CREATE,
            &shimpb::CreateRequest::default(),
        )
        .await
        .expect("a fast call")
        .unwrap_err();
        assert_eq!((s.code(), s.message()), (tonic::Code::FailedPrecondition, "no"));
    }

    /// No socket, or a shim that hangs up (or answers HTTP/2) instead of
    /// greeting: the call was not made, and the caller uses gRPC.
    #[tokio::test]
    async fn a_shim_without_the_fast_path_is_left_to_grpc() {
        let dir = tempfile::tempdir().unwrap();
        let none = call::<_, shimpb::StartResponse>(
            &FastConns::new(&dir.path().join("nope")),
            fast::START,
            &shimpb::StartRequest::default(),
        )
        .await;
        assert!(none.is_none());

        let (_d, path, l) = listening();
        serve_once(l, |_| Vec::new());
        let r = start_on(&path).await;
        assert!(r.is_none());

        let (_d, path, l) = listening();
        // An HTTP/2 GOAWAY frame, as a gRPC server might send on a bad preface.
        serve_once(l, |_| vec![0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let r = start_on(&path).await;
        assert!(r.is_none());
    }

    /// A shim that greeted and then died: the call failed, and is not made
    /// again over gRPC.
    #[tokio::test]
    async fn a_shim_lost_after_its_greeting_fails_the_call() {
        let (_d, path, l) = listening();
        serve_once(l, |_| fast::MAGIC.to_vec());
        let r = start_on(&path).await.expect("the call was made");
        assert_eq!(r.unwrap_err().code(), tonic::Code::Unavailable);
    }

    /// A finished call's connection serves the next; one opened ahead
    /// sends the magic alone, and its first call then sends only the frame.
    #[tokio::test]
    async fn connections_are_opened_ahead_and_kept() {
        let (_d, path, l) = listening();
        let server = tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut magic = [0u8; fast::MAGIC.len()];
            c.read_exact(&mut magic).await.unwrap();
            assert_eq!(&magic, fast::MAGIC);
            c.write_all(fast::MAGIC).await.unwrap();
            for n in 0..2u32 {
                let mut h = [0u8; fast::HEAD];
                c.read_exact(&mut h).await.unwrap();
                let (tag, len) = fast::head(&h).unwrap();
                assert_eq!(tag, fast::START);
                let mut body = vec![0u8; len];
                c.read_exact(&mut body).await.unwrap();
                let out = fast::reply(Ok(Response::new(shimpb::StartResponse {
                    pid: n,
                    ..Default::default()
                })));
                c.write_all(&out).await.unwrap();
            }
            // No second connection was made.
            tokio::time::timeout(std::time::Duration::from_millis(200), l.accept())
                .await
                .is_err()
        });
        let conns = FastConns::new(&path);
        conns.open_one().await;
        for n in 0..2 {
            let r = call::<_, shimpb::StartResponse>(&conns, fast::START, &shimpb::StartRequest::default())
                .await
                .expect("a fast call");
            assert_eq!(r.unwrap().into_inner().pid, n);
        }
        assert!(server.await.unwrap(), "a second connection was opened");
    }

    /// A shim that hung up on the magic is not tried again: later calls
    /// go straight to gRPC.
    #[tokio::test]
    async fn a_refusing_shim_is_asked_once() {
        let (_d, path, l) = listening();
        let server = tokio::spawn(async move {
            let (c, _) = l.accept().await.unwrap();
            drop(c);
            tokio::time::timeout(std::time::Duration::from_millis(200), l.accept())
                .await
                .is_err()
        });
        let conns = FastConns::new(&path);
        conns.open_one().await;
        assert!(conns.idle.lock().is_empty());
        let r = call::<_, shimpb::StartResponse>(&conns, fast::START, &shimpb::StartRequest::default()).await;
        assert!(r.is_none());
        assert!(server.await.unwrap(), "the shim was asked again");
    }
}
