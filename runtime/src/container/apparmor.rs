//! AppArmor: which profile a container runs under, checked before it is
//! created so a missing profile is a clear CreateContainer error, not a
//! failed start.
//!
//! - `Localhost` names a profile the node operator loaded; it must be loaded.
//! - `RuntimeDefault` (and no profile at all, for unprivileged containers,
//!   like the other runtimes) is Berth's own `berth-default`, loaded with
//!   `apparmor_parser` the first time a container needs it. When it cannot
//!   be loaded, RuntimeDefault is refused; no profile at all runs
//!   unconfined, with one warning.
//! - `Unconfined`, privileged containers without an explicit profile, and
//!   nodes whose kernel has AppArmor off get no profile.
//!
//! The shim applies the profile (`/proc/self/attr/apparmor/exec`) right
//! before execve, for the container's process and for every exec.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_proto::cri::security_profile::ProfileType;
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Berth's default profile name.
pub const DEFAULT_PROFILE: &str = "berth-default";

/// Berth's default profile: what Docker's and containerd's defaults deny
/// (mounts, writes to kernel tunables outside a container's own, raw
/// kernel memory, the security and firmware filesystems), everything else
/// allowed. Written without includes so it loads on a node with no
/// /etc/apparmor.d abstractions.
const DEFAULT_PROFILE_TEXT: &str = r#"
profile berth-default flags=(attach_disconnected,mediate_deleted) {
  network,
  capability,
  file,
  umount,
  signal (receive) peer=unconfined,
  signal (send,receive) peer=berth-default,
  ptrace (trace,read,tracedby,readby) peer=berth-default,
  deny mount,
  deny /proc/sys/[^kn]** w,
  deny /proc/sys/kernel/{?,??,[^s][^h][^m]**} w,
  deny /proc/sysrq-trigger rwklx,
  deny /proc/kcore rwklx,
  deny /proc/mem rwklx,
  deny /proc/kmem rwklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
}
"#;

/// The node's AppArmor, behind paths so tests can point it at a temp dir.
pub struct AppArmor {
    /// `/sys/module/apparmor/parameters/enabled` ("Y" when on).
    enabled_file: PathBuf,
    /// `/sys/kernel/security/apparmor/profiles` (one loaded profile a line).
    profiles_file: PathBuf,
    /// The `apparmor_parser` binary, for loading the default profile.
    parser: PathBuf,
    /// Whether `berth-default` is loaded, or why it could not be.
    default: Mutex<DefaultProfile>,
    /// How long a failed load is remembered before the next container
    /// tries again.
    retry_after: Duration,
}

/// How long a failed load of the default profile stands. Without it, a
/// node with AppArmor on but no working `apparmor_parser` tried again in
/// every CreateContainer: a read of the kernel's profile list and a fork
/// of berthd to run the parser, each time. A parser installed later is
/// used within this time, without a restart.
pub const RETRY_DEFAULT_PROFILE_AFTER: Duration = Duration::from_secs(60);

/// The default profile's state in this berthd.
#[derive(Debug, Default)]
struct DefaultProfile {
    loaded: bool,
    /// The last failure and when it was.
    failed: Option<(Instant, String)>,
}

impl std::fmt::Debug for AppArmor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppArmor")
            .field("enabled_file", &self.enabled_file)
            .finish()
    }
}

impl Default for AppArmor {
    fn default() -> Self {
        Self::at(
            "/sys/module/apparmor/parameters/enabled",
            "/sys/kernel/security/apparmor/profiles",
            "apparmor_parser",
        )
    }
}

impl AppArmor {
    /// AppArmor read from (and loaded with) the given files.
    pub fn at(enabled: impl Into<PathBuf>, profiles: impl Into<PathBuf>, parser: impl Into<PathBuf>) -> Self {
        AppArmor {
            enabled_file: enabled.into(),
            profiles_file: profiles.into(),
            parser: parser.into(),
            default: Mutex::new(DefaultProfile::default()),
            retry_after: RETRY_DEFAULT_PROFILE_AFTER,
        }
    }

