//! A SPDY/3.1 session: many streams over one byte stream.
//!
//! Two tasks own the connection. The *reader* decodes frames and routes them
//! (data to the stream's bounded queue, replies, resets, pings, settings,
//! window updates); the *writer* encodes frames from one FIFO queue, so
//! header compression sees frames in wire order and a stream's FIN can never
//! overtake its data. Writers get backpressure from a cap on queued bytes.
//!
//! Flow control: SPDY/3.1 gives every stream and the session a 64 KiB send
//! window that the receiver reopens with WINDOW_UPDATE. Berth always sends
//! WINDOW_UPDATEs for what its readers consumed. On the send side it only
//! enforces the peer's windows once the peer shows it does flow control (a
//! SETTINGS INITIAL_WINDOW_SIZE or any WINDOW_UPDATE): the Go `spdystream`
//! library that kubelet, crictl and client-go use parses WINDOW_UPDATE but
//! never sends one, so a strict sender would stall every exec after 64 KiB.
//! Against such a peer the receive queues (bounded, per stream) and TCP
//! provide the backpressure instead, as they do between two spdystream ends.
//!
//! Every accepted stream must be read to its end or dropped: a stream whose
//! queue is full and still held makes the reader wait (that is the
//! backpressure), while a dropped one has its data discarded.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::frame::{goaway, rst, Codec, Frame, FLAG_FIN, FLAG_UNIDIRECTIONAL, SETTINGS_INITIAL_WINDOW_SIZE};
use crate::headers::Headers;

/// The SPDY/3.1 initial window, per stream and for the session.
pub const DEFAULT_WINDOW: i64 = 64 * 1024;
/// The largest DATA frame Berth sends.
const MAX_CHUNK: usize = 32 * 1024;
/// Queued-but-unwritten bytes above which stream writes wait.
const MAX_QUEUED: usize = 512 * 1024;
/// DATA frames buffered per stream before the reader waits for the app.
const STREAM_QUEUE: usize = 64;
/// Streams open at once; more SYN_STREAMs are refused (RST REFUSED_STREAM).
const MAX_STREAMS: usize = 1024;
/// kubelet's default streaming idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 60 * 60);
/// Control frames (PING replies, RST_STREAM, WINDOW_UPDATE, GOAWAY) queued
/// for the writer at once; a peer that makes us queue more while it does not
/// read is disconnected.
const MAX_CONTROL_QUEUED: usize = 4096;
/// Decompressed header bytes the peer's open streams may hold, together.
const MAX_HEADER_BYTES: usize = 1024 * 1024;
/// After `close()`, how long the reader waits for the peer to hang up.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Per-session settings that berthd takes from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session with no frame read or written for this long is closed
    /// (GOAWAY, then the connection is dropped). `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl Default for SessionConfig {
    /// kubelet's default `streamingConnectionIdleTimeout`: 4 hours.
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// Which end of the connection this is: it fixes stream and ping id parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens odd-numbered streams (kubelet, crictl, the tests' client).
    Client,
    /// Accepts the client's streams (berthd).
    Server,
}

/// The handle that opens streams and closes the session. Dropping it closes
/// the session gracefully (GOAWAY, then the write side is shut down).
pub struct Session {
    shared: Arc<Shared>,
}

/// Streams the peer opened, in the order it opened them. The channel needs
/// no bound of its own: every Stream in it counts against MAX_STREAMS and
/// MAX_HEADER_BYTES until it is dropped.
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<Stream>,
}

/// One SPDY stream: read what the peer sends, write what it should get.
/// `shutdown()` sends FIN; dropping the stream does the same.
pub struct Stream {
    id: u32,
    headers: Headers,
    reply_headers: Headers,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Result<Bytes, io::ErrorKind>>,
    pending: Bytes,
    /// Bytes read since the last WINDOW_UPDATE we sent.
    unacked: usize,
    read_done: bool,
    write_done: bool,
    /// The peer opened it: it counts in `State::peer_streams`, and its
    /// headers (this many bytes) in `State::header_bytes`, until dropped.
    peer_cost: Option<usize>,
}

