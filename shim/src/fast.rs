//! The shim's end of the API's fast path ([`berth_proto::fast`]): the
//! shim's one socket takes both kinds of connection. Each accepted
//! connection's first byte is peeked: 0 opens a fast connection, served
//! here by the same handlers as gRPC's; anything else (an HTTP/2 preface)
//! goes to the gRPC server untouched.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use berth_proto::fast;
use berth_proto::shim::shim_server::Shim;
use berth_proto::shim::{CreateRequest, CreateResponse, InfoResponse, StartRequest, StartResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

/// The calls the fast path carries; every [`Shim`] has them.
#[tonic::async_trait]
pub trait FastCalls: Send + Sync + 'static {
    /// `Shim/Create`.
    async fn create(&self, req: CreateRequest) -> Result<Response<CreateResponse>, Status>;
    /// `Shim/Start`.
    async fn start(&self, req: StartRequest) -> Result<Response<StartResponse>, Status>;
}

#[tonic::async_trait]
impl<S: Shim> FastCalls for S {
    async fn create(&self, req: CreateRequest) -> Result<Response<CreateResponse>, Status> {
        Shim::create(self, Request::new(req)).await
    }
    async fn start(&self, req: StartRequest) -> Result<Response<StartResponse>, Status> {
        Shim::start(self, Request::new(req)).await
    }
}

/// Accepts on `listener` for as long as the gRPC server takes connections
/// from `grpc`; accept errors go to it as its own listener's would.
pub async fn accept<S: FastCalls>(
    listener: UnixListener,
    svc: Arc<S>,
    grpc: mpsc::Sender<io::Result<UnixStream>>,
) {
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                if grpc.send(Err(e)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let (svc, grpc) = (svc.clone(), grpc.clone());
        tokio::spawn(async move {
            match first_byte(&conn).await {
                Ok(Some(0)) => {
                    if let Err(e) = serve(conn, svc).await {
                        tracing::debug!(error = %e, "fast connection ended");
                    }
                }
                // EOF or an error: gRPC's server sees and closes it.
                _ => {
                    let _ = grpc.send(Ok(conn)).await;
                }
            }
        });
    }
}

/// The connection's first byte, left in the socket; None at EOF.
async fn first_byte(conn: &UnixStream) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    loop {
        conn.readable().await?;
        let peeked = conn.try_io(tokio::io::Interest::READABLE, || {
            nix::sys::socket::recv(conn.as_raw_fd(), &mut b, nix::sys::socket::MsgFlags::MSG_PEEK)
                .map_err(io::Error::from)
        });
        match peeked {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

tokio::task_local! {
    /// What the call being served left to run once its reply is written.
    static AFTER_REPLY: AfterReply;
}

/// The jobs a call left for after its reply ([`after_reply`]). Dropped,
/// it hands them to the helper thread, so none is lost on any path (a
/// reply that could not be written, a connection task ended early): a job
/// may be what reports a container's exit.
#[derive(Default)]
struct AfterReply(std::cell::RefCell<Vec<Box<dyn FnOnce() + Send>>>);

impl Drop for AfterReply {
    fn drop(&mut self) {
        for job in self.0.take() {
            crate::threads::off_path(job);
        }
    }
}

/// Runs `job` on the helper thread ([`crate::threads::off_path`]) once the
/// reply to the fast call being served is written; outside one (a gRPC
/// call: tonic writes that reply) at once.
///
/// Why: work that need not come before a reply should not compete with it.
/// Under emulation, handing CreateContainer's log copiers to the helper
/// while the reply was still to be written cost the reply 2.5 ms (the
/// helper woke, and made its threads, on the CPU the reply needed); the
/// same hand-off with the helper kept from running at once cost 0.9 ms.
pub fn after_reply(job: impl FnOnce() + Send + 'static) {
    let mut job: Option<Box<dyn FnOnce() + Send>> = Some(Box::new(job));
    let _ = AFTER_REPLY.try_with(|jobs| {
        if let Some(j) = job.take() {
            jobs.0.borrow_mut().push(j);
        }
    });
    if let Some(job) = job {
        crate::threads::off_path(job);
    }
}

/// One fast connection: the magic, then calls one at a time until EOF. A
/// call runs to its end even if the peer goes away meanwhile, as the
/// handler's own clean-up expects.
async fn serve<S: FastCalls>(conn: UnixStream, svc: Arc<S>) -> io::Result<()> {
    let mut conn = BufReader::with_capacity(64 * 1024, conn);
    let mut magic = [0u8; fast::MAGIC.len()];
    conn.read_exact(&mut magic).await?;
    if &magic != fast::MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a fast connection",
        ));
    }
    // The magic back, at once: a caller that gets anything else knows no
    // call of its ran (a shim from before the fast path hangs up on the
    // magic) and makes them over gRPC instead.
    conn.get_mut().write_all(fast::MAGIC).await?;
    loop {
        let mut h = [0u8; fast::HEAD];
        match conn.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let (tag, len) = fast::head(&h)
            .map_err(|s| io::Error::new(io::ErrorKind::InvalidData, s.message().to_string()))?;
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).await?;
        let (out, jobs) = AFTER_REPLY
            .scope(AfterReply::default(), async {
                let out = call(&*svc, tag, &body).await;
                (
                    out,
                    AFTER_REPLY.with(|j| AfterReply(std::cell::RefCell::new(j.0.take()))),
                )
            })
            .await;
        let wrote = conn.get_mut().write_all(&out).await;
        // The reply is on its way (or cannot be): the call's jobs now.
        drop(jobs);
        wrote?;
    }
}

