//! The shim's side of a container's hooks: the createRuntime round trip
//! during Create, and the poststart and poststop hooks of a container in
//! the table. Apart from `hooks.rs` so the hook basics there import
//! neither the init stage nor the table (no cycle).

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;

use oci_spec::runtime::Hook;

use super::{run, Moment, State, ASK, GO};
use crate::init::InitConfig;
use crate::reaper::Reaper;
use crate::table::Container;

/// What Create needs for the createRuntime round trip (see [`ASK`]).
pub struct AtCreate {
    hooks: Vec<Hook>,
    state: State,
    pid: i32,
    reaper: Reaper,
    /// A copy of the start pipe (init's go comes on it); an error becomes
    /// Create's, when init asks.
    start: std::io::Result<File>,
}

impl AtCreate {
    /// None when the spec has no createRuntime hooks (init will not ask).
    pub fn new(cfg: &InitConfig, start: &OwnedFd, pid: i32, reaper: &Reaper) -> Option<Self> {
        let hooks = Moment::CreateRuntime.hooks(&cfg.spec);
        let state = cfg.hook_state.clone().filter(|_| !hooks.is_empty())?;
        Some(AtCreate {
            hooks,
            state,
            pid,
            reaper: reaper.clone(),
            start: start.try_clone().map(File::from),
        })
    }

    /// Create's setup report: reads `sync` like [`crate::sync::read`] up
    /// to init's ready report; when init asks, runs the hooks and answers
    /// [`GO`]. A hook failure becomes init's failure report, so Create
    /// fails as for any setup error (and kills init). On a blocking thread.
    pub fn read_setup(self, sync: &mut File) -> std::io::Result<Vec<u8>> {
        let got = crate::sync::read_until(sync, &[crate::sync::READY, ASK])?;
        if got != ASK {
            return Ok(got);
        }
        let mut start = match self.start {
            Ok(f) => f,
            Err(e) => return Ok(crate::sync::failure_report(&format!("createRuntime hooks: {e}"))),
        };
        let ran = tokio::runtime::Handle::current().block_on(run(
            Moment::CreateRuntime,
            &self.hooks,
            &self.state,
            self.pid,
            &self.reaper,
        ));
        if let Err(message) = ran {
            return Ok(crate::sync::failure_report(&message));
        }
        start.write_all(GO)?;
        crate::sync::read(sync, true)
    }
}

/// The poststart hooks of a started container; failures are logged.
pub async fn after_start(c: &Container) {
    logged(Moment::Poststart, c, c.pid).await;
}

/// The poststop hooks of a reaped container; failures are logged.
pub async fn after_exit(c: &Container) {
    logged(Moment::Poststop, c, 0).await;
}

async fn logged(moment: Moment, c: &Container, pid: i32) {
    let Some(a) = &c.hooks else {
        return;
    };
    let hooks = moment.hooks(&c.spec);
    if let Err(e) = run(moment, &hooks, &a.state, pid, &a.reaper).await {
        tracing::warn!(container = %c.id, error = %e, "hook failed");
    }
}
