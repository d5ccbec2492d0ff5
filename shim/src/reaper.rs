//! Reaps every child of the shim and keeps exit statuses until claimed.
//!
//! The shim is a child subreaper, so orphaned container processes land here
//! too. Exits are recorded by pid *before* anyone asks, so a process that dies
//! before its creator registered interest is never missed: the record simply
//! waits in the table (the rust-extensions `reap.rs` lesson).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::watch;

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// Exit code, or 128 + signal number for a signalled process (shell convention).
    pub code: i32,
    /// Unix time in nanoseconds when the shim reaped it.
    pub at_ns: i64,
}

/// Exit statuses by pid, filled by the SIGCHLD loop.
#[derive(Clone)]
pub struct Reaper {
    exits: Arc<Mutex<HashMap<i32, Exit>>>,
    generation: watch::Sender<u64>,
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts the reaping loop. Must run before
    /// the first child is spawned.
    pub fn start() -> anyhow::Result<Self> {
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let (generation, _) = watch::channel(0u64);
        let reaper = Reaper {
            exits: Arc::new(Mutex::new(HashMap::new())),
            generation,
        };
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Collects every child that has exited so far.
    fn reap_all(&self) {
        let mut reaped = false;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.record(pid.as_raw(), code);
                    reaped = true;
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.record(pid.as_raw(), 128 + sig as i32);
                    reaped = true;
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        if reaped {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    fn record(&self, pid: i32, code: i32) {
        let exit = Exit {
            code,
            at_ns: now_ns(),
        };
        let mut exits = self.exits.lock().expect("reaper lock");
        exits.insert(pid, exit);
        // Orphans re-parented to us (a container's grandchildren) exit too,
        // and nobody waits for them; an exit someone cares about is collected
        // within moments, so anything this old is dropped rather than kept
        // for the shim's whole life.
        let cutoff = now_ns() - UNCLAIMED_EXIT_TTL_NS;
        exits.retain(|_, e| e.at_ns >= cutoff);
    }

    /// Waits until `pid` has exited and takes its status out of the table.
    pub async fn wait(&self, pid: i32) -> Exit {
        let mut rx = self.generation.subscribe();
        loop {
            if let Some(e) = self.exits.lock().expect("reaper lock").remove(&pid) {
                return e;
            }
            if rx.changed().await.is_err() {
                // The loop is gone (runtime shutting down): nothing more will come.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// How long an exit nobody has waited for is kept.
const UNCLAIMED_EXIT_TTL_NS: i64 = 120 * 1_000_000_000;

/// Current unix time in nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