struct Shared {
    role: Role,
    state: Mutex<State>,
    /// Woken when queued bytes drop, windows open or the session ends.
    queue: mpsc::UnboundedSender<Out>,
    closed: Notify,
}

enum Out {
    Frame(Frame),
    /// Flush and shut the write side down.
    Shutdown,
}

#[derive(Default)]
struct State {
    streams: HashMap<u32, Slot>,
    next_id: u32,
    next_ping: u32,
    /// Highest stream id the peer opened (GOAWAY's last-good id).
    last_peer_id: u32,
    queued: usize,
    /// Writers waiting for queue room or window.
    waiters: Vec<Waker>,
    peer_flow_control: bool,
    initial_send_window: i64,
    session_send_window: i64,
    /// Bytes received and not yet acknowledged with a session WINDOW_UPDATE.
    session_unacked: usize,
    pings: HashMap<u32, oneshot::Sender<()>>,
    goaway_sent: bool,
    goaway_received: bool,
    /// The connection is gone (EOF, write error, protocol error).
    dead: bool,
    /// The writer shut the write side down after GOAWAY.
    write_closed: bool,
    incoming: Option<mpsc::UnboundedSender<Stream>>,
    /// Control frames in the writer's queue (bounded by MAX_CONTROL_QUEUED).
    control_queued: usize,
    /// Peer-opened `Stream`s alive (queued in `Incoming` or held by the
    /// app), whatever their state: bounded by MAX_STREAMS.
    peer_streams: usize,
    /// Header bytes those streams hold: bounded by MAX_HEADER_BYTES.
    header_bytes: usize,
    /// The session was cut (flood, idle): the writer stops at once instead
    /// of flushing to a peer that may never read.
    aborted: bool,
    /// When a frame was last read or written.
    last_active: Option<tokio::time::Instant>,
}

struct Slot {
    data: Option<mpsc::Sender<Result<Bytes, io::ErrorKind>>>,
    reply: Option<oneshot::Sender<Result<Headers, io::ErrorKind>>>,
    send_window: i64,
    local_fin: bool,
    remote_fin: bool,
    reset: bool,
}

impl Slot {
    fn new(data: mpsc::Sender<Result<Bytes, io::ErrorKind>>, window: i64) -> Self {
        Slot {
            data: Some(data),
            reply: None,
            send_window: window,
            local_fin: false,
            remote_fin: false,
            reset: false,
        }
    }
}

impl Session {
    /// Starts a session over `io` (both tasks are spawned on the current
    /// tokio runtime). A server gets the peer's streams from [`Incoming`];
    /// a client usually ignores it.
    pub fn new<T>(io: T, role: Role) -> (Session, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::with_config(io, role, SessionConfig::default())
    }

