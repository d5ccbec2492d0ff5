//! Where the effective configuration comes from, and which source set each
//! value: the main file (`/etc/berth/config.toml`), then every `*.toml` in
//! the drop-in directory (`/etc/berth/config.d`) in lexical order, then
//! flags. Later sources override earlier ones key by key: tables merge,
//! every other value (arrays included) is replaced whole, so a drop-in
//! that sets `cni_bin_dirs` says the whole list.
//!
//! Each file is checked on its own first (syntax, unknown keys, types), so
//! a bad drop-in is named with its key, not blamed on the merge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Config;
use crate::error::{Error, Result};

/// Drop-in directory name, next to the main file.
pub const DROPIN_DIR_NAME: &str = "config.d";

/// A dotted key, one segment per table level: `["registry", "docker.io",
/// "mirrors"]`.
pub type KeyPath = Vec<String>;

/// What set one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Nothing did: berthd's default.
    Default,
    /// A config file (the main file or a drop-in).
    File(PathBuf),
    /// A command-line flag (its name, e.g. `--socket`).
    Flag(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// The inputs of one load; kept so SIGHUP can load again from the same
/// places with the same flags.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The main file.
    pub file: PathBuf,
    /// A missing main file is an error (it was named with `--config`)
    /// rather than "all defaults".
    pub file_required: bool,
    /// The drop-in directory; missing means no drop-ins.
    pub dropin_dir: PathBuf,
    /// Flag overrides, applied last: (top-level key, value, flag name).
    pub flags: Vec<(String, toml::Value, &'static str)>,
    /// Checks of the merged config beyond [`Config::validate`] that need a
    /// manager's logic (set by berthd's `main`; config imports no manager).
    /// Run after it, and their errors name their sources the same way.
    pub check: fn(&Config) -> Result<()>,
}

/// The effective configuration and where each of its values came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged, validated configuration.
    pub config: Config,
    /// The source of every value a file or flag set (leaves only).
    pub origins: BTreeMap<KeyPath, Source>,
    /// The files read, in the order they were applied.
    pub files: Vec<PathBuf>,
}

impl Loaded {
    /// Who set `key` (a leaf); [`Source::Default`] when nobody did.
    pub fn source_of(&self, key: &[String]) -> Source {
        self.origins.get(key).cloned().unwrap_or(Source::Default)
    }
}

impl Sources {
    /// The main file `file` (or the default path) with its drop-in
    /// directory beside it (`<dir of file>/config.d`) unless `dropin_dir`
    /// names one.
    pub fn new(file: Option<&Path>, dropin_dir: Option<&Path>) -> Self {
        let (file, file_required) = match file {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(super::DEFAULT_CONFIG_PATH), false),
        };
        let dropin_dir = dropin_dir.map(Path::to_path_buf).unwrap_or_else(|| {
            file.parent()
                .unwrap_or_else(|| Path::new("/"))
                .join(DROPIN_DIR_NAME)
        });
        Sources {
            file,
            file_required,
            dropin_dir,
            flags: Vec::new(),
            check: |_| Ok(()),
        }
    }

    /// Adds a flag override of the top-level key `key`.
    pub fn flag<T: Serialize + ?Sized>(&mut self, key: &str, value: &T, flag: &'static str) -> Result<()> {
        let v =
            toml::Value::try_from(value).map_err(|e| Error::InvalidArgument(format!("flag {flag}: {e}")))?;
        self.flags.push((key.to_string(), v, flag));
        Ok(())
    }

    /// The drop-ins, `*.toml` in lexical (byte) order; hidden files and
    /// anything that is not a regular file (after symlinks) are skipped.
    pub fn dropins(&self) -> Result<Vec<PathBuf>> {
        let entries = match std::fs::read_dir(&self.dropin_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::io(
                    format!("read config dir {}", self.dropin_dir.display()),
                    e,
                ))
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io(format!("read config dir {}", self.dropin_dir.display()), e))?;
            let name = entry.file_name();
            let name = name.as_encoded_bytes();
            if name.starts_with(b".") || !name.ends_with(b".toml") {
                continue;
            }
            let path = entry.path();
            if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                out.push(path);
            }
        }
        out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        Ok(out)
    }

    /// Reads every source, merges them and validates the result.
    pub fn load(&self) -> Result<Loaded> {
        let mut merged = toml::Table::new();
        let mut origins = BTreeMap::new();
        let mut files = Vec::new();
        match std::fs::read_to_string(&self.file) {
            Ok(text) => {
                let table = parse_file(&self.file, &text)?;
                merge(
                    &mut merged,
                    table,
                    &mut Vec::new(),
                    &Source::File(self.file.clone()),
                    &mut origins,
                );
                files.push(self.file.clone());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.file_required => {}
            Err(e) => return Err(Error::io(format!("read config {}", self.file.display()), e)),
        }
        for path in self.dropins()? {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("read config {}", path.display()), e))?;
            let table = parse_file(&path, &text)?;
            merge(
                &mut merged,
                table,
                &mut Vec::new(),
                &Source::File(path.clone()),
                &mut origins,
            );
            files.push(path);
        }
        for (key, value, flag) in &self.flags {
            let mut one = toml::Table::new();
            one.insert(key.clone(), value.clone());
            merge(
                &mut merged,
                one,
                &mut Vec::new(),
                &Source::Flag(flag),
                &mut origins,
            );
        }
        let config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| Error::InvalidArgument(format!("config: {}", e.message())))?;
        if let Err(e) = config.validate().and_then(|()| (self.check)(&config)) {
            return Err(blame(e, &origins));
        }
        Ok(Loaded {
            config,
            origins,
            files,
        })
    }
}

