//! Security context and process settings, each seen from inside the
//! container: capability sets, no_new_privs, read-only root, masked and
//! read-only kernel paths, oom_score_adj, privileged mode, stop signals,
//! rlimits, the verbose status spec, and logs on a full disk.
//!
//! Runs inside the VM (`hack/vm`), with `--test-threads=1`.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// Docker's default set: CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW
/// SETGID SETUID SETFCAP SETPCAP NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE.
const DEFAULT_CAP_MASK: u64 = 0xa80425fb;

/// Runs `cfg` to completion in the pod; returns (exit code, every log line).
async fn run(
    c: &mut CriClient,
    b: &Berthd,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    cfg: &cri::ContainerConfig,
) -> (i32, Vec<String>) {
    let (id, st) = c.run_to_exit(sb, cfg, pod).await.expect("run");
    let name = &cfg.metadata.as_ref().unwrap().name;
    let out = log_lines(&b.log_dir().join(format!("{name}.log")));
    c.remove(&id).await.expect("remove");
    (st.exit_code, out)
}

/// A `/proc/self/status` field (e.g. `CapEff`) from a container's output.
fn field<'a>(out: &'a [String], name: &str) -> &'a str {
    out.iter()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {out:?}"))
}

fn hex(v: &str) -> u64 {
    u64::from_str_radix(v, 16).unwrap()
}

fn with_sc(mut cfg: cri::ContainerConfig, sc: cri::LinuxContainerSecurityContext) -> cri::ContainerConfig {
    cfg.linux.as_mut().unwrap().security_context = Some(sc);
    cfg
}

fn caps(add: &[&str], drop: &[&str], ambient: &[&str]) -> Option<cri::Capability> {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    Some(cri::Capability {
        add_capabilities: v(add),
        drop_capabilities: v(drop),
        add_ambient_capabilities: v(ambient),
    })
}

