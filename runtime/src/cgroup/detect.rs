//! Which cgroup driver berthd uses when the config leaves `cgroup_driver`
//! unset (or `"auto"`): systemd when the node was booted with systemd
//! (`/run/systemd/system` is a directory, the test `sd_booted(3)` makes)
//! and systemd answers over D-Bus; cgroupfs otherwise. An explicit setting
//! is honoured as written, so an explicit systemd without systemd still
//! fails at start. kubelet reads the result through RuntimeConfig.

use std::future::Future;
use std::path::Path;

use super::driver::CgroupDriver;
use crate::error::Result;

/// The directory systemd creates early at boot when it is PID 1.
pub const BOOTED_MARKER: &str = "/run/systemd/system";

/// Whether this node was booted with systemd as init (`sd_booted(3)`).
pub fn booted_with_systemd() -> bool {
    std::fs::symlink_metadata(Path::new(BOOTED_MARKER)).is_ok_and(|m| m.is_dir())
}

/// The driver berthd runs with, its D-Bus connection when that is systemd,
/// and why it was chosen (for the start-up log).
#[derive(Debug)]
pub struct Chosen<T> {
    /// Never [`CgroupDriver::Auto`].
    pub driver: CgroupDriver,
    /// The connection the systemd driver uses.
    pub systemd: Option<T>,
    /// One sentence for the log.
    pub reason: String,
}

/// Resolves `setting` to the driver berthd runs with. `booted` is
/// [`booted_with_systemd`]; `connect` reaches systemd over D-Bus and is
/// called only when the systemd driver is configured or may be picked.
pub async fn choose<T, F, Fut>(setting: CgroupDriver, booted: bool, connect: F) -> Result<Chosen<T>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let chosen = |driver, systemd, reason: String| Chosen {
        driver,
        systemd,
        reason,
    };
    Ok(match setting {
        CgroupDriver::Cgroupfs => chosen(CgroupDriver::Cgroupfs, None, "configured".into()),
        CgroupDriver::Systemd => chosen(CgroupDriver::Systemd, Some(connect().await?), "configured".into()),
        CgroupDriver::Auto if !booted => chosen(
            CgroupDriver::Cgroupfs,
            None,
            format!("detected: {BOOTED_MARKER} is absent, the node was not booted with systemd"),
        ),
        CgroupDriver::Auto => match connect().await {
            Ok(sd) => chosen(
                CgroupDriver::Systemd,
                Some(sd),
                "detected: booted with systemd and systemd answers over D-Bus".into(),
            ),
            Err(e) => chosen(
                CgroupDriver::Cgroupfs,
                None,
                format!("detected: booted with systemd, but D-Bus does not answer ({e})"),
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::error::Error;

    fn down() -> Error {
        Error::FailedPrecondition("no bus".into())
    }

    /// Runs `choose` with a fake connection that answers or not, and says
    /// whether it was asked.
    fn run(setting: CgroupDriver, booted: bool, answers: bool) -> (Result<Chosen<&'static str>>, bool) {
        let asked = AtomicBool::new(false);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let r = rt.block_on(choose(setting, booted, || async {
            asked.store(true, Ordering::SeqCst);
            if answers {
                Ok("bus")
            } else {
                Err(down())
            }
        }));
        (r, asked.load(Ordering::SeqCst))
    }

    #[test]
    fn auto_picks_systemd_when_booted_with_it_and_the_bus_answers() {
        let (r, asked) = run(CgroupDriver::Auto, true, true);
        let c = r.unwrap();
        assert!(asked);
        assert_eq!(c.driver, CgroupDriver::Systemd);
        assert_eq!(c.systemd, Some("bus"));
        assert!(c.reason.contains("D-Bus"), "{}", c.reason);
    }

    #[test]
    fn auto_picks_cgroupfs_without_systemd_and_never_dials() {
        let (r, asked) = run(CgroupDriver::Auto, false, true);
        let c = r.unwrap();
        assert!(!asked);
        assert_eq!(c.driver, CgroupDriver::Cgroupfs);
        assert!(c.systemd.is_none());
        assert!(c.reason.contains(BOOTED_MARKER), "{}", c.reason);
    }

    #[test]
    fn auto_picks_cgroupfs_when_booted_with_systemd_but_the_bus_is_down() {
        let (r, _) = run(CgroupDriver::Auto, true, false);
        let c = r.unwrap();
        assert_eq!(c.driver, CgroupDriver::Cgroupfs);
        assert!(c.systemd.is_none());
        assert!(c.reason.contains("no bus"), "{}", c.reason);
    }

    #[test]
    fn explicit_settings_are_honoured() {
        let (r, asked) = run(CgroupDriver::Cgroupfs, true, true);
        assert_eq!(r.unwrap().driver, CgroupDriver::Cgroupfs);
        assert!(!asked, "explicit cgroupfs never dials systemd");
        let (r, _) = run(CgroupDriver::Systemd, false, true);
        assert_eq!(r.unwrap().driver, CgroupDriver::Systemd);
        let (r, _) = run(CgroupDriver::Systemd, true, false);
        assert!(
            matches!(r, Err(Error::FailedPrecondition(_))),
            "explicit systemd without systemd fails"
        );
    }

    #[test]
    fn the_setting_reads_auto_when_unset() {
        assert_eq!(CgroupDriver::default(), CgroupDriver::Auto);
        let d: CgroupDriver = serde_json::from_str("\"auto\"").unwrap();
        assert_eq!(d, CgroupDriver::Auto);
    }
}
