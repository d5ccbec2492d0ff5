//! A placeholder process that keeps a new scope unit alive until the
//! container's own process has joined it.
//!
//! systemd refuses a scope without processes ("Scope has no PIDs"), and
//! stops (and removes the cgroup of) a scope whose processes are all gone.
//! A container's init stage joins its cgroup by writing `cgroup.procs`
//! (shim/src/init), so the cgroup must exist before the shim creates the
//! container: the scope starts with this holder as its only pid, the
//! device filter and resources are set, the container's process joins,
//! and then the holder is killed. The shim needs no change.

use crate::error::{Error, Result};

/// A forked child of berthd that does nothing until SIGKILL.
#[derive(Debug)]
pub struct Holder {
    pid: libc::pid_t,
}

impl Holder {
    /// Forks the holder.
    pub fn spawn() -> Result<Self> {
        // SAFETY: fork(2) of a multi-threaded process: the child calls only
        // async-signal-safe functions (sigfillset, sigprocmask, close_range,
        // prctl, pause) and never returns into Rust code. Every signal but SIGKILL
        // and SIGSTOP is blocked, so none of berthd's inherited handlers
        // (which write to pipes berthd shares) can ever run in it.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Error::io(
                "fork a scope placeholder process",
                std::io::Error::last_os_error(),
            ));
        }
        if pid == 0 {
            // SAFETY: see above; the child only blocks signals and sleeps.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
                // None of berthd's descriptors: the pipes of CNI plugins and
                // shims started meanwhile must see EOF when those exit.
                berth_sys::fork::close_fds_except(&[]);
                libc::prctl(
                    libc::PR_SET_NAME,
                    c"berth-hold".as_ptr() as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                loop {
                    libc::pause();
                }
            }
        }
        Ok(Holder { pid })
    }

    /// The holder's pid (for the scope's `PIDs` property).
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }
}

impl Drop for Holder {
    /// Kills and reaps the holder.
    fn drop(&mut self) {
        // Our own child, by its pid, once.
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until the holder `pid` has named itself, which it does after
    /// blocking signals and dropping berthd's descriptors.
    fn wait_named(pid: u32) {
        let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        let mut tries = 0;
        while comm().trim() != "berth-hold" && tries < 1000 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            tries += 1;
        }
        assert_eq!(comm().trim(), "berth-hold");
    }

    #[test]
    fn the_holder_lives_until_dropped() {
        let h = Holder::spawn().unwrap();
        let pid = h.pid();
        wait_named(pid);
        // SIGTERM is blocked in the holder: it stays.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert!(!state.contains(") Z "), "{state}");
        drop(h);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    /// The holder keeps no descriptor of berthd: a pipe berthd had open at
    /// the fork (a CNI plugin's stdout, another shim's readiness pipe) must
    /// not stay open for as long as the holder lives.
    #[test]
    fn the_holder_keeps_no_descriptor_of_berthd() {
        let (_r, _w) = nix::unistd::pipe().unwrap();
        let h = Holder::spawn().unwrap();
        let pid = h.pid();
        wait_named(pid);
        let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(fds.is_empty(), "the holder has fds {fds:?}");
    }
}
