//! A container created from a checkpoint archive (issue 23): Create clones
//! no init (CRIU cannot run inside one: its binary and libraries are the
//! node's), it only records the container with its stdio pipes; Start
//! runs `criu restore` as the shim's own child, set up first in a mount
//! namespace of its own with the container's overlay at `<bundle>/rootfs`
//! and in the container's cgroup. With `--restore-sibling` the restored
//! task becomes CRIU's sibling, i.e. the shim's child, so the reaper,
//! Stop and Delete treat it like any container's process.
//!
//! The restored process gets the new pod's network namespace and this
//! container's stdio through `--inherit-fd` under the names the dump gave
//! them, and the bind mounts of the new spec in place of the dumped ones
//! (`--external mnt[<mount point>]:<source>`, the keys the dump used).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::shim::{CreateRequest, CreateResponse, StartResponse};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};
use crate::logs::{spawn_copier, LogFile};
use crate::pod::Pod;
use crate::reaper::now_ns;
use crate::restore_pending::Pending;
use crate::stdio::AttachPoint;
use crate::stream::Stream;
use crate::table::{Container, Created, Phase};

/// How long `criu restore` may take.
const CRIU_TIMEOUT: Duration = Duration::from_secs(300);

/// Create of a restore: the rootfs dir, the log and the stdio pipes; no
/// process until Start.
pub fn create(pod: &Pod, req: CreateRequest) -> Result<CreateResponse> {
    if pod.table.get(&req.id).is_some() {
        return Err(Error::Exists(req.id));
    }
    let spec: Spec = serde_json::from_slice(&req.spec_json).map_err(Error::BadSpec)?;
    if crate::init::wants_terminal(&spec) {
        return Err(Error::CreateFailed {
            id: req.id,
            message: "restoring a container with a terminal is not supported".into(),
        });
    }
    let bundle = PathBuf::from(&req.bundle);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(bundle.join("rootfs"))
        .map_err(|e| Error::io("create rootfs dir", e))?;
    let log = LogFile::open(&req.log_path).map_err(|e| Error::io("open log file", e))?;
    let pipe = |what: &str| {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::io(what.to_string(), e))
    };
    let (out_r, out_w) = pipe("stdout pipe")?;
    let (err_r, err_w) = pipe("stderr pipe")?;
    // `stdin: true`: a pipe whose write end the shim keeps (see create.rs).
    let (child_stdin, stdin_writer) = if req.stdin {
        let (r, w) = pipe("stdin pipe")?;
        (r, Some(File::from(w)))
    } else {
        let null: OwnedFd = File::open("/dev/null")
            .map_err(|e| Error::io("open /dev/null", e))?
            .into();
        (null, None)
    };
    let pending = Pending {
        images_dir: PathBuf::from(&req.restore_images_dir),
        criu: PathBuf::from(&req.criu_path),
        bundle,
        rootfs: req.rootfs.clone(),
        stdio_names: req.restore_stdio.clone(),
        child_stdio: [child_stdin, out_w, err_w],
        stdout: out_r,
        stderr: err_r,
    };
    let c = Arc::new(Container::new(Created {
        id: req.id.clone(),
        pid: 0,
        pidfd: None,
        cgroup_dir: crate::cgroup::dir(&pod.cgroup_root, &spec),
        spec,
        log,
        attach: Arc::new(AttachPoint::new(None, stdin_writer, req.stdin, req.stdin_once)),
        start_pipe: None,
        sync_pipe: None,
        hooks: None,
        restore: Some(pending),
    }));
    pod.table.insert(c).map_err(|message| Error::CreateFailed {
        id: req.id.clone(),
        message,
    })?;
    tracing::info!(container = %req.id, "container created for a restore");
    Ok(CreateResponse {
        pid: 0,
        steps: Vec::new(),
        // The handler stamps its own entry and exit (server.rs).
        ..Default::default()
    })
}

