//! With swap, anonymous memory (and shmem) counts as reclaimable: a
//! decrease that fits once it is swapped out is applied; the same decrease
//! with the container's swap limited to 0 is refused at once (issue 24).

use std::path::PathBuf;
use std::process::Command;

use berth_proto::cri;
use berth_tests::*;

use super::{busybox, cg_dir, events, mem, read, start_and_wait, update, MIB};

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A swap device (a loop device over a file in the VM's tmpfs) for the
/// test's lifetime; switched off and removed on drop, failure included, so
/// the tests after it run without swap.
struct Swap {
    file: PathBuf,
    dev: String,
}

impl Swap {
    fn on(mib: u64) -> Swap {
        let file = PathBuf::from(format!("/tmp/berth-swap-{}", std::process::id()));
        sh(&format!(
            "dd if=/dev/zero of={} bs=1M count={mib} 2>/dev/null",
            file.display()
        ));
        // busybox's losetup has no --show: ask for a free device, then bind it.
        let dev = sh(&format!(
            "d=$(losetup -f) && losetup $d {} && echo $d",
            file.display()
        ));
        let swap = Swap { file, dev };
        sh(&format!("mkswap {} >/dev/null && swapon {}", swap.dev, swap.dev));
        swap
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        for cmd in [
            format!("swapoff {}", self.dev),
            format!("losetup -d {}", self.dev),
        ] {
            let _ = Command::new("sh").arg("-c").arg(&cmd).status();
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

#[tokio::test]
async fn resize_with_swap_anonymous_memory_is_reclaimable() {
    // Generous: swapping out through a loop device in an emulated VM.
    let (b, mut c) = Berthd::start_with("memory_decrease_wait_ms = 60000\n")
        .await
        .expect("berthd");
    c.pull(&busybox()).await.unwrap();
    let pod = pod_config("swap", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    // ~48 MiB of shmem: swap-backed, so reclaimable only with swap.
    let id = start_and_wait(
        &mut c,
        &b,
        &sb,
        &pod,
        "swapper",
        "head -c 50331648 /dev/zero > /dev/shm/hold; echo ready; sleep 3600",
    )
    .await;
    let dir = cg_dir(&b, &sb, &id);
    assert!(
        dir.join("memory.swap.max").exists(),
        "this test needs swap accounting (memory.swap.max)"
    );
    let _swap = Swap::on(128);
    let with_swap = |limit: i64, swap_and_memory: i64| cri::LinuxContainerResources {
        memory_swap_limit_in_bytes: swap_and_memory,
        ..mem(limit)
    };
    // Swap forbidden for this container (memory + swap = memory): refused
    // at once, as without swap.
    update(&mut c, &id, with_swap(256 * MIB, 256 * MIB))
        .await
        .unwrap();
    assert_eq!(read(&dir, "memory.swap.max"), "0");
    let (high, ooms) = (events(&dir, "high"), events(&dir, "oom_kill"));
    let e = update(&mut c, &id, with_swap(24 * MIB, 24 * MIB))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("cannot be reclaimed"), "{}", e.message());
    assert_eq!(read(&dir, "memory.max"), (256 * MIB).to_string());
    assert_eq!(read(&dir, "memory.swap.max"), "0", "restored");
    assert_eq!(events(&dir, "high"), high);
    // Swap allowed: the shmem is swapped out and the decrease applied.
    update(&mut c, &id, with_swap(256 * MIB, -1)).await.unwrap();
    assert_eq!(read(&dir, "memory.swap.max"), "max");
    update(&mut c, &id, with_swap(24 * MIB, -1))
        .await
        .expect("fits once swapped out");
    assert_eq!(read(&dir, "memory.max"), (24 * MIB).to_string());
    let swapped: u64 = read(&dir, "memory.swap.current").parse().unwrap();
    assert!(swapped > 16 << 20, "the shmem went to swap: {swapped}");
    assert_eq!(events(&dir, "oom_kill"), ooms, "no OOM kill");
    assert_eq!(
        c.status(&id).await.unwrap().status.unwrap().state,
        cri::ContainerState::ContainerRunning as i32
    );
    // The pod (and its swapped pages) goes before the swap does.
    c.stop_and_remove_pod(&sb).await.unwrap();
}
