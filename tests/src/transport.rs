//! The streaming transports kubelet and crictl speak to the streaming
//! server, behind one [`Transport`], and the checks that are the same on
//! each: vm_spdy and vm_stream instantiate them once per transport, so a
//! case is written once and the suites differ only in what one transport
//! alone has (SPDY flow control, WebSocket channel numbers, token refusals).

use std::time::{Duration, Instant};

use berth_proto::cri;
use tokio::io::AsyncWriteExt;

use crate::{median, spdy, start_pod_with_container, stream, Berthd, CriClient};

/// How long one streamed operation may take before the check fails.
const T: Duration = Duration::from_secs(30);
/// How long a WebSocket session is read for its output (as vm_stream reads).
const WS_T: Duration = Duration::from_secs(20);

/// A streaming transport, as client-go's executors and port-forwarders pick it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// SPDY/3.1, kubelet's and crictl's default.
    Spdy,
    /// Port-forward's SPDY session inside binary WebSocket messages
    /// (`crictl port-forward --transport websocket`, kubectl >= 1.30).
    SpdyTunnel,
    /// WebSocket channels (`v4`/`v5.channel.k8s.io`, crictl `--transport websocket`).
    WebSocket,
}

impl Transport {
    /// Runs `cmd` in container `id` to its end with stdout (no tty, no
    /// stdin): (stdout, exit code).
    pub async fn exec(self, c: &mut CriClient, id: &str, cmd: &[&str]) -> (String, Option<i32>) {
        match self {
            Transport::Spdy | Transport::SpdyTunnel => {
                let out = spdy::exec(c, id, cmd).await;
                let code = out.exit_code().ok();
                (String::from_utf8_lossy(&out.stdout).into_owned(), code)
            }
            Transport::WebSocket => {
                let out = stream::exec(c, id, cmd, stream::REMOTE_PROTOCOLS).await;
                let code = out.exit_code();
                (out.stdout, code)
            }
        }
    }

    /// Opens one port-forward session on `url` (a PortForward URL for
    /// `port`) with a connection per path, sends `GET path` on each at once
    /// and returns per connection (the response, the error stream's text).
    /// A SPDY session stays open for more connections: one later connection
    /// (`GET /`) is made after the others and returned last.
    pub async fn forward_gets(self, url: &str, port: u16, paths: &[&str]) -> Vec<(String, String)> {
        match self {
            Transport::Spdy | Transport::SpdyTunnel => {
                let mut pf = if self == Transport::Spdy {
                    spdy::PortForward::start(url).await.expect("upgrade")
                } else {
                    let pf = tokio::time::timeout(T, spdy::PortForward::start_tunnelled(url))
                        .await
                        .expect("upgrade in time")
                        .expect("WebSocket upgrade with the tunnel protocol");
                    assert_eq!(pf.up.protocol, spdy::TUNNEL_PROTOCOL);
                    pf
                };
                let mut conns = Vec::new();
                for _ in paths {
                    conns.push(pf.connect(port).await.unwrap());
                }
                let gets = conns
                    .iter_mut()
                    .zip(paths)
                    .map(|(f, p)| spdy::http_get(&mut f.data, p));
                let bodies = futures_util::future::join_all(gets).await;
                let mut out = Vec::new();
                for (f, body) in conns.into_iter().zip(bodies) {
                    out.push((body.unwrap(), f.error_text().await));
                }
                let mut later = pf.connect(port).await.unwrap();
                let body = spdy::http_get(&mut later.data, "/").await.unwrap();
                out.push((body, later.error_text().await));
                out
            }
            Transport::WebSocket => {
                // Connection i is the channel pair (2i, 2i+1), each first
                // announcing its port.
                let query: Vec<String> = paths.iter().map(|_| format!("port={port}")).collect();
                let mut ws =
                    stream::WsClient::connect(&format!("{url}?{}", query.join("&")), &["v4.channel.k8s.io"])
                        .await
                        .expect("connect");
                let mut firsts = Vec::new();
                for _ in 0..2 * paths.len() {
                    firsts.push(ws.recv().await.expect("port announcement"));
                }
                let want: Vec<(u8, Vec<u8>)> = (0..2 * paths.len() as u8)
                    .map(|ch| (ch, port.to_le_bytes().to_vec()))
                    .collect();
                assert_eq!(firsts, want);
                for (i, p) in paths.iter().enumerate() {
                    let get = format!("GET {p} HTTP/1.0\r\n\r\n");
                    ws.send(2 * i as u8, get.as_bytes()).await.unwrap();
                }
                let got = ws.collect(WS_T).await;
                let text = |ch: u8| {
                    String::from_utf8_lossy(got.get(&ch).map(Vec::as_slice).unwrap_or_default()).into_owned()
                };
                (0..paths.len() as u8)
                    .map(|i| (text(2 * i), text(2 * i + 1)))
                    .collect()
            }
        }
    }

