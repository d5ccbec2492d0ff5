//! Create and Start: a container's init stage cloned, set up and parked
//! (Create), then told to exec the user's process (Start).
//!
//! Create clones `berth-shim init` with its channels on the numbers of
//! [`crate::sync::fds`], hands it the spec, and waits for its ready report
//! (and, for a tty container, the terminal it opened inside). Only then is
//! the container put in the table, whole, with its log copiers running and
//! a task that marks it exited once it is reaped and its output drained.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::shim::{CreateRequest, CreateResponse, StartResponse};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::init::{InitConfig, RootfsMount};
use crate::logs::{spawn_copier, LogFile};
use crate::pod::Pod;
use crate::reaper::{now_ns, Reaper};
use crate::spawn::{spawn_init, ChildFds};
use crate::stdio::AttachPoint;
use crate::stream::Stream;
use crate::table::{Container, Created, Phase, Table};

/// How long a reaped container's output may keep draining before its exit
/// is reported anyway.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The shim's ends of a new container's channels.
struct Ours {
    config: OwnedFd,
    sync: OwnedFd,
    start: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    /// A tty container's console socket: its init sends the terminal here.
    console: Option<UnixStream>,
    /// The write end of the stdin pipe (`stdin: true` without a terminal).
    stdin: Option<OwnedFd>,
}

/// What init's setup came to: the sync pipe (for Start), its report, and
/// the terminal master it sent (tty containers).
type Setup = (File, Vec<u8>, Option<OwnedFd>);

/// Whether the spec asks for a PID namespace of the container's own.
pub(crate) fn wants_own_pid_ns(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .map(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
        })
        .unwrap_or(false)
}

/// What init reads on its config fd.
fn init_config(req: &CreateRequest, spec: Spec, cgroup_root: &Path) -> InitConfig {
    InitConfig {
        cgroup_root: cgroup_root.to_path_buf(),
        rootfs_dir: Path::new(&req.bundle).join("rootfs"),
        rootfs_mounts: req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                fstype: m.r#type.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect(),
        hook_state: crate::hooks::State::for_spec(&spec, &req.id, &req.bundle),
        spec,
        in_cgroup: false,
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((r, w))
}

/// Makes every channel of a new container: the child's ends (by their
/// number inside the child) and ours.
fn channels(terminal: bool, stdin: bool) -> Result<(ChildFds, Ours)> {
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
    // `stdin: true` without a terminal: a pipe whose write end the shim
    // keeps, so the process's stdin stays open (reads block, as with no
    // attacher on the other runtimes) instead of reading EOF.
    let mut stdin_writer = None;
    let (console, child_stdin) = if terminal {
        let (ours, theirs) = UnixStream::pair().map_err(|e| Error::io("console socket", e))?;
        (Some(ours), OwnedFd::from(theirs))
    } else if stdin {
        let (r, w) = mk("stdin pipe")?;
        stdin_writer = Some(w);
        (None, r)
    } else {
        (None, devnull)
    };
    let child = ChildFds {
        stdin: child_stdin,
        stdout: out_w,
        stderr: err_w,
        config: cfg_r,
        sync: sync_w,
        start: start_r,
        target: None,
    };
    let ours = Ours {
        config: cfg_w,
        sync: sync_r,
        start: start_w,
        stdout: out_r,
        stderr: err_r,
        console,
        stdin: stdin_writer,
    };
    Ok((child, ours))
}

/// Hands init its config and waits for its ready report (and the terminal
/// it sends before it).
///
/// A forked init (no config to write) with no createRuntime hooks and no
/// terminal, the usual container, is read on the runtime's reactor, as
/// Start's report is: one wake-up where a blocking thread costs a
/// hand-off to it and a wake-up back. (This was measured before, and lost:
/// the blocking thread that had read the report was then where the output
/// copiers were started, and without it that hand-off had to make a pool
/// thread. They go to the helper thread now: [`crate::threads::off_path`].)
/// The rest write and read on a blocking thread.
async fn setup(
    config: Option<(OwnedFd, Vec<u8>)>,
    sync: OwnedFd,
    console: Option<UnixStream>,
    at_create: Option<crate::hooks::AtCreate>,
) -> Result<std::io::Result<Setup>> {
    if config.is_none() && console.is_none() && at_create.is_none() {
        return Ok(read_ready(sync).await.map(|(sync, got)| (sync, got, None)));
    }
    tokio::task::spawn_blocking(move || -> std::io::Result<Setup> {
        if let Some((config, json)) = config {
            File::from(config).write_all(&json)?;
        }
        let mut sync = File::from(sync);
        let got = match at_create {
            Some(hooks) => hooks.read_setup(&mut sync)?,
            None => crate::sync::read(&mut sync, true)?,
        };
        // Init sent the terminal before it said it is ready.
        let master = match &console {
            Some(sock) if crate::sync::is_ready(&got) => {
                Some(crate::init::console::receive(sock).map_err(std::io::Error::other)?)
            }
            _ => None,
        };
        Ok((sync, got, master))
    })
    .await
    .map_err(|e| Error::internal("init setup task", e))
}

/// [`crate::sync::read`] up to the ready report, on the reactor; gives the
/// pipe back (non-blocking now: Start reads it on the reactor too).
async fn read_ready(sync: OwnedFd) -> std::io::Result<(File, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(sync)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if crate::sync::is_ready(&got) {
            break;
        }
    }
    Ok((File::from(pipe.into_nonblocking_fd()?), got))
}

