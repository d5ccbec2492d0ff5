//! The init stage's side of hooks: before pivot_root it asks the shim to
//! run the createRuntime hooks and runs the createContainer hooks itself;
//! after Start it runs the startContainer hooks, before the exec.
//!
//! Both run in the container's namespaces as the spec wants, and before
//! the user switch, seccomp and the capability drop (hooks are node
//! config, run with the runtime's privilege).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context};
use oci_spec::runtime::Hook;

use super::InitConfig;
use crate::hooks::{failure, proc, Moment, State, ASK, GO};
use crate::sync::fds;

/// The container's pid as the node sees it, read before pivot_root (the
/// container's own /proc only knows its namespace's numbers).
static NODE_PID: OnceLock<i32> = OnceLock::new();

/// createRuntime (through the shim) then createContainer hooks. Called
/// with the container's mounts in place, right before pivot_root.
pub fn before_pivot(cfg: &InitConfig) -> anyhow::Result<()> {
    let Some(state) = &cfg.hook_state else {
        return Ok(());
    };
    let pid = node_pid();
    let _ = NODE_PID.set(pid);
    if !Moment::CreateRuntime.hooks(&cfg.spec).is_empty() {
        ask_shim()?;
    }
    let hooks = Moment::CreateContainer.hooks(&cfg.spec);
    run_blocking(Moment::CreateContainer, &hooks, state, pid).map_err(anyhow::Error::msg)
}

/// Whether [`before_exec`] runs any hook.
pub fn runs_at_start(cfg: &InitConfig) -> bool {
    cfg.hook_state.is_some() && !Moment::StartContainer.hooks(&cfg.spec).is_empty()
}

/// startContainer hooks, after Start and before the exec.
pub fn before_exec(cfg: &InitConfig) -> Result<(), String> {
    let Some(state) = &cfg.hook_state else {
        return Ok(());
    };
    let hooks = Moment::StartContainer.hooks(&cfg.spec);
    let pid = NODE_PID.get().copied().unwrap_or(0);
    run_blocking(Moment::StartContainer, &hooks, state, pid)
}

/// `NSpid:` of /proc/self/status lists our pid from the /proc mount's PID
/// namespace (the node's, before pivot_root) down to our own.
fn node_pid() -> i32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().next().and_then(|p| p.parse().ok()))
        })
        .unwrap_or_else(|| std::process::id() as i32)
}

/// Asks the shim to run the createRuntime hooks and waits for its go. A
/// failed hook: the shim reports it and kills us, so no go ever comes.
fn ask_shim() -> anyhow::Result<()> {
    // SAFETY: init holds fds::SYNC and fds::START open (init::main) for
    // as long as this borrow, which ends with the call.
    let (sync, start) = unsafe {
        (
            BorrowedFd::borrow_raw(fds::SYNC),
            BorrowedFd::borrow_raw(fds::START),
        )
    };
    nix::unistd::write(sync, ASK).context("ask for the createRuntime hooks")?;
    let mut go = [0u8; 1];
    match nix::unistd::read(start, &mut go) {
        Ok(1) if go == GO => Ok(()),
        Ok(_) => bail!("createRuntime hooks: no go from the shim"),
        Err(e) => bail!("createRuntime hooks: wait for the shim: {e}"),
    }
}

/// Runs `hooks` in order, waiting for each here (init reaps its own
/// children); the first failure is the error.
pub(crate) fn run_blocking(moment: Moment, hooks: &[Hook], state: &State, pid: i32) -> Result<(), String> {
    let state = state.at(moment, pid);
    for (i, hook) in hooks.iter().enumerate() {
        let fail = |what: String| failure(moment, i, hook, &what);
        let mut sp = proc::spawn(hook, &state, &[]).map_err(|e| fail(e.to_string()))?;
        let deadline = proc::timeout(hook).map(|t| (t, Instant::now() + t));
        let status = loop {
            let Some((t, at)) = deadline else {
                break sp.child.wait().map_err(|e| fail(format!("wait: {e}")))?;
            };
            if let Some(s) = sp.child.try_wait().map_err(|e| fail(format!("wait: {e}")))? {
                break s;
            }
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = sp.child.kill();
                let _ = sp.child.wait();
                return Err(fail(proc::timed_out(t, &sp.output)));
            }
            wait_readable(sp.pidfd.as_ref().map(|f| f.as_raw_fd()), left);
        };
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        if code != 0 {
            return Err(fail(proc::exit_text(code, &sp.output)));
        }
    }
    Ok(())
}

/// Sleeps until the pidfd says the process exited, or `left` is over.
fn wait_readable(pidfd: Option<i32>, left: std::time::Duration) {
    let ms = left.as_millis().min(i32::MAX as u128) as i32;
    match pidfd {
        Some(fd) => {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one pollfd we own for the call.
            unsafe { libc::poll(&mut p, 1, ms) };
        }
        None => std::thread::sleep(left.min(std::time::Duration::from_millis(10))),
    }
}
