//! Pod sandboxes with real CNI networking (Debian's bridge + host-local
//! plugins), name-service files and sysctls, driven through the CRI socket.
//!
//! Needs root, cgroup v2, the bridge/veth modules and the loopback registry:
//! runs inside the VM (`hack/vm`). Run with `--test-threads=1`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// Runs `argv` in the pod to completion; returns (exit code, stdout lines).
async fn run_in_pod(
    c: &mut CriClient,
    b: &Berthd,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    name: &str,
    argv: &[&str],
) -> (i32, Vec<String>) {
    let cfg = container_config(name, &busybox(), argv);
    let id = c.create(sb, &cfg, pod).await.expect("create");
    c.start(&id).await.expect("start");
    let s = c.wait_exited(&id, Duration::from_secs(30)).await.expect("exit");
    let log = std::fs::read_to_string(b.log_dir().join(format!("{name}.log"))).unwrap_or_default();
    let out = log
        .lines()
        .filter_map(parse_cri_log_line)
        .filter(|l| l.1 == "stdout")
        .map(|l| l.3)
        .collect();
    c.remove(&id).await.expect("remove");
    (s.exit_code, out)
}

/// `berth-shim pod-init` processes whose parent is a shim of this test's
/// berthd (its `--socket` is under the test's state dir), not the whole
/// VM's: another suite's leftover is not this test's business.
fn pod_inits_of(b: &Berthd) -> Vec<u32> {
    let ours = format!("--socket {}/state/", b.dir.path().display());
    let shims: Vec<u32> = processes_matching(&ours)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    processes_matching("pod-init")
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| {
            // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            ppid.is_some_and(|p| shims.contains(&p))
        })
        .collect()
}

async fn pod_info(c: &mut CriClient, sb: &str) -> (cri::PodSandboxStatus, serde_json::Value) {
    c.pod_status(sb).await.expect("pod status")
}

