//! CNI (spec 1.0): loading the network configuration list and running its
//! plugin chain for ADD, CHECK and DEL.
//!
//! Plugins are executables; talking to them is behind [`PluginExec`] so the
//! chaining, argument and result logic is unit-tested with a fake.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

pub use super::plugin_exec::{PluginExec, RealExec};

use crate::error::{Error, Result};

/// A loaded network configuration list.
#[derive(Debug, Clone)]
pub struct NetConfList {
    /// The file it came from.
    pub source: PathBuf,
    /// `name`.
    pub name: String,
    /// `cniVersion`.
    pub cni_version: String,
    /// `plugins`, each a JSON object with at least `type`.
    pub plugins: Vec<Map<String, Value>>,
}

/// Finds the configuration kubelet expects the runtime to use: the file in
/// `dir` with the lowest name (`.conflist`, `.conf`, `.json`) that parses. A
/// single-plugin `.conf` is treated as a list of one.
pub fn load_conf_dir(dir: &Path) -> Result<Option<NetConfList>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read CNI config dir {}", dir.display()), e)),
    };
    files.sort();
    for f in files {
        match parse_conf_file(&f) {
            Ok(c) => return Ok(Some(c)),
            Err(e) => tracing::warn!(file = %f.display(), error = %e, "skipping invalid CNI config"),
        }
    }
    Ok(None)
}

/// Parses one `.conflist` or `.conf` file.
pub fn parse_conf_file(path: &Path) -> Result<NetConfList> {
    let text = std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let v: Value = serde_json::from_slice(&text)
        .map_err(|e| Error::InvalidArgument(format!("CNI config {}: {e}", path.display())))?;
    let bad = |what: &str| Error::InvalidArgument(format!("CNI config {}: {what}", path.display()));
    let obj = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no \"name\""))?;
    let version = obj.get("cniVersion").and_then(Value::as_str).unwrap_or("0.4.0");
    let plugins: Vec<Map<String, Value>> = match obj.get("plugins") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|p| {
                p.as_object()
                    .cloned()
                    .ok_or_else(|| bad("a plugin is not an object"))
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad("\"plugins\" is not a list")),
        None => vec![obj.clone()],
    };
    if plugins.is_empty() {
        return Err(bad("no plugins"));
    }
    for p in &plugins {
        if p.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(bad("a plugin has no \"type\""));
        }
    }
    Ok(NetConfList {
        source: path.to_path_buf(),
        name: name.to_string(),
        cni_version: version.to_string(),
        plugins,
    })
}

/// What a pod asks of the network.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    /// CNI_CONTAINERID: the sandbox id.
    pub container_id: String,
    /// CNI_NETNS: the pinned network namespace.
    pub netns: PathBuf,
    /// CNI_IFNAME.
    pub ifname: String,
    /// K8S_POD_* CNI_ARGS.
    pub pod_name: String,
    /// Pod namespace.
    pub pod_namespace: String,
    /// Pod UID.
    pub pod_uid: String,
    /// Runtime config by capability name (`portMappings`, `bandwidth`,
    /// `ipRanges`); passed only to plugins that declare the capability.
    pub capabilities: BTreeMap<String, Value>,
}

/// Runs configuration lists against attachments.
pub struct Cni {
    bin_dirs: Vec<PathBuf>,
    exec: Box<dyn PluginExec>,
}

impl Cni {
    /// Plugins are looked up in `bin_dirs`, in order.
    pub fn new(bin_dirs: Vec<PathBuf>, exec: Box<dyn PluginExec>) -> Self {
        Cni { bin_dirs, exec }
    }

