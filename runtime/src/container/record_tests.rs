//! The container record on disk against concurrent writers and removal.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
        image_volumes: vec![],
        restore_from: None,
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
    let panicked = berth_sys::thread::spawn(move || {
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

/// A berthd killed inside CreateContainer after the dirs and the cgroup
/// were made, before the record: start-up undoes them from the intent (no
/// RemoveContainer will ever name the container).
#[tokio::test]
async fn a_half_made_container_is_undone_from_its_intent() {
    let d = tempfile::tempdir().unwrap();
    let m = manager(d.path());
    let id = "ef".repeat(32);
    let dir = d.path().join("root/containers").join(&id);
    let bundle = d.path().join("state/containers").join(&id);
    let cgroup = d.path().join("cg/pods/pod1").join(&id);
    for p in [dir.join("upper"), bundle.clone(), cgroup.clone()] {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(bundle.join("config.json"), "{}").unwrap();
    let intent = d.path().join(format!("root/container-intents/{id}.json"));
    std::fs::create_dir_all(intent.parent().unwrap()).unwrap();
    std::fs::write(
        &intent,
        serde_json::json!({
            "version": 1, "id": id, "sandbox_id": "pod1", "cgroup_path": format!("/pods/pod1/{id}"),
            "dir": dir, "bundle": bundle,
        })
        .to_string(),
    )
    .unwrap();
    assert_eq!(m.recover().await.unwrap(), 0);
    assert!(
        !dir.exists() && !bundle.exists(),
        "writable layer and bundle removed"
    );
    assert!(!cgroup.exists(), "container cgroup removed");
    assert!(d.path().join("cg/pods/pod1").exists(), "the pod's cgroup stays");
    assert!(!intent.exists(), "intent dropped");
    assert_eq!(m.recover().await.unwrap(), 0, "idempotent");
}

/// Container dirs and bundles no record names are removed at start-up;
/// a recorded container's are kept.
#[tokio::test]
async fn start_up_removes_container_dirs_no_record_names() {
    let d = tempfile::tempdir().unwrap();
    let m = manager(d.path());
    let (kept, orphan) = ("ab".repeat(32), "cd".repeat(32));
    store::write_record(&m.record_path(&kept), &record(&kept, d.path())).unwrap();
    for id in [&kept, &orphan] {
        std::fs::create_dir_all(d.path().join("root/containers").join(id).join("upper")).unwrap();
        std::fs::create_dir_all(d.path().join("state/containers").join(id)).unwrap();
    }
    let foreign = d.path().join("state/containers/not-an-id");
    std::fs::create_dir_all(&foreign).unwrap();
    assert_eq!(m.recover().await.unwrap(), 1);
    assert!(d.path().join("root/containers").join(&kept).exists());
    assert!(d.path().join("state/containers").join(&kept).exists());
    assert!(!d.path().join("root/containers").join(&orphan).exists());
    assert!(!d.path().join("state/containers").join(&orphan).exists());
    assert!(foreign.exists(), "only id-named dirs are berthd's");
}

fn exit(code: i32, at: i64) -> state::Exit {
    state::Exit {
        code,
        at,
        reason: "Error".into(),
        message: String::new(),
    }
}

fn on_disk(m: &ContainerManager, id: &str) -> ContainerRecord {
    crate::store::read_record(&m.record_path(id)).unwrap()
}

/// The first exit recorded is the container's exit: a later writer (the
/// exit watch after StartContainer's error path, recovery after a stop)
/// cannot overwrite its code and time, in memory or on disk.
#[tokio::test]
async fn the_first_exit_wins() {
    let d = tempfile::tempdir().unwrap();
    let m = manager(d.path());
    let mut rec = record("c1", d.path());
    rec.state = ContainerState::Running;
    let c = insert(&m, rec);
    assert!(m.to_exited(&c, exit(137, 10)).unwrap());
    assert!(!m.to_exited(&c, exit(0, 20)).unwrap());
    let r = c.record();
    assert_eq!(
        (r.state, r.exit_code, r.finished_at),
        (ContainerState::Exited, 137, 10)
    );
    let r = on_disk(&m, "c1");
    assert_eq!(
        (r.state, r.exit_code, r.finished_at),
        (ContainerState::Exited, 137, 10)
    );
    assert_eq!(*c.changed.borrow(), ContainerState::Exited);
}

/// A start that lost to a stop leaves the container exited.
#[tokio::test]
async fn an_exited_container_does_not_come_back_to_running() {
    let d = tempfile::tempdir().unwrap();
    let m = manager(d.path());
    let mut rec = record("c1", d.path());
    rec.state = ContainerState::Created;
    let c = insert(&m, rec);
    assert!(m.to_exited(&c, exit(0, 5)).unwrap());
    let started = state::Started {
        at: 6,
        pid: 42,
        user: None,
    };
    assert!(!m.to_running(&c, started).unwrap());
    let r = c.record();
    assert_eq!((r.state, r.pid, r.started_at), (ContainerState::Exited, 0, 2));
}

/// Created -> Running is recorded and persisted with the start's facts.
#[tokio::test]
async fn a_start_is_persisted_with_its_facts() {
    let d = tempfile::tempdir().unwrap();
    let m = manager(d.path());
    let mut rec = record("c1", d.path());
    rec.state = ContainerState::Created;
    let c = insert(&m, rec);
    let started = state::Started {
        at: 7,
        pid: 42,
        user: Some(ProcessUser {
            uid: 1,
            gid: 2,
            groups: vec![3],
        }),
    };
    assert!(m.to_running(&c, started).unwrap());
    let r = on_disk(&m, "c1");
    assert_eq!((r.state, r.pid, r.started_at), (ContainerState::Running, 42, 7));
    assert_eq!(r.process_user.map(|u| u.groups), Some(vec![3]));
}

/// A record written before image volumes existed reads back with none.
#[test]
fn an_older_record_has_no_image_volumes() {
    let d = tempfile::tempdir().unwrap();
    let mut v = serde_json::to_value(record(&"ab".repeat(32), d.path())).unwrap();
    assert!(v.as_object_mut().unwrap().remove("image_volumes").is_some());
    let r: ContainerRecord = serde_json::from_value(v).unwrap();
    assert!(r.image_volumes.is_empty());
}