    /// Connects once through `url` (a PortForward URL for `port`) without
    /// sending anything; returns what the error stream says.
    pub async fn forward_error(self, url: &str, port: u16) -> String {
        match self {
            Transport::Spdy | Transport::SpdyTunnel => {
                let mut pf = if self == Transport::Spdy {
                    spdy::PortForward::start(url).await.expect("upgrade")
                } else {
                    spdy::PortForward::start_tunnelled(url).await.expect("upgrade")
                };
                let mut refused = pf.connect(port).await.unwrap();
                let _ = refused.data.shutdown().await;
                refused.error_text().await
            }
            Transport::WebSocket => {
                let mut ws = stream::WsClient::connect(url, &["v4.channel.k8s.io"])
                    .await
                    .expect("connect");
                let got = ws.collect(WS_T).await;
                // The error channel's first two bytes announce the port.
                String::from_utf8_lossy(got[&1].get(2..).unwrap_or_default()).into_owned()
            }
        }
    }
}

/// The URL of a PortForward RPC for `port` of pod `sb`.
async fn port_forward_url(c: &mut CriClient, sb: &str, port: u16) -> String {
    c.runtime
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: sb.to_string(),
            port: vec![port as i32],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url
}

/// Port-forward into a busybox httpd in a pod: two connections at once,
/// both answered and with nothing on their error streams (plus a later one
/// on SPDY sessions), and a connection to port 9, where nothing listens,
/// told so on its error stream. Returns the pod (berthd, client, pod id,
/// container id) still running, for the transport's own checks.
pub async fn port_forward_to_httpd(t: Transport, name: &str) -> (Berthd, CriClient, String, String) {
    let greeting = format!("hello-from-{name}");
    let httpd =
        format!("mkdir -p /www && echo {greeting} > /www/index.html && exec httpd -f -p 8080 -h /www");
    let (b, mut c, sb, id) = start_pod_with_container(name, "", &["sh", "-c", &httpd], |_| {}).await;
    // httpd listens on the pod's loopback only from inside the pod.
    let deadline = Instant::now() + T;
    while !matches!(
        c.exec(&id, &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"])
            .await,
        Ok((0, _))
    ) {
        assert!(Instant::now() < deadline, "httpd did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = port_forward_url(&mut c, &sb, 8080).await;
    let got = t.forward_gets(&url, 8080, &["/index.html", "/"]).await;
    assert!(got.len() >= 2, "{got:?}");
    for (body, err) in &got {
        assert!(body.starts_with("HTTP/1."), "{t:?}: {body:?}");
        assert!(body.contains(&greeting), "{t:?}: {body:?}");
        assert_eq!(err, "", "{t:?}");
    }
    let url = port_forward_url(&mut c, &sb, 9).await;
    let err = t.forward_error(&url, 9).await;
    assert!(err.contains("error forwarding port 9"), "{t:?}: {err:?}");
    (b, c, sb, id)
}

/// `echo hello` 20 times through ExecSync and through a streamed exec;
/// prints both medians (a figure for the log, not an assertion).
pub async fn latency_exec_sync_vs_streamed_exec(t: Transport, name: &str, what: &str) {
    let (_b, mut c, sb, id) = start_pod_with_container(name, "", &["sleep", "3600"], |_| {}).await;
    const RUNS: usize = 20;
    let (mut sync, mut streamed) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let (code, out) = c.exec(&id, &["echo", "hello"]).await.unwrap();
        sync.push(t0.elapsed());
        assert_eq!((code, out.as_str()), (0, "hello\n"));

        let t0 = Instant::now();
        let out = t.exec(&mut c, &id, &["echo", "hello"]).await;
        streamed.push(t0.elapsed());
        assert_eq!((out.0.as_str(), out.1), ("hello\n", Some(0)));
    }
    let (ms, mst) = (median(sync), median(streamed));
    println!(
        "LATENCY echo hello over {RUNS} runs: ExecSync median {:.1} ms, streamed exec (Exec RPC + {what}) median {:.1} ms",
        ms.as_secs_f64() * 1e3,
        mst.as_secs_f64() * 1e3
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}