/// Asks the pod's fork server for the container's init. None: the server
/// cloned nothing and the init is exec'd instead.
fn fork_init(
    z: &crate::zygote::Zygote,
    id: &str,
    cfg: &InitConfig,
    new_pid_ns: bool,
    join_pid_ns: Option<&File>,
    cgroup: Option<&File>,
    child: &ChildFds,
) -> Result<Option<crate::spawn::Spawned>> {
    use crate::zygote::Forked;
    let json = serde_json::to_vec(cfg).map_err(|e| Error::internal("encode init config", e))?;
    match z.clone_init(&json, new_pid_ns, join_pid_ns, cgroup, child) {
        Forked::Cloned(s) => Ok(Some(s)),
        Forked::Unavailable(why) => {
            tracing::info!(container = %id, why, "init exec'd, not forked");
            Ok(None)
        }
        Forked::Failed(message) => Err(Error::CreateFailed {
            id: id.to_string(),
            message,
        }),
    }
}

/// Create: clones the container's init, waits until it is parked, and
/// records the container.
pub async fn create(pod: &Pod, req: CreateRequest) -> Result<CreateResponse> {
    let entered = crate::sync::mono_ns();
    if pod.table.get(&req.id).is_some() {
        return Err(Error::Exists(req.id));
    }
    let spec: Spec = serde_json::from_slice(&req.spec_json).map_err(Error::BadSpec)?;
    let new_pid_ns = wants_own_pid_ns(&spec);
    let cfg = init_config(&req, spec, &pod.cgroup_root);
    // Under the 0700 bundle dir; 0700 itself whatever the umask.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.rootfs_dir)
        .map_err(|e| Error::io("create rootfs dir", e))?;
    let log = LogFile::open(&req.log_path).map_err(|e| Error::io("open log file", e))?;
    let (child, ours) = channels(crate::init::wants_terminal(&cfg.spec), req.stdin)?;

    let join = if new_pid_ns { None } else { pod.pid_ns.as_ref() };
    let cgroup_dir = crate::cgroup::dir(&pod.cgroup_root, &cfg.spec);
    // Missing or unreadable: init's own join reports it.
    let cgroup = cgroup_dir.as_ref().and_then(|d| File::open(d).ok());
    let cloning = crate::sync::mono_ns();
    let forked = match &pod.zygote {
        Some(z) => fork_init(z, &req.id, &cfg, new_pid_ns, join, cgroup.as_ref(), &child)?,
        None => None,
    };
    let via_zygote = forked.is_some();
    let (spawned, config) = match forked {
        // The server decoded the config; the child has no config pipe.
        // Our copies of the child's ends close here, as spawn_init's do.
        Some(s) => {
            drop(child);
            drop(ours.config);
            (s, None)
        }
        None => {
            let s = spawn_init(new_pid_ns, join, cgroup.as_ref(), child)
                .map_err(|e| Error::internal("clone container init", e))?;
            (s, Some(ours.config))
        }
    };
    let cloned = crate::sync::mono_ns();
    let pid = spawned.pid;
    let mut cfg = cfg;
    cfg.in_cgroup = spawned.in_cgroup;
    let config = match config {
        Some(fd) => Some((
            fd,
            serde_json::to_vec(&cfg).map_err(|e| Error::internal("encode init config", e))?,
        )),
        None => None,
    };
    // Our copies of the child's ends are closed by now (ChildFds dropped),
    // so EOF on sync/stdout/stderr means the child side is gone.

    let at_create = crate::hooks::AtCreate::new(&cfg, &ours.start, pid, &pod.reaper);
    let setup = setup(config, ours.sync, ours.console, at_create).await?;

    // Through the pidfd: an init that died in setup may be reaped, and
    // its pid another process's, by now.
    let pidfd = spawned.pidfd;
    let fail = |msg: String| {
        let _ = berth_sys::pidfd::send_signal(pidfd.as_fd(), libc::SIGKILL);
        let reaper = pod.reaper.clone();
        tokio::spawn(async move { reaper.wait(pid).await });
        Error::CreateFailed {
            id: req.id.clone(),
            message: msg,
        }
    };
    let (sync_file, got, master) = match setup {
        Ok(v) => v,
        Err(e) => return Err(fail(format!("talk to init: {e}"))),
    };
    if !crate::sync::is_ready(&got) {
        return Err(fail(crate::sync::setup_failure(&got)));
    }
    let reported = crate::sync::mono_ns();

    // Attachers write keystrokes and resizes to a duplicate of the
    // terminal master; the copier keeps reading the original.
    let terminal = match master.as_ref().map(|m| m.try_clone()) {
        Some(Ok(dup)) => Some(File::from(dup)),
        Some(Err(e)) => return Err(fail(format!("duplicate the terminal: {e}"))),
        None => None,
    };
    let attach = Arc::new(AttachPoint::new(
        terminal,
        ours.stdin.map(File::from),
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
        start_pipe: Some(File::from(ours.start)),
        sync_pipe: Some(sync_file),
        hooks: crate::hooks::Attached::new(cfg.hook_state, &pod.reaper),
        restore: None,
    }));
    if let Err(e) = pod.table.insert(c.clone()) {
        return Err(fail(e));
    }
    // The copiers are threads, and making one costs more than the rest of
    // this step under emulation: the helper thread starts them once the
    // reply is written. Nothing is lost meanwhile: the process is parked
    // until Start, what it writes then waits in the pipes, and the reaper
    // keeps an exit until the watch claims it.
    let reaper = pod.reaper.clone();
    let rt = tokio::runtime::Handle::current();
    crate::fast::after_reply(move || {
        let mut copiers = vec![spawn_copier(
            ours.stdout,
            Stream::Stdout,
            log.clone(),
            fanout.clone(),
        )];
        copiers.push(spawn_copier(
            ours.stderr,
            Stream::Stderr,
            log.clone(),
            fanout.clone(),
        ));
        // A terminal merges both streams: its output is logged as stdout.
        copiers.extend(master.map(|m| spawn_copier(m, Stream::Stdout, log, fanout)));
        rt.spawn(watch_exit(reaper, c, copiers));
    });
    tracing::info!(container = %req.id, pid, "container created");
    let times = crate::sync::split_times(&got).0;
    let mut marks = vec![("prep", entered)];
    match times {
        // The fork server read and decoded the config (and compiled a
        // seccomp profile it had not seen) before its clone;
        // the child started in `main`, with no exec.
        Some(t) if via_zygote => {
            marks.extend([("read", cloning), ("config", t.read), ("clone", t.config)]);
            marks.extend(setup_marks(&t, t.main));
        }
        Some(t) => {
            marks.extend([
                ("clone", cloning),
                ("exec", cloned),
                ("read", t.main),
                ("config", t.read),
            ]);
            marks.extend(setup_marks(&t, t.config));
        }
        None => marks.extend([("clone", cloning), ("exec", cloned)]),
    }
    marks.extend([("table", reported), ("", crate::sync::mono_ns())]);
    Ok(CreateResponse {
        pid: pid as u32,
        steps: steps_between(&marks),
        // The handler stamps its own entry and exit (server.rs).
        ..Default::default()
    })
}

