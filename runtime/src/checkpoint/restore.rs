//! Restore, berthd's half at CreateContainer: a request whose image is the
//! absolute path of a regular file names a checkpoint archive (the way
//! CRI-O accepts one). The archive's `container.json` names the image the
//! container was made from (it must be present: no pull), its `config.json`
//! the process (argv, env, working dir) the restored container reports;
//! everything else (metadata, labels, annotations, mounts, log path) comes
//! from the request. The archive is then unpacked into the new container's
//! dir: its `rootfs-diff/` becomes the writable layer and its
//! `checkpoint/` holds CRIU's images for the shim's restore at Start.
//!
//! The archive is hostile: the two JSON files are read bounded and checked
//! before anything is made, and the unpack is `unpack.rs`'s.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use berth_proto::cri;

use super::unpack;
use crate::error::{Error, Result};
use crate::image::{ImageRecord, ImageStore};

/// Largest `container.json` or `config.json` read from an archive.
const MAX_JSON: u64 = 4 << 20;

/// Where the unpacked archive goes in the container's dir.
pub const UNPACK_DIR: &str = "restore";

/// The archive a CreateContainer restores, read and checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The archive.
    pub archive: PathBuf,
    /// The image the checkpointed container ran, as it was named then.
    pub image_name: String,
    /// That image here.
    pub image: ImageRecord,
    /// The checkpointed process: argv, `KEY=value` env, working dir.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
}

/// The archive `image` names, when it is an absolute path to a regular file.
pub fn archive_of(image: &str) -> Option<PathBuf> {
    let p = Path::new(image);
    (p.is_absolute() && std::fs::metadata(p).is_ok_and(|m| m.is_file())).then(|| p.to_path_buf())
}

/// Reads and checks `archive`'s record and spec, and finds its image among
/// `images`. InvalidArgument for an archive that is no checkpoint archive,
/// NotFound naming the image when it is not here.
pub fn plan(archive: &Path, images: &ImageStore) -> Result<Plan> {
    plan_with(archive, |name| images.resolve(name))
}

fn plan_with(archive: &Path, resolve: impl Fn(&str) -> Option<ImageRecord>) -> Result<Plan> {
    let (record, spec) = read_json(archive)?;
    let container = &record["container"];
    if record["version"] != 1 || !container.is_object() {
        return Err(bad(archive, "container.json is not a version 1 record".into()));
    }
    let text = |v: &serde_json::Value, what: &str| -> Result<String> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(archive, format!("{what} is not a string")))
    };
    let image_name = text(&container["image"], "container.json's image")?;
    let image_ref = text(&container["image_ref"], "container.json's image_ref")?;
    // The id first: the name may point at another image by now.
    let image = resolve(&image_ref)
        .or_else(|| resolve(&image_name).filter(|i| i.id == image_ref))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "image {image_name:?} ({image_ref}) that checkpoint archive {} was made from \
                 (berthd does not pull for a restore: pull it first)",
                archive.display()
            ))
        })?;
    let process = &spec["process"];
    let strings = |v: &serde_json::Value, what: &str| -> Result<Vec<String>> {
        match v {
            serde_json::Value::Null => Ok(Vec::new()),
            serde_json::Value::Array(a) => a.iter().map(|s| text(s, what)).collect(),
            _ => Err(bad(archive, format!("{what} is not a list"))),
        }
    };
    let args = strings(&process["args"], "config.json's process.args")?;
    if args.is_empty() {
        return Err(bad(archive, "config.json has no process.args".into()));
    }
    let env = strings(&process["env"], "config.json's process.env")?;
    let cwd = match &process["cwd"] {
        serde_json::Value::Null => String::new(),
        v => text(v, "config.json's process.cwd")?,
    };
    Ok(Plan {
        archive: archive.to_path_buf(),
        image_name,
        image,
        args,
        env,
        cwd,
    })
}

