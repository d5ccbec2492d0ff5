//! The shim API's fast path: CreateContainer's and StartContainer's shim
//! calls (Create, Start) as length-prefixed protobuf frames on a plain
//! connection to the shim's socket, beside its gRPC server.
//!
//! Why: these two calls are on every container's start, and under the
//! test VM's emulation an HTTP/2 + gRPC round trip on a fresh shim cost
//! 6-10 ms of framing, header coding and task hand-offs per call. The
//! messages are the same protobuf ones; only the envelope is smaller.
//!
//! A connection opens with [`MAGIC`] (its first byte is 0; an HTTP/2
//! connection's is `P`, so the shim tells them apart by one peeked byte),
//! and the shim answers with it. Then, one call at a time: a request frame, a reply frame. A frame is a
//! [`HEAD`]-byte header (body length, u32 big-endian; a tag) and the body.
//! A request's tag names the method ([`CREATE`], [`START`]); a reply's is
//! [`OK`] with the response message, or a gRPC status code with the
//! status message as UTF-8.

/// What a fast connection sends first, and the shim answers it with. As long as HTTP/2's client preface, so that a shim from before
/// the fast path has a whole preface to refuse and hangs up at once.
pub const MAGIC: &[u8; 24] = b"\0berth-shim-fast-call/1\n";
/// Request tag: `Shim/Create`.
pub const CREATE: u8 = 1;
/// Request tag: `Shim/Start`.
pub const START: u8 = 2;
/// Reply tag of a success.
pub const OK: u8 = 0;
/// Header length: body length (4 bytes) and tag (1).
pub const HEAD: usize = 5;
/// Largest body either side reads: a Create carries the whole spec, and a
/// peer that claims more is refused before anything is allocated.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// One frame: header and `body`. None when the body is over [`MAX_BODY`].
pub fn frame(tag: u8, body: &[u8]) -> Option<Vec<u8>> {
    if body.len() > MAX_BODY {
        return None;
    }
    let mut out = Vec::with_capacity(HEAD + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.push(tag);
    out.extend_from_slice(body);
    Some(out)
}

/// A request frame for `msg`.
pub fn request<M: prost::Message>(tag: u8, msg: &M) -> Option<Vec<u8>> {
    frame(tag, &msg.encode_to_vec())
}

/// A header's tag and body length; an error for a length over [`MAX_BODY`].
pub fn head(h: &[u8; HEAD]) -> Result<(u8, usize), tonic::Status> {
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len > MAX_BODY {
        return Err(tonic::Status::resource_exhausted(format!(
            "fast call frame of {len} bytes (at most {MAX_BODY})"
        )));
    }
    Ok((h[4], len))
}

/// A request body as message `M`.
pub fn decode<M: prost::Message + Default>(body: &[u8]) -> Result<M, tonic::Status> {
    M::decode(body).map_err(|e| tonic::Status::invalid_argument(format!("fast call request: {e}")))
}

/// The reply frame of a handler's result.
pub fn reply<M: prost::Message>(r: Result<tonic::Response<M>, tonic::Status>) -> Vec<u8> {
    let status = match r {
        Ok(resp) => match frame(OK, &resp.into_inner().encode_to_vec()) {
            Some(f) => return f,
            None => tonic::Status::resource_exhausted("fast call reply over the frame limit"),
        },
        Err(s) => s,
    };
    let code = (status.code() as i32).clamp(1, 255) as u8;
    let mut message = status.message().as_bytes();
    message = &message[..message.len().min(MAX_BODY)];
    frame(code, message).unwrap_or_default()
}

/// A reply frame's result, as the gRPC call would have returned it.
pub fn parse_reply<M: prost::Message + Default>(
    tag: u8,
    body: &[u8],
) -> Result<tonic::Response<M>, tonic::Status> {
    if tag == OK {
        return M::decode(body)
            .map(tonic::Response::new)
            .map_err(|e| tonic::Status::internal(format!("fast call reply: {e}")));
    }
    Err(tonic::Status::new(
        tonic::Code::from_i32(tag as i32),
        String::from_utf8_lossy(body).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::{CreateResponse, StartRequest};

    fn split(f: &[u8]) -> (u8, &[u8]) {
        let (tag, len) = head(f[..HEAD].try_into().unwrap()).unwrap();
        assert_eq!(len, f.len() - HEAD);
        (tag, &f[HEAD..])
    }

    #[test]
    fn a_request_and_a_reply_round_trip() {
        let f = request(START, &StartRequest { id: "c1".into() }).unwrap();
        let (tag, body) = split(&f);
        assert_eq!(tag, START);
        assert_eq!(decode::<StartRequest>(body).unwrap().id, "c1");

        let f = reply(Ok(tonic::Response::new(CreateResponse {
            pid: 42,
            ..Default::default()
        })));
        let (tag, body) = split(&f);
        assert_eq!(
            parse_reply::<CreateResponse>(tag, body).unwrap().into_inner().pid,
            42
        );
    }

    /// A status keeps its code and message, as over gRPC.
    #[test]
    fn an_error_reply_is_the_same_status() {
        let f = reply::<CreateResponse>(Err(tonic::Status::not_found("container c9")));
        let (tag, body) = split(&f);
        let s = parse_reply::<CreateResponse>(tag, body).unwrap_err();
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "container c9");
    }

    /// A header claiming more than the limit is refused before any read
    /// of the body; a body over it makes no frame.
    #[test]
    fn oversized_frames_are_refused() {
        let mut h = [0u8; HEAD];
        h[..4].copy_from_slice(&((MAX_BODY + 1) as u32).to_be_bytes());
        assert_eq!(head(&h).unwrap_err().code(), tonic::Code::ResourceExhausted);
        h[..4].copy_from_slice(&(u32::MAX).to_be_bytes());
        assert!(head(&h).is_err());
        assert!(frame(OK, &vec![0; MAX_BODY + 1]).is_none());
        assert!(frame(OK, &vec![0; MAX_BODY]).is_some());
    }

    /// The magic's first byte can never start an HTTP/2 connection, and
    /// it is as long as the preface a gRPC server reads before it refuses.
    #[test]
    fn the_magic_is_not_an_http2_preface() {
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(MAGIC[0], 0);
        assert_ne!(MAGIC[0], PREFACE[0]);
        assert_eq!(MAGIC.len(), PREFACE.len());
    }
}
