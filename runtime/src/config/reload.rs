//! What a SIGHUP may change in a running berthd. The log filter and the
//! registry settings (mirrors, credentials, TLS) are read afresh by every
//! log line and every pull, so they take effect at once; everything else
//! (paths, sockets, cgroup and CNI settings, limits other managers were
//! built with) is only reported as needing a restart.

use std::collections::BTreeMap;

use super::Config;

/// Top-level keys a reload applies.
pub const RELOADABLE: &[&str] = &["log_level", "registry"];

/// The difference between the running configuration and a fresh load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Changed keys a reload applies now (dotted).
    pub apply: Vec<String>,
    /// Changed keys that take effect only after a restart (dotted).
    pub restart: Vec<String>,
}

impl Plan {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.apply.is_empty() && self.restart.is_empty()
    }
}

/// Compares `running` with `new`, key by key.
pub fn plan(running: &Config, new: &Config) -> Plan {
    let (old, fresh) = (flatten(running), flatten(new));
    let mut changed: Vec<String> = old
        .iter()
        .filter(|(k, v)| fresh.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(fresh.keys().filter(|k| !old.contains_key(*k)).cloned())
        .filter(|k| !k.starts_with("registry."))
        .collect();
    // Registries are compared whole, per host: secrets serialize redacted,
    // so a changed password is invisible to the flattened view.
    let hosts: std::collections::BTreeSet<&String> =
        running.registry.keys().chain(new.registry.keys()).collect();
    for host in hosts {
        if running.registry.get(host) != new.registry.get(host) {
            changed.push(format!("registry.{}", super::dump::key_text(host)));
        }
    }
    changed.sort();
    changed.dedup();
    let mut p = Plan::default();
    for key in changed {
        let top = key.split('.').next().unwrap_or(&key);
        if RELOADABLE.contains(&top) {
            p.apply.push(key);
        } else {
            p.restart.push(key);
        }
    }
    p
}

/// `key.sub = value` for every leaf (arrays are leaves).
fn flatten(cfg: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(toml::Value::Table(t)) = toml::Value::try_from(cfg) {
        walk("", &t, &mut out);
    }
    out
}

fn walk(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{}", super::dump::key_text(k))
        };
        match v {
            toml::Value::Table(sub) => walk(&key, sub, out),
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_changed_is_an_empty_plan() {
        assert!(plan(&Config::default(), &Config::default()).is_empty());
    }

    #[test]
    fn log_level_and_registry_apply_the_rest_needs_a_restart() {
        let running =
            Config::from_toml("[registry.\"reg.lab\"]\nusername = \"u\"\npassword = \"old\"\n").unwrap();
        let new = Config::from_toml(
            "log_level = \"debug\"\nroot = \"/data/berth\"\n[image_limits]\nmax_layers = 5\n\
             [registry.\"reg.lab\"]\nusername = \"u\"\npassword = \"new\"\n\
             [registry.\"docker.io\"]\nmirrors = [\"m.lab\"]\n",
        )
        .unwrap();
        let p = plan(&running, &new);
        assert_eq!(
            p.apply,
            vec![
                "log_level".to_string(),
                "registry.\"docker.io\"".to_string(),
                "registry.\"reg.lab\"".to_string(),
            ]
        );
        assert_eq!(
            p.restart,
            vec!["image_limits.max_layers".to_string(), "root".to_string()]
        );
    }

    #[test]
    fn a_removed_registry_is_a_change() {
        let running = Config::from_toml("[registry.\"reg.lab\"]\nplain_http = true\n").unwrap();
        let p = plan(&running, &Config::default());
        assert_eq!(p.apply, vec!["registry.\"reg.lab\"".to_string()]);
        assert!(p.restart.is_empty());
    }
}