/// One call's reply frame.
async fn call<S: FastCalls>(svc: &S, tag: u8, body: &[u8]) -> Vec<u8> {
    match tag {
        fast::CREATE => fast::reply(match fast::decode(body) {
            Ok(req) => svc.create(req).await,
            Err(s) => Err(s),
        }),
        fast::START => fast::reply(match fast::decode(body) {
            Ok(req) => svc.start(req).await,
            Err(s) => Err(s),
        }),
        other => fast::reply::<InfoResponse>(Err(Status::unimplemented(format!("fast call tag {other}")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates answer with the request's id length as the pid; Start
    /// refuses with NotFound.
    struct Fake;

    #[tonic::async_trait]
    impl FastCalls for Fake {
        async fn create(&self, req: CreateRequest) -> Result<Response<CreateResponse>, Status> {
            Ok(Response::new(CreateResponse {
                pid: req.id.len() as u32,
                ..Default::default()
            }))
        }
        async fn start(&self, req: StartRequest) -> Result<Response<StartResponse>, Status> {
            Err(Status::not_found(format!("container {}", req.id)))
        }
    }

    fn listening() -> (tempfile::TempDir, std::path::PathBuf, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = UnixListener::bind(&path).unwrap();
        (dir, path, l)
    }

    async fn read_reply(c: &mut UnixStream) -> (u8, Vec<u8>) {
        let mut h = [0u8; fast::HEAD];
        c.read_exact(&mut h).await.unwrap();
        let (tag, len) = fast::head(&h).unwrap();
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).await.unwrap();
        (tag, body)
    }

    /// A fast connection gets the magic back, then a reply per call, in
    /// order, on the same connection; an HTTP/2 one goes to the gRPC side
    /// with its first bytes unread.
    #[tokio::test]
    async fn fast_connections_are_served_and_the_rest_go_to_grpc() {
        let (_d, path, l) = listening();
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(accept(l, Arc::new(Fake), tx));

        let mut c = UnixStream::connect(&path).await.unwrap();
        let create = CreateRequest {
            id: "abcde".into(),
            ..Default::default()
        };
        let mut out = fast::MAGIC.to_vec();
        out.extend(fast::request(fast::CREATE, &create).unwrap());
        c.write_all(&out).await.unwrap();
        let mut greeting = [0u8; fast::MAGIC.len()];
        c.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, fast::MAGIC);
        let (tag, body) = read_reply(&mut c).await;
        let created = fast::parse_reply::<CreateResponse>(tag, &body).unwrap();
        assert_eq!(created.into_inner().pid, 5);
        // A second call on the same connection, refused.
        c.write_all(&fast::request(fast::START, &StartRequest { id: "c9".into() }).unwrap())
            .await
            .unwrap();
        let (tag, body) = read_reply(&mut c).await;
        let s = fast::parse_reply::<StartResponse>(tag, &body).unwrap_err();
        assert_eq!((s.code(), s.message()), (tonic::Code::NotFound, "container c9"));
        // A tag nobody knows.
        c.write_all(&fast::frame(77, b"").unwrap()).await.unwrap();
        let (tag, _) = read_reply(&mut c).await;
        assert_eq!(tag, tonic::Code::Unimplemented as u8);

        let mut h2 = UnixStream::connect(&path).await.unwrap();
        h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut got = rx.recv().await.unwrap().unwrap();
        let mut preface = [0u8; 24];
        got.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }

    /// A frame claiming more than the limit ends the connection before its
    /// body is read; a wrong magic ends it at once, ungreeted.
    #[tokio::test]
    async fn oversized_frames_and_bad_magic_end_the_connection() {
        let (_d, path, l) = listening();
        let (tx, _rx) = mpsc::channel(4);
        tokio::spawn(accept(l, Arc::new(Fake), tx));

        let mut c = UnixStream::connect(&path).await.unwrap();
        let mut out = fast::MAGIC.to_vec();
        out.extend(((fast::MAX_BODY + 1) as u32).to_be_bytes());
        out.push(fast::CREATE);
        c.write_all(&out).await.unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        // The greeting, and no reply.
        assert_eq!(rest, fast::MAGIC, "{rest:?}");

        let mut c = UnixStream::connect(&path).await.unwrap();
        let mut bad = *fast::MAGIC;
        bad[1] = b'X';
        c.write_all(&bad).await.unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }

    /// Creates leave a job for after their reply (it records whether it
    /// ran before the handler's end), and take `delay` to answer.
    struct Leaves {
        ran: std::sync::mpsc::Sender<()>,
        delay: std::time::Duration,
    }

    #[tonic::async_trait]
    impl FastCalls for Leaves {
        async fn create(&self, _req: CreateRequest) -> Result<Response<CreateResponse>, Status> {
            let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (flag, tx) = (ran.clone(), self.ran.clone());
            after_reply(move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = tx.send(());
            });
            tokio::time::sleep(self.delay).await;
            // The pid says whether the job ran while the call was served.
            let early = ran.load(std::sync::atomic::Ordering::SeqCst);
            Ok(Response::new(CreateResponse {
                pid: u32::from(early),
                ..Default::default()
            }))
        }
        async fn start(&self, _req: StartRequest) -> Result<Response<StartResponse>, Status> {
            Err(Status::unimplemented("start"))
        }
    }

    /// A fast connection to a [`Leaves`] server taking `delay`, greeted,
    /// with one Create sent; and where the Create's job reports.
    async fn create_leaving_a_job(
        delay: std::time::Duration,
    ) -> (tempfile::TempDir, UnixStream, std::sync::mpsc::Receiver<()>) {
        let (d, path, l) = listening();
        let (tx, _rx) = mpsc::channel(4);
        let (ran, jobs) = std::sync::mpsc::channel();
        tokio::spawn(accept(l, Arc::new(Leaves { ran, delay }), tx));
        let mut c = UnixStream::connect(&path).await.unwrap();
        let mut out = fast::MAGIC.to_vec();
        out.extend(fast::request(fast::CREATE, &CreateRequest::default()).unwrap());
        c.write_all(&out).await.unwrap();
        let mut greeting = [0u8; fast::MAGIC.len()];
        c.read_exact(&mut greeting).await.unwrap();
        (d, c, jobs)
    }

    /// What a served call leaves for after its reply runs then, not while
    /// the call is served; outside a fast call, at once.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_calls_job_runs_after_its_reply_is_written() {
        let (_d, mut c, jobs) = create_leaving_a_job(std::time::Duration::from_millis(100)).await;
        let (tag, body) = read_reply(&mut c).await;
        let created = fast::parse_reply::<CreateResponse>(tag, &body).unwrap();
        assert_eq!(created.into_inner().pid, 0, "the job ran before the reply");
        jobs.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the job ran after the reply");

        let (tx, rx) = std::sync::mpsc::channel();
        after_reply(move || tx.send(()).unwrap());
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("outside a fast call, the job runs at once");
    }

    /// A reply that cannot be written (the caller hung up) still runs the
    /// call's jobs: one may be what reports a container's exit.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_calls_job_runs_when_its_reply_cannot_be_written() {
        let (_d, c, jobs) = create_leaving_a_job(std::time::Duration::from_millis(200)).await;
        drop(c);
        jobs.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the job ran though no reply was written");
    }
}
