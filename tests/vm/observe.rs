//! Observability through the real sockets: GetContainerEvents as kubelet's
//! Evented PLEG reads it, and the HTTP listener (`/metrics`, `/healthz`,
//! `/readyz`, `/statusz`, `/flagz`). Runs inside the VM (`hack/vm`), with
//! `--test-threads=1`; every test name starts with `observe_` so
//! `BERTH_VM_FILTER=observe` runs exactly this suite.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;
use tokio::sync::mpsc;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// One event as a subscriber saw it, with when it arrived (ns).
#[derive(Debug, Clone)]
struct Seen {
    ev: cri::ContainerEventResponse,
    at_ns: i64,
}

impl Seen {
    fn kind(&self) -> cri::ContainerEventType {
        cri::ContainerEventType::try_from(self.ev.container_event_type).expect("event type")
    }
}

/// Subscribes (the call returns once berthd has attached the subscriber)
/// and forwards every event, stamped on arrival.
async fn subscribe(c: &CriClient) -> mpsc::UnboundedReceiver<Seen> {
    let mut stream = c
        .runtime
        .clone()
        .get_container_events(cri::GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(ev)) = stream.message().await {
            if tx.send(Seen { ev, at_ns: now_ns() }).is_err() {
                return;
            }
        }
    });
    rx
}

/// Events until one matches `until` (inclusive), or panics after 20 s.
async fn collect_until(rx: &mut mpsc::UnboundedReceiver<Seen>, until: impl Fn(&Seen) -> bool) -> Vec<Seen> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no matching event within 20 s; got {:#?}", names(&out)))
            .expect("event stream ended");
        let done = until(&s);
        out.push(s);
        if done {
            return out;
        }
    }
}

