//! RunPodSandbox's intent record: what the call is about to make, written
//! before each side effect (crash-safe, like every record) and removed once
//! the sandbox record exists. A berthd killed in between leaves the intent;
//! start-up recovery undoes what it names, since no RemovePodSandbox will
//! ever name a sandbox that has no record. Pins and /dev/shm live in the
//! sandbox's state dir, which the orphan sweep already undoes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::SandboxManager;
use crate::error::Result;
use crate::net::cni::{self, Attachment};
use crate::store;

/// The side effects a RunPodSandbox may have made so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RunIntent {
    /// Sandbox id.
    pub id: String,
    /// Pod cgroup path (below the cgroup2 root), once it is about to be made.
    pub cgroup_path: Option<String>,
    /// The cgroup directories `ensure` created (only these are removed).
    pub cgroup_created: Vec<PathBuf>,
    /// Shim socket, once the shim is about to start.
    pub shim_socket: Option<PathBuf>,
    /// Shim pid, once it started.
    pub shim_pid: Option<u32>,
    /// CNI ADD arguments, once ADD is about to run.
    pub network: Option<NetIntent>,
}

/// The arguments of a CNI ADD, so DEL can be run with the same ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct NetIntent {
    pub conf_file: PathBuf,
    pub netns: PathBuf,
    pub ifname: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub capabilities: BTreeMap<String, serde_json::Value>,
}

impl SandboxManager {
    pub(crate) fn intent_path(&self, id: &str) -> PathBuf {
        self.cfg.root.join("sandbox-intents").join(format!("{id}.json"))
    }

    /// Persists `intent` before the side effect it announces.
    pub(crate) fn write_intent(&self, intent: &RunIntent) -> Result<()> {
        store::write_record(&self.intent_path(&intent.id), intent)
    }

    /// Undoes every intent whose sandbox has no record, then removes it.
    /// Each undo tolerates "already gone", so a crash here is retried at
    /// the next start.
    pub(crate) fn undo_intents(&self) -> Result<usize> {
        let dir = self.cfg.root.join("sandbox-intents");
        let mut n = 0;
        for path in store::list_records(&dir)? {
            let intent: RunIntent = match store::read_record(&path) {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!(intent = %path.display(), error = %e, "unreadable sandbox intent; left in place");
                    continue;
                }
            };
            if !self.record_path(&intent.id).exists() {
                self.undo(&intent);
                n += 1;
            }
            store::remove_record(&path)?;
        }
        Ok(n)
    }

    fn undo(&self, i: &RunIntent) {
        if let Some(net) = &i.network {
            let a = Attachment {
                container_id: i.id.clone(),
                netns: net.netns.clone(),
                ifname: net.ifname.clone(),
                pod_name: net.pod_name.clone(),
                pod_namespace: net.pod_namespace.clone(),
                pod_uid: net.pod_uid.clone(),
                capabilities: net.capabilities.clone(),
            };
            let res = cni::parse_conf_file(&net.conf_file)
                .or_else(|_| {
                    self.network_config()?
                        .ok_or_else(|| crate::error::Error::Network("no CNI config".into()))
                })
                .and_then(|list| self.cni.del(&list, &a, None));
            if let Err(e) = res {
                tracing::warn!(sandbox = %i.id, error = %e, "CNI DEL of a half-made sandbox failed");
            }
        }
        // By its socket on its command line, not by `shim_pid`: the pid is
        // recorded after the spawn returns, so a kill in between left a
        // shim the intent names only by its socket (the random-kill loop
        // found one).
        if let Some(socket) = &i.shim_socket {
            for pid in super::collect::processes_with_arg(socket) {
                // The process whose command line names this half-made
                // sandbox's shim socket: its shim.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Some(s) = &i.shim_socket {
            let _ = std::fs::remove_file(s);
        }
        if let Some(cg) = &i.cgroup_path {
            let leaf = self.cgroups.dir(cg);
            if let Err(e) = self.cgroups.remove_created(&i.cgroup_created, &leaf) {
                tracing::warn!(sandbox = %i.id, error = %e, "removing the cgroup of a half-made sandbox failed");
            }
        }
        tracing::warn!(sandbox = %i.id, "undid a RunPodSandbox that berthd did not finish");
    }
}