    /// [`Session::new`] with explicit settings.
    pub fn with_config<T>(io: T, role: Role, config: SessionConfig) -> (Session, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (queue, queue_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let state = State {
            next_id: if role == Role::Client { 1 } else { 2 },
            next_ping: if role == Role::Client { 1 } else { 2 },
            initial_send_window: DEFAULT_WINDOW,
            session_send_window: DEFAULT_WINDOW,
            incoming: Some(in_tx),
            last_active: Some(tokio::time::Instant::now()),
            ..State::default()
        };
        let shared = Arc::new(Shared {
            role,
            state: Mutex::new(state),
            queue,
            closed: Notify::new(),
        });
        let (r, w) = tokio::io::split(io);
        tokio::spawn(writer(w, queue_rx, shared.clone()));
        tokio::spawn(reader(r, shared.clone()));
        if let Some(idle) = config.idle_timeout {
            tokio::spawn(idle_watchdog(shared.clone(), idle));
        }
        (Session { shared }, Incoming { rx: in_rx })
    }

    /// Opens a stream and waits for the peer's SYN_REPLY (as client-go does
    /// before it uses a stream). `fin` half-closes our side at once.
    pub async fn open(&self, headers: Headers, fin: bool) -> io::Result<Stream> {
        let (data_tx, data_rx) = mpsc::channel(STREAM_QUEUE);
        let (reply_tx, reply_rx) = oneshot::channel();
        let id = {
            let mut st = self.shared.lock();
            if st.dead || st.goaway_sent || st.goaway_received {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "SPDY session is closing",
                ));
            }
            let id = st.next_id;
            st.next_id += 2;
            let mut slot = Slot::new(data_tx, st.initial_send_window);
            slot.reply = Some(reply_tx);
            slot.local_fin = fin;
            st.streams.insert(id, slot);
            self.shared.send(
                &mut st,
                Frame::SynStream {
                    stream_id: id,
                    associated_to: 0,
                    priority: 0,
                    flags: if fin { FLAG_FIN } else { 0 },
                    headers: headers.clone(),
                },
            );
            id
        };
        let reply_headers = match reply_rx.await {
            Ok(Ok(h)) => h,
            Ok(Err(kind)) => return Err(io::Error::new(kind, format!("SPDY stream {id} was refused"))),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "SPDY session ended",
                ))
            }
        };
        Ok(Stream {
            id,
            headers,
            reply_headers,
            shared: self.shared.clone(),
            rx: data_rx,
            pending: Bytes::new(),
            unacked: 0,
            read_done: false,
            write_done: fin,
            peer_cost: None,
        })
    }

    /// Round-trip time of a PING.
    pub async fn ping(&self) -> io::Result<Duration> {
        let (tx, rx) = oneshot::channel();
        let start = Instant::now();
        {
            let mut st = self.shared.lock();
            if st.dead {
                return Err(io::ErrorKind::NotConnected.into());
            }
            let id = st.next_ping;
            st.next_ping = st.next_ping.wrapping_add(2);
            st.pings.insert(id, tx);
            self.shared.send(&mut st, Frame::Ping { id });
        }
        rx.await
            .map_err(|_| io::Error::from(io::ErrorKind::ConnectionAborted))?;
        Ok(start.elapsed())
    }

    /// Sends GOAWAY and shuts the write side down after everything queued so
    /// far; streams can no longer be opened. Idempotent.
    pub fn close(&self) {
        self.shared.close(goaway::OK);
    }

    /// Resolves when the connection is gone.
    pub async fn closed(&self) {
        loop {
            let notified = self.shared.closed.notified();
            if self.shared.lock().dead {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

impl Incoming {
    /// The next stream the peer opened; `None` once the session ends or the
    /// peer sent GOAWAY. Berth has already replied (SYN_REPLY) to it.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.rx.recv().await
    }
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers of the SYN_STREAM that opened the stream.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The peer's SYN_REPLY headers (empty for streams the peer opened).
    pub fn reply_headers(&self) -> &Headers {
        &self.reply_headers
    }

    /// Aborts the stream with RST_STREAM(`status`); see [`crate::frame::rst`].
    pub fn reset(mut self, status: u32) {
        self.write_done = true;
        self.read_done = true;
        let mut st = self.shared.lock();
        if let Some(slot) = st.streams.remove(&self.id) {
            if !slot.reset {
                self.shared.send(
                    &mut st,
                    Frame::RstStream {
                        stream_id: self.id,
                        status,
                    },
                );
            }
        }
    }

    fn ack(&mut self, n: usize) {
        self.unacked += n;
        if self.unacked < (DEFAULT_WINDOW / 2) as usize {
            return;
        }
        let delta = std::mem::take(&mut self.unacked) as u32;
        let mut st = self.shared.lock();
        if st
            .streams
            .get(&self.id)
            .is_some_and(|s| !s.remote_fin && !s.reset)
        {
            self.shared.send(
                &mut st,
                Frame::WindowUpdate {
                    stream_id: self.id,
                    delta,
                },
            );
        }
    }

    fn send_fin(&mut self) -> io::Result<()> {
        if self.write_done {
            return Ok(());
        }
        self.write_done = true;
        let mut st = self.shared.lock();
        let Some(slot) = st.streams.get_mut(&self.id) else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        if slot.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        slot.local_fin = true;
        let both = slot.remote_fin;
        if both {
            st.streams.remove(&self.id);
        }
        if !st.dead {
            self.shared.send(
                &mut st,
                Frame::Data {
                    stream_id: self.id,
                    flags: FLAG_FIN,
                    data: Bytes::new(),
                },
            );
        }
        Ok(())
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                self.ack(n);
                return Poll::Ready(Ok(()));
            }
            if self.read_done {
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(b))) => self.pending = b,
                Poll::Ready(Some(Err(kind))) => {
                    self.read_done = true;
                    return Poll::Ready(Err(io::Error::new(kind, "SPDY stream reset by peer")));
                }
                Poll::Ready(None) => {
                    self.read_done = true;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.write_done {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY stream half-closed",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut st = self.shared.lock();
        if st.dead || st.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY session closed",
            )));
        }
        let window = match st.streams.get(&self.id) {
            None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Some(s) if s.reset => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "SPDY stream reset",
                )))
            }
            Some(s) => s.send_window.min(st.session_send_window),
        };
        let mut n = buf.len().min(MAX_CHUNK);
        if st.peer_flow_control {
            if window <= 0 {
                st.waiters.push(cx.waker().clone());
                return Poll::Pending;
            }
            n = n.min(window as usize);
        }
        if st.queued >= MAX_QUEUED {
            st.waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        if let Some(slot) = st.streams.get_mut(&self.id) {
            slot.send_window -= n as i64;
        }
        st.session_send_window -= n as i64;
        self.shared.send(
            &mut st,
            Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: Bytes::copy_from_slice(&buf[..n]),
            },
        );
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The writer task writes and flushes as soon as frames are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.send_fin())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.send_fin();
        let mut st = self.shared.lock();
        if let Some(cost) = self.peer_cost.take() {
            st.peer_streams = st.peer_streams.saturating_sub(1);
            st.header_bytes = st.header_bytes.saturating_sub(cost);
        }
        if let Some(slot) = st.streams.get_mut(&self.id) {
            // Nobody reads any more: let the reader discard further data.
            slot.data = None;
            if slot.local_fin && (slot.remote_fin || slot.reset) {
                st.streams.remove(&self.id);
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame (under the state lock, so queue order is decision order).
    fn send(&self, st: &mut State, frame: Frame) {
        match &frame {
            Frame::Data { data, .. } => st.queued += data.len(),
            _ => st.control_queued += 1,
        }
        let _ = self.queue.send(Out::Frame(frame));
    }

    fn close(&self, status: u32) {
        let mut st = self.lock();
        if st.goaway_sent || st.dead {
            return;
        }
        st.goaway_sent = true;
        let last = st.last_peer_id;
        self.send(
            &mut st,
            Frame::GoAway {
                last_good_stream_id: last,
                status,
            },
        );
        let _ = self.queue.send(Out::Shutdown);
    }

    /// The connection is gone: wake everyone, end every stream.
    fn die(self: &Arc<Self>) {
        let mut st = self.lock();
        if st.dead {
            return;
        }
        st.dead = true;
        let incoming = st.incoming.take();
        for (_, slot) in st.streams.drain() {
            if let Some(r) = slot.reply {
                let _ = r.send(Err(io::ErrorKind::ConnectionAborted));
            }
            // Dropping `data` gives readers EOF after what is buffered.
        }
        st.pings.clear();
        for w in st.waiters.drain(..) {
            w.wake();
        }
        // Streams still queued for the app are dropped outside the lock:
        // their Drop takes it.
        drop(st);
        drop(incoming);
        // Let the writer flush what is queued and hang up its side too.
        let _ = self.queue.send(Out::Shutdown);
        self.closed.notify_waiters();
        // The writer flushes what is queued, but a peer that does not read
        // gets only a bounded grace before the connection is cut.
        let s = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CLOSE_GRACE).await;
            s.cut();
        });
    }

    /// Cuts the connection without flushing: for a peer that misbehaves or
    /// a session that sat idle past its timeout.
    fn abort(self: &Arc<Self>, why: &str) {
        tracing::warn!(reason = why, "SPDY session cut");
        self.cut();
        self.die();
    }

    /// Makes the writer stop without flushing.
    fn cut(&self) {
        self.lock().aborted = true;
        self.closed.notify_waiters();
    }

    /// Resolves once the connection is gone.
    async fn ended(&self) {
        loop {
            let notified = self.closed.notified();
            if self.lock().dead {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once the session was aborted.
    async fn aborted(&self) {
        loop {
            let notified = self.closed.notified();
            if self.lock().aborted {
                return;
            }
            notified.await;
        }
    }

    fn touch(&self) {
        self.lock().last_active = Some(tokio::time::Instant::now());
    }

    fn wake_writers(st: &mut State) {
        for w in st.waiters.drain(..) {
            w.wake();
        }
    }
}

async fn writer<W: AsyncWrite>(w: W, mut rx: mpsc::UnboundedReceiver<Out>, shared: Arc<Shared>) {
    let w = tokio::io::BufWriter::with_capacity(64 * 1024, w);
    let mut codec = Codec::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut w = std::pin::pin!(w);
    loop {
        let first = tokio::select! {
            item = rx.recv() => match item {
                Some(item) => item,
                None => break,
            },
            _ = shared.aborted() => return,
        };
        let mut item = Some(first);
        let mut written = 0usize;
        let mut control = 0usize;
        let mut shutdown = false;
        // Encode everything already queued, then write and flush once.
        while let Some(out) = item.take() {
            match out {
                Out::Frame(f) => {
                    match &f {
                        Frame::Data { data, .. } => written += data.len(),
                        _ => control += 1,
                    }
                    if let Err(e) = codec.encode(&f, &mut buf) {
                        tracing::warn!(error = %e, "SPDY frame could not be encoded");
                    }
                }
                Out::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
            if buf.len() >= 256 * 1024 {
                break;
            }
            item = rx.try_recv().ok();
        }
        let res = tokio::select! {
            res = async {
                w.write_all(&buf).await?;
                w.flush().await?;
                if shutdown {
                    w.shutdown().await?;
                }
                io::Result::Ok(())
            } => res,
            // A peer that stopped reading must not hold the writer forever.
            _ = shared.aborted() => return,
        };
        buf.clear();
        {
            let mut st = shared.lock();
            st.queued = st.queued.saturating_sub(written);
            st.control_queued = st.control_queued.saturating_sub(control);
            st.last_active = Some(tokio::time::Instant::now());
            st.write_closed |= shutdown;
            Shared::wake_writers(&mut st);
        }
        if res.is_err() {
            break;
        }
        if shutdown {
            // The reader ends when the peer hangs up; give it a bounded grace.
            let s = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(CLOSE_GRACE).await;
                s.die();
            });
            return;
        }
    }
    shared.die();
}

async fn reader<R: AsyncRead>(r: R, shared: Arc<Shared>) {
    let mut r = std::pin::pin!(r);
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match codec.decode(&buf) {
                Ok(Some((frame, n))) => {
                    buf.advance(n);
                    shared.touch();
                    if let Err(why) = handle(&shared, frame).await {
                        tracing::warn!(reason = why, "SPDY peer broke a limit; closing the session");
                        shared.close(goaway::PROTOCOL_ERROR);
                        shared.die();
                        return;
                    }
                    if shared.lock().control_queued > MAX_CONTROL_QUEUED {
                        shared.abort("the peer floods control frames and does not read the replies");
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "SPDY protocol error; closing the session");
                    shared.close(goaway::PROTOCOL_ERROR);
                    shared.die();
                    return;
                }
            }
        }
        let dead = shared.closed.notified();
        tokio::select! {
            n = r.read_buf(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = dead => {
                if shared.lock().dead { break; }
            }
        }
    }
    shared.die();
}

