//! Starting one hook process: its argv and env exactly as the spec gives
//! them, the state on stdin, stdout and stderr kept for errors, nothing
//! else inherited. Shared by the shim and the init stage; each waits its
//! own way (the shim's reaper reaps every child of the shim).

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use oci_spec::runtime::Hook;

use super::{State, OUTPUT_QUOTED};

/// A started hook.
pub struct Spawned {
    /// Its pid.
    pub pid: i32,
    /// A pidfd of it, to kill it at its timeout whoever has its pid by
    /// then (None when it was already reaped).
    pub pidfd: Option<OwnedFd>,
    /// Its stdout and stderr, a memfd read back after it exits.
    pub output: File,
    /// The child, for the init stage to wait on (the shim's reaper reaps
    /// the shim's children instead).
    pub child: std::process::Child,
}

/// The hook's timeout, when it has one.
pub fn timeout(hook: &Hook) -> Option<Duration> {
    hook.timeout().and_then(super::seconds)
}

/// Starts `hook` with `state` on stdin. `join` are namespaces the hook
/// enters before its exec (the runtime's, for hooks the shim runs).
pub fn spawn(hook: &Hook, state: &State, join: &[OwnedFd]) -> std::io::Result<Spawned> {
    let path = hook.path();
    check_program(path)?;
    let stdin = memfd("berth-hook-state")?;
    {
        let mut f = &stdin;
        f.write_all(&serde_json::to_vec(state).map_err(std::io::Error::other)?)?;
        f.rewind()?;
    }
    let output = memfd("berth-hook-output")?;
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(path);
    if let Some((first, rest)) = args.split_first() {
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear();
    for e in hook.env().clone().unwrap_or_default() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(output.try_clone()?))
        .stderr(Stdio::from(output.try_clone()?))
        .current_dir("/");
    let join: Vec<i32> = join.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: between fork and exec the closure makes only raw syscalls
    // (setns, close_range, fcntl, _exit) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &join {
                if libc::setns(*fd, 0) != 0 {
                    // Not an Err: std would then wait for this child itself,
                    // racing the shim's reaper. The exit code says it.
                    libc::_exit(126);
                }
            }
            cloexec_from(3);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    Ok(Spawned {
        pid,
        pidfd: berth_sys::pidfd::open(pid).ok(),
        output,
        child,
    })
}

/// An absolute path to an executable file (checked before the fork, so
/// the usual mistakes are a clear error rather than an exec failure).
fn check_program(path: &Path) -> std::io::Result<()> {
    if !path.is_absolute() {
        return Err(std::io::Error::other(format!(
            "hook path {} is not absolute",
            path.display()
        )));
    }
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: access(2) on a NUL-terminated path we own.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn memfd(name: &str) -> std::io::Result<File> {
    let name = CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: memfd_create(2) with a NUL-terminated name; the fd is ours.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Marks every descriptor from `low` up close-on-exec. Async-signal-safe.
fn cloexec_from(low: u32) {
    // SAFETY: close_range(2) with the CLOEXEC flag only changes fd flags.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, low, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if rc != 0 {
        // Before Linux 5.11: one fcntl per possible number.
        // SAFETY: getrlimit and fcntl on integers only.
        unsafe {
            let mut rl: libc::rlimit = std::mem::zeroed();
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
                rl.rlim_cur.min(65536) as i32
            } else {
                1024
            };
            for fd in low as i32..max {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}

/// What a failed hook's exit says, with the start of its output.
pub fn exit_text(code: i32, output: &File) -> String {
    let what = if code > 128 {
        format!("killed by signal {}", code - 128)
    } else {
        format!("exit status {code}")
    };
    with_output(what, output)
}

/// A hook killed at its timeout.
pub fn timed_out(t: Duration, output: &File) -> String {
    with_output(format!("timed out after {}s and was killed", t.as_secs()), output)
}

fn with_output(what: String, output: &File) -> String {
    let mut buf = Vec::new();
    let mut f = output;
    let _ = f.rewind();
    let _ = f.take(OUTPUT_QUOTED as u64).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let text = text.trim();
    if text.is_empty() {
        what
    } else {
        format!("{what}: {text}")
    }
}