/// Start: a container created from a checkpoint is restored, any other
/// has its parked init told to exec.
pub async fn start_or_restore(pod: &Pod, id: String) -> Result<StartResponse> {
    let c = pod.table.container(&id)?;
    if c.state().phase == Phase::Created {
        let restore = c.restore.lock().expect("lock").take();
        if let Some(pending) = restore {
            return start(pod, c, pending).await;
        }
    }
    crate::create::start_parked(&pod.table, id).await
}

/// Start of a restore: runs CRIU and, once the process is back, puts the
/// container in the table as Running with it. On failure the container is
/// Exited with CRIU's error lines in the error; its mounts went with
/// CRIU's mount namespace.
async fn start(pod: &Pod, c: Arc<Container>, p: Pending) -> Result<StartResponse> {
    let id = c.id.clone();
    let fail = |message: String| {
        if let Some(dir) = &c.cgroup_dir {
            let _ = crate::cgroup::signal_all(dir, nix::sys::signal::Signal::SIGKILL);
        }
        c.mark_exited(128, now_ns());
        Error::StartFailed {
            id: id.clone(),
            message,
        }
    };
    let log = p.bundle.join("restore.log");
    let pidfile = p.bundle.join("restore.pid");
    let setup_log = p.bundle.join("restore-setup.log");
    let _ = std::fs::remove_file(&pidfile);
    let spawned = spawn_criu(
        &p,
        &c.spec,
        pod,
        c.cgroup_dir.as_deref(),
        &log,
        &pidfile,
        &setup_log,
    );
    let criu_pid = match spawned {
        Ok(pid) => pid,
        Err(e) => return Err(fail(format!("run criu: {e}"))),
    };
    let exit = match tokio::time::timeout(CRIU_TIMEOUT, pod.reaper.wait(criu_pid)).await {
        Ok(exit) => exit,
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(criu_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let reaper = pod.reaper.clone();
            tokio::spawn(async move { reaper.wait(criu_pid).await });
            return Err(fail(format!(
                "criu restore did not finish within {CRIU_TIMEOUT:?}"
            )));
        }
    };
    // The restored process holds its stdio now (or nobody does).
    let Pending {
        child_stdio,
        stdout,
        stderr,
        ..
    } = p;
    drop(child_stdio);
    if exit.code != 0 {
        return Err(fail(format!(
            "criu restore failed (exit {}): {}",
            exit.code,
            failure_lines(&log, &setup_log)
        )));
    }
    let pid = match read_pidfile(&pidfile) {
        Ok(pid) => pid,
        Err(e) => return Err(fail(e)),
    };
    let started_at = now_ns();
    // Gone already (reaped, its exit kept by the reaper): no pidfd, the
    // exit watch below still collects it.
    let pidfd = berth_sys::pidfd::open(pid).ok();
    let restored = Arc::new(Container::new(Created {
        id: id.clone(),
        pid,
        pidfd,
        cgroup_dir: c.cgroup_dir.clone(),
        spec: c.spec.clone(),
        log: c.log.clone(),
        attach: c.attach.clone(),
        start_pipe: None,
        sync_pipe: None,
        hooks: None,
        restore: None,
    }));
    restored.mark_started(started_at).map_err(Error::WrongPhase)?;
    pod.table.replace(restored.clone());
    let fanout = restored.attach.fanout.clone();
    let copiers = vec![
        spawn_copier(stdout, Stream::Stdout, restored.log.clone(), fanout.clone()),
        spawn_copier(stderr, Stream::Stderr, restored.log.clone(), fanout),
    ];
    tokio::spawn(crate::create::watch_exit(pod.reaper.clone(), restored, copiers));
    tracing::info!(container = %id, pid, "container restored");
    Ok(StartResponse {
        pid: pid as u32,
        started_at,
        identity: None,
        steps: Vec::new(),
        // The handler stamps its own entry and exit (server.rs).
        ..Default::default()
    })
}

/// The restored root task's pid CRIU wrote.
fn read_pidfile(path: &Path) -> std::result::Result<i32, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{} holds no pid: {:?}", path.display(), text.trim()))
}