/// Parses one file and checks it alone against [`Config`]'s keys and
/// types; errors name the file, the line and the key.
fn parse_file(path: &Path, text: &str) -> Result<toml::Table> {
    let located = |e: toml::de::Error| {
        let at = e
            .span()
            .map(|s| describe_location(text, s.start))
            .unwrap_or_default();
        Error::InvalidArgument(format!(
            "config {}{at}: {}",
            path.display(),
            e.message().trim_end()
        ))
    };
    let table: toml::Table = text.parse().map_err(located)?;
    toml::from_str::<Config>(text).map_err(located)?;
    Ok(table)
}

/// `", line N, key a.b"` for the byte offset `at`: the key is the text
/// before `=` on that line, under the last `[table]` header above it.
fn describe_location(text: &str, at: usize) -> String {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let line_no = text[..at].matches('\n').count() + 1;
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = match line.split_once('=') {
        Some((k, _)) if !line.trim_start().starts_with('[') => Some(k.trim().to_string()),
        _ => None,
    };
    match (header, key) {
        (Some(h), Some(k)) => format!(", line {line_no}, key {h}.{k}"),
        (None, Some(k)) => format!(", line {line_no}, key {k}"),
        (Some(h), None) => format!(", line {line_no}, table [{h}]"),
        (None, None) => format!(", line {line_no}"),
    }
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
/// Records `source` for every leaf it sets and forgets the origins of
/// whatever a replacement removed.
fn merge(
    base: &mut toml::Table,
    over: toml::Table,
    at: &mut KeyPath,
    source: &Source,
    origins: &mut BTreeMap<KeyPath, Source>,
) {
    for (key, value) in over {
        at.push(key.clone());
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => merge(old, new, at, source, origins),
            (_, value) => {
                origins.retain(|k, _| !k.starts_with(at));
                record_leaves(&value, at, source, origins);
                base.insert(key, value);
            }
        }
        at.pop();
    }
}

fn record_leaves(
    value: &toml::Value,
    at: &mut KeyPath,
    source: &Source,
    origins: &mut BTreeMap<KeyPath, Source>,
) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                at.push(k.clone());
                record_leaves(v, at, source, origins);
                at.pop();
            }
        }
        _ => {
            origins.insert(at.clone(), source.clone());
        }
    }
}

