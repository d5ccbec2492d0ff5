//! `berth-shim pod-init`: PID 1 of a pod's shared PID namespace
//! (`shareProcessNamespace`). It only reaps: orphans anywhere in the pod are
//! re-parented to it. Being PID 1, it ignores every signal it has no handler
//! for, so nothing inside the pod can kill it. It lives exactly as long as
//! its shim: fd 3 is the read end of a pipe only the shim holds open, and
//! EOF there (the shim exited, however it died) ends it, which ends the
//! namespace.

/// The pipe from the shim.
pub const LIFELINE_FD: i32 = 3;

/// Never returns.
pub fn main() -> ! {
    let _ = std::env::set_current_dir("/");
    loop {
        let mut pfd = libc::pollfd {
            fd: LIFELINE_FD,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, 500) };
        if n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLIN | libc::POLLERR | libc::POLLNVAL) != 0 {
            std::process::exit(0);
        }
        // Reap whatever orphans arrived.
        loop {
            // SAFETY: waitpid(2) with a null status pointer.
            let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
        }
    }
}
