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

/// A directory for volumes on berthd's ext4 root (the VM's own
/// filesystem cannot be idmapped), made as kubelet makes its dirs.
fn ext4_dir(b: &Berthd, rel: &str) -> PathBuf {
    let d = b.dir.path().join("root/test-volumes").join(rel);
    std::fs::create_dir_all(&d).unwrap();
    d
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

/// A plain CRI bind of the host path `src` at `dest`.
fn bind(dest: &str, src: &Path) -> cri::Mount {
    cri::Mount {
        container_path: dest.into(),
        host_path: src.to_string_lossy().into_owned(),
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

/// The contract for the volumes kubelet does not fill itself (a
/// hostPath, an emptyDir, which kubelet sends as a hostPath bind from its
/// pods dir): they are bound as they are and seen through the pod's range.
/// What the container's root writes there is owned on the node by the
/// pod's first host ids (and a chown inside lands in the pod's range); a
/// root-only (0600, uid 0) node file is nobody's inside and unreadable, and
/// so is a file of another pod's range. The pod's own files and /dev/shm
/// are root's inside. Privileged containers and devices are refused.
#[tokio::test]
async fn userns_pod_host_volumes_are_seen_through_the_pod_range() {
    use std::os::unix::fs::PermissionsExt;
    let (b, mut c, _ext4) = berthd_on_ext4().await;
    let host = ext4_dir(&b, "hostpath");
    std::fs::set_permissions(&host, PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(host.join("secret"), "node only").unwrap();
    std::fs::set_permissions(host.join("secret"), PermissionsExt::from_mode(0o600)).unwrap();
    let foreign = host.join("foreign");
    std::fs::write(&foreign, "another pod's").unwrap();
    std::fs::set_permissions(&foreign, PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&foreign, Some(5 * 65536), Some(5 * 65536)).unwrap();
    // kubelet's emptyDir: a root-owned 0777 dir under its pods dir.
    let empty = ext4_dir(&b, "kubelet/pods/uid-1/volumes/kubernetes.io~empty-dir/cache");
    std::fs::set_permissions(&empty, PermissionsExt::from_mode(0o777)).unwrap();

    let pod = userns_pod(&b, "uns-mounts");
    let sb = c.run_pod(&pod).await.expect("run pod");
    let mut cfg = container(&pod, "uns-mounts", &["sleep", "1000"]);
    for (dest, src) in [("/host", &host), ("/cache", &empty)] {
        cfg.mounts.push(bind(dest, src));
    }
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");
    assert_eq!(
        exec_out(
            &mut c,
            &id,
            "stat -c '%u %g' /etc/hosts /etc/resolv.conf /etc/hostname /dev/shm"
        )
        .await,
        ["0 0"; 4].join("\n"),
        "the pod's own files are root's inside"
    );
    exec_out(
        &mut c,
        &id,
        "echo x > /host/made-inside && echo y > /cache/made-inside && chown 1000:1001 /cache/made-inside \
         && echo ok > /dev/shm/f",
    )
    .await;
    for (f, want) in [
        (host.join("made-inside"), (HOST_UID, HOST_GID)),
        (empty.join("made-inside"), (HOST_UID + 1000, HOST_GID + 1001)),
    ] {
        let m = std::fs::metadata(&f).unwrap();
        println!(
            "BERTH-USERNS node owner of {}: {} {}",
            f.display(),
            m.uid(),
            m.gid()
        );
        assert_eq!((m.uid(), m.gid()), want, "{} on the node", f.display());
    }
    for f in ["/host/secret", "/host/foreign"] {
        assert_eq!(
            exec_out(&mut c, &id, &format!("stat -c '%u %g' {f}")).await,
            "65534 65534",
            "{f}: an id outside the pod's mapping is nobody's inside"
        );
        let (code, out) = c.exec(&id, &["cat", f]).await.expect("exec");
        assert_ne!(code, 0, "the pod's root read {f}: {out}");
    }
    // The idmapped mounts never show on the node.
    assert!(
        mounts_containing("idmapped").is_empty(),
        "{:?}",
        mounts_containing("idmapped")
    );

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

/// A mount's own `uid_mappings`/`gid_mappings` other than the pod's are
/// refused with InvalidArgument before anything is made: the missing host
/// path is not created and no container is left.
#[tokio::test]
async fn userns_pod_mount_with_other_mappings_is_invalid() {
    let (b, mut c, _ext4) = berthd_on_ext4().await;
    let pod = userns_pod(&b, "uns-mntmap");
    let sb = c.run_pod(&pod).await.expect("run pod");
    let missing = b.dir.path().join("root/test-volumes/not-made");
    let range = |host_id| {
        vec![cri::IdMapping {
            host_id,
            container_id: 0,
            length: 65536,
        }]
    };
    for (uids, gids) in [
        (range(0), range(0)),
        (range(HOST_UID), range(0)),
        (range(5 * 65536), range(HOST_GID)),
    ] {
        let mut cfg = container(&pod, "uns-mntmap", &["true"]);
        cfg.mounts.push(cri::Mount {
            container_path: "/vol".into(),
            host_path: missing.to_string_lossy().into_owned(),
            uid_mappings: uids.clone(),
            gid_mappings: gids.clone(),
            ..Default::default()
        });
        let e = c.create(&sb, &cfg, &pod).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{uids:?} {gids:?}: {e:?}");
        assert!(!missing.exists(), "the host path was created");
    }
    let listed = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.containers.is_empty(), "{:?}", listed.containers);
    c.stop_and_remove_pod(&sb).await.expect("remove pod");
}

/// berthd on ext4 with `kubelet_root` at `<ext4>/kubelet`: the dirs kubelet
/// fills itself as node root (secrets, projected tokens, etc-hosts, the
/// termination-log) are idmapped through the pod's user namespace, so a
/// 0600 root-owned secret is root's inside and readable, and the
/// termination-log the container writes stays the node root's. A tmpfs
/// hostPath is a plain bind and works even where tmpfs cannot be idmapped
/// (Linux 6.1); a kubelet projected dir on such a tmpfs is refused with
/// FailedPrecondition naming the mount and the filesystem, leaving nothing
/// (no record, no dirs, no cgroup), never bound unmapped.
#[tokio::test]
async fn userns_pod_kubelet_volumes_are_idmapped_others_plain() {
    use std::os::unix::fs::PermissionsExt;
    let (mut b, _c, ext4) = berthd_on_ext4().await;
    b.kill_hard();
    let kubelet = ext4.0.join("kubelet");
    let mut cfg_file = std::fs::OpenOptions::new()
        .append(true)
        .open(b.dir.path().join("config.toml"))
        .unwrap();
    std::io::Write::write_all(
        &mut cfg_file,
        format!("kubelet_root = \"{}\"\n", kubelet.display()).as_bytes(),
    )
    .unwrap();
    let mut c = b.spawn().await.expect("berthd with kubelet_root");

    let pod = userns_pod(&b, "uns-kubelet");
    let pod_dir = kubelet.join("pods").join(&pod.metadata.as_ref().unwrap().uid);
    let secret = pod_dir.join("volumes/kubernetes.io~secret/tok");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("key"), "s3cret").unwrap();
    std::fs::set_permissions(secret.join("key"), PermissionsExt::from_mode(0o600)).unwrap();
    let termlog_dir = pod_dir.join("containers/uns-kubelet");
    std::fs::create_dir_all(&termlog_dir).unwrap();
    let termlog = termlog_dir.join("0");
    std::fs::write(&termlog, "").unwrap();
    std::fs::set_permissions(&termlog, PermissionsExt::from_mode(0o666)).unwrap();
    // A hostPath on tmpfs, and a symlink under the pod's secret dir
    // leading to it: still a hostPath, bound plainly.
    let tmpfs = b.dir.path().join("tmpfs-vol");
    std::fs::create_dir(&tmpfs).unwrap();
    sh("mount", &["-t", "tmpfs", "tmpfs", &tmpfs.to_string_lossy()]);
    let _tmpfs = Umount(tmpfs.clone());
    std::fs::set_permissions(&tmpfs, PermissionsExt::from_mode(0o777)).unwrap();
    let sneaky = pod_dir.join("volumes/kubernetes.io~secret/sneaky");
    std::os::unix::fs::symlink(&tmpfs, &sneaky).unwrap();

    let sb = c.run_pod(&pod).await.expect("run pod");
    let mut cfg = container(&pod, "uns-kubelet", &["sleep", "1000"]);
    for (dest, src) in [
        ("/secret", &secret),
        ("/dev/termination-log", &termlog),
        ("/scratch", &tmpfs),
        ("/sneaky", &sneaky),
    ] {
        cfg.mounts.push(bind(dest, src));
    }
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");
    assert_eq!(
        exec_out(
            &mut c,
            &id,
            "stat -c '%u %g' /secret/key /dev/termination-log; cat /secret/key"
        )
        .await,
        "0 0\n0 0\ns3cret",
        "kubelet's root-owned files are root's inside"
    );
    exec_out(
        &mut c,
        &id,
        "echo done > /dev/termination-log && echo t > /scratch/made-inside && echo u > /sneaky/via-link",
    )
    .await;
    let owner = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    println!(
        "BERTH-USERNS node owner of the termination-log: {:?}, of a tmpfs hostPath file: {:?}",
        owner(&termlog),
        owner(&tmpfs.join("made-inside"))
    );
    assert_eq!(owner(&termlog), (0, 0), "the termination-log on the node");
    assert_eq!(std::fs::read_to_string(&termlog).unwrap(), "done\n");
    assert_eq!(owner(&tmpfs.join("made-inside")), (HOST_UID, HOST_GID));
    assert_eq!(owner(&tmpfs.join("via-link")), (HOST_UID, HOST_GID));

    // kubelet's projected token dir on a tmpfs (as kubelet mounts it).
    let projected = pod_dir.join("volumes/kubernetes.io~projected/kube-api-access");
    std::fs::create_dir_all(&projected).unwrap();
    sh("mount", &["-t", "tmpfs", "tmpfs", &projected.to_string_lossy()]);
    let _projected = Umount(projected.clone());
    std::fs::write(projected.join("token"), "t").unwrap();
    let (_, info) = c.pod_status(&sb).await.unwrap();
    let pod_cg =
        Path::new("/sys/fs/cgroup").join(info["cgroupPath"].as_str().unwrap().trim_start_matches('/'));
    let cg_children = || -> Vec<PathBuf> {
        std::fs::read_dir(&pod_cg)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let cg_before = cg_children();
    let dirs = |dir: &str| -> usize {
        std::fs::read_dir(b.dir.path().join(dir))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    let dirs_before = (dirs("root/containers"), dirs("state/containers"));
    let mut cfg = container(&pod, "uns-projected", &["true"]);
    cfg.mounts.push(cri::Mount {
        container_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
        host_path: projected.to_string_lossy().into_owned(),
        readonly: true,
        ..Default::default()
    });
    let res = c.create(&sb, &cfg, &pod).await;
    if tmpfs_idmaps() {
        println!("BERTH-USERNS tmpfs can be idmapped on this kernel: refusal not exercised");
        res.expect("a projected tmpfs idmaps on this kernel");
    } else {
        let e = res.expect_err("a projected tmpfs must not be bound unmapped");
        println!(
            "BERTH-USERNS projected tmpfs refused: {:?}: {}",
            e.code(),
            e.message()
        );
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        for word in [
            "/var/run/secrets/kubernetes.io/serviceaccount",
            "tmpfs",
            &projected.to_string_lossy(),
        ] {
            assert!(e.message().contains(word), "{word:?} not in {}", e.message());
        }
        let listed = c
            .runtime
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.containers.len(), 1, "{:?}", listed.containers);
        assert_eq!(
            (dirs("root/containers"), dirs("state/containers")),
            dirs_before,
            "container dirs left"
        );
        assert_eq!(cg_children(), cg_before, "a container cgroup was left");
    }
    c.stop_and_remove_pod(&sb).await.expect("remove pod");
}

/// Lazily unmounts a test's own mount.
struct Umount(PathBuf);

impl Drop for Umount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Whether tmpfs can be idmapped on this kernel (Linux 6.3 and later).
fn tmpfs_idmaps() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 3)
}

/// Resize, stats, a container removed and created again in the same pod
/// (kubelet's in-place restart), and berthd killed with -9 while the pod
/// runs: after the restart the pod and container are listed, ready and
/// running, and exec (ExecSync, WebSocket and SPDY) still enters the pod's
/// user namespace as its root.
#[tokio::test]
async fn userns_pod_resize_stats_recreate_and_restart() {
    let (mut b, mut c, _ext4) = berthd_on_ext4().await;
    let pod = userns_pod(&b, "uns-life");
    let sb = c.run_pod(&pod).await.expect("run pod");
    let cfg = container(&pod, "uns-life", &["sleep", "1000"]);
    let first = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&first).await.expect("start");

    c.runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: first.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                cpu_shares: 512,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateContainerResources");
    let st = c.status(&first).await.unwrap();
    let res = st.status.unwrap().resources.unwrap().linux.unwrap();
    assert_eq!(res.memory_limit_in_bytes, 96 << 20);
    let pid = node_pid(&mut c, &first).await;
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let cg = cg.trim().trim_start_matches("0::");
    let max = std::fs::read_to_string(format!("/sys/fs/cgroup{cg}/memory.max")).unwrap();
    assert_eq!(max.trim(), (96u64 << 20).to_string(), "memory.max of {cg}");

    exec_out(&mut c, &first, "head -c 4000000 /dev/zero > /dev/shm/fill").await;
    let stats = c
        .runtime
        .container_stats(cri::ContainerStatsRequest {
            container_id: first.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .unwrap();
    let mem = stats.memory.unwrap().working_set_bytes.unwrap().value;
    let cpu = stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value;
    println!("BERTH-USERNS stats: working set {mem} B, cpu {cpu} ns");
    assert!(mem > 0 && cpu > 0, "{mem} {cpu}");

    // kubelet's in-place restart: the container removed, the same name
    // created again in the same pod.
    c.stop(&first, 0).await.expect("stop");
    c.remove(&first).await.expect("remove");
    let id = c.create(&sb, &cfg, &pod).await.expect("create again");
    c.start(&id).await.expect("start again");
    assert_eq!(
        exec_out(&mut c, &id, "id -u; cat /dev/shm/fill | wc -c").await,
        "0\n4000000"
    );

    b.kill_hard();
    let mut c = b.spawn().await.expect("berthd restarts");
    let pods = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(
        pods.iter()
            .any(|p| p.id == sb && p.state == cri::PodSandboxState::SandboxReady as i32),
        "{pods:?}"
    );
    let st = c.status(&id).await.expect("status after restart").status.unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32, "{st:?}");
    let want = ["0", "0", &HOST_UID.to_string(), "65536"];
    let cmd = ["sh", "-c", "id -u; cat /proc/self/uid_map"];
    let ws = berth_tests::stream::exec(&mut c, &id, &cmd, berth_tests::stream::REMOTE_PROTOCOLS).await;
    assert_eq!(ws.exit_code(), Some(0), "{ws:?}");
    let spdy = berth_tests::spdy::exec(&mut c, &id, &cmd).await;
    let sync = exec_out(&mut c, &id, "id -u; cat /proc/self/uid_map").await;
    for out in [
        ws.stdout.clone(),
        String::from_utf8_lossy(&spdy.stdout).into_owned(),
        sync,
    ] {
        let fields: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(fields, want, "{out}");
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

/// Two pods with different ranges: a 0600 file pod a's root writes to its
/// root filesystem is owned on the node by a's host uid, and pod b's root,
/// given a's upper directory as a hostPath (seen through b's range), sees
/// it as nobody's and cannot read it, whether its container has a PID
/// namespace of its own or shares the pod's. What a writes to a hostPath
/// is owned by a's host uid on the node. A pod sysctl lands in the pod's
/// network namespace (owned by its user namespace), and a second container
/// of the same pod (kubelet's restart, attempt 1) runs as the same mapped
/// root and owns what the first wrote.
#[tokio::test]
async fn userns_pods_with_different_ranges_cannot_read_each_others_files() {
    use std::os::unix::fs::PermissionsExt;
    let (b, mut c, _ext4) = berthd_on_ext4().await;
    let host = ext4_dir(&b, "shared");
    std::fs::set_permissions(&host, PermissionsExt::from_mode(0o777)).unwrap();
    let with_mount = |mut cfg: cri::ContainerConfig, dest: &str, src: &Path| {
        cfg.mounts.push(bind(dest, src));
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
    let cfg = with_mount(
        container(
            &pod_a,
            "uns-a",
            &[
                "sh",
                "-c",
                "umask 077; echo a > /a-secret && echo a > /host/a-secret \
                 && cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
            ],
        ),
        "/host",
        &host,
    );
    let (id_a, st) = c.run_to_exit(&sb_a, &cfg, &pod_a).await.expect("run a");
    let out = log_lines(&b.log_dir().join("uns-a.log"));
    assert_eq!(st.exit_code, 0, "{out:?}");
    assert_eq!(out.last().map(String::as_str), Some("80"), "{out:?}");
    let upper_a = upper_dir(&b, &id_a);
    let m = std::fs::metadata(upper_a.join("a-secret")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (HOST_UID, 0o600));
    let m = std::fs::metadata(host.join("a-secret")).unwrap();
    assert_eq!(
        (m.uid(), m.mode() & 0o777),
        (HOST_UID, 0o600),
        "a's file on the hostPath"
    );

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
    let mut cfg = with_mount(
        container(
            &pod_b,
            "uns-b",
            &[
                "sh",
                "-c",
                "stat -c '%u %g' /a-root/a-secret; cat /a-root/a-secret",
            ],
        ),
        "/a-root",
        &upper_a,
    );
    let sc = cfg.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sc.namespace_options.as_mut().unwrap().pid = cri::NamespaceMode::Container as i32;
    let (_, st) = c.run_to_exit(&sb_b, &cfg, &pod_b).await.expect("run b");
    let out = log_lines(&b.log_dir().join("uns-b.log"));
    assert_ne!(st.exit_code, 0, "pod b read pod a's file: {out:?}");
    assert_eq!(out.first().map(String::as_str), Some("65534 65534"), "{out:?}");
    assert!(out.iter().any(|l| l.contains("Permission denied")), "{out:?}");

    // kubelet's restart of pod a's container: attempt 1 in the same pod.
    let mut again = container(&pod_a, "uns-a2", &["sh", "-c", "id -u; cat /host/a-secret"]);
    again.metadata.as_mut().unwrap().attempt = 1;
    let (_, st) = c
        .run_to_exit(&sb_a, &with_mount(again, "/host", &host), &pod_a)
        .await
        .expect("run a again");
    let out = log_lines(&b.log_dir().join("uns-a2.log"));
    assert_eq!(st.exit_code, 0, "{out:?}");
    assert_eq!(out, ["0", "a"]);
    c.stop_and_remove_pod(&sb_a).await.expect("remove a");
    c.stop_and_remove_pod(&sb_b).await.expect("remove b");
}

/// An image volume (an overlay of the image's snapshots on the node) of a
/// user-namespaced pod is idmapped like every volume: its root-owned files
/// are root's inside. Where the kernel cannot idmap an overlay mount, the
/// container is refused with FailedPrecondition naming the volume and the
/// filesystem, and nothing of it is left.
#[tokio::test]
async fn userns_pod_image_volume_is_idmapped_or_refused() {
    let (b, mut c, _ext4) = berthd_on_ext4().await;
    let data = format!("{}/library/volume-data:latest", registry());
    c.pull(&data).await.expect("pull");
    let pod = userns_pod(&b, "uns-imgvol");
    let sb = c.run_pod(&pod).await.expect("run pod");
    let mut cfg = container(&pod, "uns-imgvol", &["sleep", "1000"]);
    cfg.mounts.push(cri::Mount {
        container_path: "/vol".into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: data.clone(),
            ..Default::default()
        }),
        ..Default::default()
    });
    match c.create(&sb, &cfg, &pod).await {
        Ok(id) => {
            c.start(&id).await.expect("start");
            assert_eq!(
                exec_out(
                    &mut c,
                    &id,
                    "stat -c '%u %g' /vol/data/hello.txt; cat /vol/data/hello.txt"
                )
                .await,
                "0 0\nhello from an image"
            );
        }
        Err(e) => {
            println!(
                "BERTH-USERNS image volume refused: {:?}: {}",
                e.code(),
                e.message()
            );
            assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
            for word in ["/vol", "overlay"] {
                assert!(e.message().contains(word), "{word:?} not in {}", e.message());
            }
            let listed = c
                .runtime
                .list_containers(cri::ListContainersRequest::default())
                .await
                .unwrap()
                .into_inner();
            assert!(listed.containers.is_empty(), "{:?}", listed.containers);
            let left = mounts_containing(&b.dir.path().join("root/containers").to_string_lossy());
            assert!(left.is_empty(), "image volume mounts left: {left:?}");
        }
    }
    c.stop_and_remove_pod(&sb).await.expect("remove pod");
}
