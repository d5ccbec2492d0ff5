//! Tearing a pod down in the order the CRI needs: its containers first
//! (stopped all at once), then the pod itself. StopPodSandbox and
//! RemovePodSandbox call these; the handlers keep only the CRI's "an
//! unknown id is OK".
//!
//! The container manager sits above this one (it creates containers inside
//! sandboxes and holds the sandbox manager), so it is handed in through
//! [`PodContainers`] rather than imported: the import graph stays downward.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{Sandbox, SandboxManager};
use crate::error::{Error, Result};

/// What a pod's teardown needs of its containers.
pub trait PodContainers: Send + Sync + 'static {
    /// Ids of the containers of pod `sandbox_id`.
    fn ids_in_pod(&self, sandbox_id: &str) -> Vec<String>;
    /// Stops a container, giving its process `timeout` before SIGKILL; an
    /// unknown id is OK.
    fn stop_container(&self, id: &str, timeout: Duration) -> impl Future<Output = Result<()>> + Send;
    /// Removes a container and everything of it; an unknown id is OK.
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
}

impl SandboxManager {
    /// StopPodSandbox: stops the pod's containers, then the pod (its shim
    /// and network; the namespaces stay pinned until removal). Idempotent.
    pub async fn stop_pod<C: PodContainers>(&self, sb: &Sandbox, containers: &Arc<C>) -> Result<()> {
        stop_containers(containers, &sb.record().id).await?;
        self.stop(sb).await
    }

    /// RemovePodSandbox: stops the pod's containers, removes them, then
    /// removes the pod (stopping it first if it is not). Idempotent.
    pub async fn remove_pod<C: PodContainers>(&self, sb: &Sandbox, containers: &Arc<C>) -> Result<()> {
        let id = sb.record().id;
        stop_containers(containers, &id).await?;
        for cid in containers.ids_in_pod(&id) {
            containers.remove_container(&cid).await?;
        }
        self.remove(sb).await
    }
}

/// Stops a pod's containers concurrently, with no grace period (kubelet has
/// already stopped them gracefully when it wanted to).
async fn stop_containers<C: PodContainers>(containers: &Arc<C>, sandbox_id: &str) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for cid in containers.ids_in_pod(sandbox_id) {
        let containers = containers.clone();
        tasks.spawn(async move { containers.stop_container(&cid, Duration::ZERO).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| Error::Internal(format!("stop task: {e}")))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::SandboxState;
    use super::*;
    use crate::cgroup::CgroupManager;
    use crate::config::Config;
    use crate::net::cni::{Cni, RealExec};

    /// Records each call with whether the pod was still known and ready.
    struct Recording {
        sandboxes: Arc<SandboxManager>,
        pod: String,
        ids: Vec<String>,
        calls: parking_lot::Mutex<Vec<String>>,
    }

    impl Recording {
        fn note(&self, what: &str, id: &str) {
            let pod = match self.sandboxes.get(&self.pod) {
                Ok(sb) if sb.record().state == SandboxState::Ready => "pod ready",
                Ok(_) => "pod stopped",
                Err(_) => "pod gone",
            };
            self.calls.lock().push(format!("{what} {id} ({pod})"));
        }
    }

    impl PodContainers for Recording {
        fn ids_in_pod(&self, sandbox_id: &str) -> Vec<String> {
            assert_eq!(sandbox_id, self.pod);
            self.ids.clone()
        }
        async fn stop_container(&self, id: &str, timeout: Duration) -> Result<()> {
            assert_eq!(timeout, Duration::ZERO, "no grace period");
            self.note("stop", id);
            Ok(())
        }
        async fn remove_container(&self, id: &str) -> Result<()> {
            self.note("remove", id);
            Ok(())
        }
    }

    /// A manager over temp dirs holding one ready pod with no shim and no
    /// network (what teardown has to do for it is local).
    fn manager_with_pod(d: &Path) -> (Arc<SandboxManager>, Arc<Sandbox>) {
        let cfg = Config {
            root: d.join("root"),
            state: d.join("state"),
            ..Config::default()
        };
        std::fs::create_dir_all(cfg.root.join("sandboxes")).unwrap();
        let m = Arc::new(SandboxManager::new(
            cfg,
            CgroupManager::new(d.join("cg")),
            Cni::new(vec![], Box::new(RealExec)),
            Arc::new(super::super::shm::fake::FakeShmHost::default()),
        ));
        let record: super::super::SandboxRecord = serde_json::from_value(serde_json::json!({
            "id": "pod1", "name": "p", "uid": "u", "namespace": "n", "attempt": 0,
            "hostname": "p", "log_directory": "", "labels": {}, "annotations": {},
            "runtime_handler": "", "created_at": 1, "state": "Ready",
            "cgroup_path": "berth/pod1", "cgroup_created": [], "shim_pid": 0,
            "shim_socket": d.join("pod1.sock"), "ns_paths": {},
        }))
        .unwrap();
        let sb = Arc::new(Sandbox::new(record, None));
        m.sandboxes.lock().insert("pod1".into(), sb.clone());
        (m, sb)
    }

    #[tokio::test]
    async fn stop_pod_stops_every_container_before_the_pod() {
        let d = tempfile::tempdir().unwrap();
        let (m, sb) = manager_with_pod(d.path());
        let c = Arc::new(Recording {
            sandboxes: m.clone(),
            pod: "pod1".into(),
            ids: vec!["a".into(), "b".into()],
            calls: Default::default(),
        });
        m.stop_pod(&sb, &c).await.unwrap();
        let mut calls = c.calls.lock().clone();
        calls.sort();
        assert_eq!(calls, ["stop a (pod ready)", "stop b (pod ready)"]);
        assert_eq!(
            sb.record().state,
            SandboxState::NotReady,
            "the pod is stopped after its containers"
        );
        assert!(m.get("pod1").is_ok(), "and still known");
    }

    #[tokio::test]
    async fn remove_pod_stops_then_removes_containers_then_the_pod() {
        let d = tempfile::tempdir().unwrap();
        let (m, sb) = manager_with_pod(d.path());
        let c = Arc::new(Recording {
            sandboxes: m.clone(),
            pod: "pod1".into(),
            ids: vec!["a".into()],
            calls: Default::default(),
        });
        m.remove_pod(&sb, &c).await.unwrap();
        assert_eq!(*c.calls.lock(), ["stop a (pod ready)", "remove a (pod ready)"]);
        assert!(matches!(m.get("pod1"), Err(Error::NotFound(_))), "the pod last");
    }
}
