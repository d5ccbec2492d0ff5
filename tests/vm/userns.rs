//! Pods with their own user namespace (`hostUsers: false`, userns mode
//! POD): the mapping seen inside, root inside being the pod's host uid on
//! the node, the image's files owned by root inside through idmapped
//! layers, files the container writes owned by the pod's range on the
//! node, exec after a berthd restart, and no pin left after teardown.
//!
//! Berth's root is a loop-mounted ext4 filesystem (the VM's tmpfs cannot
//! be idmapped on 6.1; `vm_security` covers that refusal).
//!
//! Runs inside the VM (`hack/vm`), with `--test-threads=1`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_proto::cri;
use berth_tests::*;

/// The pod's first host uid and gid (kubelet's ranges are multiples of 65536).
const HOST_UID: u32 = 3 * 65536;
const HOST_GID: u32 = 4 * 65536;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

fn sh(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
}

/// berthd whose root is an ext4 filesystem of its own, with busybox pulled.
/// The filesystem is unmounted when the guard drops (after berthd).
async fn berthd_on_ext4() -> (Berthd, CriClient, Ext4Root) {
    let (mut b, _) = Berthd::start().await.expect("berthd");
    b.kill_hard();
    let img = b.dir.path().join("root.img");
    std::fs::File::create(&img).unwrap().set_len(512 << 20).unwrap();
    let root = b.dir.path().join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir(&root).unwrap();
    sh("mke2fs", &["-F", "-q", &img.to_string_lossy()]);
    sh(
        "mount",
        &[
            "-t",
            "ext4",
            "-o",
            "loop",
            &img.to_string_lossy(),
            &root.to_string_lossy(),
        ],
    );
    let guard = Ext4Root(root);
    let mut c = b.spawn().await.expect("berthd on ext4");
    c.pull(&busybox()).await.expect("pull");
    (b, c, guard)
}

/// Unmounts berthd's ext4 root.
struct Ext4Root(PathBuf);

impl Drop for Ext4Root {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The pod config kubelet sends for `hostUsers: false`.
fn userns_pod(b: &Berthd, name: &str) -> cri::PodSandboxConfig {
    let range = |host_id| {
        vec![cri::IdMapping {
            host_id,
            container_id: 0,
            length: 65536,
        }]
    };
    let mut pod = pod_config(name, &b.log_dir());
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(userns_options(range(HOST_UID), range(HOST_GID))),
        ..Default::default()
    });
    pod
}

fn userns_options(uids: Vec<cri::IdMapping>, gids: Vec<cri::IdMapping>) -> cri::NamespaceOption {
    cri::NamespaceOption {
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids,
            gids,
        }),
        ..Default::default()
    }
}

/// A container of `pod` running `argv`, with the pod's userns options
/// repeated as kubelet does.
fn container(pod: &cri::PodSandboxConfig, name: &str, argv: &[&str]) -> cri::ContainerConfig {
    let mut cfg = container_config(name, &busybox(), argv);
    let ns = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    cfg.linux.get_or_insert_with(Default::default).security_context =
        Some(cri::LinuxContainerSecurityContext {
            namespace_options: ns,
            ..Default::default()
        });
    cfg
}

/// The container's pid on the node (verbose ContainerStatus).
async fn node_pid(c: &mut CriClient, id: &str) -> u32 {
    let st = c.status(id).await.expect("status");
    let info: serde_json::Value = serde_json::from_str(st.info.get("info").expect("verbose info")).unwrap();
    info["pid"].as_u64().expect("pid") as u32
}

/// A `/proc/<pid>/status` field's first value.
fn status_field(pid: u32, name: &str) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {name} in {s}"))
        .parse()
        .unwrap()
}

async fn exec_out(c: &mut CriClient, id: &str, cmd: &str) -> String {
    let (code, out) = c.exec(id, &["sh", "-c", cmd]).await.expect("exec");
    assert_eq!(code, 0, "{cmd}: {out}");
    out.trim().to_string()
}

