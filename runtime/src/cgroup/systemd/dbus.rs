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
        let bus_err = match Connection::system().await {
            Ok(conn) => {
                let b = SystemBus { conn, via_bus: true };
                match b.call("Subscribe", &()).await {
                    Ok(_) => return Ok(b),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        let private = async {
            let stream = tokio::net::UnixStream::connect(PRIVATE_SOCKET)
                .await
                .map_err(|e| e.to_string())?;
            let conn = zbus::connection::Builder::unix_stream(stream)
                .p2p()
                .build()
                .await
                .map_err(|e| e.to_string())?;
            let b = SystemBus { conn, via_bus: false };
            b.call("Subscribe", &()).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(b)
        };
        private.await.map_err(|private_err| {
            Error::FailedPrecondition(format!(
                "cgroup_driver = \"systemd\" but systemd cannot be reached (is PID 1 systemd?): \
                 system bus: {bus_err}; {PRIVATE_SOCKET}: {private_err}"
            ))
        })
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
}
