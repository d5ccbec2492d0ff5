//! Session behaviour, against another Session and against a raw peer that
//! writes frames by hand (to act like spdystream, which does no flow
//! control, or like a misbehaving client).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::frame::{goaway, rst, Codec, Frame, FLAG_FIN, FLAG_UNIDIRECTIONAL};

const T: Duration = Duration::from_secs(5);

fn pair() -> ((Session, Incoming), (Session, Incoming)) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    (Session::new(a, Role::Client), Session::new(b, Role::Server))
}

/// Writes and reads frames by hand.
struct RawPeer {
    io: DuplexStream,
    codec: Codec,
    buf: BytesMut,
}

impl RawPeer {
    /// A raw client talking to a Berth server session.
    fn against_server() -> (RawPeer, Session, Incoming) {
        Self::against_server_with(1 << 20, SessionConfig::default())
    }

    /// A raw client over a pipe of `pipe_bytes` each way, to a server
    /// session with `config`.
    fn against_server_with(pipe_bytes: usize, config: SessionConfig) -> (RawPeer, Session, Incoming) {
        let (a, b) = tokio::io::duplex(pipe_bytes);
        let (s, inc) = Session::with_config(b, Role::Server, config);
        (
            RawPeer {
                io: a,
                codec: Codec::new(),
                buf: BytesMut::new(),
            },
            s,
            inc,
        )
    }

    async fn send(&mut self, f: Frame) {
        let mut out = Vec::new();
        self.codec.encode(&f, &mut out).unwrap();
        self.io.write_all(&out).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next frame, or None on EOF / after `wait`.
    async fn recv_within(&mut self, wait: Duration) -> Option<Frame> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some((f, n)) = self.codec.decode(&self.buf).unwrap() {
                    let _ = self.buf.split_to(n);
                    return Some(f);
                }
                if self.io.read_buf(&mut self.buf).await.unwrap() == 0 {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    async fn recv(&mut self) -> Frame {
        self.recv_within(T).await.expect("a frame")
    }

    /// The next frame that is not a WINDOW_UPDATE.
    async fn recv_skip_updates(&mut self) -> Frame {
        loop {
            match self.recv().await {
                Frame::WindowUpdate { .. } => continue,
                f => return f,
            }
        }
    }

    async fn open(&mut self, id: u32, kind: &str) {
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers::new().with("streamType", kind),
        })
        .await;
    }
}

fn syn(id: u32) -> Frame {
    Frame::SynStream {
        stream_id: id,
        associated_to: 0,
        priority: 0,
        flags: 0,
        headers: Headers::new(),
    }
}

#[tokio::test]
async fn a_stream_carries_data_both_ways_with_its_headers() {
    let ((client, _), (_server, mut incoming)) = pair();
    let srv = tokio::spawn(async move {
        let mut s = incoming.accept().await.unwrap();
        assert_eq!(s.headers().get("streamType"), Some("stdin"));
        assert_eq!(s.id(), 1);
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(b"world").await.unwrap();
        s.shutdown().await.unwrap();
        got
    });
    let mut c = client
        .open(Headers::new().with("streamType", "stdin"), false)
        .await
        .unwrap();
    c.write_all(b"hello").await.unwrap();
    c.shutdown().await.unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).await.unwrap();
    assert_eq!(srv.await.unwrap(), b"hello");
    assert_eq!(back, b"world");
    assert!(c.write_all(b"x").await.is_err(), "writes after FIN fail");
}

#[tokio::test]
async fn many_streams_move_megabytes_concurrently() {
    let ((client, _), (_server, mut incoming)) = pair();
    tokio::spawn(async move {
        while let Some(mut s) = incoming.accept().await {
            tokio::spawn(async move {
                // Echo.
                let mut buf = vec![0u8; 8192];
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n]).await.unwrap();
                }
                s.shutdown().await.unwrap();
            });
        }
    });
    let client = Arc::new(client);
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let s = client
                .open(Headers::new().with("n", &i.to_string()), false)
                .await
                .unwrap();
            let payload: Vec<u8> = (0..300_000u32).map(|x| (x as u8) ^ i).collect();
            let (mut r, mut w) = tokio::io::split(s);
            let p = payload.clone();
            let wr = tokio::spawn(async move {
                w.write_all(&p).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            wr.await.unwrap();
            assert_eq!(got.len(), payload.len());
            assert!(got == payload, "stream {i} corrupted");
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .unwrap()
            .unwrap();
    }
}

