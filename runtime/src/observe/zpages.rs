//! `/statusz` and `/flagz` in the shape Kubernetes v1.35 components serve:
//! a plain-text page for people, or (negotiated, see [`super::negotiate`])
//! a versioned `config.k8s.io/v1alpha1` object. Secrets never appear: the
//! config's secret type serializes redacted, and any key that names a
//! secret is redacted again here.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::negotiate::{self, Format, GROUP, VERSION};
use crate::config::secret::{is_secret, REDACTED};
use crate::config::Config;

/// The component name z-pages report.
pub const COMPONENT: &str = "berthd";

/// The warning Kubernetes puts on every plain-text z-page.
const WARNING: &str = "Warning: This endpoint is not meant to be machine parseable, has no formatting compatibility guarantees and is for debugging purposes only.";

/// What the z-pages show; fixed at start-up.
#[derive(Debug, Clone)]
pub struct ZPages {
    /// When berthd started.
    pub started: SystemTime,
    /// berthd's version.
    pub version: &'static str,
    /// The listener's read-only debugging paths.
    pub paths: Vec<&'static str>,
    /// Every effective flag and config value, secrets redacted.
    pub flags: BTreeMap<String, String>,
}

/// A rendered page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Its Content-Type.
    pub content_type: String,
    /// Its body.
    pub body: String,
}

impl ZPages {
    /// `/statusz` in `format`.
    pub fn statusz(&self, format: Format, now: SystemTime) -> Page {
        let up = now.duration_since(self.started).unwrap_or_default().as_secs();
        let started = humantime::format_rfc3339_seconds(self.started).to_string();
        match format {
            Format::Text => Page {
                content_type: "text/plain; charset=utf-8".into(),
                body: format!(
                    "\n{COMPONENT} statusz\n{WARNING}\n\nStarted: {started}\nUp: {} hr {:02} min {:02} sec\nBinary version: {}\nPaths: {}\n",
                    up / 3600,
                    (up / 60) % 60,
                    up % 60,
                    self.version,
                    self.paths.join(" "),
                ),
            },
            Format::Json => json_page(
                "Statusz",
                json!({
                    "startTime": started,
                    "uptimeSeconds": up,
                    "binaryVersion": self.version,
                    "paths": self.paths,
                }),
            ),
        }
    }

    /// `/flagz` in `format`.
    pub fn flagz(&self, format: Format) -> Page {
        match format {
            Format::Text => {
                let mut body = format!("\n{COMPONENT} flags\n{WARNING}\n\n");
                for (k, v) in &self.flags {
                    body.push_str(&format!("{k}={v}\n"));
                }
                Page {
                    content_type: "text/plain; charset=utf-8".into(),
                    body,
                }
            }
            Format::Json => json_page("Flagz", json!({ "flags": self.flags })),
        }
    }
}

/// The versioned object: TypeMeta, ObjectMeta (name), then `fields`.
fn json_page(kind: &str, fields: Value) -> Page {
    let mut obj = json!({
        "kind": kind,
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": { "name": COMPONENT },
    });
    if let (Some(o), Value::Object(f)) = (obj.as_object_mut(), fields) {
        o.extend(f);
    }
    Page {
        content_type: negotiate::json_media_type(kind),
        body: obj.to_string(),
    }
}

/// The 406 answer: a Kubernetes `Status` naming what is served.
pub fn not_acceptable(e: &negotiate::NotAcceptable) -> Page {
    Page {
        content_type: "application/json".into(),
        body: json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": e.to_string(),
            "reason": "NotAcceptable",
            "code": 406,
        })
        .to_string(),
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {
            let shown = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            let shown = if is_secret(prefix) && !shown.is_empty() {
                REDACTED.to_string()
            } else {
                shown
            };
            out.insert(prefix.to_string(), shown);
        }
    }
}

