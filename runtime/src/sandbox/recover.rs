//! Restart recovery: sandboxes come back from their records. A shim that is
//! still running (its pid's command line names its socket, so a recycled pid
//! is not mistaken for it) is reconnected; otherwise the sandbox is NotReady,
//! so kubelet stops, removes and recreates it, and DEL still runs then.
//!
//! A pod's mounts (namespace pins, its /dev/shm tmpfs) live under
//! `<state>/sandboxes/<id>/`: after a berthd restart they are still mounted
//! and used as they are; after a reboot `<state>` is empty and RemovePodSandbox
//! finds nothing to unmount. A state dir without a record is what a berthd
//! killed inside RunPodSandbox leaves (the record is written last): its
//! mounts are undone here, since no RemovePodSandbox will ever name it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::shim_proc::shim_alive;
use super::{pin, shm, Sandbox, SandboxManager, SandboxRecord, SandboxState};
use crate::error::{Error, Result};
use crate::{shim_client, store};

impl SandboxManager {
    /// Loads every sandbox record; returns how many were recovered.
    pub async fn recover(&self) -> Result<usize> {
        let dir = self.cfg.root.join("sandboxes");
        let mut n = 0;
        let records = store::list_records(&dir)?;
        // Every record file counts, readable or not: an unreadable one is
        // left in place, and so are its mounts.
        let known: HashSet<String> = records
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        // Before any DEL: an ADD a killed berthd left running must finish
        // first, or what it makes after the DEL outlives the pod.
        crate::blocking::run("CNI plugin wait task", || {
            crate::net::plugin_wait::wait_plugins_gone(Duration::from_secs(60))
        })
        .await?;
        self.undo_intents()?;
        self.sweep_orphans(&known)?;
        self.collect_unnamed(&known)?;
        self.collect_leases(&known)?;
        for path in records {
            let mut rec: SandboxRecord = match store::read_record(&path) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(record = %path.display(), error = %e, "unreadable sandbox record; left in place");
                    continue;
                }
            };
            let mut shim = None;
            if rec.state == SandboxState::Ready {
                if shim_alive(rec.shim_pid, &rec.shim_socket) {
                    match shim_client::connect(&rec.shim_socket).await {
                        Ok(s) => {
                            shim = Some(s);
                            crate::metrics::counters::SHIMS_RECONNECTED
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => tracing::warn!(sandbox = %rec.id, error = %e, "shim alive but unreachable"),
                    }
                }
                if shim.is_none() {
                    tracing::warn!(sandbox = %rec.id, "shim gone while berthd was down; sandbox NotReady");
                    rec.state = SandboxState::NotReady;
                    store::write_record(&path, &rec)?;
                }
            }
            tracing::info!(sandbox = %rec.id, state = ?rec.state, "sandbox recovered");
            let watched = shim.is_some();
            let sb = Arc::new(Sandbox::new(rec.clone(), shim));
            self.sandboxes.lock().insert(rec.id.clone(), sb.clone());
            if watched {
                super::shim_watch::watch(sb, self.events.clone());
            }
            n += 1;
        }
        Ok(n)
    }
}