/// Inside, the pod's mapping and root; on the node, the pod's host uid;
/// the image's files are root's inside; a file written to the rootfs is
/// owned by the pod's first host ids in the upper directory on the node.
#[tokio::test]
async fn userns_pod_runs_as_the_mapped_root() {
    let (b, mut c, _ext4) = berthd_on_ext4().await;
    let pod = userns_pod(&b, "uns-root");
    let sb = c
        .run_pod(&pod)
        .await
        .expect("a hostUsers: false pod runs on ext4");
    let id = c
        .create(&sb, &container(&pod, "uns-root", &["sleep", "1000"]), &pod)
        .await
        .expect("create");
    c.start(&id).await.expect("start");

    let uid_map = exec_out(&mut c, &id, "cat /proc/self/uid_map").await;
    println!("BERTH-USERNS uid_map: {uid_map}");
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(fields, ["0", &HOST_UID.to_string(), "65536"], "{uid_map}");
    let gid_map = exec_out(&mut c, &id, "cat /proc/self/gid_map").await;
    let fields: Vec<&str> = gid_map.split_whitespace().collect();
    assert_eq!(fields, ["0", &HOST_GID.to_string(), "65536"], "{gid_map}");
    assert_eq!(exec_out(&mut c, &id, "id -u; id -g").await, "0\n0");
    // Streamed exec enters the user namespace too, over WebSocket and SPDY.
    let cmd = ["sh", "-c", "id -u; cat /proc/self/uid_map"];
    let ws = berth_tests::stream::exec(&mut c, &id, &cmd, berth_tests::stream::REMOTE_PROTOCOLS).await;
    assert_eq!(ws.exit_code(), Some(0), "{ws:?}");
    let url = c.exec_url(exec_request(&id, &cmd, false, false)).await;
    let opts = berth_tests::spdy::StreamOptions {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let spdy = berth_tests::spdy::run(&url, &opts).await.expect("SPDY exec");
    for out in [
        ws.stdout.clone(),
        String::from_utf8_lossy(&spdy.stdout).into_owned(),
    ] {
        let fields: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(fields, ["0", "0", &HOST_UID.to_string(), "65536"], "{out}");
    }

    // The container's process, seen from the node.
    let pid = node_pid(&mut c, &id).await;
    println!(
        "BERTH-USERNS node: pid {pid} Uid {} Gid {}",
        status_field(pid, "Uid:"),
        status_field(pid, "Gid:")
    );
    assert_eq!(status_field(pid, "Uid:"), HOST_UID);
    assert_eq!(status_field(pid, "Gid:"), HOST_GID);
    let own = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    let node = std::fs::read_link("/proc/self/ns/user").unwrap();
    assert_ne!(own, node, "the container is in the node's user namespace");

    // The image's files are root's inside (idmapped layers), and root
    // inside may write to the image's root-owned directories.
    assert_eq!(
        exec_out(&mut c, &id, "stat -c '%u %g' /bin/busybox /etc").await,
        "0 0\n0 0"
    );
    exec_out(
        &mut c,
        &id,
        "echo x > /made-inside && mkdir -p /etc/made && echo y > /etc/made/f",
    )
    .await;
    assert_eq!(exec_out(&mut c, &id, "stat -c '%u %g' /made-inside").await, "0 0");
    let upper = upper_dir(&b, &id);
    for f in ["made-inside", "etc/made/f", "etc/made", "etc"] {
        let m = std::fs::metadata(upper.join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (HOST_UID, HOST_GID), "{f} in the upper dir");
    }
    // The layers on disk are untouched: still the node's root's.
    let layer_owner = layer_file_owner(&b, "bin/busybox");
    assert_eq!(layer_owner, (0, 0), "the image layer was chowned");
    // An idmapped layer mount never reaches the node.
    assert!(
        mounts_containing(&b.dir.path().join("root").to_string_lossy())
            .iter()
            .all(|l| !l.contains("idmapped")),
        "{:?}",
        mounts_containing("idmapped")
    );

    c.stop_and_remove_pod(&sb).await.expect("remove pod");
}

/// The pinned user namespace outlives berthd: after kill -9 and a restart
/// an exec still enters it; removing the pod leaves no pin.
#[tokio::test]
async fn userns_pod_survives_a_berthd_restart_and_leaves_no_pin() {
    let (mut b, mut c, _ext4) = berthd_on_ext4().await;
    let pod = userns_pod(&b, "uns-restart");
    let sb = c.run_pod(&pod).await.expect("run pod");
    let (st, info) = c.pod_status(&sb).await.expect("pod status");
    println!("BERTH-USERNS pod namespaces: {}", info["namespaces"]);
    let opts = st.linux.unwrap().namespaces.unwrap().options.unwrap();
    let u = opts
        .userns_options
        .expect("PodSandboxStatus names the user namespace");
    assert_eq!(u.mode, cri::NamespaceMode::Pod as i32);
    assert_eq!((u.uids[0].host_id, u.gids[0].host_id), (HOST_UID, HOST_GID));
    let pin = b.dir.path().join("state/sandboxes").join(&sb).join("ns/user");
    assert!(
        mounts_containing(&pin.to_string_lossy()).len() == 1,
        "the user namespace is pinned at {}",
        pin.display()
    );
    let id = c
        .create(&sb, &container(&pod, "uns-restart", &["sleep", "1000"]), &pod)
        .await
        .expect("create");
    c.start(&id).await.expect("start");
    let before = exec_out(&mut c, &id, "readlink /proc/self/ns/user").await;

    b.kill_hard();
    let mut c = b.spawn().await.expect("berthd restarts");
    assert_eq!(exec_out(&mut c, &id, "id -u").await, "0");
    assert_eq!(exec_out(&mut c, &id, "readlink /proc/self/ns/user").await, before);
    assert_eq!(
        exec_out(&mut c, &id, "cat /proc/self/uid_map")
            .await
            .split_whitespace()
            .nth(1),
        Some(HOST_UID.to_string().as_str())
    );

    c.stop_and_remove_pod(&sb).await.expect("remove pod");
    let state = b.dir.path().join("state").to_string_lossy().into_owned();
    assert_eq!(mounts_containing(&state), Vec::<String>::new(), "pins left");
}

/// critest's mapping (`0 1000 100000`, neither kubelet's size nor its
/// alignment) is a valid CRI request: the container sees exactly it, and
/// Status advertises user namespaces on this root.
#[tokio::test]
async fn userns_pod_takes_any_single_range_from_container_id_0() {
    let (b, mut c, _ext4) = berthd_on_ext4().await;
    let st = c.runtime_status().await.unwrap();
    assert!(
        st.runtime_handlers
            .iter()
            .all(|h| h.features.as_ref().unwrap().user_namespaces),
        "{st:?}"
    );
    let range = || {
        vec![cri::IdMapping {
            host_id: 1000,
            container_id: 0,
            length: 100_000,
        }]
    };
    let mut pod = pod_config("uns-critest", &b.log_dir());
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(userns_options(range(), range())),
        ..Default::default()
    });
    let sb = c.run_pod(&pod).await.expect("run pod");
    let cfg = container(&pod, "uns-critest", &["cat", "/proc/self/uid_map"]);
    let (_, st) = c.run_to_exit(&sb, &cfg, &pod).await.expect("run");
    assert_eq!(st.exit_code, 0);
    let out = log_lines(&b.log_dir().join("uns-critest.log")).join("\n");
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert!(fields.ends_with(&["0", "1000", "100000"]), "{out}");
    c.stop_and_remove_pod(&sb).await.expect("remove pod");
}

