//! The one way berthd runs blocking work from async code: directory walks,
//! cgroup writes that may stall under memory pressure, CNI plugins, the
//! registry client. It runs on tokio's blocking pool so no async worker
//! waits on the kernel, and a task that panicked or was cancelled becomes
//! one kind of error, mapped to a gRPC code in `error.rs` like any other.

use crate::error::{Error, Result};

/// Runs `f` on the blocking pool and returns what it returned. `what` names
/// the work in the `Internal` error a panicking task becomes (a bug, never
/// the caller's fault), e.g. `"CNI DEL task"`.
pub async fn run<T: Send + 'static>(what: &'static str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_or_names_the_panicked_work() {
        assert_eq!(run("sum task", || 2 + 2).await.unwrap(), 4);
        let err = run("walk task", || -> u32 { panic!("boom") }).await.unwrap_err();
        assert!(
            matches!(&err, Error::Internal(m) if m.starts_with("walk task: ")),
            "{err}"
        );
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::Internal);
    }
}
