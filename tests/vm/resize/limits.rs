//! oom_score_adj, cpusets and the swap limit of a running container.

use std::path::Path;

use berth_proto::cri;
use berth_tests::*;

use super::{oom_score_adj, pid_of, read, status_resources, update, MIB};

fn with(f: impl FnOnce(&mut cri::LinuxContainerResources)) -> cri::LinuxContainerResources {
    let mut r = cri::LinuxContainerResources {
        cpu_shares: 1024,
        ..Default::default()
    };
    f(&mut r);
    r
}

/// Runs against the busy-loop container of the CPU test.
pub async fn oom_score_cpuset_and_swap(c: &mut CriClient, dir: &Path, id: &str) {
    // oom_score_adj is the process's, written live and read back from /proc,
    // including a reset to 0.
    let pid = pid_of(c, id).await;
    for adj in [500, -100, 0] {
        update(c, id, with(|r| r.oom_score_adj = adj)).await.unwrap();
        assert_eq!(oom_score_adj(pid), adj, "written to /proc/{pid}/oom_score_adj");
        assert_eq!(status_resources(c, id).await.oom_score_adj, adj, "read back");
    }
    // Somebody else changes it: ContainerStatus reports the kernel's value.
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), "7").unwrap();
    assert_eq!(status_resources(c, id).await.oom_score_adj, 7);
    update(c, id, with(|_| {})).await.unwrap();
    assert_eq!(oom_score_adj(pid), 0);

    // The VM enables every controller the kernel has (hack/vm/init.sh) and
    // berthd enables cpuset on the way down: a missing file is a failure.
    assert!(
        dir.join("cpuset.cpus").exists(),
        "no cpuset.cpus in {}: the cpuset controller is not enabled",
        dir.display()
    );
    update(
        c,
        id,
        with(|r| {
            r.cpuset_cpus = "0".into();
            r.cpuset_mems = "0".into();
        }),
    )
    .await
    .unwrap();
    assert_eq!(read(dir, "cpuset.cpus"), "0");
    assert_eq!(read(dir, "cpuset.mems"), "0");
    assert_eq!(read(dir, "cpuset.cpus.effective"), "0");
    let r = status_resources(c, id).await;
    assert_eq!((r.cpuset_cpus.as_str(), r.cpuset_mems.as_str()), ("0", "0"));
    let e = update(c, id, with(|r| r.cpuset_cpus = "999".into()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_eq!(read(dir, "cpuset.cpus"), "0", "unchanged after a bad cpuset");

    // CRI's swap limit is memory + swap; cgroup v2 holds swap alone.
    let mem_and_swap = |swap: i64| {
        with(|r| {
            r.memory_limit_in_bytes = 256 * MIB;
            r.memory_swap_limit_in_bytes = swap;
        })
    };
    if dir.join("memory.swap.max").exists() {
        update(c, id, mem_and_swap(320 * MIB)).await.unwrap();
        assert_eq!(read(dir, "memory.swap.max"), (64 * MIB).to_string());
        assert_eq!(
            status_resources(c, id).await.memory_swap_limit_in_bytes,
            320 * MIB
        );
        update(c, id, mem_and_swap(-1)).await.unwrap();
        assert_eq!(read(dir, "memory.swap.max"), "max");
        assert_eq!(status_resources(c, id).await.memory_swap_limit_in_bytes, -1);
        println!("BERTH-RESIZE swap: memory.swap.max set live and read back");
    } else {
        // No swap accounting in this kernel: "unlimited" holds already and
        // is accepted; a limit is refused up front, naming the file.
        update(c, id, mem_and_swap(-1))
            .await
            .expect("unlimited swap needs no file");
        let e = update(c, id, mem_and_swap(320 * MIB)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("memory.swap.max"), "{}", e.message());
        assert_eq!(read(dir, "memory.max"), (256 * MIB).to_string(), "unchanged");
        assert_eq!(status_resources(c, id).await.memory_swap_limit_in_bytes, 0);
        println!("BERTH-RESIZE swap: no memory.swap.max in this kernel; limits refused clearly");
    }
    update(c, id, with(|_| {})).await.unwrap();
}
