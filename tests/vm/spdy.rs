//! Streaming exec, attach and port-forward over SPDY/3.1, the transport
//! kubelet and crictl use by default: the client (`berth_tests::spdy`)
//! upgrades like client-go and opens one SPDY stream per channel.
//! Output, stdin, exit codes, TTY with resize, 3 MB through the flow-control
//! windows, attach, port-forward with concurrent connections and errors
//! (also through client-go's WebSocket tunnel), protocol negotiation, and the streamed-exec latency over SPDY.
//!
//! The port-forward and latency cases are written once for every transport
//! (`berth_tests::transport`); this suite instantiates them for SPDY.
//!
//! Runs inside the VM (`hack/vm`), with `--test-threads=1`.

use std::time::Duration;

use berth_proto::cri;
use berth_tests::spdy::*;
use berth_tests::transport::{latency_exec_sync_vs_streamed_exec, port_forward_to_httpd, Transport};
use berth_tests::*;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn spdy_exec_output_exit_codes_and_stdin() {
    let (_b, mut c, sb, id) = start_pod_with_container("spdy-exec", "", &["sleep", "3600"], |_| {}).await;
    let out = exec(&mut c, &id, &["sh", "-c", "echo hello; echo oops >&2"]).await;
    assert_eq!(out.protocol, "v4.channel.k8s.io");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n", "{out:?}");
    assert_eq!(out.error, r#"{"metadata":{},"status":"Success"}"#);
    assert_eq!(out.exit_code().unwrap(), 0);

    let out = exec(&mut c, &id, &["sh", "-c", "echo partial; exit 3"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "partial\n");
    assert_eq!(out.exit_code().unwrap(), 3, "{out:?}");
    assert!(out.error.contains("NonZeroExitCode"), "{}", out.error);

    // stdin reaches the process and its end closes the process's stdin.
    let url = c
        .exec_url(exec_request(&id, &["sh", "-c", "cat; echo done"], false, true))
        .await;
    let opts = StreamOptions {
        stdin: Some(b"line one\nline two\n".to_vec()),
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let out = tokio::time::timeout(T, run(&url, &opts)).await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line one\nline two\ndone\n",
        "{out:?}"
    );
    assert_eq!(out.exit_code().unwrap(), 0);

    // 3 MB of output: several times the 64 KiB SPDY windows, which the
    // client reopens with WINDOW_UPDATE as it reads.
    let out = exec(
        &mut c,
        &id,
        &["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"],
    )
    .await;
    assert_eq!(out.stdout.len(), 3_000_000);
    assert!(out.stdout.iter().all(|&b| b == b'x'));
    assert_eq!(out.exit_code().unwrap(), 0);

    // A protocol older than v4: no Status on success, text on failure.
    let v2 = StreamOptions {
        stdout: true,
        stderr: true,
        protocols: vec!["v2.channel.k8s.io"],
        ..Default::default()
    };
    for (cmd, stdout, error) in [
        ("echo fine", "fine\n", ""),
        (
            "echo partial; exit 2",
            "partial\n",
            "command terminated with non-zero exit code: exit status 2",
        ),
    ] {
        let url = c
            .exec_url(exec_request(&id, &["sh", "-c", cmd], false, false))
            .await;
        let out = tokio::time::timeout(T, run(&url, &v2))
            .await
            .expect("exec finished")
            .expect("exec");
        assert_eq!(out.protocol, "v2.channel.k8s.io");
        assert_eq!(String::from_utf8_lossy(&out.stdout), stdout, "{out:?}");
        assert_eq!(out.error, error, "{out:?}");
    }
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn spdy_exec_with_tty_stdin_and_resize() {
    let (_b, mut c, sb, id) = start_pod_with_container("spdy-tty", "", &["sleep", "3600"], |_| {}).await;
    let url = c
        .exec_url(exec_request(
            &id,
            &["sh", "-c", "read x; sleep 0.5; echo got-$x; stty size"],
            true,
            true,
        ))
        .await;
    let opts = StreamOptions {
        stdin: Some(b"go\n".to_vec()),
        stdout: true,
        tty: true,
        resizes: vec![(91, 37)],
        stdin_delay: Duration::from_secs(2),
        ..Default::default()
    };
    let out = tokio::time::timeout(T, run(&url, &opts)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // The terminal echoes the input and ends lines with \r\n.
    assert!(text.contains("got-go\r\n"), "{text:?}");
    assert!(
        text.contains("37 91"),
        "the resize reached the terminal: {text:?}"
    );
    assert!(out.stderr.is_empty());
    assert_eq!(out.exit_code().unwrap(), 0, "{out:?}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn spdy_attach_to_a_counter() {
    let counter = "i=0; while [ $i -lt 15 ]; do echo tick-$i; i=$((i+1)); sleep 0.2; done";
    let (_b, mut c, sb, id) =
        start_pod_with_container("spdy-attach", "", &["sh", "-c", counter], |_| {}).await;
    let attach = |c: &mut CriClient| {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            let url = c
                .runtime
                .attach(cri::AttachRequest {
                    container_id: id,
                    stdin: false,
                    tty: false,
                    stdout: true,
                    stderr: true,
                })
                .await
                .expect("Attach")
                .into_inner()
                .url;
            let opts = StreamOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            };
            tokio::time::timeout(T, run(&url, &opts)).await.unwrap().unwrap()
        }
    };
    // Two attachers at once both see the counter until the container exits.
    let (a, b) = tokio::join!(attach(&mut c), attach(&mut c));
    for out in [&a, &b] {
        let text = String::from_utf8_lossy(&out.stdout);
        let ticks: Vec<&str> = text.lines().filter(|l| l.starts_with("tick-")).collect();
        assert!(ticks.len() >= 3, "{text:?}");
        assert!(
            text.contains("tick-14"),
            "the attach lasts until the end: {text:?}"
        );
        assert_eq!(out.exit_code().unwrap(), 0, "{out:?}");
    }
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn spdy_port_forward_to_httpd_in_the_pod() {
    let (_b, mut c, sb, _id) = port_forward_to_httpd(Transport::Spdy, "spdy-pf").await;
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// client-go's tunnelling port-forward (`crictl port-forward --transport
/// websocket`, kubectl ≥ 1.30): the same SPDY session inside binary
/// WebSocket messages; the tunnel protocol opens no exec.
#[tokio::test]
async fn spdy_port_forward_through_a_websocket_tunnel() {
    let (_b, mut c, sb, id) = port_forward_to_httpd(Transport::SpdyTunnel, "spdy-tunnel").await;
    // An exec URL does not speak the tunnel protocol.
    let url = c.exec_url(exec_request(&id, &["true"], false, false)).await;
    let err = PortForward::start_tunnelled(&url).await.err().expect("refused");
    let refused = err.downcast_ref::<Refused>().expect("an HTTP refusal");
    assert_eq!(refused.status, 400, "{refused}");
    assert!(refused.body.contains("v4.channel.k8s.io"), "{refused}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn spdy_protocol_negotiation() {
    let (_b, mut c, sb, id) = start_pod_with_container("spdy-nego", "", &["sleep", "3600"], |_| {}).await;
    let url = c.exec_url(exec_request(&id, &["echo", "hi"], false, false)).await;
    let err = upgrade(&url, &["v9.channel.k8s.io"])
        .await
        .err()
        .expect("refused");
    let refused = err.downcast_ref::<Refused>().expect("an HTTP refusal");
    assert_eq!(refused.status, 403, "{refused}");
    assert!(refused.body.contains("v4.channel.k8s.io"), "{refused}");
    let err = upgrade(&url, &[]).await.err().expect("refused");
    assert_eq!(err.downcast_ref::<Refused>().unwrap().status, 400);
    // Negotiation failed before the token was spent: it still works.
    let opts = StreamOptions {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let out = run(&url, &opts).await.expect("token still valid");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    // ...once.
    let err = run(&url, &opts).await.expect_err("reuse refused");
    assert_eq!(err.downcast_ref::<Refused>().unwrap().status, 410, "{err}");
    // A port-forward URL speaks only portforward.k8s.io.
    let url = c
        .runtime
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: sb.clone(),
            port: vec![80],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let err = upgrade(&url, REMOTECOMMAND_PROTOCOLS)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.downcast_ref::<Refused>().unwrap().status, 403);
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn spdy_latency_exec_sync_vs_streamed_exec() {
    latency_exec_sync_vs_streamed_exec(Transport::Spdy, "spdy-latency", "SPDY/3.1 v4").await;
}