/// Host-side veth devices (one per attached pod on the bridge plugin).
fn host_veths() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Addresses inside a pinned network namespace.
fn addrs_in(netns: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["ip", "-o", "addr", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn two_pods_reach_each_other_and_keep_their_ip() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let net = b.net.clone().unwrap();
    c.pull(&busybox()).await.expect("pull");
    let veths_before = host_veths().len();

    let pod_a = pod_config("net-a", &b.log_dir());
    let a = c.run_pod(&pod_a).await.expect("runp a");
    let pod_b = pod_config("net-b", &b.log_dir());
    let bb = c.run_pod(&pod_b).await.expect("runp b");
    let (st_a, info_a) = pod_info(&mut c, &a).await;
    let (st_b, _) = pod_info(&mut c, &bb).await;
    let ip_a = st_a.network.as_ref().unwrap().ip.clone();
    let ip_b = st_b.network.as_ref().unwrap().ip.clone();
    let prefix = net.subnet.trim_end_matches("0/24");
    assert!(
        ip_a.starts_with(prefix) && ip_b.starts_with(prefix),
        "{ip_a} {ip_b} in {}",
        net.subnet
    );
    assert_ne!(ip_a, ip_b);
    assert_eq!(info_a["networkCheck"], "ok", "CNI CHECK passes: {info_a}");
    assert_eq!(host_veths().len(), veths_before + 2, "one veth per pod");

    // A server in pod A, a client in pod B.
    let server = container_config(
        "server",
        &busybox(),
        &[
            "sh",
            "-c",
            "while true; do echo hello-from-a | nc -l -p 7000; done",
        ],
    );
    let srv = c.create(&a, &server, &pod_a).await.unwrap();
    c.start(&srv).await.unwrap();
    let connect = format!("for i in $(seq 100); do nc -w 2 {ip_a} 7000 && exit 0; sleep 0.1; done; exit 1");
    let (code, out) = run_in_pod(&mut c, &b, &bb, &pod_b, "client", &["sh", "-c", &connect]).await;
    assert_eq!((code, out), (0, vec!["hello-from-a".to_string()]));

    // Stopping and removing every container keeps the pod's IP and netns.
    c.stop(&srv, 0).await.unwrap();
    c.remove(&srv).await.unwrap();
    let (st_a2, _) = pod_info(&mut c, &a).await;
    assert_eq!(st_a2.network.unwrap().ip, ip_a);
    let netns = info_a["namespaces"]["net"].as_str().unwrap().to_string();
    assert!(
        addrs_in(&netns).contains(&format!("{ip_a}/24")),
        "{}",
        addrs_in(&netns)
    );
    let (code, out) = run_in_pod(
        &mut c,
        &b,
        &a,
        &pod_a,
        "again",
        &["sh", "-c", "ip addr show eth0"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.join("\n").contains(&format!("inet {ip_a}/24")), "{out:?}");

    for sb in [&a, &bb] {
        c.stop_and_remove_pod(sb).await.expect("stop+remove");
    }
    assert_eq!(
        host_veths().len(),
        veths_before,
        "veths removed: {:?}",
        host_veths()
    );
    assert!(mounts_containing(&netns).is_empty(), "netns pin unmounted");
    let ipam = b.dir.path().join("ipam/berth-test");
    let leases: Vec<_> = std::fs::read_dir(&ipam)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leases
            .iter()
            .all(|l| l.starts_with("last_reserved_ip") || l == "lock"),
        "IPAM leases released: {leases:?}"
    );
    assert!(processes_matching(&format!("--socket {}/state/", b.dir.path().display())).is_empty());
}

#[tokio::test]
async fn pod_files_and_sysctls_are_what_kubelet_asked_for() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let mut pod = pod_config("files", &b.log_dir());
    pod.hostname = "files-0".into();
    pod.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    pod.linux.as_mut().unwrap().sysctls = [
        ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
        (
            "net.ipv4.ip_local_port_range".to_string(),
            "20000 30000".to_string(),
        ),
    ]
    .into();
    let host_range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let sb = c.run_pod(&pod).await.expect("runp");
    let (st, _) = pod_info(&mut c, &sb).await;
    let ip = st.network.unwrap().ip;
    let (code, out) = run_in_pod(
        &mut c,
        &b,
        &sb,
        &pod,
        "show",
        &[
            "sh",
            "-c",
            "cat /etc/resolv.conf; echo ---; tail -n1 /etc/hosts; echo ---; cat /etc/hostname; hostname; \
             echo ---; cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_local_port_range",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let expected: Vec<String> = [
        "search default.svc.cluster.local svc.cluster.local",
        "nameserver 10.96.0.10",
        "options ndots:5",
        "---",
        &format!("{ip}\tfiles-0"),
        "---",
        "files-0",
        "files-0",
        "---",
        "1",
        "20000\t30000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(out, expected);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap(),
        host_range,
        "the node's value is untouched"
    );
    c.stop_and_remove_pod(&sb).await.unwrap();

    // A node-wide sysctl is refused up front, and nothing is left.
    let veths = host_veths().len();
    let mut bad = pod_config("badsysctl", &b.log_dir());
    bad.linux.as_mut().unwrap().sysctls = [("vm.swappiness".to_string(), "10".to_string())].into();
    let e = c.run_pod(&bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("not namespaced"), "{}", e.message());
    let mut unknown = pod_config("unknownsysctl", &b.log_dir());
    unknown.linux.as_mut().unwrap().sysctls = [("net.ipv4.no_such_knob".to_string(), "1".to_string())].into();
    let e = c.run_pod(&unknown).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("does not exist"), "{}", e.message());
    assert_eq!(
        host_veths().len(),
        veths,
        "a pod refused before CNI ADD gets no network"
    );
    let left = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(left.items.is_empty(), "{left:?}");
    assert!(mounts_containing(&b.dir.path().to_string_lossy()).is_empty());
}

/// A step failing after CNI ADD (the resolv.conf step refuses a DNS server
/// that is no IP address; the bridge plugin has attached the pod by then)
/// rolls the attachment back with CNI DEL: host-local releases the address
/// and the bridge plugin removes the veth.
#[tokio::test]
async fn a_pod_failing_after_cni_add_is_detached_with_cni_del() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let ipam = b.dir.path().join("ipam").join("berth-test");
    // host-local keeps one file per reserved address, named by the address.
    let reserved = || -> Vec<String> {
        std::fs::read_dir(&ipam)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let last_reserved = || std::fs::read_to_string(ipam.join("last_reserved_ip.0")).unwrap_or_default();
    // One good pod first: the bridge exists, and host-local's state is known.
    let good = c.run_pod(&pod_config("good", &b.log_dir())).await.expect("runp");
    c.stop_and_remove_pod(&good).await.unwrap();
    assert_eq!(reserved(), Vec::<String>::new());
    let (veths, last_before) = (host_veths().len(), last_reserved());
    assert!(!last_before.is_empty(), "host-local records its last address");

    let mut bad = pod_config("baddns", &b.log_dir());
    bad.dns_config = Some(cri::DnsConfig {
        servers: vec!["not-an-ip".into()],
        ..Default::default()
    });
    let e = c.run_pod(&bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("not an IP address"), "{}", e.message());
    // ADD ran (host-local moved on to the next address) ...
    assert_ne!(last_reserved(), last_before, "the failure came after CNI ADD");
    // ... and DEL undid it.
    assert_eq!(reserved(), Vec::<String>::new(), "CNI DEL released the address");
    assert_eq!(host_veths().len(), veths, "CNI DEL removed the pod's veth");
    let left = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(left.items.is_empty(), "{left:?}");
    assert!(mounts_containing(&b.dir.path().to_string_lossy()).is_empty());
}

#[tokio::test]
async fn host_network_pods_skip_cni_and_see_the_node() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let net = b.net.clone().unwrap();
    c.pull(&busybox()).await.expect("pull");
    // Make sure the test bridge exists on the node, via a normal pod.
    let pod = pod_config("normal", &b.log_dir());
    let normal = c.run_pod(&pod).await.unwrap();
    let veths = host_veths().len();

    let mut hp = pod_config("hostnet", &b.log_dir());
    hp.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let sb = c.run_pod(&hp).await.expect("runp hostnet");
    assert_eq!(
        host_veths().len(),
        veths,
        "no CNI attachment for a host-network pod"
    );
    let (st, info) = pod_info(&mut c, &sb).await;
    assert_eq!(st.network.unwrap().ip, "");
    // Present and null: berthd recorded no network, not "no info".
    assert_eq!(info.get("network"), Some(&serde_json::Value::Null), "{info}");
    assert!(info["pid"].as_u64().is_some_and(|p| p > 0), "{info}");
    let (code, out) = run_in_pod(&mut c, &b, &sb, &hp, "links", &["sh", "-c", "cat /proc/net/dev"]).await;
    assert_eq!(code, 0);
    assert!(
        out.iter()
            .any(|l| l.trim_start().starts_with(&format!("{}:", net.bridge))),
        "host interfaces visible: {out:?}"
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
    c.stop_and_remove_pod(&normal).await.unwrap();
}

fn with_pid_mode(mut cfg: cri::ContainerConfig, mode: cri::NamespaceMode) -> cri::ContainerConfig {
    cfg.linux.get_or_insert_with(Default::default).security_context =
        Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: mode as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
    cfg
}

/// With `shareProcessNamespace` (POD mode) a container sees its sibling's
/// processes and PID 1 is the pod's reaper; in CONTAINER mode it sees only
/// its own. The reaper goes with the pod.
#[tokio::test]
async fn pid_namespace_is_shared_only_in_pod_mode() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    for (mode, sees_sibling) in [
        (cri::NamespaceMode::Pod, true),
        (cri::NamespaceMode::Container, false),
    ] {
        let mut pod = pod_config(
            &format!("pid-{}", mode.as_str_name().to_lowercase()),
            &b.log_dir(),
        );
        pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: mode as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        let sb = c.run_pod(&pod).await.expect("runp");
        let sleeper = with_pid_mode(container_config("sleeper", &busybox(), &["sleep", "4242"]), mode);
        let s = c.create(&sb, &sleeper, &pod).await.unwrap();
        c.start(&s).await.unwrap();
        let name = format!("looker-{}", mode.as_str_name().to_lowercase());
        let looker = with_pid_mode(
            container_config(
                &name,
                &busybox(),
                &["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; ps -o args"],
            ),
            mode,
        );
        let id = c.create(&sb, &looker, &pod).await.unwrap();
        c.start(&id).await.unwrap();
        let st = c.wait_exited(&id, Duration::from_secs(20)).await.unwrap();
        assert_eq!(st.exit_code, 0);
        let log = std::fs::read_to_string(b.log_dir().join(format!("{name}.log"))).unwrap();
        let out: Vec<String> = log.lines().filter_map(parse_cri_log_line).map(|l| l.3).collect();
        let saw_sleep = out.iter().any(|l| l.contains("sleep 4242"));
        assert_eq!(saw_sleep, sees_sibling, "{mode:?}: {out:?}");
        if sees_sibling {
            assert!(out[0].contains("pod-init"), "PID 1 is the pod's reaper: {out:?}");
            assert_eq!(pod_inits_of(&b).len(), 1);
        } else {
            assert!(
                out[0].starts_with("sh -c"),
                "PID 1 is the container's own process: {out:?}"
            );
        }
        c.stop_and_remove_pod(&sb).await.unwrap();
        assert!(pod_inits_of(&b).is_empty(), "the reaper goes with the pod");
        assert!(processes_matching("sleep 4242").is_empty());
    }
}

