//! A pod's shim process as seen from /proc: used by recovery (reconnect or
//! not), the shim watcher (has it exited?) and StopPodSandbox (wait, then
//! kill). Kept apart so those three do not import each other.

use std::path::Path;

/// Whether `pid` is the shim serving `socket` (its command line names the
/// socket, so a recycled pid is not mistaken for it).
pub(crate) fn shim_alive(pid: u32, socket: &Path) -> bool {
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let sock = socket.as_os_str().as_encoded_bytes();
    cmd.split(|b| *b == 0).any(|arg| arg == sock)
}
