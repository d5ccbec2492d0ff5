//! Streaming exec, attach and port-forward through the URLs of the CRI
//! Exec/Attach/PortForward RPCs, spoken over WebSocket like client-go's
//! WebSocket executor (crictl `--transport websocket`): output and exit
//! codes, TTY with stdin and resize, two attachers, port-forward to a
//! busybox httpd, token refusals, and the ExecSync vs streamed exec latency.
//!
//! The port-forward and latency cases are written once for every transport
//! (`berth_tests::transport`); this suite instantiates them for WebSocket.
//!
//! Runs inside the VM (`hack/vm`), with `--test-threads=1`.

use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::stream::*;
use berth_tests::transport::{latency_exec_sync_vs_streamed_exec, port_forward_to_httpd, Transport};
use berth_tests::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn streaming_exec_echo_hello_without_tty() {
    let (_b, mut c, sb, id) = start_pod_with_container("exec-echo", "", &["sleep", "3600"], |_| {}).await;
    let out = exec(
        &mut c,
        &id,
        &["sh", "-c", "echo hello; echo oops >&2"],
        REMOTE_PROTOCOLS,
    )
    .await;
    assert_eq!(out.stdout, "hello\n", "{out:?}");
    assert_eq!(out.stderr, "oops\n", "{out:?}");
    assert_eq!(out.error_text, r#"{"metadata":{},"status":"Success"}"#);
    assert_eq!(out.exit_code(), Some(0));

    // The base64 variant carries the same bytes in text messages.
    let out = exec(&mut c, &id, &["echo", "hello"], &["v4.base64.channel.k8s.io"]).await;
    assert_eq!(
        (out.stdout.as_str(), out.exit_code()),
        ("hello\n", Some(0)),
        "{out:?}"
    );

    // Pre-v4 clients get no Status on success.
    let out = exec(&mut c, &id, &["echo", "hello"], &["channel.k8s.io"]).await;
    assert_eq!(
        (out.stdout.as_str(), out.error_text.as_str()),
        ("hello\n", ""),
        "{out:?}"
    );

    // The exec'd process is the container's: same cgroup and namespaces.
    let out = exec(
        &mut c,
        &id,
        &["sh", "-c", "cat /proc/self/cgroup; readlink /proc/self/ns/net"],
        REMOTE_PROTOCOLS,
    )
    .await;
    let (_, sync) = c
        .exec(
            &id,
            &["sh", "-c", "cat /proc/self/cgroup; readlink /proc/self/ns/net"],
        )
        .await
        .unwrap();
    assert_eq!(
        out.stdout, sync,
        "streamed exec and ExecSync run in the same place"
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn streaming_exec_failing_command_reports_its_exit_code() {
    let (_b, mut c, sb, id) = start_pod_with_container("exec-fail", "", &["sleep", "3600"], |_| {}).await;
    let out = exec(
        &mut c,
        &id,
        &["sh", "-c", "echo partial; exit 3"],
        REMOTE_PROTOCOLS,
    )
    .await;
    assert_eq!(out.stdout, "partial\n");
    let s = out.status.clone().expect("status JSON");
    assert_eq!(s["status"], "Failure", "{s}");
    assert_eq!(s["reason"], "NonZeroExitCode", "{s}");
    assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode", "{s}");
    assert_eq!(s["details"]["causes"][0]["message"], "3", "{s}");
    assert_eq!(out.exit_code(), Some(3));

    // A command that cannot be exec'd is an internal error naming it.
    let out = exec(&mut c, &id, &["/no/such/binary"], REMOTE_PROTOCOLS).await;
    let s = out.status.clone().expect("status JSON");
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("Failure"), Some("InternalError")),
        "{s}"
    );
    assert!(out.error_text.contains("/no/such/binary"), "{s}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn streaming_exec_with_tty_stdin_and_resize() {
    let (_b, mut c, sb, id) = start_pod_with_container("exec-tty", "", &["sleep", "3600"], |_| {}).await;
    let url = c.exec_url(exec_request(&id, &["sh"], true, true)).await;
    let mut ws = WsClient::connect(&url, REMOTE_PROTOCOLS).await.expect("connect");
    assert_eq!(ws.protocol.as_deref(), Some("v5.channel.k8s.io"));
    ws.send(4, &resize_message(100, 30)).await.unwrap();
    ws.send(0, b"tty; stty size; echo sum-$((40+2))\n").await.unwrap();
    let seen = ws.read_until(1, "sum-42", T).await;
    assert!(seen.contains("30 100"), "stty size after the resize: {seen:?}");
    assert!(
        seen.contains("/dev/pts/"),
        "a terminal from the container's devpts: {seen:?}"
    );
    // A later resize reaches the same terminal.
    ws.send(4, &resize_message(132, 43)).await.unwrap();
    ws.send(0, b"stty size; echo mark-$((1+1))\n").await.unwrap();
    let seen = ws.read_until(1, "mark-2", T).await;
    assert!(seen.contains("43 132"), "{seen:?}");
    ws.send(0, b"exit 7\n").await.unwrap();
    let out = ExecOutput::from_channels(ws.collect(T).await);
    assert_eq!(out.exit_code(), Some(7), "{out:?}");

    // Without a terminal, stdin is a pipe; the v5 close signal is its EOF.
    let url = c
        .exec_url(exec_request(
            &id,
            &["sh", "-c", "read line; echo got-$line; cat"],
            false,
            true,
        ))
        .await;
    let mut ws = WsClient::connect(&url, REMOTE_PROTOCOLS).await.expect("connect");
    ws.send(0, b"first\nrest of it").await.unwrap();
    ws.close_channel(0).await.unwrap();
    let out = ExecOutput::from_channels(ws.collect(T).await);
    assert_eq!(out.stdout, "got-first\nrest of it", "{out:?}");
    assert_eq!(out.exit_code(), Some(0), "{out:?}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Numbers a counter container printed, from one attacher's stdout.
fn numbers(out: &str) -> Vec<u64> {
    out.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Reads an attach session's stdout until `done` holds for the numbers on
/// its complete lines; fails if the session ends or stays silent for `T`.
async fn read_counter_until(ws: &mut WsClient, done: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let mut out = String::new();
    loop {
        let n = numbers(&out[..out.rfind('\n').map_or(0, |i| i + 1)]);
        if done(&n) {
            return n;
        }
        match tokio::time::timeout(T, ws.recv()).await {
            Ok(Some((1, data))) => out.push_str(&String::from_utf8_lossy(&data)),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the attach session ended: {out:?}"),
            Err(_) => panic!("no output for {T:?}: {out:?}"),
        }
    }
}

#[tokio::test]
async fn streaming_attach_two_attachers_to_a_counter() {
    let counter = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.2; done";
    let (b, mut c, sb, id) = start_pod_with_container("attach", "", &["sh", "-c", counter], |_| {}).await;
    let attach = cri::AttachRequest {
        container_id: id.clone(),
        stdin: false,
        tty: false,
        stdout: true,
        stderr: true,
    };
    let mut clients = Vec::new();
    for _ in 0..2 {
        let url = c
            .runtime
            .attach(attach.clone())
            .await
            .expect("Attach")
            .into_inner()
            .url;
        assert!(url.contains("/attach/"), "{url}");
        clients.push(WsClient::connect(&url, REMOTE_PROTOCOLS).await.expect("connect"));
    }
    // Read one after the other: the first attacher until it saw five
    // lines, then the second, whose output waited for it meanwhile, until
    // it reaches the first one's last line: both saw the same moments of
    // the same container, and neither lost a line.
    let first = read_counter_until(&mut clients[0], |n| n.len() >= 5).await;
    let last = first[first.len() - 1];
    let second = read_counter_until(&mut clients[1], |n| n.contains(&last)).await;
    let seen = [first, second];
    for n in &seen {
        assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "consecutive: {seen:?}");
    }
    // The log still got everything.
    let log = log_lines(&b.log_dir().join("attach.log"));
    assert!(numbers(&log.join("\n")).contains(&seen[1][0]), "{log:?}");
    c.stop(&id, 0).await.unwrap();
    // Stopping the container ends both attach sessions with Success.
    for ws in &mut clients {
        let out = ExecOutput::from_channels(ws.collect(T).await);
        assert_eq!(out.exit_code(), Some(0), "{out:?}");
    }
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn streaming_attach_stdin_reaches_the_container() {
    let (_b, mut c, sb, id) = start_pod_with_container(
        "attach-in",
        "",
        &["sh", "-c", "read l; echo got-$l; sleep 1"],
        |cfg| {
            cfg.stdin = true;
            cfg.stdin_once = true;
        },
    )
    .await;
    let url = c
        .runtime
        .attach(cri::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect("Attach")
        .into_inner()
        .url;
    let mut ws = WsClient::connect(&url, REMOTE_PROTOCOLS).await.expect("connect");
    ws.send(0, b"hello\n").await.unwrap();
    let seen = ws.read_until(1, "got-hello", T).await;
    assert!(seen.contains("got-hello"), "{seen:?}");
    let out = ExecOutput::from_channels(ws.collect(T).await);
    assert_eq!(
        out.exit_code(),
        Some(0),
        "attach ends when the container exits: {out:?}"
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn streaming_port_forward_to_httpd_in_the_pod() {
    let (_b, mut c, sb, _id) = port_forward_to_httpd(Transport::WebSocket, "pf").await;
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn streaming_tokens_are_refused_after_use_or_expiry() {
    let (_b, mut c, sb, id) = start_pod_with_container(
        "tokens",
        "stream_token_ttl_ms = 1000\n",
        &["sleep", "3600"],
        |_| {},
    )
    .await;
    let url = c.exec_url(exec_request(&id, &["true"], false, false)).await;
    let mut ws = WsClient::connect(&url, REMOTE_PROTOCOLS)
        .await
        .expect("first use");
    assert_eq!(
        ExecOutput::from_channels(ws.collect(T).await).exit_code(),
        Some(0)
    );
    let reused = WsClient::connect(&url, REMOTE_PROTOCOLS)
        .await
        .err()
        .expect("reuse refused");
    assert_eq!(reused.status, 410, "{reused:?}");
    assert!(reused.body.contains("already used"), "{reused:?}");

    let issued = Instant::now();
    let url = c.exec_url(exec_request(&id, &["true"], false, false)).await;
    // The condition is the token's age: past its TTL (1000 ms, configured
    // above) by a margin. A slow machine only makes it older, never younger.
    tokio::time::sleep_until((issued + Duration::from_millis(1500)).into()).await;
    let expired = WsClient::connect(&url, REMOTE_PROTOCOLS)
        .await
        .err()
        .expect("expired refused");
    assert_eq!(expired.status, 410, "{expired:?}");
    assert!(expired.body.contains("expired"), "{expired:?}");

    let bogus = url.rsplit_once('/').unwrap().0.to_string() + "/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let unknown = WsClient::connect(&bogus, REMOTE_PROTOCOLS)
        .await
        .err()
        .expect("unknown refused");
    assert_eq!(unknown.status, 404, "{unknown:?}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn streaming_requests_are_validated() {
    let (_b, mut c, sb, id) = start_pod_with_container("validate", "", &["sleep", "3600"], |_| {}).await;
    let code =
        |r: Result<tonic::Response<cri::ExecResponse>, tonic::Status>| r.map(|_| ()).unwrap_err().code();
    let mut bad = exec_request(&id, &["true"], true, false);
    bad.stderr = true;
    assert_eq!(
        code(c.runtime.exec(bad).await),
        tonic::Code::InvalidArgument,
        "tty with stderr"
    );
    let mut none = exec_request(&id, &["true"], false, false);
    none.stdout = false;
    none.stderr = false;
    assert_eq!(
        code(c.runtime.exec(none).await),
        tonic::Code::InvalidArgument,
        "no stream"
    );
    assert_eq!(
        code(c.runtime.exec(exec_request(&id, &[], false, false)).await),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.runtime
                .exec(exec_request("no-such-container", &["true"], false, false))
                .await
        ),
        tonic::Code::NotFound
    );
    let r = c
        .runtime
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "no-such-pod".into(),
            port: vec![80],
        })
        .await;
    assert_eq!(r.unwrap_err().code(), tonic::Code::NotFound);

    // The same URL also upgrades to SPDY/3.1 (vm_spdy exercises it).
    let url = c.exec_url(exec_request(&id, &["true"], false, false)).await;
    let resp = spdy_upgrade_status(&url).await.to_ascii_lowercase();
    assert!(resp.starts_with("http/1.1 101"), "{resp}");
    assert!(
        resp.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{resp}"
    );

    c.stop(&id, 0).await.unwrap();
    assert_eq!(
        code(c.runtime.exec(exec_request(&id, &["true"], false, false)).await),
        tonic::Code::FailedPrecondition,
        "not running"
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// The raw answer to an `Upgrade: SPDY/3.1` POST on `url`.
async fn spdy_upgrade_status(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(T, s.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn streaming_latency_exec_sync_vs_streamed_exec() {
    latency_exec_sync_vs_streamed_exec(Transport::WebSocket, "latency", "WebSocket v5").await;
}

/// Threads of a process, from `/proc/<pid>/status`.
fn thread_count(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// ExecSync of `cmd` with kubelet's 16 MiB reply limit.
async fn exec_sync(
    c: &CriClient,
    id: &str,
    cmd: &[&str],
    timeout_s: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    let mut rt = c.runtime.clone().max_decoding_message_size(16 * 1024 * 1024);
    rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: timeout_s,
    })
    .await
    .map(|r| r.into_inner())
}

/// ExecSync output is capped: 20 MiB on stdout comes back as at most
/// 16 MiB ending with a truncation marker, and the call returns. A child
/// left holding the output pipe (`sleep 1000 &`) neither holds the call
/// nor leaves a reader thread or descriptor behind in the shim.
#[tokio::test]
async fn exec_sync_output_is_capped_and_pipe_holders_leak_nothing() {
    const MARKER: &[u8] = b"\n[berth: output truncated]\n";
    let (_b, mut c, sb, id) = start_pod_with_container("execcap", "", &["sleep", "3600"], |_| {}).await;
    let shim = c.pod_status(&sb).await.unwrap().1["pid"].as_u64().unwrap() as u32;

    let r = exec_sync(&c, &id, &["sh", "-c", "head -c 20971520 /dev/zero"], 120)
        .await
        .expect("ExecSync of 20 MiB returns");
    assert_eq!(r.exit_code, 0);
    assert!(r.stdout.len() <= 16 * 1024 * 1024, "{} bytes", r.stdout.len());
    assert!(r.stdout.len() > 15 * 1024 * 1024, "{} bytes", r.stdout.len());
    assert!(r.stdout.ends_with(MARKER), "no truncation marker");
    assert!(r.stdout[..r.stdout.len() - MARKER.len()].iter().all(|b| *b == 0));

    let (threads, fds) = (thread_count(shim), fd_count(shim));
    let r = exec_sync(&c, &id, &["sh", "-c", "sleep 1000 & echo hi"], 30)
        .await
        .expect("ExecSync with a pipe-holding child returns");
    assert_eq!(
        (r.exit_code, r.stdout.as_slice()),
        (0, &b"hi\n"[..]),
        "the output before the child"
    );
    let e = exec_sync(&c, &id, &["sh", "-c", "sleep 1000 & sleep 1000"], 2)
        .await
        .expect_err("the timeout ends it");
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
    // tokio's idle blocking threads (the exec setup) go after 10 s; readers
    // stuck on the held pipes would stay as long as the sleeps.
    let mut now = (thread_count(shim), fd_count(shim));
    for _ in 0..60 {
        if now.0 <= threads && now.1 <= fds {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        now = (thread_count(shim), fd_count(shim));
    }
    assert!(
        now.0 <= threads && now.1 <= fds,
        "shim threads {threads} -> {}, fds {fds} -> {}",
        now.0,
        now.1
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}
