//! A CDI device's hooks, checked and put in the container's OCI spec; the
//! shim runs them at their moments (`berth-shim`'s `hooks` module).
//!
//! Spec files are node config (root-owned directories), so a hook's
//! program, args and env are trusted as written; still, the path must be
//! absolute (no lookup in anyone's PATH), nothing may carry a NUL (it
//! would cut an argument short), env entries must be `NAME=value`, and a
//! timeout must be positive, as the runtime spec requires.

use oci_spec::runtime::{Hook, HookBuilder, Hooks, Spec};

use super::spec;

/// When a hook runs: the runtime spec's names (CDI uses the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Deprecated; run with (before) createRuntime.
    Prestart,
    /// Create, runtime namespaces.
    CreateRuntime,
    /// Create, container namespaces.
    CreateContainer,
    /// Start, container namespaces.
    StartContainer,
    /// After the start.
    Poststart,
    /// After the stop.
    Poststop,
}

impl Moment {
    fn parse(name: &str) -> Option<Moment> {
        Some(match name {
            "prestart" => Moment::Prestart,
            "createRuntime" => Moment::CreateRuntime,
            "createContainer" => Moment::CreateContainer,
            "startContainer" => Moment::StartContainer,
            "poststart" => Moment::Poststart,
            "poststop" => Moment::Poststop,
            _ => return None,
        })
    }
}

/// The OCI hook a CDI hook stands for, or what is wrong with it.
pub fn oci_hook(h: &spec::Hook) -> Result<(Moment, Hook), String> {
    let moment = Moment::parse(&h.hook_name).ok_or_else(|| {
        format!(
            "hook name {:?} is not prestart, createRuntime, createContainer, startContainer, poststart or poststop",
            h.hook_name
        )
    })?;
    if !h.path.starts_with('/') {
        return Err(format!("hook path {:?} must be an absolute path", h.path));
    }
    let mut strings = std::iter::once(&h.path).chain(&h.args).chain(&h.env);
    if let Some(s) = strings.find(|s| s.contains('\0')) {
        return Err(format!("hook {:?}: {s:?} contains a NUL", h.path));
    }
    if let Some(e) = h
        .env
        .iter()
        .find(|e| e.split_once('=').is_none_or(|(k, _)| k.is_empty()))
    {
        return Err(format!("hook {:?}: env {e:?} is not NAME=value", h.path));
    }
    let mut b = HookBuilder::default().path(&h.path);
    if !h.args.is_empty() {
        b = b.args(h.args.clone());
    }
    if !h.env.is_empty() {
        b = b.env(h.env.clone());
    }
    if let Some(t) = h.timeout {
        if t <= 0 {
            return Err(format!(
                "hook {:?}: timeout {t} must be greater than zero",
                h.path
            ));
        }
        b = b.timeout(t);
    }
    let hook = b.build().map_err(|e| format!("hook {:?}: {e}", h.path))?;
    Ok((moment, hook))
}

/// Appends `hooks` to the spec's, each at its moment, in order.
pub fn add(spec: &mut Spec, hooks: Vec<(Moment, Hook)>) {
    if hooks.is_empty() {
        return;
    }
    let mut all: Hooks = spec.hooks().clone().unwrap_or_default();
    for (moment, hook) in hooks {
        let list = |l: &Option<Vec<Hook>>| {
            let mut l = l.clone().unwrap_or_default();
            l.push(hook.clone());
            Some(l)
        };
        match moment {
            #[allow(deprecated)]
            Moment::Prestart => {
                let l = list(all.prestart());
                all.set_prestart(l);
            }
            Moment::CreateRuntime => {
                let l = list(all.create_runtime());
                all.set_create_runtime(l);
            }
            Moment::CreateContainer => {
                let l = list(all.create_container());
                all.set_create_container(l);
            }
            Moment::StartContainer => {
                let l = list(all.start_container());
                all.set_start_container(l);
            }
            Moment::Poststart => {
                let l = list(all.poststart());
                all.set_poststart(l);
            }
            Moment::Poststop => {
                let l = list(all.poststop());
                all.set_poststop(l);
            }
        }
    }
    spec.set_hooks(Some(all));
}