/// Every effective setting (config file, then flags applied), keyed as in
/// the config file (nested tables joined with `.`), plus the config file
/// used.
pub fn effective_flags(config_file: Option<&Path>, cfg: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(
        "config".to_string(),
        config_file.map(|p| p.display().to_string()).unwrap_or_default(),
    );
    let v = serde_json::to_value(cfg).unwrap_or(Value::Null);
    flatten("", &v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pages() -> ZPages {
        let cfg = Config::from_toml(
            "[registry.\"reg.lab:5000\"]\nusername = \"berth\"\npassword = \"s3cret-pass\"\n\
             auth = \"YmVydGg6czNjcmV0LXBhc3M=\"\n",
        )
        .unwrap();
        ZPages {
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            version: "0.1.0",
            paths: vec!["/flagz", "/healthz", "/metrics", "/readyz", "/statusz"],
            flags: effective_flags(Some(Path::new("/etc/berth/config.toml")), &cfg),
        }
    }

    #[test]
    fn statusz_json_is_the_v1alpha1_object() {
        let z = pages();
        let now = z.started + Duration::from_secs(3725);
        let p = z.statusz(Format::Json, now);
        assert_eq!(
            p.content_type,
            "application/json;v=v1alpha1;g=config.k8s.io;as=Statusz"
        );
        let v: Value = serde_json::from_str(&p.body).unwrap();
        assert_eq!(v["kind"], "Statusz");
        assert_eq!(v["apiVersion"], "config.k8s.io/v1alpha1");
        assert_eq!(v["metadata"]["name"], "berthd");
        assert_eq!(v["startTime"], "2023-11-14T22:13:20Z");
        assert_eq!(v["uptimeSeconds"], 3725);
        assert_eq!(v["binaryVersion"], "0.1.0");
        assert_eq!(v["paths"][2], "/metrics");
    }

    #[test]
    fn statusz_text_is_for_people() {
        let z = pages();
        let p = z.statusz(Format::Text, z.started + Duration::from_secs(3725));
        assert!(p.content_type.starts_with("text/plain"));
        assert!(p.body.contains("berthd statusz\nWarning: "), "{}", p.body);
        assert!(
            p.body
                .contains("Started: 2023-11-14T22:13:20Z\nUp: 1 hr 02 min 05 sec\n"),
            "{}",
            p.body
        );
        assert!(
            p.body
                .contains("Paths: /flagz /healthz /metrics /readyz /statusz\n"),
            "{}",
            p.body
        );
    }

    #[test]
    fn flagz_shows_every_setting_and_no_secret() {
        let z = pages();
        for p in [z.flagz(Format::Text), z.flagz(Format::Json)] {
            assert!(!p.body.contains("s3cret-pass"), "{}", p.body);
            assert!(!p.body.contains("YmVydGg6"), "{}", p.body);
        }
        let v: Value = serde_json::from_str(&z.flagz(Format::Json).body).unwrap();
        assert_eq!(v["kind"], "Flagz");
        assert_eq!(v["apiVersion"], "config.k8s.io/v1alpha1");
        assert_eq!(v["metadata"]["name"], "berthd");
        let f = &v["flags"];
        assert_eq!(f["registry.reg.lab:5000.password"], REDACTED);
        assert_eq!(f["registry.reg.lab:5000.auth"], REDACTED);
        assert_eq!(f["registry.reg.lab:5000.username"], "berth");
        assert_eq!(f["registry.reg.lab:5000.identity_token"], "", "unset stays empty");
        assert_eq!(f["config"], "/etc/berth/config.toml");
        assert_eq!(f["socket"], "/run/berth/berth.sock");
        assert_eq!(f["cni_bin_dirs"], r#"["/opt/cni/bin","/usr/lib/cni"]"#);
        // Every top-level config key is there.
        let all = serde_json::to_value(Config::default()).unwrap();
        for k in all.as_object().unwrap().keys() {
            assert!(
                f.as_object()
                    .unwrap()
                    .keys()
                    .any(|fk| fk == k || fk.starts_with(&format!("{k}.")))
                    || k == "registry",
                "{k} missing from flagz"
            );
        }
        assert!(z
            .flagz(Format::Text)
            .body
            .contains("\nregistry.reg.lab:5000.password=[redacted]\n"));
    }

    #[test]
    fn secrets_are_redacted_by_key_even_if_they_slip_through() {
        let mut out = BTreeMap::new();
        flatten(
            "",
            &json!({"a": {"password": "x", "registry_token": "y", "note": "z"}}),
            &mut out,
        );
        assert_eq!(out["a.password"], REDACTED);
        assert_eq!(out["a.registry_token"], REDACTED);
        assert_eq!(out["a.note"], "z");
    }

    #[test]
    fn not_acceptable_lists_what_is_served() {
        let e = negotiate::negotiate(Some("application/json;v=v2;g=config.k8s.io;as=Flagz"), "Flagz")
            .unwrap_err();
        let p = not_acceptable(&e);
        let v: Value = serde_json::from_str(&p.body).unwrap();
        assert_eq!(v["code"], 406);
        assert_eq!(v["reason"], "NotAcceptable");
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("application/json;v=v1alpha1;g=config.k8s.io;as=Flagz"));
    }
}