    /// The kernel has AppArmor on.
    pub fn enabled(&self) -> bool {
        std::fs::read_to_string(&self.enabled_file).is_ok_and(|v| v.trim() == "Y")
    }

    fn loaded(&self, name: &str) -> Result<bool> {
        let list = std::fs::read_to_string(&self.profiles_file).map_err(|e| {
            Error::FailedPrecondition(format!(
                "AppArmor is on but {} is unreadable ({e}); is securityfs mounted?",
                self.profiles_file.display()
            ))
        })?;
        // Lines are `<name> (<mode>)`; names may contain spaces.
        Ok(list
            .lines()
            .any(|l| l.rsplit_once(" (").map_or(l, |(n, _)| n) == name))
    }

    /// Loads the default profile now when AppArmor is on, so that the
    /// first CreateContainer after berthd starts does not wait for
    /// `apparmor_parser` (about half a second under the test VM's
    /// emulation, all of it in that one call). A failure is kept and
    /// warned about as a CreateContainer's would be.
    pub fn preload_default(&self) {
        let _ = self.profile_for(None);
    }

    /// The profile for a container, or None for none.
    pub fn profile_for(&self, sc: Option<&cri::LinuxContainerSecurityContext>) -> Result<Option<String>> {
        let privileged = sc.is_some_and(|s| s.privileged);
        let wanted = match requested(sc)? {
            Requested::Unconfined => return Ok(None),
            Requested::Unset if privileged => return Ok(None),
            Requested::Unset => {
                if !self.enabled() {
                    return Ok(None);
                }
                // Nobody asked for confinement: a node that cannot load the
                // default (no apparmor_parser) still runs its pods, and says
                // so once. An explicit RuntimeDefault is refused instead.
                return match self.default_profile() {
                    Ok(p) => Ok(Some(p)),
                    Err(e) => {
                        static WARNED: std::sync::Once = std::sync::Once::new();
                        WARNED.call_once(|| {
                            tracing::warn!(error = %e, "AppArmor default profile unavailable; containers without a profile run unconfined")
                        });
                        Ok(None)
                    }
                };
            }
            Requested::RuntimeDefault => {
                if !self.enabled() {
                    // The runtime's default on a node without AppArmor is
                    // no profile, as for the other runtimes.
                    return Ok(None);
                }
                return self.default_profile().map(Some);
            }
            Requested::Localhost(name) => name,
        };
        if !self.enabled() {
            return Err(Error::FailedPrecondition(format!(
                "AppArmor profile {wanted:?} requested, but AppArmor is not enabled on this node"
            )));
        }
        if !self.loaded(&wanted)? {
            return Err(Error::FailedPrecondition(format!(
                "AppArmor profile {wanted:?} is not loaded (load it with apparmor_parser first)"
            )));
        }
        Ok(Some(wanted))
    }

    /// `berth-default`, loading it once if the kernel does not have it yet.
    fn default_profile(&self) -> Result<String> {
        let mut state = self.default.lock();
        if state.loaded {
            return Ok(DEFAULT_PROFILE.to_string());
        }
        if let Some((at, why)) = &state.failed {
            if at.elapsed() < self.retry_after {
                return Err(Error::FailedPrecondition(why.clone()));
            }
        }
        let load = || -> Result<()> {
            if !self.loaded(DEFAULT_PROFILE)? {
                load_profile(&self.parser, DEFAULT_PROFILE_TEXT)?;
                tracing::info!(profile = DEFAULT_PROFILE, "AppArmor default profile loaded");
            }
            Ok(())
        };
        match load() {
            Ok(()) => {
                *state = DefaultProfile {
                    loaded: true,
                    failed: None,
                };
                Ok(DEFAULT_PROFILE.to_string())
            }
            Err(e) => {
                state.failed = Some((Instant::now(), e.to_string()));
                Err(e)
            }
        }
    }
}

/// What the security context asks for.
#[derive(Debug, PartialEq, Eq)]
enum Requested {
    Unset,
    Unconfined,
    RuntimeDefault,
    Localhost(String),
}

