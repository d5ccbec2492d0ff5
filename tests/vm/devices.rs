//! Devices: the default device filter refusing host disks, CRI devices
//! with their permissions, privileged containers getting the host's devices,
//! and bad device paths refused with nothing left behind.
//!
//! Needs root, cgroup v2 and the loopback registry: runs inside the VM
//! (`hack/vm`). Run with `--test-threads=1`.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::node::assert_nothing_left;
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// A running `sleep` container with `devices` and, optionally, privileged.
async fn device_container(
    c: &mut CriClient,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    name: &str,
    devices: Vec<cri::Device>,
    privileged: bool,
) -> String {
    let mut cfg = container_config(name, &busybox(), &["sleep", "300"]);
    cfg.devices = devices;
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        privileged,
        ..Default::default()
    });
    let id = c.create(sb, &cfg, pod).await.expect("create");
    c.start(&id).await.expect("start");
    id
}

/// The audit's hole: a default container is root with CAP_MKNOD. It may
/// still mknod any node (images carry device files), but opening one that
/// is not a standard pseudo-device is refused by the cgroup device filter,
/// in the container's own process and in ExecSync.
#[tokio::test]
async fn devices_default_filter_refuses_host_disks() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("devfilter", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    // ram0 (b 1:0) is the VM's RAM disk: a block device that really exists,
    // so a refusal cannot be ENXIO in disguise.
    let script = "grep CapEff /proc/self/status; \
                  mknod /tmp/sda b 8 0 && echo mknod-sda-ok; \
                  echo \"sda: $(head -c1 /tmp/sda 2>&1 >/dev/null)\"; \
                  mknod /tmp/ram b 1 0 && echo \"ram: $(head -c1 /tmp/ram 2>&1 >/dev/null)\"; \
                  echo \"zero: $(head -c4 /dev/zero | wc -c | tr -d ' ')\"; \
                  echo \"urandom: $(head -c4 /dev/urandom | wc -c | tr -d ' ')\"; \
                  echo x >/dev/null && echo null-ok; \
                  echo done; sleep 300";
    let cfg = container_config("filtered", &busybox(), &["sh", "-c", script]);
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    let log_path = b.log_dir().join("filtered.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out: Vec<String> = std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(parse_cri_log_line)
            .map(|l| l.3)
            .collect();
        if out.iter().any(|l| l == "done") {
            break out.join("\n");
        }
        assert!(Instant::now() < deadline, "{out:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // CAP_MKNOD is bit 27: the container really holds it.
    let capeff = out.lines().find(|l| l.starts_with("CapEff:")).expect("CapEff");
    let caps = u64::from_str_radix(capeff.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert!(caps & (1 << 27) != 0, "CAP_MKNOD expected: {out}");
    assert!(out.contains("mknod-sda-ok"), "{out}");
    assert!(
        out.contains("sda: head: /tmp/sda: Operation not permitted"),
        "{out}"
    );
    assert!(
        out.contains("ram: head: /tmp/ram: Operation not permitted"),
        "{out}"
    );
    assert!(out.contains("zero: 4") && out.contains("urandom: 4"), "{out}");
    assert!(out.contains("null-ok"), "{out}");
    let (code, out) = sh_joined(&mut c, &id, "head -c1 /tmp/ram >/dev/null").await;
    assert_ne!(code, 0, "ExecSync is filtered too: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    // The default nodes (made with mknod, not bound from the node): the
    // right numbers, 0666 whatever the umask, and the real devices.
    let (_, out) = sh_joined(
        &mut c,
        &id,
        "stat -c '%n %F %t:%T %a' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; \
         echo x >/dev/full || echo full-refused",
    )
    .await;
    for (node, numbers) in [
        ("null", "1:3"),
        ("zero", "1:5"),
        ("full", "1:7"),
        ("random", "1:8"),
        ("urandom", "1:9"),
        ("tty", "5:0"),
    ] {
        let want = format!("/dev/{node} character special file {numbers} 666");
        assert!(out.lines().any(|l| l == want), "{want:?} in {out}");
    }
    assert!(
        out.contains("No space left on device") && out.contains("full-refused"),
        "{out}"
    );
    // A host block device is not even in an unprivileged container's /dev.
    let (_, out) = sh_joined(&mut c, &id, "test -e /dev/ram0 && echo present || echo absent").await;
    assert_eq!(out.trim(), "absent");
    c.stop(&id, 0).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Sets up a loop device over a 1 MiB file starting with `berth-disk`;
/// detached again on drop.
struct LoopDevice {
    dev: String,
    file: std::path::PathBuf,
}

impl LoopDevice {
    fn new(dir: &Path) -> LoopDevice {
        let file = dir.join("disk.img");
        let mut data = b"berth-disk".to_vec();
        data.resize(1 << 20, 0);
        std::fs::write(&file, data).unwrap();
        let free = std::process::Command::new("losetup").arg("-f").output().unwrap();
        let dev = String::from_utf8_lossy(&free.stdout).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup -f: {free:?}");
        let st = std::process::Command::new("losetup")
            .arg(&dev)
            .arg(&file)
            .status()
            .unwrap();
        assert!(st.success(), "losetup {dev}");
        LoopDevice { dev, file }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .status();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// CRI devices: the node appears at container_path and the filter grants
/// exactly the CRI permissions ("r": reads work, writes are refused, also
/// through a node of the same numbers made with mknod).
#[tokio::test]
async fn devices_cri_devices_get_their_permissions() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let disk = LoopDevice::new(b.dir.path());
    let pod = pod_config("cridev", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let dev = |inside: &str, perms: &str| cri::Device {
        host_path: disk.dev.clone(),
        container_path: inside.into(),
        permissions: perms.into(),
    };

    let ro = device_container(&mut c, &sb, &pod, "ro", vec![dev("/dev/xdisk", "r")], false).await;
    let (code, out) = sh_joined(&mut c, &ro, "ls -l /dev/xdisk; head -c10 /dev/xdisk; echo").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with('b'), "a block node: {out}");
    assert!(out.contains("berth-disk"), "{out}");
    let (code, out) = sh_joined(&mut c, &ro, "printf W >/dev/xdisk").await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    let minor: u32 = disk.dev.trim_start_matches("/dev/loop").parse().unwrap();
    let (code, out) = sh_joined(
        &mut c,
        &ro,
        &format!("mknod /tmp/again b 7 {minor} && printf W >/tmp/again"),
    )
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    c.stop(&ro, 0).await.unwrap();

    let rw = device_container(&mut c, &sb, &pod, "rw", vec![dev("/dev/wdisk", "rw")], false).await;
    let (code, out) = sh_joined(&mut c, &rw, "printf WRITTEN >/dev/wdisk && head -c10 /dev/wdisk").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "WRITTENisk");
    let mut head = [0u8; 7];
    use std::io::Read;
    std::fs::File::open(&disk.dev)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert_eq!(&head, b"WRITTEN", "the write reached the host device");
    c.stop(&rw, 0).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Privileged: the host's device nodes are in /dev and no filter applies.
#[tokio::test]
async fn devices_privileged_container_gets_host_devices() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("privdev", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    assert!(Path::new("/dev/ram0").exists(), "the VM's RAM disk");
    let id = device_container(&mut c, &sb, &pod, "priv", vec![], true).await;
    let (code, out) = sh_joined(
        &mut c,
        &id,
        "ls -l /dev/ram0 /dev/loop0 && head -c512 /dev/ram0 | wc -c && \
         mknod /tmp/ram b 1 0 && head -c512 /tmp/ram | wc -c && \
         readlink /dev/ptmx && test -c /dev/null && echo ok",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(
        lines[0].starts_with('b') && lines[0].ends_with("/dev/loop0"),
        "{out}"
    );
    assert!(
        lines[1].starts_with('b') && lines[1].ends_with("/dev/ram0"),
        "{out}"
    );
    assert_eq!(lines[2..].to_vec(), ["512", "512", "pts/ptmx", "ok"], "{out}");
    c.stop(&id, 0).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// A CRI device that is missing or is not a device node: InvalidArgument,
/// and nothing (cgroup, directories, records) left behind.
#[tokio::test]
async fn devices_bad_host_path_is_invalid_and_leaks_nothing() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("baddev", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    for host_path in ["/dev/berth-no-such-device", "/etc/hostname"] {
        let mut cfg = container_config("bad", &busybox(), &["true"]);
        cfg.devices = vec![cri::Device {
            host_path: host_path.into(),
            container_path: "/dev/x".into(),
            permissions: "rw".into(),
        }];
        let e = c.create(&sb, &cfg, &pod).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(host_path), "{}", e.message());
    }
    let cg_root =
        Path::new("/sys/fs/cgroup").join(format!("{}/{sb}", b.cgroup_parent).trim_start_matches('/'));
    let children: Vec<_> = std::fs::read_dir(&cg_root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    assert!(children.is_empty(), "container cgroups leaked: {children:?}");
    for dir in ["root/containers", "state/containers"] {
        let left: Vec<_> = std::fs::read_dir(b.dir.path().join(dir))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "leftover {dir}: {left:?}");
    }
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_nothing_left(&b, &format!("{}/{sb}", b.cgroup_parent));
}