impl Plan {
    /// The request's config with the archive's image and process in it.
    pub fn config(&self, cfg: &cri::ContainerConfig) -> cri::ContainerConfig {
        let envs = self
            .env
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                cri::KeyValue {
                    key: k.into(),
                    value: v.as_bytes().to_vec(),
                }
            })
            .collect();
        cri::ContainerConfig {
            image: Some(cri::ImageSpec {
                image: self.image.id.clone(),
                ..cfg.image.clone().unwrap_or_default()
            }),
            command: self.args.clone(),
            args: Vec::new(),
            envs,
            working_dir: self.cwd.clone(),
            ..cfg.clone()
        }
    }

    /// Unpacks the archive into `<dir>/restore` and makes its `rootfs-diff`
    /// the writable layer `<dir>/upper` (which must be the empty dir
    /// CreateContainer made). Returns CRIU's images dir. On error nothing
    /// of the archive is left in `dir` (the caller removes `dir` anyway).
    pub fn unpack_into(&self, dir: &Path, limits: &unpack::Limits) -> Result<PathBuf> {
        let dest = dir.join(UNPACK_DIR);
        unpack::unpack(&self.archive, &dest, limits)?;
        let r = self.adopt(dir, &dest);
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&dest);
        }
        r
    }

    fn adopt(&self, dir: &Path, dest: &Path) -> Result<PathBuf> {
        let images = dest.join("checkpoint");
        if !std::fs::symlink_metadata(images.join("inventory.img")).is_ok_and(|m| m.is_file()) {
            return Err(bad(
                &self.archive,
                "no checkpoint/inventory.img: not a CRIU checkpoint".into(),
            ));
        }
        let diff = dest.join("rootfs-diff");
        if std::fs::symlink_metadata(&diff).is_ok_and(|m| m.is_dir()) {
            let upper = dir.join("upper");
            std::fs::remove_dir(&upper).map_err(|e| Error::io(format!("remove {}", upper.display()), e))?;
            std::fs::rename(&diff, &upper)
                .map_err(|e| Error::io(format!("move {} to {}", diff.display(), upper.display()), e))?;
        }
        Ok(images)
    }
}

/// Largest `descriptors.json` read, and longest name in it.
const MAX_DESCRIPTORS: u64 = 64 << 10;
const MAX_STDIO_NAME: usize = 4096;

/// What the checkpointed process's stdin, stdout and stderr are called in
/// CRIU's images: the unpacked archive's `descriptors.json` under `dir`
/// (the container's dir), a list of at most three strings. None in the
/// archive: no names (CRIU then says which file it misses).
pub fn stdio_names(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(UNPACK_DIR).join("descriptors.json");
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
    };
    let mut body = Vec::new();
    f.take(MAX_DESCRIPTORS + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let bad = |what: &str| Error::InvalidArgument(format!("checkpoint archive: descriptors.json {what}"));
    if body.len() as u64 > MAX_DESCRIPTORS {
        return Err(bad("is too large"));
    }
    let names: Vec<String> = serde_json::from_slice(&body).map_err(|_| bad("is not a list of strings"))?;
    if names.len() > 3 || names.iter().any(|n| n.len() > MAX_STDIO_NAME || n.contains('\0')) {
        return Err(bad("holds more than stdin, stdout and stderr"));
    }
    Ok(names)
}

fn bad(archive: &Path, what: String) -> Error {
    Error::InvalidArgument(format!("checkpoint archive {}: {what}", archive.display()))
}

