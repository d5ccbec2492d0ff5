//! Which of a container's output streams a piece of output came from (the
//! one word the log copier, logs.rs, and the attachers, attach.rs, share),
//! and the opening message of the shim's stream RPCs.

use berth_proto::shim::stream_input::Input;
use berth_proto::shim::StreamInput;
use tonic::Streaming;

use crate::error::{Error, Result};

/// A container's output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's fd 1 (and a terminal's merged output).
    Stdout,
    /// The container's fd 2.
    Stderr,
}

impl Stream {
    /// Its name in a CRI log record.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The first message of the stream RPC `rpc` (ExecStream, Attach), which
/// must be the `first` one that starts it (`pick` takes it out of the
/// input); the rest of `input` is stdin and resizes.
pub async fn opening<T>(
    input: &mut Streaming<StreamInput>,
    rpc: &'static str,
    first: &'static str,
    pick: fn(Input) -> Option<T>,
) -> Result<T> {
    input
        .message()
        .await?
        .and_then(|m| m.input)
        .and_then(pick)
        .ok_or(Error::BadFirstMessage { rpc, first })
}