/// The `--external mnt[..]` arguments: every bind mount of the spec by
/// its destination (the key the dump gave the mount it replaces) and every
/// masked path bound from /dev/null, and the default device nodes.
pub fn external_mounts(spec: &Spec, cgroup_dir: Option<&Path>) -> Vec<String> {
    let mut out = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|o| o == "bind" || o == "rbind");
        if let (true, Some(src)) = (bind, m.source()) {
            out.push(format!("mnt[{}]:{}", m.destination().display(), src.display()));
        }
        // Without a cgroup namespace the container's cgroup2 mount shows
        // only its own cgroup (mountinfo root not "/"): the dump made it
        // external, and the new container's cgroup dir takes its place.
        let cgroup_fs = matches!(m.typ().as_deref(), Some("cgroup") | Some("cgroup2"));
        if let (true, Some(dir)) = (cgroup_fs, cgroup_dir) {
            out.push(format!("mnt[{}]:{}", m.destination().display(), dir.display()));
        }
    }
    let masked = spec
        .linux()
        .as_ref()
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default();
    for p in masked {
        out.push(format!("mnt[{p}]:/dev/null"));
    }
    // The device nodes init bound from the node's /dev into every
    // container before it made them with mknod: not in the spec, but
    // external mounts of a dump taken then (CRIU passes over a key no
    // mount of the dump has).
    for (name, ..) in crate::init::DEFAULT_DEVICES {
        out.push(format!("mnt[/dev/{name}]:/dev/{name}"));
    }
    out
}

/// The namespace file of `kind` the spec joins by path, if any.
fn ns_path(spec: &Spec, kind: LinuxNamespaceType) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == kind)?
        .path()
        .clone()
}

/// The fds CRIU inherits, by the key each replaces.
struct Inherited {
    /// (fd, key).
    fds: Vec<(RawFd, String)>,
}

/// CRIU's command line for a restore.
fn criu_args(
    p: &Pending,
    spec: &Spec,
    cgroup_dir: Option<&Path>,
    log: &Path,
    pidfile: &Path,
    inherited: &Inherited,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "restore".into(),
        "--images-dir".into(),
        p.images_dir.display().to_string(),
        "--root".into(),
        p.bundle.join("rootfs").display().to_string(),
        "--restore-detached".into(),
        "--restore-sibling".into(),
        "--pidfile".into(),
        pidfile.display().to_string(),
        // Joined before exec: the restored tasks stay where CRIU is.
        "--manage-cgroups=ignore".into(),
        "--tcp-established".into(),
        "--file-locks".into(),
        "-v4".into(),
        "--log-file".into(),
        log.display().to_string(),
    ];
    for (fd, key) in &inherited.fds {
        args.push("--inherit-fd".into());
        args.push(format!("fd[{fd}]:{key}"));
    }
    for e in external_mounts(spec, cgroup_dir) {
        args.push("--external".into());
        args.push(e);
    }
    args
}

