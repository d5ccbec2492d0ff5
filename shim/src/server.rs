//! The shim's gRPC server (package `berth.shim.v1`) on a unix socket.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::shim::shim_server::{Shim, ShimServer};
use berth_proto::shim::*;
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use tonic::{Request, Response, Status};

use crate::attach::AttachPoint;
use crate::error::{Error, Result};
use crate::init::{InitConfig, RootfsMount as InitRootfsMount};
use crate::logs::{spawn_copier, LogFile, Stream};
use crate::reaper::{now_ns, Reaper};
use crate::spawn::{spawn_init, ChildFds};
use crate::table::{Container, Created, Phase, Table};

/// How long Delete waits for a killed container to be reaped.
const DELETE_WAIT: Duration = Duration::from_secs(10);

/// How long a reaped container's output may keep draining before its exit
/// is reported anyway.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Runs the shim until Shutdown.
pub fn run(sandbox_id: String, socket: PathBuf, pod_pid_ns: bool) -> anyhow::Result<()> {
    // Orphans of container processes must be reaped by us, not by host init.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        anyhow::bail!("PR_SET_CHILD_SUBREAPER: {}", std::io::Error::last_os_error());
    }
    // The pod's shared PID namespace: its PID 1 must exist before any
    // container and live exactly as long as we do (it exits on EOF of a pipe
    // only we hold, close-on-exec so no container inherits it).
    let pod_pid_ns = if pod_pid_ns {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let pid =
            crate::spawn::spawn_pod_init(&read).map_err(|e| anyhow::anyhow!("start the pod's PID 1: {e}"))?;
        drop(read);
        std::mem::forget(write);
        Some(File::open(format!("/proc/{pid}/ns/pid"))?)
    } else {
        None
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_SHIM_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(sandbox_id, socket, pod_pid_ns))
}

async fn serve(sandbox_id: String, socket: PathBuf, pod_pid_ns: Option<File>) -> anyhow::Result<()> {
    let reaper = Reaper::start()?;
    let _ = std::fs::remove_file(&socket);
    if let Some(dir) = socket.parent() {
        // berthd made it 0700; if not, ours is 0700 whatever the umask.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(&socket)?;
    let (shutdown_tx, mut shutdown_rx) = tokio::sync::mpsc::channel::<()>(1);
    let svc = ShimService {
        pod_pid_ns: pod_pid_ns.map(Arc::new),
        sandbox_id: sandbox_id.clone(),
        reaper,
        table: Table::default(),
        shutdown: shutdown_tx,
    };
    tracing::info!(sandbox = %sandbox_id, socket = %socket.display(), "shim serving");
    tonic::transport::Server::builder()
        .add_service(ShimServer::new(svc))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            async move {
                let _ = shutdown_rx.recv().await;
            },
        )
        .await?;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("shim stopped");
    Ok(())
}

struct ShimService {
    /// The pod's shared PID namespace (`shareProcessNamespace`), if any.
    pod_pid_ns: Option<Arc<File>>,
    sandbox_id: String,
    reaper: Reaper,
    table: Table,
    shutdown: tokio::sync::mpsc::Sender<()>,
}

/// The output of ExecStream and Attach.
type OutputStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<StreamOutput, Status>> + Send>>;

