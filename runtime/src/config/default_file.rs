//! `berthd config default`: every setting with its default, commented
//! out, each under a line saying what it does. The package installs this
//! as `/etc/berth/config.toml` (`contrib/config.toml`, kept equal to this
//! output by a test), so the file documents the node and changes nothing
//! until a line is uncommented or a drop-in overrides it.

use super::dump::key_text;
use super::Config;
use crate::error::{Error, Result};

/// One line of documentation per key (dotted for nested tables). A key
/// without an entry is still printed, just without its line.
const DESCRIPTIONS: &[(&str, &str)] = &[
    ("cgroup_driver", "How pod cgroups are named and made: \"cgroupfs\" (paths), \"systemd\" (slices, units over D-Bus) or \"auto\":\n systemd when the node booted with systemd (/run/systemd/system) and D-Bus answers, else cgroupfs.\n RuntimeConfig reports the driver in use; kubelet's cgroupDriver must match it."),
    ("cdi_spec_dirs", "CDI spec directories (JSON and YAML); a device in a later one replaces an earlier one's."),
    ("criu_path", "The criu binary CheckpointContainer runs; \"\" means criu on $PATH, then /usr/sbin, /sbin. Without one, checkpoints fail."),
    ("cgroup_root", "Where cgroup v2 is mounted."),
    ("cni_bin_dirs", "CNI plugin directories, searched in order."),
    ("cni_conf_dir", "CNI network configuration directory (NetworkReady is false while it is empty)."),
    ("container_rlimits", "Limits every container process starts with (CRI carries none); empty: berthd's own.\n Example: [[container_rlimits]] type = \"RLIMIT_NOFILE\", soft = 65536, hard = 65536"),
    ("default_cgroup_parent", "Pod cgroup parent used when RunPodSandbox leaves cgroup_parent empty."),
    ("http_address", "ip:port of the /metrics, /healthz, /readyz, /statusz, /flagz listener; \"\" is off. Plain HTTP: keep it on loopback."),
    ("kubelet_root", "kubelet's --root-dir: the volumes it fills itself under pods/<uid>/ (secret, configMap, projected,\n downwardAPI, etc-hosts, termination-log) are idmapped for hostUsers: false pods; other binds are not."),
    ("log_format", "Log format: \"text\" or \"json\"."),
    ("log_level", "tracing filter, e.g. \"info\", \"debug\", \"berth_runtime=debug\". SIGHUP reloads it."),
    ("memory_decrease_wait_ms", "How long a memory-limit decrease may wait for reclaim before it is refused."),
    ("pod_shm_size_bytes", "Size of each pod's /dev/shm tmpfs (bytes, > 0)."),
    ("root", "Persistent state: images, snapshots, container and sandbox records."),
    ("shim_path", "The berth-shim binary; \"\" means next to berthd, then $PATH."),
    ("socket", "The CRI socket kubelet and crictl connect to (mode 0660)."),
    ("state", "Runtime state that must not survive a reboot: sockets, namespace pins."),
    ("stream_address", "Where the exec/attach/port-forward server listens (port 0: any free port); clients must be able to dial it."),
    ("stream_idle_timeout_ms", "An exec, attach or port-forward connection idle this long is closed."),
    ("stream_token_ttl_ms", "How long a streaming URL's single-use token stays valid."),
    ("supplemental_groups_enforcement", "Node-wide supplementalGroupsPolicy: \"off\", \"upgrade\" (run Merge as Strict) or \"reject\" (refuse Merge)."),
    ("image_limits", "Bounds on what one image pull may unpack."),
    ("image_limits.max_image_bytes", "Uncompressed bytes one pull unpacks, all its new layers together."),
    ("image_limits.max_layer_bytes", "Uncompressed bytes of one layer, counted while it streams."),
    ("image_limits.max_layer_entries", "Files, directories and links in one layer."),
    ("image_limits.max_layers", "An image with more layers is refused before any download."),
    ("image_limits.max_path_bytes", "Bytes of one layer entry's path or link target."),
    ("registry", "Per-registry settings, keyed by host[:port] (\"docker.io\" for Docker Hub); SIGHUP reloads them.\n Example:\n   [registry.\"docker.io\"]\n   mirrors = [\"mirror.example:5000\"]   # tried in order, the registry last\n   plain_http = false\n   ca_file = \"/etc/berth/certs/lab.pem\"\n   skip_verify = false\n   username = \"user\"                   # used when a pull brings no credentials\n   password = \"secret\"                 # or auth = base64(user:password), or identity_token"),
    ("registry_timeouts", "Timeouts talking to registries and token servers (milliseconds)."),
    ("registry_timeouts.connect_ms", "DNS, TCP connect and TLS handshake."),
    ("registry_timeouts.idle_ms", "Longest pause in any read or write."),
    ("registry_timeouts.response_header_ms", "From a request sent to its response headers."),
];