/// A container must repeat its pod's user namespace, and a pod with one
/// cannot share the node's network.
#[tokio::test]
async fn userns_mismatches_are_invalid() {
    let (b, mut c, _ext4) = berthd_on_ext4().await;
    let pod = userns_pod(&b, "uns-mismatch");
    let sb = c.run_pod(&pod).await.expect("run pod");
    let mut cfg = container(&pod, "uns-mismatch", &["true"]);
    cfg.linux.as_mut().unwrap().security_context = None;
    let e = c.create(&sb, &cfg, &pod).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("differs from its pod's"), "{}", e.message());
    c.stop_and_remove_pod(&sb).await.expect("remove pod");

    let mut host = userns_pod(&b, "uns-hostnet");
    let sc = host.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sc.namespace_options.as_mut().unwrap().network = cri::NamespaceMode::Node as i32;
    let e = c.run_pod(&host).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
}

/// The pod's own files and /dev/shm are root's inside; a hostPath is bound
/// as it is (not idmapped): what root inside writes there is the pod's
/// host uid's on the node, and a root-only file of the node stays
/// unreadable. Privileged containers and devices are refused.
#[tokio::test]
async fn userns_pod_mounts_are_owned_by_the_pod() {
    let (b, mut c, _ext4) = berthd_on_ext4().await;
    let host = b.dir.path().join("hostpath");
    std::fs::create_dir(&host).unwrap();
    std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(host.join("secret"), "node only").unwrap();
    std::fs::set_permissions(
        host.join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // The test dir itself is 0700: let the pod's root reach the hostPath.
    std::fs::set_permissions(b.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();

    let pod = userns_pod(&b, "uns-mounts");
    let sb = c.run_pod(&pod).await.expect("run pod");
    let mut cfg = container(&pod, "uns-mounts", &["sleep", "1000"]);
    cfg.mounts.push(cri::Mount {
        container_path: "/host".into(),
        host_path: host.to_string_lossy().into_owned(),
        ..Default::default()
    });
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");
    assert_eq!(
        exec_out(
            &mut c,
            &id,
            "stat -c '%u %g' /etc/hosts /etc/resolv.conf /etc/hostname /dev/shm"
        )
        .await,
        "0 0\n0 0\n0 0\n0 0"
    );
    exec_out(&mut c, &id, "echo x > /host/made-inside && echo ok > /dev/shm/f").await;
    let m = std::fs::metadata(host.join("made-inside")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (HOST_UID, HOST_GID),
        "file written on the hostPath"
    );
    let (code, out) = c.exec(&id, &["cat", "/host/secret"]).await.expect("exec");
    assert_ne!(code, 0, "the pod's root read a root-only file of the node: {out}");

    for (name, edit) in [
        (
            "uns-priv",
            (|cfg: &mut cri::ContainerConfig| {
                cfg.linux
                    .as_mut()
                    .unwrap()
                    .security_context
                    .as_mut()
                    .unwrap()
                    .privileged = true;
            }) as fn(&mut cri::ContainerConfig),
        ),
        ("uns-dev", |cfg: &mut cri::ContainerConfig| {
            cfg.devices.push(cri::Device {
                container_path: "/dev/fuse".into(),
                host_path: "/dev/null".into(),
                permissions: "rwm".into(),
            });
        }),
    ] {
        let mut cfg = container(&pod, name, &["true"]);
        edit(&mut cfg);
        let e = c.create(&sb, &cfg, &pod).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name}: {e:?}");
        assert!(
            e.message().contains("hostUsers: false"),
            "{name}: {}",
            e.message()
        );
    }
    c.stop_and_remove_pod(&sb).await.expect("remove pod");
}

/// berthd killed at each step of RunPodSandbox and RemovePodSandbox of a
/// user-namespaced pod: after a restart and kubelet's clean-up nothing of
/// it is left, the user namespace pin included, and such a pod runs again.
#[tokio::test]
async fn userns_pod_crashes_leave_no_pin() {
    use std::os::unix::process::ExitStatusExt;
    let (mut b, _, _ext4) = berthd_on_ext4().await;
    let state = b.dir.path().join("state");
    let points = [
        "run_sandbox.intent",
        "run_sandbox.cgroup",
        "run_sandbox.shim",
        "run_sandbox.pins",
        "run_sandbox.cni_add",
        "run_sandbox.record",
        "remove_sandbox.pins",
        "remove_sandbox.state",
    ];
    let mut found = Vec::new();
    for (n, point) in points.into_iter().enumerate() {
        b.kill_hard();
        let mut c = b
            .spawn_env(&[("BERTH_CRASH_AT", point)])
            .await
            .expect("berthd with the crash point");
        let pod = userns_pod(&b, &format!("uns-crash-{n}"));
        let reached = match point.starts_with("remove") {
            false => c.run_pod(&pod).await.is_err(),
            true => {
                let sb = c.run_pod(&pod).await.expect("run pod");
                c.stop_and_remove_pod(&sb).await.is_err()
            }
        };
        let st = b.wait_exit(std::time::Duration::from_secs(60));
        if !reached || st.and_then(|s| s.signal()) != Some(libc::SIGABRT) {
            found.push(format!("{point}: not reached ({st:?})"));
        }
        b.kill_hard();
        let mut c = b.spawn().await.expect("berthd restarts");
        // kubelet removes what it finds and runs the pod again.
        let listed = c
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner();
        for p in listed.items {
            if let Err(e) = c.stop_and_remove_pod(&p.id).await {
                found.push(format!("{point}: removing {}: {}", p.id, e.message()));
            }
        }
        match c.run_pod(&pod).await {
            Ok(sb) => c.stop_and_remove_pod(&sb).await.expect("remove"),
            Err(e) => found.push(format!("{point}: the pod does not run again: {}", e.message())),
        }
        let mounts = mounts_containing(&state.to_string_lossy());
        if !mounts.is_empty() {
            found.push(format!("{point}: mounts left: {mounts:?}"));
        }
        let dirs: Vec<_> = std::fs::read_dir(state.join("sandboxes"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if !dirs.is_empty() {
            found.push(format!("{point}: sandbox state dirs left: {dirs:?}"));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// `<root>/containers/<id>/upper`.
fn upper_dir(b: &Berthd, id: &str) -> PathBuf {
    let d = b.dir.path().join("root/containers").join(id).join("upper");
    assert!(d.is_dir(), "{}", d.display());
    d
}

/// The owner of `rel` in whichever image layer (snapshot) on disk holds it.
fn layer_file_owner(b: &Berthd, rel: &str) -> (u32, u32) {
    fn walk(dir: &Path, rel: &str, depth: usize) -> Option<(u32, u32)> {
        let m = std::fs::symlink_metadata(dir.join(rel)).ok();
        if let Some(m) = m {
            return Some((m.uid(), m.gid()));
        }
        if depth == 0 {
            return None;
        }
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .find_map(|e| walk(&e.path(), rel, depth - 1))
    }
    let snapshots = std::fs::read_dir(b.dir.path().join("root"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "containers"))
        .collect::<Vec<_>>();
    snapshots
        .iter()
        .find_map(|d| walk(d, rel, 3))
        .expect("busybox layer on disk")
}

/// Figures for the closing note, printed, never asserted:
/// RunPodSandbox and create+start medians with and without a user
/// namespace, on the same ext4 root.
#[tokio::test]
async fn userns_latency_figures() {
    use std::time::{Duration, Instant};
    let (b, mut c, _ext4) = berthd_on_ext4().await;
    for userns in [false, true] {
        let (mut runp, mut create_start) = (Vec::<Duration>::new(), Vec::<Duration>::new());
        for i in 0..5 {
            let name = format!("uns-fig-{userns}-{i}");
            let pod = match userns {
                true => userns_pod(&b, &name),
                false => pod_config(&name, &b.log_dir()),
            };
            let t = Instant::now();
            let sb = c.run_pod(&pod).await.expect("run pod");
            runp.push(t.elapsed());
            let cfg = match userns {
                true => container(&pod, &name, &["sleep", "1000"]),
                false => container_config(&name, &busybox(), &["sleep", "1000"]),
            };
            let t = Instant::now();
            let id = c.create(&sb, &cfg, &pod).await.expect("create");
            c.start(&id).await.expect("start");
            create_start.push(t.elapsed());
            c.stop_and_remove_pod(&sb).await.expect("remove pod");
        }
        println!(
            "BERTH-USERNS-FIGURES userns={userns}: RunPodSandbox median {:.1} ms, create+start median {:.1} ms (5 each, TCG VM)",
            figures::ms(median(runp)),
            figures::ms(median(create_start))
        );
    }
}

/// Two pods with different ranges share a hostPath: a 0600 file one
/// pod's root writes there is owned by that pod's host uid and the other
/// pod's root cannot read it (whether its container has a PID namespace of
/// its own or shares the pod's). A pod sysctl lands in the pod's network
/// namespace (owned by its user namespace), and a second container of the
/// same pod (kubelet's restart, attempt 1) runs as the same mapped root.
#[tokio::test]
async fn userns_pods_with_different_ranges_cannot_read_each_others_files() {
    let (b, mut c, _ext4) = berthd_on_ext4().await;
    let host = b.dir.path().join("shared");
    std::fs::create_dir(&host).unwrap();
    std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::set_permissions(b.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let with_host = |mut cfg: cri::ContainerConfig| {
        cfg.mounts.push(cri::Mount {
            container_path: "/host".into(),
            host_path: host.to_string_lossy().into_owned(),
            ..Default::default()
        });
        cfg
    };

    let mut pod_a = userns_pod(&b, "uns-a");
    pod_a.linux.as_mut().unwrap().sysctls = [(
        "net.ipv4.ip_unprivileged_port_start".to_string(),
        "80".to_string(),
    )]
    .into_iter()
    .collect();
    let sb_a = c.run_pod(&pod_a).await.expect("run pod a");
    let cfg = with_host(container(
        &pod_a,
        "uns-a",
        &[
            "sh",
            "-c",
            "umask 077; echo a > /host/a-secret && cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
        ],
    ));
    let (_, st) = c.run_to_exit(&sb_a, &cfg, &pod_a).await.expect("run a");
    let out = log_lines(&b.log_dir().join("uns-a.log"));
    assert_eq!(st.exit_code, 0, "{out:?}");
    assert_eq!(out.last().map(String::as_str), Some("80"), "{out:?}");
    let m = std::fs::metadata(host.join("a-secret")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (HOST_UID, 0o600));

    let other = |host_id| {
        vec![cri::IdMapping {
            host_id,
            container_id: 0,
            length: 65536,
        }]
    };
    let mut pod_b = pod_config("uns-b", &b.log_dir());
    pod_b.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(userns_options(other(5 * 65536), other(6 * 65536))),
        ..Default::default()
    });
    let sb_b = c.run_pod(&pod_b).await.expect("run pod b");
    // Pod b's container has a PID namespace of its own (pod a's share one).
    let mut cfg = with_host(container(&pod_b, "uns-b", &["cat", "/host/a-secret"]));
    let sc = cfg.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sc.namespace_options.as_mut().unwrap().pid = cri::NamespaceMode::Container as i32;
    let (_, st) = c.run_to_exit(&sb_b, &cfg, &pod_b).await.expect("run b");
    let out = log_lines(&b.log_dir().join("uns-b.log"));
    assert_ne!(st.exit_code, 0, "pod b read pod a's file: {out:?}");
    assert!(out.iter().any(|l| l.contains("Permission denied")), "{out:?}");

    // kubelet's restart of pod a's container: attempt 1 in the same pod.
    let mut again = container(&pod_a, "uns-a2", &["sh", "-c", "id -u; cat /host/a-secret"]);
    again.metadata.as_mut().unwrap().attempt = 1;
    let (_, st) = c
        .run_to_exit(&sb_a, &with_host(again), &pod_a)
        .await
        .expect("run a again");
    let out = log_lines(&b.log_dir().join("uns-a2.log"));
    assert_eq!(st.exit_code, 0, "{out:?}");
    assert_eq!(out, ["0", "a"]);
    c.stop_and_remove_pod(&sb_a).await.expect("remove a");
    c.stop_and_remove_pod(&sb_b).await.expect("remove b");
}
