//! Finding and running CRIU. The node's `criu` binary is optional: a node
//! without it cannot checkpoint, says so with FailedPrecondition, and does
//! not advertise the feature in Status.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// Where CRIU is: `configured` when set, else the first `criu` on `path_var`
/// (berthd's `PATH`). None when there is none, or it is not an executable file.
pub fn find(configured: &Path, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if !configured.as_os_str().is_empty() {
        return executable(configured).then(|| configured.to_path_buf());
    }
    // Debian installs it in /usr/sbin, which a service's PATH may lack.
    let dirs = path_var.map(std::env::split_paths).into_iter().flatten();
    dirs.chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("criu"))
        .find(|p| executable(p))
}

/// [`find`] with berthd's environment, as an error a caller can act on.
pub fn require(configured: &Path) -> Result<PathBuf> {
    find(configured, std::env::var_os("PATH").as_deref()).ok_or_else(|| {
        Error::FailedPrecondition(if configured.as_os_str().is_empty() {
            "checkpointing needs CRIU: no criu binary on PATH (install Debian's criu or set criu_path)".into()
        } else {
            format!(
                "checkpointing needs CRIU: criu_path {} is not an executable file",
                configured.display()
            )
        })
    })
}

/// Runs `criu` with `args` for at most `timeout`. On timeout CRIU is killed
/// (it detaches from the tasks it seized as it dies, so they run on) and
/// the error carries the tail of its log `log` when there is one.
pub async fn run(criu: &Path, args: &[String], timeout: Duration, log: &Path) -> Result<()> {
    let mut child = tokio::process::Command::new(criu)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io(format!("run {}", criu.display()), e))?;
    let stderr = child.stderr.take();
    let read_err = async move {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            use tokio::io::AsyncReadExt;
            let _ = (&mut e).take(64 * 1024).read_to_string(&mut s).await;
        }
        s
    };
    let waited = tokio::time::timeout(timeout, async { tokio::join!(child.wait(), read_err) }).await;
    let (status, stderr) = match waited {
        Ok((status, stderr)) => (status, stderr),
        Err(_) => {
            let _ = child.kill().await;
            return Err(Error::Timeout(format!(
                "criu did not finish within {}s (killed; the container runs on)",
                timeout.as_secs()
            )));
        }
    };
    let status = status.map_err(|e| Error::io("wait for criu", e))?;
    if status.success() {
        return Ok(());
    }
    // The work dir with the log goes when the checkpoint fails: its tail
    // stays in berthd's log for whoever must find out why.
    let tail = log_tail(log, 40);
    if !tail.is_empty() {
        tracing::warn!(log = %log.display(), "criu failed; the tail of its log:\n{tail}");
    }
    Err(Error::Internal(format!(
        "criu {} failed ({status}): {}",
        args.first().map(String::as_str).unwrap_or(""),
        failure_lines(&stderr, log)
    )))
}

/// The last `n` lines of CRIU's log `log` (empty when there is none).
fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The lines that say why CRIU failed: its `Error` lines (from the log
/// file, else stderr), at most a few.
fn failure_lines(stderr: &str, log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let from = if text.is_empty() { stderr } else { &text };
    let errors: Vec<&str> = from.lines().filter(|l| l.contains("Error")).take(5).collect();
    if errors.is_empty() {
        from.lines().rev().take(3).collect::<Vec<_>>().join("; ")
    } else {
        errors.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An executable `criu` in `dir` running the shell script `body`.
    fn fake_criu(dir: &Path, body: &str) -> PathBuf {
        let exe = dir.join("criu");
        std::fs::write(&exe, body).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    #[test]
    fn a_configured_path_wins_and_must_be_executable() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("criu");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find(&exe, None), None, "not executable");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find(&exe, None), Some(exe.clone()));
        let missing = d.path().join("nope");
        assert_eq!(
            find(&missing, Some(d.path().as_os_str())),
            None,
            "no fallback to PATH"
        );
        let e = require(&missing).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().contains("criu_path"), "{e}");
    }

    #[test]
    fn path_is_searched_when_nothing_is_configured() {
        let d = tempfile::tempdir().unwrap();
        let exe = fake_criu(d.path(), "#!/bin/sh\n");
        assert_eq!(find(Path::new(""), Some(d.path().as_os_str())), Some(exe));
    }

    #[tokio::test]
    async fn a_criu_that_hangs_is_killed_at_the_timeout() {
        let d = tempfile::tempdir().unwrap();
        let exe = fake_criu(d.path(), "#!/bin/sh\nexec sleep 30\n");
        let e = run(
            &exe,
            &["dump".into()],
            Duration::from_millis(200),
            &d.path().join("log"),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e}");
    }

    #[tokio::test]
    async fn a_failing_criu_reports_its_error_lines() {
        let d = tempfile::tempdir().unwrap();
        let exe = fake_criu(d.path(), "#!/bin/sh\necho 'Error (x.c:1): no way' >&2; exit 1\n");
        let e = run(
            &exe,
            &["dump".into()],
            Duration::from_secs(20),
            &d.path().join("log"),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("no way"), "{e}");
    }
}