/// Adds to a validation error of the merged config the sources of the key
/// it names (`config <key> ...`), so the operator knows which file to fix.
fn blame(e: Error, origins: &BTreeMap<KeyPath, Source>) -> Error {
    let Error::InvalidArgument(msg) = &e else {
        return e;
    };
    let named = |top: &str| {
        msg.match_indices(top).any(|(i, _)| {
            let before = msg[..i].chars().next_back();
            let after = msg[i + top.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            !word(before) && !word(after)
        })
    };
    let mut from: Vec<String> = Vec::new();
    for (key, source) in origins {
        if named(&key[0]) {
            let s = source.to_string();
            if !from.contains(&s) {
                from.push(s);
            }
        }
    }
    if from.is_empty() {
        return e;
    }
    Error::InvalidArgument(format!("{msg} (set in {})", from.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> KeyPath {
        s.split('.').map(String::from).collect()
    }

    /// A main file and drop-ins in a temp dir.
    fn setup(main: Option<&str>, dropins: &[(&str, &str)]) -> (tempfile::TempDir, Sources) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        if let Some(m) = main {
            std::fs::write(&file, m).unwrap();
        }
        let d = dir.path().join(DROPIN_DIR_NAME);
        std::fs::create_dir(&d).unwrap();
        for (name, text) in dropins {
            std::fs::write(d.join(name), text).unwrap();
        }
        let mut sources = Sources::new(Some(&file), None);
        sources.file_required = main.is_some();
        (dir, sources)
    }

    #[test]
    fn later_files_override_the_same_key_in_lexical_order() {
        let (dir, s) = setup(
            Some("log_level = \"warn\"\nroot = \"/data/berth\"\n"),
            &[
                ("20-debug.toml", "log_level = \"debug\"\n"),
                ("10-info.toml", "log_level = \"info\"\n"),
                ("99-ignored.conf", "log_level = \"trace\"\n"),
                (".hidden.toml", "log_level = \"trace\"\n"),
            ],
        );
        let l = s.load().unwrap();
        assert_eq!(l.config.log_level, "debug");
        assert_eq!(l.config.root, PathBuf::from("/data/berth"));
        let d = dir.path().join(DROPIN_DIR_NAME);
        assert_eq!(
            l.source_of(&key("log_level")),
            Source::File(d.join("20-debug.toml"))
        );
        assert_eq!(
            l.source_of(&key("root")),
            Source::File(dir.path().join("config.toml"))
        );
        assert_eq!(l.source_of(&key("socket")), Source::Default);
        assert_eq!(
            l.files,
            vec![
                dir.path().join("config.toml"),
                d.join("10-info.toml"),
                d.join("20-debug.toml")
            ]
        );
    }

    #[test]
    fn tables_merge_key_by_key_and_arrays_are_replaced() {
        let (_dir, s) = setup(
            Some(
                "cni_bin_dirs = [\"/a\", \"/b\"]\n[image_limits]\nmax_layers = 10\nmax_path_bytes = 100\n\
                 [registry.\"docker.io\"]\nmirrors = [\"m1.local\", \"m2.local\"]\nusername = \"u\"\npassword = \"p\"\n",
            ),
            &[(
                "50-x.toml",
                "cni_bin_dirs = [\"/c\"]\n[image_limits]\nmax_layers = 20\n\
                 [registry.\"docker.io\"]\nmirrors = [\"m3.local\"]\n",
            )],
        );
        let l = s.load().unwrap();
        assert_eq!(l.config.cni_bin_dirs, vec![PathBuf::from("/c")]);
        assert_eq!(l.config.image_limits.max_layers, 20);
        assert_eq!(
            l.config.image_limits.max_path_bytes, 100,
            "kept from the main file"
        );
        let hub = &l.config.registry["docker.io"];
        assert_eq!(hub.mirrors, vec!["m3.local".to_string()]);
        assert_eq!(hub.username, "u", "kept from the main file");
        assert_eq!(hub.password.expose(), "p");
        let main = Source::File(s.file.clone());
        let dropin = Source::File(s.dropin_dir.join("50-x.toml"));
        assert_eq!(l.source_of(&key("image_limits.max_layers")), dropin);
        assert_eq!(l.source_of(&key("image_limits.max_path_bytes")), main);
        assert_eq!(
            l.source_of(&["registry".into(), "docker.io".into(), "mirrors".into()]),
            dropin
        );
        assert_eq!(l.source_of(&key("cni_bin_dirs")), dropin);
    }

    #[test]
    fn flags_come_last() {
        let (_dir, mut s) = setup(None, &[("10.toml", "socket = \"/run/a.sock\"\n")]);
        s.flag("socket", Path::new("/run/b.sock"), "--socket").unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.config.socket, PathBuf::from("/run/b.sock"));
        assert_eq!(l.source_of(&key("socket")), Source::Flag("--socket"));
        assert_eq!(l.source_of(&key("socket")).to_string(), "flag --socket");
    }

    #[test]
    fn missing_default_file_and_dir_mean_defaults_but_a_named_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sources {
            file: dir.path().join("none.toml"),
            file_required: false,
            dropin_dir: dir.path().join("none.d"),
            flags: Vec::new(),
            check: |_| Ok(()),
        };
        let l = s.load().unwrap();
        assert_eq!(l.config, Config::default());
        assert!(l.files.is_empty());
        let named = Sources::new(Some(&dir.path().join("none.toml")), None);
        assert_eq!(named.dropin_dir, dir.path().join("config.d"));
        let e = named.load().unwrap_err().to_string();
        assert!(e.contains("none.toml"), "{e}");
        let default = Sources::new(None, None);
        assert_eq!(default.dropin_dir, PathBuf::from("/etc/berth/config.d"));
    }

    #[test]
    fn a_bad_file_is_named_with_its_key() {
        let (_dir, s) = setup(
            Some("log_level = \"info\"\n"),
            &[
                ("10-ok.toml", ""),
                ("20-bad.toml", "# c\n[image_limits]\nmax_layers = \"many\"\n"),
            ],
        );
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("20-bad.toml"), "{e}");
        assert!(e.contains("line 3, key image_limits.max_layers"), "{e}");
        assert!(e.contains("invalid type"), "{e}");

        let (_dir, s) = setup(
            None,
            &[("30-typo.toml", "log_level = \"info\"\nrooot = \"/x\"\n")],
        );
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("30-typo.toml, line 2, key rooot"), "{e}");

        assert_eq!(describe_location("a = \"ü\"\nb = 1\n", 6), ", line 1, key a");
        let (_dir, s) = setup(None, &[("40-syntax.toml", "log_level = \n")]);
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("40-syntax.toml, line 1"), "{e}");
    }

    #[test]
    fn an_invalid_merged_value_names_the_files_that_set_it() {
        let (_dir, s) = setup(
            Some("log_level = \"debug\"\n"),
            &[("10.toml", "root = \"relative/path\"\n")],
        );
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("root must be an absolute path"), "{e}");
        assert_eq!(e.matches("invalid argument").count(), 1, "{e}");
        assert!(
            e.contains(&format!("set in {}", s.dropin_dir.join("10.toml").display())),
            "{e}"
        );
        assert!(!e.contains("config.toml"), "log_level is not to blame: {e}");
    }

    #[test]
    fn the_loaders_own_check_runs_on_the_merged_config_and_is_blamed_too() {
        let (_dir, mut s) = setup(
            None,
            &[("10.toml", "[registry.\"reg.lab\"]\nplain_http = true\n")],
        );
        s.load().unwrap();
        s.check = |c| match c.registry.contains_key("reg.lab") {
            true => Err(Error::InvalidArgument(
                "config registry \"reg.lab\": refused".into(),
            )),
            false => Ok(()),
        };
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("refused"), "{e}");
        assert!(
            e.contains(&format!("set in {}", s.dropin_dir.join("10.toml").display())),
            "{e}"
        );
    }

    #[test]
    fn a_table_replaced_by_a_value_forgets_its_leaves_origins() {
        let mut base = toml::Table::new();
        let mut origins = BTreeMap::new();
        let a = Source::File("/a".into());
        let b = Source::File("/b".into());
        merge(
            &mut base,
            "[t]\nx = 1\ny = 2\n".parse().unwrap(),
            &mut Vec::new(),
            &a,
            &mut origins,
        );
        merge(
            &mut base,
            "t = 3\n".parse().unwrap(),
            &mut Vec::new(),
            &b,
            &mut origins,
        );
        assert_eq!(origins.len(), 1);
        assert_eq!(origins[&key("t")], b);
        assert_eq!(base["t"].as_integer(), Some(3));
    }
}
