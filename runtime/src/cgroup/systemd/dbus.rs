//! [`Bus`] over a real D-Bus connection to systemd (zbus).
//!
//! The system bus first; when no bus daemon runs (early boot, minimal
//! nodes), systemd's own peer-to-peer socket `/run/systemd/private`, as
//! runc does. Neither: an error saying systemd is not there.

use futures_util::StreamExt;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use zbus::zvariant::{OwnedObjectPath, Value as ZValue};
use zbus::{Connection, MatchRule, MessageStream};

use super::{Bus, JobRemoved, Property, Value};
use crate::error::{Error, Result};

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// systemd's socket for clients when the bus is not up.
const PRIVATE_SOCKET: &str = "/run/systemd/private";

/// A connection to systemd's manager.
#[derive(Debug)]
pub struct SystemBus {
    conn: Connection,
    /// Whether `conn` goes through a bus daemon (a destination is needed)
    /// or straight to systemd.
    via_bus: bool,
}

impl SystemBus {
    /// Connects and subscribes to the manager's signals.
    pub async fn connect() -> Result<Self> {
        Self::connect_with(None, std::path::Path::new(PRIVATE_SOCKET)).await
    }

    /// [`Self::connect`] with the bus at `bus` (None: the system bus) and
    /// systemd's private socket at `private_socket` (parameters so both
    /// paths are tested against real peers).
    async fn connect_with(bus: Option<&str>, private_socket: &std::path::Path) -> Result<Self> {
        let conn = match bus {
            None => Connection::system().await,
            Some(addr) => match zbus::connection::Builder::address(addr) {
                Ok(b) => b.build().await,
                Err(e) => Err(e),
            },
        };
        let bus_err = match conn {
            Ok(conn) => {
                // Through the bus daemon: every call names systemd.
                let b = SystemBus { conn, via_bus: true };
                match b.call("Subscribe", &()).await {
                    Ok(_) => return Ok(b),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        Self::connect_private(private_socket)
            .await
            .map_err(|private_err| {
                Error::FailedPrecondition(format!(
                    "cgroup_driver = \"systemd\" but systemd cannot be reached (is PID 1 systemd?): \
                 system bus: {bus_err}; {}: {private_err}",
                    private_socket.display()
                ))
            })
    }

    /// Straight to systemd over its peer-to-peer socket: no bus daemon, so
    /// calls carry no destination.
    async fn connect_private(path: &std::path::Path) -> std::result::Result<Self, String> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| e.to_string())?;
        let conn = zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .map_err(|e| e.to_string())?;
        let b = SystemBus { conn, via_bus: false };
        b.call("Subscribe", &()).await.map_err(|e| e.to_string())?;
        Ok(b)
    }

    async fn call<B>(&self, method: &str, body: &B) -> Result<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let dest = self.via_bus.then_some(DEST);
        self.conn
            .call_method(dest, PATH, Some(MANAGER), method, body)
            .await
            .map_err(|e| map_error(method, e))
    }
}

/// systemd's D-Bus errors as Berth's: an existing unit is AlreadyExists,
/// a unit systemd does not know is NotFound, the rest name the call.
fn map_error(method: &str, e: zbus::Error) -> Error {
    if let zbus::Error::MethodError(name, detail, _) = &e {
        let detail = detail.clone().unwrap_or_default();
        match name.as_str() {
            "org.freedesktop.systemd1.UnitExists" => return Error::AlreadyExists(detail),
            "org.freedesktop.systemd1.NoSuchUnit" => return Error::NotFound(detail),
            _ => {}
        }
    }
    Error::Internal(format!("systemd {method}: {e}"))
}

fn to_zvalue(v: &Value) -> ZValue<'static> {
    match v {
        Value::Bool(b) => ZValue::from(*b),
        Value::U64(n) => ZValue::from(*n),
        Value::Str(s) => ZValue::from(s.clone()),
        Value::Bytes(b) => ZValue::from(b.clone()),
        Value::U32s(p) => ZValue::from(p.clone()),
    }
}

