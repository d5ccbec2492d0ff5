//! Streamed exec and attach through the pod's shim (the shim's ExecStream
//! and Attach calls). The streaming server (`crate::stream`) calls these
//! once a client connected with a valid token; the container may have
//! stopped since the RPC, so its state is checked again here.

use berth_proto::shim::{StreamInput, StreamOutput};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{shim_error, ContainerManager, ContainerRecord, ContainerState};
use crate::error::{Error, Result};
use crate::shim_client::Shim;

impl ContainerManager {
    /// The record of a running container, for a streaming request about it.
    pub fn running(&self, id: &str, what: &str) -> Result<ContainerRecord> {
        let rec = self.get(id)?.record();
        if rec.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}; {what} needs a running container",
                rec.id, rec.state
            )));
        }
        Ok(rec)
    }

    fn stream_shim(&self, id: &str, what: &str) -> Result<Shim> {
        let rec = self.running(id, what)?;
        let sb = self.sandboxes.get(&rec.sandbox_id)?;
        Self::shim_of(&sb)
    }

    /// Starts a streamed exec; `input` must begin with the `exec` message and
    /// stay open for the whole session (its end tells the shim the client left).
    pub async fn exec_stream(
        &self,
        id: &str,
        input: mpsc::Receiver<StreamInput>,
    ) -> Result<tonic::Streaming<StreamOutput>> {
        let mut shim = self.stream_shim(id, "exec")?;
        Ok(shim
            .exec_stream(ReceiverStream::new(input))
            .await
            .map_err(shim_error)?
            .into_inner())
    }

    /// Attaches to a running container; `input` begins with `attach`.
    pub async fn attach_stream(
        &self,
        id: &str,
        input: mpsc::Receiver<StreamInput>,
    ) -> Result<tonic::Streaming<StreamOutput>> {
        let mut shim = self.stream_shim(id, "attach")?;
        Ok(shim
            .attach(ReceiverStream::new(input))
            .await
            .map_err(shim_error)?
            .into_inner())
    }
}