/// A CRI port mapping through the portmap plugin: the pod's port answers on
/// the node's address from the node's own network namespace, and the NAT
/// rules go with the pod.
#[tokio::test]
async fn host_port_mapping_reaches_the_pod_and_is_cleaned_up() {
    use std::io::Read;
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let net = b.net.clone().unwrap();
    c.pull(&busybox()).await.expect("pull");
    // A host port the kernel picked, held bound for the whole test (as
    // kubelet once held host ports open): no other process can take it,
    // and the DNAT rule catches the traffic before this socket would.
    let reserved = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = reserved.local_addr().unwrap().port();
    let mut pod = pod_config("ported", &b.log_dir());
    pod.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port.into(),
        host_ip: String::new(),
    }];
    let sb = c.run_pod(&pod).await.expect("runp");
    let server = container_config(
        "web",
        &busybox(),
        &[
            "sh",
            "-c",
            "while true; do echo served-from-the-pod | nc -l -p 8080; done",
        ],
    );
    let id = c.create(&sb, &server, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    let rules = || {
        let out = Command::new("iptables-save").output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&sb[..]))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        rules().iter().any(|r| r.contains(&host_port.to_string())),
        "DNAT rule for the pod: {:?}",
        rules()
    );
    // The bridge address is one of the node's own.
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let attempt = std::net::TcpStream::connect_timeout(
            &format!("{}:{host_port}", net.gateway).parse().unwrap(),
            Duration::from_secs(2),
        )
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        });
        match attempt {
            Ok(text) if !text.is_empty() => break text,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("no answer on the host port: {other:?}"),
        }
    };
    assert_eq!(got.trim(), "served-from-the-pod");
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert!(rules().is_empty(), "NAT rules left: {:?}", rules());
}

