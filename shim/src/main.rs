//! `berth-shim`: the per-pod process that owns a pod's containers.
//!
//! berthd starts one shim per pod sandbox. The shim creates container
//! processes, keeps their stdio flowing into the CRI log files, reaps them and
//! keeps their exit status until berthd asks for it. Because the shim is its own
//! session leader (not a child berthd waits on), berthd can restart without
//! touching a running container.
//!
//! The same binary has a second role, `berth-shim init`: the single-threaded
//! first stage of every container (like `runc init`). It is exec'd inside the
//! container's fresh PID namespace, joins the other namespaces, builds the
//! root filesystem, parks until `Start`, then execs the user's process.

mod attach;
mod capture;
mod cgroup;
mod create;
mod error;
mod exec;
mod fast;
mod fdio;
mod hooks;
mod init;
mod lifecycle;
mod logs;
mod pod;
mod pod_init;
mod ready;
mod reaper;
mod restore;
mod restore_pending;
mod server;
mod spawn;
mod stdio;
mod stop_signal;
mod stream;
mod sync;
mod table;
mod threads;
mod userns;
mod zygote;

use std::path::PathBuf;

/// Command line of `berth-shim serve`.
#[derive(Debug)]
struct ServeArgs {
    sandbox_id: String,
    socket: PathBuf,
    /// berthd unshared a PID namespace for our children: start its PID 1.
    pod_pid_ns: bool,
    /// Where cgroup v2 is mounted (berthd's `cgroup_root`).
    cgroup_root: PathBuf,
    /// An inherited pipe to write one byte to once the socket is bound.
    ready_fd: Option<std::os::fd::RawFd>,
}

fn parse_serve(args: &[String]) -> anyhow::Result<ServeArgs> {
    let mut sandbox_id = None;
    let mut socket = None;
    let mut pod_pid_ns = false;
    let mut cgroup_root = PathBuf::from(berth_sys::cgroup::DEFAULT_ROOT);
    let mut ready_fd = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--id" => sandbox_id = it.next().cloned(),
            "--socket" => socket = it.next().map(PathBuf::from),
            "--pod-pid-ns" => pod_pid_ns = true,
            "--cgroup-root" => {
                cgroup_root = it
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| anyhow::anyhow!("--cgroup-root needs a path"))?
            }
            "--ready-fd" => {
                ready_fd = Some(
                    it.next()
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| anyhow::anyhow!("--ready-fd needs a descriptor number"))?,
                )
            }
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    Ok(ServeArgs {
        sandbox_id: sandbox_id.ok_or_else(|| anyhow::anyhow!("--id is required"))?,
        socket: socket.ok_or_else(|| anyhow::anyhow!("--socket is required"))?,
        pod_pid_ns,
        cgroup_root,
        ready_fd,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // Never returns: execs the container process or exits with an error.
        Some("init") => init::main(),
        Some("pod-init") => pod_init::main(),
        Some("exec") => init::exec::main(),
        Some("zygote") => zygote::server::main(),
        Some("serve") => {
            let serve = match parse_serve(&args[2..]) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("berth-shim: {e}");
                    std::process::exit(2);
                }
            };
            // First thing: close-on-exec before any child is started.
            let ready = match serve.ready_fd.map(ready::take).transpose() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("berth-shim: --ready-fd: {e}");
                    std::process::exit(2);
                }
            };
            hooks::remember_runtime_namespaces();
            if let Err(e) = server::run(
                serve.sandbox_id,
                serve.socket,
                serve.pod_pid_ns,
                serve.cgroup_root,
                ready,
            ) {
                eprintln!("berth-shim: {e:#}");
                std::process::exit(1);
            }
        }
        Some("--version") => println!("berth-shim {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!(
                "usage: berth-shim serve --id SANDBOX_ID --socket PATH [--pod-pid-ns] [--cgroup-root PATH] [--ready-fd N]\n       \
                 berth-shim init   (internal: container first stage)\n       \
                 berth-shim --version"
            );
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// berthd passes its cgroup root; a shim started without one (by an
    /// older berthd) uses the standard mount point.
    #[test]
    fn serve_takes_the_cgroup_root_from_berthd() {
        let s = parse_serve(&args(&["--id", "p1", "--socket", "/run/s.sock"])).unwrap();
        assert_eq!(s.cgroup_root, PathBuf::from("/sys/fs/cgroup"));
        assert!(!s.pod_pid_ns);
        let s = parse_serve(&args(&[
            "--id",
            "p1",
            "--socket",
            "/run/s.sock",
            "--pod-pid-ns",
            "--cgroup-root",
            "/mnt/cg2",
        ]))
        .unwrap();
        assert_eq!(
            (s.sandbox_id.as_str(), s.cgroup_root),
            ("p1", PathBuf::from("/mnt/cg2"))
        );
        assert!(s.pod_pid_ns);
        let e = parse_serve(&args(&["--id", "p1", "--socket", "/s", "--cgroup-root"])).unwrap_err();
        assert_eq!(e.to_string(), "--cgroup-root needs a path");
        assert!(parse_serve(&args(&["--id", "p1"])).is_err());
        assert_eq!(s_ready(&["--ready-fd", "3"]), Some(3));
        assert_eq!(s_ready(&[]), None);
        let e = parse_serve(&args(&["--id", "p1", "--socket", "/s", "--ready-fd", "x"])).unwrap_err();
        assert_eq!(e.to_string(), "--ready-fd needs a descriptor number");
    }

    fn s_ready(extra: &[&str]) -> Option<std::os::fd::RawFd> {
        let mut a = vec!["--id", "p1", "--socket", "/s"];
        a.extend_from_slice(extra);
        parse_serve(&args(&a)).unwrap().ready_fd
    }
}
