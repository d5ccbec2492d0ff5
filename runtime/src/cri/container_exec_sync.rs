//! ExecSync: runs a command in a running container (probes, `crictl exec -s`)
//! with the container's own identity, and returns its output and exit code.

use std::time::Duration;

use berth_proto::cri::{ExecSyncRequest, ExecSyncResponse};

use super::Cri;
use crate::error::{Error, Result};

/// Handles ExecSync.
pub async fn handle(cri: &Cri, req: ExecSyncRequest) -> Result<ExecSyncResponse> {
    if req.cmd.is_empty() {
        return Err(Error::InvalidArgument("ExecSync needs a command".into()));
    }
    if req.timeout < 0 {
        return Err(Error::InvalidArgument(format!(
            "ExecSync timeout {} is negative",
            req.timeout
        )));
    }
    let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
    let out = cri
        .containers
        .exec_sync(&req.container_id, req.cmd, timeout)
        .await?;
    let (stdout, stderr) = fit_in_message(out.stdout, out.stderr, RESPONSE_OUTPUT_BUDGET);
    Ok(ExecSyncResponse {
        stdout,
        stderr,
        exit_code: out.exit_code,
    })
}

/// Ends an output that was cut (the shim ends its 16 MiB cut the same way).
const TRUNCATED_MARKER: &[u8] = b"\n[berth: output truncated]\n";

/// stdout and stderr together must leave room in one CRI message for the
/// framing and the exit code: kubelet refuses replies over 16 MiB, so an
/// oversized one would fail the probe instead of returning its output.
const RESPONSE_OUTPUT_BUDGET: usize = super::MAX_MESSAGE_BYTES - 4096;

/// Cuts stdout and stderr (each already capped by the shim) so that
/// together they fit `budget`: stderr keeps up to half, stdout the rest; a
/// cut stream ends with [`TRUNCATED_MARKER`].
fn fit_in_message(mut stdout: Vec<u8>, mut stderr: Vec<u8>, budget: usize) -> (Vec<u8>, Vec<u8>) {
    if stdout.len().saturating_add(stderr.len()) <= budget {
        return (stdout, stderr);
    }
    let stderr_keep = stderr.len().min(budget / 2);
    let stdout_keep = stdout.len().min(budget - stderr_keep);
    let stderr_keep = stderr.len().min(budget - stdout_keep);
    cut(&mut stdout, stdout_keep);
    cut(&mut stderr, stderr_keep);
    (stdout, stderr)
}

fn cut(v: &mut Vec<u8>, keep: usize) {
    if v.len() <= keep {
        return;
    }
    v.truncate(keep.saturating_sub(TRUNCATED_MARKER.len()));
    v.extend_from_slice(TRUNCATED_MARKER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_that_fits_is_untouched() {
        let (o, e) = fit_in_message(b"out".to_vec(), b"err".to_vec(), 6);
        assert_eq!((o.as_slice(), e.as_slice()), (&b"out"[..], &b"err"[..]));
    }

    #[test]
    fn oversized_output_is_cut_to_the_budget_with_a_marker() {
        let budget = 1000;
        let (o, e) = fit_in_message(vec![b'o'; 5000], vec![b'e'; 10], budget);
        assert!(o.len() + e.len() <= budget);
        assert!(o.ends_with(TRUNCATED_MARKER));
        assert_eq!(e, vec![b'e'; 10]);
        let (o, e) = fit_in_message(vec![b'o'; 5000], vec![b'e'; 5000], budget);
        assert!(o.len() + e.len() <= budget);
        assert!(o.ends_with(TRUNCATED_MARKER) && e.ends_with(TRUNCATED_MARKER));
        // The real budget: two 16 MiB streams fit one kubelet message.
        let big = 16 * 1024 * 1024;
        let (o, e) = fit_in_message(vec![1; big], vec![2; big], RESPONSE_OUTPUT_BUDGET);
        assert!(o.len() + e.len() <= RESPONSE_OUTPUT_BUDGET);
    }
}