/// A failing CNI DEL fails StopPodSandbox (so kubelet retries it) and leaves
/// the pod's network in place; once DEL can succeed, a retry cleans up. DEL
/// also runs for a pod whose berthd was restarted in between.
#[tokio::test]
async fn cni_del_is_retried_and_survives_a_berthd_restart() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    let net = b.net.clone().unwrap();
    let veths = host_veths().len();
    let pod = pod_config("retry", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    assert_eq!(host_veths().len(), veths + 1);

    let conf = net.conf_dir.join("10-berth-test.conflist");
    let good = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        good.replace("\"type\":\"portmap\"", "\"type\":\"portmap-gone\""),
    )
    .unwrap();
    let e = c
        .runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("portmap-gone"), "{}", e.message());
    assert_eq!(host_veths().len(), veths, "the bridge step of DEL still ran");
    let e = c
        .runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("portmap-gone"),
        "remove does not skip the DEL: {}",
        e.message()
    );

    // berthd restarts with the DEL still owed.
    b.kill_hard();
    drop(c);
    std::fs::write(&conf, &good).unwrap();
    let mut c = b.spawn().await.expect("restart");
    let (st, _) = pod_info(&mut c, &sb).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    c.stop_and_remove_pod(&sb)
        .await
        .expect("retry succeeds after the restart");
    let left = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(left.items.is_empty());
    assert!(mounts_containing(&b.dir.path().to_string_lossy()).is_empty());
}

/// After a reboot the records under root remain while nothing they
/// describe runs: berthd sees the new boot id and removes every stale pod
/// the way RemovePodSandbox does (CNI DEL, mounts, records), keeping the
/// images. The reboot is simulated: berthd, the shim and the container are
/// killed and the stored boot id is replaced. Before reboot detection the
/// pod came back listed NotReady.
#[tokio::test]
async fn a_reboot_leaves_no_stale_pod() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let veths = host_veths().len();
    let pod = pod_config("rebooted", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let cfg = container_config("sleeper", &busybox(), &["sleep", "3600"]);
    let ctr = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&ctr).await.expect("start");
    assert_eq!(host_veths().len(), veths + 1);
    let (_, info) = pod_info(&mut c, &sb).await;
    let shim = info["pid"].as_u64().unwrap() as i32;
    let boot = b.dir.path().join("root/boot.json");
    assert!(boot.exists(), "the boot id is stored with the records");

    b.kill_hard();
    drop(c);
    // SAFETY: kill(2) of the pod's shim.
    unsafe { libc::kill(shim, libc::SIGKILL) };
    let pods_cgroup = Path::new("/sys/fs/cgroup").join(b.cgroup_parent.trim_start_matches('/'));
    std::fs::write(pods_cgroup.join("cgroup.kill"), "1").unwrap();
    std::fs::write(
        &boot,
        r#"{"version":1,"boot_id":"00000000-0000-4000-8000-000000000000"}"#,
    )
    .unwrap();

    let mut c = b.spawn().await.expect("start after the reboot");
    let pods = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(pods.items.is_empty(), "{:?}", pods.items);
    let ctrs = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(ctrs.containers.is_empty(), "{:?}", ctrs.containers);
    assert_eq!(host_veths().len(), veths, "CNI DEL ran for the stale pod");
    assert!(mounts_containing(&b.dir.path().to_string_lossy()).is_empty());
    assert!(b.log().contains("node rebooted; removing stale pods"));
    let now = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert!(
        std::fs::read_to_string(&boot).unwrap().contains(now.trim()),
        "the new boot is recorded once the pods are gone"
    );
    let images = c.list_images().await.unwrap();
    assert!(
        images.iter().any(|i| i.repo_tags.contains(&busybox())),
        "images stay: {images:?}"
    );
}

