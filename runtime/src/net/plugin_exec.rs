//! Running one CNI plugin binary: its config on stdin, its result on
//! stdout, its diagnostics on stderr, all within one deadline.
//!
//! The plugin is done when it has exited, not when its pipes read EOF:
//! any other process holding their write ends (a helper the plugin left
//! running, or a child of berthd forked while the pipes were open and not
//! yet exec'd) would otherwise keep the call waiting forever, silently.
//! One thread polls the three pipes and the plugin's pidfd; after the exit
//! what the pipes hold is read without blocking, and nothing later counts.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use serde_json::Value;

/// How long one plugin invocation may take before it is killed.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The most of stdout and of stderr kept from one plugin; a plugin's
/// result is a few KiB, and a runaway one must not grow berthd.
const MAX_OUTPUT: usize = 4 << 20;

/// The poll tick when the kernel has no pidfd for the plugin.
const TICK: Duration = Duration::from_millis(5);

/// Runs one plugin binary: environment, config on stdin, result on stdout.
pub trait PluginExec: Send + Sync {
    /// Runs `plugin` and returns its stdout, or the CNI error it reported.
    fn exec(&self, plugin: &Path, env: &[(String, String)], stdin: &[u8]) -> Result<Vec<u8>>;
}

/// The real thing: a child process with a deadline.
pub struct RealExec;

impl PluginExec for RealExec {
    fn exec(&self, plugin: &Path, env: &[(String, String)], stdin: &[u8]) -> Result<Vec<u8>> {
        run(plugin, env, stdin, PLUGIN_TIMEOUT)
    }
}

/// Runs `plugin` with `env` and `stdin`; its stdout on success, its CNI
/// error otherwise. Past `timeout` the plugin is killed and reaped.
fn run(plugin: &Path, env: &[(String, String)], stdin: &[u8], timeout: Duration) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut child = spawn(plugin, env)?;
    let name = plugin.display();
    let io_err = |what: &str, e: std::io::Error| Error::io(format!("{what} CNI plugin {name}"), e);
    let mut pipes = match Pipes::take(&mut child, stdin) {
        Ok(p) => p,
        Err(e) => {
            reap(&mut child);
            return Err(io_err("set up the pipes of", e));
        }
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => {
                reap(&mut child);
                return Err(io_err("wait for", e));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            reap(&mut child);
            return Err(Error::Network(format!(
                "CNI plugin {name} timed out after {timeout:?}"
            )));
        }
        if let Err(e) = pipes.wait_and_move(left) {
            reap(&mut child);
            return Err(io_err("talk to", e));
        }
    };
    // Exited: what it wrote is in the pipes now; take that, wait for no more.
    pipes.drain();
    if status.success() {
        return Ok(pipes.out);
    }
    Err(Error::Network(plugin_error(plugin, &pipes.out, &pipes.err)))
}

/// The message of a failed plugin: its CNI error object if it printed one.
fn plugin_error(plugin: &Path, stdout: &[u8], stderr: &[u8]) -> String {
    let name = plugin.file_name().unwrap_or_default().to_string_lossy();
    if let Ok(v) = serde_json::from_slice::<Value>(stdout) {
        if let Some(msg) = v.get("msg").and_then(Value::as_str) {
            let details = v.get("details").and_then(Value::as_str).unwrap_or("");
            let code = v.get("code").and_then(Value::as_u64).unwrap_or(0);
            return format!("CNI plugin {name} failed (code {code}): {msg} {details}")
                .trim()
                .to_string();
        }
    }
    let text = String::from_utf8_lossy(if stderr.is_empty() { stdout } else { stderr });
    format!("CNI plugin {name} failed: {}", text.trim())
}

/// Starts the plugin with piped stdio and a clean environment.
fn spawn(plugin: &Path, env: &[(String, String)]) -> Result<Child> {
    let spawn = || {
        Command::new(plugin)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    // ETXTBSY: a plugin binary just installed may still be open for
    // writing in a process that forked meanwhile; it clears in moments.
    let mut attempt = 0;
    loop {
        match spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 50 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r.map_err(|e| Error::io(format!("run CNI plugin {}", plugin.display()), e)),
        }
    }
}

/// Kills and reaps a plugin that is not to finish (our own child).
fn reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Our ends of the plugin's stdio (non-blocking) and what was read so far.
struct Pipes<'a> {
    stdin: Option<OwnedFd>,
    to_write: &'a [u8],
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    /// Readable when the plugin has exited (none: poll with a tick).
    pidfd: Option<OwnedFd>,
    out: Vec<u8>,
    err: Vec<u8>,
}

impl<'a> Pipes<'a> {
    fn take(child: &mut Child, stdin: &'a [u8]) -> std::io::Result<Self> {
        let own = |fd: Option<OwnedFd>| -> std::io::Result<Option<OwnedFd>> {
            if let Some(fd) = &fd {
                set_nonblocking(fd)?;
            }
            Ok(fd)
        };
        Ok(Pipes {
            stdin: own(child.stdin.take().map(OwnedFd::from))?,
            to_write: stdin,
            stdout: own(child.stdout.take().map(OwnedFd::from))?,
            stderr: own(child.stderr.take().map(OwnedFd::from))?,
            // The child is not reaped before we wait for it: the pid is its.
            pidfd: berth_sys::pidfd::open(child.id() as i32).ok(),
            out: Vec::new(),
            err: Vec::new(),
        })
    }