fn peer_opens_odd(role: Role) -> bool {
    role == Role::Server
}

/// Routes one frame; `Err` names a violation that ends the session.
async fn handle(shared: &Arc<Shared>, frame: Frame) -> Result<(), &'static str> {
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => return accept_stream(shared, stream_id, flags, headers),
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => {
            let mut st = shared.lock();
            if let Some(slot) = st.streams.get_mut(&stream_id) {
                if let Some(r) = slot.reply.take() {
                    let _ = r.send(Ok(headers));
                }
                if flags & FLAG_FIN != 0 {
                    remote_fin(&mut st, stream_id);
                }
            }
        }
        Frame::Headers { stream_id, flags, .. } => {
            if flags & FLAG_FIN != 0 {
                remote_fin(&mut shared.lock(), stream_id);
            }
        }
        Frame::RstStream { stream_id, status } => {
            let mut st = shared.lock();
            if let Some(mut slot) = st.streams.remove(&stream_id) {
                slot.reset = true;
                let kind = if status == rst::REFUSED_STREAM {
                    io::ErrorKind::ConnectionRefused
                } else {
                    io::ErrorKind::ConnectionReset
                };
                if let Some(r) = slot.reply.take() {
                    let _ = r.send(Err(kind));
                }
                if let Some(d) = slot.data.take() {
                    let _ = d.try_send(Err(kind));
                }
                Shared::wake_writers(&mut st);
            }
        }
        Frame::Settings { entries, .. } => {
            let mut st = shared.lock();
            for (_, id, value) in entries {
                if id == SETTINGS_INITIAL_WINDOW_SIZE {
                    let delta = i64::from(value) - st.initial_send_window;
                    st.initial_send_window = i64::from(value);
                    st.peer_flow_control = true;
                    for slot in st.streams.values_mut() {
                        slot.send_window += delta;
                    }
                }
            }
            Shared::wake_writers(&mut st);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut st = shared.lock();
            st.peer_flow_control = true;
            if stream_id == 0 {
                st.session_send_window += i64::from(delta);
            } else if let Some(slot) = st.streams.get_mut(&stream_id) {
                slot.send_window += i64::from(delta);
            }
            Shared::wake_writers(&mut st);
        }
        Frame::Ping { id } => {
            let mut st = shared.lock();
            let ours = (id % 2 == 1) == (shared.role == Role::Client);
            if ours {
                if let Some(w) = st.pings.remove(&id) {
                    let _ = w.send(());
                }
            } else {
                shared.send(&mut st, Frame::Ping { id });
            }
        }
        Frame::GoAway { .. } => {
            let mut st = shared.lock();
            st.goaway_received = true;
            let incoming = st.incoming.take();
            drop(st);
            drop(incoming);
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => data_frame(shared, stream_id, flags, data).await,
        Frame::Unknown { frame_type } => {
            tracing::debug!(frame_type, "ignoring an unknown SPDY control frame");
        }
    }
    Ok(())
}