/// A pod whose shim dies is NotReady, so kubelet recreates it.
#[tokio::test]
async fn a_dead_shim_makes_the_pod_not_ready() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let pod = pod_config("fragile", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let (st, info) = pod_info(&mut c, &sb).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    let shim = info["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) of the pod's shim.
    unsafe { libc::kill(shim, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _) = pod_info(&mut c, &sb).await;
        if st.state == cri::PodSandboxState::SandboxNotready as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "still Ready after its shim died");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop_and_remove_pod(&sb)
        .await
        .expect("stop+remove a pod with a dead shim");
    assert!(mounts_containing(&b.dir.path().to_string_lossy()).is_empty());
}

/// ListPodSandbox filters by id prefix, state and labels.
#[tokio::test]
async fn list_pod_sandbox_filters() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let mut ids = Vec::new();
    for (name, tier) in [("f1", "web"), ("f2", "web"), ("f3", "db")] {
        let mut pod = pod_config(name, &b.log_dir());
        pod.labels.insert("tier".into(), tier.into());
        ids.push(c.run_pod(&pod).await.unwrap());
    }
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: ids[1].clone(),
        })
        .await
        .unwrap();
    let list = |f: cri::PodSandboxFilter| {
        let mut c = c.runtime.clone();
        async move {
            let mut v: Vec<String> = c
                .list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .items
                .into_iter()
                .map(|p| p.id)
                .collect();
            v.sort();
            v
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        list(cri::PodSandboxFilter {
            id: ids[2][..12].to_string(),
            ..Default::default()
        })
        .await,
        vec![ids[2].clone()]
    );
    assert_eq!(
        list(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32
            }),
            ..Default::default()
        })
        .await,
        sorted(vec![ids[0].clone(), ids[2].clone()])
    );
    assert_eq!(
        list(cri::PodSandboxFilter {
            label_selector: [("tier".to_string(), "web".to_string())].into(),
            ..Default::default()
        })
        .await,
        sorted(vec![ids[0].clone(), ids[1].clone()])
    );
    for id in &ids {
        c.stop_and_remove_pod(id).await.unwrap();
    }
}