/// A peer that announces a small window gets no more than it allows until
/// it sends WINDOW_UPDATE.
#[tokio::test]
async fn sends_respect_a_flow_controlling_peers_window() {
    let (mut peer, _s, mut inc) = RawPeer::against_server();
    peer.send(Frame::Settings {
        flags: 0,
        entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 10)],
    })
    .await;
    peer.open(1, "stdout").await;
    let mut s = inc.accept().await.unwrap();
    let writer = tokio::spawn(async move {
        s.write_all(&[7u8; 25]).await.unwrap();
        s.shutdown().await.unwrap();
        s
    });
    assert!(matches!(peer.recv().await, Frame::SynReply { stream_id: 1, .. }));
    let mut got = 0;
    while got < 10 {
        match peer.recv().await {
            Frame::Data { data, .. } => got += data.len(),
            f => panic!("{f:?}"),
        }
    }
    assert_eq!(got, 10);
    assert_eq!(
        peer.recv_within(Duration::from_millis(300)).await,
        None,
        "window is exhausted"
    );
    peer.send(Frame::WindowUpdate {
        stream_id: 1,
        delta: 100,
    })
    .await;
    let mut fin = false;
    while !fin {
        match peer.recv().await {
            Frame::Data { data, flags, .. } => {
                got += data.len();
                fin = flags & FLAG_FIN != 0;
            }
            f => panic!("{f:?}"),
        }
    }
    assert_eq!(got, 25);
    writer.await.unwrap();
}

/// Like spdystream: never a SETTINGS or WINDOW_UPDATE. A megabyte still
/// flows (a strict 64 KiB window would stall here).
#[tokio::test]
async fn a_peer_without_flow_control_is_not_stalled() {
    let (mut peer, _s, mut inc) = RawPeer::against_server();
    peer.open(1, "stdout").await;
    let mut s = inc.accept().await.unwrap();
    tokio::spawn(async move {
        s.write_all(&vec![1u8; 1 << 20]).await.unwrap();
        s.shutdown().await.unwrap();
        // Keep the stream until the test ends.
        tokio::time::sleep(T).await;
    });
    let mut got = 0;
    loop {
        match peer.recv().await {
            Frame::SynReply { .. } => {}
            Frame::Data { data, flags, .. } => {
                got += data.len();
                if flags & FLAG_FIN != 0 {
                    break;
                }
            }
            f => panic!("{f:?}"),
        }
    }
    assert_eq!(got, 1 << 20);
}

/// What Berth's readers consume is acknowledged, per stream and for the
/// session, so a flow-controlling client keeps sending.
#[tokio::test]
async fn consumed_data_is_acknowledged_with_window_updates() {
    let (mut peer, _s, mut inc) = RawPeer::against_server();
    peer.open(1, "stdin").await;
    let mut s = inc.accept().await.unwrap();
    assert!(matches!(peer.recv().await, Frame::SynReply { .. }));
    for _ in 0..5 {
        peer.send(Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from(vec![0u8; 10_000]),
        })
        .await;
    }
    let mut buf = vec![0u8; 50_000];
    s.read_exact(&mut buf).await.unwrap();
    let (mut stream_acked, mut session_acked) = (0, 0);
    while stream_acked == 0 || session_acked == 0 {
        match peer.recv().await {
            Frame::WindowUpdate { stream_id: 0, delta } => session_acked += delta,
            Frame::WindowUpdate { stream_id: 1, delta } => stream_acked += delta,
            f => panic!("{f:?}"),
        }
    }
    assert!((32 * 1024..=50_000).contains(&stream_acked), "{stream_acked}");
    assert!((32 * 1024..=50_000).contains(&session_acked), "{session_acked}");
}

#[tokio::test]
async fn a_reset_stream_fails_reads_and_writes() {
    let (mut peer, _s, mut inc) = RawPeer::against_server();
    peer.open(1, "stdin").await;
    let mut s = inc.accept().await.unwrap();
    assert!(matches!(peer.recv().await, Frame::SynReply { .. }));
    peer.send(Frame::RstStream {
        stream_id: 1,
        status: rst::CANCEL,
    })
    .await;
    let mut b = [0u8; 4];
    let e = s.read(&mut b).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    let e = s.write_all(b"late").await.unwrap_err();
    assert!(matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    ));
}

#[tokio::test]
async fn our_reset_reaches_the_peer() {
    let ((client, _), (_server, mut incoming)) = pair();
    let srv = tokio::spawn(async move { incoming.accept().await.unwrap().reset(rst::REFUSED_STREAM) });
    let mut c = client.open(Headers::new(), false).await.unwrap();
    srv.await.unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        c.read(&mut b).await.unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );
}

#[tokio::test]
async fn pings_are_answered_both_ways() {
    let ((client, _), (server, _inc)) = pair();
    client.ping().await.unwrap();
    server.ping().await.unwrap();
    let (mut peer, _s, _inc) = RawPeer::against_server();
    peer.send(Frame::Ping { id: 5 }).await;
    assert_eq!(peer.recv().await, Frame::Ping { id: 5 });
}