/// Forks CRIU as the shim's child: in a mount namespace of its own with
/// the container's rootfs mounted, in the container's cgroup, holding the
/// fds it hands on. Returns its pid (the reaper collects its exit).
///
/// That namespace is made rslave, not rprivate: the container's binds from
/// the node were slaves of the node's mounts, and CRIU restores that by
/// copying the sharing of the mount holding each external source
/// (MOVE_MOUNT_SET_GROUP), which fails on a private one. As a slave,
/// nothing mounted in it reaches the node.
fn spawn_criu(
    p: &Pending,
    spec: &Spec,
    pod: &Pod,
    cgroup_dir: Option<&Path>,
    log: &Path,
    pidfile: &Path,
    setup_log: &Path,
) -> std::io::Result<i32> {
    let open_ns = |path: &Path| File::open(path);
    let netns = ns_path(spec, LinuxNamespaceType::Network)
        .map(|p| open_ns(&p))
        .transpose()?;
    // A pod's shared PID namespace (the dump named it `pid`).
    let pidns = match ns_path(spec, LinuxNamespaceType::Pid) {
        Some(path) => Some(open_ns(&path)?),
        None if !crate::create::wants_own_pid_ns(spec) => {
            pod.pid_ns.as_ref().map(|f| f.try_clone()).transpose()?
        }
        None => None,
    };
    let mut inherited = Inherited { fds: Vec::new() };
    if let Some(f) = &netns {
        inherited.fds.push((f.as_raw_fd(), "net".into()));
    }
    if let Some(f) = &pidns {
        inherited.fds.push((f.as_raw_fd(), "pid".into()));
    }
    for (name, fd) in p.stdio_names.iter().zip(&p.child_stdio) {
        if !name.is_empty() && !inherited.fds.iter().any(|(_, k)| k == name) {
            inherited.fds.push((fd.as_raw_fd(), name.clone()));
        }
    }
    let args = criu_args(p, spec, cgroup_dir, log, pidfile, &inherited);
    tracing::info!(args = ?args, "criu restore");
    let cgroup_procs = cgroup_dir
        .map(|d| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))
        })
        .transpose()?;
    let cstr = |s: &str| CString::new(s).map_err(std::io::Error::other);
    let target = cstr(&p.bundle.join("rootfs").to_string_lossy())?;
    // As init mounts them: flags parsed out, an overlay's long lowerdir
    // list shortened to /proc/self/fd/N of dirs held open here (the child
    // has the same fds).
    let mut lower_fds = Vec::new();
    let mut mounts: Vec<(CString, CString, libc::c_ulong, CString)> = Vec::new();
    for m in &p.rootfs {
        let parsed = crate::init::mounts::parse_options(&m.options);
        let (data, fds) =
            crate::init::mounts::shorten_lowerdirs(&parsed.data, |d| File::open(d).map(OwnedFd::from))?;
        lower_fds.extend(fds);
        mounts.push((
            cstr(&m.source)?,
            cstr(&m.r#type)?,
            parsed.flags.bits(),
            cstr(&data)?,
        ));
    }
    let root = cstr("/")?;
    let keep: Vec<RawFd> = inherited.fds.iter().map(|(fd, _)| *fd).collect();
    let cg_fd = cgroup_procs.as_ref().map(|f| f.as_raw_fd());
    // std's spawn waits for a child whose exec failed, racing the reaper:
    // a missing binary is found here instead.
    if !p.criu.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no criu binary at {:?}", p.criu),
        ));
    }
    let stderr = File::create(setup_log)?;
    let mut cmd = std::process::Command::new(&p.criu);
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    // SAFETY: runs in the forked child before exec, using only
    // async-signal-safe calls (unshare, mount, write, fcntl, _exit) on data
    // prepared before the fork; nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                setup_failed(b"unshare(CLONE_NEWNS)");
            }
            let null = std::ptr::null();
            if libc::mount(
                null,
                root.as_ptr(),
                null,
                libc::MS_REC | libc::MS_SLAVE,
                null as _,
            ) != 0
            {
                setup_failed(b"make / rslave");
            }
            for (source, fstype, flags, data) in &mounts {
                if libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    *flags,
                    data.as_ptr() as _,
                ) != 0
                {
                    setup_failed(b"mount the container's rootfs");
                }
            }
            if let Some(fd) = cg_fd {
                if libc::write(fd, b"0".as_ptr() as _, 1) != 1 {
                    setup_failed(b"join the container's cgroup");
                }
            }
            for fd in &keep {
                let flags = libc::fcntl(*fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(*fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) != 0 {
                    setup_failed(b"keep an inherited fd open");
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(lower_fds);
    Ok(child.id() as i32)
}

/// In the forked child: says which step failed, with errno, on stderr
/// (the setup log) and exits; never returns into std's spawn, whose wait
/// would race the shim's reaper.
fn setup_failed(what: &[u8]) -> ! {
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is ours.
    unsafe {
        let errno = *libc::__errno_location();
        let mut buf = [0u8; 16];
        let mut n = errno.unsigned_abs();
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 || i == 0 {
                break;
            }
        }
        let pre = b"Error: restore setup: ";
        libc::write(2, pre.as_ptr() as _, pre.len());
        libc::write(2, what.as_ptr() as _, what.len());
        let mid = b" failed, errno ";
        libc::write(2, mid.as_ptr() as _, mid.len());
        libc::write(2, buf[i..].as_ptr() as _, buf.len() - i);
        libc::write(2, b"\n".as_ptr() as _, 1);
        libc::_exit(126);
    }
}

/// Why CRIU failed: the `Error` lines of its log (else of the setup log),
/// at most five, and the last lines of the log, whose path is named.
fn failure_lines(log: &Path, setup_log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let setup = std::fs::read_to_string(setup_log).unwrap_or_default();
    let mut errors: Vec<&str> = text.lines().filter(|l| l.contains("Error")).take(5).collect();
    errors.extend(setup.lines().filter(|l| !l.trim().is_empty()).take(5));
    // A mount CRIU has no source for: what its log says about that id.
    let unmapped = errors.iter().find_map(|l| {
        let rest = l.split("No mapping for ").nth(1)?;
        rest.split(':').next().map(str::to_string)
    });
    if let Some(id) = unmapped {
        let about: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&format!(" {id} ")) || l.contains(&format!(" {id}:")))
            .take(8)
            .collect();
        errors.push("lines about that mount:");
        errors.extend(about);
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    format!(
        "{}; the tail of {}:\n{tail}",
        if errors.is_empty() {
            "no Error line".to_string()
        } else {
            errors.join("; ")
        },
        log.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> Spec {
        serde_json::from_value(v).unwrap()
    }

    /// Binds are named by their destination with the new source; masked
    /// paths come from /dev/null; the default device nodes from the node's
    /// /dev; kernel filesystems are CRIU's own.
    #[test]
    fn binds_and_masked_paths_are_the_external_mounts() {
        let s = spec(json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/pods/p2/hosts", "options": ["rbind", "ro"]},
                {"destination": "/dev/shm", "source": "/pods/p2/shm", "options": ["bind"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}
            ],
            "linux": {"maskedPaths": ["/proc/kcore"]}
        }));
        assert_eq!(
            external_mounts(&s, Some(Path::new("/cg/pod/c2"))),
            [
                "mnt[/etc/hosts]:/pods/p2/hosts",
                "mnt[/dev/shm]:/pods/p2/shm",
                "mnt[/sys/fs/cgroup]:/cg/pod/c2",
                "mnt[/proc/kcore]:/dev/null",
                "mnt[/dev/null]:/dev/null",
                "mnt[/dev/zero]:/dev/zero",
                "mnt[/dev/full]:/dev/full",
                "mnt[/dev/random]:/dev/random",
                "mnt[/dev/urandom]:/dev/urandom",
                "mnt[/dev/tty]:/dev/tty"
            ]
        );
    }

    #[test]
    fn a_pidfile_must_hold_a_positive_pid() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pid");
        std::fs::write(&p, "4321\n").unwrap();
        assert_eq!(read_pidfile(&p), Ok(4321));
        for bad in ["", "0", "-1", "12x"] {
            std::fs::write(&p, bad).unwrap();
            assert!(read_pidfile(&p).is_err(), "{bad:?}");
        }
        assert!(read_pidfile(&d.path().join("missing")).is_err());
    }

    #[test]
    fn failure_lines_carry_the_error_lines_and_the_tail() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("restore.log");
        std::fs::write(
            &log,
            "(0.1) ok\n(0.2) Error (criu/mount.c:1): No mapping for /etc/hosts\n(0.3) done\n",
        )
        .unwrap();
        let m = failure_lines(&log, &d.path().join("none"));
        assert!(
            m.starts_with("(0.2) Error (criu/mount.c:1): No mapping for /etc/hosts;"),
            "{m}"
        );
        assert!(m.contains("(0.3) done"), "{m}");
        std::fs::write(
            d.path().join("setup"),
            "Error: restore setup: mount failed, errno 2\n",
        )
        .unwrap();
        let m = failure_lines(&d.path().join("none"), &d.path().join("setup"));
        assert!(m.contains("errno 2"), "{m}");
    }
}