/// What kubelet reads back about a sandbox, and the lifecycle rules it
/// relies on: StopPodSandbox stops every container, RemovePodSandbox of a
/// Ready pod with running containers stops and removes them first; the
/// socket is 0660 and the pod's loopback is up.
#[tokio::test]
async fn sandbox_status_fields_and_stop_remove_semantics() {
    use std::os::unix::fs::PermissionsExt;
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let mode = std::fs::metadata(&b.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "CRI socket mode");
    c.pull(&busybox()).await.expect("pull");

    let mut pod = pod_config("fields", &b.log_dir());
    pod.metadata.as_mut().unwrap().attempt = 2;
    pod.annotations.insert("berth.test/note".into(), "kept".into());
    let before = now_ns();
    let sb = c.run_pod(&pod).await.expect("runp");
    let after = now_ns();
    let (st, _) = pod_info(&mut c, &sb).await;
    let md = st.metadata.clone().unwrap();
    assert_eq!(
        (
            md.name.as_str(),
            md.uid.as_str(),
            md.namespace.as_str(),
            md.attempt
        ),
        ("fields", "uid-fields", "default", 2)
    );
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    assert!(
        (before..=after).contains(&st.created_at),
        "created_at {} not in [{before}, {after}]",
        st.created_at
    );
    assert_eq!(st.labels.get("app").map(String::as_str), Some("fields"));
    assert_eq!(
        st.annotations.get("berth.test/note").map(String::as_str),
        Some("kept")
    );
    assert_eq!(st.runtime_handler, "");
    assert!(!st.network.unwrap().ip.is_empty(), "pod IP");
    // Loopback is up in the pod's netns (IFF_UP is bit 0 of the flags).
    let (code, out) = run_in_pod(&mut c, &b, &sb, &pod, "lo", &["cat", "/sys/class/net/lo/flags"]).await;
    assert_eq!(code, 0);
    let flags = u32::from_str_radix(out[0].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo flags {}", out[0]);

    // StopPodSandbox alone: both running containers end up Exited.
    let mut ids = vec![];
    for name in ["stop-a", "stop-b"] {
        let id = c
            .create(&sb, &container_config(name, &busybox(), &["sleep", "4343"]), &pod)
            .await
            .unwrap();
        c.start(&id).await.unwrap();
        ids.push(id);
    }
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await
        .expect("stop pod");
    for id in &ids {
        let s = c.status(id).await.unwrap().status.unwrap();
        assert_eq!(s.state, cri::ContainerState::ContainerExited as i32, "{id}");
    }
    assert!(processes_matching("sleep 4343").is_empty());
    let (st, _) = pod_info(&mut c, &sb).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    c.stop_and_remove_pod(&sb).await.unwrap();
    for id in &ids {
        assert_eq!(c.status(id).await.unwrap_err().code(), tonic::Code::NotFound);
    }

    // RemovePodSandbox straight on a Ready pod with a running container.
    let pod = pod_config("remove-ready", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let id = c
        .create(
            &sb,
            &container_config("running", &busybox(), &["sleep", "4444"]),
            &pod,
        )
        .await
        .unwrap();
    c.start(&id).await.unwrap();
    c.runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await
        .expect("remove a ready pod");
    assert!(processes_matching("sleep 4444").is_empty());
    assert_eq!(c.status(&id).await.unwrap_err().code(), tonic::Code::NotFound);
    let left = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty(), "{left:?}");
    assert!(mounts_containing(&sb).is_empty(), "{:?}", mounts_containing(&sb));
}

/// Host IPC and host PID pods share the node's namespaces: the container's
/// /proc/self/ns links are the node's, and it sees berthd's process.
#[tokio::test]
async fn host_ipc_and_host_pid_pods_share_the_nodes_namespaces() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let mut pod = pod_config("host-ipc-pid", &b.log_dir());
    let node = cri::NamespaceOption {
        ipc: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Node as i32,
        ..Default::default()
    };
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(node.clone()),
        ..Default::default()
    });
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut cfg = container_config(
        "ns",
        &busybox(),
        &[
            "sh",
            "-c",
            &format!("readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid; test -d /proc/{} && echo sees-berthd", b.pid()),
        ],
    );
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        namespace_options: Some(node),
        ..Default::default()
    });
    let (_, st) = c.run_to_exit(&sb, &cfg, &pod).await.expect("run");
    assert_eq!(st.exit_code, 0);
    let out = log_lines(&b.log_dir().join("ns.log"));
    let host = |ns: &str| {
        std::fs::read_link(format!("/proc/self/ns/{ns}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(out[0], host("ipc"), "{out:?}");
    assert_eq!(out[1], host("pid"), "{out:?}");
    assert_eq!(out.get(2).map(String::as_str), Some("sees-berthd"), "{out:?}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// A dual-stack network (host-local with an IPv4 and an IPv6 range): the
/// IPv4 address is `ip`, the IPv6 one is in `additional_ips`, and both are
/// on the pod's eth0.
#[tokio::test]
async fn dual_stack_pods_report_both_addresses() {
    let conf = tempfile::tempdir().unwrap();
    let bridge = "bds0";
    // Declared before berthd, so dropped after it: no pod is left on it.
    let _bridge = Cleanup::new(move || {
        let _ = Command::new("ip").args(["link", "del", bridge]).status();
    });
    std::fs::write(
        conf.path().join("10-dual.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"berth-dual","plugins":[
  {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,
    "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.98.0.0/24"}}],[{{"subnet":"fd00:98::/64"}}]],
             "dataDir":"{ipam}"}}}}]}}"#,
            ipam = conf.path().join("ipam").display()
        ),
    )
    .unwrap();
    let (b, mut c) = Berthd::start_with(&format!("cni_conf_dir = \"{}\"\n", conf.path().display()))
        .await
        .expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("dual", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let (st, _) = pod_info(&mut c, &sb).await;
    let net = st.network.unwrap();
    assert!(net.ip.starts_with("10.98.0."), "{net:?}");
    let v6: Vec<_> = net.additional_ips.iter().map(|a| a.ip.clone()).collect();
    assert_eq!(v6.len(), 1, "{net:?}");
    assert!(v6[0].starts_with("fd00:98::"), "{net:?}");
    let (code, out) = run_in_pod(&mut c, &b, &sb, &pod, "addrs", &["ip", "addr", "show", "eth0"]).await;
    assert_eq!(code, 0);
    let text = out.join("\n");
    assert!(text.contains(&format!("inet {}/24", net.ip)), "{text}");
    assert!(text.contains(&format!("inet6 {}/64", v6[0])), "{text}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Output of a command run on the node (it must succeed).
fn node_cmd(argv: &[&str]) -> String {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// README: the CNI `bandwidth` and `ipRanges` capabilities, with the real
/// plugins. kubelet's pod CIDR (UpdateRuntimeConfig) reaches host-local as
/// `runtimeConfig.ipRanges`, the bandwidth annotations become tbf qdiscs
/// (ingress on the pod's host veth, egress on the plugin's ifb device), and
/// DEL takes the shaping away again.
///
/// The config lists no range of its own, as a config written for
/// `ipRanges` does (containerd's templates too): host-local prepends the
/// runtime's range sets to the config's and gives one address per set, so
/// a static IPv4 range beside the pod CIDR would give the pod two IPv4
/// addresses and the bridge two gateways, which it refuses ("already has
/// an IP address different from ...").
#[tokio::test]
async fn cni_bandwidth_and_ip_ranges_capabilities() {
    let conf = tempfile::tempdir().unwrap();
    let bridge = "bbw0";
    // Declared before berthd, so dropped after it: no pod is left on it.
    let _bridge = Cleanup::new(move || {
        let _ = Command::new("ip").args(["link", "del", bridge]).status();
    });
    std::fs::write(
        conf.path().join("10-shaped.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"berth-shaped","plugins":[
  {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,
    "capabilities":{{"ipRanges":true}},
    "ipam":{{"type":"host-local","dataDir":"{ipam}"}}}},
  {{"type":"bandwidth","capabilities":{{"bandwidth":true}}}}]}}"#,
            ipam = conf.path().join("ipam").display()
        ),
    )
    .unwrap();
    let (b, mut c) = Berthd::start_with(&format!("cni_conf_dir = \"{}\"\n", conf.path().display()))
        .await
        .expect("berthd");
    c.runtime
        .update_runtime_config(cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: "10.96.7.0/24".into(),
                }),
            }),
        })
        .await
        .expect("pod CIDR");
    let ifbs = || node_cmd(&["ip", "-o", "link", "show", "type", "ifb"]);
    let ifbs_before = ifbs();
    let mut pod = pod_config("shaped", &b.log_dir());
    pod.annotations
        .insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
    pod.annotations
        .insert("kubernetes.io/egress-bandwidth".into(), "5M".into());
    let sb = c.run_pod(&pod).await.expect("runp");
    let (st, _) = pod_info(&mut c, &sb).await;
    let net = st.network.expect("pod network status");
    assert!(
        net.ip.starts_with("10.96.7.") && net.additional_ips.is_empty(),
        "one address, from the pod CIDR: {net:?}"
    );
    // The bridge's gateway is the pod CIDR's too.
    let gw = node_cmd(&["ip", "-o", "-4", "addr", "show", "dev", bridge]);
    assert!(gw.contains("inet 10.96.7.1/24"), "{bridge}: {gw}");

    let veths = node_cmd(&["ip", "-o", "link", "show", "master", bridge]);
    let veth = veths
        .lines()
        .find_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no veth on {bridge}: {veths}"));
    let ingress = node_cmd(&["tc", "qdisc", "show", "dev", &veth]);
    assert!(
        ingress.contains("qdisc tbf") && ingress.contains("rate 10Mbit"),
        "ingress shaping on {veth}: {ingress}"
    );
    let ifb = ifbs()
        .lines()
        .filter(|l| !ifbs_before.contains(*l))
        .find_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("no ifb device for egress: {}", ifbs()));
    let egress = node_cmd(&["tc", "qdisc", "show", "dev", &ifb]);
    assert!(
        egress.contains("qdisc tbf") && egress.contains("rate 5Mbit"),
        "egress shaping on {ifb}: {egress}"
    );

    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_eq!(ifbs(), ifbs_before, "DEL removed the egress device");
}

