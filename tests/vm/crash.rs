//! Crash safety: berthd aborted at every crash point (`BERTH_CRASH_AT`,
//! runtime/src/crash.rs) and killed with SIGKILL at random moments, then
//! restarted; after kubelet's retry and teardown nothing is left: no veth,
//! no IP lease, no portmap rule, no pinned namespace or other mount under
//! the test's dirs, no cgroup under the pod parent, no shim, no container
//! dir, no snapshot no image record names, and the listings are empty.
//!
//! `BERTH_CRASH_ROUNDS` (default 5) sets the rounds of the random-kill loop,
//! `BERTH_CRASH_SEED` its seed (default fixed, so CI is deterministic).
//!
//! Needs root, cgroup v2, CNI plugins and the loopback registry: runs
//! inside the VM (`hack/vm`). Run with `--test-threads=1`.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use berth_proto::cri;
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// The pod every point uses: a host port, so portmap has rules to leak.
fn crash_pod(b: &Berthd, name: &str, host_port: i32) -> cri::PodSandboxConfig {
    let mut pod = pod_config(name, &b.log_dir());
    pod.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port,
        host_ip: String::new(),
    }];
    pod
}

/// Exits on its stop signal, so StopContainer with a grace period (the
/// `stop_container.signal` point) ends without waiting for SIGKILL.
fn sleeper() -> cri::ContainerConfig {
    container_config(
        "app",
        &busybox(),
        &["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"],
    )
}

