//! `berthd config dump`: the effective configuration as TOML that berthd
//! would read back, each value followed by the source that set it, and
//! every secret redacted (the config's secret type serializes redacted;
//! keys that name secrets are redacted again here).

use super::layers::{KeyPath, Loaded};
use super::secret::{is_secret, REDACTED};
use crate::error::{Error, Result};

/// Renders `loaded` as annotated TOML.
pub fn render(loaded: &Loaded) -> Result<String> {
    let value = toml::Value::try_from(&loaded.config)
        .map_err(|e| Error::Internal(format!("serialize config: {e}")))?;
    let toml::Value::Table(table) = value else {
        return Err(Error::Internal("config is not a table".into()));
    };
    let mut out = String::from("# berthd effective configuration (secrets redacted)\n");
    out.push_str("# sources, in order: ");
    if loaded.files.is_empty() {
        out.push_str("no file");
    } else {
        let files: Vec<String> = loaded.files.iter().map(|p| p.display().to_string()).collect();
        out.push_str(&files.join(", "));
    }
    out.push_str(", then flags\n\n");
    render_table(loaded, &table, &mut Vec::new(), &mut out);
    Ok(out)
}

/// Leaves first, then each sub-table under its own header (TOML puts a
/// table's plain keys before any `[sub.table]`).
fn render_table(loaded: &Loaded, table: &toml::Table, at: &mut KeyPath, out: &mut String) {
    for (k, v) in table {
        if v.is_table() {
            continue;
        }
        at.push(k.clone());
        let shown = if is_secret(k) && v.as_str().is_some_and(|s| !s.is_empty()) {
            toml::Value::String(REDACTED.into())
        } else {
            v.clone()
        };
        out.push_str(&format!(
            "{} = {shown}  # {}\n",
            key_text(k),
            loaded.source_of(at)
        ));
        at.pop();
    }
    for (k, v) in table {
        let toml::Value::Table(sub) = v else { continue };
        at.push(k.clone());
        let header: Vec<String> = at.iter().map(|s| key_text(s)).collect();
        out.push_str(&format!("\n[{}]\n", header.join(".")));
        render_table(loaded, sub, at, out);
        at.pop();
    }
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
pub fn key_text(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml::Value::String(k.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::layers::Sources;
    use super::*;
    use crate::config::Config;

    #[test]
    fn dump_shows_winners_sources_and_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(
            &main,
            "log_level = \"warn\"\n[registry.\"reg.lab:5000\"]\nusername = \"berth\"\npassword = \"s3cret-pass\"\n",
        )
        .unwrap();
        let d = dir.path().join("config.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join("10-debug.toml"),
            "log_level = \"debug\"\n[registry.\"reg.lab:5000\"]\nauth = \"YmVydGg6czNjcmV0LXBhc3M=\"\nmirrors = [\"m.lab\"]\n",
        )
        .unwrap();
        let mut s = Sources::new(Some(&main), None);
        s.flag("socket", "/run/x.sock", "--socket").unwrap();
        let loaded = s.load().unwrap();
        let text = render(&loaded).unwrap();
        assert!(!text.contains("s3cret-pass"), "{text}");
        assert!(!text.contains("YmVydGg6"), "{text}");
        let dropin = d.join("10-debug.toml").display().to_string();
        assert!(
            text.contains(&format!("log_level = \"debug\"  # {dropin}\n")),
            "{text}"
        );
        assert!(
            text.contains("socket = \"/run/x.sock\"  # flag --socket\n"),
            "{text}"
        );
        assert!(text.contains("root = \"/var/lib/berth\"  # default\n"), "{text}");
        assert!(text.contains("[registry.\"reg.lab:5000\"]\n"), "{text}");
        assert!(
            text.contains(&format!("password = \"[redacted]\"  # {}\n", main.display())),
            "{text}"
        );
        assert!(
            text.contains(&format!("mirrors = [\"m.lab\"]  # {dropin}\n")),
            "{text}"
        );
        // What it prints is a config berthd reads back (secrets aside).
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.log_level, "debug");
        assert_eq!(back.socket, loaded.config.socket);
        assert_eq!(back.image_limits, loaded.config.image_limits);
        assert_eq!(back.registry["reg.lab:5000"].mirrors, vec!["m.lab".to_string()]);
    }

    #[test]
    fn keys_are_quoted_only_when_needed() {
        assert_eq!(key_text("log_level"), "log_level");
        assert_eq!(key_text("docker.io"), "\"docker.io\"");
        for odd in ["a b\"", "x'y", "ü"] {
            let t: toml::Table = format!("{} = 1", key_text(odd)).parse().unwrap();
            assert!(t.contains_key(odd), "{odd}: {}", key_text(odd));
        }
    }
}
