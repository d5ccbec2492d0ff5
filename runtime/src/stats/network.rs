//! Network counters of a pod, read from inside its network namespace.
//!
//! `/proc/<pid>/net/dev` shows the interfaces of the network namespace
//! process `pid` is in, so reading it for any process in the pod's netns
//! needs no setns(2) thread. Berth pins the netns with a bind mount and has
//! no pause process, but the pod's shim was started inside that netns (and
//! so are the containers that share it). A pid is trusted only if its
//! `ns/net` is the very namespace the pin holds (same device and inode), so
//! a recycled pid can never report another pod's traffic.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::parse::{self, NetDev};

/// The interfaces of the namespace pinned at `pin`, read through the first
/// of `pids` (below `proc_root`, `/proc` in production) that is in it.
/// Loopback is left out, as cAdvisor does. None when no pid is in the
/// namespace (the pod is stopped) or the pin is gone.
pub fn pod_interfaces(proc_root: &Path, pin: &Path, pids: &[u32]) -> Option<Vec<NetDev>> {
    let ns = std::fs::metadata(pin).ok()?;
    let want = (ns.dev(), ns.ino());
    pids.iter().find_map(|pid| {
        let dir = proc_root.join(pid.to_string());
        let m = std::fs::metadata(dir.join("ns/net")).ok()?;
        if (m.dev(), m.ino()) != want {
            return None;
        }
        let text = std::fs::read_to_string(dir.join("net/dev")).ok()?;
        Some(
            parse::net_dev(&text)
                .into_iter()
                .filter(|d| d.name != "lo")
                .collect(),
        )
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A fake `/proc/<pid>` whose `ns/net` links to `ns_file`, with one
    /// `eth0` line.
    pub fn fake_proc_pid(proc_root: &Path, pid: u32, ns_file: &Path, rx: u64, tx: u64) {
        let dir = proc_root.join(pid.to_string());
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::os::unix::fs::symlink(ns_file, dir.join("ns/net")).unwrap();
        std::fs::write(
            dir.join("net/dev"),
            format!(
                "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes ...\n\
                 lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n\
                 eth0: {rx} 10 1 0 0 0 0 0 {tx} 20 2 0 0 0 0 0\n"
            ),
        )
        .unwrap();
    }

    #[test]
    fn only_a_pid_in_the_pinned_namespace_is_read() {
        let d = tempfile::tempdir().unwrap();
        let pin = d.path().join("netns-pin");
        let other = d.path().join("other-ns");
        std::fs::write(&pin, "").unwrap();
        std::fs::write(&other, "").unwrap();
        let proc_root = d.path().join("proc");
        // pid 10 was recycled into another namespace; pid 20 is the pod's.
        fake_proc_pid(&proc_root, 10, &other, 999, 999);
        fake_proc_pid(&proc_root, 20, &pin, 1500, 700);
        let devs = pod_interfaces(&proc_root, &pin, &[10, 30, 20]).unwrap();
        assert_eq!(devs.len(), 1, "lo is left out: {devs:?}");
        assert_eq!(
            (devs[0].name.as_str(), devs[0].rx_bytes, devs[0].tx_bytes),
            ("eth0", 1500, 700)
        );
        assert_eq!((devs[0].rx_errors, devs[0].tx_errors), (1, 2));
        assert_eq!(pod_interfaces(&proc_root, &pin, &[10]), None);
        assert_eq!(pod_interfaces(&proc_root, &d.path().join("gone"), &[20]), None);
    }
}