/// Starts a long-running container in the pod.
async fn sleeper(c: &mut CriClient, sb: &str, pod: &cri::PodSandboxConfig, name: &str) -> String {
    let cfg = container_config(name, &busybox(), &["sleep", "3600"]);
    let id = c.create(sb, &cfg, pod).await.expect("create");
    c.start(&id).await.expect("start");
    id
}

/// An IPC namespace file (a pin or `/proc/<pid>/ns/ipc`) named as
/// `readlink /proc/self/ns/ipc` names it.
fn ipc_ns_name(path: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("ipc:[{}]", std::fs::metadata(path).unwrap().ino())
}

#[tokio::test]
async fn pods_share_dev_shm_and_ipc_and_host_ipc_pods_see_the_nodes() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("shm", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let (_, info) = pod_info(&mut c, &sb).await;
    assert_eq!(info["shm"]["owned"], true, "{info}");
    let shm_dir = info["shm"]["source"].as_str().unwrap().to_string();
    assert_eq!(
        shm_dir,
        format!("{}/state/sandboxes/{sb}/shm", b.dir.path().display())
    );
    let host_mount = mounts_containing(&format!(" {shm_dir} "));
    assert_eq!(host_mount.len(), 1, "one tmpfs per pod: {host_mount:?}");
    // tmpfs lists mode= only when it is not 1777, its default.
    for want in ["nosuid", "nodev", "noexec", "tmpfs", "size=65536k"] {
        assert!(host_mount[0].contains(want), "{want} in {}", host_mount[0]);
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&shm_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o1777);
    }
    let ipc_ns = ipc_ns_name(info["namespaces"]["ipc"].as_str().unwrap());

    let writer = sleeper(&mut c, &sb, &pod, "writer").await;
    let reader = sleeper(&mut c, &sb, &pod, "reader").await;
    let (code, out) = c
        .exec(
            &writer,
            &[
                "sh",
                "-c",
                "echo from-writer > /dev/shm/note && stat -c %a /dev/shm && readlink /proc/self/ns/ipc \
                 && grep ' /dev/shm ' /proc/self/mountinfo",
            ],
        )
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1777", "{out}");
    assert_eq!(lines[1], ipc_ns, "the container is in the pod's IPC namespace");
    for want in ["nosuid", "nodev", "noexec", "size=65536k"] {
        assert!(
            lines[2].contains(want),
            "{want} in the container's /dev/shm: {}",
            lines[2]
        );
    }
    let (code, out) = c
        .exec(
            &reader,
            &["sh", "-c", "cat /dev/shm/note; readlink /proc/self/ns/ipc"],
        )
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        format!("from-writer\n{ipc_ns}\n"),
        "the sibling shares /dev/shm and IPC"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{shm_dir}/note")).unwrap(),
        "from-writer\n",
        "the pod's tmpfs holds it"
    );
    // A container that comes later (a restart) finds it too.
    c.stop(&writer, 0).await.unwrap();
    c.remove(&writer).await.unwrap();
    let (code, out) = run_in_pod(&mut c, &b, &sb, &pod, "later", &["cat", "/dev/shm/note"]).await;
    assert_eq!((code, out), (0, vec!["from-writer".to_string()]));

    // A host-IPC pod: the node's /dev/shm and IPC namespace.
    let mut hp = pod_config("hostipc", &b.log_dir());
    hp.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            ipc: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let node_file = format!("/dev/shm/berth-test-{}", std::process::id());
    std::fs::write(&node_file, "from-node\n").unwrap();
    let hsb = c.run_pod(&hp).await.expect("runp hostipc");
    let (_, hinfo) = pod_info(&mut c, &hsb).await;
    assert_eq!(
        hinfo["shm"],
        serde_json::json!({"source": "/dev/shm", "owned": false})
    );
    assert!(hinfo["namespaces"]["ipc"].is_null(), "{hinfo}");
    let h = sleeper(&mut c, &hsb, &hp, "hostipc").await;
    let script = format!("cat {node_file}; echo from-pod > {node_file}.pod; readlink /proc/self/ns/ipc");
    let (code, out) = c.exec(&h, &["sh", "-c", &script]).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, format!("from-node\n{}\n", ipc_ns_name("/proc/self/ns/ipc")));
    assert_eq!(
        std::fs::read_to_string(format!("{node_file}.pod")).unwrap(),
        "from-pod\n"
    );
    c.stop_and_remove_pod(&hsb).await.unwrap();
    assert!(
        Path::new(&node_file).exists(),
        "removing a host-IPC pod leaves the node's /dev/shm alone"
    );
    let _ = std::fs::remove_file(&node_file);
    let _ = std::fs::remove_file(format!("{node_file}.pod"));

    c.stop_and_remove_pod(&sb).await.unwrap();
    assert!(
        mounts_containing(&shm_dir).is_empty(),
        "the pod's /dev/shm is unmounted with the pod"
    );
    assert!(mounts_containing(&b.dir.path().to_string_lossy()).is_empty());
}

