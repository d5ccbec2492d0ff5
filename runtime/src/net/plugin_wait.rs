//! CNI plugins a killed berthd left running. berthd runs each plugin as a
//! child; SIGKILL of berthd does not stop it, so an ADD (or DEL) may still
//! be under way when the next berthd starts. Start-up recovery waits for
//! them before it runs its own DELs: a DEL that overtook an orphaned ADD
//! would leave what the ADD made afterwards (seen in the VM random-kill
//! loop: a portmap DNAT chain outlived the pod).

use std::time::{Duration, Instant};

/// Whether a process environment (`/proc/<pid>/environ`) is a CNI
/// plugin's: the CNI spec passes `CNI_COMMAND` to every plugin.
pub fn is_plugin_environ(environ: &[u8]) -> bool {
    environ.split(|b| *b == 0).any(|v| v.starts_with(b"CNI_COMMAND="))
}

/// Pids of running CNI plugin processes.
fn plugin_pids() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        // A zombie's environ reads empty: it has finished.
        .filter(|pid| std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| is_plugin_environ(&e)))
        .collect()
}

/// Waits until no CNI plugin process runs, at most `timeout`; returns the
/// pids still running then (logged: recovery goes on, bounded).
pub fn wait_plugins_gone(timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    let mut logged = false;
    loop {
        let mut pids = plugin_pids();
        if pids.is_empty() {
            // A process in the middle of an exec (a plugin's shell running
            // its last command, a plugin starting its IPAM plugin) can read
            // an empty environ for an instant: "none left" must hold on a
            // second look too.
            std::thread::sleep(Duration::from_millis(50));
            pids = plugin_pids();
        }
        if pids.is_empty() || Instant::now() >= deadline {
            if !pids.is_empty() {
                tracing::warn!(
                    ?pids,
                    "CNI plugins still running after {timeout:?}; recovery goes on"
                );
            }
            return pids;
        }
        if !logged {
            tracing::info!(?pids, "waiting for CNI plugins a previous berthd started");
            logged = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_environments_are_told_by_cni_command() {
        assert!(is_plugin_environ(
            b"PATH=/bin\0CNI_COMMAND=ADD\0CNI_CONTAINERID=ab\0"
        ));
        assert!(!is_plugin_environ(b"PATH=/bin\0XCNI_COMMAND=ADD\0"));
        assert!(!is_plugin_environ(b""));
    }

    /// A plugin still running (as one a killed berthd left) is waited for.
    #[test]
    fn recovery_waits_for_a_running_plugin() {
        let mut plugin = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3"])
            .env("CNI_COMMAND", "ADD")
            .spawn()
            .unwrap();
        assert!(plugin.try_wait().unwrap().is_none(), "running at first");
        let left = wait_plugins_gone(Duration::from_secs(30));
        assert!(!left.contains(&plugin.id()), "{left:?}");
        assert!(
            plugin.try_wait().unwrap().is_some(),
            "finished before the wait returned"
        );
    }
}
