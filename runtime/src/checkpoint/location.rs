//! Where a checkpoint archive may be written. kubelet asks for a file
//! under `/var/lib/kubelet/checkpoints/`; any CRI caller may name any
//! path, so the location is checked before anything is dumped.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A checked archive location: an absolute path that is not a directory,
/// in a directory that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The archive's final path.
    pub path: PathBuf,
    /// Its directory (the temporary archive is written there, so the
    /// final rename stays on one filesystem and is atomic).
    pub dir: PathBuf,
}

/// Checks `location` as CheckpointContainer received it.
pub fn check(location: &str) -> Result<Location> {
    let bad = |why: &str| Error::InvalidArgument(format!("checkpoint location {location:?}: {why}"));
    if location.is_empty() {
        return Err(bad("is empty"));
    }
    let path = Path::new(location);
    if !path.is_absolute() {
        return Err(bad("must be an absolute path"));
    }
    if location.ends_with('/') || path.file_name().is_none() {
        return Err(bad("must name a file"));
    }
    // `..` would let the parent check below pass for a directory other
    // than the one the final rename lands in.
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad("must not contain .."));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Err(bad("is an existing directory")),
        Ok(m) if !m.is_file() => return Err(bad("exists and is not a regular file")),
        _ => {}
    }
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bad("its parent is not a directory")),
        Err(_) => return Err(bad("its parent directory does not exist")),
    }
    Ok(Location {
        path: path.to_path_buf(),
        dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(location: &str) -> tonic::Code {
        check(location).unwrap_err().code()
    }

    #[test]
    fn relative_empty_and_dir_locations_are_invalid_arguments() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(code(""), tonic::Code::InvalidArgument);
        assert_eq!(code("ckpt.tar"), tonic::Code::InvalidArgument);
        assert_eq!(code("./ckpt.tar"), tonic::Code::InvalidArgument);
        assert_eq!(code(d.path().to_str().unwrap()), tonic::Code::InvalidArgument);
        assert_eq!(
            code(&format!("{}/", d.path().display())),
            tonic::Code::InvalidArgument
        );
        let missing = d.path().join("missing/ckpt.tar");
        assert_eq!(code(missing.to_str().unwrap()), tonic::Code::InvalidArgument);
        let dotdot = d.path().join("x/../ckpt.tar");
        assert_eq!(code(dotdot.to_str().unwrap()), tonic::Code::InvalidArgument);
        let e = check("ckpt.tar").unwrap_err().to_string();
        assert!(e.contains("absolute"), "{e}");
    }

    #[test]
    fn a_new_file_or_an_old_archive_in_an_existing_dir_is_accepted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ckpt.tar");
        let l = check(p.to_str().unwrap()).unwrap();
        assert_eq!((l.path.as_path(), l.dir.as_path()), (p.as_path(), d.path()));
        std::fs::write(&p, b"old").unwrap();
        assert!(check(p.to_str().unwrap()).is_ok(), "an old archive is replaced");
    }
}
