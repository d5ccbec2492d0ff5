//! Berth's one error type, and its one mapping to gRPC status codes.
//!
//! Managers return [`Error`]; CRI handlers return `tonic::Status` built only by
//! `From<Error>` below, so every code a client sees is decided in this file.

use tonic::{Code, Status};

/// Everything that can go wrong inside berthd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is malformed or contradicts itself.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An object with that name or id exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The object is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The RPC or option is not implemented yet.
    #[error("{0} is not implemented by berth yet")]
    Unimplemented(&'static str),
    /// The request's deadline or an internal timeout ran out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A host operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What berthd was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The pod's shim refused or failed an operation.
    #[error("shim: {0}")]
    Shim(String),
    /// A registry or image problem.
    #[error("image: {0}")]
    Image(String),
    /// A registry refused the credentials (or needs some).
    #[error("registry authentication: {0}")]
    Unauthenticated(String),
    /// Pod networking (CNI) failed.
    #[error("network: {0}")]
    Network(String),
    /// A bounded resource ran out (an event subscriber fell behind).
    #[error("{0}")]
    ResourceExhausted(String),
    /// A bug or an unexpected condition.
    #[error("internal error: {0}")]
    Internal(String),
    /// A CDI device could not be resolved or applied.
    #[error(transparent)]
    Cdi(#[from] crate::cdi::CdiError),
}

/// Result alias for berthd.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The gRPC code for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NotFound,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Timeout(_) => Code::DeadlineExceeded,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Code::NotFound,
            Error::Io { .. } | Error::Shim(_) | Error::Internal(_) => Code::Internal,
            Error::Image(_) | Error::Network(_) => Code::Unknown,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            // A bad name is the caller's; an unknown device is NotFound (the
            // plugin that named it has not written its spec); a broken or
            // unusable spec file is the node's to fix.
            Error::Cdi(e) => match e {
                crate::cdi::CdiError::BadName { .. } => Code::InvalidArgument,
                crate::cdi::CdiError::UnknownDevice { .. } => Code::NotFound,
                crate::cdi::CdiError::BadSpec { .. }
                | crate::cdi::CdiError::Conflict { .. }
                | crate::cdi::CdiError::BadEdit { .. } => Code::FailedPrecondition,
            },
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// Adds context to I/O results.
pub trait IoContext<T> {
    /// Maps an `io::Error` into [`Error::Io`] with `context`.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(
            Status::from(Error::NotFound("sandbox x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            Status::from(Error::InvalidArgument("x".into())).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            Status::from(Error::Unimplemented("Exec")).code(),
            Code::Unimplemented
        );
        let s = Status::from(Error::Unimplemented("Exec"));
        assert!(s.message().contains("Exec"), "{}", s.message());
        let io = Error::io("read x", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(io.code(), Code::NotFound);
        let io = Error::io(
            "read x",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert_eq!(io.code(), Code::Internal);
        assert_eq!(
            Status::from(Error::Unauthenticated("bad password".into())).code(),
            Code::Unauthenticated
        );
    }
}
