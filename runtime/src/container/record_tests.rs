//! The container record on disk against concurrent writers and removal.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::*;
use crate::cgroup::CgroupManager;
use crate::net::cni::{Cni, RealExec};
use crate::sandbox::shm;

fn manager(dir: &Path) -> Arc<ContainerManager> {
    let cfg = Config {
        root: dir.join("root"),
        state: dir.join("state"),
        ..Config::default()
    };
    let sandboxes = Arc::new(SandboxManager::new(
        cfg.clone(),
        CgroupManager::new(dir.join("cg")),
        Cni::new(vec![], Box::new(RealExec)),
        Arc::new(shm::fake::FakeShmHost::default()),
    ));
    let images = Arc::new(ImageStore::open(&cfg.root).unwrap());
    Arc::new(ContainerManager::new(cfg, images, sandboxes))
}

fn record(id: &str, dir: &Path) -> ContainerRecord {
    ContainerRecord {
        id: id.into(),
        sandbox_id: "gone-pod".into(),
        name: "c".into(),
        attempt: 0,
        image: "busybox".into(),
        image_ref: "sha256:00".into(),
        labels: Default::default(),
        annotations: Default::default(),
        log_path: String::new(),
        state: ContainerState::Exited,
        created_at: 1,
        started_at: 2,
        finished_at: 3,
        exit_code: 0,
        reason: "Completed".into(),
        message: String::new(),
        pid: 0,
        cgroup_path: "/berth-test/none".into(),
        dir: dir.join("root/containers").join(id),
        bundle: dir.join("state/containers").join(id),
        mounts: vec![],
        stop_signal: libc::SIGTERM,
        resources: None,
        process_user: None,
        uid: 0,
        gid: 0,
        additional_gids: vec![],
    }
}

fn insert(m: &ContainerManager, rec: ContainerRecord) -> Arc<Container> {
    let (changed, _) = watch::channel(rec.state);
    let c = Arc::new(Container {
        record: Mutex::new(rec.clone()),
        changed,
        resize: Default::default(),
        record_file: Default::default(),
    });
    m.containers.lock().insert(rec.id, c.clone());
    c
}

#[tokio::test]
async fn a_late_exit_write_does_not_bring_a_removed_record_back() {
    let d = tempfile::tempdir().unwrap();
    let m = manager(d.path());
    let c = insert(&m, record("c1", d.path()));
    m.persist(&c).unwrap();
    let path = m.record_path("c1");
    assert!(path.exists());
    m.remove("c1").await.unwrap();
    assert!(!path.exists());
    // The exit watcher finishing after RemoveContainer.
    c.record.lock().exit_code = 137;
    m.persist(&c).unwrap();
    assert!(!path.exists(), "RemoveContainer's record was resurrected");
}

#[tokio::test]
async fn stopping_or_removing_an_unknown_container_succeeds() {
    let d = tempfile::tempdir().unwrap();
    let m = manager(d.path());
    m.stop("nope", Duration::from_secs(10)).await.unwrap();
    m.stop("nope", Duration::ZERO).await.unwrap();
    m.remove("nope").await.unwrap();
}

#[tokio::test]
async fn a_panic_while_the_container_map_is_held_leaves_it_usable() {
    let d = tempfile::tempdir().unwrap();
    let m = manager(d.path());
    insert(&m, record("c1", d.path()));
    let m2 = m.clone();
    let panicked = std::thread::spawn(move || {
        let _held = m2.containers.lock();
        panic!("injected panic while holding the container map");
    })
    .join();
    assert!(panicked.is_err());
    // A poisoned std Mutex made every later call panic here.
    assert_eq!(m.get("c1").unwrap().record().id, "c1");
    assert!(matches!(m.get("nope"), Err(Error::NotFound(_))));
    assert_eq!(m.list().len(), 1);
}
