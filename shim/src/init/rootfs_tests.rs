//! Unit tests of the rootfs step (`rootfs.rs`) against the recording fake:
//! the order and arguments of every mount, pivot and write for given specs.

use std::os::unix::fs::symlink;

use nix::sys::statfs::FsType;
use serde_json::json;

use super::*;
use crate::init::fake::{position, Call, Fake};
use crate::init::RootfsMount;

/// DEVPTS_SUPER_MAGIC.
const DEVPTS: FsType = FsType(0x1cd1);

fn config(root: &Path, spec: serde_json::Value) -> InitConfig {
    InitConfig {
        spec: serde_json::from_value(spec).expect("spec"),
        rootfs_dir: root.to_path_buf(),
        rootfs_mounts: Vec::new(),
        cgroup_root: PathBuf::from("/cg"),
        hook_state: None,
        in_cgroup: false,
    }
}

/// A spec with only what the test names: its own mount namespace, no
/// mounts, no devices.
fn spec(linux: serde_json::Value, mounts: serde_json::Value, readonly: bool) -> serde_json::Value {
    let mut linux = linux;
    if linux.get("namespaces").is_none() {
        linux["namespaces"] = json!([{"type": "mount"}]);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs", "readonly": readonly},
        "mounts": mounts,
        "linux": linux,
    })
}

fn mount(source: &str, target: &str, fstype: Option<&str>, flags: MsFlags) -> Call {
    Call::Mount {
        source: Some(source.to_string()),
        target: target.to_string(),
        fstype: fstype.map(str::to_string),
        flags,
        data: None,
    }
}

fn remount(target: &str, flags: MsFlags) -> Call {
    Call::Mount {
        source: None,
        target: target.to_string(),
        fstype: None,
        flags,
        data: None,
    }
}

/// The whole walk for a typical container: join the pod's net ns and
/// the cgroup, unshare, rslave /, the rootfs mount, spec mounts, /dev,
/// pivot_root with the old root detached, then masked and read-only
/// paths, the read-only root, and sysctls last (inside the new /proc).
#[test]
fn setup_runs_in_the_kernels_order() {
    let dir = tempfile::tempdir().unwrap();
    let linux = json!({
        "namespaces": [
            {"type": "network", "path": "/proc/self/ns/net"},
            {"type": "mount"},
            {"type": "uts"},
        ],
        "cgroupsPath": "/berth/pod1/c1",
        "maskedPaths": ["/proc/kcore", "/proc/acpi", "/proc/missing"],
        "readonlyPaths": ["/proc/sys"],
        "sysctl": {"net.ipv4.ip_forward": "1"},
    });
    let mounts = json!([{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]}]);
    let mut spec = spec(linux, mounts, true);
    spec["hostname"] = json!("web-0");
    let mut cfg = config(dir.path(), spec);
    cfg.rootfs_mounts = vec![RootfsMount {
        fstype: "overlay".into(),
        source: "overlay".into(),
        options: vec!["lowerdir=/l".into(), "upperdir=/u".into(), "workdir=/w".into()],
    }];
    let mut sys = Fake::new(dir.path());
    sys.kinds.insert("/proc/kcore".into(), FileKind::Other);
    sys.kinds.insert("/proc/acpi".into(), FileKind::Dir);
    sys.kinds.insert("/proc/sys".into(), FileKind::Dir);

    let prepared = prepare(&sys, &cfg).expect("prepare");
    assert_eq!(sys.show(&fd_path(prepared.cwd_fd.as_ref().unwrap())), "rootfs:/");

    let calls = sys.calls();
    let node = |name: &str, major: u64, minor: u64| Call::Mknod {
        at: format!("rootfs:/dev/{name}"),
        kind: SFlag::S_IFCHR,
        mode: 0o666,
        rdev: makedev(major, minor),
    };
    let rdonly_bind = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    let want_in_order = [
        Call::Setns(CloneFlags::CLONE_NEWNET),
        Call::Write("/cg/berth/pod1/c1/cgroup.procs".into(), "0".into()),
        Call::Unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS),
        remount("/", MsFlags::MS_REC | MsFlags::MS_SLAVE),
        Call::Sethostname("web-0".into()),
        Call::Mount {
            source: Some("overlay".into()),
            target: "rootfs:/".into(),
            fstype: Some("overlay".into()),
            flags: MsFlags::empty(),
            data: Some("lowerdir=/l,upperdir=/u,workdir=/w".into()),
        },
        mount("proc", "rootfs:/proc", Some("proc"), MsFlags::MS_NOSUID),
        Call::Umask(0),
        node("null", 1, 3),
        node("tty", 5, 0),
        Call::Umask(0o022),
        Call::Symlink {
            at: "rootfs:/dev/fd".into(),
            target: "/proc/self/fd".into(),
        },
        Call::Chdir("rootfs:/".into()),
        Call::PivotRoot(".".into(), ".".into()),
        Call::Fchdir("/".into()),
        remount(".", MsFlags::MS_SLAVE | MsFlags::MS_REC),
        Call::Umount2(".".into(), MntFlags::MNT_DETACH),
        Call::Chdir("/".into()),
        mount("/dev/null", "/proc/kcore", None, MsFlags::MS_BIND),
        mount("tmpfs", "/proc/acpi", Some("tmpfs"), MsFlags::MS_RDONLY),
        mount("/proc/sys", "/proc/sys", None, MsFlags::MS_BIND | MsFlags::MS_REC),
        remount("/proc/sys", rdonly_bind | MsFlags::MS_REC),
        remount("/", rdonly_bind),
        Call::Write("/proc/sys/net/ipv4/ip_forward".into(), "1".into()),
    ];
    let at: Vec<usize> = want_in_order.iter().map(|w| position(&calls, w)).collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "out of order: {at:?}\n{calls:#?}"
    );
    // A masked path that does not exist is passed over.
    assert!(!format!("{calls:?}").contains("/proc/missing"));
    // Under an rslave root nothing is shared: no parent is made private
    // (the fake's mountinfo still says shared, as the node's does).
    assert!(!calls.contains(&remount("/", MsFlags::MS_PRIVATE)), "{calls:#?}");
}