#[tokio::test]
async fn streams_with_wrong_or_reused_ids_are_reset() {
    let (mut peer, _s, mut inc) = RawPeer::against_server();
    peer.send(syn(2)).await; // even: a server's id
    assert_eq!(
        peer.recv().await,
        Frame::RstStream {
            stream_id: 2,
            status: rst::PROTOCOL_ERROR
        }
    );
    peer.send(syn(5)).await;
    assert!(matches!(peer.recv().await, Frame::SynReply { stream_id: 5, .. }));
    peer.send(syn(3)).await; // lower than the last one
    assert_eq!(
        peer.recv().await,
        Frame::RstStream {
            stream_id: 3,
            status: rst::PROTOCOL_ERROR
        }
    );
    let five = inc.accept().await.unwrap();
    assert_eq!(five.id(), 5);
    // Data for a stream that never existed.
    peer.send(Frame::Data {
        stream_id: 99,
        flags: 0,
        data: Bytes::from_static(b"x"),
    })
    .await;
    assert_eq!(
        peer.recv().await,
        Frame::RstStream {
            stream_id: 99,
            status: rst::INVALID_STREAM
        }
    );
}

#[tokio::test]
async fn garbage_ends_the_session_with_a_protocol_error_goaway() {
    let (mut peer, s, mut inc) = RawPeer::against_server();
    peer.send_raw(&[0x80, 0x02, 0, 1, 0, 0, 0, 0]).await; // SPDY/2
    assert_eq!(
        peer.recv().await,
        Frame::GoAway {
            last_good_stream_id: 0,
            status: goaway::PROTOCOL_ERROR
        }
    );
    assert_eq!(peer.recv_within(T).await, None, "connection closed");
    tokio::time::timeout(T, s.closed()).await.unwrap();
    assert!(inc.accept().await.is_none());
}

#[tokio::test]
async fn close_sends_goaway_and_refuses_new_streams() {
    let ((client, _), (server, mut incoming)) = pair();
    let c1 = client.open(Headers::new(), false).await.unwrap();
    let s1 = incoming.accept().await.unwrap();
    client.close();
    assert!(client.open(Headers::new(), false).await.is_err());
    // The server learns of the GOAWAY: no more streams.
    assert!(tokio::time::timeout(T, incoming.accept())
        .await
        .unwrap()
        .is_none());
    drop((c1, s1));
    drop(server);
    tokio::time::timeout(T, client.closed()).await.unwrap();
}

/// Data on a stream nobody reads any more is discarded; it must not hold up
/// the other streams.
#[tokio::test]
async fn a_dropped_stream_does_not_block_the_others() {
    let (mut peer, _s, mut inc) = RawPeer::against_server();
    peer.open(1, "resize").await;
    peer.open(3, "stdin").await;
    let one = inc.accept().await.unwrap();
    let mut three = inc.accept().await.unwrap();
    drop(one);
    for _ in 0..(STREAM_QUEUE * 3) {
        peer.send(Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from_static(b"{\"Width\":1}"),
        })
        .await;
    }
    peer.send(Frame::Data {
        stream_id: 3,
        flags: FLAG_FIN,
        data: Bytes::from_static(b"ok"),
    })
    .await;
    let mut got = Vec::new();
    tokio::time::timeout(T, three.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"ok");
}

/// SYN_STREAM with FIN: the peer sends nothing, but we may still write.
#[tokio::test]
async fn a_stream_opened_with_fin_is_write_only_for_us() {
    let (mut peer, _s, mut inc) = RawPeer::against_server();
    peer.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        flags: FLAG_FIN,
        headers: Headers::new().with("streamType", "error"),
    })
    .await;
    let mut s = inc.accept().await.unwrap();
    let mut b = Vec::new();
    s.read_to_end(&mut b).await.unwrap();
    assert!(b.is_empty());
    s.write_all(b"{\"status\":\"Success\"}").await.unwrap();
    s.shutdown().await.unwrap();
    assert!(matches!(peer.recv_skip_updates().await, Frame::SynReply { .. }));
    match peer.recv_skip_updates().await {
        Frame::Data { data, .. } => assert_eq!(&data[..], b"{\"status\":\"Success\"}"),
        f => panic!("{f:?}"),
    }
    assert!(matches!(
        peer.recv_skip_updates().await,
        Frame::Data { flags: FLAG_FIN, .. }
    ));
}

#[tokio::test]
async fn a_vanished_peer_ends_every_stream() {
    let (peer, s, mut inc) = RawPeer::against_server();
    let mut peer = peer;
    peer.open(1, "stdout").await;
    let mut st = inc.accept().await.unwrap();
    drop(peer);
    let mut b = Vec::new();
    tokio::time::timeout(T, st.read_to_end(&mut b))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(T, s.closed()).await.unwrap();
    assert!(st.write_all(b"x").await.is_err());
}

