//! Processes exec'd into a running container: ExecSync (`Exec`) and
//! ExecStream, and the spawn both use.
//!
//! The exec stage (`init::exec`) joins the container's namespaces and
//! cgroup and takes the container's identity (user, groups, capabilities,
//! seccomp, AppArmor, env, cwd); only the command, and the terminal when
//! asked, differ from the container's own process.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::shim::stream_input::Input;
use berth_proto::shim::stream_output::Output;
use berth_proto::shim::{ExecRequest, ExecResponse, ExecStart, StreamInput, StreamOutput};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Status, Streaming};

use crate::error::{Error, Result};

use crate::capture;
use crate::fdio::FdStream;
use crate::pod::Pod;
use crate::spawn::ChildFds;
use crate::table::Container;

/// How long output may still arrive after the exec'd process exited:
/// children it left behind may hold its stdio open, and nobody waits for them.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// The exec'd process's fds 0-2.
struct ExecStdio {
    /// fd 0 (for a terminal: the console socket, see `init::console`).
    pub stdin: OwnedFd,
    /// fd 1.
    pub stdout: OwnedFd,
    /// fd 2.
    pub stderr: OwnedFd,
}

/// A started exec stage.
struct Spawned {
    /// Its pid in the shim's PID namespace.
    pub pid: i32,
    /// Resolves with what the stage wrote on its sync pipe up to EOF (the
    /// exec, or its death): an identity line, then `E<message>` on failure.
    pub setup: JoinHandle<std::io::Result<Vec<u8>>>,
}

/// A pipe pair, close-on-exec.
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::internal("pipe", e))
}

/// /dev/null, for a stream nobody wants.
fn devnull() -> Result<OwnedFd> {
    Ok(File::open("/dev/null")
        .map_err(|e| Error::io("open /dev/null", e))?
        .into())
}

/// Clones `berth-shim exec` into the running container `c` to run `args`.
fn spawn(
    c: &Container,
    cgroup_root: &Path,
    args: Vec<String>,
    tty: bool,
    stdio: ExecStdio,
) -> Result<Spawned> {
    let mut spec = c.spec.clone();
    // Same process as the container's (user, groups, caps, env, cwd,
    // no_new_privs, rlimits); only the command and the terminal differ.
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_terminal(Some(tty));
    spec.set_process(Some(process));
    let cfg = crate::init::exec::ExecConfig {
        target_pid: c.pid,
        spec,
        cgroup_root: cgroup_root.to_path_buf(),
    };
    let config_json = serde_json::to_vec(&cfg).map_err(|e| Error::internal("encode exec config", e))?;
    let gone = || {
        Error::WrongPhase(format!(
            "container {} is not running (its process has exited)",
            c.id
        ))
    };
    let pidfd = c.pidfd.as_ref().ok_or_else(|| Error::NoPidfd(c.id.clone()))?;
    // The PID namespace is opened by number (no pidfd ioctl for it before
    // Linux 6.11): it is the container's only if its process was still
    // there after the open, since a pid is reused only once reaped.
    let pid_ns = File::open(format!("/proc/{}/ns/pid", c.pid));
    berth_sys::pidfd::send_signal(pidfd.as_fd(), 0).map_err(|_| gone())?;
    let pid_ns = pid_ns.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => gone(),
        _ => Error::io("open container pid namespace", e),
    })?;
    let target = pidfd
        .try_clone()
        .map_err(|e| Error::io("duplicate the pidfd", e))?;
    let (cfg_r, cfg_w) = pipe()?;
    let (sync_r, sync_w) = pipe()?;
    let pid = crate::spawn::spawn_stage(
        crate::spawn::Stage::Exec,
        false,
        Some(&pid_ns),
        ChildFds {
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            config: cfg_r,
            sync: sync_w,
            start: devnull()?,
            target: Some(target),
        },
    )
    .map_err(|e| Error::internal("clone exec stage", e))?
    .pid;
    let setup = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut w = File::from(cfg_w);
        w.write_all(&config_json)?;
        drop(w);
        crate::sync::read(&mut File::from(sync_r), false)
    });
    Ok(Spawned { pid, setup })
}