fn requested(sc: Option<&cri::LinuxContainerSecurityContext>) -> Result<Requested> {
    let Some(sc) = sc else { return Ok(Requested::Unset) };
    if let Some(p) = &sc.apparmor {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Requested::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(Requested::Unconfined),
            // kubelet sends `localhost/<name>` (the deprecated string's
            // form) here too; the kernel knows the profile as `<name>`.
            Ok(ProfileType::Localhost) => match p.localhost_ref.strip_prefix("localhost/") {
                Some("") => Err(Error::InvalidArgument(
                    "AppArmor Localhost profile \"localhost/\" names no profile".into(),
                )),
                Some(name) => Ok(Requested::Localhost(name.to_string())),
                None if !p.localhost_ref.is_empty() => Ok(Requested::Localhost(p.localhost_ref.clone())),
                None => Err(Error::InvalidArgument(
                    "AppArmor Localhost profile without a localhost_ref".into(),
                )),
            },
            Err(_) => Err(Error::InvalidArgument(format!(
                "unknown AppArmor profile type {}",
                p.profile_type
            ))),
        };
    }
    // The deprecated string form.
    #[allow(deprecated)]
    let legacy = sc.apparmor_profile.as_str();
    match legacy {
        "" => Ok(Requested::Unset),
        "unconfined" => Ok(Requested::Unconfined),
        "runtime/default" => Ok(Requested::RuntimeDefault),
        other => match other.strip_prefix("localhost/") {
            Some(name) if !name.is_empty() => Ok(Requested::Localhost(name.to_string())),
            _ => Err(Error::InvalidArgument(format!(
                "AppArmor profile {other:?} is not understood (runtime/default, unconfined or localhost/<name>)"
            ))),
        },
    }
}

