//! What a berthd killed in the middle of CheckpointContainer leaves, and its
//! removal at start-up.
//!
//! A checkpoint works in `<root>/checkpoints/<id>-XXXX/` (CRIU's images, as
//! large as the container's memory) and writes its archive to a temporary
//! file beside the caller's location, renamed into place when complete. A
//! kill -9 in between leaves both: the work dir under Berth's root, and the
//! temporary archive in a directory (kubelet's checkpoints dir, or any the
//! caller named) that nothing else will ever clean. So before the temporary
//! archive is created its path is written, synced, into the work dir
//! (`archive-tmp`), and start-up removes every work dir, and the temporary
//! archive each one names. No call is running at start-up, so every work dir
//! there is a leftover.

use std::path::{Path, PathBuf};

use crate::error::Result;

/// The name prefix of every temporary archive; start-up removes only files
/// with it, so a tampered `archive-tmp` cannot make berthd delete another
/// file.
pub const TEMP_PREFIX: &str = ".berth-checkpoint-";

/// The file in a work dir naming its temporary archive.
const NOTE: &str = "archive-tmp";

/// The directory all checkpoint work dirs live in.
pub fn work_root(root: &Path) -> PathBuf {
    root.join("checkpoints")
}

/// Records, durably, that `tmp` is about to be created for the checkpoint
/// working in `work`. Called before the file exists, so a crash at any later
/// moment leaves a note naming it.
pub fn note(work: &Path, tmp: &Path) -> Result<()> {
    crate::store::write_record(
        &work.join(NOTE),
        &Note {
            archive: tmp.to_path_buf(),
        },
    )
}

/// What a work dir's note says: the temporary archive it is writing.
#[derive(serde::Serialize, serde::Deserialize)]
struct Note {
    archive: PathBuf,
}

/// Removes every checkpoint work dir under `root` and the temporary archive
/// each names. Returns how many work dirs were removed. Errors are logged,
/// never fatal: start-up goes on.
pub fn sweep(root: &Path) -> usize {
    let dir = work_root(root);
    let Ok(list) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in list.flatten() {
        let work = e.path();
        if let Some(tmp) = noted_temp(&work) {
            match std::fs::remove_file(&tmp) {
                Ok(()) => tracing::info!(archive = %tmp.display(),
                    "removed a partial checkpoint archive left by a crash"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(archive = %tmp.display(), error = %e,
                    "cannot remove a partial checkpoint archive"),
            }
        }
        let gone = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&work),
            _ => std::fs::remove_file(&work),
        };
        match gone {
            Ok(()) => {
                removed += 1;
                tracing::info!(dir = %work.display(), "removed a checkpoint work dir left by a crash");
            }
            Err(e) => tracing::warn!(dir = %work.display(), error = %e,
                "cannot remove a checkpoint work dir"),
        }
    }
    removed
}

/// The temporary archive `work`'s note names, if it is one berthd could have
/// made: an absolute path without `..` whose file name has [`TEMP_PREFIX`]
/// and which is a regular file, not a symlink, now.
fn noted_temp(work: &Path) -> Option<PathBuf> {
    let tmp = crate::store::read_record::<Note>(&work.join(NOTE)).ok()?.archive;
    let ours = tmp.is_absolute()
        && !tmp
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        && tmp
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX));
    if !ours {
        tracing::warn!(note = %work.join(NOTE).display(), named = %tmp.display(),
            "a checkpoint note names no temporary archive of Berth's: left alone");
        return None;
    }
    match std::fs::symlink_metadata(&tmp) {
        Ok(m) if m.is_file() => Some(tmp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(root: &Path, name: &str) -> PathBuf {
        let w = work_root(root).join(name);
        std::fs::create_dir_all(w.join("checkpoint")).unwrap();
        std::fs::write(w.join("checkpoint/pages-1.img"), b"pages").unwrap();
        w
    }

    #[test]
    fn a_noted_temporary_archive_and_every_work_dir_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let w1 = work(root.path(), "c1-abc");
        let tmp = dest.path().join(format!("{TEMP_PREFIX}xyz"));
        note(&w1, &tmp).unwrap();
        std::fs::write(&tmp, b"half a tar").unwrap();
        let keep = dest.path().join("done.tar");
        std::fs::write(&keep, b"an earlier archive").unwrap();
        // A work dir whose crash came before its note: removed all the same.
        work(root.path(), "c2-def");

        assert_eq!(sweep(root.path()), 2);
        assert!(!tmp.exists(), "the partial archive is gone");
        assert!(keep.exists(), "a finished archive stays");
        assert_eq!(std::fs::read_dir(work_root(root.path())).unwrap().count(), 0);
        assert_eq!(sweep(root.path()), 0, "nothing left the second time");
    }

    #[test]
    fn a_note_naming_anything_but_a_temporary_archive_removes_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let victim = dest.path().join("precious");
        std::fs::write(&victim, b"node data").unwrap();
        let target = dest.path().join("target");
        std::fs::write(&target, b"node data").unwrap();
        let link = dest.path().join(format!("{TEMP_PREFIX}link"));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let named = [
            victim.clone(),
            PathBuf::from(format!("{}/sub/../{TEMP_PREFIX}x", dest.path().display())),
            PathBuf::from(format!("relative/{TEMP_PREFIX}x")),
            link.clone(),
        ];
        for (i, n) in named.iter().enumerate() {
            note(&work(root.path(), &format!("w{i}")), n).unwrap();
        }
        assert_eq!(sweep(root.path()), named.len());
        assert!(victim.exists() && target.exists(), "node files stay");
        assert!(link.symlink_metadata().is_ok(), "a symlink is not ours to remove");
    }

    #[test]
    fn no_checkpoint_dir_is_nothing_to_do() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(sweep(root.path()), 0);
    }
}