/// The commented default configuration file.
pub fn render() -> Result<String> {
    let value = toml::Value::try_from(Config::default())
        .map_err(|e| Error::Internal(format!("serialize config: {e}")))?;
    let toml::Value::Table(table) = value else {
        return Err(Error::Internal("config is not a table".into()));
    };
    let mut out = String::from(
        "# berthd configuration. Every setting is shown with its default, commented\n\
         # out. berthd reads this file, then every /etc/berth/config.d/*.toml in\n\
         # lexical order (later files override earlier ones key by key; tables\n\
         # merge, arrays are replaced), then its flags. `berthd config dump` shows\n\
         # the result and where each value came from. Generated by\n\
         # `berthd config default`.\n",
    );
    for (k, v) in &table {
        if !v.is_table() {
            describe(k, &mut out);
            out.push_str(&format!("#{} = {v}\n", key_text(k)));
        }
    }
    for (k, v) in &table {
        let toml::Value::Table(sub) = v else { continue };
        describe(k, &mut out);
        if sub.is_empty() {
            continue;
        }
        out.push_str(&format!("#[{}]\n", key_text(k)));
        for (sk, sv) in sub {
            describe(&format!("{k}.{sk}"), &mut out);
            out.push_str(&format!("#{} = {sv}\n", key_text(sk)));
        }
    }
    Ok(out)
}

fn describe(key: &str, out: &mut String) {
    out.push('\n');
    if let Some((_, text)) = DESCRIPTIONS.iter().find(|(k, _)| *k == key) {
        for line in text.lines() {
            out.push_str(&format!(
                "#{}{line}\n",
                if line.starts_with(' ') { "" } else { " " }
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file with every `#key = value` / `#[table]` line uncommented;
    /// descriptions and examples (`# ...`) stay comments.
    fn uncommented(text: &str) -> String {
        text.lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_default_file_changes_nothing_and_uncommented_is_the_defaults() {
        let text = render().unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), Config::default());
        let active = uncommented(&text);
        assert_ne!(active, text);
        assert!(active.contains("\nroot = \"/var/lib/berth\"\n"), "{active}");
        assert!(active.contains("\n[image_limits]\nmax_layers = 128\n") || active.contains("[image_limits]"));
        let parsed: toml::Table = active.parse().unwrap();
        assert!(parsed.contains_key("log_level"));
        assert_eq!(Config::from_toml(&active).unwrap(), Config::default());
    }

    #[test]
    fn every_default_key_is_described() {
        let value = toml::Value::try_from(Config::default()).unwrap();
        let mut missing = Vec::new();
        for (k, v) in value.as_table().unwrap() {
            if !DESCRIPTIONS.iter().any(|(d, _)| d == k) {
                missing.push(k.clone());
            }
            if let toml::Value::Table(sub) = v {
                for sk in sub.keys() {
                    let dotted = format!("{k}.{sk}");
                    if !DESCRIPTIONS.iter().any(|(d, _)| *d == dotted) {
                        missing.push(dotted);
                    }
                }
            }
        }
        assert!(missing.is_empty(), "add a line to DESCRIPTIONS for {missing:?}");
    }

    /// The packaged file is this output; regenerate it with
    /// `cargo run -p berth-runtime --bin berthd -- config default > contrib/config.toml`.
    #[test]
    fn contrib_config_is_the_generated_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/config.toml");
        let committed = std::fs::read_to_string(&path).unwrap();
        assert!(
            committed == render().unwrap(),
            "contrib/config.toml differs from `berthd config default`; regenerate it with\n  \
             cargo run -p berth-runtime --bin berthd -- config default > contrib/config.toml"
        );
    }
}
