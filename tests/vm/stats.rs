//! Stats RPCs against the real kernel: CPU rate and PSI from cgroup v2,
//! working set, memory pressure, pod network counters from the pod's netns,
//! writable-layer growth, the cAdvisor-style metrics, and the latency of the
//! list calls with 20 pods (kubelet calls them every housekeeping period).
//!
//! Needs root, cgroup v2 with PSI, CNI bridge networking and the loopback
//! registry: runs inside the VM (`hack/vm`). Every test name contains
//! `stats`, so `BERTH_VM_FILTER=stats` runs exactly this suite.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;

const MIB: u64 = 1 << 20;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

async fn container_stats(c: &mut CriClient, id: &str) -> Result<cri::ContainerStats, tonic::Status> {
    Ok(c.runtime
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.into(),
        })
        .await?
        .into_inner()
        .stats
        .expect("stats"))
}

async fn pod_stats(c: &mut CriClient, id: &str) -> Result<cri::PodSandboxStats, tonic::Status> {
    Ok(c.runtime
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: id.into(),
        })
        .await?
        .into_inner()
        .stats
        .expect("stats"))
}

async fn list_container_stats(c: &mut CriClient, f: cri::ContainerStatsFilter) -> Vec<cri::ContainerStats> {
    c.runtime
        .list_container_stats(cri::ListContainerStatsRequest { filter: Some(f) })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats
}

async fn list_pod_stats(c: &mut CriClient, f: cri::PodSandboxStatsFilter) -> Vec<cri::PodSandboxStats> {
    c.runtime
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: Some(f) })
        .await
        .expect("ListPodSandboxStats")
        .into_inner()
        .stats
}

fn val(v: &Option<cri::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|v| v.value)
}

