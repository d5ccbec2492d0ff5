//! OCI hooks (runtime-spec config.md, "POSIX-platform Hooks"), run at
//! their moments. berthd puts them in the spec (CDI devices bring them).
//!
//! | moment            | run by | namespaces  | when                                          |
//! |-------------------|--------|-------------|-----------------------------------------------|
//! | `createRuntime`   | shim   | runtime's   | Create, namespaces made, before pivot_root    |
//! | `createContainer` | init   | container's | Create, right after, before pivot_root        |
//! | `startContainer`  | init   | container's | Start, before the user's process is exec'd    |
//! | `poststart`       | shim   | runtime's   | Start, after the exec, before Start returns   |
//! | `poststop`        | shim   | runtime's   | once the process is reaped, before its exit is reported |
//!
//! Deprecated `prestart` hooks run with (before) `createRuntime`, as runc
//! runs them. For `createRuntime` the parked init asks on the sync pipe
//! ([`ASK`]) and waits for [`GO`] on its start pipe, so the hooks see the
//! container's namespaces with the root not yet pivoted.
//!
//! The runtime's namespaces are berthd's: the shim lives in the pod's
//! network, IPC and UTS namespaces, so a hook it runs first joins the ones
//! berthd had when it started the shim ([`remember_runtime_namespaces`]).
//!
//! Each hook gets the container's OCI state JSON on stdin and exactly the
//! hook's `args` and `env` (no shell, no PATH lookup: `path` is absolute),
//! no other descriptor of the shim or init (all marked close-on-exec), and
//! is reaped. A hook that outlives its `timeout` is killed. A failure of the
//! first three moments fails Create or Start with the hook's exit and
//! output; poststart and poststop failures are logged.

mod container;
pub(crate) mod proc;

pub use container::{after_exit, after_start, AtCreate};

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use oci_spec::runtime::{Hook, Spec};
use serde::{Deserialize, Serialize};

use crate::reaper::Reaper;

/// init -> shim on the sync pipe: "run the createRuntime hooks now".
pub const ASK: &[u8] = b"H";
/// shim -> init on the start pipe: "they ran, go on".
pub const GO: &[u8] = b"C";

/// A moment at which hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Create, in the runtime's namespaces (with any `prestart`).
    CreateRuntime,
    /// Create, in the container's namespaces.
    CreateContainer,
    /// Start, in the container's namespaces.
    StartContainer,
    /// After the start.
    Poststart,
    /// After the exit.
    Poststop,
}

impl Moment {
    /// The name the runtime spec gives it (errors and logs say it).
    pub fn name(self) -> &'static str {
        match self {
            Moment::CreateRuntime => "createRuntime",
            Moment::CreateContainer => "createContainer",
            Moment::StartContainer => "startContainer",
            Moment::Poststart => "poststart",
            Moment::Poststop => "poststop",
        }
    }

    /// The spec's hooks for this moment, in order.
    pub fn hooks(self, spec: &Spec) -> Vec<Hook> {
        let Some(h) = spec.hooks() else {
            return Vec::new();
        };
        let list = |l: &Option<Vec<Hook>>| l.clone().unwrap_or_default();
        match self {
            #[allow(deprecated)]
            Moment::CreateRuntime => [list(h.prestart()), list(h.create_runtime())].concat(),
            Moment::CreateContainer => list(h.create_container()),
            Moment::StartContainer => list(h.start_container()),
            Moment::Poststart => list(h.poststart()),
            Moment::Poststop => list(h.poststop()),
        }
    }

    /// The container's `status` in the state hooks get at this moment.
    fn status(self) -> &'static str {
        match self {
            Moment::CreateRuntime | Moment::CreateContainer => "creating",
            Moment::StartContainer => "created",
            Moment::Poststart => "running",
            Moment::Poststop => "stopped",
        }
    }
}

/// The container's state as the runtime spec defines it (runtime.md
/// "State"); what every hook reads on stdin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The spec version the state follows.
    pub oci_version: String,
    /// The container's id.
    pub id: String,
    /// `creating`, `created`, `running` or `stopped`.
    pub status: String,
    /// The container's process as the node (the runtime's PID namespace)
    /// sees it; 0 once it is gone.
    pub pid: i32,
    /// Absolute path of the bundle.
    pub bundle: String,
    /// The spec's annotations.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

