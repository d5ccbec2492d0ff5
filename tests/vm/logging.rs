//! Logs: container logs through kubelet's rotation (ReopenContainerLog) and
//! berthd's own log of every CRI call.
//!
//! Needs root, cgroup v2 and the loopback registry: runs inside the VM
//! (`hack/vm`). Run with `--test-threads=1`.

use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// kubelet's log rotation: rename the file, ReopenContainerLog, and the
/// output continues in a new file with no line lost or split.
#[tokio::test]
async fn log_rotation_loses_no_line() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("rotate", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    // Counts until told to stop, so every file is rotated while the
    // container writes, whatever the machine's speed. Told by SIGTERM, not
    // by a file an exec creates: the container's init ending kills the
    // exec still in its PID namespace (exit 137), a race the test lost.
    let cfg = container_config(
        "counter",
        &busybox(),
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; i=0; while true; do echo line-$i; i=$((i+1)); usleep 5000; done",
        ],
    );
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    let path = b.log_dir().join("counter.log");
    // Until the current file holds a new record (a generous deadline).
    let wait_for_output = |path: std::path::PathBuf| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&path).is_ok_and(|t| t.contains('\n')) {
            assert!(Instant::now() < deadline, "no output in {}", path.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut rotated = Vec::new();
    for n in 0..3 {
        wait_for_output(path.clone()).await;
        let old = b.log_dir().join(format!("counter.log.{n}"));
        std::fs::rename(&path, &old).unwrap();
        c.runtime
            .reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await
            .expect("reopen");
        rotated.push(old);
    }
    wait_for_output(path.clone()).await;
    c.stop(&id, 60).await.unwrap();
    let s = c.wait_exited(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(s.exit_code, 0);
    rotated.push(path);
    let mut lines = Vec::new();
    for f in &rotated {
        for l in std::fs::read_to_string(f).unwrap().lines() {
            let (_, _, tag, content) = parse_cri_log_line(l).expect("whole CRI record");
            assert_eq!(tag, "F");
            lines.push(content);
        }
    }
    assert!(lines.len() >= 4, "a record in each of the 4 files: {lines:?}");
    let want: Vec<String> = (0..lines.len()).map(|i| format!("line-{i}")).collect();
    assert_eq!(
        lines,
        want,
        "every line once, in order, across {} files",
        rotated.len()
    );
    assert!(
        rotated.iter().all(|f| std::fs::metadata(f).unwrap().len() > 0),
        "each file got output"
    );
    // Not running any more: a clear error.
    let e = c
        .runtime
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Every CRI call is logged at debug with its duration (the test berthd
/// runs at log_level debug).
#[tokio::test]
async fn every_cri_call_is_logged_with_its_duration() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.runtime.version(cri::VersionRequest::default()).await.unwrap();
    let _ = c
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await;
    let log = b.log();
    let line = log
        .lines()
        .find(|l| l.contains("rpc=Version") && l.contains("CRI call"))
        .unwrap_or_else(|| panic!("no Version call line in {log}"));
    assert!(line.contains("elapsed_us="), "{line}");
    let failed = log
        .lines()
        .find(|l| l.contains("rpc=ContainerStatus") && l.contains("CRI call failed"))
        .unwrap_or_else(|| panic!("no ContainerStatus line in {log}"));
    assert!(
        failed.contains("elapsed_us=") && failed.contains("grpc_code=5"),
        "{failed}"
    );
    assert!(
        failed.contains(r#"container "nope" not found"#),
        "readable message: {failed}"
    );
}