/// Init's own marks from the start of its rootfs set-up (`began`) to its
/// ready report: the same in a forked and an exec'd init.
fn setup_marks(t: &crate::sync::InitTimes, began: u64) -> [(&'static str, u64); 8] {
    let r = &t.rootfs_steps;
    [
        ("rootfs_ns", began),
        ("rootfs_root", r.ns),
        ("rootfs_mounts", r.root),
        ("rootfs_dev", r.mounts),
        ("rootfs_pivot", r.dev),
        ("rootfs_harden", r.pivot),
        ("park", t.rootfs),
        ("report", t.ready),
    ]
}

/// The steps between consecutive marks: each `(name, start)` lasts until
/// the next mark's start (the last mark only ends the one before it).
fn steps_between(marks: &[(&str, u64)]) -> Vec<berth_proto::shim::Step> {
    marks
        .windows(2)
        .map(|w| berth_proto::shim::Step {
            name: w[0].0.to_string(),
            nanos: w[1].1.saturating_sub(w[0].1),
        })
        .collect()
}

/// Marks `c` exited once its process is reaped and its output copiers
/// are done.
pub(crate) async fn watch_exit(reaper: Reaper, c: Arc<Container>, copiers: Vec<oneshot::Receiver<()>>) {
    let pid = c.pid;
    let exit = reaper.wait(pid).await;
    c.mark_reaped();
    // What the process wrote before it died reaches the log before
    // its exit is reported. But a process that inherited the pipes
    // and lives on (a background child, in a pod's shared PID
    // namespace) must not keep the exit unreported: drain for a
    // bounded time; the copiers go on logging whatever comes later.
    let drained = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
        for done in copiers {
            let _ = done.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::info!(container = %c.id, pid, "output still open after the exit (a process holds the pipes); reporting the exit anyway");
    }
    crate::hooks::after_exit(&c).await;
    c.mark_exited(exit.code, exit.at_ns);
    tracing::info!(container = %c.id, pid, code = exit.code, "container exited");
}

/// Start: tells the parked init to exec and reports how that went.
pub async fn start_parked(table: &Table, id: String) -> Result<StartResponse> {
    let c = table.container(&id)?;
    if c.state().phase != Phase::Created {
        return Err(Error::WrongPhase(format!(
            "container {id} is not in created state"
        )));
    }
    let start = c.start_pipe.lock().expect("lock").take();
    let sync = c.sync_pipe.lock().expect("lock").take();
    let (Some(start), Some(sync)) = (start, sync) else {
        return Err(Error::WrongPhase(format!("container {id} is already starting")));
    };
    let sent = crate::sync::mono_ns();
    let (report, execed) = go_and_read(start, sync)
        .await
        .map_err(|e| Error::io("read start result", e))?;
    let started_at = now_ns();
    // The identity right before exec; anything after it is an error.
    let crate::sync::StartReport {
        times,
        identity,
        result,
    } = crate::sync::start_report(&report);
    if let Err(message) = result {
        return Err(Error::StartFailed { id, message });
    }
    c.mark_started(started_at).map_err(Error::WrongPhase)?;
    crate::hooks::after_start(&c).await;
    tracing::info!(container = %id, pid = c.pid, "container started");
    let steps = match times {
        Some(t) => steps_between(&start_marks(sent, &t, execed)),
        None => Vec::new(),
    };
    Ok(StartResponse {
        pid: c.pid as u32,
        started_at,
        identity,
        steps,
        // The handler stamps its own entry and exit (server.rs).
        ..Default::default()
    })
}

/// Gives a parked init its go and reads its report to EOF (its exec closed
/// the pipe), on the runtime's own reactor: a blocking thread would cost a
/// hand-off to it and a wake-up back, both on the path Start waits for.
/// The go is one byte into the empty start pipe, which never blocks.
async fn go_and_read(start: File, sync: File) -> std::io::Result<(Vec<u8>, u64)> {
    use tokio::io::AsyncReadExt;
    crate::sync::send_start(start)?;
    let mut sync = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(sync))?;
    let mut report = Vec::new();
    sync.read_to_end(&mut report).await?;
    Ok((report, crate::sync::mono_ns()))
}

