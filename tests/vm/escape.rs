//! Container-escape classes, each driven through the CRI like a hostile pod
//! would: system calls through the other ABIs of the node's kernel past the
//! seccomp filter, the berth-shim stages inside a container being
//! ptrace-able by uid, a mount target swapped for a symlink through a shared
//! volume (runc CVE-2021-30465), and `/proc/self/exe` as the entrypoint
//! (CVE-2019-5736). Each asserts on what the node keeps unchanged.
//!
//! Every test name starts with `escape_` (one `BERTH_VM_FILTER` for all).
//! Runs inside the VM (`hack/vm`, which boots with `syscall.x32=y`), with
//! `--test-threads=1`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_proto::cri;
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// Creates, starts and waits for `cfg`; Ok(exit code, log lines) or the
/// error of whichever step refused it. The container is removed either way.
async fn try_run(
    c: &mut CriClient,
    b: &Berthd,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    cfg: &cri::ContainerConfig,
) -> Result<(i32, Vec<String>), String> {
    let id = c
        .create(sb, cfg, pod)
        .await
        .map_err(|e| e.message().to_string())?;
    let result = match c.start(&id).await {
        Err(e) => Err(e.message().to_string()),
        Ok(()) => {
            let st = c.wait_exited(&id, Duration::from_secs(60)).await.expect("exits");
            let name = &cfg.metadata.as_ref().unwrap().name;
            Ok((st.exit_code, log_lines(&b.log_dir().join(format!("{name}.log")))))
        }
    };
    c.remove(&id).await.expect("remove");
    let _ = std::fs::remove_file(
        b.log_dir()
            .join(format!("{}.log", cfg.metadata.as_ref().unwrap().name)),
    );
    result
}

fn mount(container_path: &str, host_path: &Path, readonly: bool) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        host_path: host_path.to_string_lossy().into_owned(),
        readonly,
        ..Default::default()
    }
}

fn shared_pid_pod(name: &str, b: &Berthd) -> cri::PodSandboxConfig {
    let mut pod = pod_config(name, &b.log_dir());
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(shared_pid()),
        ..Default::default()
    });
    pod
}