/// What the stage reported before its exec (or its death): its failure
/// message, if any.
async fn stage_failure(setup: JoinHandle<std::io::Result<Vec<u8>>>) -> Result<Option<String>> {
    let report = setup
        .await
        .map_err(|e| Error::internal("exec setup task", e))?
        .unwrap_or_default();
    Ok(crate::sync::failure(&report))
}

/// ExecSync: runs `args` in the container to completion (or its timeout,
/// then SIGKILL), with stdout and stderr captured up to a cap.
pub async fn exec_sync(pod: &Pod, req: ExecRequest) -> Result<ExecResponse> {
    let c = pod.table.running(&req.id)?;
    if req.args.is_empty() {
        return Err(Error::NoCommand);
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let stdio = ExecStdio {
        stdin: devnull()?,
        stdout: out_w,
        stderr: err_w,
    };
    let out_r = FdStream::new(out_r).map_err(|e| Error::io("stdout pipe", e))?;
    let err_r = FdStream::new(err_r).map_err(|e| Error::io("stderr pipe", e))?;
    let spawned = spawn(&c, &pod.cgroup_root, req.args.clone(), false, stdio)?;
    let pid = spawned.pid;
    let started = std::time::Instant::now();
    let limit = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms as u64));
    let reaper = pod.reaper.clone();
    let wait = reaper.wait(pid);
    let exited = async {
        match limit {
            Some(l) => match tokio::time::timeout(l, wait).await {
                Ok(e) => (e, false),
                Err(_) => {
                    // Kill it and whatever it started in the container since.
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                    (reaper.wait(pid).await, true)
                }
            },
            None => (wait.await, false),
        }
    };
    // Output is capped and read only while the call lasts.
    let ((exit, timed_out), stdout, stderr) =
        capture::collect(exited, out_r, err_r, OUTPUT_GRACE, capture::OUTPUT_CAP_BYTES).await;
    if let Some(msg) = stage_failure(spawned.setup).await? {
        return Err(Error::ExecFailed {
            id: req.id,
            message: msg,
        });
    }
    tracing::info!(container = %req.id, pid, code = exit.code, timed_out, elapsed_ms = started.elapsed().as_millis() as u64, "exec finished");
    Ok(ExecResponse {
        exit_code: exit.code,
        stdout,
        stderr,
        timed_out,
    })
}

/// ExecStream: the first message names the container and the command;
/// the rest is stdin and resizes. The returned receiver is the RPC's output.
pub async fn exec_stream(
    pod: &Pod,
    mut input: Streaming<StreamInput>,
) -> Result<mpsc::Receiver<Result<StreamOutput, Status>>> {
    let start = crate::stream::opening(&mut input, "ExecStream", "exec", |i| match i {
        Input::Exec(start) => Some(start),
        _ => None,
    })
    .await?;
    let c = pod.table.running(&start.id)?;
    stream(c, pod, start, input).await
}

