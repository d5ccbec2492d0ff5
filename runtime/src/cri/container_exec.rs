//! Exec: validates a streamed exec and answers the streaming server's URL
//! for it (the client then connects there; see `crate::stream`).

use berth_proto::cri::{ExecRequest, ExecResponse};

use super::Cri;
use crate::error::{Error, Result};
use crate::stream::StreamRequest;

/// The stream combinations kubelet's streaming server accepts.
pub fn check_streams(what: &str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<()> {
    // A terminal merges stdout and stderr into one stream.
    if tty && stderr {
        return Err(Error::InvalidArgument(format!(
            "{what}: tty and stderr cannot both be true"
        )));
    }
    if !stdin && !stdout && !stderr {
        return Err(Error::InvalidArgument(format!(
            "{what}: one of stdin, stdout, or stderr must be set"
        )));
    }
    Ok(())
}

/// Handles Exec.
pub async fn handle(cri: &Cri, req: ExecRequest) -> Result<ExecResponse> {
    if req.cmd.is_empty() {
        return Err(Error::InvalidArgument("Exec needs a command".into()));
    }
    check_streams("Exec", req.tty, req.stdin, req.stdout, req.stderr)?;
    // A unique prefix names the container too; the shim needs the full id.
    let rec = cri.containers.running(&req.container_id, "Exec")?;
    let mut req = req;
    req.container_id = rec.id;
    let url = cri.streams.register(StreamRequest::Exec(req))?;
    Ok(ExecResponse { url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_combinations() {
        assert!(check_streams("Exec", false, false, true, true).is_ok());
        assert!(check_streams("Exec", true, true, true, false).is_ok());
        let e = check_streams("Exec", true, false, true, true).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = check_streams("Attach", false, false, false, false).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("one of stdin, stdout, or stderr"), "{e}");
    }
}