fn to_body(props: &[Property]) -> Vec<(&'static str, ZValue<'static>)> {
    props.iter().map(|(n, v)| (*n, to_zvalue(v))).collect()
}

#[tonic::async_trait]
impl Bus for SystemBus {
    async fn subscribe(&self) -> Result<UnboundedReceiver<JobRemoved>> {
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(MANAGER)
            .and_then(|r| r.member("JobRemoved"))
            .map_err(|e| Error::Internal(format!("JobRemoved match rule: {e}")))?
            .build();
        let mut stream = MessageStream::for_match_rule(rule, &self.conn, Some(256))
            .await
            .map_err(|e| map_error("AddMatch JobRemoved", e))?;
        let (tx, rx) = unbounded_channel();
        // Ends when the receiver is dropped (the next signal fails to send)
        // or the connection closes.
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Ok((_, job, unit, result)) =
                    msg.body().deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                let j = JobRemoved {
                    job: job.as_str().to_string(),
                    unit,
                    result,
                };
                if tx.send(j).is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }

    async fn start_transient_unit(&self, name: &str, props: Vec<Property>) -> Result<String> {
        let aux: Vec<(&str, Vec<(&str, ZValue<'_>)>)> = Vec::new();
        let reply = self
            .call("StartTransientUnit", &(name, "replace", to_body(&props), aux))
            .await?;
        let job: OwnedObjectPath = reply
            .body()
            .deserialize()
            .map_err(|e| Error::Internal(format!("StartTransientUnit reply: {e}")))?;
        Ok(job.as_str().to_string())
    }

    async fn stop_unit(&self, name: &str) -> Result<Option<String>> {
        match self.call("StopUnit", &(name, "replace")).await {
            Ok(reply) => {
                let job: OwnedObjectPath = reply
                    .body()
                    .deserialize()
                    .map_err(|e| Error::Internal(format!("StopUnit reply: {e}")))?;
                Ok(Some(job.as_str().to_string()))
            }
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn set_unit_properties(&self, name: &str, props: Vec<Property>) -> Result<()> {
        self.call("SetUnitProperties", &(name, true, to_body(&props)))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::Type;

    #[test]
    fn bodies_have_systemds_signatures() {
        let props = vec![
            ("Delegate", Value::Bool(true)),
            ("PIDs", Value::U32s(vec![1])),
            ("AllowedCPUs", Value::Bytes(vec![3])),
        ];
        assert_eq!(to_body(&props).len(), 3);
        assert_eq!(
            <(
                &str,
                &str,
                Vec<(&str, ZValue<'_>)>,
                Vec<(&str, Vec<(&str, ZValue<'_>)>)>
            )>::SIGNATURE
                .to_string(),
            "(ssa(sv)a(sa(sv)))"
        );
        assert_eq!(
            to_zvalue(&Value::U32s(vec![1])).value_signature().to_string(),
            "au"
        );
        assert_eq!(
            to_zvalue(&Value::Bytes(vec![1])).value_signature().to_string(),
            "ay"
        );
        assert_eq!(to_zvalue(&Value::U64(1)).value_signature().to_string(), "t");
    }

    /// A peer that answers systemd's Manager methods on a p2p socket, as
    /// systemd does on /run/systemd/private; it reports each call's member
    /// and whether it carried a destination.
    async fn fake_private_systemd(
        path: &std::path::Path,
    ) -> tokio::sync::mpsc::UnboundedReceiver<(String, bool)> {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let conn = zbus::connection::Builder::unix_stream(stream)
                .server(zbus::Guid::generate())
                .unwrap()
                .p2p()
                .build()
                .await
                .unwrap();
            answer_calls(&conn, &tx).await;
        });
        rx
    }

    /// Answers every method call on `conn` with an empty reply and reports
    /// its member and whether it carried a destination, until `conn` ends.
    async fn answer_calls(conn: &zbus::Connection, tx: &tokio::sync::mpsc::UnboundedSender<(String, bool)>) {
        let mut msgs = MessageStream::from(conn);
        while let Some(Ok(msg)) = msgs.next().await {
            let h = msg.header();
            if h.message_type() != zbus::message::Type::MethodCall {
                continue;
            }
            let member = h.member().map(|m| m.to_string()).unwrap_or_default();
            let _ = tx.send((member, h.destination().is_some()));
            let _ = conn.reply(&h, &()).await;
        }
    }

    #[tokio::test]
    async fn the_private_socket_is_used_without_a_bus_and_calls_carry_no_destination() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private");
        let mut calls = fake_private_systemd(&path).await;
        let bus = SystemBus::connect_private(&path)
            .await
            .expect("connect over the private socket");
        assert!(!bus.via_bus);
        assert_eq!(calls.recv().await, Some(("Subscribe".to_string(), false)));
        bus.stop_unit("berth-x.scope").await.unwrap_or_default();
        assert_eq!(calls.recv().await, Some(("StopUnit".to_string(), false)));
    }

    #[tokio::test]
    async fn neither_bus_nor_private_socket_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-socket");
        // The host's system bus, if any, has no systemd behind it here
        // (the unit tests run where PID 1 is not systemd), so both fail.
        if std::path::Path::new("/run/systemd/system").is_dir() {
            return;
        }
        let e = SystemBus::connect_with(None, &missing)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("systemd cannot be reached"), "{e}");
        assert!(e.contains("no-such-socket"), "{e}");
    }

    /// A bus daemon of its own (the dbus-daemon a node runs) with a fake
    /// systemd owning `org.freedesktop.systemd1` on it; the fake reports
    /// each method call's member and whether it carried a destination.
    struct FakeBus {
        daemon: std::process::Child,
        address: String,
        calls: tokio::sync::mpsc::UnboundedReceiver<(String, bool)>,
    }

    impl Drop for FakeBus {
        fn drop(&mut self) {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
    }

    async fn bus_with_fake_systemd(dir: &std::path::Path) -> FakeBus {
        let socket = dir.join("bus");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let daemon = std::process::Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon, hack/install-deps.sh)");
        let address = format!("unix:path={}", socket.display());
        let mut tries = 0;
        while !socket.exists() {
            assert!(tries < 500, "dbus-daemon never listened at {}", socket.display());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            tries += 1;
        }
        let conn = zbus::connection::Builder::address(address.as_str())
            .unwrap()
            .name(DEST)
            .unwrap()
            .build()
            .await
            .expect("the fake systemd joins the bus");
        let (tx, calls) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move { answer_calls(&conn, &tx).await });
        FakeBus {
            daemon,
            address,
            calls,
        }
    }

    /// Through a bus daemon every call must name systemd as destination;
    /// one without reaches nobody (the bus broke berthd's start this way).
    #[tokio::test]
    async fn the_system_bus_is_used_first_and_calls_name_systemd() {
        // Bounded: a call nobody answers must fail the test, not hang it.
        tokio::time::timeout(std::time::Duration::from_secs(60), system_bus_first())
            .await
            .expect("the test finishes within 60 s");
    }

    async fn system_bus_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut bus = bus_with_fake_systemd(dir.path()).await;
        let missing = dir.path().join("no-private-socket");
        let connected = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            SystemBus::connect_with(Some(&bus.address), &missing),
        )
        .await
        .expect("connect within 20 s")
        .expect("connect through the bus");
        assert!(connected.via_bus);
        assert_eq!(bus.calls.recv().await, Some(("Subscribe".to_string(), true)));
        connected.stop_unit("berth-x.scope").await.unwrap_or_default();
        assert_eq!(bus.calls.recv().await, Some(("StopUnit".to_string(), true)));
    }
}