/// berthd hands each new shim the write end of its readiness pipe as fd 3
/// (`--ready-fd 3`). Seen from outside, once the pods serve: no process of
/// either pod (the shim, a shared-PID pod's PID 1, the containers) holds a
/// pipe write end nobody reads (what a leaked readiness pipe would be), and
/// each container process holds only 0, 1 and 2. (Listing `/proc/$$/fd/*`
/// inside a container shows the shell's own directory handle as fd 3;
/// reading another process's fds from outside does not.)
#[tokio::test]
async fn no_readiness_pipe_reaches_a_shim_child_or_container() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    for (name, mode, secs) in [
        ("fds-shared", cri::NamespaceMode::Pod, "3601"),
        ("fds-private", cri::NamespaceMode::Container, "3602"),
    ] {
        let mut pod = pod_config(name, &b.log_dir());
        let linux = pod.linux.get_or_insert_with(Default::default);
        let sc = linux.security_context.get_or_insert_with(Default::default);
        sc.namespace_options.get_or_insert_with(Default::default).pid = mode as i32;
        let sb = c.run_pod(&pod).await.expect("runp");
        let cfg = container_config(name, &busybox(), &["sleep", secs]);
        let id = c.create(&sb, &cfg, &pod).await.expect("create");
        c.start(&id).await.expect("start");

        let shims = processes_matching(&format!("serve --id {sb} "));
        assert_eq!(shims.len(), 1, "one shim for {sb}: {shims:?}");
        let tree = fds::process_tree(shims[0].0);
        let sleeper: Vec<u32> = processes_matching(&format!("sleep {secs}"))
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| tree.contains(p))
            .collect();
        assert_eq!(sleeper.len(), 1, "{name}: the container below its shim: {tree:?}");
        assert_eq!(
            fds::fd_numbers(sleeper[0]),
            [0, 1, 2].into(),
            "{name}: the container's descriptors"
        );
        let leaked = fds::unread_pipe_writers(&tree);
        assert!(
            leaked.is_empty(),
            "{name}: pipe write ends nobody reads: {leaked:?}"
        );
        c.stop_and_remove_pod(&sb).await.expect("stopp+rmp");
    }
}