fn accept_stream(shared: &Arc<Shared>, id: u32, flags: u8, headers: Headers) -> Result<(), &'static str> {
    let mut st = shared.lock();
    let parity_ok = (id % 2 == 1) == peer_opens_odd(shared.role);
    if !parity_ok || id <= st.last_peer_id {
        shared.send(
            &mut st,
            Frame::RstStream {
                stream_id: id,
                status: rst::PROTOCOL_ERROR,
            },
        );
        return Ok(());
    }
    let cost = headers.cost();
    if st.header_bytes.saturating_add(cost) > MAX_HEADER_BYTES {
        return Err("the peer's stream headers exceed the session's budget");
    }
    st.last_peer_id = id;
    // Every Stream the peer made us create counts, whether it is tracked
    // for data (`streams`) or only waits in `Incoming` (FIN'd, unidirectional,
    // reset): otherwise those pile up without a bound.
    let refuse = st.goaway_sent
        || st.incoming.is_none()
        || st.streams.len() >= MAX_STREAMS
        || st.peer_streams >= MAX_STREAMS;
    if refuse {
        shared.send(
            &mut st,
            Frame::RstStream {
                stream_id: id,
                status: rst::REFUSED_STREAM,
            },
        );
        return Ok(());
    }
    st.peer_streams += 1;
    st.header_bytes += cost;
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let mut slot = Slot::new(tx, st.initial_send_window);
    let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
    slot.local_fin = unidirectional;
    if flags & FLAG_FIN != 0 {
        slot.remote_fin = true;
        slot.data = None;
    }
    let stream = Stream {
        id,
        headers,
        reply_headers: Headers::new(),
        shared: shared.clone(),
        rx,
        pending: Bytes::new(),
        unacked: 0,
        read_done: false,
        write_done: unidirectional,
        peer_cost: Some(cost),
    };
    if slot.local_fin && slot.remote_fin {
        // Nothing can flow either way; hand it over without tracking it.
    } else {
        st.streams.insert(id, slot);
    }
    if !unidirectional {
        // client-go waits for the reply before it writes.
        shared.send(
            &mut st,
            Frame::SynReply {
                stream_id: id,
                flags: 0,
                headers: Headers::new(),
            },
        );
    }
    let incoming = st.incoming.clone();
    // A stream refused by a closed Incoming is dropped here, and its Drop
    // takes the lock: release it first.
    drop(st);
    if let Some(inc) = incoming {
        let _ = inc.send(stream);
    }
    Ok(())
}