#[tokio::test]
async fn capabilities_no_new_privs_and_oom_score_adj_from_inside() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("caps", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let status = ["cat", "/proc/self/status"];

    let (code, out) = run(
        &mut c,
        &b,
        &sb,
        &pod,
        &container_config("default", &busybox(), &status),
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(hex(field(&out, "CapEff")), DEFAULT_CAP_MASK, "default caps");
    assert_eq!(
        hex(field(&out, "CapBnd")),
        DEFAULT_CAP_MASK,
        "default bounding set"
    );
    assert_eq!(field(&out, "NoNewPrivs"), "0");

    let cfg = with_sc(
        container_config("drop-all", &busybox(), &status),
        cri::LinuxContainerSecurityContext {
            capabilities: caps(&["NET_ADMIN"], &["ALL"], &[]),
            no_new_privs: true,
            ..Default::default()
        },
    );
    let (code, out) = run(&mut c, &b, &sb, &pod, &cfg).await;
    assert_eq!(code, 0);
    assert_eq!(hex(field(&out, "CapEff")), 1 << 12, "only CAP_NET_ADMIN");
    assert_eq!(hex(field(&out, "CapBnd")), 1 << 12);
    assert_eq!(field(&out, "NoNewPrivs"), "1");

    // A non-root process keeps an ambient capability across execve.
    let cfg = with_sc(
        container_config("ambient", &busybox(), &status),
        cri::LinuxContainerSecurityContext {
            capabilities: caps(&[], &[], &["NET_BIND_SERVICE"]),
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            ..Default::default()
        },
    );
    let (code, out) = run(&mut c, &b, &sb, &pod, &cfg).await;
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(hex(field(&out, "CapAmb")), 1 << 10, "{out:?}");
    assert_eq!(hex(field(&out, "CapEff")), 1 << 10, "{out:?}");

    // An ambient capability the container does not hold is refused at
    // CreateContainer (the kernel would silently not raise it), with
    // nothing created.
    let before = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .len();
    for (name, add, drop, ambient) in [
        (
            "ambient-dropped",
            &[][..],
            &["ALL"][..],
            &["NET_BIND_SERVICE"][..],
        ),
        ("ambient-not-added", &[][..], &[][..], &["SYS_ADMIN"][..]),
    ] {
        let cfg = with_sc(
            container_config(name, &busybox(), &status),
            cri::LinuxContainerSecurityContext {
                capabilities: caps(add, drop, ambient),
                run_as_user: Some(cri::Int64Value { value: 1000 }),
                ..Default::default()
            },
        );
        let e = c.create(&sb, &cfg, &pod).await.expect_err(name);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name}: {e:?}");
        let want = format!(
            "ambient capability CAP_{} is not in the container's capability set",
            ambient[0]
        );
        assert!(e.message().contains(&want), "{name}: {e:?}");
    }
    let after = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .len();
    assert_eq!(after, before, "refused creates leave no container");

    let mut cfg = container_config("oom-adj", &busybox(), &["cat", "/proc/self/oom_score_adj"]);
    cfg.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        oom_score_adj: 500,
        ..Default::default()
    });
    let (code, out) = run(&mut c, &b, &sb, &pod, &cfg).await;
    assert_eq!((code, out), (0, vec!["500".to_string()]));
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn read_only_root_masked_paths_and_privileged_mode() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("paths", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    // Each probe prints one word, so the outputs compare as lists.
    let probe = "touch /rootfs-write 2>/dev/null && echo root-rw || echo root-ro; \
                 [ -c /proc/kcore ] && echo kcore-masked || echo kcore-open; \
                 (echo h > /proc/sysrq-trigger) 2>/dev/null && echo sysrq-rw || echo sysrq-ro; \
                 grep -q ' /sys sysfs rw' /proc/mounts && echo sys-rw || echo sys-ro; \
                 grep Seccomp: /proc/self/status | tr -d '\\t '";

    let cfg = with_sc(
        container_config("readonly", &busybox(), &["sh", "-c", probe]),
        cri::LinuxContainerSecurityContext {
            readonly_rootfs: true,
            ..Default::default()
        },
    );
    let (_, out) = run(&mut c, &b, &sb, &pod, &cfg).await;
    assert_eq!(
        out,
        ["root-ro", "kcore-masked", "sysrq-ro", "sys-ro", "Seccomp:0"],
        "read-only root, /proc/kcore masked, /proc/sysrq-trigger read-only"
    );

    let cfg = with_sc(
        container_config(
            "privileged",
            &busybox(),
            &["sh", "-c", &format!("{probe}; grep CapEff /proc/self/status")],
        ),
        cri::LinuxContainerSecurityContext {
            privileged: true,
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let (_, out) = run(&mut c, &b, &sb, &pod, &cfg).await;
    assert_eq!(out[0], "root-rw");
    assert_eq!(
        out[1], "kcore-open",
        "privileged: /proc/kcore is not masked: {out:?}"
    );
    assert_eq!(
        out[2..5],
        ["sysrq-rw", "sys-rw", "Seccomp:0"],
        "privileged ignores seccomp: {out:?}"
    );
    // Every capability the kernel knows.
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let eff = hex(out[5].trim_start_matches("CapEff:").trim());
    assert_eq!(eff, (1u64 << (last_cap + 1)) - 1, "{out:?}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// CRI's stop_signal reaches the process (it traps it and exits 0) and is
/// what ContainerStatus reports; without one, SIGTERM is reported.
#[tokio::test]
async fn stop_signal_from_cri_is_sent_and_reported() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("stopsig", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut cfg = container_config(
        "usr1",
        &busybox(),
        &[
            "sh",
            "-c",
            "trap 'echo got-usr1; exit 0' USR1; echo ready; while true; do sleep 0.1; done",
        ],
    );
    cfg.stop_signal = cri::Signal::Sigusr1 as i32;
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    let st = c.status(&id).await.unwrap().status.unwrap();
    assert_eq!(st.stop_signal, cri::Signal::Sigusr1 as i32);
    c.start(&id).await.unwrap();
    let log = b.log_dir().join("usr1.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.stop(&id, 10).await.unwrap();
    let st = c.status(&id).await.unwrap().status.unwrap();
    assert_eq!(st.exit_code, 0, "the trap ran: {st:?}");
    assert!(std::fs::read_to_string(&log).unwrap().contains("got-usr1"));
    c.remove(&id).await.unwrap();

    let plain = c
        .create(&sb, &container_config("plain", &busybox(), &["true"]), &pod)
        .await
        .unwrap();
    let st = c.status(&plain).await.unwrap().status.unwrap();
    assert_eq!(st.stop_signal, cri::Signal::Sigterm as i32);
    c.remove(&plain).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Node-wide rlimits from the config, and the exact spec in verbose status.
#[tokio::test]
async fn configured_rlimits_and_the_spec_in_verbose_status() {
    let (b, mut c) =
        Berthd::start_with("[[container_rlimits]]\ntype = \"RLIMIT_NOFILE\"\nsoft = 4096\nhard = 8192\n")
            .await
            .expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("rlimits", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let cfg = container_config(
        "limits",
        &busybox(),
        &["sh", "-c", "grep 'Max open files' /proc/self/limits"],
    );
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    let verbose = c
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    let spec = &info["runtimeSpec"];
    assert_eq!(
        spec["process"]["args"][2], "grep 'Max open files' /proc/self/limits",
        "{spec}"
    );
    assert_eq!(spec["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE", "{spec}");
    c.start(&id).await.unwrap();
    c.wait_exited(&id, Duration::from_secs(20)).await.unwrap();
    let log = std::fs::read_to_string(b.log_dir().join("limits.log")).unwrap();
    let line = log.lines().filter_map(parse_cri_log_line).next().unwrap().3;
    let nums: Vec<&str> = line
        .split_whitespace()
        .filter(|w| w.parse::<u64>().is_ok())
        .collect();
    assert_eq!(nums, ["4096", "8192"], "{line}");
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// A log directory on a nearly full filesystem: the container is never
/// blocked (it runs to completion), dropped records are counted in verbose
/// status, and the file holds only whole records.
#[tokio::test]
async fn a_full_log_disk_drops_records_but_never_blocks() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let small = b.dir.path().join("small-logs");
    std::fs::create_dir_all(&small).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &small,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k"),
    )
    .expect("mount a 64 KiB tmpfs");
    let _unmount = Unmount(small.clone());
    let pod = pod_config("fulldisk", &small);
    let sb = c.run_pod(&pod).await.expect("runp");
    // ~1.3 MiB of numbered lines into a 64 KiB filesystem. The container
    // runs to its end (it is never blocked on a full pipe: the shim keeps
    // reading and drops what it cannot write), and the shim reports the
    // exit only once its output is drained, so the file is final then.
    let cfg = container_config(
        "chatty",
        &busybox(),
        &[
            "sh",
            "-c",
            "seq 1 100000 | sed 's/$/ some padding to make lines longer/'",
        ],
    );
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    let st = c
        .wait_exited(&id, Duration::from_secs(60))
        .await
        .expect("never blocked");
    assert_eq!(st.exit_code, 0);
    let v = c
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&v.info["info"]).unwrap();
    let dropped = info["logDroppedRecords"].as_u64().unwrap();
    assert!(dropped > 90_000, "dropped {dropped}");
    let text = std::fs::read_to_string(small.join("chatty.log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let rec = parse_cri_log_line(l).unwrap_or_else(|| panic!("not a whole record: {l:?}"));
        assert!(rec.3.ends_with("lines longer"), "cut record: {l:?}");
    }
    println!(
        "BERTH-BENCH log_full_disk kept_records={} dropped_records={dropped}",
        lines.len()
    );
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// AppArmor (on in Debian's kernel): a Localhost profile the node loaded
/// confines the process and every exec, no profile means Berth's default,
/// Unconfined means none, and a profile that is not loaded is refused at
/// CreateContainer with nothing created.
#[tokio::test]
async fn apparmor_profiles_confine_or_are_refused() {
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").unwrap_or_default();
    assert_eq!(enabled.trim(), "Y", "the VM kernel has AppArmor on");
    let profile = "profile berth-test-deny-tmp flags=(attach_disconnected,mediate_deleted) {\n  file,\n  network,\n  capability,\n  signal,\n  ptrace,\n  umount,\n  deny /tmp/** w,\n}\n";
    let mut parser = std::process::Command::new("apparmor_parser")
        .args(["-K", "-r"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("apparmor_parser");
    use std::io::Write;
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(profile.as_bytes())
        .unwrap();
    assert!(parser.wait().unwrap().success(), "load the test profile");
    // Unloaded however the test ends: the kernel keeps a loaded profile
    // until told otherwise, and the next test must not find it.
    let unload = Cleanup::new(|| {
        let st = std::process::Command::new("sh")
            .args([
                "-c",
                "echo -n berth-test-deny-tmp > /sys/kernel/security/apparmor/.remove",
            ])
            .status();
        if !st.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("unloading AppArmor profile berth-test-deny-tmp failed: {st:?}");
        }
    });

    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("apparmor", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let probe = "cat /proc/self/attr/current; echo; touch /tmp/x 2>/dev/null && echo wrote || echo denied";
    let aa = |kind: cri::security_profile::ProfileType, name: &str| cri::LinuxContainerSecurityContext {
        apparmor: Some(cri::SecurityProfile {
            profile_type: kind as i32,
            localhost_ref: name.into(),
        }),
        ..Default::default()
    };
    use cri::security_profile::ProfileType;

    // Localhost: confined, for the process and for ExecSync.
    let cfg = with_sc(
        container_config(
            "aa-local",
            &busybox(),
            &["sh", "-c", &format!("{probe}; sleep 30")],
        ),
        aa(ProfileType::Localhost, "berth-test-deny-tmp"),
    );
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.unwrap();
    let exec = c
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into(), "-c".into(), probe.into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let exec_out: Vec<String> = String::from_utf8_lossy(&exec.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(exec_out, ["berth-test-deny-tmp (enforce)", "denied"], "ExecSync");
    c.stop(&id, 0).await.unwrap();
    let log = std::fs::read_to_string(b.log_dir().join("aa-local.log")).unwrap();
    let out: Vec<String> = log
        .lines()
        .filter_map(parse_cri_log_line)
        .map(|l| l.3)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(out, ["berth-test-deny-tmp (enforce)", "denied"]);
    c.remove(&id).await.unwrap();

    // No profile: Berth's default. Unconfined: none.
    let (_, out) = run(
        &mut c,
        &b,
        &sb,
        &pod,
        &container_config("aa-default", &busybox(), &["sh", "-c", probe]),
    )
    .await;
    assert_eq!(
        out.first().map(String::as_str),
        Some("berth-default (enforce)"),
        "{out:?}"
    );
    let cfg = with_sc(
        container_config("aa-unconfined", &busybox(), &["sh", "-c", probe]),
        aa(ProfileType::Unconfined, ""),
    );
    let (_, out) = run(&mut c, &b, &sb, &pod, &cfg).await;
    let out: Vec<&String> = out.iter().filter(|l| !l.is_empty()).collect();
    assert_eq!(out, ["unconfined", "wrote"]);

    // Not loaded: refused, nothing created.
    let cfg = with_sc(
        container_config("aa-missing", &busybox(), &["true"]),
        aa(ProfileType::Localhost, "berth-not-loaded"),
    );
    let err = c.create(&sb, &cfg, &pod).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("berth-not-loaded"), "{err:?}");
    let left = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty(), "{left:?}");
    c.stop_and_remove_pod(&sb).await.unwrap();
    drop(unload);
    let loaded = std::fs::read_to_string("/sys/kernel/security/apparmor/profiles").unwrap();
    assert!(
        !loaded.contains("berth-test-deny-tmp"),
        "the guard unloads it: {loaded}"
    );
}

/// A node with AppArmor on but no `apparmor_parser` (README): a container
/// that asked for no profile still runs, unconfined, and berthd says why;
/// one that asked for RuntimeDefault is refused with what to install.
#[tokio::test]
async fn apparmor_without_apparmor_parser() {
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").unwrap_or_default();
    assert_eq!(enabled.trim(), "Y", "the VM kernel has AppArmor on");
    let parser = Path::new("/usr/sbin/apparmor_parser");
    let hidden = Path::new("/usr/sbin/apparmor_parser.hidden-by-test");
    assert!(parser.exists(), "the VM has apparmor_parser");
    std::fs::rename(parser, hidden).unwrap();
    // Put back however the test ends: the other AppArmor tests need it.
    let _restore = Cleanup::new(move || {
        if let Err(e) = std::fs::rename(hidden, parser) {
            eprintln!("restore {}: {e}", parser.display());
        }
    });
    // berth-default may be loaded by an earlier berthd: then the parser
    // would never be needed.
    let profiles = "/sys/kernel/security/apparmor/profiles";
    if std::fs::read_to_string(profiles)
        .unwrap()
        .contains("berth-default (")
    {
        std::fs::write("/sys/kernel/security/apparmor/.remove", "berth-default").unwrap();
    }
    assert!(!std::fs::read_to_string(profiles)
        .unwrap()
        .contains("berth-default ("));

    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("noparser", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let (code, out) = run(
        &mut c,
        &b,
        &sb,
        &pod,
        &container_config("no-profile", &busybox(), &["cat", "/proc/self/attr/current"]),
    )
    .await;
    assert_eq!((code, out), (0, vec!["unconfined".to_string()]));
    let log = b.log();
    assert!(
        log.contains("AppArmor default profile unavailable; containers without a profile run unconfined"),
        "{log}"
    );
    let cfg = with_sc(
        container_config("runtime-default", &busybox(), &["true"]),
        cri::LinuxContainerSecurityContext {
            apparmor: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        },
    );
    let e = c.create(&sb, &cfg, &pod).await.expect_err("RuntimeDefault");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("install apparmor_parser"), "{e:?}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// `tty: true`: the process has a terminal from the container's own devpts
/// as stdin/stdout/stderr and controlling terminal, and what it prints
/// reaches the CRI log as stdout. `stdin: true` keeps stdin open (a read
/// blocks) instead of reading EOF at once.
#[tokio::test]
async fn tty_and_open_stdin() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("tty", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut cfg = container_config(
        "tty",
        &busybox(),
        &[
            "sh",
            "-c",
            "tty; [ -t 0 ] && echo stdin-tty; [ -t 1 ] && echo stdout-tty; echo err-line >&2; \
             ls -l /proc/self/fd/0 | sed 's/.*-> //'",
        ],
    );
    cfg.tty = true;
    let (id, st) = c.run_to_exit(&sb, &cfg, &pod).await.expect("run");
    assert_eq!(st.exit_code, 0);
    let log = std::fs::read_to_string(b.log_dir().join("tty.log")).unwrap();
    let recs: Vec<(String, String)> = log
        .lines()
        .filter_map(parse_cri_log_line)
        .map(|l| (l.1, l.3.trim_end_matches('\r').to_string()))
        .collect();
    let lines: Vec<&str> = recs.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        lines,
        ["/dev/pts/0", "stdin-tty", "stdout-tty", "err-line", "/dev/pts/0"],
        "{log}"
    );
    assert!(
        recs.iter().all(|r| r.0 == "stdout"),
        "a terminal is one stream: {log}"
    );
    c.remove(&id).await.unwrap();

    // stdin: true, no tty: `read` waits (still running after a while),
    // where stdin: false reads EOF and exits at once.
    let mut open = container_config("stdin-open", &busybox(), &["sh", "-c", "read x; echo got-eof"]);
    open.stdin = true;
    let id = c.create(&sb, &open, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    let closed = container_config("stdin-closed", &busybox(), &["sh", "-c", "read x; echo got-eof"]);
    let (code, out) = run(&mut c, &b, &sb, &pod, &closed).await;
    assert_eq!((code, out), (0, vec!["got-eof".to_string()]));
    let st = c.status(&id).await.unwrap().status.unwrap();
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerRunning as i32,
        "read blocks on an open stdin"
    );
    c.stop(&id, 0).await.unwrap();
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// CRI log records from a real container: a 40 KiB line becomes `P`
/// records and a final `F`, and stdout and stderr lines keep the order the
/// process wrote them in.
#[tokio::test]
async fn long_lines_are_split_and_streams_keep_their_order() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("logs", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let cfg = container_config(
        "long",
        &busybox(),
        &[
            "sh",
            "-c",
            "head -c 40960 /dev/zero | tr '\\0' x; echo; \
             for i in 1 2 3; do echo out-$i; sleep 0.05; echo err-$i >&2; sleep 0.05; done",
        ],
    );
    let (id, st) = c.run_to_exit(&sb, &cfg, &pod).await.expect("run");
    assert_eq!(st.exit_code, 0);
    let log = std::fs::read_to_string(b.log_dir().join("long.log")).unwrap();
    let recs: Vec<_> = log.lines().filter_map(parse_cri_log_line).collect();
    let tags: Vec<&str> = recs.iter().take(3).map(|r| r.2.as_str()).collect();
    assert_eq!(tags, ["P", "P", "F"], "40 KiB = 16 + 16 + 8 KiB");
    let joined: String = recs.iter().take(3).map(|r| r.3.as_str()).collect();
    assert_eq!(joined.len(), 40960);
    assert!(joined.bytes().all(|b| b == b'x'));
    let rest: Vec<String> = recs[3..].iter().map(|r| format!("{} {}", r.1, r.3)).collect();
    assert_eq!(
        rest,
        [
            "stdout out-1",
            "stderr err-1",
            "stdout out-2",
            "stderr err-2",
            "stdout out-3",
            "stderr err-3"
        ]
    );
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Seccomp: RuntimeDefault denies what Docker's default denies (EPERM),
/// Unconfined installs nothing, a Localhost profile is read from the node;
/// ExecSync runs under the container's filter too. The containers share a
/// pod, so its fork server compiles a profile once and must never hand
/// one container's program to another with a different profile.
#[tokio::test]
async fn seccomp_profiles_apply() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("seccomp", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let local = b.dir.path().join("no-mkdir.json");
    std::fs::write(
        &local,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let script = "grep '^Seccomp:' /proc/self/status; \
                  mkdir /tmp/d && echo mkdir-ok || echo mkdir-denied; \
                  unshare -U true && echo unshare-ok || echo unshare-denied; \
                  sleep 300";
    let cases = [
        (
            "rd",
            cri::SecurityProfile {
                profile_type: 0,
                localhost_ref: String::new(),
            },
            ["Seccomp:\t2", "mkdir-ok", "unshare-denied"],
        ),
        // The pod's fork server compiled this profile for "rd": the
        // program it kept is the one installed again.
        (
            "rd-again",
            cri::SecurityProfile {
                profile_type: 0,
                localhost_ref: String::new(),
            },
            ["Seccomp:\t2", "mkdir-ok", "unshare-denied"],
        ),
        (
            "unconfined",
            cri::SecurityProfile {
                profile_type: 1,
                localhost_ref: String::new(),
            },
            ["Seccomp:\t0", "mkdir-ok", "unshare-ok"],
        ),
        (
            "local",
            cri::SecurityProfile {
                profile_type: 2,
                localhost_ref: local.to_string_lossy().into_owned(),
            },
            ["Seccomp:\t2", "mkdir-denied", "unshare-ok"],
        ),
    ];
    for (name, profile, want) in cases {
        let mut cfg = container_config(name, &busybox(), &["sh", "-c", script]);
        // A user namespace needs no capability: only the filter can refuse it.
        cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(profile),
            ..Default::default()
        });
        let id = c.create(&sb, &cfg, &pod).await.unwrap();
        c.start(&id).await.unwrap();
        let log_path = b.log_dir().join(format!("{name}.log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let out = loop {
            let out: Vec<String> = std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .lines()
                .filter_map(parse_cri_log_line)
                .filter(|l| l.1 == "stdout")
                .map(|l| l.3)
                .collect();
            if out.len() >= 3 {
                break out;
            }
            assert!(Instant::now() < deadline, "{name}: {out:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(out[..3], want, "{name}");
        let exec = c
            .runtime
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["grep".into(), "^Seccomp:".into(), "/proc/self/status".into()],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            String::from_utf8_lossy(&exec.stdout).trim(),
            want[0],
            "{name}: ExecSync under the same filter"
        );
        c.stop(&id, 0).await.unwrap();
    }
    // A missing Localhost profile is a clear error, nothing created.
    let mut cfg = container_config("missing", &busybox(), &["true"]);
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: 2,
            localhost_ref: "/nonexistent/profile.json".into(),
        }),
        ..Default::default()
    });
    let e = c.create(&sb, &cfg, &pod).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("/nonexistent/profile.json"),
        "{}",
        e.message()
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Every cgroup directory under the cgroup v2 root, to show a refused
/// request created none.
fn cgroup_dirs() -> std::collections::BTreeSet<std::path::PathBuf> {
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
                out.insert(e.path());
            }
        }
    }
    out
}

/// Processes named berth-shim.
fn shim_count() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "berth-shim"))
        .count()
}

/// `userns_options`: CONTAINER, TARGET and every malformed POD mapping are
/// InvalidArgument naming the fault; a valid POD request (what kubelet sends
/// for hostUsers: false) is FailedPrecondition on a root that cannot be idmapped;
/// none of them leaves a sandbox, cgroup, shim or mount behind. NODE runs
/// as before, and a container cannot ask for a user namespace its pod lacks.
#[tokio::test]
async fn user_namespace_options_are_validated_and_refused_cleanly() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let map = |host_id, container_id, length| cri::IdMapping {
        host_id,
        container_id,
        length,
    };
    let userns =
        |mode: cri::NamespaceMode, uids: Vec<cri::IdMapping>, gids: Vec<cri::IdMapping>| cri::UserNamespace {
            mode: mode as i32,
            uids,
            gids,
        };
    let with = |name: &str, u: cri::UserNamespace| {
        let mut pod = pod_config(name, &b.log_dir());
        pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                userns_options: Some(u),
                ..Default::default()
            }),
            ..Default::default()
        });
        pod
    };
    let ok = || vec![map(65536, 0, 65536)];
    let cgroups = cgroup_dirs();
    let shims = shim_count();
    let invalid = [
        (
            "container",
            userns(cri::NamespaceMode::Container, vec![], vec![]),
            "mode CONTAINER",
        ),
        (
            "target",
            userns(cri::NamespaceMode::Target, vec![], vec![]),
            "mode TARGET",
        ),
        (
            "nomaps",
            userns(cri::NamespaceMode::Pod, vec![], ok()),
            "exactly one uid mapping",
        ),
        (
            "twomaps",
            userns(
                cri::NamespaceMode::Pod,
                ok(),
                vec![map(65536, 0, 1), map(131072, 1, 65535)],
            ),
            "exactly one gid mapping, got 2",
        ),
        (
            "notzero",
            userns(cri::NamespaceMode::Pod, vec![map(65536, 1, 65536)], ok()),
            "container id must be 0",
        ),
        (
            "empty",
            userns(cri::NamespaceMode::Pod, ok(), vec![map(65536, 0, 0)]),
            "length must not be 0",
        ),
        (
            "hostroot",
            userns(cri::NamespaceMode::Pod, vec![map(0, 0, 65536)], ok()),
            "host id must not be 0",
        ),
        (
            "overflow",
            userns(cri::NamespaceMode::Pod, vec![map(u32::MAX, 0, 65536)], ok()),
            "run past the 32-bit id space",
        ),
    ];
    for (name, u, want) in invalid {
        let e = c.run_pod(&with(name, u)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name}: {e:?}");
        assert!(e.message().contains(want), "{name}: {}", e.message());
    }
    let e = c
        .run_pod(&with("valid", userns(cri::NamespaceMode::Pod, ok(), ok())))
        .await
        .unwrap_err();
    // The VM's tmpfs root cannot be idmapped (vm_userns runs such pods on ext4).
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("hostUsers: false cannot be honoured"),
        "{}",
        e.message()
    );
    let left = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(left.items.is_empty(), "{left:?}");
    assert_eq!(cgroup_dirs(), cgroups, "a refused pod gets no cgroup");
    assert_eq!(shim_count(), shims, "a refused pod gets no shim");
    assert!(mounts_containing(&b.dir.path().to_string_lossy()).is_empty());

    // NODE is today's behaviour; its container cannot ask for a POD userns.
    c.pull(&busybox()).await.expect("pull");
    let pod = with("node", userns(cri::NamespaceMode::Node, vec![], vec![]));
    let sb = c.run_pod(&pod).await.expect("mode NODE runs");
    let mut cfg = container_config("userns", &busybox(), &["true"]);
    cfg.linux.get_or_insert_with(Default::default).security_context =
        Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Container as i32,
                userns_options: Some(userns(cri::NamespaceMode::Pod, ok(), ok())),
                ..Default::default()
            }),
            ..Default::default()
        });
    let e = c.create(&sb, &cfg, &pod).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("differs from its pod's"), "{}", e.message());
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// A pod asking for the user namespace kubelet gives `hostUsers: false`.
fn pod_with_kubelet_userns(b: &Berthd, name: &str) -> cri::PodSandboxConfig {
    let range = || {
        vec![cri::IdMapping {
            host_id: 65536,
            container_id: 0,
            length: 65536,
        }]
    };
    let mut pod = pod_config(name, &b.log_dir());
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: cri::NamespaceMode::Pod as i32,
                uids: range(),
                gids: range(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    pod
}

fn sh(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
}

/// The start-up probe: berthd's root on the VM's tmpfs cannot be idmapped
/// on a kernel before 6.3, and berthd's log and the refusal of a
/// hostUsers: false pod name tmpfs and the kernel; moved onto a
/// loop-mounted ext4 filesystem, the probe finds idmapping works, the
/// pod runs and Status advertises user namespaces (not on tmpfs).
#[tokio::test]
async fn user_namespace_probe_names_the_filesystem_and_kernel() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let tmpfs_idmaps = (v.next().unwrap(), v.next().unwrap()) >= (6, 3);
    let e = c
        .run_pod(&pod_with_kubelet_userns(&b, "probe-tmpfs"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    println!("BERTH-USERNS tmpfs: {}", e.message());
    let want = if tmpfs_idmaps {
        "user namespaces supported (tmpfs".to_string()
    } else {
        format!(
            "cannot be idmapped (tmpfs filesystem): Invalid argument (os error 22) (tmpfs on kernel {})",
            release.trim()
        )
    };
    assert!(e.message().contains(&want), "{}", e.message());
    assert!(b.log().contains(&want), "{}", b.log());
    let st = c.runtime_status().await.unwrap();
    for h in &st.runtime_handlers {
        let f = h.features.as_ref().unwrap();
        assert_eq!(f.user_namespaces, tmpfs_idmaps, "{h:?}");
    }

    // The same berthd state on ext4 (busybox mke2fs, mounted by the ext4 driver).
    b.kill_hard();
    let img = b.dir.path().join("root.img");
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let root = b.dir.path().join("root");
    sh("mke2fs", &["-F", &img.to_string_lossy()]);
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
    let mut c = b.spawn().await.expect("berthd on ext4");
    assert!(
        b.log().contains("user namespaces supported (ext4 on kernel"),
        "{}",
        b.log()
    );
    let sb = c
        .run_pod(&pod_with_kubelet_userns(&b, "probe-ext4"))
        .await
        .expect("a hostUsers: false pod runs on ext4");
    c.stop_and_remove_pod(&sb).await.unwrap();
    // Status advertises the feature on ext4 (and did not on tmpfs).
    let st = c.runtime_status().await.unwrap();
    assert!(!st.runtime_handlers.is_empty(), "{st:?}");
    for h in &st.runtime_handlers {
        assert!(h.features.as_ref().unwrap().user_namespaces, "{h:?}");
    }
    b.kill_hard();
    sh("umount", &[&root.to_string_lossy()]);
}
