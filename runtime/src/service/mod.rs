//! berthd as a system service: readiness, stopping and watchdog
//! notifications to systemd, journald-shaped logs, SIGHUP reloads, and
//! reboot detection.

pub mod boot;
pub mod journal;
pub mod logging;
pub mod notify;
pub mod reload;

use std::time::Duration;

/// What the service manager handed berthd through its environment.
#[derive(Debug, Default)]
pub struct ServiceManager {
    notifier: Option<notify::Notifier>,
    watchdog: Option<Duration>,
    /// stderr is journald's stream.
    pub journald: bool,
}

/// The variables systemd sets for berthd alone; shims and their
/// containers must not inherit them (a shim would otherwise be able to
/// signal readiness on berthd's behalf).
const SERVICE_ENV: &[&str] = &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

impl ServiceManager {
    /// Reads the environment and removes the notification variables from
    /// it. Call before any thread starts (environment writes are not
    /// thread-safe).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok();
        let notifier = match var("NOTIFY_SOCKET").map(|v| notify::Notifier::new(&v)) {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                eprintln!("berthd: NOTIFY_SOCKET unusable: {e}");
                None
            }
            None => None,
        };
        let watchdog = notify::watchdog_interval(
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
        .filter(|_| notifier.is_some());
        let journald = journal::is_journal_stream(var("JOURNAL_STREAM").as_deref(), std::io::stderr());
        for k in SERVICE_ENV {
            std::env::remove_var(k);
        }
        ServiceManager {
            notifier,
            watchdog,
            journald,
        }
    }

    fn send(&self, state: &str) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.notify(state) {
                tracing::warn!(state, error = %e, "sd_notify failed");
            }
        }
    }

    /// Recovery is done and the CRI socket listens.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Pings the watchdog at half its interval from a runtime task, so a
    /// wedged runtime stops the pings and systemd restarts berthd.
    pub fn spawn_watchdog(self: &std::sync::Arc<Self>) {
        let Some(every) = self.watchdog else { return };
        tracing::info!(interval_ms = every.as_millis() as u64, "systemd watchdog enabled");
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                me.send("WATCHDOG=1");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    /// The unit the package installs says what keeps pods alive across
    /// berthd restarts (issue 21 lists these).
    #[test]
    fn the_unit_file_keeps_pods_out_of_berthds_stop() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/berthd.service");
        let unit = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = unit.lines().map(str::trim).collect();
        for want in [
            "Type=notify",
            "Delegate=yes",
            "KillMode=process",
            "Restart=always",
            "OOMScoreAdjust=-999",
            "LimitNOFILE=1048576",
            "TasksMax=infinity",
            "WatchdogSec=60",
            "ExecStart=/usr/bin/berthd",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ] {
            assert!(lines.contains(&want), "berthd.service lacks {want}");
        }
    }
}