/// Child directory names of `dir` (none if it does not exist).
fn subdirs(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every file name in `dir` (none if it does not exist).
fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The NAT rules and chains portmap makes (`CNI-HOSTPORT-*` jumps to
/// per-pod `CNI-DN-*` chains, which name the pod's IP), and any rule naming
/// the test subnet: taken before the test's pods exist and again after the
/// teardown, so a leaked jump or an empty leaked chain counts too, while
/// what other tests of this VM left does not.
fn portmap_lines(subnet: &str) -> std::collections::BTreeSet<String> {
    let prefix = subnet.trim_end_matches("0/24");
    output("iptables", &["-t", "nat", "-S"])
        .lines()
        .filter(|l| l.contains("CNI-DN-") || l.contains(prefix))
        .map(str::to_string)
        .collect()
}

/// The test network's port-map NAT rules now ([`portmap_lines`]; none
/// without a network): taken before a test's first pod, for [`leaks`].
fn nat_rules(b: &Berthd) -> std::collections::BTreeSet<String> {
    b.net
        .as_ref()
        .map(|n| portmap_lines(&n.subnet))
        .unwrap_or_default()
}

/// What this berthd left behind, one line per leak (empty: nothing).
/// `nat_before`: [`nat_rules`] before the test's first pod.
async fn leaks(
    b: &Berthd,
    c: &mut CriClient,
    nat_before: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let dir = b.dir.path();
    let pods = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .map(|r| r.into_inner().items.len())
        .map_err(|e| e.to_string());
    if pods != Ok(0) {
        out.push(format!("pods listed: {pods:?}"));
    }
    let ctrs = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .map(|r| r.into_inner().containers.len())
        .map_err(|e| e.to_string());
    if ctrs != Ok(0) {
        out.push(format!("containers listed: {ctrs:?}"));
    }
    if let Some(net) = &b.net {
        let veths = output("ip", &["-o", "link", "show", "master", &net.bridge]);
        if !veths.trim().is_empty() {
            out.push(format!("veths on {}: {}", net.bridge, veths.trim()));
        }
        let leases: Vec<String> = entries(&dir.join("ipam/berth-test"))
            .into_iter()
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        if !leases.is_empty() {
            out.push(format!("IP leases: {leases:?}"));
        }
        let rules: Vec<String> = portmap_lines(&net.subnet)
            .difference(nat_before)
            .cloned()
            .collect();
        if !rules.is_empty() {
            out.push(format!("portmap rules: {rules:?}"));
        }
    }
    let mounts = mounts_containing(&dir.to_string_lossy());
    if !mounts.is_empty() {
        out.push(format!("mounts: {mounts:?}"));
    }
    let cg = std::path::Path::new("/sys/fs/cgroup").join(b.cgroup_parent.trim_start_matches('/'));
    let cgroups = subdirs(&cg);
    if !cgroups.is_empty() {
        out.push(format!("cgroups under {}: {cgroups:?}", cg.display()));
    }
    let shims = processes_matching(&format!("{}/state/s/", dir.display()));
    if !shims.is_empty() {
        out.push(format!("shims: {shims:?}"));
    }
    for (what, d) in [
        ("sockets", dir.join("state/s")),
        ("sandbox state dirs", dir.join("state/sandboxes")),
        ("container bundles", dir.join("state/containers")),
        ("sandbox intents", dir.join("root/sandbox-intents")),
        ("container intents", dir.join("root/container-intents")),
    ] {
        let left = entries(&d);
        if !left.is_empty() {
            out.push(format!("{what}: {left:?}"));
        }
    }
    let writable = entries(&dir.join("root/containers"));
    if !writable.is_empty() {
        out.push(format!("container dirs/records: {writable:?}"));
    }
    // Snapshots: exactly those some image record names.
    let images = dir.join("root/images");
    let mut named: Vec<String> = entries(&images.join("meta"))
        .into_iter()
        .filter_map(|f| std::fs::read_to_string(images.join("meta").join(f)).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .flat_map(|v| {
            v["chain_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| c.as_str().map(|s| s.trim_start_matches("sha256:").to_string()))
        })
        .collect();
    named.sort();
    named.dedup();
    let mut snapshots = entries(&images.join("snapshots"));
    snapshots.sort();
    if snapshots != named {
        out.push(format!(
            "snapshots {snapshots:?} but image records name {named:?}"
        ));
    }
    out
}

/// Kills what a leaky point left running, so it cannot disturb the next.
fn reap_leftovers(b: &Berthd) {
    for (pid, _) in processes_matching(&format!("{}/state/s/", b.dir.path().display())) {
        // SAFETY: kill(2) of a leaked shim of this test's berthd.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let cg = std::path::Path::new("/sys/fs/cgroup").join(b.cgroup_parent.trim_start_matches('/'));
    let _ = std::fs::write(cg.join("cgroup.kill"), "1");
}

/// The CRI call a crash point belongs to.
fn call_of(point: &str) -> &str {
    point.split('.').next().unwrap()
}

/// Makes what `point`'s call needs, then makes the call; Err is what the
/// client saw (berthd aborted in the middle).
async fn reach(c: &mut CriClient, pod: &cri::PodSandboxConfig, point: &str) -> Result<(), tonic::Status> {
    let call = call_of(point);
    match call {
        "pull_image" => return c.pull(&busybox()).await.map(drop),
        "remove_image" => {
            return c
                .images
                .remove_image(cri::RemoveImageRequest {
                    image: Some(cri::ImageSpec {
                        image: busybox(),
                        ..Default::default()
                    }),
                })
                .await
                .map(drop)
        }
        _ => {}
    }
    let sb = c.run_pod(pod).await?;
    if call == "run_sandbox" {
        return Ok(());
    }
    match call {
        "stop_sandbox" => {
            let id = c.create(&sb, &sleeper(), pod).await?;
            c.start(&id).await?;
            c.runtime
                .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sb })
                .await
                .map(drop)
        }
        "remove_sandbox" => {
            let id = c.create(&sb, &sleeper(), pod).await?;
            c.start(&id).await?;
            c.stop_and_remove_pod(&sb).await
        }
        _ => {
            let id = c.create(&sb, &sleeper(), pod).await?;
            if call == "create_container" {
                return Ok(());
            }
            c.start(&id).await?;
            if call == "start_container" {
                return Ok(());
            }
            c.stop(&id, 10).await?;
            if call == "stop_container" {
                return Ok(());
            }
            c.remove(&id).await
        }
    }
}

/// kubelet after the restart: retries the call (the pod and its container
/// come up, or the image is pulled again), then tears everything down.
/// Returns the errors it met (kubelet would retry; the test reports them).
async fn kubelet_retry_and_teardown(
    c: &mut CriClient,
    pod: &cri::PodSandboxConfig,
    point: &str,
) -> Vec<String> {
    let mut errs = Vec::new();
    let setup = match call_of(point) {
        "pull_image" | "remove_image" => {
            if let Err(e) = c.pull(&busybox()).await {
                errs.push(format!("pull retry: {e:?}"));
            }
            return errs;
        }
        "run_sandbox" | "create_container" | "start_container" => true,
        // A teardown call: kubelet goes on tearing down.
        _ => false,
    };
    let listed = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .map(|r| r.into_inner().items)
        .unwrap_or_default();
    let sb = match listed
        .iter()
        .filter(|_| setup)
        .find(|p| p.state == cri::PodSandboxState::SandboxReady as i32)
    {
        Some(p) => Some(p.id.clone()),
        None if !setup => None,
        None => match c.run_pod(pod).await {
            Ok(id) => Some(id),
            Err(e) => {
                errs.push(format!("RunPodSandbox retry: {e:?}"));
                None
            }
        },
    };
    if let Some(sb) = &sb {
        let ctrs = c
            .runtime
            .list_containers(cri::ListContainersRequest::default())
            .await
            .map(|r| r.into_inner().containers)
            .unwrap_or_default();
        let created = ctrs
            .iter()
            .find(|x| &x.pod_sandbox_id == sb && x.state == cri::ContainerState::ContainerCreated as i32);
        if let Some(x) = created {
            if let Err(e) = c.start(&x.id).await {
                errs.push(format!("StartContainer retry: {e:?}"));
            }
        } else if !ctrs.iter().any(|x| &x.pod_sandbox_id == sb) {
            match c.create(sb, &sleeper(), pod).await {
                Ok(id) => {
                    if let Err(e) = c.start(&id).await {
                        errs.push(format!("StartContainer retry: {e:?}"));
                    }
                }
                Err(e) => errs.push(format!("CreateContainer retry: {e:?}")),
            }
        }
    }
    // Teardown of every pod berthd lists, as kubelet's GC would.
    let listed = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .map(|r| r.into_inner().items)
        .unwrap_or_default();
    for p in listed {
        if let Err(e) = c.stop_and_remove_pod(&p.id).await {
            errs.push(format!("teardown of {}: {:?}", p.id, e.message()));
        }
    }
    errs
}

/// One point: abort there, restart, retry and tear down, then look for
/// leaks. Returns what went wrong (empty: nothing).
async fn one_point(point: &str, n: usize) -> Vec<String> {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    if call_of(point) != "pull_image" {
        c.pull(&busybox()).await.expect("pull");
    }
    let pod = crash_pod(&b, &format!("crash-{n}"), 21000 + n as i32);
    let nat_before = nat_rules(&b);
    b.kill_hard();
    let mut c = b
        .spawn_env(&[("BERTH_CRASH_AT", point)])
        .await
        .expect("berthd with the crash point");
    let mut found = Vec::new();
    if let Ok(()) = reach(&mut c, &pod, point).await {
        found.push("the call answered: the crash point was never reached".to_string());
    }
    match b.wait_exit(Duration::from_secs(60)) {
        Some(st) if st.signal() == Some(libc::SIGABRT) => {}
        other => found.push(format!("berthd did not abort at the point: {other:?}")),
    }
    if !b.log().contains(point) {
        found.push("berthd's log does not name the point".into());
    }
    b.kill_hard();
    drop(c);
    let mut c = b.spawn().await.expect("berthd restarts after the crash");
    found.extend(kubelet_retry_and_teardown(&mut c, &pod, point).await);
    found.extend(leaks(&b, &mut c, &nat_before).await);
    reap_leftovers(&b);
    found
}

/// Runs every point of `calls`; fails listing every leak of every point.
async fn points(calls: &[&str]) {
    let src = include_str!("../../runtime/src/crash.rs");
    let all: Vec<&str> = src
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('"') && l.ends_with("\","))
        .map(|l| l.trim_matches(|c| c == '"' || c == ','))
        .collect();
    let mine: Vec<&str> = all
        .iter()
        .copied()
        .filter(|p| calls.contains(&call_of(p)))
        .collect();
    assert!(
        !mine.is_empty(),
        "no crash points for {calls:?} in crash.rs: {all:?}"
    );
    let mut report = Vec::new();
    for (i, point) in mine.iter().enumerate() {
        let found = one_point(point, i).await;
        eprintln!(
            "crash point {point}: {}",
            if found.is_empty() {
                "clean".into()
            } else {
                found.join("; ")
            }
        );
        if !found.is_empty() {
            report.push(format!("{point}: {}", found.join("; ")));
        }
    }
    assert!(
        report.is_empty(),
        "leaks after crash points:\n{}",
        report.join("\n")
    );
}

#[tokio::test]
async fn crash_run_pod_sandbox_points_leave_nothing() {
    points(&["run_sandbox"]).await;
}

#[tokio::test]
async fn crash_create_container_points_leave_nothing() {
    points(&["create_container"]).await;
}

#[tokio::test]
async fn crash_container_calls_leave_nothing() {
    points(&["start_container", "stop_container", "remove_container"]).await;
}

#[tokio::test]
async fn crash_pod_teardown_points_leave_nothing() {
    points(&["stop_sandbox", "remove_sandbox"]).await;
}

#[tokio::test]
async fn crash_image_points_leave_nothing() {
    points(&["pull_image", "remove_image"]).await;
}

/// A pod whose record and intent are both gone (a berthd killed on a path
/// the intents do not cover, or a record lost with its disk): no CRI call
/// will ever name it, so start-up must find its shim, cgroup and network by
/// what Berth recognises as its own, including the IP lease and portmap
/// chains, which name the pod only by its (tagged) id.
#[tokio::test]
async fn crash_a_pod_no_record_or_intent_names_is_collected_with_its_lease() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    let nat_before = nat_rules(&b);
    let pod = crash_pod(&b, "unnamed", 21900);
    let id = c.run_pod(&pod).await.expect("RunPodSandbox");
    let leases = entries(&b.dir.path().join("ipam/berth-test"));
    assert!(
        leases.iter().any(|l| l.parse::<std::net::IpAddr>().is_ok()),
        "the pod holds no IP lease to lose: {leases:?}"
    );
    b.kill_hard();
    drop(c);
    let root = b.dir.path().join("root");
    std::fs::remove_file(root.join(format!("sandboxes/{id}.json"))).expect("remove the sandbox record");
    for d in ["sandbox-intents", "container-intents"] {
        for f in entries(&root.join(d)) {
            let _ = std::fs::remove_file(root.join(d).join(f));
        }
    }
    let mut c = b.spawn().await.expect("berthd restarts");
    let found = leaks(&b, &mut c, &nat_before).await;
    reap_leftovers(&b);
    assert!(found.is_empty(), "left behind by a pod nothing names: {found:?}");
}

/// CreateContainer calls whose callers gave up at every moment of the call
/// (kubelet's context deadline): each either made a container kubelet can
/// list and remove, or left nothing; the pod's teardown then leaves nothing.
#[tokio::test]
async fn crash_cancelled_create_container_calls_leave_nothing() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let nat_before = nat_rules(&b);
    let pod = crash_pod(&b, "cancel", 21901);
    let sb = c.run_pod(&pod).await.expect("RunPodSandbox");
    let mut outcomes = Vec::new();
    for (i, ms) in [1u64, 3, 10, 30, 60, 100, 200, 400].into_iter().enumerate() {
        let mut cfg = sleeper();
        cfg.metadata = Some(cri::ContainerMetadata {
            name: format!("app{i}"),
            attempt: 0,
        });
        let create = c.runtime.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(cfg),
            sandbox_config: Some(pod.clone()),
        });
        // Dropping the call's future resets the stream, as a caller's
        // deadline does: the server's handler future is dropped with it.
        let r = tokio::time::timeout(Duration::from_millis(ms), create).await;
        outcomes.push((ms, r.map(|r| r.is_ok()).ok()));
    }
    eprintln!("cancelled creates (ms, answered ok?): {outcomes:?}");
    // A create whose caller left may still be running: it holds its intent
    // until it has finished or undone everything.
    let intents = b.dir.path().join("root/container-intents");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !entries(&intents).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listed = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    for ctr in &listed {
        c.runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: ctr.id.clone(),
            })
            .await
            .expect("RemoveContainer of a listed container");
    }
    c.stop_and_remove_pod(&sb).await.expect("pod teardown");
    let found = leaks(&b, &mut c, &nat_before).await;
    reap_leftovers(&b);
    assert!(found.is_empty(), "left behind by cancelled creates: {found:?}");
}