/// An rshared root (a Bidirectional mount): the shared mount holding the
/// rootfs dir is made private, right after the propagation is set.
#[test]
fn under_an_rshared_root_the_rootfs_parent_is_made_private() {
    let dir = tempfile::tempdir().unwrap();
    let linux = json!({
        "namespaces": [{"type": "mount"}],
        "rootfsPropagation": "rshared",
    });
    let cfg = config(dir.path(), spec(linux, json!([]), false));
    let sys = Fake::new(dir.path());
    prepare(&sys, &cfg).expect("prepare");
    let calls = sys.calls();
    let shared = position(&calls, &remount("/", MsFlags::MS_REC | MsFlags::MS_SHARED));
    let private = position(&calls, &remount("/", MsFlags::MS_PRIVATE));
    assert_eq!(private, shared + 1, "{calls:#?}");
}

/// A writable root is never remounted; a read-only one is, after the
/// pivot and after every masked and read-only path.
#[test]
fn only_a_readonly_root_is_remounted_and_last_of_the_mounts() {
    let ro_root = remount("/", MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY);
    for readonly in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let linux = json!({"readonlyPaths": ["/proc/bus"]});
        let cfg = config(dir.path(), spec(linux, json!([]), readonly));
        let mut sys = Fake::new(dir.path());
        sys.kinds.insert("/proc/bus".into(), FileKind::Dir);
        prepare(&sys, &cfg).expect("prepare");
        let calls = sys.calls();
        let mounts: Vec<&Call> = calls.iter().filter(|c| matches!(c, Call::Mount { .. })).collect();
        assert_eq!(calls.contains(&ro_root), readonly, "{calls:#?}");
        if readonly {
            assert_eq!(mounts.last(), Some(&&ro_root));
            assert!(position(&calls, &Call::PivotRoot(".".into(), ".".into())) < position(&calls, &ro_root));
        }
    }
}