/// (id, type) pairs, for assertions and messages.
fn names(v: &[Seen]) -> Vec<(String, cri::ContainerEventType)> {
    v.iter()
        .map(|s| (s.ev.container_id.chars().take(12).collect(), s.kind()))
        .collect()
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

use cri::ContainerEventType as T;

/// A container's whole life, seen by two subscribers at once: the same
/// eight events in the same order, each with the pod's status as it was.
#[tokio::test]
async fn observe_events_follow_a_container_lifecycle_in_order() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let mut subs = vec![subscribe(&c).await, subscribe(&c).await];
    let pod = pod_config("events", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let id = c
        .create(
            &sb,
            &container_config("life", &busybox(), &["sleep", "3600"]),
            &pod,
        )
        .await
        .expect("create");
    c.start(&id).await.expect("start");
    c.stop(&id, 0).await.expect("stop");
    c.remove(&id).await.expect("remove");
    c.stop_and_remove_pod(&sb).await.expect("stop+remove pod");

    let want = vec![
        (short(&sb), T::ContainerCreatedEvent),
        (short(&sb), T::ContainerStartedEvent),
        (short(&id), T::ContainerCreatedEvent),
        (short(&id), T::ContainerStartedEvent),
        (short(&id), T::ContainerStoppedEvent),
        (short(&id), T::ContainerDeletedEvent),
        (short(&sb), T::ContainerStoppedEvent),
        (short(&sb), T::ContainerDeletedEvent),
    ];
    for rx in &mut subs {
        let got = collect_until(rx, |s| {
            s.ev.container_id == sb && s.kind() == T::ContainerDeletedEvent
        })
        .await;
        assert_eq!(names(&got), want);
        // Every event carries the pod (kubelet drops one without it).
        for s in &got {
            let st = s.ev.pod_sandbox_status.as_ref().expect("sandbox status");
            assert_eq!(st.id, sb);
            assert_eq!(st.metadata.as_ref().unwrap().uid, "uid-events");
        }
        let state_of = |s: &Seen| -> Vec<i32> { s.ev.containers_statuses.iter().map(|c| c.state).collect() };
        assert_eq!(
            state_of(&got[2]),
            vec![cri::ContainerState::ContainerCreated as i32]
        );
        assert_eq!(
            state_of(&got[3]),
            vec![cri::ContainerState::ContainerRunning as i32]
        );
        assert_eq!(
            state_of(&got[4]),
            vec![cri::ContainerState::ContainerExited as i32]
        );
        assert!(state_of(&got[5]).is_empty(), "DELETED shows the pod without it");
        let ready = cri::PodSandboxState::SandboxReady as i32;
        assert_eq!(got[1].ev.pod_sandbox_status.as_ref().unwrap().state, ready);
        assert_ne!(got[6].ev.pod_sandbox_status.as_ref().unwrap().state, ready);
        assert!(got.windows(2).all(|w| w[0].ev.created_at < w[1].ev.created_at));
    }
    // SIGTERM ends the open streams at once (not after the 3 s grace an
    // open call gets), so kubelet resubscribes to the next berthd.
    let t = Instant::now();
    // SAFETY: kill(2) of our berthd.
    unsafe { libc::kill(b.pid() as i32, libc::SIGTERM) };
    for rx in &mut subs {
        // A generous deadline on the event (the stream's end), not a
        // duration the test asserts.
        let end = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
        assert!(
            matches!(end, Ok(None)),
            "stream still open after SIGTERM: {end:?}"
        );
    }
    println!(
        "BERTH-MEASURE: SIGTERM -> event streams closed in {:?}",
        t.elapsed()
    );
}

/// Containers that end on their own (exit, OOM kill) produce STOPPED with
/// their exit status, after the exit (the shim's exit time); the median
/// delay from the exit to the event's arrival is printed, not asserted.
#[tokio::test]
async fn observe_a_container_exiting_by_itself_produces_stopped() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("exits", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut rx = subscribe(&c).await;
    let mut delays = Vec::new();
    for i in 0..10 {
        let cfg = container_config(
            &format!("quits-{i}"),
            &busybox(),
            &["sh", "-c", "sleep 0.2; exit 3"],
        );
        let id = c.create(&sb, &cfg, &pod).await.expect("create");
        c.start(&id).await.expect("start");
        let got = collect_until(&mut rx, |s| {
            s.ev.container_id == id && s.kind() == T::ContainerStoppedEvent
        })
        .await;
        let stopped = got.last().unwrap();
        let me = stopped
            .ev
            .containers_statuses
            .iter()
            .find(|s| s.id == id)
            .expect("the container is in its own event");
        assert_eq!(me.state, cri::ContainerState::ContainerExited as i32);
        assert_eq!((me.exit_code, me.reason.as_str()), (3, "Error"), "{me:?}");
        assert!(me.finished_at > 0);
        assert!(
            stopped.at_ns >= me.finished_at,
            "STOPPED arrived ({}) before the exit it reports ({})",
            stopped.at_ns,
            me.finished_at
        );
        delays.push(Duration::from_nanos((stopped.at_ns - me.finished_at) as u64));
        c.remove(&id).await.expect("remove");
    }
    let m = median(delays.clone());
    println!("BERTH-MEASURE: container exit -> STOPPED event: median {m:?} over 10 (all: {delays:?})");

    // An OOM kill is an exit too: STOPPED, saying OOMKilled.
    let mut cfg = container_config(
        "hog",
        &busybox(),
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
    );
    cfg.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    let id = c.create(&sb, &cfg, &pod).await.expect("create hog");
    c.start(&id).await.expect("start hog");
    let got = collect_until(&mut rx, |s| {
        s.ev.container_id == id && s.kind() == T::ContainerStoppedEvent
    })
    .await;
    let me = got
        .last()
        .unwrap()
        .ev
        .containers_statuses
        .iter()
        .find(|s| s.id == id)
        .cloned()
        .expect("hog in its event");
    assert_eq!((me.exit_code, me.reason.as_str()), (137, "OOMKilled"), "{me:?}");
    c.stop_and_remove_pod(&sb).await.expect("stop+remove pod");
}

/// kubelet's in-place pod restart (stop all with timeout 0, remove all,
/// create and start attempt + 1) shows as STOPPED and DELETED of every old
/// container, then CREATED and STARTED of every new one, with the sandbox
/// Ready throughout and no sandbox event.
#[tokio::test]
async fn observe_in_place_restart_shows_in_the_event_stream() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("restarts", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let start_all = |attempt: u32| {
        let (mut c, pod, sb) = (c.clone(), pod.clone(), sb.clone());
        async move {
            let mut ids = Vec::new();
            for name in ["sidecar", "app"] {
                let mut cfg = container_config(name, &busybox(), &["sleep", "3600"]);
                cfg.metadata.as_mut().unwrap().attempt = attempt;
                cfg.log_path = format!("{name}-{attempt}.log");
                let id = c.create(&sb, &cfg, &pod).await.expect("create");
                c.start(&id).await.expect("start");
                ids.push(id);
            }
            ids
        }
    };
    let old = start_all(0).await;
    let mut rx = subscribe(&c).await;
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in &old {
        let (mut c, id) = (c.clone(), id.clone());
        tasks.spawn(async move {
            c.stop(&id, 0).await.expect("stop");
            c.remove(&id).await.expect("remove");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let new = start_all(1).await;
    let last = new[1].clone();
    let got = collect_until(&mut rx, |s| {
        s.ev.container_id == last && s.kind() == T::ContainerStartedEvent
    })
    .await;
    let cycle = t.elapsed();
    let of = |id: &str| -> Vec<T> {
        got.iter()
            .filter(|s| s.ev.container_id == id)
            .map(Seen::kind)
            .collect()
    };
    for id in &old {
        assert_eq!(of(id), vec![T::ContainerStoppedEvent, T::ContainerDeletedEvent]);
    }
    for id in &new {
        assert_eq!(of(id), vec![T::ContainerCreatedEvent, T::ContainerStartedEvent]);
    }
    assert!(
        of(&sb).is_empty(),
        "the sandbox itself emits nothing: {:?}",
        names(&got)
    );
    let ready = cri::PodSandboxState::SandboxReady as i32;
    assert!(got
        .iter()
        .all(|s| s.ev.pod_sandbox_status.as_ref().unwrap().state == ready));
    // The moment kubelet waits for: the pod with no containers at all.
    let empty = got
        .iter()
        .position(|s| s.ev.containers_statuses.is_empty())
        .expect("an event shows the pod empty");
    assert!(got[..empty].iter().all(|s| s.kind() != T::ContainerCreatedEvent));
    println!("BERTH-MEASURE: in-place restart of 2 containers seen in events in {cycle:?}");
    c.stop_and_remove_pod(&sb).await.expect("stop+remove pod");
}

/// A shim killed from outside makes the sandbox STOPPED (NotReady) at once.
#[tokio::test]
async fn observe_a_dead_shim_is_a_sandbox_stopped_event() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let pod = pod_config("shimless", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut rx = subscribe(&c).await;
    let (_, info) = c.pod_status(&sb).await.unwrap();
    let shim = info["pid"].as_u64().unwrap() as i32;
    let t = Instant::now();
    // SAFETY: kill(2) of the pod's shim.
    unsafe { libc::kill(shim, libc::SIGKILL) };
    let got = collect_until(&mut rx, |s| s.ev.container_id == sb).await;
    let s = got.last().unwrap();
    assert_eq!(s.kind(), T::ContainerStoppedEvent);
    assert_eq!(
        s.ev.pod_sandbox_status.as_ref().unwrap().state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    println!(
        "BERTH-MEASURE: shim SIGKILL -> sandbox STOPPED event in {:?}",
        t.elapsed()
    );
    assert!(b.log().contains("pod shim exited unexpectedly"), "logged");
    c.stop_and_remove_pod(&sb).await.expect("stop+remove pod");
}

/// The address berthd's observability listener bound (`http_address` with
/// port 0: berthd keeps the port the kernel gave it and logs it).
async fn http_listener_address(b: &Berthd) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = b.log();
        if let Some(line) = log.lines().find(|l| l.contains("observability listener")) {
            if let Some(a) = line.split_whitespace().find_map(|w| w.strip_prefix("address=")) {
                return a.to_string();
            }
        }
        assert!(Instant::now() < deadline, "no listener address logged: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.0 GET: (status, headers (lower-case names), body).
fn http_get(addr: &str, path: &str, accept: Option<&str>) -> (u16, BTreeMap<String, String>, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// `berth` / `berth-pass`, bcrypt, as docker-registry's htpasswd reads it.
const HTPASSWD: &str = "berth:$2b$05$AUzg/UMsNVnn1.8Mk8tyf.zWLaX0UJtqZ35QzqSAJg.h6cD08Rsma\n";

/// A read-only htpasswd-protected registry over the VM's image storage, on
/// a port it bound itself.
fn auth_registry() -> registry::RegistryProcess {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, HTPASSWD).unwrap();
    let auth = format!(
        "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
        htpasswd.display()
    );
    registry::RegistryProcess::serve(std::path::Path::new("/var/lib/registry"), dir, "", &auth)
}

fn value(samples: &[prom::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .value
}

/// The HTTP listener of a running berthd: health, metrics that parse and
/// count what happened, z-pages in both forms, a redacted configured
/// password (that really pulls), 406 for an unknown version.
#[tokio::test]
async fn observe_metrics_health_and_zpages() {
    let reg = auth_registry();
    let extra = format!(
        "http_address = \"127.0.0.1:0\"\n[registry.\"{}\"]\nusername = \"berth\"\npassword = \"berth-pass\"\n",
        reg.addr
    );
    let (b, mut c) = Berthd::start_with(&extra).await.expect("berthd");
    let addr = http_listener_address(&b).await;
    assert_eq!(http_get(&addr, "/healthz", None).0, 200);
    let (code, _, body) = http_get(&addr, "/readyz", None);
    assert_eq!((code, body.as_str()), (200, "ok"));

    // The configured credentials pull from the protected registry with no
    // credentials in the request.
    let private = format!("{}/library/busybox:latest", reg.addr);
    let private = private.as_str();
    c.pull(private).await.expect("pull with the config's credentials");
    let missing = c.pull(&format!("{}/library/nope:latest", registry())).await;
    assert!(missing.is_err());
    let pod = pod_config("metered", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let id = c
        .create(&sb, &container_config("m", private, &["sleep", "3600"]), &pod)
        .await
        .expect("create");
    c.start(&id).await.expect("start");
    let nf = c.status("no-such-container").await.unwrap_err();
    assert_eq!(nf.code(), tonic::Code::NotFound);

    let (code, headers, text) = http_get(&addr, "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{headers:?}"
    );
    let samples = prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        value(
            &samples,
            "berth_cri_requests_total",
            &[("rpc", "RunPodSandbox"), ("code", "OK")]
        ) >= 1.0
    );
    assert!(
        value(
            &samples,
            "berth_cri_requests_total",
            &[("rpc", "ContainerStatus"), ("code", "NotFound")]
        ) >= 1.0
    );
    assert!(
        value(
            &samples,
            "berth_cri_request_duration_seconds_count",
            &[("rpc", "CreateContainer")]
        ) >= 1.0
    );
    assert_eq!(value(&samples, "berth_pods", &[("state", "ready")]), 1.0);
    assert_eq!(value(&samples, "berth_containers", &[("state", "running")]), 1.0);
    assert_eq!(value(&samples, "berth_containers", &[("state", "exited")]), 0.0);
    assert!(value(&samples, "berth_image_pulls_total", &[("result", "success")]) >= 1.0);
    assert!(value(&samples, "berth_image_pulls_total", &[("result", "failure")]) >= 1.0);
    assert!(value(&samples, "berth_image_pull_bytes_total", &[]) > 0.0);
    assert!(value(&samples, "berth_shims_started_total", &[]) >= 1.0);
    println!(
        "BERTH-MEASURE: /metrics: {} samples, {} bytes",
        samples.len(),
        text.len()
    );

    // statusz: text by default, the v1alpha1 object on request.
    let (code, headers, body) = http_get(&addr, "/statusz", None);
    assert_eq!(code, 200);
    assert!(headers["content-type"].starts_with("text/plain"));
    assert!(
        body.contains("berthd statusz") && body.contains("Paths: /flagz /healthz /metrics /readyz /statusz"),
        "{body}"
    );
    let (code, headers, body) = http_get(
        &addr,
        "/statusz",
        Some("application/json;v=v1alpha1;g=config.k8s.io;as=Statusz"),
    );
    assert_eq!(code, 200, "{body}");
    assert!(headers["content-type"].starts_with("application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).expect("statusz JSON");
    assert_eq!(v["kind"], "Statusz");
    assert_eq!(v["apiVersion"], "config.k8s.io/v1alpha1");
    assert_eq!(v["metadata"]["name"], "berthd");
    assert!(v["startTime"].as_str().unwrap().ends_with('Z'), "{v}");
    assert!(v["uptimeSeconds"].as_i64().unwrap() >= 0);
    assert!(!v["binaryVersion"].as_str().unwrap().is_empty());
    assert!(v["paths"].as_array().unwrap().iter().any(|p| p == "/metrics"));

    // flagz: every setting, the password redacted in both forms.
    let (code, _, text) = http_get(&addr, "/flagz", None);
    assert_eq!(code, 200);
    assert!(text.contains("berthd flags"), "{text}");
    let (code, _, body) = http_get(
        &addr,
        "/flagz",
        Some("application/json;v=v1alpha1;g=config.k8s.io;as=Flagz"),
    );
    assert_eq!(code, 200, "{body}");
    for page in [&text, &body] {
        assert!(!page.contains("berth-pass"), "a secret leaked: {page}");
    }
    let v: serde_json::Value = serde_json::from_str(&body).expect("flagz JSON");
    assert_eq!(v["kind"], "Flagz");
    assert_eq!(v["apiVersion"], "config.k8s.io/v1alpha1");
    assert_eq!(v["metadata"]["name"], "berthd");
    let flags = &v["flags"];
    assert_eq!(flags[&format!("registry.{}.password", reg.addr)], "[redacted]");
    assert_eq!(flags[&format!("registry.{}.username", reg.addr)], "berth");
    assert_eq!(flags["http_address"], "127.0.0.1:0", "as configured");
    assert_eq!(flags["socket"], b.socket.to_string_lossy().as_ref());
    assert!(flags["config"].as_str().unwrap().ends_with("config.toml"));
    // Nor does verbose Status give it away.
    let st = c
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert!(!st.info["config"].contains("berth-pass"), "{}", st.info["config"]);

    // An unknown version is 406 with what is served.
    let (code, _, body) = http_get(
        &addr,
        "/statusz",
        Some("application/json;v=v2;g=config.k8s.io;as=Statusz"),
    );
    assert_eq!(code, 406, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("application/json;v=v1alpha1;g=config.k8s.io;as=Statusz, text/plain"));
    assert_eq!(http_get(&addr, "/flagz", Some("application/json")).0, 406);

    c.stop_and_remove_pod(&sb).await.expect("stop+remove pod");
    drop(reg);
}

/// How often `needle` occurs in berthd's log.
fn log_count(b: &Berthd, needle: &str) -> usize {
    b.log().matches(needle).count()
}

/// SIGHUPs berthd and waits for its `configuration reloaded` line (the
/// `reloads`-th); returns that line.
async fn sighup(b: &Berthd, reloads: usize) -> String {
    // SAFETY: kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(b.pid() as i32, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while log_count(b, "configuration reloaded") < reloads {
        assert!(Instant::now() < deadline, "no reload logged:\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.log()
        .lines()
        .filter(|l| l.contains("configuration reloaded"))
        .nth(reloads - 1)
        .unwrap()
        .to_string()
}

/// Config drop-ins override the main file (`config dump` names the
/// winner's file), and SIGHUP applies a changed log level at once while
/// reporting what needs a restart. Before SIGHUP was handled, it killed
/// berthd.
#[tokio::test]
async fn observe_sighup_reloads_the_log_level_from_a_drop_in() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let config = b.dir.path().join("config.toml");
    let dropins = b.dir.path().join("config.d");
    std::fs::create_dir_all(&dropins).unwrap();
    // The main file says debug; two drop-ins override it in name order.
    std::fs::write(dropins.join("10-debug.toml"), "log_level = \"debug\"\n").unwrap();
    std::fs::write(dropins.join("20-quiet.toml"), "log_level = \"info\"\n").unwrap();
    let dump = std::process::Command::new(bin_dir().join("berthd"))
        .arg("--config")
        .arg(&config)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8(dump.stdout).unwrap();
    let winner = format!(
        "log_level = \"info\"  # {}\n",
        dropins.join("20-quiet.toml").display()
    );
    assert!(dump.contains(&winner), "{dump}");

    let line = sighup(&b, 1).await;
    assert!(line.contains("reloaded=[\"log_level\"]"), "{line}");
    c.runtime
        .version(cri::VersionRequest { version: "v1".into() })
        .await
        .unwrap();
    let calls = log_count(&b, "CRI call");
    c.runtime
        .version(cri::VersionRequest { version: "v1".into() })
        .await
        .unwrap();
    assert_eq!(
        log_count(&b, "CRI call"),
        calls,
        "info hides the debug line of each call"
    );

    // Back to debug, plus a change only a restart applies.
    std::fs::write(
        dropins.join("20-quiet.toml"),
        "log_level = \"debug\"\npod_shm_size_bytes = 1048576\n",
    )
    .unwrap();
    let line = sighup(&b, 2).await;
    assert!(line.contains("reloaded=[\"log_level\"]"), "{line}");
    assert!(line.contains("needs_restart=[\"pod_shm_size_bytes\"]"), "{line}");
    c.runtime
        .version(cri::VersionRequest { version: "v1".into() })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_count(&b, "CRI call") == calls {
        assert!(
            Instant::now() < deadline,
            "no debug line after the reload:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken drop-in changes nothing and berthd keeps serving.
    std::fs::write(dropins.join("30-bad.toml"), "log_level = [\n").unwrap();
    // SAFETY: kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(b.pid() as i32, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while log_count(&b, "configuration reload failed") == 0 {
        assert!(Instant::now() < deadline, "no failure logged:\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.log().contains("30-bad.toml"), "the bad file is named");
    c.runtime
        .version(cri::VersionRequest { version: "v1".into() })
        .await
        .expect("still serving");
}

/// Nothing in the config names a cgroup driver and this VM's init is not
/// systemd: berthd detects cgroupfs, says why in its log, and tells
/// kubelet through RuntimeConfig.
#[tokio::test]
async fn observe_runtime_config_reports_the_detected_cgroupfs_driver() {
    let (b, mut c) = Berthd::start().await.unwrap();
    let rc = c
        .runtime
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
    let log = b.log();
    assert!(
        log.lines()
            .any(|l| l.contains("cgroup driver") && l.contains("not booted with systemd")),
        "{log}"
    );
}
