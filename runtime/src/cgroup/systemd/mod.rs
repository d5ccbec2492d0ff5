//! The systemd cgroup driver: containers and shims as transient scope
//! units, pod cgroups as slices, created and resized through systemd's
//! D-Bus API (`org.freedesktop.systemd1.Manager`) instead of `mkdir`.
//!
//! On a systemd node the cgroup tree belongs to systemd: a directory Berth
//! made behind its back is one systemd may remove or rewrite (it realises
//! unit cgroups again on `daemon-reload`), and `systemctl` and
//! `systemd-cgls` would not know it. runc, crun and CRI-O ask systemd for
//! a transient scope per container; so does Berth.
//!
//! All D-Bus traffic goes through [`Bus`]; the job bookkeeping here
//! (subscribe before the call, wait for the job's `JobRemoved`, map its
//! result) is unit-tested against a scripted bus, the real one
//! ([`dbus::SystemBus`]) in the systemd VM.

pub mod dbus;
pub mod holder;
pub mod properties;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

pub use self::properties::{Property, Value};
use crate::error::{Error, Result};

/// A finished systemd job (the `JobRemoved` signal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRemoved {
    /// The job's object path.
    pub job: String,
    /// The unit it was for.
    pub unit: String,
    /// `done`, `canceled`, `timeout`, `failed`, `dependency` or `skipped`.
    pub result: String,
}

/// The calls of systemd's manager interface Berth makes.
#[tonic::async_trait]
pub trait Bus: Send + Sync + std::fmt::Debug {
    /// Starts delivering `JobRemoved` signals. Called before the call whose
    /// job is awaited, so a job that ends at once is not missed.
    async fn subscribe(&self) -> Result<UnboundedReceiver<JobRemoved>>;
    /// `StartTransientUnit(name, "replace", props, [])`: the job's path.
    /// A unit of that name already loaded is [`Error::AlreadyExists`].
    async fn start_transient_unit(&self, name: &str, props: Vec<Property>) -> Result<String>;
    /// `StopUnit(name, "replace")`: the job's path, None when no such unit
    /// is loaded (stopped already, collected by systemd).
    async fn stop_unit(&self, name: &str) -> Result<Option<String>>;
    /// `SetUnitProperties(name, true, props)` (runtime only: a transient
    /// unit has no file to persist to).
    async fn set_unit_properties(&self, name: &str, props: Vec<Property>) -> Result<()>;
}

/// How long a start or stop job may take before Berth gives up on it.
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// Transient units for pods, containers and shims.
#[derive(Debug, Clone)]
pub struct Systemd {
    bus: Arc<dyn Bus>,
    job_timeout: Duration,
}

/// A container's scope unit name.
pub fn container_scope(container_id: &str) -> String {
    format!("berth-{container_id}.scope")
}

/// A pod shim's scope unit name.
pub fn shim_scope(sandbox_id: &str) -> String {
    format!("berth-shim-{sandbox_id}.scope")
}

impl Systemd {
    /// A driver talking over `bus`.
    pub fn new(bus: Arc<dyn Bus>) -> Self {
        Systemd {
            bus,
            job_timeout: JOB_TIMEOUT,
        }
    }

    /// The driver over the system bus, or systemd's private socket when no
    /// bus daemon runs; a clear error when systemd is not there.
    pub async fn connect() -> Result<Self> {
        Ok(Self::new(Arc::new(dbus::SystemBus::connect().await?)))
    }

    #[cfg(test)]
    fn with_job_timeout(mut self, t: Duration) -> Self {
        self.job_timeout = t;
        self
    }