/// A peer that sends PINGs and never reads what comes back: the replies
/// cannot be written, so they would pile up in memory without a bound.
/// Berth disconnects it once its control queue is full.
#[tokio::test]
async fn a_peer_that_floods_pings_without_reading_is_disconnected() {
    let (mut peer, s, _inc) = RawPeer::against_server_with(4096, SessionConfig::default());
    let mut one = Vec::new();
    peer.codec.encode(&Frame::Ping { id: 1 }, &mut one).unwrap();
    let batch: Vec<u8> = one.repeat(100);
    const LIMIT: usize = 200_000;
    let mut sent = 0usize;
    while sent < LIMIT {
        if peer.io.write_all(&batch).await.is_err() {
            break;
        }
        sent += 100;
    }
    assert!(
        sent < LIMIT,
        "all {sent} pings were taken in: nothing bounds the replies"
    );
    tokio::time::timeout(T, s.closed())
        .await
        .expect("the session ended");
    assert!(
        sent <= MAX_CONTROL_QUEUED + 2 * 4096,
        "{sent} pings went in before the disconnect"
    );
}

/// Streams opened with FIN, or unidirectional ones, still hold a Stream the
/// app has not taken (and its headers): they count like any other.
#[tokio::test]
async fn fin_and_unidirectional_syn_streams_count_against_the_stream_limit() {
    let (mut peer, _s, mut inc) = RawPeer::against_server();
    let mut id = 1;
    for n in 0..MAX_STREAMS {
        let flags = if n % 2 == 0 {
            FLAG_FIN
        } else {
            FLAG_FIN | FLAG_UNIDIRECTIONAL
        };
        peer.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags,
            headers: Headers::new().with("streamType", "error"),
        })
        .await;
        id += 2;
    }
    peer.send(Frame::SynStream {
        stream_id: id,
        associated_to: 0,
        priority: 0,
        flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
        headers: Headers::new(),
    })
    .await;
    loop {
        match peer.recv().await {
            Frame::SynReply { .. } => continue,
            f => {
                assert_eq!(
                    f,
                    Frame::RstStream {
                        stream_id: id,
                        status: rst::REFUSED_STREAM
                    }
                );
                break;
            }
        }
    }
    // Once the app has taken and dropped one, there is room again.
    drop(inc.accept().await.unwrap());
    id += 2;
    peer.send(Frame::SynStream {
        stream_id: id,
        associated_to: 0,
        priority: 0,
        flags: FLAG_FIN,
        headers: Headers::new(),
    })
    .await;
    // (The dropped stream's FIN comes first.)
    loop {
        match peer.recv().await {
            Frame::Data { .. } => continue,
            f => {
                assert!(
                    matches!(f, Frame::SynReply { stream_id, .. } if stream_id == id),
                    "{f:?}"
                );
                break;
            }
        }
    }
}

/// A few hundred bytes of zlib inflate to a 200 KB header; the headers of
/// the streams a session holds are bounded, and a peer that goes past the
/// budget loses the session.
#[tokio::test]
async fn header_blocks_past_the_session_budget_end_the_session() {
    let (mut peer, s, _inc) = RawPeer::against_server();
    let big = "a".repeat(200_000);
    let fits = MAX_HEADER_BYTES / Headers::new().with("x-bomb", &big).cost();
    let mut id = 1;
    for _ in 0..fits + 2 {
        peer.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers::new().with("x-bomb", &big),
        })
        .await;
        id += 2;
    }
    loop {
        match peer.recv().await {
            Frame::SynReply { .. } => continue,
            f => {
                assert_eq!(
                    f,
                    Frame::GoAway {
                        last_good_stream_id: 2 * fits as u32 - 1,
                        status: goaway::PROTOCOL_ERROR
                    }
                );
                break;
            }
        }
    }
    tokio::time::timeout(T, s.closed())
        .await
        .expect("the session ended");
}

/// A session nobody uses ends after the configured idle timeout: GOAWAY,
/// then the connection closes.
#[tokio::test]
async fn an_idle_session_ends_after_its_timeout() {
    let config = SessionConfig {
        idle_timeout: Some(Duration::from_millis(200)),
    };
    let (mut peer, s, mut inc) = RawPeer::against_server_with(1 << 16, config);
    peer.open(1, "stdout").await;
    let _held = inc.accept().await.unwrap();
    assert!(matches!(peer.recv().await, Frame::SynReply { stream_id: 1, .. }));
    assert_eq!(
        peer.recv().await,
        Frame::GoAway {
            last_good_stream_id: 1,
            status: goaway::OK
        }
    );
    tokio::time::timeout(T * 3, s.closed())
        .await
        .expect("the session ended");
}