/// Ends the session once nothing was read or written for `idle`: GOAWAY,
/// and the connection is cut if the peer does not hang up within the grace.
async fn idle_watchdog(shared: Arc<Shared>, idle: Duration) {
    loop {
        let (last, dead) = {
            let st = shared.lock();
            (st.last_active, st.dead)
        };
        if dead {
            return;
        }
        let deadline = last.unwrap_or_else(tokio::time::Instant::now) + idle;
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shared.ended() => return,
        }
    }
    tracing::info!(idle_secs = idle.as_secs(), "SPDY session idle; closing it");
    shared.close(goaway::OK);
    tokio::select! {
        _ = tokio::time::sleep(CLOSE_GRACE) => shared.abort("idle session did not hang up after GOAWAY"),
        _ = shared.ended() => {}
    }
}

fn remote_fin(st: &mut State, id: u32) {
    if let Some(slot) = st.streams.get_mut(&id) {
        slot.remote_fin = true;
        slot.data = None;
        if slot.local_fin {
            st.streams.remove(&id);
        }
    }
}

async fn data_frame(shared: &Arc<Shared>, id: u32, flags: u8, data: Bytes) {
    let len = data.len();
    let tx = {
        let mut st = shared.lock();
        // Session-level window: acknowledge what arrived, in batches.
        st.session_unacked += len;
        if st.session_unacked >= (DEFAULT_WINDOW / 2) as usize {
            let delta = std::mem::take(&mut st.session_unacked) as u32;
            shared.send(&mut st, Frame::WindowUpdate { stream_id: 0, delta });
        }
        let seen = id <= st.last_peer_id || id < st.next_id;
        match st.streams.get(&id) {
            Some(slot) if slot.remote_fin => {
                shared.send(
                    &mut st,
                    Frame::RstStream {
                        stream_id: id,
                        status: rst::STREAM_ALREADY_CLOSED,
                    },
                );
                return;
            }
            Some(slot) => slot.data.clone(),
            // A stream that just ended on our side: late data is dropped.
            None if seen => return,
            None => {
                shared.send(
                    &mut st,
                    Frame::RstStream {
                        stream_id: id,
                        status: rst::INVALID_STREAM,
                    },
                );
                return;
            }
        }
    };
    if let Some(tx) = tx {
        if len > 0 {
            // Waiting here is the backpressure on a peer that ignores our
            // windows; a dropped reader makes this fail, and we discard.
            let _ = tx.send(Ok(data)).await;
        }
    }
    if flags & FLAG_FIN != 0 {
        remote_fin(&mut shared.lock(), id);
    }
}

#[cfg(test)]
mod tests;