    /// Waits for `job` among the signals of `rx`.
    async fn wait(&self, rx: &mut UnboundedReceiver<JobRemoved>, job: &str, unit: &str) -> Result<()> {
        let found = tokio::time::timeout(self.job_timeout, async {
            while let Some(j) = rx.recv().await {
                if j.job == job {
                    return Some(j);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(j)) if j.result == "done" => Ok(()),
            Ok(Some(j)) => Err(Error::FailedPrecondition(format!(
                "systemd job {job} for {unit} ended with result {:?} (see journalctl -u {unit})",
                j.result
            ))),
            Ok(None) => Err(Error::Internal(format!(
                "the D-Bus connection to systemd closed while waiting for job {job} ({unit})"
            ))),
            Err(_) => Err(Error::Timeout(format!(
                "systemd job {job} for {unit} did not finish in {:?}",
                self.job_timeout
            ))),
        }
    }

    /// Starts transient unit `name` with `props` and waits until systemd
    /// has it running.
    pub async fn start(&self, name: &str, props: Vec<Property>) -> Result<()> {
        let mut rx = self.bus.subscribe().await?;
        let job = self.bus.start_transient_unit(name, props).await?;
        self.wait(&mut rx, &job, name).await
    }

    /// A container's (or shim's) scope in `slice`, holding `pids`, with
    /// `Delegate=yes` (the cgroup below it is Berth's: device filter,
    /// files systemd has no property for) and `resources`.
    pub async fn start_scope(
        &self,
        name: &str,
        slice: &str,
        pids: &[u32],
        resources: Vec<Property>,
    ) -> Result<()> {
        let mut props: Vec<Property> = vec![
            ("Description", Value::Str(format!("berth {name}"))),
            ("Slice", Value::Str(slice.to_string())),
            ("Delegate", Value::Bool(true)),
            ("PIDs", Value::U32s(pids.to_vec())),
            // Not stopped with the shutdown target's conflicts before
            // berthd and the shims are: a pod outlives service restarts.
            ("DefaultDependencies", Value::Bool(false)),
            ("MemoryAccounting", Value::Bool(true)),
            ("CPUAccounting", Value::Bool(true)),
            ("TasksAccounting", Value::Bool(true)),
        ];
        props.extend(resources);
        self.start(name, props).await
    }

    /// Starts `slice` as a transient slice (a pod slice kubelet did not
    /// make, e.g. under crictl). Returns false when the slice unit exists
    /// already, so the caller knows it is not Berth's to remove.
    pub async fn start_slice(&self, slice: &str, limits: Vec<Property>) -> Result<bool> {
        let mut props = vec![
            ("Description", Value::Str(format!("berth pod {slice}"))),
            ("DefaultDependencies", Value::Bool(false)),
            ("MemoryAccounting", Value::Bool(true)),
            ("CPUAccounting", Value::Bool(true)),
            ("TasksAccounting", Value::Bool(true)),
            ("TasksMax", Value::U64(properties::INFINITY)),
        ];
        props.extend(limits);
        match self.start(slice, props).await {
            Ok(()) => Ok(true),
            Err(Error::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Stops unit `name` and waits for its `JobRemoved`; a unit systemd
    /// does not know (never started, or collected once its processes
    /// exited) is fine.
    pub async fn stop(&self, name: &str) -> Result<()> {
        let mut rx = self.bus.subscribe().await?;
        match self.bus.stop_unit(name).await? {
            None => Ok(()),
            Some(job) => self.wait(&mut rx, &job, name).await,
        }
    }

    /// A container's scope `berth-<id>.scope` in the slice of its pod's
    /// cgroup `pod_cgroup_path`, with `desired`'s resources as properties.
    /// The returned holder is the scope's only process until the
    /// container's own joins it; drop it then.
    pub async fn start_container_scope(
        &self,
        container_id: &str,
        pod_cgroup_path: &str,
        desired: &crate::cgroup::resize::Desired,
    ) -> Result<holder::Holder> {
        let (props, _direct) = properties::from_desired(desired)?;
        let holder = holder::Holder::spawn()?;
        self.start_scope(
            &container_scope(container_id),
            slice_of(pod_cgroup_path),
            &[holder.pid()],
            props,
        )
        .await?;
        Ok(holder)
    }

    /// Sets resource properties of a running unit. Called only after the
    /// cgroup accepted the same values, so systemd never holds a limit the
    /// cgroup refused.
    pub async fn set_properties(&self, name: &str, props: Vec<Property>) -> Result<()> {
        self.bus.set_unit_properties(name, props).await
    }
}

/// A systemd cgroup parent name as kubelet passes it: `<name>.slice`.
pub fn slice_of(cgroup_parent: &str) -> &str {
    cgroup_parent.rsplit('/').next().unwrap_or(cgroup_parent)
}

#[cfg(test)]
mod tests;