/// Creates and starts `script` in the pod (with `memory_limit` bytes if
/// non-zero) and waits until `ready` appears in its log.
async fn start_ready(
    c: &mut CriClient,
    b: &Berthd,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    name: &str,
    script: &str,
    memory_limit: i64,
) -> String {
    let mut cfg = container_config(name, &busybox(), &["sh", "-c", script]);
    cfg.labels.insert("stats-test".into(), name.into());
    if memory_limit > 0 {
        cfg.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: memory_limit,
            ..Default::default()
        });
    }
    let id = c.create(sb, &cfg, pod).await.expect("create");
    c.start(&id).await.expect("start");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !log_lines(&b.log_dir().join(format!("{name}.log")))
        .iter()
        .any(|l| l == "ready")
    {
        assert!(Instant::now() < deadline, "{name} never got ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    id
}

/// CPU the container used (ns, cumulative) and its rate (nano-cores), with
/// the sample's timestamp.
fn cpu_of(s: &cri::ContainerStats) -> (u64, Option<u64>, i64) {
    let cpu = s.cpu.as_ref().expect("cpu of a running container");
    (
        val(&cpu.usage_core_nano_seconds).expect("cumulative usage"),
        val(&cpu.usage_nano_cores),
        cpu.timestamp,
    )
}

/// A busy loop next to an idle container: the counters only grow, the busy
/// one's usage and rate are strictly above the idle one's, and no rate
/// exceeds what the VM's CPUs can give (a unit error would). How close the
/// busy rate comes to one core depends on the machine's load: that figure
/// is printed as BERTH-BENCH, never asserted.
#[tokio::test]
async fn stats_busy_loop_outuses_an_idle_container() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("stats-cpu", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let id = start_ready(
        &mut c,
        &b,
        &sb,
        &pod,
        "spin",
        "echo ready; while :; do :; done",
        0,
    )
    .await;
    let idle = start_ready(&mut c, &b, &sb, &pod, "idle", "echo ready; sleep 3600", 0).await;
    let (spin0, _, spin_t0) = cpu_of(&container_stats(&mut c, &id).await.unwrap());
    let (idle0, _, _) = cpu_of(&container_stats(&mut c, &idle).await.unwrap());
    // Until the busy loop has used a whole second of CPU (however long a
    // loaded machine takes to give it one), then one more sample of each.
    let deadline = Instant::now() + Duration::from_secs(300);
    let s = loop {
        let s = container_stats(&mut c, &id).await.unwrap();
        if cpu_of(&s).0 >= spin0 + 1_000_000_000 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the busy loop got no second of CPU in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let idle_s = container_stats(&mut c, &idle).await.unwrap();
    let (spin1, spin_rate, spin_t1) = cpu_of(&s);
    let (idle1, idle_rate, _) = cpu_of(&idle_s);
    let spin_rate = spin_rate.expect("a rate once a previous sample exists");
    let idle_rate = idle_rate.expect("a rate once a previous sample exists");
    let wall_ns = (spin_t1 - spin_t0).max(1) as f64;
    println!(
        "BERTH-BENCH busy_loop usage_nano_cores={spin_rate} counter_rate={} idle_usage_nano_cores={idle_rate}",
        ((spin1 - spin0) as f64 / wall_ns * 1e9) as u64
    );
    assert!(spin1 > spin0 && idle1 >= idle0, "cumulative usage only grows");
    assert!(spin_t1 > spin_t0, "newer sample, newer timestamp");
    assert!(
        spin1 - spin0 > idle1 - idle0,
        "busy used more than idle: {} vs {}",
        spin1 - spin0,
        idle1 - idle0
    );
    assert!(
        spin_rate > idle_rate,
        "busy rate {spin_rate} > idle rate {idle_rate}"
    );
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(
        spin_rate <= cpus * 1_000_000_000,
        "{spin_rate} nano-cores on {cpus} CPUs"
    );
    let cpu = s.cpu.as_ref().unwrap();
    let psi = cpu.psi.as_ref().expect("cpu PSI");
    assert!(psi.some.is_some(), "{psi:?}");
    assert_eq!(
        s.attributes.as_ref().unwrap().metadata.as_ref().unwrap().name,
        "spin"
    );

    // The pod cgroup holds both containers: its usage covers theirs, and
    // its rate (from two samples of the pod) is above the idle one's.
    let p = pod_stats(&mut c, &sb).await.unwrap();
    let linux = p.linux.as_ref().unwrap();
    let pod_cpu = linux.cpu.as_ref().unwrap();
    let pod_used0 = val(&pod_cpu.usage_core_nano_seconds).unwrap();
    assert!(pod_used0 >= spin1 + idle1, "pod {pod_used0} < {spin1} + {idle1}");
    assert!(val(&linux.process.as_ref().unwrap().process_count).unwrap() >= 2);
    assert_eq!(linux.containers.len(), 2);
    assert_eq!(p.attributes.as_ref().unwrap().id, sb);
    let deadline = Instant::now() + Duration::from_secs(300);
    // The rate needs a window of a second or more since that first sample.
    let pod_cores = loop {
        let p = pod_stats(&mut c, &sb).await.unwrap();
        let cpu = p.linux.unwrap().cpu.unwrap();
        if let Some(rate) = val(&cpu.usage_nano_cores) {
            assert!(
                val(&cpu.usage_core_nano_seconds).unwrap() > pod_used0,
                "pod usage grows"
            );
            break rate;
        }
        assert!(Instant::now() < deadline, "no pod rate after 300 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        pod_cores > idle_rate,
        "pod usage_nano_cores {pod_cores} vs idle {idle_rate}"
    );

    // Filters: id prefix, pod id, labels (ANDed).
    let by_pod = list_container_stats(
        &mut c,
        cri::ContainerStatsFilter {
            pod_sandbox_id: sb.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_pod.len(), 2);
    let by_label = list_container_stats(
        &mut c,
        cri::ContainerStatsFilter {
            label_selector: [("stats-test".to_string(), "idle".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        by_label
            .iter()
            .map(|s| s.attributes.as_ref().unwrap().id.clone())
            .collect::<Vec<_>>(),
        vec![idle.clone()]
    );
    let by_id = list_container_stats(
        &mut c,
        cri::ContainerStatsFilter {
            id: id[..12].into(),
            pod_sandbox_id: sb.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].attributes.as_ref().unwrap().id, id);
    let none = list_container_stats(
        &mut c,
        cri::ContainerStatsFilter {
            id: id.clone(),
            label_selector: [("stats-test".to_string(), "idle".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    assert!(none.is_empty(), "filters are ANDed");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn stats_working_set_covers_64_mib_held() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("stats-mem", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let limit = 512 * MIB;
    // 64 MiB of anonymous memory: dd's buffer, filled from /dev/zero and
    // held while dd blocks writing to a reader that never reads.
    let id = start_ready(
        &mut c,
        &b,
        &sb,
        &pod,
        "hold",
        "echo ready; dd if=/dev/zero bs=67108864 count=1 | sleep 3600",
        limit as i64,
    )
    .await;
    // Filling 64 MiB takes a while under TCG: poll, then check everything
    // on the reading that showed it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let s = container_stats(&mut c, &id).await.unwrap();
        let m = s.memory.as_ref().expect("memory of a running container");
        // The working set counts page tables and kernel memory too, so it
        // can pass 64 MiB while dd is still faulting its buffer in: wait
        // for the anonymous memory itself.
        if val(&m.working_set_bytes).unwrap() >= 64 * MIB && val(&m.rss_bytes).unwrap() >= 64 * MIB {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "working set or rss below 64 MiB after 60 s: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let m = s.memory.as_ref().unwrap();
    let ws = val(&m.working_set_bytes).unwrap();
    let usage = val(&m.usage_bytes).unwrap();
    let rss = val(&m.rss_bytes).unwrap();
    println!("BERTH-BENCH hold_64mib working_set={ws} usage={usage} rss={rss}");
    assert!(ws >= 64 * MIB, "working set {ws}");
    assert!(rss >= 64 * MIB, "rss {rss}");
    assert!(usage >= ws);
    assert_eq!(
        val(&m.available_bytes),
        Some(limit - ws),
        "limit minus working set"
    );
    assert!(val(&m.page_faults).unwrap() > 0);
    assert!(val(&m.major_page_faults).is_some());
    assert!(m.psi.is_some());
    assert!(s.io.as_ref().and_then(|io| io.psi.as_ref()).is_some(), "IO PSI");
    // With swap accounting in the kernel (no swap device in the VM: 0 used).
    let cg =
        Path::new("/sys/fs/cgroup").join(format!("{}/{sb}/{id}", b.cgroup_parent).trim_start_matches('/'));
    assert!(cg.join("memory.current").exists(), "{}", cg.display());
    if cg.join("memory.swap.current").exists() {
        let swap = s.swap.as_ref().expect("swap usage");
        assert_eq!(val(&swap.swap_usage_bytes), Some(0));
    } else {
        assert!(s.swap.is_none());
    }
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn stats_memory_pressure_is_reported() {
    // A real block filesystem (ext2 on the VM's RAM disk): the reader's page
    // cache is reclaimable, so a tight memory.max makes the kernel reclaim
    // on every read -- a memory stall PSI counts -- instead of OOM-killing.
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let mnt = b.dir.path().join("disk");
    std::fs::create_dir_all(&mnt).unwrap();
    let sh = |cmd: String| {
        let st = Command::new("sh").arg("-c").arg(&cmd).status().unwrap();
        assert!(st.success(), "{cmd}");
    };
    sh(format!(
        "mke2fs -F /dev/ram0 >/dev/null 2>&1 && mount /dev/ram0 {}",
        mnt.display()
    ));
    let _unmount = Unmount(mnt.clone());
    // Written from here and dropped from the page cache, so the
    // container's reads are what charges (and reclaims) its pages.
    sh(format!(
        "head -c 67108864 /dev/zero > {}/big && sync && echo 3 > /proc/sys/vm/drop_caches",
        mnt.display()
    ));
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("stats-psi", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut cfg = container_config(
        "thrash",
        &busybox(),
        &["sh", "-c", "while :; do cat /data/big > /dev/null; done"],
    );
    cfg.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: (24 * MIB) as i64,
        ..Default::default()
    });
    cfg.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: mnt.to_string_lossy().into_owned(),
        ..Default::default()
    });
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let (some, full) = loop {
        let s = container_stats(&mut c, &id).await.unwrap();
        let psi = s
            .memory
            .as_ref()
            .and_then(|m| m.psi)
            .expect("memory PSI of a running container");
        let some = psi.some.as_ref().unwrap().total;
        if some > 0 {
            break (some, psi.full.map(|f| f.total));
        }
        assert!(Instant::now() < deadline, "no memory stall after 90 s: {psi:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("BERTH-BENCH memory_pressure some_total_ns={some} full_total_ns={full:?}");
    // The same stall shows in the metrics (whole seconds, so only the
    // series' presence is certain).
    let m = c
        .runtime
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner();
    let ours = m
        .pod_metrics
        .iter()
        .find(|p| p.pod_sandbox_id == sb)
        .expect("pod metrics");
    let ctr = ours
        .container_metrics
        .iter()
        .find(|cm| cm.container_id == id)
        .expect("container metrics");
    assert!(ctr
        .metrics
        .iter()
        .any(|m| m.name == "container_pressure_memory_waiting_seconds_total"));
    assert_eq!(
        c.status(&id).await.unwrap().status.unwrap().state,
        cri::ContainerState::ContainerRunning as i32,
        "pressure, not an OOM kill"
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// eth0's (rx, tx) bytes of a pod.
async fn eth0(c: &mut CriClient, sb: &str) -> (u64, u64) {
    let p = pod_stats(c, sb).await.unwrap();
    let net = p.linux.unwrap().network.expect("network of a CNI pod");
    assert!(net.timestamp > 0);
    let i = net.default_interface.expect("eth0");
    assert_eq!(i.name, "eth0");
    assert!(val(&i.rx_errors).is_some() && val(&i.tx_errors).is_some());
    (val(&i.rx_bytes).unwrap(), val(&i.tx_bytes).unwrap())
}

#[tokio::test]
async fn stats_pod_network_counters_grow_with_traffic() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod_a = pod_config("stats-net-a", &b.log_dir());
    let a = c.run_pod(&pod_a).await.expect("runp a");
    let pod_b = pod_config("stats-net-b", &b.log_dir());
    let bb = c.run_pod(&pod_b).await.expect("runp b");
    let ip_a = c.pod_status(&a).await.unwrap().0.network.unwrap().ip;
    // Pod A serves a 1 MiB file over HTTP; pod B downloads it once.
    start_ready(
        &mut c,
        &b,
        &a,
        &pod_a,
        "server",
        "mkdir -p /www && head -c 1048576 /dev/zero > /www/blob && echo ready && exec httpd -f -p 8080 -h /www",
        0,
    )
    .await;
    let (a_rx0, a_tx0) = eth0(&mut c, &a).await;
    let (b_rx0, b_tx0) = eth0(&mut c, &bb).await;
    let fetch = format!(
        "for i in $(seq 100); do wget -q -O /dev/null http://{ip_a}:8080/blob && exit 0; sleep 0.2; done; exit 1"
    );
    let (_, st) = c
        .run_to_exit(
            &bb,
            &container_config("client", &busybox(), &["sh", "-c", &fetch]),
            &pod_b,
        )
        .await
        .unwrap();
    assert_eq!(st.exit_code, 0, "the client got 1 MiB");
    let (a_rx1, a_tx1) = eth0(&mut c, &a).await;
    let (b_rx1, b_tx1) = eth0(&mut c, &bb).await;
    println!(
        "BERTH-BENCH pod_network a_tx_delta={} b_rx_delta={} a_rx_delta={} b_tx_delta={}",
        a_tx1 - a_tx0,
        b_rx1 - b_rx0,
        a_rx1 - a_rx0,
        b_tx1 - b_tx0
    );
    assert!(a_tx1 - a_tx0 >= MIB, "server pod sent 1 MiB: {a_tx0} -> {a_tx1}");
    assert!(
        b_rx1 - b_rx0 >= MIB,
        "client pod received 1 MiB: {b_rx0} -> {b_rx1}"
    );
    assert!(a_rx1 > a_rx0 && b_tx1 > b_tx0, "requests and ACKs the other way");

    // The metrics carry the same counters, labelled by interface, with as
    // many values as their descriptor has keys.
    let descs = c
        .runtime
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    let keys = |name: &str| {
        descs
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("descriptor {name}"))
            .label_keys
            .clone()
    };
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_fs_usage_bytes",
        "container_pressure_cpu_waiting_seconds_total",
    ] {
        assert!(keys(name).contains(&"pod".to_string()), "{name}");
    }
    let rx_keys = keys("container_network_receive_bytes_total");
    let m = c
        .runtime
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner();
    let pod_b_metrics = m
        .pod_metrics
        .iter()
        .find(|p| p.pod_sandbox_id == bb)
        .expect("pod b");
    let rx = pod_b_metrics
        .metrics
        .iter()
        .find(|m| {
            m.name == "container_network_receive_bytes_total"
                && m.label_values.last().map(String::as_str) == Some("eth0")
        })
        .expect("rx series of eth0");
    assert_eq!(rx.label_values.len(), rx_keys.len());
    let pod_label = rx_keys.iter().position(|k| k == "pod").unwrap();
    assert_eq!(rx.label_values[pod_label], "stats-net-b");
    assert!(rx.value.as_ref().unwrap().value >= b_rx1);
    for pm in &m.pod_metrics {
        for metric in pm
            .metrics
            .iter()
            .chain(pm.container_metrics.iter().flat_map(|cm| &cm.metrics))
        {
            assert_eq!(metric.label_values.len(), keys(&metric.name).len(), "{metric:?}");
        }
    }
    let server_metrics = &m
        .pod_metrics
        .iter()
        .find(|p| p.pod_sandbox_id == a)
        .unwrap()
        .container_metrics;
    assert_eq!(server_metrics.len(), 1, "the running server only");
    assert!(server_metrics[0]
        .metrics
        .iter()
        .any(|m| m.name == "container_cpu_usage_seconds_total"));
    c.stop_and_remove_pod(&a).await.unwrap();
    c.stop_and_remove_pod(&bb).await.unwrap();
}

#[tokio::test]
async fn stats_writable_layer_grows_after_a_10_mib_write() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("stats-fs", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let id = start_ready(&mut c, &b, &sb, &pod, "writer", "echo ready; sleep 3600", 0).await;
    // The first call may come before the background walk: poll for it.
    let layer = |s: &cri::ContainerStats| s.writable_layer.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        if let Some(l) = layer(&container_stats(&mut c, &id).await.unwrap()) {
            break l;
        }
        assert!(Instant::now() < deadline, "no writable layer stats after 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        before.fs_id.as_ref().unwrap().mountpoint,
        b.dir.path().join("root/containers").to_string_lossy()
    );
    let (code, _) = c
        .exec(&id, &["dd", "if=/dev/zero", "of=/big", "bs=1048576", "count=10"])
        .await
        .unwrap();
    assert_eq!(code, 0);
    let used0 = val(&before.used_bytes).unwrap();
    let t = Instant::now();
    let after = loop {
        let l = layer(&container_stats(&mut c, &id).await.unwrap()).unwrap();
        if val(&l.used_bytes).unwrap() >= used0 + 10 * MIB {
            break l;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "layer did not grow: {l:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "BERTH-BENCH writable_layer before={used0} after={} visible_after_ms={}",
        val(&after.used_bytes).unwrap(),
        t.elapsed().as_millis()
    );
    assert!(val(&after.inodes_used).unwrap() > val(&before.inodes_used).unwrap());
    assert!(after.timestamp > before.timestamp);
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn stats_of_unknown_ids_are_not_found_and_stopped_ones_are_empty() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    for e in [
        container_stats(&mut c, "no-such-container").await.unwrap_err(),
        pod_stats(&mut c, "no-such-pod").await.unwrap_err(),
    ] {
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    }
    let pod = pod_config("stats-stopped", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let (done, st) = c
        .run_to_exit(&sb, &container_config("done", &busybox(), &["true"]), &pod)
        .await
        .unwrap();
    assert_eq!(st.exit_code, 0);
    let s = container_stats(&mut c, &done)
        .await
        .expect("a stopped container is no error");
    assert_eq!(s.attributes.as_ref().unwrap().id, done);
    assert!(
        s.cpu.is_none() && s.memory.is_none() && s.swap.is_none() && s.io.is_none(),
        "{s:?}"
    );
    let listed = list_container_stats(&mut c, cri::ContainerStatsFilter::default()).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].cpu.is_none());

    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await
        .unwrap();
    let p = pod_stats(&mut c, &sb).await.expect("a stopped pod is no error");
    let linux = p.linux.unwrap();
    assert!(linux.cpu.is_none() && linux.memory.is_none() && linux.network.is_none());
    assert_eq!(linux.containers.len(), 1);
    assert!(
        list_pod_stats(&mut c, cri::PodSandboxStatsFilter::default())
            .await
            .is_empty(),
        "only ready pods are listed"
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn measure_stats_latency() {
    const PODS: usize = 20;
    const CALLS: usize = 20;
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let mut pods = Vec::new();
    for i in 0..PODS {
        let pod = pod_config(&format!("stats-bench{i}"), &b.log_dir());
        let sb = c.run_pod(&pod).await.expect("runp");
        let id = c
            .create(
                &sb,
                &container_config("app", &busybox(), &["sleep", "3600"]),
                &pod,
            )
            .await
            .unwrap();
        c.start(&id).await.unwrap();
        pods.push(sb);
    }
    let mut ctr = Vec::new();
    let mut pod = Vec::new();
    for _ in 0..CALLS {
        let t = Instant::now();
        let s = list_container_stats(&mut c, cri::ContainerStatsFilter::default()).await;
        ctr.push(t.elapsed());
        assert_eq!(s.len(), PODS);
        assert!(s.iter().all(|s| s.cpu.is_some() && s.memory.is_some()));
        let t = Instant::now();
        let s = list_pod_stats(&mut c, cri::PodSandboxStatsFilter::default()).await;
        pod.push(t.elapsed());
        assert_eq!(s.len(), PODS);
        assert!(s.iter().all(|p| p.linux.as_ref().unwrap().network.is_some()));
    }
    // The floor under TCG: this process reading the same cgroup files
    // berthd reads for ListContainerStats, without any RPC around it.
    let files = [
        "cpu.stat",
        "cpu.pressure",
        "memory.current",
        "memory.max",
        "memory.stat",
        "memory.pressure",
        "memory.swap.current",
        "memory.swap.max",
        "io.pressure",
        "pids.current",
        "memory.events",
    ];
    let dirs: Vec<_> =
        std::fs::read_dir(Path::new("/sys/fs/cgroup").join(b.cgroup_parent.trim_start_matches('/')))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .flat_map(|pod| std::fs::read_dir(pod.path()).unwrap().flatten())
            .filter(|e| e.path().is_dir())
            .map(|e| e.path())
            .collect();
    assert_eq!(dirs.len(), PODS, "one container cgroup per pod");
    let mut raw = Vec::new();
    for _ in 0..CALLS {
        let t = Instant::now();
        for d in &dirs {
            for f in files {
                let _ = std::fs::read_to_string(d.join(f));
            }
        }
        raw.push(t.elapsed());
    }
    let (ctr, pod, raw) = (median(ctr), median(pod), median(raw));
    println!(
        "BERTH-BENCH pods={PODS} calls={CALLS} list_container_stats_median_ms={:.2} list_pod_sandbox_stats_median_ms={:.2} raw_cgroup_reads_median_ms={:.2}",
        ctr.as_secs_f64() * 1e3,
        pod.as_secs_f64() * 1e3,
        raw.as_secs_f64() * 1e3,
    );
    // The figures are a benchmark's (kubelet's housekeeping budget is 10 s);
    // a test asserts no durations.
    for sb in &pods {
        c.stop_and_remove_pod(sb).await.unwrap();
    }
}