    fn find_plugin(&self, kind: &str) -> Result<PathBuf> {
        if kind.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "CNI plugin type {kind:?} is not a plain name"
            )));
        }
        self.bin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::Network(format!(
                    "CNI plugin {kind:?} not found in {}",
                    self.bin_dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    fn env(&self, cmd: &str, a: &Attachment) -> Vec<(String, String)> {
        let path = self
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        vec![
            ("CNI_COMMAND".into(), cmd.into()),
            ("CNI_CONTAINERID".into(), a.container_id.clone()),
            ("CNI_NETNS".into(), a.netns.display().to_string()),
            ("CNI_IFNAME".into(), a.ifname.clone()),
            ("CNI_PATH".into(), path),
            (
                "CNI_ARGS".into(),
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                    a.pod_namespace, a.pod_name, a.container_id, a.pod_uid
                ),
            ),
        ]
    }

    /// The stdin of one plugin in the chain.
    fn plugin_input(
        list: &NetConfList,
        plugin: &Map<String, Value>,
        a: &Attachment,
        prev: Option<&Value>,
    ) -> Vec<u8> {
        let mut conf = plugin.clone();
        conf.insert("name".into(), json!(list.name));
        conf.insert("cniVersion".into(), json!(list.cni_version));
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
        let wanted: Vec<&String> = plugin
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|caps| {
                caps.iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(k, _)| k)
                    .collect()
            })
            .unwrap_or_default();
        let runtime: Map<String, Value> = a
            .capabilities
            .iter()
            .filter(|(k, _)| wanted.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        serde_json::to_vec(&conf).expect("JSON encodes")
    }

    /// ADD through the whole chain; returns the final result. If a plugin
    /// fails, the chain is deleted again so nothing is left half set up.
    pub fn add(&self, list: &NetConfList, a: &Attachment) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let kind = plugin["type"].as_str().unwrap_or_default();
            let bin = self.find_plugin(kind)?;
            let input = Self::plugin_input(list, plugin, a, prev.as_ref());
            let out = match self.exec.exec(&bin, &self.env("ADD", a), &input) {
                Ok(out) => out,
                Err(e) => {
                    if let Err(del) = self.del(list, a, prev.as_ref()) {
                        tracing::warn!(error = %del, "CNI DEL after a failed ADD also failed");
                    }
                    return Err(e);
                }
            };
            let v: Value = serde_json::from_slice(&out)
                .map_err(|e| Error::Network(format!("CNI plugin {kind} printed an invalid result: {e}")))?;
            prev = Some(v);
        }
        prev.ok_or_else(|| Error::Network("CNI config has no plugins".into()))
    }

    /// CHECK through the chain (CNI ≥ 0.4.0 only; older configs are skipped).
    pub fn check(&self, list: &NetConfList, a: &Attachment, result: &Value) -> Result<()> {
        if version_lt(&list.cni_version, "0.4.0") {
            return Ok(());
        }
        for plugin in &list.plugins {
            let bin = self.find_plugin(plugin["type"].as_str().unwrap_or_default())?;
            let input = Self::plugin_input(list, plugin, a, Some(result));
            self.exec.exec(&bin, &self.env("CHECK", a), &input)?;
        }
        Ok(())
    }

    /// DEL through the chain in reverse. Every plugin is tried; the first
    /// error is returned so the caller can retry later.
    pub fn del(&self, list: &NetConfList, a: &Attachment, result: Option<&Value>) -> Result<()> {
        let mut first_err = None;
        for plugin in list.plugins.iter().rev() {
            let res = self
                .find_plugin(plugin["type"].as_str().unwrap_or_default())
                .and_then(|bin| {
                    let input = Self::plugin_input(list, plugin, a, result);
                    self.exec.exec(&bin, &self.env("DEL", a), &input)
                });
            if let Err(e) = res {
                tracing::warn!(error = %e, "CNI DEL step failed");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

fn version_lt(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) < parse(b)
}

/// The pod IPs of a CNI result, IPv4 first (kubelet takes the first as the
/// pod's primary IP), without prefix lengths.
pub fn result_ips(result: &Value) -> Vec<String> {
    let mut ips: Vec<String> = result
        .get("ips")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|ip| ip.get("address").and_then(Value::as_str))
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
                .collect()
        })
        .unwrap_or_default();
    ips.sort_by_key(|ip| ip.contains(':'));
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records invocations; answers from a script of (plugin name, outcome).
    #[derive(Clone, Default)]
    struct Fake {
        calls: Arc<Mutex<Vec<(String, String, Value)>>>,
        fail: Arc<Mutex<Option<(String, String)>>>,
    }

    impl PluginExec for Fake {
        fn exec(&self, plugin: &Path, env: &[(String, String)], stdin: &[u8]) -> Result<Vec<u8>> {
            let name = plugin.file_name().unwrap().to_string_lossy().to_string();
            let cmd = env.iter().find(|(k, _)| k == "CNI_COMMAND").unwrap().1.clone();
            let input: Value = serde_json::from_slice(stdin).unwrap();
            self.calls
                .lock()
                .unwrap()
                .push((name.clone(), cmd.clone(), input));
            if let Some((n, c)) = self.fail.lock().unwrap().clone() {
                if n == name && c == cmd {
                    return Err(Error::Network(format!("{name} {cmd} failed")));
                }
            }
            Ok(format!(
                r#"{{"cniVersion":"1.0.0","ips":[{{"address":"fd00::{n}/64"}},{{"address":"10.88.0.{n}/16","gateway":"10.88.0.1"}}]}}"#,
                n = name.len()
            )
            .into_bytes())
        }
    }

    fn setup() -> (tempfile::TempDir, NetConfList, Fake, Cni) {
        let d = tempfile::tempdir().unwrap();
        for p in ["bridge", "portmap"] {
            std::fs::write(d.path().join(p), "").unwrap();
        }
        let conf = d.path().join("10-test.conflist");
        std::fs::write(
            &conf,
            r#"{"cniVersion":"1.0.0","name":"podnet","plugins":[
                {"type":"bridge","bridge":"cni0"},
                {"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        let list = parse_conf_file(&conf).unwrap();
        let fake = Fake::default();
        let cni = Cni::new(
            vec![PathBuf::from("/nonexistent"), d.path().to_path_buf()],
            Box::new(fake.clone()),
        );
        (d, list, fake, cni)
    }

    fn attachment() -> Attachment {
        Attachment {
            container_id: "sb1".into(),
            netns: "/run/berth/sandboxes/sb1/ns/net".into(),
            ifname: "eth0".into(),
            pod_name: "web".into(),
            pod_namespace: "default".into(),
            pod_uid: "u1".into(),
            capabilities: BTreeMap::from([
                (
                    "portMappings".to_string(),
                    json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
                ),
                ("bandwidth".to_string(), json!({"ingressRate": 1000})),
            ]),
        }
    }

    #[test]
    fn lowest_name_wins_and_invalid_files_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        assert!(load_conf_dir(&d.path().join("missing")).unwrap().is_none());
        assert!(load_conf_dir(d.path()).unwrap().is_none());
        std::fs::write(d.path().join("05-broken.conflist"), "{").unwrap();
        std::fs::write(
            d.path().join("20-b.conf"),
            r#"{"cniVersion":"0.3.1","name":"b","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"ptp"}]}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("00-readme.txt"), "not a config").unwrap();
        let c = load_conf_dir(d.path()).unwrap().unwrap();
        assert_eq!(c.name, "a");
        std::fs::remove_file(d.path().join("10-a.conflist")).unwrap();
        let c = load_conf_dir(d.path()).unwrap().unwrap();
        assert_eq!(
            (c.name.as_str(), c.plugins.len(), c.cni_version.as_str()),
            ("b", 1, "0.3.1")
        );
    }

    #[test]
    fn add_chains_results_and_passes_capabilities_only_to_plugins_that_ask() {
        let (_d, list, fake, cni) = setup();
        let res = cni.add(&list, &attachment()).unwrap();
        assert_eq!(
            result_ips(&res),
            vec!["10.88.0.7".to_string(), "fd00::7".to_string()]
        );
        let calls = fake.calls.lock().unwrap();
        assert_eq!(calls.len(), 2);
        let (name, cmd, bridge_in) = &calls[0];
        assert_eq!((name.as_str(), cmd.as_str()), ("bridge", "ADD"));
        assert_eq!(bridge_in["name"], "podnet");
        assert_eq!(bridge_in["cniVersion"], "1.0.0");
        assert!(bridge_in.get("prevResult").is_none());
        assert!(
            bridge_in.get("runtimeConfig").is_none(),
            "bridge declared no capabilities"
        );
        let portmap_in = &calls[1].2;
        assert_eq!(portmap_in["prevResult"]["ips"][1]["address"], "10.88.0.6/16");
        assert_eq!(portmap_in["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(portmap_in["runtimeConfig"].get("bandwidth").is_none());
    }

    #[test]
    fn failed_add_deletes_the_chain_and_del_tries_every_plugin() {
        let (_d, list, fake, cni) = setup();
        *fake.fail.lock().unwrap() = Some(("portmap".into(), "ADD".into()));
        let e = cni.add(&list, &attachment()).unwrap_err().to_string();
        assert!(e.contains("portmap ADD failed"), "{e}");
        let cmds: Vec<_> = fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c.0, c.1))
            .collect();
        assert_eq!(cmds, ["bridge ADD", "portmap ADD", "portmap DEL", "bridge DEL"]);

        fake.calls.lock().unwrap().clear();
        *fake.fail.lock().unwrap() = Some(("portmap".into(), "DEL".into()));
        let e = cni.del(&list, &attachment(), None).unwrap_err().to_string();
        assert!(e.contains("portmap DEL failed"));
        let cmds: Vec<_> = fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c.0, c.1))
            .collect();
        assert_eq!(
            cmds,
            ["portmap DEL", "bridge DEL"],
            "bridge still deleted after portmap failed"
        );
    }

    #[test]
    fn missing_plugins_and_bad_configs_are_clear_errors() {
        let (d, _list, _fake, cni) = setup();
        let conf = d.path().join("x.conflist");
        std::fs::write(
            &conf,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"macvlan"}]}"#,
        )
        .unwrap();
        let list = parse_conf_file(&conf).unwrap();
        let e = cni.add(&list, &attachment()).unwrap_err().to_string();
        assert!(e.contains("\"macvlan\" not found"), "{e}");
        std::fs::write(
            &conf,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#,
        )
        .unwrap();
        let e = parse_conf_file(&conf).unwrap_err().to_string();
        assert!(e.contains("no \"type\""), "{e}");
    }
}
