//! SIGHUP: load the configuration again from the same files and flags,
//! apply what can change in a running berthd (the log filter, registry
//! settings) and log what was applied and what waits for a restart.

use std::sync::Arc;

use tokio::signal::unix::Signal;

use super::logging::LogHandle;
use crate::config::layers::Sources;
use crate::config::reload::plan;
use crate::config::Config;
use crate::image::ImageStore;

/// What a reload can reach.
pub struct Reloader {
    /// Where the configuration came from.
    pub sources: Sources,
    /// The configuration in effect (start-up values plus applied reloads).
    pub running: Config,
    /// The log filter.
    pub log: LogHandle,
    /// The image store (registry settings).
    pub images: Arc<ImageStore>,
}

impl Reloader {
    /// Loads and applies once; a configuration that does not load changes
    /// nothing.
    pub fn reload(&mut self) {
        let fresh = match self.sources.load() {
            Ok(l) => l.config,
            Err(e) => {
                tracing::error!(error = %e, "configuration reload failed; nothing changed");
                return;
            }
        };
        let p = plan(&self.running, &fresh);
        if p.is_empty() {
            tracing::info!("configuration reloaded: nothing changed");
            return;
        }
        let mut applied = Vec::new();
        if p.apply.iter().any(|k| k == "log_level") {
            match self.log.set_level(&fresh.log_level) {
                Ok(()) => {
                    self.running.log_level = fresh.log_level.clone();
                    applied.push("log_level".to_string());
                }
                Err(e) => tracing::error!(error = %e, "log_level not reloaded"),
            }
        }
        let registries: Vec<String> = p
            .apply
            .iter()
            .filter(|k| k.starts_with("registry."))
            .cloned()
            .collect();
        if !registries.is_empty() {
            self.images.set_hosts(fresh.registry.clone());
            self.running.registry = fresh.registry;
            applied.extend(registries);
        }
        tracing::info!(
            reloaded = ?applied,
            needs_restart = ?p.restart,
            "configuration reloaded"
        );
    }

    /// Reloads on every SIGHUP that `hup` (from [`hangup`]) receives.
    pub fn spawn(mut self, mut hup: Signal) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                self.reload();
            }
        });
    }
}

/// Takes SIGHUP over from its default action (terminate); called first
/// thing at start, so from then on a SIGHUP never kills berthd. Signals
/// arriving before [`Reloader::spawn`] are kept and reload then.
pub fn hangup() -> crate::error::Result<Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| crate::error::Error::io("install SIGHUP handler", e))
}