/// Starts a streamed exec; the returned receiver is the RPC's output.
/// Fails (FailedPrecondition) when the command cannot be exec'd.
async fn stream(
    c: Arc<Container>,
    pod: &Pod,
    start: ExecStart,
    input: Streaming<StreamInput>,
) -> Result<mpsc::Receiver<Result<StreamOutput, Status>>> {
    if start.args.is_empty() {
        return Err(Error::NoCommand);
    }
    let StreamStdio {
        stdio,
        console,
        outputs,
        stdin: stdin_w,
    } = stream_stdio(&start)?;
    let spawned = spawn(&c, &pod.cgroup_root, start.args.clone(), start.tty, stdio)?;
    let reaper = pod.reaper.clone();
    let pid = spawned.pid;
    // The stage sends the terminal before it execs; receive it meanwhile.
    let master =
        console.map(|sock| tokio::task::spawn_blocking(move || crate::init::console::receive(&sock)));
    if let Some(msg) = stage_failure(spawned.setup).await? {
        tokio::spawn(async move { reaper.wait(pid).await });
        return Err(Error::ExecFailed {
            id: c.id.clone(),
            message: msg,
        });
    }
    let master = match master {
        Some(t) => {
            let fd = t
                .await
                .map_err(|e| Error::internal("terminal task", e))?
                .map_err(|e| Error::internal("terminal", e))?;
            let m = Arc::new(FdStream::new(fd).map_err(|e| Error::io("terminal", e))?);
            if let Some(size) = start.size.filter(|s| s.width > 0 && s.height > 0) {
                let _ = crate::fdio::set_window_size(&*m, size.width as u16, size.height as u16);
            }
            Some(m)
        }
        None => None,
    };

    let (tx, rx) = mpsc::channel(64);
    let mut pumps = Vec::new();
    if let Some(m) = &master {
        if start.stdout {
            pumps.push(tokio::spawn(pump(m.clone(), Output::Stdout, tx.clone())));
        }
    }
    for (fd, kind) in outputs {
        let f = Arc::new(FdStream::new(fd).map_err(|e| Error::io("output pipe", e))?);
        pumps.push(tokio::spawn(pump(f, kind, tx.clone())));
    }
    let stdin: Option<Arc<FdStream>> = match (&master, stdin_w) {
        (Some(m), _) if start.stdin => Some(m.clone()),
        (None, Some(w)) => Some(Arc::new(
            FdStream::new(w).map_err(|e| Error::io("stdin pipe", e))?,
        )),
        _ => None,
    };
    let exited = Arc::new(AtomicBool::new(false));
    let feed_exited = exited.clone();
    let tty = start.tty;
    let feed = tokio::spawn(feed(input, stdin, master, tty, pid, feed_exited));
    let id = c.id.clone();
    tokio::spawn(async move {
        let exit = reaper.wait(pid).await;
        exited.store(true, Ordering::SeqCst);
        for mut p in pumps {
            if tokio::time::timeout(OUTPUT_GRACE, &mut p).await.is_err() {
                p.abort();
            }
        }
        tracing::info!(container = %id, pid, code = exit.code, "streamed exec finished");
        let _ = tx
            .send(Ok(StreamOutput {
                output: Some(Output::ExitCode(exit.code)),
            }))
            .await;
        feed.abort();
    });
    Ok(rx)
}

/// An output the caller wants, by the message kind that carries it.
type Wanted = (OwnedFd, fn(Vec<u8>) -> Output);

/// A streamed exec's stdio: the stage's fds 0-2, and the shim's ends.
struct StreamStdio {
    stdio: ExecStdio,
    /// A terminal's console socket (the stage sends the master there).
    console: Option<UnixStream>,
    /// Read ends of the output pipes the caller wants.
    outputs: Vec<Wanted>,
    /// Write end of the stdin pipe, when the caller sends stdin.
    stdin: Option<OwnedFd>,
}

/// Pipes for the streams the caller asked for, /dev/null for the rest; a
/// terminal instead of all three for `tty`.
fn stream_stdio(start: &ExecStart) -> Result<StreamStdio> {
    if start.tty {
        let (ours, theirs) = UnixStream::pair().map_err(|e| Error::io("console socket", e))?;
        return Ok(StreamStdio {
            stdio: ExecStdio {
                stdin: theirs.into(),
                stdout: devnull()?,
                stderr: devnull()?,
            },
            console: Some(ours),
            outputs: Vec::new(),
            stdin: None,
        });
    }
    let mut outputs = Vec::new();
    let mut wanted = |want: bool, kind: fn(Vec<u8>) -> Output| -> Result<OwnedFd> {
        if !want {
            return devnull();
        }
        let (r, w) = pipe()?;
        outputs.push((r, kind));
        Ok(w)
    };
    let stdout = wanted(start.stdout, Output::Stdout)?;
    let stderr = wanted(start.stderr, Output::Stderr)?;
    let mut stdin_w = None;
    let stdin = if start.stdin {
        let (r, w) = pipe()?;
        stdin_w = Some(w);
        r
    } else {
        devnull()?
    };
    Ok(StreamStdio {
        stdio: ExecStdio {
            stdin,
            stdout,
            stderr,
        },
        console: None,
        outputs,
        stdin: stdin_w,
    })
}