    /// Waits (at most `left`) until a pipe is ready or the plugin exited,
    /// then writes and reads what can be without blocking.
    fn wait_and_move(&mut self, left: Duration) -> std::io::Result<()> {
        let mut fds = Vec::with_capacity(4);
        let entry = |fd: &OwnedFd, events| libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        if let Some(fd) = &self.stdin {
            fds.push(entry(fd, libc::POLLOUT));
        }
        for fd in [&self.stdout, &self.stderr, &self.pidfd].into_iter().flatten() {
            fds.push(entry(fd, libc::POLLIN));
        }
        let wait = if self.pidfd.is_some() {
            left
        } else {
            left.min(TICK)
        };
        let ms = i32::try_from(wait.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: poll over pollfds that live across the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            };
        }
        self.write_some();
        read_some(&mut self.stdout, &mut self.out);
        read_some(&mut self.stderr, &mut self.err);
        Ok(())
    }

    /// Feeds the config; closes stdin when it is all written. A plugin
    /// that exits (or closes stdin) without reading it (EPIPE) is judged by
    /// its exit status and output, not by our write.
    fn write_some(&mut self) {
        let Some(fd) = &self.stdin else { return };
        while !self.to_write.is_empty() {
            match nix::unistd::write(fd, self.to_write) {
                Ok(n) => self.to_write = &self.to_write[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => break,
            }
        }
        self.stdin = None;
    }

    /// After the exit: what the pipes hold, without waiting for more.
    fn drain(&mut self) {
        self.stdin = None;
        read_some(&mut self.stdout, &mut self.out);
        read_some(&mut self.stderr, &mut self.err);
    }
}

/// Reads what `fd` has without blocking into `buf` (keeping at most
/// MAX_OUTPUT), at most 1 MiB per call so a writer that never stops cannot
/// keep us here; closes it at EOF or on an error.
fn read_some(fd: &mut Option<OwnedFd>, buf: &mut Vec<u8>) {
    let Some(f) = fd else { return };
    let mut chunk = [0u8; 16 << 10];
    let mut reads = 0;
    let ended = loop {
        if reads == 64 {
            break false;
        }
        match nix::unistd::read(f.as_fd(), &mut chunk) {
            Ok(0) => break true,
            Ok(n) => {
                reads += 1;
                let room = MAX_OUTPUT.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => break false,
            Err(_) => break true,
        }
    };
    if ended {
        *fd = None;
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn real_exec_reports_the_plugins_cni_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("failing");
        std::fs::write(
            &p,
            "#!/bin/sh\ncat >/dev/null\necho '{\"code\":11,\"msg\":\"no IPs left\",\"details\":\"pool 10.0.0.0/30\"}'\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let e = RealExec.exec(&p, &[], b"{}").unwrap_err().to_string();
        assert!(
            e.contains("code 11") && e.contains("no IPs left") && e.contains("pool"),
            "{e}"
        );
        let ok = d.path().join("echoing");
        std::fs::write(&ok, "#!/bin/sh\necho \"{\\\"cmd\\\":\\\"$CNI_COMMAND\\\"}\"\n").unwrap();
        std::fs::set_permissions(&ok, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let out = RealExec
            .exec(&ok, &[("CNI_COMMAND".into(), "ADD".into())], b"{}")
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap().trim(), r#"{"cmd":"ADD"}"#);
    }

    /// A plugin's result is in once the plugin has exited, even while some
    /// other process still holds its stdout and stderr (a helper it left
    /// running, or a fork of berthd that inherited the pipe before exec):
    /// no EOF is waited for. Seen as 50 concurrent RunPodSandbox calls that
    /// never returned (issue 20). The helper here lives until the test lets
    /// it go, after the call returned (or after a generous hang bound, to
    /// fail instead of hanging).
    #[test]
    fn a_plugin_that_exited_is_done_while_another_process_holds_its_output() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("release");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let p = script(
            d.path(),
            "leaves-a-helper",
            &format!(
                "cat >/dev/null\n(read x <{}) &\necho '{{\"cniVersion\":\"1.0.0\"}}'\nexit 0\n",
                fifo.display()
            ),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let call = berth_sys::thread::spawn(move || {
            let _ = tx.send(RealExec.exec(&p, &[], b"{}"));
        });
        let got = rx.recv_timeout(Duration::from_secs(60));
        // Let the helper go: opening the fifo for writing and closing it is
        // EOF for its read.
        drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
        call.join().unwrap();
        let out = got.expect("the call did not return while the helper held the plugin's stdout");
        assert_eq!(
            String::from_utf8(out.unwrap()).unwrap().trim(),
            r#"{"cniVersion":"1.0.0"}"#
        );
    }

    /// A plugin that does not finish is killed and reaped at the deadline,
    /// and the error names it.
    #[test]
    fn a_plugin_past_its_deadline_is_killed_and_named() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("pid");
        let p = script(
            d.path(),
            "hangs",
            &format!("echo $$ >{}\nexec sleep 1000\n", pidfile.display()),
        );
        let e = run(&p, &[], b"{}", Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hangs") && e.contains("timed out"), "{e}");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        assert!(
            !Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "plugin {pid} still there"
        );
    }

    /// Config and output larger than a pipe holds go through whole: stdin
    /// is fed and stdout read while the plugin runs.
    #[test]
    fn large_config_and_output_pass_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "big", "wc -c\nhead -c 300000 /dev/zero | tr '\\0' a\n");
        let input = vec![b' '; 200_000];
        let out = RealExec.exec(&p, &[], &input).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (count, rest) = text.split_once('\n').unwrap();
        assert_eq!(count.trim(), "200000");
        assert_eq!(rest.len(), 300_000);
        assert!(rest.bytes().all(|b| b == b'a'));
    }
}