impl SandboxManager {
    /// Undoes the state dirs of sandboxes that have no record: unpins their
    /// namespaces, unmounts their /dev/shm, removes the directory.
    fn sweep_orphans(&self, known: &HashSet<String>) -> Result<()> {
        let dir = self.cfg.state.join("sandboxes");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if known.contains(&id) || !e.path().is_dir() {
                continue;
            }
            let d = e.path();
            for kind in ["net", "ipc", "uts", "user"] {
                pin::unpin(&d.join("ns").join(kind))?;
            }
            shm::teardown(
                &*self.shm_host,
                &shm::PodShm {
                    source: d.join("shm"),
                    owned: true,
                },
            )?;
            std::fs::remove_dir_all(&d).map_err(|e| Error::io(format!("remove {}", d.display()), e))?;
            tracing::warn!(sandbox = %id, "removed the state of a sandbox that has no record (berthd stopped inside RunPodSandbox)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::CgroupManager;
    use crate::config::Config;
    use crate::net::cni::{Cni, RealExec};

    #[tokio::test]
    async fn orphaned_state_dirs_are_unmounted_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config {
            root: d.path().join("root"),
            state: d.path().join("state"),
            ..Config::default()
        };
        let host = Arc::new(shm::fake::FakeShmHost::default());
        let m = SandboxManager::new(
            cfg.clone(),
            CgroupManager::new(d.path().join("cg")),
            Cni::new(vec![], Box::new(RealExec)),
            host.clone(),
        );
        let orphan = cfg.state.join("sandboxes/orphan");
        std::fs::create_dir_all(orphan.join("shm")).unwrap();
        // A record that cannot be read keeps its state dir.
        std::fs::create_dir_all(cfg.state.join("sandboxes/broken/shm")).unwrap();
        std::fs::create_dir_all(cfg.root.join("sandboxes")).unwrap();
        std::fs::write(cfg.root.join("sandboxes/broken.json"), "{").unwrap();
        assert_eq!(m.recover().await.unwrap(), 0);
        assert!(!orphan.exists());
        assert!(cfg.state.join("sandboxes/broken/shm").exists());
        assert_eq!(
            *host.calls.lock().unwrap(),
            [format!("umount {}", orphan.join("shm").display())]
        );
    }

    /// A berthd killed inside RunPodSandbox after the cgroup and the shim
    /// were made, before the record (and before the shim's pid was
    /// recorded): start-up kills the shim, found by its socket, removes the
    /// cgroup it created and drops the intent.
    #[tokio::test]
    async fn half_made_sandbox_is_undone_from_its_intent() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config {
            root: d.path().join("root"),
            state: d.path().join("state"),
            ..Config::default()
        };
        let cg_root = d.path().join("cg");
        let m = SandboxManager::new(
            cfg.clone(),
            CgroupManager::new(&cg_root),
            Cni::new(vec![], Box::new(RealExec)),
            Arc::new(shm::fake::FakeShmHost::default()),
        );
        let leaf = cg_root.join("berth/half");
        std::fs::create_dir_all(&leaf).unwrap();
        let socket = d.path().join("half.sock");
        // Stands in for the shim: its command line names the socket.
        let mut shim = std::process::Command::new("sh")
            .args(["-c", "read line"])
            .arg(&socket)
            // A shell waiting on the stdin pipe this test holds: no child
            // of its own to outlive it once recovery kills it, and no
            // descriptor of the test harness's output.
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(&socket, "").unwrap();
        // Until the child has exec'd, its command line is this test's: on a
        // loaded machine recovery could look before then and see no shim.
        let cmdline = format!("/proc/{}/cmdline", shim.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !std::fs::read(&cmdline)
            .unwrap_or_default()
            .windows(socket.as_os_str().len())
            .any(|w| w == socket.as_os_str().as_encoded_bytes())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the stand-in shim never exec'd"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let intent = cfg.root.join("sandbox-intents/half.json");
        std::fs::create_dir_all(intent.parent().unwrap()).unwrap();
        std::fs::write(
            &intent,
            serde_json::json!({
                "version": 1,
                "id": "half",
                "cgroup_path": "berth/half",
                "cgroup_created": [leaf],
                "shim_socket": socket,
            })
            .to_string(),
        )
        .unwrap();

        assert_eq!(m.recover().await.unwrap(), 0);
        let status = shim.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "shim killed");
        assert!(!leaf.exists(), "cgroup removed");
        assert!(cg_root.join("berth").exists(), "a parent it did not create stays");
        assert!(!socket.exists(), "socket removed");
        assert!(!intent.exists(), "intent dropped");
        // Idempotent: a second start finds nothing to do.
        assert_eq!(m.recover().await.unwrap(), 0);
    }