impl State {
    /// The state of container `id` with bundle `bundle`, or None when its
    /// spec has no hooks (nothing to carry).
    pub fn for_spec(spec: &Spec, id: &str, bundle: &str) -> Option<State> {
        let any = [
            Moment::CreateRuntime,
            Moment::CreateContainer,
            Moment::StartContainer,
            Moment::Poststart,
            Moment::Poststop,
        ]
        .into_iter()
        .any(|m| !m.hooks(spec).is_empty());
        any.then(|| State {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            status: String::new(),
            pid: 0,
            bundle: bundle.to_string(),
            annotations: spec.annotations().clone().unwrap_or_default(),
        })
    }

    pub(crate) fn at(&self, moment: Moment, pid: i32) -> State {
        State {
            status: moment.status().to_string(),
            pid,
            ..self.clone()
        }
    }
}

/// Runs `hooks` one after the other from the shim; the first failure
/// stops the rest and is the error, naming the moment and hook.
pub async fn run(
    moment: Moment,
    hooks: &[Hook],
    state: &State,
    pid: i32,
    reaper: &Reaper,
) -> Result<(), String> {
    let state = state.at(moment, pid);
    for (i, hook) in hooks.iter().enumerate() {
        let fail = |what: String| failure(moment, i, hook, &what);
        let spawned = proc::spawn(hook, &state, runtime_namespaces()).map_err(|e| fail(e.to_string()))?;
        let child = spawned.pid;
        let timeout = proc::timeout(hook);
        let exit = match timeout {
            None => reaper.wait(child).await,
            Some(t) => match tokio::time::timeout(t, reaper.wait(child)).await {
                Ok(exit) => exit,
                Err(_) => {
                    if let Some(fd) = &spawned.pidfd {
                        let _ = berth_sys::pidfd::send_signal(fd.as_fd(), libc::SIGKILL);
                    }
                    reaper.wait(child).await;
                    return Err(fail(proc::timed_out(t, &spawned.output)));
                }
            },
        };
        if exit.code != 0 {
            return Err(fail(proc::exit_text(exit.code, &spawned.output)));
        }
    }
    Ok(())
}

pub(crate) fn failure(moment: Moment, i: usize, hook: &Hook, what: &str) -> String {
    format!(
        "{} hook #{} ({}): {what}",
        moment.name(),
        i + 1,
        hook.path().display()
    )
}

/// A created container's hooks state, for its poststart and poststop.
pub struct Attached {
    state: State,
    reaper: Reaper,
}

impl Attached {
    /// None when the spec has no hooks.
    pub fn new(state: Option<State>, reaper: &Reaper) -> Option<Arc<Self>> {
        state.map(|state| {
            Arc::new(Attached {
                state,
                reaper: reaper.clone(),
            })
        })
    }
}

/// berthd's network, IPC and UTS namespaces, opened once at start-up.
static RUNTIME_NS: OnceLock<Vec<OwnedFd>> = OnceLock::new();

/// Opens the namespaces of the shim's parent (berthd, which made the
/// pod's for the shim) for the hooks run in the runtime's namespaces.
/// Called once, first thing in `serve`, while the parent is surely berthd;
/// without them (it is already gone) hooks run in the shim's own.
pub fn remember_runtime_namespaces() {
    let parent = nix::unistd::getppid();
    let mut fds = Vec::new();
    for ns in ["net", "ipc", "uts"] {
        match File::open(format!("/proc/{parent}/ns/{ns}")) {
            Ok(f) => fds.push(OwnedFd::from(f)),
            Err(e) => {
                // Before tracing is set up: stderr is the shim's log.
                eprintln!("berth-shim: cannot open berthd's {ns} namespace ({e}); hooks run in the pod's");
                fds.clear();
                break;
            }
        }
    }
    let _ = RUNTIME_NS.set(fds);
}

fn runtime_namespaces() -> &'static [OwnedFd] {
    RUNTIME_NS.get().map(Vec::as_slice).unwrap_or_default()
}

/// Longest hook output an error quotes.
const OUTPUT_QUOTED: usize = 1024;

/// How long a hook may run when its `timeout` says so.
fn seconds(t: i64) -> Option<Duration> {
    u64::try_from(t).ok().filter(|t| *t > 0).map(Duration::from_secs)
}

#[cfg(test)]
mod tests;