impl ShimService {
    fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.table.get(id).ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// A running container.
    fn running(&self, id: &str) -> Result<Arc<Container>> {
        let c = self.container(id)?;
        // A reaped process whose exit is still being drained counts as
        // gone: its pid may already be another process's.
        if c.state().phase != Phase::Running || c.reaped() {
            return Err(Error::WrongPhase(format!("container {id} is not running")));
        }
        Ok(c)
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((r, w))
}

fn cgroup_dir(spec: &Spec) -> Option<PathBuf> {
    let p = spec.linux().as_ref()?.cgroups_path().clone()?;
    Some(Path::new("/sys/fs/cgroup").join(p.strip_prefix("/").unwrap_or(&p)))
}

fn signal_all(dir: &Path, sig: Signal) -> std::io::Result<()> {
    if sig == Signal::SIGKILL && dir.join("cgroup.kill").exists() {
        return std::fs::write(dir.join("cgroup.kill"), b"1");
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
    Ok(())
}

#[tonic::async_trait]
impl Shim for ShimService {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            shim_pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            sandbox_id: self.sandbox_id.clone(),
        }))
    }

    async fn create(&self, req: Request<CreateRequest>) -> Result<Response<CreateResponse>, Status> {
        let req = req.into_inner();
        if self.table.get(&req.id).is_some() {
            return Err(Error::Exists(req.id).into());
        }
        let spec: Spec = serde_json::from_slice(&req.spec_json).map_err(Error::BadSpec)?;
        let new_pid_ns = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .map(|ns| {
                ns.iter()
                    .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
            })
            .unwrap_or(false);
        let cfg = InitConfig {
            rootfs_dir: Path::new(&req.bundle).join("rootfs"),
            rootfs_mounts: req
                .rootfs
                .iter()
                .map(|m| InitRootfsMount {
                    fstype: m.r#type.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                })
                .collect(),
            spec,
        };
        // Under the 0700 bundle dir; 0700 itself whatever the umask.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.rootfs_dir)
            .map_err(|e| Error::io("create rootfs dir", e))?;
        let log = LogFile::open(&req.log_path).map_err(|e| Error::io("open log file", e))?;
        let config_json = serde_json::to_vec(&cfg).map_err(|e| Error::internal("encode init config", e))?;

        let mk = |what: &str| pipe().map_err(|e| Error::io(what, e));
        let (cfg_r, cfg_w) = mk("config pipe")?;
        let (sync_r, sync_w) = mk("sync pipe")?;
        let (start_r, start_w) = mk("start pipe")?;
        let (out_r, out_w) = mk("stdout pipe")?;
        let (err_r, err_w) = mk("stderr pipe")?;
        let devnull: OwnedFd = File::open("/dev/null")
            .map_err(|e| Error::io("open /dev/null", e))?
            .into();
        // A tty container gets, as its stdin, a socket on which its init
        // sends back the terminal it opens inside (init::console).
        let terminal = cfg
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        // `stdin: true` without a terminal: a pipe whose write end the shim
        // keeps, so the process's stdin stays open (reads block, as with no
        // attacher on the other runtimes) instead of reading EOF.
        let mut stdin_writer = None;
        let (console, stdin) = if terminal {
            let (ours, theirs) =
                std::os::unix::net::UnixStream::pair().map_err(|e| Error::io("console socket", e))?;
            (Some(ours), OwnedFd::from(theirs))
        } else if req.stdin {
            let (r, w) = mk("stdin pipe")?;
            stdin_writer = Some(w);
            (None, r)
        } else {
            (None, devnull)
        };

        let join = if new_pid_ns {
            None
        } else {
            self.pod_pid_ns.as_deref()
        };
        let spawned = spawn_init(
            new_pid_ns,
            join,
            ChildFds {
                stdin,
                stdout: out_w,
                stderr: err_w,
                config: cfg_r,
                sync: sync_w,
                start: start_r,
                target: None,
            },
        )
        .map_err(|e| Error::internal("clone container init", e))?;
        let pid = spawned.pid;
        // Our copies of the child's ends are closed by now (ChildFds dropped),
        // so EOF on sync/stdout/stderr means the child side is gone.

        let cgroup_dir = cgroup_dir(&cfg.spec);
        type Setup = (File, Vec<u8>, Option<OwnedFd>);
        let setup = tokio::task::spawn_blocking(move || -> std::io::Result<Setup> {
            let mut w = File::from(cfg_w);
            w.write_all(&config_json)?;
            drop(w);
            let mut sync = File::from(sync_r);
            let got = crate::sync::read(&mut sync, true)?;
            // Init sent the terminal before it said "R".
            let master = match &console {
                Some(sock) if crate::sync::is_ready(&got) => {
                    Some(crate::init::console::receive(sock).map_err(std::io::Error::other)?)
                }
                _ => None,
            };
            Ok((sync, got, master))
        })
        .await
        .map_err(|e| Error::internal("init setup task", e))?;

        // Through the pidfd: an init that died in setup may be reaped, and
        // its pid another process's, by now.
        let pidfd = spawned.pidfd;
        let fail = |msg: String| {
            let _ = crate::stop_signal::pidfd_signal(pidfd.as_fd(), libc::SIGKILL);
            let reaper = self.reaper.clone();
            tokio::spawn(async move { reaper.wait(pid).await });
            Error::CreateFailed {
                id: req.id.clone(),
                message: msg,
            }
        };
        let (sync_file, got, master) = match setup {
            Ok(v) => v,
            Err(e) => return Err(fail(format!("talk to init: {e}")).into()),
        };
        if !crate::sync::is_ready(&got) {
            return Err(fail(crate::sync::setup_failure(&got)).into());
        }

        // Attachers write keystrokes and resizes to a duplicate of the
        // terminal master; the copier keeps reading the original.
        let terminal = match master.as_ref().map(|m| m.try_clone()) {
            Some(Ok(dup)) => Some(File::from(dup)),
            Some(Err(e)) => return Err(fail(format!("duplicate the terminal: {e}")).into()),
            None => None,
        };
        let attach = Arc::new(AttachPoint::new(
            terminal,
            stdin_writer.map(File::from),
            req.stdin,
            req.stdin_once,
        ));
        let fanout = attach.fanout.clone();
        let c = Arc::new(Container::new(Created {
            id: req.id.clone(),
            pid,
            pidfd: Some(
                pidfd
                    .try_clone()
                    .map_err(|e| fail(format!("duplicate the pidfd: {e}")))?,
            ),
            cgroup_dir,
            spec: cfg.spec,
            log: log.clone(),
            attach,
            start_pipe: File::from(start_w),
            sync_pipe: sync_file,
        }));
        if let Err(e) = self.table.insert(c.clone()) {
            return Err(fail(e).into());
        }
        let out_done = spawn_copier(out_r, Stream::Stdout, log.clone(), fanout.clone());
        // A terminal merges both streams: its output is logged as stdout.
        let tty_done = master.map(|m| spawn_copier(m, Stream::Stdout, log.clone(), fanout.clone()));
        let err_done = spawn_copier(err_r, Stream::Stderr, log, fanout);
        let reaper = self.reaper.clone();
        tokio::spawn(async move {
            let exit = reaper.wait(pid).await;
            c.mark_reaped();
            // What the process wrote before it died reaches the log before
            // its exit is reported. But a process that inherited the pipes
            // and lives on (a background child, in a pod's shared PID
            // namespace) must not keep the exit unreported: drain for a
            // bounded time; the copiers go on logging whatever comes later.
            let drained = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
                let _ = out_done.await;
                let _ = err_done.await;
                if let Some(t) = tty_done {
                    let _ = t.await;
                }
            })
            .await;
            if drained.is_err() {
                tracing::info!(container = %c.id, pid, "output still open after the exit (a process holds the pipes); reporting the exit anyway");
            }
            c.mark_exited(exit.code, exit.at_ns);
            tracing::info!(container = %c.id, pid, code = exit.code, "container exited");
        });
        tracing::info!(container = %req.id, pid, "container created");
        Ok(Response::new(CreateResponse { pid: pid as u32 }))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let id = req.into_inner().id;
        let c = self.container(&id)?;
        if c.state().phase != Phase::Created {
            return Err(Error::WrongPhase(format!("container {id} is not in created state")).into());
        }
        let start = c.start_pipe.lock().expect("lock").take();
        let sync = c.sync_pipe.lock().expect("lock").take();
        let (Some(start), Some(mut sync)) = (start, sync) else {
            return Err(Error::WrongPhase(format!("container {id} is already starting")).into());
        };
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            crate::sync::send_start(start)?;
            crate::sync::read(&mut sync, false)
        })
        .await
        .map_err(|e| Error::internal("start task", e))?;
        let started_at = now_ns();
        let report = result.map_err(|e| Error::io("read start result", e))?;
        // The identity right before exec; anything after it is an error.
        let (identity, result) = crate::sync::start_result(&report);
        if let Err(message) = result {
            return Err(Error::StartFailed { id, message }.into());
        }
        c.mark_running(started_at).map_err(Error::WrongPhase)?;
        tracing::info!(container = %id, pid = c.pid, "container started");
        Ok(Response::new(StartResponse {
            pid: c.pid as u32,
            started_at,
            identity,
        }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<KillResponse>, Status> {
        let req = req.into_inner();
        let c = self.container(&req.id)?;
        let sig = Signal::try_from(req.signal as i32).map_err(|_| Error::BadSignal(req.signal))?;
        if c.state().phase == Phase::Exited {
            return Ok(Response::new(KillResponse {}));
        }
        match (&c.cgroup_dir, req.all) {
            (Some(dir), true) => signal_all(dir, sig).map_err(|e| Error::io("signal cgroup", e))?,
            _ => {
                let redeliver_for = Duration::from_millis(req.redeliver_ms);
                match c
                    .process()
                    .and_then(|p| crate::stop_signal::send(p, sig as i32, redeliver_for))
                {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(Error::io("kill", e).into()),
                }
            }
        }
        Ok(Response::new(KillResponse {}))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let c = self.container(&req.into_inner().id)?;
        let s = c.wait_exited().await;
        Ok(Response::new(WaitResponse {
            exit_code: s.exit_code,
            exited_at: s.exited_at,
        }))
    }

    async fn state(&self, req: Request<StateRequest>) -> Result<Response<StateResponse>, Status> {
        let c = self.container(&req.into_inner().id)?;
        let s = c.state();
        let log_dropped_records = c.log.dropped_records();
        Ok(Response::new(StateResponse {
            id: c.id.clone(),
            status: match s.phase {
                Phase::Created => berth_proto::shim::Status::Created,
                Phase::Running => berth_proto::shim::Status::Running,
                Phase::Exited => berth_proto::shim::Status::Exited,
            } as i32,
            pid: c.pid as u32,
            exit_code: s.exit_code,
            started_at: s.started_at,
            exited_at: s.exited_at,
            log_dropped_records,
        }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let id = req.into_inner().id;
        let c = self.container(&id)?;
        if c.state().phase != Phase::Exited {
            // A parked init gives up when its start pipe closes; a running one is killed.
            drop(c.start_pipe.lock().expect("lock").take());
            match &c.cgroup_dir {
                Some(dir) => {
                    let _ = signal_all(dir, Signal::SIGKILL);
                }
                None => {
                    let _ = c
                        .process()
                        .and_then(|p| crate::stop_signal::Target::signal(&p, libc::SIGKILL));
                }
            }
            if tokio::time::timeout(DELETE_WAIT, c.wait_exited()).await.is_err() {
                return Err(Error::NotKilled {
                    id,
                    waited: DELETE_WAIT,
                }
                .into());
            }
        }
        self.table.remove(&id);
        let s = c.state();
        tracing::info!(container = %id, "container deleted");
        Ok(Response::new(DeleteResponse {
            exit_code: s.exit_code,
            exited_at: s.exited_at,
        }))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let req = req.into_inner();
        let c = self.running(&req.id)?;
        if req.args.is_empty() {
            return Err(Error::NoCommand.into());
        }
        let (out_r, out_w) = crate::exec::pipe()?;
        let (err_r, err_w) = crate::exec::pipe()?;
        let stdio = crate::exec::ExecStdio {
            stdin: crate::exec::devnull()?,
            stdout: out_w,
            stderr: err_w,
        };
        let out_r = crate::fdio::FdStream::new(out_r).map_err(|e| Error::io("stdout pipe", e))?;
        let err_r = crate::fdio::FdStream::new(err_r).map_err(|e| Error::io("stderr pipe", e))?;
        let spawned = crate::exec::spawn(&c, req.args.clone(), false, stdio)?;
        let pid = spawned.pid;
        let started = std::time::Instant::now();
        let limit = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms as u64));
        let reaper = self.reaper.clone();
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
        let ((exit, timed_out), stdout, stderr) = crate::exec_sync::collect(
            exited,
            out_r,
            err_r,
            crate::exec::OUTPUT_GRACE,
            crate::exec_sync::OUTPUT_CAP_BYTES,
        )
        .await;
        let sync = spawned
            .setup
            .await
            .map_err(|e| Error::internal("exec setup task", e))?
            .unwrap_or_default();
        if let Some(msg) = crate::sync::failure(&sync) {
            return Err(Error::ExecFailed {
                id: req.id,
                message: msg,
            }
            .into());
        }
        tracing::info!(container = %req.id, pid, code = exit.code, timed_out, elapsed_ms = started.elapsed().as_millis() as u64, "exec finished");
        Ok(Response::new(ExecResponse {
            exit_code: exit.code,
            stdout,
            stderr,
            timed_out,
        }))
    }

    type ExecStreamStream = OutputStream;

    async fn exec_stream(
        &self,
        req: Request<tonic::Streaming<StreamInput>>,
    ) -> Result<Response<OutputStream>, Status> {
        let mut input = req.into_inner();
        let start = match input.message().await? {
            Some(StreamInput {
                input: Some(stream_input::Input::Exec(start)),
            }) => start,
            _ => {
                return Err(Error::BadFirstMessage {
                    rpc: "ExecStream",
                    first: "exec",
                }
                .into())
            }
        };
        let c = self.running(&start.id)?;
        let rx = crate::exec::stream(c, self.reaper.clone(), start, input).await?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type AttachStream = OutputStream;

    async fn attach(
        &self,
        req: Request<tonic::Streaming<StreamInput>>,
    ) -> Result<Response<OutputStream>, Status> {
        let mut input = req.into_inner();
        let start = match input.message().await? {
            Some(StreamInput {
                input: Some(stream_input::Input::Attach(start)),
            }) => start,
            _ => {
                return Err(Error::BadFirstMessage {
                    rpc: "Attach",
                    first: "attach",
                }
                .into())
            }
        };
        let c = self.running(&start.id)?;
        let point = c.attach.clone();
        let exited = async move { c.wait_exited().await.exit_code };
        let rx = crate::attach::session(start.id.clone(), point, exited, start, input);
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn reopen_log(
        &self,
        req: Request<ReopenLogRequest>,
    ) -> Result<Response<ReopenLogResponse>, Status> {
        let id = req.into_inner().id;
        let c = self.container(&id)?;
        c.log.reopen().map_err(|e| Error::io("reopen log file", e))?;
        tracing::info!(container = %id, "log file reopened");
        Ok(Response::new(ReopenLogResponse {}))
    }

    async fn shutdown(&self, req: Request<ShutdownRequest>) -> Result<Response<ShutdownResponse>, Status> {
        let force = req.into_inner().force;
        let live: Vec<_> = self.table.all();
        if !live.is_empty() && !force {
            return Err(Error::NotEmpty(live.len()).into());
        }
        for c in live {
            if let Some(dir) = &c.cgroup_dir {
                let _ = signal_all(dir, Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.pid), Signal::SIGKILL);
        }
        let _ = self.shutdown.try_send(());
        Ok(Response::new(ShutdownResponse {}))
    }
}