fn shared_pid() -> cri::NamespaceOption {
    cri::NamespaceOption {
        pid: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

const ABI_PROBES: [&str; 4] = ["x86_64-keyctl", "i386-keyctl", "x32-keyctl", "i386-getpid"];

/// The probes' answers in a container with `profile` (one line a probe:
/// its answer, or `exit=N` when the filter killed it).
async fn abi_probe(
    c: &mut CriClient,
    b: &Berthd,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    profile: cri::security_profile::ProfileType,
) -> Vec<String> {
    let script = format!(
        "for p in {}; do /probe $p || echo \"$p exit=$?\"; done",
        ABI_PROBES.join(" ")
    );
    let name = format!("abi-{}", profile as i32);
    let mut cfg = container_config(&name, &busybox(), &["sh", "-c", &script]);
    // The probe is a dynamically linked Rust program: it takes the node's
    // C library along, read-only.
    cfg.mounts
        .push(mount("/probe", &bin_dir().join("berth-syscall-probe"), true));
    for dir in ["/lib/x86_64-linux-gnu", "/lib64"] {
        cfg.mounts.push(mount(dir, Path::new(dir), true));
    }
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: profile as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let (code, out) = try_run(c, b, sb, pod, &cfg).await.expect("probe runs");
    assert_eq!(code, 0, "{out:?}");
    out
}

/// seccomp: RuntimeDefault refuses keyctl(2) through every ABI the node's
/// kernel accepts from a 64-bit process (x86_64, i386 by `int 0x80`, x32 by
/// the number's x32 bit), with the same EPERM, and a legitimate i386 call
/// is answered, not killed. Unconfined, the same calls reach the kernel
/// (so the filter, not the kernel, refused them).
#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn escape_seccomp_filters_every_abi_of_the_node() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("abi", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    use cri::security_profile::ProfileType;

    let open = abi_probe(&mut c, &b, &sb, &pod, ProfileType::Unconfined).await;
    assert_eq!(open.len(), ABI_PROBES.len(), "{open:?}");
    for (line, probe) in open.iter().zip(ABI_PROBES) {
        let answer = line.strip_prefix(probe).unwrap_or_else(|| panic!("{open:?}"));
        assert!(
            !answer.contains("EPERM") && !answer.contains("ENOSYS") && !answer.contains("exit="),
            "unconfined {probe} did not reach the kernel: {open:?}"
        );
    }

    let filtered = abi_probe(&mut c, &b, &sb, &pod, ProfileType::RuntimeDefault).await;
    assert_eq!(
        filtered,
        vec![
            "x86_64-keyctl EPERM",
            "i386-keyctl EPERM",
            "x32-keyctl EPERM",
            "i386-getpid ok"
        ],
        "RuntimeDefault on each ABI"
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// CAP_SYS_PTRACE, numbered as in <linux/capability.h>.
const CAP_SYS_PTRACE: u32 = 19;

/// Whether a thread with our uid and permitted capabilities, but with
/// CAP_SYS_PTRACE cleared from its effective set, may inspect `pid`:
/// kcmp(2) asks the kernel's ptrace check (PTRACE_MODE_READ_REALCREDS, as
/// /proc/<pid>/exe, mem and environ do, on the real credentials), which
/// then passes only if the target is dumpable. That is what a sibling
/// process with a matching identity gets.
fn inspectable_by_uid_peer(pid: u32) -> Result<(), std::io::Error> {
    std::thread::spawn(move || {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut hdr = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        const KCMP_VM: libc::c_long = 1;
        // SAFETY: capget/capset with a valid header and two data structs,
        // as version 3 requires (capset changes only this thread); kcmp
        // with integer arguments.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()), 0);
            data[0].effective &= !(1 << CAP_SYS_PTRACE);
            assert_eq!(libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()), 0);
            let me = libc::getpid() as libc::c_long;
            if libc::syscall(libc::SYS_kcmp, me, pid as libc::c_long, KCMP_VM, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .join()
    .expect("peer thread")
}

/// CVE-2019-5736 defence in depth: while berth-shim runs inside a
/// container's namespaces (the init stage parked until Start), it is not
/// dumpable, so a process of the same uid without CAP_SYS_PTRACE cannot
/// inspect it (ptrace, `/proc/<pid>/exe`, mem, fds, environ). The same peer
/// does reach a dumpable root process (the control).
#[tokio::test]
async fn escape_container_stages_are_not_dumpable() {
    let mut control = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let seen = inspectable_by_uid_peer(control.id());
    assert!(
        seen.is_ok(),
        "the peer cannot inspect even a dumpable process: {seen:?}"
    );
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = shared_pid_pod("dumpable", &b);
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut cfg = container_config("parked", &busybox(), &["echo", "ran"]);
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        namespace_options: Some(shared_pid()),
        ..Default::default()
    });
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    let stages = processes_matching("berth-shim init ");
    assert!(!stages.is_empty(), "no parked berth-shim init");
    for (pid, _) in stages {
        let got = inspectable_by_uid_peer(pid);
        assert_eq!(
            got.as_ref().map_err(|e| e.raw_os_error()),
            Err(Some(libc::EPERM)),
            "berth-shim init (pid {pid}) is dumpable"
        );
    }
    c.start(&id).await.expect("start");
    c.wait_exited(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(log_lines(&b.log_dir().join("parked.log")), vec!["ran"]);
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
    let _ = control.kill();
    let _ = control.wait();
}

/// Names directly under the node's `/`, to see that nothing was mounted or
/// created there.
fn node_root_names() -> BTreeSet<String> {
    std::fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// runc CVE-2021-30465: a container keeps swapping `sub` in a shared
/// emptyDir between a directory and a symlink to `/` while another container
/// whose second volume targets `/vol/sub` is created again and again. The
/// mount is resolved inside the root and made through the fd, so each round
/// either mounts the volume inside the container or fails cleanly; nothing
/// of the node is mounted, reached or changed.
#[tokio::test]
async fn escape_shared_volume_symlink_swap_mounts_nothing_of_the_node() {
    const ROUNDS: usize = 30;
    let marker = PathBuf::from(format!("/tmp/berth-escape-marker-{}", std::process::id()));
    std::fs::write(&marker, "node-secret\n").unwrap();
    let root_before = node_root_names();
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let shared = b.dir.path().join("emptydir");
    let second = b.dir.path().join("second");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(second.join("w-marker"), "second-volume\n").unwrap();
    let pod = pod_config("swap", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");

    let mut swapper = container_config(
        "swapper",
        &busybox(),
        &[
            "sh",
            "-c",
            "while :; do mkdir /vol/sub; rmdir /vol/sub; ln -s / /vol/sub; rm /vol/sub; done 2>/dev/null",
        ],
    );
    swapper.mounts.push(mount("/vol", &shared, false));
    let swapper_id = c.create(&sb, &swapper, &pod).await.expect("create swapper");
    c.start(&swapper_id).await.expect("start swapper");

    let script = format!("cat /vol/sub/w-marker {} 2>/dev/null; true", marker.display());
    let (mut ran, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        let mut victim = container_config("victim", &busybox(), &["sh", "-c", &script]);
        victim.mounts.push(mount("/vol", &shared, false));
        victim.mounts.push(mount("/vol/sub", &second, false));
        match try_run(&mut c, &b, &sb, &pod, &victim).await {
            Ok((_, out)) => {
                ran += 1;
                assert!(
                    out.iter().all(|l| l == "second-volume"),
                    "round {round}: the container saw {out:?}"
                );
            }
            Err(e) => {
                refused += 1;
                assert!(!e.is_empty() && !e.contains("panic"), "round {round}: {e}");
            }
        }
        assert!(
            mounts_containing(&second.to_string_lossy()).is_empty(),
            "round {round}: the second volume is mounted on the node"
        );
    }
    eprintln!("symlink swap: {ran} rounds ran, {refused} refused cleanly");
    c.stop(&swapper_id, 0).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "node-secret\n");
    assert_eq!(node_root_names(), root_before, "the node's / changed");
    assert!(!Path::new("/w-marker").exists());
    let _ = std::fs::remove_file(&marker);
}

fn sha256_of(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    ring::digest::digest(&ring::digest::SHA256, &bytes)
        .as_ref()
        .to_vec()
}

/// The pid `node_pid` has in its innermost PID namespace (NSpid's last).
fn ns_pid(node_pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{node_pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    line.split_whitespace().last().unwrap().to_string()
}

/// CVE-2019-5736: an entrypoint of `/proc/self/exe` runs whatever the init
/// stage's executable is (berth-shim) inside the container; neither it nor
/// a sibling with CAP_SYS_PTRACE in a shared-PID pod can open berth-shim for
/// writing through `/proc/<pid>/exe`, and the node's binary is unchanged.
#[tokio::test]
async fn escape_proc_self_exe_entrypoint_cannot_write_berth_shim() {
    let shim = bin_dir().join("berth-shim");
    let before = sha256_of(&shim);
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = shared_pid_pod("selfexe", &b);
    let sb = c.run_pod(&pod).await.expect("runp");
    let sc = || cri::LinuxContainerSecurityContext {
        namespace_options: Some(shared_pid()),
        capabilities: Some(cri::Capability {
            add_capabilities: vec!["SYS_PTRACE".into()],
            ..Default::default()
        }),
        apparmor: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Unconfined as i32,
            ..Default::default()
        }),
        ..Default::default()
    };

    // The entrypoint itself: whatever it runs, it runs read-only.
    let mut selfexe = container_config("selfexe", &busybox(), &["/proc/self/exe", "--version"]);
    selfexe.linux.as_mut().unwrap().security_context = Some(sc());
    let got = try_run(&mut c, &b, &sb, &pod, &selfexe).await;
    eprintln!("entrypoint /proc/self/exe: {got:?}");
    assert_eq!(sha256_of(&shim), before, "berth-shim changed");

    // A stage parked inside the pod, attacked from a sibling.
    let mut parked = container_config("parked", &busybox(), &["true"]);
    parked.linux.as_mut().unwrap().security_context = Some(sc());
    let parked_id = c.create(&sb, &parked, &pod).await.expect("create");
    let stages = processes_matching("berth-shim init ");
    assert_eq!(stages.len(), 1, "{stages:?}");
    let target = ns_pid(stages[0].0);
    let script = format!(
        "(echo pwned >> /proc/{target}/exe) 2>&1; echo write=$?; \
         (exec 3<>/proc/{target}/exe) 2>&1; echo rw=$?"
    );
    let mut attacker = container_config("attacker", &busybox(), &["sh", "-c", &script]);
    attacker.linux.as_mut().unwrap().security_context = Some(sc());
    let (_, out) = try_run(&mut c, &b, &sb, &pod, &attacker)
        .await
        .expect("attacker runs");
    for what in ["write", "rw"] {
        let status = out
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{what}=")))
            .unwrap_or_else(|| panic!("no {what} status: {out:?}"));
        assert_ne!(status, "0", "opened berth-shim for {what}: {out:?}");
    }
    let refusals = ["Read-only file system", "Text file busy", "Permission denied"];
    assert!(
        out.iter()
            .filter(|l| l.contains("can't"))
            .all(|l| refusals.iter().any(|r| l.contains(r))),
        "{out:?}"
    );
    c.start(&parked_id).await.expect("start");
    c.wait_exited(&parked_id, Duration::from_secs(30)).await.unwrap();
    c.remove(&parked_id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_eq!(sha256_of(&shim), before, "berth-shim changed");
}
