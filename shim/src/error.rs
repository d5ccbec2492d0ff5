//! The shim's one error type, and its one mapping to gRPC status codes.
//!
//! Every RPC body returns [`Error`]; the gRPC layer turns it into a
//! `tonic::Status` only through `From<Error>` below, so the code berthd sees
//! for each failure is decided in this file. berthd reads some of these codes
//! (NotFound: the container is gone; FailedPrecondition: the container's
//! own setup failed, with init's message verbatim), so a variant's code and
//! text are part of the shim's API.

use std::time::Duration;

use tonic::Status;

/// Everything an RPC of the shim can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container with this id in this shim.
    #[error("container {0} not found in shim")]
    NotFound(String),
    /// Create of an id the shim already has.
    #[error("container {0} exists")]
    Exists(String),
    /// The spec berthd sent does not parse.
    #[error("bad OCI spec: {0}")]
    BadSpec(#[source] serde_json::Error),
    /// A signal number the kernel does not have.
    #[error("bad signal {0}")]
    BadSignal(u32),
    /// Exec or ExecStream without a command.
    #[error("exec needs a command")]
    NoCommand,
    /// A stream RPC whose first message is not the one that starts it.
    #[error("{rpc} must begin with an {first} message")]
    BadFirstMessage {
        /// The RPC (`ExecStream`, `Attach`).
        rpc: &'static str,
        /// The message it must start with.
        first: &'static str,
    },
    /// The container is not in the phase the operation needs (the text
    /// names the container and the phase).
    #[error("{0}")]
    WrongPhase(String),
    /// The container's init stage failed during create; `message` is what
    /// it reported.
    #[error("create container {id}: {message}")]
    CreateFailed {
        /// The container.
        id: String,
        /// Init's report.
        message: String,
    },
    /// The container's process could not be exec'd on Start.
    #[error("start container {id}: {message}")]
    StartFailed {
        /// The container.
        id: String,
        /// Init's report.
        message: String,
    },
    /// A process could not be exec'd into the container.
    #[error("exec in container {id}: {message}")]
    ExecFailed {
        /// The container.
        id: String,
        /// The exec stage's report.
        message: String,
    },
    /// Shutdown without force while containers remain.
    #[error("shim still has {0} container(s); delete them first")]
    NotEmpty(usize),
    /// Delete's SIGKILL did not end the container in time.
    #[error("container {id} did not exit within {waited:?} of SIGKILL")]
    NotKilled {
        /// The container.
        id: String,
        /// How long Delete waited.
        waited: Duration,
    },
    /// A container record without a pidfd (only unit tests make those).
    #[error("container {0} has no pidfd")]
    NoPidfd(String),
    /// A host operation of the shim failed.
    #[error("{context}: {source}")]
    Io {
        /// What the shim was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else unexpected (a task that panicked, an encoding error).
    #[error("{context}: {message}")]
    Internal {
        /// What the shim was doing.
        context: String,
        /// What went wrong.
        message: String,
    },
    /// The caller's own stream failed; passed back as it came.
    #[error("{0}")]
    Stream(Status),
}

/// Result alias for the shim.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failed host operation: `context` says what the shim was doing.
    pub fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    /// An unexpected failure that is no OS error.
    pub fn internal(context: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Internal {
            context: context.into(),
            message: message.to_string(),
        }
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        Error::Stream(s)
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::NotFound(_) => Status::not_found(msg),
            Error::Exists(_) => Status::already_exists(msg),
            Error::BadSpec(_) | Error::BadSignal(_) | Error::NoCommand | Error::BadFirstMessage { .. } => {
                Status::invalid_argument(msg)
            }
            Error::WrongPhase(_)
            | Error::CreateFailed { .. }
            | Error::StartFailed { .. }
            | Error::ExecFailed { .. }
            | Error::NotEmpty(_) => Status::failed_precondition(msg),
            Error::NotKilled { .. } => Status::deadline_exceeded(msg),
            Error::NoPidfd(_) | Error::Io { .. } | Error::Internal { .. } => Status::internal(msg),
            Error::Stream(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    /// berthd tells a gone container from a failed setup by these codes,
    /// and shows init's message as it came.
    #[test]
    fn codes_and_messages_are_the_api() {
        let cases: Vec<(Error, Code, &str)> = vec![
            (
                Error::NotFound("c1".into()),
                Code::NotFound,
                "container c1 not found in shim",
            ),
            (
                Error::Exists("c1".into()),
                Code::AlreadyExists,
                "container c1 exists",
            ),
            (Error::BadSignal(99), Code::InvalidArgument, "bad signal 99"),
            (Error::NoCommand, Code::InvalidArgument, "exec needs a command"),
            (
                Error::BadFirstMessage {
                    rpc: "Attach",
                    first: "attach",
                },
                Code::InvalidArgument,
                "Attach must begin with an attach message",
            ),
            (
                Error::CreateFailed {
                    id: "c1".into(),
                    message: "mount point /x: ENOENT".into(),
                },
                Code::FailedPrecondition,
                "create container c1: mount point /x: ENOENT",
            ),
            (
                Error::StartFailed {
                    id: "c1".into(),
                    message: "exec \"nope\": ENOENT".into(),
                },
                Code::FailedPrecondition,
                "start container c1: exec \"nope\": ENOENT",
            ),
            (
                Error::NotEmpty(2),
                Code::FailedPrecondition,
                "shim still has 2 container(s); delete them first",
            ),
            (
                Error::NotKilled {
                    id: "c1".into(),
                    waited: Duration::from_secs(10),
                },
                Code::DeadlineExceeded,
                "container c1 did not exit within 10s of SIGKILL",
            ),
            (
                Error::io("open log file", std::io::Error::from_raw_os_error(libc::ENOSPC)),
                Code::Internal,
                "open log file: No space left on device (os error 28)",
            ),
            (
                Error::internal("start task", "panicked"),
                Code::Internal,
                "start task: panicked",
            ),
            (Error::Stream(Status::cancelled("gone")), Code::Cancelled, "gone"),
        ];
        for (e, code, msg) in cases {
            let s = Status::from(e);
            assert_eq!((s.code(), s.message()), (code, msg));
        }
    }
}