/// A small deterministic generator (xorshift64*): the same seed gives the
/// same kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Pod set-up and teardown, over and over, until berthd dies under it.
async fn churn(mut c: CriClient, b_log_dir: std::path::PathBuf, round: u32) {
    for i in 0u32.. {
        let mut pod = pod_config(&format!("churn-{round}-{i}"), &b_log_dir);
        pod.port_mappings = vec![cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 8080,
            host_port: 22000 + (i % 100) as i32,
            host_ip: String::new(),
        }];
        let Ok(sb) = c.run_pod(&pod).await else { return };
        let Ok(id) = c.create(&sb, &sleeper(), &pod).await else {
            return;
        };
        if c.start(&id).await.is_err() || c.stop(&id, 0).await.is_err() || c.remove(&id).await.is_err() {
            return;
        }
        if c.stop_and_remove_pod(&sb).await.is_err() {
            return;
        }
    }
}

/// berthd SIGKILLed at random moments of pod set-up and teardown; after
/// each restart kubelet's teardown removes what is listed, and nothing is
/// left, round after round.
#[tokio::test]
async fn crash_random_kills_during_pod_churn_leave_nothing() {
    let rounds: u32 = std::env::var("BERTH_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("BERTH_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234_abcd);
    let mut rng = Rng(seed.max(1));
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let nat_before = nat_rules(&b);
    let mut leaky_rounds = Vec::new();
    let loop_start = std::time::Instant::now();
    let mut round_ms = Vec::new();
    for round in 0..rounds {
        let round_start = std::time::Instant::now();
        // Up to 3 s: a set-up plus teardown takes about that in the VM.
        let delay_ms = rng.next() % 3000;
        let task = tokio::spawn(churn(c.clone(), b.log_dir(), round));
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        b.kill_hard();
        task.abort();
        let _ = task.await;
        drop(c);
        c = b.spawn().await.expect("berthd restarts");
        let listed = c
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .expect("list")
            .into_inner()
            .items;
        let mut found = Vec::new();
        for p in listed {
            if let Err(e) = c.stop_and_remove_pod(&p.id).await {
                found.push(format!("teardown of {}: {}", p.id, e.message()));
            }
        }
        found.extend(leaks(&b, &mut c, &nat_before).await);
        // Reported, never asserted: the figures of the long run.
        round_ms.push(round_start.elapsed().as_millis());
        eprintln!(
            "random kill round {round}/{rounds} at {delay_ms} ms ({} ms): {}",
            round_ms[round_ms.len() - 1],
            if found.is_empty() {
                "clean".into()
            } else {
                found.join("; ")
            }
        );
        if !found.is_empty() {
            leaky_rounds.push(format!("round {round} ({delay_ms} ms): {}", found.join("; ")));
            reap_leftovers(&b);
        }
    }
    round_ms.sort();
    eprintln!(
        "random kills: {rounds} rounds (seed {seed}), {} leaky, {} s in all, median round {} ms",
        leaky_rounds.len(),
        loop_start.elapsed().as_secs(),
        round_ms.get(round_ms.len() / 2).copied().unwrap_or_default()
    );
    assert!(leaky_rounds.is_empty(), "{}", leaky_rounds.join("\n"));
}