/// `container.json` and `config.json`, parsed, read straight from the tar
/// (seeking over the images) without unpacking anything.
fn read_json(archive: &Path) -> Result<(serde_json::Value, serde_json::Value)> {
    let f = File::open(archive).map_err(|e| Error::io(format!("open {}", archive.display()), e))?;
    let mut tar = tar::Archive::new(f);
    let (mut record, mut spec) = (None, None);
    let entries = tar
        .entries_with_seek()
        .map_err(|e| bad(archive, format!("read: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(archive, format!("read: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(archive, format!("entry path: {e}")))?;
        let name = path.to_string_lossy().trim_start_matches("./").to_string();
        let slot = match name.as_str() {
            "container.json" => &mut record,
            "config.json" => &mut spec,
            _ => continue,
        };
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(archive, format!("{name} is not a regular file")));
        }
        if entry.size() > MAX_JSON {
            return Err(bad(archive, format!("{name} is larger than {MAX_JSON} bytes")));
        }
        let mut body = Vec::new();
        entry
            .take(MAX_JSON)
            .read_to_end(&mut body)
            .map_err(|e| bad(archive, format!("read {name}: {e}")))?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| bad(archive, format!("{name}: {e}")))?;
        *slot = Some(v);
        if record.is_some() && spec.is_some() {
            break;
        }
    }
    match (record, spec) {
        (Some(r), Some(s)) => Ok((r, s)),
        _ => Err(bad(
            archive,
            "no container.json or config.json: not a checkpoint archive".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            repo_tags: vec!["reg/busybox:latest".into()],
            repo_digests: vec![],
            size_bytes: 1,
            config: Default::default(),
            chain_ids: vec![],
        }
    }

    const ID: &str = "sha256:aaaa";

    fn record() -> String {
        serde_json::json!({"version": 1, "container": {"image": "reg/busybox:latest", "image_ref": ID}})
            .to_string()
    }

    fn spec() -> String {
        serde_json::json!({"process": {"args": ["sh", "-c", "count"], "env": ["A=1", "PATH=/bin"], "cwd": "/tmp"}})
            .to_string()
    }

    /// A tar with `files` (name, body) and a CRIU inventory.
    /// An archive with a valid spec and record (and the images `archive`
    /// adds).
    fn good_archive(dir: &Path) -> PathBuf {
        archive(dir, &[("config.json", &spec()), ("container.json", &record())])
    }

    fn archive(d: &Path, files: &[(&str, &str)]) -> PathBuf {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, body: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, body).unwrap();
        };
        add("checkpoint/inventory.img", b"inv");
        add("rootfs-diff/tmp/c", b"41\n");
        for (n, body) in files {
            add(n, body.as_bytes());
        }
        let p = d.join("ckpt.tar");
        std::fs::write(&p, b.into_inner().unwrap()).unwrap();
        p
    }

    fn present(name: &str) -> Option<ImageRecord> {
        (name == ID).then(|| image(ID))
    }

    /// A container dir as CreateContainer makes it.
    fn container_dir(d: &Path) -> PathBuf {
        let dir = d.join("containers/c1");
        std::fs::create_dir_all(dir.join("upper")).unwrap();
        std::fs::create_dir_all(dir.join("work")).unwrap();
        dir
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn only_absolute_paths_of_regular_files_are_archives() {
        let d = tempfile::tempdir().unwrap();
        let a = archive(d.path(), &[]);
        assert_eq!(archive_of(a.to_str().unwrap()), Some(a.clone()));
        assert_eq!(archive_of("busybox:latest"), None);
        assert_eq!(archive_of("ckpt.tar"), None, "relative");
        assert_eq!(archive_of(d.path().to_str().unwrap()), None, "a dir");
        assert_eq!(archive_of(d.path().join("missing.tar").to_str().unwrap()), None);
    }

    #[test]
    fn the_archive_gives_image_and_process_the_request_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let a = good_archive(d.path());
        let p = plan_with(&a, present).unwrap();
        assert_eq!(p.image_name, "reg/busybox:latest");
        let req = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "restored".into(),
                attempt: 2,
            }),
            image: Some(cri::ImageSpec {
                image: a.display().to_string(),
                ..Default::default()
            }),
            command: vec!["ignored".into()],
            log_path: "r.log".into(),
            labels: [("l".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        let cfg = p.config(&req);
        assert_eq!(cfg.image.unwrap().image, ID);
        assert_eq!(cfg.command, ["sh", "-c", "count"]);
        assert!(cfg.args.is_empty());
        assert_eq!(cfg.working_dir, "/tmp");
        let env: Vec<_> = cfg
            .envs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
            .collect();
        assert_eq!(env, [("A", &b"1"[..]), ("PATH", &b"/bin"[..])]);
        assert_eq!(cfg.metadata.unwrap().name, "restored");
        assert_eq!(cfg.log_path, "r.log");
        assert_eq!(cfg.labels["l"], "v");
    }

    #[test]
    fn a_missing_image_is_not_found_by_name_and_nothing_is_made() {
        let d = tempfile::tempdir().unwrap();
        let a = good_archive(d.path());
        let e = plan_with(&a, |_| None).unwrap_err();
        match &e {
            Error::NotFound(m) => assert!(m.contains("reg/busybox:latest") && m.contains(ID), "{m}"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        // A name now pointing at another image is not the image.
        let e = plan_with(&a, |n| (n == "reg/busybox:latest").then(|| image("sha256:bbbb"))).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e:?}");
        assert_eq!(listing(d.path()), ["ckpt.tar"]);
    }

    #[test]
    fn archives_without_a_good_record_or_spec_are_invalid() {
        let cases: Vec<Vec<(&str, String)>> = vec![
            vec![],
            vec![("container.json", record())],
            vec![("config.json", spec()), ("container.json", "not json".into())],
            vec![
                ("config.json", spec()),
                ("container.json", r#"{"version":2,"container":{}}"#.into()),
            ],
            vec![
                ("config.json", spec()),
                (
                    "container.json",
                    r#"{"version":1,"container":{"image":1,"image_ref":"x"}}"#.into(),
                ),
            ],
            vec![
                ("config.json", r#"{"process":{"args":[]}}"#.into()),
                ("container.json", record()),
            ],
            vec![
                ("config.json", r#"{"process":{"args":"sh"}}"#.into()),
                ("container.json", record()),
            ],
        ];
        for files in cases {
            let d = tempfile::tempdir().unwrap();
            let refs: Vec<(&str, &str)> = files.iter().map(|(n, b)| (*n, b.as_str())).collect();
            let a = archive(d.path(), &refs);
            let e = plan_with(&a, present).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{files:?}: {e:?}");
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("not-a-tar");
        std::fs::write(&p, vec![0x5a; 2000]).unwrap();
        assert!(matches!(plan_with(&p, present), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn the_rootfs_diff_becomes_the_upper_dir() {
        let d = tempfile::tempdir().unwrap();
        let a = good_archive(d.path());
        let p = plan_with(&a, present).unwrap();
        let dir = container_dir(d.path());
        let images = p.unpack_into(&dir, &unpack::Limits::default()).unwrap();
        assert_eq!(images, dir.join("restore/checkpoint"));
        assert!(images.join("inventory.img").is_file());
        assert_eq!(std::fs::read_to_string(dir.join("upper/tmp/c")).unwrap(), "41\n");
        assert_eq!(
            listing(&dir.join("restore")),
            ["checkpoint", "config.json", "container.json"]
        );
    }

    #[test]
    fn descriptors_are_at_most_three_bounded_names() {
        let d = tempfile::tempdir().unwrap();
        assert!(stdio_names(d.path()).unwrap().is_empty(), "none in the archive");
        std::fs::create_dir(d.path().join(UNPACK_DIR)).unwrap();
        let f = d.path().join(UNPACK_DIR).join("descriptors.json");
        std::fs::write(&f, r#"["file[2e:4]","pipe:[77]","pipe:[78]"]"#).unwrap();
        assert_eq!(
            stdio_names(d.path()).unwrap(),
            ["file[2e:4]", "pipe:[77]", "pipe:[78]"]
        );
        for bad in [
            r#"{"a":1}"#,
            r#"["a","b","c","d"]"#,
            r#"[1]"#,
            "x",
            r#"["a\u0000b"]"#,
        ] {
            std::fs::write(&f, bad).unwrap();
            let e = stdio_names(d.path()).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn a_hostile_archive_leaves_the_container_dir_as_it_was() {
        let d = tempfile::tempdir().unwrap();
        // Its JSON is fine; an entry further on escapes.
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in [
            ("config.json", spec()),
            ("container.json", record()),
            ("checkpoint/inventory.img", "inv".into()),
            ("rootfs-diff/tmp/c", "1".into()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, body.as_bytes()).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_link(&mut h, "rootfs-diff/esc", d.path()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "rootfs-diff/esc/pwned", &b"x"[..]).unwrap();
        let a = d.path().join("hostile.tar");
        std::fs::write(&a, b.into_inner().unwrap()).unwrap();

        let p = plan_with(&a, present).unwrap();
        let dir = container_dir(d.path());
        let e = p.unpack_into(&dir, &unpack::Limits::default()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert_eq!(listing(&dir), ["upper", "work"]);
        assert!(listing(&dir.join("upper")).is_empty());
        assert!(!d.path().join("pwned").exists());

        // An archive without CRIU's inventory is no checkpoint either.
        let a = good_archive(d.path());
        let mut b = tar::Builder::new(Vec::new());
        let mut t = tar::Archive::new(File::open(&a).unwrap());
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().ends_with("inventory.img") {
                continue;
            }
            let mut h = e.header().clone();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            b.append_data(&mut h, &*e.path().unwrap(), &body[..]).unwrap();
        }
        std::fs::write(&a, b.into_inner().unwrap()).unwrap();
        let p = plan_with(&a, present).unwrap();
        let e = p.unpack_into(&dir, &unpack::Limits::default()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert_eq!(listing(&dir), ["upper", "work"]);
        assert!(listing(&dir.join("upper")).is_empty());
    }
}