/// Feeds the caller's stdin and resizes to the exec'd process until the
/// caller goes away; then closes stdin, and hangs a terminal up (as a
/// closed terminal window does) unless the process has `exited` already.
async fn feed(
    mut input: Streaming<StreamInput>,
    mut stdin: Option<Arc<FdStream>>,
    master: Option<Arc<FdStream>>,
    tty: bool,
    pid: i32,
    exited: Arc<AtomicBool>,
) {
    loop {
        match input.message().await {
            Ok(Some(StreamInput {
                input: Some(Input::Stdin(data)),
            })) => {
                if let Some(w) = &stdin {
                    if w.write_all(&data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Some(StreamInput {
                input: Some(Input::Resize(size)),
            })) => {
                if let Some(m) = &master {
                    let _ = crate::fdio::set_window_size(&**m, size.width as u16, size.height as u16);
                }
            }
            // A terminal has no end of input short of a hangup.
            Ok(Some(StreamInput {
                input: Some(Input::StdinClose(_)),
            })) if !tty => stdin = None,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                drop(stdin.take());
                if tty && !exited.load(Ordering::SeqCst) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP);
                }
                break;
            }
        }
    }
}

/// Copies one output stream into the RPC until EOF or until nobody listens
/// (then the descriptor closes and the writer gets SIGPIPE, as on a pipe
/// whose reader went away).
async fn pump(
    from: Arc<FdStream>,
    kind: fn(Vec<u8>) -> Output,
    tx: mpsc::Sender<Result<StreamOutput, Status>>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let msg = StreamOutput {
                    output: Some(kind(buf[..n].to_vec())),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn target(fd: &OwnedFd) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd))).unwrap()
    }

    /// Only the streams the caller asked for get pipes; the rest of the
    /// process's stdio is /dev/null, so nothing it writes there waits on us.
    #[test]
    fn a_streamed_exec_gets_pipes_only_for_what_was_asked() {
        let start = ExecStart {
            stdout: true,
            stdin: true,
            ..Default::default()
        };
        let s = stream_stdio(&start).unwrap();
        assert!(s.console.is_none());
        assert_eq!(s.outputs.len(), 1, "stdout only");
        assert_eq!(target(&s.stdio.stderr), Path::new("/dev/null"));
        assert_ne!(target(&s.stdio.stdout), Path::new("/dev/null"));
        // What the process writes on its stdout arrives on our read end.
        let mut w = File::from(s.stdio.stdout);
        w.write_all(b"out").unwrap();
        drop(w);
        let mut got = String::new();
        File::from(s.outputs.into_iter().next().unwrap().0)
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "out");
        // Stdin: the caller's bytes reach the process.
        File::from(s.stdin.unwrap()).write_all(b"in").unwrap();
        let mut got = [0u8; 2];
        File::from(s.stdio.stdin).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"in");
    }

    /// A terminal replaces all three: the console socket is fd 0, and the
    /// stage's fds 1 and 2 lead nowhere.
    #[test]
    fn a_tty_exec_gets_a_console_and_no_pipes() {
        let start = ExecStart {
            tty: true,
            stdin: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let s = stream_stdio(&start).unwrap();
        assert!(s.console.is_some() && s.outputs.is_empty() && s.stdin.is_none());
        assert_eq!(target(&s.stdio.stdout), Path::new("/dev/null"));
        assert_eq!(target(&s.stdio.stderr), Path::new("/dev/null"));
    }

    /// The stage's report after an identity line, or without one, or none.
    #[tokio::test]
    async fn a_stage_failure_is_read_from_its_report() {
        let report = |r: &'static [u8]| tokio::spawn(async move { Ok(r.to_vec()) });
        assert_eq!(stage_failure(report(b"I0 0 \n")).await.unwrap(), None);
        assert_eq!(
            stage_failure(report(b"I0 0 \nEexec \"x\": ENOENT"))
                .await
                .unwrap()
                .as_deref(),
            Some("exec \"x\": ENOENT")
        );
        assert_eq!(
            stage_failure(report(b"Ethe container's process has exited"))
                .await
                .unwrap()
                .as_deref(),
            Some("the container's process has exited")
        );
        let gone = tokio::spawn(async { Err(std::io::Error::other("read")) });
        assert_eq!(
            stage_failure(gone).await.unwrap(),
            None,
            "an unreadable report is no failure"
        );
    }
}
