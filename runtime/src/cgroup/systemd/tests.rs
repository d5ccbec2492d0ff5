//! The driver's job bookkeeping against a scripted bus.

use parking_lot::Mutex;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::*;

/// A bus that records every call and finishes each job with a scripted
/// result, sending the signal before the call returns (as systemd may,
/// for a job that completes at once) after a signal for some other job.
#[derive(Debug, Default)]
struct ScriptedBus {
    calls: Mutex<Vec<String>>,
    props: Mutex<Vec<(String, Vec<Property>)>>,
    subscribers: Mutex<Vec<UnboundedSender<JobRemoved>>>,
    /// Result of the next jobs; "done" when empty; "never" sends nothing.
    results: Mutex<Vec<&'static str>>,
    /// Units `start_transient_unit` says exist already.
    existing: Vec<&'static str>,
    jobs: Mutex<u32>,
}

impl ScriptedBus {
    fn finish(&self, unit: &str) -> String {
        let n = {
            let mut j = self.jobs.lock();
            *j += 1;
            *j
        };
        let job = format!("/org/freedesktop/systemd1/job/{n}");
        let result = {
            let mut r = self.results.lock();
            if r.is_empty() {
                "done"
            } else {
                r.remove(0)
            }
        };
        if result != "never" {
            for s in self.subscribers.lock().iter() {
                let _ = s.send(JobRemoved {
                    job: "/org/freedesktop/systemd1/job/999".into(),
                    unit: "other.service".into(),
                    result: "failed".into(),
                });
                let _ = s.send(JobRemoved {
                    job: job.clone(),
                    unit: unit.into(),
                    result: result.into(),
                });
            }
        }
        job
    }
}

#[tonic::async_trait]
impl Bus for ScriptedBus {
    async fn subscribe(&self) -> Result<UnboundedReceiver<JobRemoved>> {
        let (tx, rx) = unbounded_channel();
        self.subscribers.lock().push(tx);
        Ok(rx)
    }
    async fn start_transient_unit(&self, name: &str, props: Vec<Property>) -> Result<String> {
        self.calls.lock().push(format!("start {name}"));
        if self.existing.contains(&name) {
            return Err(Error::AlreadyExists(format!("unit {name} exists")));
        }
        self.props.lock().push((name.into(), props));
        Ok(self.finish(name))
    }
    async fn stop_unit(&self, name: &str) -> Result<Option<String>> {
        self.calls.lock().push(format!("stop {name}"));
        if name.contains("gone") {
            return Ok(None);
        }
        Ok(Some(self.finish(name)))
    }
    async fn set_unit_properties(&self, name: &str, props: Vec<Property>) -> Result<()> {
        self.calls.lock().push(format!("set {name}"));
        self.props.lock().push((name.into(), props));
        Ok(())
    }
}

fn driver(bus: ScriptedBus) -> (Arc<ScriptedBus>, Systemd) {
    let bus = Arc::new(bus);
    let d = Systemd::new(bus.clone()).with_job_timeout(Duration::from_millis(200));
    (bus, d)
}

#[tokio::test]
async fn a_scope_is_delegated_and_holds_its_pids_and_resources() {
    let (bus, d) = driver(ScriptedBus::default());
    d.start_scope(
        "berth-c1.scope",
        "kubepods-pod1.slice",
        &[42],
        vec![("MemoryMax", Value::U64(1 << 20))],
    )
    .await
    .unwrap();
    let props = bus.props.lock().clone();
    let (name, p) = &props[0];
    assert_eq!(name, "berth-c1.scope");
    let get = |n: &str| p.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
    assert_eq!(get("Slice"), Some(Value::Str("kubepods-pod1.slice".into())));
    assert_eq!(get("Delegate"), Some(Value::Bool(true)));
    assert_eq!(get("PIDs"), Some(Value::U32s(vec![42])));
    assert_eq!(get("MemoryMax"), Some(Value::U64(1 << 20)));
}

#[tokio::test]
async fn a_failed_job_is_an_error_naming_the_unit_and_result() {
    let bus = ScriptedBus::default();
    bus.results.lock().push("failed");
    let (_, d) = driver(bus);
    let e = d.start("berth-c1.scope", vec![]).await.unwrap_err().to_string();
    assert!(e.contains("berth-c1.scope") && e.contains("\"failed\""), "{e}");
}

#[tokio::test]
async fn a_job_that_never_ends_times_out() {
    let bus = ScriptedBus::default();
    bus.results.lock().push("never");
    let (_, d) = driver(bus);
    let e = d.stop("berth-c1.scope").await.unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
}

#[tokio::test]
async fn stopping_a_unit_systemd_collected_is_fine() {
    let (bus, d) = driver(ScriptedBus::default());
    d.stop("berth-gone.scope").await.unwrap();
    d.stop("berth-c2.scope").await.unwrap();
    assert_eq!(
        *bus.calls.lock(),
        vec!["stop berth-gone.scope", "stop berth-c2.scope"]
    );
}

#[tokio::test]
async fn an_existing_slice_is_not_ours() {
    let (bus, d) = driver(ScriptedBus {
        existing: vec!["kubepods-pod1.slice"],
        ..Default::default()
    });
    assert!(!d.start_slice("kubepods-pod1.slice", vec![]).await.unwrap());
    assert!(d.start_slice("kubepods-pod2.slice", vec![]).await.unwrap());
    let props = bus.props.lock().clone();
    assert_eq!(props.len(), 1);
    assert!(props[0]
        .1
        .contains(&("TasksMax", Value::U64(properties::INFINITY))));
}

#[test]
fn unit_names() {
    assert_eq!(container_scope("ab"), "berth-ab.scope");
    assert_eq!(shim_scope("cd"), "berth-shim-cd.scope");
    assert_eq!(
        slice_of("/kubepods.slice/kubepods-pod1.slice"),
        "kubepods-pod1.slice"
    );
}
