//! SPDY/3.1, the multiplexing protocol kubelet and crictl still use to carry
//! `exec`, `attach` and `port-forward` streams to a container runtime.
//!
//! No maintained server-side SPDY crate exists for Rust, so Berth carries this
//! small one. It implements what Kubernetes streaming needs and nothing more:
//!
//! * [`frame`]: the wire format of every SPDY/3 frame (SYN_STREAM, SYN_REPLY,
//!   RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE, DATA) and the
//!   per-connection zlib header compression primed with the SPDY dictionary.
//!   Pure code: it never panics on hostile input (see the fuzz target in
//!   `runtime/spdy/fuzz` and the randomised test in `frame.rs`).
//! * [`session`]: a tokio session over any byte stream (an upgraded HTTP
//!   connection in berthd, a TCP socket in the tests), in either role, that
//!   multiplexes [`session::Stream`]s implementing `AsyncRead`/`AsyncWrite`,
//!   answers pings, honours GOAWAY and RST_STREAM, and does SPDY/3.1 flow
//!   control (see the module docs for how it copes with peers that do not).
#![forbid(unsafe_code)]

mod dictionary;
pub mod frame;
mod headers;
pub mod session;

pub use frame::{Codec, Frame, FrameError};
pub use headers::Headers;
pub use session::{Incoming, Role, Session, SessionConfig, Stream};
