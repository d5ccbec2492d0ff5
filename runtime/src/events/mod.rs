//! Container lifecycle events (CRI `GetContainerEvents`, kubelet's Evented
//! PLEG).
//!
//! Managers report what happened (`container(Kind::Started, id, sandbox)`,
//! `sandbox(Kind::Stopped, id)`); this module turns each report into a CRI
//! `ContainerEventResponse` carrying the pod sandbox status and every
//! container status of the pod *as they are at that moment*, and fans it out
//! through an [`EventBus`]. Snapshot and delivery happen under the bus lock,
//! so each subscriber sees events in the order the state changed. Sandbox
//! events carry the sandbox id as `container_id`, as the CRI specifies.
//!
//! Kubelet ignores an event without a sandbox status (it relists instead),
//! so a container event whose sandbox is already gone is not sent at all.

pub mod bus;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use berth_proto::cri;
use parking_lot::Mutex;

pub use bus::{EventBus, Subscription};

/// How many events a subscriber may fall behind before it is dropped
/// (kubelet's own event channel holds 1000).
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// What happened to a container (or sandbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Created.
    Created,
    /// Its process started (a sandbox: it became ready).
    Started,
    /// Its process ended (a sandbox: it stopped or its shim died).
    Stopped,
    /// Removed.
    Deleted,
}

impl Kind {
    /// The CRI event type.
    pub fn to_cri(self) -> cri::ContainerEventType {
        match self {
            Kind::Created => cri::ContainerEventType::ContainerCreatedEvent,
            Kind::Started => cri::ContainerEventType::ContainerStartedEvent,
            Kind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
            Kind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
        }
    }

    /// Label used in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Created => "created",
            Kind::Started => "started",
            Kind::Stopped => "stopped",
            Kind::Deleted => "deleted",
        }
    }

    const ALL: [Kind; 4] = [Kind::Created, Kind::Started, Kind::Stopped, Kind::Deleted];
}

/// A pod as an event shows it: its sandbox status and all its containers'.
pub type PodSnapshot = (cri::PodSandboxStatus, Vec<cri::ContainerStatus>);

/// Reads a pod's current status (the CRI layer implements it over the
/// managers; tests use a fake).
pub trait PodView: Send + Sync {
    /// The sandbox's status and every container status of it, or None when
    /// the sandbox is unknown.
    fn snapshot(&self, sandbox_id: &str) -> Option<PodSnapshot>;
}

/// Counters of what the events layer did since berthd started.
#[derive(Debug, Default)]
pub struct EventCounts {
    published: [AtomicU64; 4],
    /// Subscribers dropped for falling behind.
    pub subscribers_dropped: AtomicU64,
}