    /// A berthd killed inside CreateContainer left a container cgroup in
    /// the pod's cgroup that no record names: RemovePodSandbox removes it
    /// (rmdir of the pod cgroup failed with EBUSY forever before), also
    /// under a pod cgroup kubelet made (kept for kubelet to remove).
    #[tokio::test]
    async fn removing_a_pod_removes_container_cgroups_no_record_names() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config {
            root: d.path().join("root"),
            state: d.path().join("state"),
            ..Config::default()
        };
        let cg_root = d.path().join("cg");
        let m = SandboxManager::new(
            cfg.clone(),
            CgroupManager::new(&cg_root),
            Cni::new(vec![], Box::new(RealExec)),
            Arc::new(shm::fake::FakeShmHost::default()),
        );
        for (n, berth_made) in [("ab", true), ("cd", false)] {
            let id = n.repeat(32);
            let leaf = cg_root.join("pods").join(&id);
            let stale = leaf.join("ef".repeat(32));
            std::fs::create_dir_all(stale.join("child")).unwrap();
            let rec = SandboxRecord {
                id: id.clone(),
                name: format!("pod-{n}"),
                uid: n.into(),
                namespace: "default".into(),
                attempt: 0,
                hostname: String::new(),
                log_directory: String::new(),
                labels: Default::default(),
                annotations: Default::default(),
                runtime_handler: String::new(),
                created_at: 1,
                state: SandboxState::NotReady,
                cgroup_path: format!("/pods/{id}"),
                cgroup_created: if berth_made { vec![leaf.clone()] } else { vec![] },
                shim_pid: 0,
                shim_socket: d.path().join(format!("{n}.sock")),
                ns_paths: Default::default(),
                pid_mode: Default::default(),
                resources: None,
                overhead: None,
                network: None,
                files: None,
                shm: None,
                userns: None,
            };
            let sb = Arc::new(Sandbox::new(rec, None));
            m.sandboxes.lock().insert(id.clone(), sb.clone());
            m.remove(&sb).await.expect("RemovePodSandbox");
            assert!(!stale.exists(), "stale container cgroup removed");
            assert_eq!(
                leaf.exists(),
                !berth_made,
                "the pod cgroup goes with the pod only if berthd made it"
            );
        }
    }

    /// Start-up collects the shim and pod cgroup of a pod no record or
    /// intent names (what a crash outside the intents would leave), and
    /// leaves a known pod's alone.
    #[tokio::test]
    async fn start_up_collects_shims_and_pod_cgroups_no_record_names() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config {
            root: d.path().join("root"),
            state: d.path().join("state"),
            default_cgroup_parent: "/berth".into(),
            ..Config::default()
        };
        let cg_root = d.path().join("cg");
        let m = SandboxManager::new(
            cfg.clone(),
            CgroupManager::new(&cg_root),
            Cni::new(vec![], Box::new(RealExec)),
            Arc::new(shm::fake::FakeShmHost::default()),
        );
        let (orphan, known) = ("cd".repeat(32), "ab".repeat(32));
        // The known pod: an unreadable record still counts as known.
        std::fs::create_dir_all(cfg.root.join("sandboxes")).unwrap();
        std::fs::write(cfg.root.join(format!("sandboxes/{known}.json")), "{").unwrap();
        let socket = cfg.shim_socket(&orphan);
        let kept_socket = cfg.shim_socket(&known);
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        std::fs::write(&socket, "").unwrap();
        std::fs::write(&kept_socket, "").unwrap();
        let mut shim = std::process::Command::new("sh")
            .args(["-c", "read line"])
            .arg(&socket)
            // A shell waiting on the stdin pipe this test holds: no child
            // of its own to outlive it once recovery kills it, and no
            // descriptor of the test harness's output.
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let orphan_cg = cg_root.join("berth").join(&orphan);
        std::fs::create_dir_all(orphan_cg.join("ef".repeat(32))).unwrap();
        let kept_cg = cg_root.join("berth").join(&known);
        let foreign = cg_root.join("berth/not-berths");
        std::fs::create_dir_all(&kept_cg).unwrap();
        std::fs::create_dir_all(&foreign).unwrap();

        assert_eq!(m.recover().await.unwrap(), 0);
        // Bounded: a shim left running must fail the test, not hang it.
        let mut status = None;
        for _ in 0..500 {
            status = shim.try_wait().unwrap();
            if status.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if status.is_none() {
            let _ = shim.kill();
        }
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.and_then(|s| s.signal()),
            Some(libc::SIGKILL),
            "orphaned shim killed"
        );
        assert!(!socket.exists(), "its socket removed");
        assert!(!orphan_cg.exists(), "its pod cgroup removed, children first");
        assert!(kept_socket.exists() && kept_cg.exists(), "a known pod's are kept");
        assert!(
            foreign.exists(),
            "a cgroup not named like berthd's is never touched"
        );
        // Idempotent.
        assert_eq!(m.recover().await.unwrap(), 0);
        assert!(kept_cg.exists());
    }
}
