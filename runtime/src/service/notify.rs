//! The sd_notify protocol without libsystemd: one datagram of
//! `KEY=value` lines to the unix socket systemd names in `$NOTIFY_SOCKET`
//! (a path, or `@name` for the abstract namespace). With `Type=notify`,
//! systemd counts berthd as started only at `READY=1`, and with
//! `WatchdogSec=` restarts it when `WATCHDOG=1` stops arriving.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier for a `$NOTIFY_SOCKET` value; `None` when it is empty
    /// or not a unix socket (`vsock:` and others are not supported).
    pub fn new(notify_socket: &str) -> io::Result<Option<Self>> {
        let addr = if let Some(name) = notify_socket.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if notify_socket.starts_with('/') {
            SocketAddr::from_pathname(notify_socket)?
        } else {
            return Ok(None);
        };
        Ok(Some(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
        }))
    }

    /// Sends one notification, e.g. `READY=1` or `STOPPING=1`.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        if sent != state.len() {
            return Err(io::Error::other("short write to NOTIFY_SOCKET"));
        }
        Ok(())
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as
/// sd_watchdog_enabled(3) advises, when the watchdog is meant for us
/// (`$WATCHDOG_PID` unset or our pid).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(s: &UnixDatagram) -> String {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = s.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifies_a_socket_bound_at_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap())
            .unwrap()
            .expect("a path socket");
        n.notify("READY=1").unwrap();
        n.notify("STOPPING=1").unwrap();
        assert_eq!(recv(&server), "READY=1");
        assert_eq!(recv(&server), "STOPPING=1");
    }

    #[test]
    fn notifies_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "berth-notify-test-{}-{}",
            std::process::id(),
            crate::store::new_id()
        );
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier::new(&format!("@{name}"))
            .unwrap()
            .expect("an abstract socket");
        n.notify("WATCHDOG=1").unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1");
    }

    #[test]
    fn a_missing_listener_is_an_error_and_other_schemes_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::new(dir.path().join("gone").to_str().unwrap())
            .unwrap()
            .unwrap();
        assert!(n.notify("READY=1").is_err());
        assert!(Notifier::new("").unwrap().is_none());
        assert!(Notifier::new("vsock:2:1234").unwrap().is_none());
    }

    #[test]
    fn the_watchdog_fires_at_half_its_interval_for_our_pid_only() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }
}