/// Spec mounts go in the spec's order, each complete before the next:
/// the bind, the remount that applies its other flags, its
/// propagation, then rro; a volume inside a volume lands on the first.
#[test]
fn bind_mounts_keep_the_spec_order_and_their_flags_follow_each_bind() {
    let dir = tempfile::tempdir().unwrap();
    let mounts = json!([
        {"destination": "/data", "type": "bind", "source": "/host/a",
         "options": ["rbind", "ro", "rprivate", "rro"]},
        {"destination": "/data/sub", "type": "bind", "source": "/host/b", "options": ["bind"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "/host/hosts", "options": ["bind", "nosuid"]},
    ]);
    let cfg = config(dir.path(), spec(json!({}), mounts, false));
    let mut sys = Fake::new(dir.path());
    sys.kinds.insert("/host/a".into(), FileKind::Dir);
    sys.kinds.insert("/host/b".into(), FileKind::Dir);
    sys.kinds.insert("/host/hosts".into(), FileKind::Other);
    prepare(&sys, &cfg).expect("prepare");
    let calls = sys.calls();
    let rbind = MsFlags::MS_BIND | MsFlags::MS_REC;
    let want = [
        mount("/host/a", "rootfs:/data", None, rbind),
        remount(
            "rootfs:/data",
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        ),
        remount("rootfs:/data", MsFlags::MS_PRIVATE | MsFlags::MS_REC),
        Call::ReadonlyRecursive("rootfs:/data".into()),
        mount("/host/b", "rootfs:/data/sub", None, MsFlags::MS_BIND),
        mount("/host/hosts", "rootfs:/etc/hosts", None, MsFlags::MS_BIND),
        remount(
            "rootfs:/etc/hosts",
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID,
        ),
    ];
    let at: Vec<usize> = want.iter().map(|w| position(&calls, w)).collect();
    assert!(
        at.windows(2).all(|w| w[0] + 1 == w[1]),
        "not back to back: {at:?}\n{calls:#?}"
    );
    // A file source gets a file mount point, a dir source a dir.
    assert!(dir.path().join("etc/hosts").is_file());
    assert!(dir.path().join("data/sub").is_dir());
}

/// A volume whose destination is a symlink the image planted onto
/// /dev/pts (a kernel filesystem its name does not point at) is refused
/// before anything is bound there.
#[test]
fn a_bind_through_a_symlink_onto_devpts_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("dev/pts")).unwrap();
    symlink("/dev/pts", dir.path().join("data")).unwrap();
    let mounts = json!([{"destination": "/data", "type": "bind", "source": "/host/a", "options": ["rbind"]}]);
    let cfg = config(dir.path(), spec(json!({}), mounts, false));
    let mut sys = Fake::new(dir.path());
    sys.kinds.insert("/host/a".into(), FileKind::Dir);
    sys.fs_types.insert("rootfs:/dev/pts".into(), DEVPTS);
    let err = format!("{:#}", prepare(&sys, &cfg).unwrap_err());
    assert!(
        err.contains("mount destination /data resolves into /dev/pts through a symlink: refused"),
        "{err}"
    );
    assert!(
        !sys.mounts()
            .iter()
            .any(|(_, target, _)| target.starts_with("rootfs:/dev")),
        "nothing was bound: {:#?}",
        sys.calls()
    );
    assert!(!sys.calls().iter().any(|c| matches!(c, Call::PivotRoot(..))));
    // Named for what it is, the same bind is fine.
    let mounts =
        json!([{"destination": "/dev/pts", "type": "bind", "source": "/host/a", "options": ["rbind"]}]);
    let cfg = config(dir.path(), spec(json!({}), mounts, false));
    prepare(&sys, &cfg).expect("a bind named /dev/pts");
}

/// An image whose /dev is an absolute symlink out of the root: the
/// device binds, symlinks and nodes all land inside the root, and
/// nothing is made where the link points on the node.
#[test]
fn an_image_dev_symlink_keeps_dev_inside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), dir.path().join("dev")).unwrap();
    let linux = json!({"devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                     "fileMode": 438, "uid": 0, "gid": 0}]});
    let cfg = config(dir.path(), spec(linux, json!([]), false));
    let sys = Fake::new(dir.path());
    prepare(&sys, &cfg).expect("prepare");
    let inside = format!("rootfs:{}", outside.path().display());
    let dev_mounts: Vec<String> = sys
        .mounts()
        .into_iter()
        .filter(|(s, _, _)| s.as_deref().is_some_and(|s| s.starts_with("/dev/")))
        .map(|(_, t, _)| t)
        .collect();
    assert_eq!(
        dev_mounts,
        Vec::<String>::new(),
        "the default nodes are made, not bound"
    );
    let calls = sys.calls();
    let made: Vec<&String> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Mknod { at, .. } => Some(at),
            _ => None,
        })
        .collect();
    assert_eq!(made.len(), DEFAULT_DEVICES.len() + 1, "{made:?}");
    assert!(made.iter().all(|t| t.starts_with(&inside)), "{made:?}");
    let node = format!("{inside}/fuse");
    let mknod = position(
        &calls,
        &Call::Mknod {
            at: node.clone(),
            kind: SFlag::S_IFCHR,
            mode: 0o666,
            rdev: makedev(10, 229),
        },
    );
    assert!(mknod < position(&calls, &Call::Chmod(node.clone(), 0o666)));
    assert!(position(&calls, &Call::Chown(node, 0, 0)) > mknod);
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing on the node"
    );
}

