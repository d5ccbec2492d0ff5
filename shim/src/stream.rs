//! Which of a container's output streams a piece of output came from: the
//! one word the log copier (logs.rs) and the attachers (attach.rs) share.

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
