//! A read-only registry over docker-registry's storage (the seeded test
//! images) that holds chosen layer blobs mid-download until the test lets
//! them go, and counts the downloads under way.
//!
//! A held blob sends its headers and its bytes but the last, one byte every
//! 50 ms: the puller keeps reading (and so keeps checking whether it should
//! stop) but can never finish. That makes "a pull cancelled mid-download"
//! and "at most N layers at a time" facts the test arranges, not races
//! against the pull's speed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Counts of the held blobs' downloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Held GETs begun.
    pub started: usize,
    /// Held GETs under way now.
    pub in_flight: usize,
    /// The most under way at once.
    pub max_in_flight: usize,
    /// Held GETs served in full (after a release).
    pub completed: usize,
    /// Held GETs whose client went away before the last byte.
    pub abandoned: usize,
}

#[derive(Default)]
struct Counters {
    started: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    completed: AtomicUsize,
    abandoned: AtomicUsize,
}

struct State {
    storage: PathBuf,
    held: Mutex<HashSet<String>>,
    /// One permit lets one held download finish.
    releases: tokio::sync::Semaphore,
    counts: Counters,
}

/// A running gated registry on a loopback port the kernel chose (the
/// server keeps its socket: no other process can take the port); stopped
/// on drop.
pub struct GatedRegistry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GatedRegistry {
    /// Serves `storage` (a docker-registry filesystem root, holding
    /// `docker/registry/v2`), on a thread of its own.
    pub fn start(storage: &Path) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind gated registry");
        std_listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = std_listener.local_addr().unwrap();
        let state = Arc::new(State {
            storage: storage.to_path_buf(),
            held: Mutex::new(HashSet::new()),
            releases: tokio::sync::Semaphore::new(0),
            counts: Counters::default(),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    let conn = tokio::select! {
                        _ = &mut stopped => return,
                        c = listener.accept() => c,
                    };
                    let Ok((stream, _)) = conn else { continue };
                    let state = served.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, std::convert::Infallible>(answer(state, req)) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        GatedRegistry {
            addr: addr.to_string(),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Holds these blobs (`sha256:<hex>`) from now on.
    pub fn hold(&self, digests: impl IntoIterator<Item = String>) {
        self.state.held.lock().unwrap().extend(digests);
    }

    /// Lets `n` held downloads (those waiting first, or the next ones to
    /// come) finish.
    pub fn release(&self, n: usize) {
        self.state.releases.add_permits(n);
    }

    /// The counts so far.
    pub fn stats(&self) -> GateStats {
        let c = &self.state.counts;
        GateStats {
            started: c.started.load(Ordering::SeqCst),
            in_flight: c.in_flight.load(Ordering::SeqCst),
            max_in_flight: c.max_in_flight.load(Ordering::SeqCst),
            completed: c.completed.load(Ordering::SeqCst),
            abandoned: c.abandoned.load(Ordering::SeqCst),
        }
    }

    /// Waits (polling, up to `timeout`) until `cond` holds for the counts;
    /// returns them, or panics naming `what` and the last counts.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&GateStats) -> bool,
    ) -> GateStats {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if cond(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "gated registry: {what}: not after {timeout:?}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for GatedRegistry {
    fn drop(&mut self) {
        // Held downloads end with the runtime.
        self.state.releases.close();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The layer digests of `library/<repo>:<tag>` in `storage` (a manifest,
/// not an index), bottom first.
pub fn layer_digests(storage: &Path, repo: &str, tag: &str) -> Vec<String> {
    let v2 = storage.join("docker/registry/v2");
    let link = v2.join(format!(
        "repositories/library/{repo}/_manifests/tags/{tag}/current/link"
    ));
    let digest = std::fs::read_to_string(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
    let path = blob_path(storage, digest.trim()).expect("manifest digest");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["layers"]
        .as_array()
        .expect("an image manifest")
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// `docker/registry/v2/blobs/sha256/<ab>/<hex>/data`, for a well-formed
/// digest only (the path comes from a request).
fn blob_path(storage: &Path, digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Some(storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    )))
}

/// A body fed by a channel: whole documents, or a blob held back.
struct ChanBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    len: u64,
}

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

fn whole(status: StatusCode, content_type: &str, body: Vec<u8>, head: bool) -> Response<ChanBody> {
    let len = body.len() as u64;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    if !head {
        let _ = tx.try_send(Bytes::from(body));
    }
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", len)
        .body(ChanBody {
            rx,
            len: if head { 0 } else { len },
        })
        .unwrap()
}

fn not_found() -> Response<ChanBody> {
    whole(
        StatusCode::NOT_FOUND,
        "application/json",
        br#"{"errors":[{"code":"NOT_FOUND"}]}"#.to_vec(),
        false,
    )
}

fn answer(state: Arc<State>, req: Request<Incoming>) -> Response<ChanBody> {
    let head = req.method() == hyper::Method::HEAD;
    if req.method() != hyper::Method::GET && !head {
        return whole(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"read-only".to_vec(),
            false,
        );
    }
    let path = req.uri().path().to_string();
    if path == "/v2/" || path == "/v2" {
        return whole(StatusCode::OK, "application/json", b"{}".to_vec(), head);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return not_found();
    };
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        let digest = if reference.starts_with("sha256:") {
            reference.to_string()
        } else {
            let link = state.storage.join(format!(
                "docker/registry/v2/repositories/{name}/_manifests/tags/{reference}/current/link"
            ));
            if name.contains("..") || reference.contains('/') || reference.contains("..") {
                return not_found();
            }
            match std::fs::read_to_string(link) {
                Ok(d) => d.trim().to_string(),
                Err(_) => return not_found(),
            }
        };
        let Some(doc) = blob_path(&state.storage, &digest).and_then(|p| std::fs::read(p).ok()) else {
            return not_found();
        };
        let media_type = serde_json::from_slice::<serde_json::Value>(&doc)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
        let mut resp = whole(StatusCode::OK, &media_type, doc, head);
        resp.headers_mut()
            .insert("docker-content-digest", digest.parse().unwrap());
        return resp;
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        let Some(data) = blob_path(&state.storage, digest).and_then(|p| std::fs::read(p).ok()) else {
            return not_found();
        };
        if head || !state.held.lock().unwrap().contains(digest) {
            return whole(StatusCode::OK, "application/octet-stream", data, head);
        }
        return held(state, data);
    }
    not_found()
}

/// Counts a held download for as long as it lasts.
struct InFlight(Arc<State>);

impl InFlight {
    fn begin(state: Arc<State>) -> Self {
        let c = &state.counts;
        c.started.fetch_add(1, Ordering::SeqCst);
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.counts.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A held blob: everything but the last byte, trickled, until a release
/// permit lets it finish or the client goes away.
fn held(state: Arc<State>, data: Vec<u8>) -> Response<ChanBody> {
    let len = data.len() as u64;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let flight = InFlight::begin(state.clone());
    tokio::spawn(async move {
        let _flight = flight;
        let data = Bytes::from(data);
        let hold_at = data.len().saturating_sub(1);
        let mut sent = 0;
        let finished = loop {
            tokio::select! {
                permit = state.releases.acquire() => {
                    let Ok(permit) = permit else { break false };
                    permit.forget();
                    break tx.send(data.slice(sent..)).await.is_ok();
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    // A byte now and then: the puller reads (and checks
                    // for a cancel) all along; a gone client fails the send.
                    if tx.is_closed() {
                        break false;
                    }
                    if sent < hold_at {
                        if tx.send(data.slice(sent..sent + 1)).await.is_err() {
                            break false;
                        }
                        sent += 1;
                    }
                }
            }
        };
        let c = &state.counts;
        if finished {
            c.completed.fetch_add(1, Ordering::SeqCst);
        } else {
            c.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .header("content-length", len)
        .body(ChanBody { rx, len })
        .unwrap()
}