/// In a pod with a user namespace the default nodes are the node's,
/// bound in; outside one a name that exists already is bound over too.
#[test]
fn default_devices_are_bound_in_a_user_namespace_or_over_an_existing_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dev")).unwrap();
    let sys = Fake::new(dir.path());
    let root = inroot::open_root(&sys.root).unwrap();
    setup_dev(&sys, &root, true).expect("setup_dev");
    let binds: Vec<String> = sys.mounts().into_iter().map(|(_, t, _)| t).collect();
    let want: Vec<String> = DEFAULT_DEVICES
        .iter()
        .map(|(d, ..)| format!("rootfs:/dev/{d}"))
        .collect();
    assert_eq!(binds, want);
    assert!(!format!("{:?}", sys.calls()).contains("Mknod"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dev")).unwrap();
    std::fs::write(dir.path().join("dev/tty"), b"").unwrap();
    let sys = Fake::new(dir.path());
    let root = inroot::open_root(&sys.root).unwrap();
    setup_dev(&sys, &root, false).expect("setup_dev");
    let binds: Vec<String> = sys.mounts().into_iter().map(|(_, t, _)| t).collect();
    assert_eq!(binds, ["rootfs:/dev/tty"]);
    let calls = sys.calls();
    // Six attempts, the one on tty refused with EEXIST.
    let tried = calls.iter().filter(|c| matches!(c, Call::Mknod { .. })).count();
    assert_eq!(tried, DEFAULT_DEVICES.len(), "{calls:#?}");
    assert_eq!(
        calls.last(),
        Some(&Call::Symlink {
            at: "rootfs:/dev/ptmx".into(),
            target: "pts/ptmx".into()
        })
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::Umask(_)))
            .cloned()
            .collect::<Vec<_>>(),
        [Call::Umask(0), Call::Umask(0o022)],
        "the mask is restored"
    );
}

/// Without a mount namespace of its own nothing is unshared or mounted;
/// a failing mount stops setup at once, with the step named.
#[test]
fn setup_refuses_and_stops_early() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        spec(json!({"namespaces": [{"type": "uts"}]}), json!([]), false),
    );
    let sys = Fake::new(dir.path());
    let err = prepare(&sys, &cfg).unwrap_err().to_string();
    assert_eq!(err, "a container needs its own mount namespace");
    assert!(sys.calls().is_empty(), "{:#?}", sys.calls());

    let mounts = json!([{"destination": "/proc", "type": "proc", "source": "proc"}]);
    let cfg = config(dir.path(), spec(json!({}), mounts, false));
    let mut sys = Fake::new(dir.path());
    sys.fail_mount_at = Some("rootfs:/proc".into());
    let err = format!("{:#}", prepare(&sys, &cfg).unwrap_err());
    assert!(err.starts_with("mount proc at /proc: EPERM"), "{err}");
    assert!(
        !sys.mounts().iter().any(|(_, t, _)| t.starts_with("rootfs:/dev")),
        "nothing after the failed mount"
    );
}

/// An init the shim cloned straight into its cgroup does not write
/// `cgroup.procs` (that write is the slow part: it waits for an RCU grace
/// period); one cloned outside it still joins.
#[test]
fn an_init_born_in_its_cgroup_does_not_join_it_again() {
    let linux = json!({"namespaces": [{"type": "mount"}], "cgroupsPath": "/berth/pod1/c1"});
    let joins = |in_cgroup: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), spec(linux.clone(), json!([]), false));
        cfg.in_cgroup = in_cgroup;
        let sys = Fake::new(dir.path());
        prepare(&sys, &cfg).expect("prepare");
        sys.calls()
            .iter()
            .filter(|c| matches!(c, Call::Write(p, _) if p.ends_with("cgroup.procs")))
            .count()
    };
    assert_eq!(joins(false), 1);
    assert_eq!(joins(true), 0);
}