/// Start's marks: the shim's go (`sent`), init's own marks, the exec seen
/// done (`execed`, the sync pipe's EOF) and now.
fn start_marks(sent: u64, t: &crate::sync::StartTimes, execed: u64) -> [(&'static str, u64); 9] {
    [
        ("start_wake", sent),
        ("start_prep", t.woke),
        ("start_seccomp", t.seccomp),
        ("start_privs", t.privileges),
        ("start_lookup", t.lookup),
        ("start_identity", t.identity),
        ("start_exec", t.exec),
        ("start_reply", execed),
        ("", crate::sync::mono_ns()),
    ]
}

#[cfg(test)]
mod start_tests {
    use std::io::Read;

    use super::*;

    /// A table holding one container parked in its init stage, with the
    /// init's ends of the start and sync pipes.
    fn parked(
        id: &str,
        start_w: std::io::PipeWriter,
        sync_r: std::io::PipeReader,
    ) -> (Table, Arc<Container>) {
        let table = Table::default();
        let c = Arc::new(Container::parked_for_test(
            id,
            File::from(OwnedFd::from(start_w)),
            File::from(OwnedFd::from(sync_r)),
        ));
        table.insert(c.clone()).unwrap();
        (table, c)
    }

    /// A process that execs and exits at once is reaped, and marked
    /// Exited, while StartContainer still waits for the init's report.
    /// The start succeeded: it must not fail with "Exited, not Created".
    #[tokio::test]
    async fn an_exit_reaped_before_the_start_report_is_a_started_container() {
        let (mut start_r, start_w) = std::io::pipe().unwrap();
        let (sync_r, sync_w) = std::io::pipe().unwrap();
        let (table, c) = parked("fast", start_w, sync_r);
        let starting = tokio::spawn(async move { start_parked(&table, "fast".into()).await });
        // The init stage gets the go, execs (its report is empty: no
        // identity, no error), exits and is reaped before the report is read.
        tokio::task::spawn_blocking(move || {
            let mut go = [0u8; 1];
            start_r.read_exact(&mut go).unwrap();
        })
        .await
        .unwrap();
        c.mark_exited(0, now_ns());
        drop(sync_w);
        let started = starting.await.unwrap().expect("the start stands");
        assert_eq!(started.pid, 42);
        let s = c.state();
        assert_eq!(s.phase, Phase::Exited);
        assert!(s.started_at > 0 && s.started_at <= s.exited_at);
    }

    /// Start's go is one byte on the start pipe; the report is everything
    /// init writes, in however many writes, up to the EOF of its exec.
    #[tokio::test]
    async fn the_go_is_one_byte_and_the_report_runs_to_eof() {
        let (mut start_r, start_w) = std::io::pipe().unwrap();
        let (sync_r, sync_w) = std::io::pipe().unwrap();
        let reading = tokio::spawn(go_and_read(
            File::from(OwnedFd::from(start_w)),
            File::from(OwnedFd::from(sync_r)),
        ));
        tokio::task::spawn_blocking(move || {
            let mut go = Vec::new();
            start_r.read_to_end(&mut go).unwrap();
            assert_eq!(go, b"S");
            let mut sync_w = sync_w;
            sync_w.write_all(b"T1 2 3 4 5 6\n").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            sync_w.write_all(b"I0 0 \n").unwrap();
        })
        .await
        .unwrap();
        let (report, execed) = reading.await.unwrap().unwrap();
        assert_eq!(report, b"T1 2 3 4 5 6\nI0 0 \n");
        assert!(execed > 0);
    }

    /// Create's report is read on the reactor up to init's ready mark,
    /// however it is split, while init keeps the pipe open (it is parked);
    /// the pipe handed back still carries what init writes at Start.
    #[tokio::test]
    async fn the_ready_report_is_read_up_to_ready_and_the_pipe_lives_on() {
        let (sync_r, mut sync_w) = std::io::pipe().unwrap();
        let reading = tokio::spawn(read_ready(OwnedFd::from(sync_r)));
        sync_w.write_all(b"T1 2 3 4 5 6 7 8 9 10\n").unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        sync_w.write_all(crate::sync::READY).unwrap();
        let (sync, got) = tokio::time::timeout(Duration::from_secs(10), reading)
            .await
            .expect("read stops at ready, not at EOF")
            .unwrap()
            .unwrap();
        assert!(crate::sync::is_ready(&got), "{got:?}");
        assert!(crate::sync::split_times(&got).0.is_some());
        sync_w.write_all(b"I0 0 \n").unwrap();
        drop(sync_w);
        let (_start_r, start_w) = std::io::pipe().unwrap();
        let (report, _) = go_and_read(File::from(OwnedFd::from(start_w)), sync)
            .await
            .unwrap();
        assert_eq!(report, b"I0 0 \n");
    }

    /// An init that dies before its ready report: what it wrote, at EOF.
    #[tokio::test]
    async fn a_report_cut_short_is_returned_at_eof() {
        let (sync_r, mut sync_w) = std::io::pipe().unwrap();
        sync_w.write_all(b"Ebad mount").unwrap();
        drop(sync_w);
        let (_, got) = read_ready(OwnedFd::from(sync_r)).await.unwrap();
        assert_eq!(got, b"Ebad mount");
        assert!(!crate::sync::is_ready(&got));
    }

    /// A container killed before StartContainer stays unstarted.
    #[tokio::test]
    async fn exited_before_start_cannot_start() {
        let (_start_r, start_w) = std::io::pipe().unwrap();
        let (sync_r, _sync_w) = std::io::pipe().unwrap();
        let (table, c) = parked("killed", start_w, sync_r);
        c.mark_exited(137, now_ns());
        let err = start_parked(&table, "killed".into()).await.unwrap_err();
        assert!(err.to_string().contains("not in created state"), "{err}");
        assert_eq!(c.state().started_at, 0);
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::shim::RootfsMount as WireMount;
    use serde_json::json;

    use super::*;

    fn spec(namespaces: serde_json::Value) -> Spec {
        serde_json::from_value(json!({"ociVersion": "1.0.2", "linux": {"namespaces": namespaces}})).unwrap()
    }

    /// Only a PID namespace without a path is the container's own; one
    /// with a path (or none) means the pod's shared one.
    #[test]
    fn only_an_unnamed_pid_namespace_is_the_containers_own() {
        assert!(wants_own_pid_ns(&spec(
            json!([{"type": "pid"}, {"type": "mount"}])
        )));
        assert!(!wants_own_pid_ns(&spec(
            json!([{"type": "pid", "path": "/proc/9/ns/pid"}])
        )));
        assert!(!wants_own_pid_ns(&spec(json!([{"type": "mount"}]))));
    }

    /// Init gets the rootfs under the bundle, the rootfs mounts in order
    /// and the shim's cgroup root.
    #[test]
    fn the_init_config_carries_bundle_mounts_and_cgroup_root() {
        let req = CreateRequest {
            id: "c1".into(),
            bundle: "/run/berth/c1".into(),
            rootfs: vec![
                WireMount {
                    r#type: "overlay".into(),
                    source: "overlay".into(),
                    options: vec!["lowerdir=/a".into()],
                },
                WireMount {
                    r#type: "tmpfs".into(),
                    source: "none".into(),
                    options: vec![],
                },
            ],
            ..Default::default()
        };
        let cfg = init_config(&req, spec(json!([])), Path::new("/mnt/cgroup2"));
        assert_eq!(cfg.rootfs_dir, Path::new("/run/berth/c1/rootfs"));
        let mounts: Vec<(&str, &str)> = cfg
            .rootfs_mounts
            .iter()
            .map(|m| (m.fstype.as_str(), m.source.as_str()))
            .collect();
        assert_eq!(mounts, [("overlay", "overlay"), ("tmpfs", "none")]);
        assert_eq!(cfg.rootfs_mounts[0].options, ["lowerdir=/a"]);
        assert_eq!(cfg.cgroup_root, Path::new("/mnt/cgroup2"));
    }

    /// A tty container's stdin is the console socket; `stdin: true` keeps
    /// a pipe's write end for attachers; otherwise stdin is /dev/null.
    #[test]
    fn stdin_is_a_console_a_kept_pipe_or_nothing() {
        let (_, ours) = channels(true, true).unwrap();
        assert!(ours.console.is_some() && ours.stdin.is_none());
        let (_, ours) = channels(false, true).unwrap();
        assert!(ours.console.is_none() && ours.stdin.is_some());
        let (child, ours) = channels(false, false).unwrap();
        assert!(ours.console.is_none() && ours.stdin.is_none());
        let null = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&child.stdin)
        ));
        assert_eq!(null.unwrap(), Path::new("/dev/null"));
    }

    /// Each step lasts from its mark to the next; a clock read out of
    /// order (another CPU's init) counts as zero, never as a wrap.
    #[test]
    fn steps_run_from_mark_to_mark() {
        let steps = steps_between(&[("prep", 100), ("clone", 130), ("exec", 125), ("", 200)]);
        let got: Vec<(&str, u64)> = steps.iter().map(|s| (s.name.as_str(), s.nanos)).collect();
        assert_eq!(got, [("prep", 30), ("clone", 0), ("exec", 75)]);
    }

    /// Start's steps: from the shim's go to init's wake, init's marks in
    /// order, the exec until the shim saw it, and the shim's reply.
    #[test]
    fn start_steps_cover_the_go_to_the_reply() {
        let t = crate::sync::StartTimes {
            woke: 110,
            seccomp: 115,
            privileges: 140,
            lookup: 143,
            identity: 147,
            exec: 150,
        };
        let marks = start_marks(100, &t, 180);
        let steps = steps_between(&marks);
        let got: Vec<(&str, u64)> = steps.iter().map(|s| (s.name.as_str(), s.nanos)).collect();
        assert_eq!(
            got[..7],
            [
                ("start_wake", 10),
                ("start_prep", 5),
                ("start_seccomp", 25),
                ("start_privs", 3),
                ("start_lookup", 4),
                ("start_identity", 3),
                ("start_exec", 30)
            ]
        );
        assert_eq!(got[7].0, "start_reply");
        assert_eq!(got.len(), 8);
    }
}