/// Loads (or replaces) a profile with `apparmor_parser -Kr`, text on stdin.
fn load_profile(parser: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new(parser)
        .args(["-K", "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::FailedPrecondition(format!(
                "AppArmor is on but its default profile cannot be loaded: run {} ({e}); install apparmor_parser or ask for an Unconfined profile",
                parser.display()
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Error::io("write the AppArmor profile to apparmor_parser", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("wait for apparmor_parser", e))?;
    if !out.status.success() {
        return Err(Error::FailedPrecondition(format!(
            "apparmor_parser could not load {DEFAULT_PROFILE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(enabled: &str, profiles: &str) -> (tempfile::TempDir, AppArmor) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("enabled"), enabled).unwrap();
        std::fs::write(dir.path().join("profiles"), profiles).unwrap();
        let aa = AppArmor::at(
            dir.path().join("enabled"),
            dir.path().join("profiles"),
            dir.path().join("no-parser"),
        );
        (dir, aa)
    }

    fn sc(kind: ProfileType, name: &str) -> cri::LinuxContainerSecurityContext {
        cri::LinuxContainerSecurityContext {
            apparmor: Some(cri::SecurityProfile {
                profile_type: kind as i32,
                localhost_ref: name.into(),
            }),
            ..Default::default()
        }
    }

    /// AppArmor on, the default not loaded and no parser: the first
    /// container runs unconfined (and an explicit RuntimeDefault is
    /// refused), and the next ones do not try again until the retry time
    /// has passed. Seen here by loading the profile behind berthd's back:
    /// a retry would find it.
    #[test]
    fn a_failed_default_load_is_not_retried_for_every_container() {
        let (d, mut aa) = node("Y\n", "");
        assert_eq!(aa.profile_for(None).unwrap(), None);
        std::fs::write(d.path().join("profiles"), "berth-default (enforce)\n").unwrap();
        assert_eq!(aa.profile_for(None).unwrap(), None, "retried at once");
        let err = aa
            .profile_for(Some(&sc(ProfileType::RuntimeDefault, "")))
            .unwrap_err();
        assert!(
            err.to_string().contains("no-parser"),
            "the first failure's cause: {err}"
        );
        aa.retry_after = Duration::ZERO;
        assert_eq!(aa.profile_for(None).unwrap().as_deref(), Some(DEFAULT_PROFILE));
    }

    /// The preload remembers the loaded default: containers then read
    /// no profile list.
    #[test]
    fn the_preloaded_default_is_kept() {
        let (d, aa) = node("Y\n", "berth-default (enforce)\n");
        aa.preload_default();
        std::fs::remove_file(d.path().join("profiles")).unwrap();
        assert_eq!(aa.profile_for(None).unwrap().as_deref(), Some(DEFAULT_PROFILE));
    }

    #[test]
    fn localhost_profiles_must_be_loaded() {
        let (_d, aa) = node("Y\n", "my profile (enforce)\nberth-default (enforce)\n");
        let got = aa
            .profile_for(Some(&sc(ProfileType::Localhost, "my profile")))
            .unwrap();
        assert_eq!(got.as_deref(), Some("my profile"));
        let err = aa
            .profile_for(Some(&sc(ProfileType::Localhost, "missing")))
            .unwrap_err();
        assert!(err.to_string().contains("is not loaded"), "{err}");
        // The default is already loaded: no parser needed.
        let got = aa
            .profile_for(Some(&sc(ProfileType::RuntimeDefault, "")))
            .unwrap();
        assert_eq!(got.as_deref(), Some(DEFAULT_PROFILE));
        assert_eq!(aa.profile_for(None).unwrap().as_deref(), Some(DEFAULT_PROFILE));
        assert_eq!(
            aa.profile_for(Some(&sc(ProfileType::Unconfined, ""))).unwrap(),
            None
        );
    }

    #[test]
    fn privileged_and_disabled_nodes_get_no_default() {
        let (_d, aa) = node("Y\n", "berth-default (enforce)\n");
        let privileged = cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        assert_eq!(aa.profile_for(Some(&privileged)).unwrap(), None);
        let (_d, off) = node("N\n", "");
        assert_eq!(off.profile_for(None).unwrap(), None);
        assert_eq!(
            off.profile_for(Some(&sc(ProfileType::RuntimeDefault, "")))
                .unwrap(),
            None
        );
        let err = off
            .profile_for(Some(&sc(ProfileType::Localhost, "x")))
            .unwrap_err();
        assert!(err.to_string().contains("not enabled"), "{err}");
    }

    #[test]
    fn a_default_that_cannot_be_loaded_is_a_clear_error() {
        let (_d, aa) = node("Y\n", "");
        assert_eq!(aa.profile_for(None).unwrap(), None, "unasked: unconfined");
        let err = aa
            .profile_for(Some(&sc(ProfileType::RuntimeDefault, "")))
            .unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        assert!(err.to_string().contains("apparmor_parser"), "{err}");
    }

    /// kubelet (and critest) send the structured field's localhost_ref as
    /// `localhost/<name>`, like the deprecated string; the kernel knows the
    /// profile as `<name>`.
    #[test]
    fn localhost_ref_with_the_localhost_prefix_names_the_loaded_profile() {
        let (_d, aa) = node("Y\n", "deny-write (enforce)\n");
        let got = aa
            .profile_for(Some(&sc(ProfileType::Localhost, "localhost/deny-write")))
            .unwrap();
        assert_eq!(got.as_deref(), Some("deny-write"));
        assert_eq!(
            requested(Some(&sc(ProfileType::Localhost, "deny-write"))).unwrap(),
            Requested::Localhost("deny-write".into())
        );
        let err = requested(Some(&sc(ProfileType::Localhost, "localhost/"))).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn legacy_strings_and_bad_input() {
        #[allow(deprecated)]
        let legacy = |s: &str| cri::LinuxContainerSecurityContext {
            apparmor_profile: s.into(),
            ..Default::default()
        };
        assert_eq!(requested(Some(&legacy(""))).unwrap(), Requested::Unset);
        assert_eq!(
            requested(Some(&legacy("unconfined"))).unwrap(),
            Requested::Unconfined
        );
        assert_eq!(
            requested(Some(&legacy("runtime/default"))).unwrap(),
            Requested::RuntimeDefault
        );
        assert_eq!(
            requested(Some(&legacy("localhost/p1"))).unwrap(),
            Requested::Localhost("p1".into())
        );
        assert!(requested(Some(&legacy("p1"))).is_err());
        assert!(requested(Some(&sc(ProfileType::Localhost, ""))).is_err());
    }
}