impl EventCounts {
    /// Events sent (to at least one subscriber), by kind.
    pub fn published(&self) -> Vec<(&'static str, u64)> {
        Kind::ALL
            .iter()
            .zip(&self.published)
            .map(|(k, n)| (k.name(), n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The events manager.
pub struct Events {
    bus: EventBus<Arc<cri::ContainerEventResponse>>,
    view: OnceLock<Arc<dyn PodView>>,
    /// Last timestamp handed out: kubelet keeps the newest status per pod
    /// by `created_at`, so timestamps never go backwards.
    last_ns: Mutex<i64>,
    /// What was published and dropped.
    pub counts: EventCounts,
}

impl Default for Events {
    fn default() -> Self {
        Self::new(SUBSCRIBER_BUFFER)
    }
}

impl Events {
    /// No subscribers yet; each may fall `buffer` events behind.
    pub fn new(buffer: usize) -> Self {
        Events {
            bus: EventBus::new(buffer),
            view: OnceLock::new(),
            last_ns: Mutex::new(0),
            counts: EventCounts::default(),
        }
    }

    /// Sets how pod status is read (once, at start-up, before serving).
    pub fn set_view(&self, view: Arc<dyn PodView>) {
        if self.view.set(view).is_err() {
            tracing::warn!("events pod view set twice; keeping the first");
        }
    }

    /// A new subscriber.
    pub fn subscribe(&self) -> Subscription<Arc<cri::ContainerEventResponse>> {
        self.bus.subscribe()
    }

    /// Ends every GetContainerEvents stream (shutdown).
    pub fn close_all(&self) {
        self.bus.close_all();
    }

    /// Attached subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.bus.subscriber_count()
    }

    /// The pod as it is now (for a DELETED event sent after it is gone).
    pub fn snapshot(&self, sandbox_id: &str) -> Option<PodSnapshot> {
        self.view.get()?.snapshot(sandbox_id)
    }

    /// Reports a container event. Call it with no record lock held.
    pub fn container(&self, kind: Kind, container_id: &str, sandbox_id: &str) {
        self.publish(kind, container_id, || self.snapshot(sandbox_id));
    }

    /// Reports a sandbox event (the sandbox id is the `container_id`).
    pub fn sandbox(&self, kind: Kind, sandbox_id: &str) {
        self.publish(kind, sandbox_id, || self.snapshot(sandbox_id));
    }

    /// Reports a sandbox event with a snapshot taken earlier (DELETED: the
    /// pod can no longer be read once it is gone).
    pub fn sandbox_with(&self, kind: Kind, sandbox_id: &str, last: Option<PodSnapshot>) {
        self.publish(kind, sandbox_id, move || last);
    }

    fn publish(&self, kind: Kind, id: &str, snapshot: impl FnOnce() -> Option<PodSnapshot>) {
        let d = self.bus.publish_with(|| {
            let Some((sandbox, containers)) = snapshot() else {
                tracing::debug!(id, event = kind.name(), "no sandbox for event; not sent");
                return None;
            };
            let created_at = {
                let mut last = self.last_ns.lock();
                *last = crate::store::now_ns().max(*last + 1);
                *last
            };
            Some(Arc::new(cri::ContainerEventResponse {
                container_id: id.to_string(),
                container_event_type: kind.to_cri() as i32,
                created_at,
                pod_sandbox_status: Some(sandbox),
                containers_statuses: containers,
            }))
        });
        if d.delivered + d.dropped > 0 {
            self.counts.published[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.counts
            .subscribers_dropped
            .fetch_add(d.dropped as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A pod table the test edits between events.
    #[derive(Default)]
    struct FakePods(Mutex<HashMap<String, Vec<(String, i32)>>>);

    impl PodView for FakePods {
        fn snapshot(&self, sandbox_id: &str) -> Option<PodSnapshot> {
            let pods = self.0.lock();
            let ctrs = pods.get(sandbox_id)?;
            Some((
                cri::PodSandboxStatus {
                    id: sandbox_id.into(),
                    metadata: Some(cri::PodSandboxMetadata {
                        uid: format!("uid-{sandbox_id}"),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ctrs.iter()
                    .map(|(id, state)| cri::ContainerStatus {
                        id: id.clone(),
                        state: *state,
                        ..Default::default()
                    })
                    .collect(),
            ))
        }
    }

    fn setup() -> (Arc<FakePods>, Events) {
        let pods = Arc::new(FakePods::default());
        let ev = Events::new(64);
        ev.set_view(pods.clone());
        (pods, ev)
    }

    fn set(pods: &FakePods, sb: &str, ctrs: &[(&str, cri::ContainerState)]) {
        pods.0.lock().insert(
            sb.into(),
            ctrs.iter().map(|(i, s)| (i.to_string(), *s as i32)).collect(),
        );
    }

    #[tokio::test]
    async fn lifecycle_events_carry_the_pod_as_it_was_then() {
        use cri::ContainerState as S;
        let (pods, ev) = setup();
        let mut sub = ev.subscribe();
        set(&pods, "sb", &[]);
        ev.sandbox(Kind::Created, "sb");
        ev.sandbox(Kind::Started, "sb");
        set(&pods, "sb", &[("c1", S::ContainerCreated)]);
        ev.container(Kind::Created, "c1", "sb");
        set(&pods, "sb", &[("c1", S::ContainerRunning)]);
        ev.container(Kind::Started, "c1", "sb");
        set(&pods, "sb", &[("c1", S::ContainerExited)]);
        ev.container(Kind::Stopped, "c1", "sb");
        set(&pods, "sb", &[]);
        ev.container(Kind::Deleted, "c1", "sb");
        let last = ev.snapshot("sb");
        pods.0.lock().remove("sb");
        ev.sandbox(Kind::Stopped, "sb"); // sandbox unknown: not sent
        ev.sandbox_with(Kind::Deleted, "sb", last);

        let mut got = Vec::new();
        for _ in 0..7 {
            got.push(sub.recv().await.unwrap().unwrap());
        }
        let kinds: Vec<_> = got
            .iter()
            .map(|e| (e.container_id.as_str(), e.container_event_type))
            .collect();
        use cri::ContainerEventType as T;
        assert_eq!(
            kinds,
            vec![
                ("sb", T::ContainerCreatedEvent as i32),
                ("sb", T::ContainerStartedEvent as i32),
                ("c1", T::ContainerCreatedEvent as i32),
                ("c1", T::ContainerStartedEvent as i32),
                ("c1", T::ContainerStoppedEvent as i32),
                ("c1", T::ContainerDeletedEvent as i32),
                ("sb", T::ContainerDeletedEvent as i32),
            ]
        );
        let states: Vec<Vec<i32>> = got
            .iter()
            .map(|e| e.containers_statuses.iter().map(|c| c.state).collect())
            .collect();
        assert_eq!(
            states,
            vec![
                vec![],
                vec![],
                vec![S::ContainerCreated as i32],
                vec![S::ContainerRunning as i32],
                vec![S::ContainerExited as i32],
                vec![],
                vec![],
            ]
        );
        for e in &got {
            let sb = e.pod_sandbox_status.as_ref().unwrap();
            assert_eq!(sb.metadata.as_ref().unwrap().uid, "uid-sb");
        }
        assert!(
            got.windows(2).all(|w| w[0].created_at < w[1].created_at),
            "timestamps strictly increase"
        );
        let published: HashMap<_, _> = ev.counts.published().into_iter().collect();
        assert_eq!(published["created"], 2);
        assert_eq!(published["stopped"], 1);
        assert_eq!(published["deleted"], 2);
    }

    #[tokio::test]
    async fn concurrent_publishers_give_every_subscriber_one_order() {
        let pods = Arc::new(FakePods::default());
        set(&pods, "sb", &[]);
        let ev = Arc::new(Events::new(256));
        ev.set_view(pods);
        let mut a = ev.subscribe();
        let mut b = ev.subscribe();
        let mut threads = Vec::new();
        for t in 0..4 {
            let ev = ev.clone();
            threads.push(berth_sys::thread::spawn(move || {
                for i in 0..50 {
                    ev.container(Kind::Started, &format!("c{t}-{i}"), "sb");
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        let mut seqs = Vec::new();
        for s in [&mut a, &mut b] {
            let mut ids = Vec::new();
            for _ in 0..200 {
                ids.push(s.recv().await.unwrap().unwrap().container_id.clone());
            }
            seqs.push(ids);
        }
        assert_eq!(seqs[0], seqs[1], "both subscribers saw the same order");
        for t in 0..4 {
            let mine: Vec<_> = seqs[0]
                .iter()
                .filter(|id| id.starts_with(&format!("c{t}-")))
                .cloned()
                .collect();
            let want: Vec<_> = (0..50).map(|i| format!("c{t}-{i}")).collect();
            assert_eq!(mine, want, "one publisher's events stay in its order");
        }
    }

    #[tokio::test]
    async fn an_overflowing_subscriber_is_dropped_and_counted() {
        let pods = Arc::new(FakePods::default());
        set(&pods, "sb", &[]);
        let ev = Events::new(2);
        ev.set_view(pods);
        let _stuck = ev.subscribe();
        let mut live = ev.subscribe();
        for i in 0..5 {
            ev.container(Kind::Created, &format!("c{i}"), "sb");
            live.recv().await.unwrap().unwrap();
        }
        assert_eq!(ev.subscriber_count(), 1);
        assert_eq!(ev.counts.subscribers_dropped.load(Ordering::Relaxed), 1);
    }
}
