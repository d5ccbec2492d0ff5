//! SPDY/3 frames on the wire, and the connection's header compression.
//!
//! Every frame starts with 8 bytes. A control frame has the high bit set,
//! then the 15-bit version (3) and 16-bit type, then 8 bits of flags and a
//! 24-bit payload length. A data frame has the high bit clear, a 31-bit
//! stream id, 8 bits of flags and a 24-bit length. Header blocks (in
//! SYN_STREAM, SYN_REPLY, HEADERS) are zlib streams that live as long as the
//! connection, one per direction, primed with the SPDY dictionary and
//! sync-flushed after every block — which is why a [`Codec`] is stateful and
//! frames must be encoded in the order they are written.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::dictionary::DICTIONARY;
use crate::headers::Headers;

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// Bytes before every frame's payload.
pub const HEADER_LEN: usize = 8;
/// The largest payload the 24-bit length field can describe.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Decompressed header blocks larger than this are refused (a zlib bomb
/// guard; Kubernetes' blocks are a few hundred bytes).
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Header pairs one block may carry (after splitting NUL-joined values):
/// a block of NULs would otherwise become ~100 bytes of memory per byte.
/// Kubernetes streams send fewer than ten.
pub const MAX_HEADER_PAIRS: usize = 1024;

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes (SPDY/3 section 2.6.3).
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// SETTINGS ids Berth reads.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flags, id, value) triples.
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type SPDY/3 does not define (or CREDENTIAL, which
    /// Berth does not use). The spec says to ignore these.
    Unknown {
        frame_type: u16,
    },
}

/// Why bytes could not be decoded. Every variant is a connection-level
/// protocol error: the session answers GOAWAY and closes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    #[error("{kind} frame has a payload of {len} bytes, which is invalid for it")]
    BadLength { kind: &'static str, len: usize },
    #[error("{0} frame names stream 0")]
    ZeroStream(&'static str),
    #[error("header block: {0}")]
    HeaderBlock(&'static str),
    #[error("header block inflates beyond {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
    #[error("header compression: {0}")]
    Compression(String),
    #[error("frame payload of {0} bytes exceeds the 24-bit limit")]
    TooLarge(usize),
}

/// Encoder and decoder state of one connection: the two zlib streams.
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // deflateSetDictionary must follow deflateInit directly; the peer
        // sees the dictionary id in the zlib header and primes its inflate.
        deflate
            .set_dictionary(DICTIONARY)
            .expect("a fresh deflate stream accepts a dictionary");
        Codec {
            deflate,
            inflate: Decompress::new(true),
        }
    }

    /// Appends the encoding of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let start = out.len();
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(FrameError::TooLarge(data.len()));
                }
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&len_word(*flags, data.len()));
                out.extend_from_slice(data);
                return Ok(());
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                control_header(out, TYPE_SYN_STREAM, *flags);
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&(associated_to & 0x7fff_ffff).to_be_bytes());
                out.push((priority & 0x07) << 5);
                out.push(0); // slot: credentials are not used
                self.compress_headers(headers, out)?;
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                control_header(out, TYPE_SYN_REPLY, *flags);
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                self.compress_headers(headers, out)?;
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                control_header(out, TYPE_HEADERS, *flags);
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                self.compress_headers(headers, out)?;
            }
            Frame::RstStream { stream_id, status } => {
                control_header(out, TYPE_RST_STREAM, 0);
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
            }
            Frame::Settings { flags, entries } => {
                control_header(out, TYPE_SETTINGS, *flags);
                out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for (f, id, value) in entries {
                    out.extend_from_slice(&((u32::from(*f) << 24) | (id & 0x00ff_ffff)).to_be_bytes());
                    out.extend_from_slice(&value.to_be_bytes());
                }
            }
            Frame::Ping { id } => {
                control_header(out, TYPE_PING, 0);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_header(out, TYPE_GOAWAY, 0);
                out.extend_from_slice(&(last_good_stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(out, TYPE_WINDOW_UPDATE, 0);
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
            }
            Frame::Unknown { frame_type } => {
                control_header(out, *frame_type, 0);
            }
        }
        // Patch the control frame's length now that the payload is known.
        let len = out.len() - start - HEADER_LEN;
        if len > MAX_PAYLOAD {
            out.truncate(start);
            return Err(FrameError::TooLarge(len));
        }
        let flags = out[start + 4];
        out[start + 4..start + 8].copy_from_slice(&len_word(flags, len));
        Ok(())
    }

    /// Decodes the first frame in `buf`. `Ok(None)` means `buf` does not hold
    /// a whole frame yet; `Ok(Some((frame, n)))` consumed `n` bytes.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let p = &buf[HEADER_LEN..HEADER_LEN + len];
        let used = HEADER_LEN + len;
        if word & 0x8000_0000 == 0 {
            let stream_id = word & 0x7fff_ffff;
            if stream_id == 0 {
                return Err(FrameError::ZeroStream("DATA"));
            }
            let data = Bytes::copy_from_slice(p);
            return Ok(Some((
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                },
                used,
            )));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let frame = match (word & 0xffff) as u16 {
            TYPE_SYN_STREAM => {
                need("SYN_STREAM", p, 10, false)?;
                let stream_id = stream(p, 0, "SYN_STREAM")?;
                let associated_to = be32(p, 4) & 0x7fff_ffff;
                let priority = p[8] >> 5;
                let headers = self.decompress_headers(&p[10..])?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers,
                }
            }
            TYPE_SYN_REPLY => {
                let (stream_id, headers) = self.stream_and_headers("SYN_REPLY", p)?;
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            }
            TYPE_HEADERS => {
                let (stream_id, headers) = self.stream_and_headers("HEADERS", p)?;
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
            TYPE_RST_STREAM => {
                need("RST_STREAM", p, 8, true)?;
                Frame::RstStream {
                    stream_id: stream(p, 0, "RST_STREAM")?,
                    status: be32(p, 4),
                }
            }
            TYPE_SETTINGS => {
                need("SETTINGS", p, 4, false)?;
                let n = be32(p, 0) as usize;
                if p.len() != 4 + n.saturating_mul(8) {
                    return Err(FrameError::BadLength {
                        kind: "SETTINGS",
                        len: p.len(),
                    });
                }
                let entries = (0..n)
                    .map(|i| {
                        let w = be32(p, 4 + i * 8);
                        ((w >> 24) as u8, w & 0x00ff_ffff, be32(p, 8 + i * 8))
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                need("PING", p, 4, true)?;
                Frame::Ping { id: be32(p, 0) }
            }
            TYPE_GOAWAY => {
                need("GOAWAY", p, 8, true)?;
                Frame::GoAway {
                    last_good_stream_id: be32(p, 0) & 0x7fff_ffff,
                    status: be32(p, 4),
                }
            }
            TYPE_WINDOW_UPDATE => {
                need("WINDOW_UPDATE", p, 8, true)?;
                Frame::WindowUpdate {
                    stream_id: be32(p, 0) & 0x7fff_ffff,
                    delta: be32(p, 4) & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { frame_type: other },
        };
        Ok(Some((frame, used)))
    }

    /// The payload of SYN_REPLY and HEADERS: a stream id, then a header block.
    fn stream_and_headers(&mut self, kind: &'static str, p: &[u8]) -> Result<(u32, Headers), FrameError> {
        need(kind, p, 4, false)?;
        let stream_id = stream(p, 0, kind)?;
        Ok((stream_id, self.decompress_headers(&p[4..])?))
    }

    fn compress_headers(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let mut block = Vec::with_capacity(64);
        let grouped = headers.grouped();
        block.extend_from_slice(&(grouped.len() as u32).to_be_bytes());
        for (name, values) in grouped {
            let value = values.join("\0");
            block.extend_from_slice(&(name.len() as u32).to_be_bytes());
            block.extend_from_slice(name.as_bytes());
            block.extend_from_slice(&(value.len() as u32).to_be_bytes());
            block.extend_from_slice(value.as_bytes());
        }
        let mut input = &block[..];
        loop {
            out.reserve(input.len() + 64);
            let before_in = self.deflate.total_in();
            self.deflate
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compression(e.to_string()))?;
            let used = (self.deflate.total_in() - before_in) as usize;
            input = &input[used..];
            // A sync flush is complete once all input is taken and zlib left
            // spare room in the output (it fills the buffer when it has more).
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }

    fn decompress_headers(&mut self, mut input: &[u8]) -> Result<Headers, FrameError> {
        let mut block: Vec<u8> = Vec::new();
        loop {
            if block.len() >= MAX_HEADER_BLOCK {
                return Err(FrameError::HeaderBlockTooLarge);
            }
            block.reserve(4096);
            let (before_in, before_out) = (self.inflate.total_in(), block.len());
            let res = self
                .inflate
                .decompress_vec(input, &mut block, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            match res {
                // The first block of a connection: zlib read the header and
                // the dictionary id and now wants the SPDY dictionary.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| FrameError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(FrameError::Compression(e.to_string())),
                Ok(Status::StreamEnd) => return Err(FrameError::HeaderBlock("zlib stream ended")),
                Ok(_) => {}
            }
            // Done once all input is taken and zlib had output room to spare
            // (a full buffer may hide more pending output).
            if input.is_empty() && block.len() < block.capacity() {
                break;
            }
            if used == 0 && block.len() == before_out {
                return Err(FrameError::HeaderBlock("zlib made no progress"));
            }
        }
        parse_block(&block)
    }
}

fn parse_block(b: &[u8]) -> Result<Headers, FrameError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], FrameError> {
        let end = at.checked_add(n).filter(|&e| e <= b.len());
        let end = end.ok_or(FrameError::HeaderBlock("truncated"))?;
        let s = &b[at..end];
        at = end;
        Ok(s)
    };
    let count = be32(take(4)?, 0);
    let mut headers = Headers::new();
    for _ in 0..count {
        let n = be32(take(4)?, 0) as usize;
        let name = std::str::from_utf8(take(n)?).map_err(|_| FrameError::HeaderBlock("name is not UTF-8"))?;
        if name.is_empty() {
            return Err(FrameError::HeaderBlock("empty name"));
        }
        let name = name.to_string();
        let n = be32(take(4)?, 0) as usize;
        let value =
            std::str::from_utf8(take(n)?).map_err(|_| FrameError::HeaderBlock("value is not UTF-8"))?;
        for v in value.split('\0') {
            if headers.len() >= MAX_HEADER_PAIRS {
                return Err(FrameError::HeaderBlock("too many header pairs"));
            }
            headers.add(&name, v);
        }
    }
    if at != b.len() {
        return Err(FrameError::HeaderBlock("bytes after the last pair"));
    }
    Ok(headers)
}

fn control_header(out: &mut Vec<u8>, frame_type: u16, flags: u8) {
    out.extend_from_slice(&(0x8000u16 | VERSION).to_be_bytes());
    out.extend_from_slice(&frame_type.to_be_bytes());
    out.extend_from_slice(&[flags, 0, 0, 0]); // length patched by encode
}

fn len_word(flags: u8, len: usize) -> [u8; 4] {
    let l = (len as u32).to_be_bytes();
    [flags, l[1], l[2], l[3]]
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn need(kind: &'static str, p: &[u8], n: usize, exact: bool) -> Result<(), FrameError> {
    if p.len() < n || (exact && p.len() != n) {
        return Err(FrameError::BadLength { kind, len: p.len() });
    }
    Ok(())
}

fn stream(p: &[u8], at: usize, kind: &'static str) -> Result<u32, FrameError> {
    match be32(p, at) & 0x7fff_ffff {
        0 => Err(FrameError::ZeroStream(kind)),
        id => Ok(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(frames: &[Frame]) {
        let (mut tx, mut rx) = (Codec::new(), Codec::new());
        let mut wire = Vec::new();
        for f in frames {
            tx.encode(f, &mut wire).unwrap();
        }
        let mut at = 0;
        for f in frames {
            let (got, n) = rx.decode(&wire[at..]).unwrap().expect("a whole frame");
            assert_eq!(&got, f);
            at += n;
        }
        assert_eq!(at, wire.len());
    }

    fn exec_headers() -> Headers {
        Headers::new().with("streamType", "stdout")
    }

    #[test]
    fn every_frame_type_round_trips() {
        roundtrip(&[
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: exec_headers(),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: Headers::new(),
            },
            Frame::Headers {
                stream_id: 1,
                flags: 0,
                headers: Headers::new().with("a", "1").with("a", "2"),
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20), (1, 4, 100)],
            },
            Frame::Ping { id: 2 },
            Frame::GoAway {
                last_good_stream_id: 7,
                status: goaway::OK,
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 65536,
            },
        ]);
    }

    /// The header zlib stream spans frames: the second block refers back to
    /// the first, so a decoder that resets between frames fails.
    #[test]
    fn header_compression_carries_across_frames() {
        let many: Vec<Frame> = (0..50)
            .map(|i| Frame::SynStream {
                stream_id: 2 * i + 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: Headers::new()
                    .with("streamType", "data")
                    .with("port", "8080")
                    .with("requestID", &i.to_string()),
            })
            .collect();
        roundtrip(&many);
        let mut c = Codec::new();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        c.encode(&many[0], &mut a).unwrap();
        c.encode(&many[1], &mut b).unwrap();
        assert!(
            b.len() < a.len(),
            "later blocks reuse the window: {} vs {}",
            b.len(),
            a.len()
        );
    }

    #[test]
    fn big_header_values_round_trip() {
        let v = "x".repeat(100_000);
        roundtrip(&[Frame::SynReply {
            stream_id: 5,
            flags: 0,
            headers: Headers::new().with("big", &v),
        }]);
    }

    /// A block of NUL-joined empty values would expand into one pair per
    /// byte; past MAX_HEADER_PAIRS it is a protocol error.
    #[test]
    fn too_many_header_pairs_are_refused() {
        let mut many = Headers::new();
        for _ in 0..=MAX_HEADER_PAIRS {
            many.add("a", "");
        }
        let mut out = Vec::new();
        Codec::new()
            .encode(
                &Frame::SynStream {
                    stream_id: 1,
                    associated_to: 0,
                    priority: 0,
                    flags: 0,
                    headers: many,
                },
                &mut out,
            )
            .unwrap();
        assert_eq!(
            Codec::new().decode(&out),
            Err(FrameError::HeaderBlock("too many header pairs"))
        );
    }

    #[test]
    fn partial_input_asks_for_more() {
        let mut c = Codec::new();
        let mut wire = Vec::new();
        c.encode(&Frame::Ping { id: 1 }, &mut wire).unwrap();
        let mut d = Codec::new();
        for cut in 0..wire.len() {
            assert_eq!(d.decode(&wire[..cut]).unwrap(), None);
        }
        assert_eq!(d.decode(&wire).unwrap(), Some((Frame::Ping { id: 1 }, 12)));
    }

    /// Exact bytes of the fixed-layout frames (SPDY/3 section 2.6).
    #[test]
    fn fixed_frames_have_the_spec_layout() {
        let mut c = Codec::new();
        let mut w = Vec::new();
        c.encode(&Frame::Ping { id: 1 }, &mut w).unwrap();
        assert_eq!(w, [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
        w.clear();
        c.encode(
            &Frame::RstStream {
                stream_id: 3,
                status: 5,
            },
            &mut w,
        )
        .unwrap();
        assert_eq!(w, [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5]);
        w.clear();
        c.encode(
            &Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"ab"),
            },
            &mut w,
        )
        .unwrap();
        assert_eq!(w, [0, 0, 0, 1, 1, 0, 0, 2, b'a', b'b']);
        w.clear();
        c.encode(
            &Frame::WindowUpdate {
                stream_id: 1,
                delta: 10,
            },
            &mut w,
        )
        .unwrap();
        assert_eq!(w, [0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 10]);
    }

    /// A header block compressed by a zlib that was primed with the SPDY
    /// dictionary (here: the peer's view, built independently of Codec
    /// with flate2's raw API) decodes.
    #[test]
    fn decodes_blocks_from_an_independent_compressor() {
        let mut block = Vec::new();
        block.extend_from_slice(&1u32.to_be_bytes());
        block.extend_from_slice(&10u32.to_be_bytes());
        block.extend_from_slice(b"streamtype");
        block.extend_from_slice(&5u32.to_be_bytes());
        block.extend_from_slice(b"error");
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(DICTIONARY).unwrap();
        let mut comp = Vec::with_capacity(256);
        z.compress_vec(&block, &mut comp, FlushCompress::Sync).unwrap();
        let mut frame = vec![0x80, 3, 0, 1, 0, 0, 0, 0];
        frame.extend_from_slice(&1u32.to_be_bytes());
        frame.extend_from_slice(&0u32.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&comp);
        let len = (frame.len() - 8) as u32;
        frame[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
        let (f, n) = Codec::new().decode(&frame).unwrap().unwrap();
        assert_eq!(n, frame.len());
        match f {
            Frame::SynStream {
                stream_id, headers, ..
            } => {
                assert_eq!(stream_id, 1);
                assert_eq!(headers.get("streamType"), Some("error"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let mut c = Codec::new();
        // Wrong version.
        assert_eq!(
            c.decode(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]),
            Err(FrameError::Version(2))
        );
        // PING with a 3-byte payload.
        assert!(matches!(
            c.decode(&[0x80, 3, 0, 6, 0, 0, 0, 3, 0, 0, 1]),
            Err(FrameError::BadLength { kind: "PING", .. })
        ));
        // DATA on stream 0.
        assert_eq!(
            c.decode(&[0, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::ZeroStream("DATA"))
        );
        // SYN_STREAM whose header block is not zlib.
        let mut bad = vec![0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        bad.extend_from_slice(b"junk");
        assert!(c.decode(&bad).is_err());
        // SETTINGS whose count disagrees with its length.
        assert!(Codec::new()
            .decode(&[0x80, 3, 0, 4, 0, 0, 0, 4, 0, 0, 0, 9])
            .is_err());
        // Unknown control types are skipped, as the spec asks.
        assert_eq!(
            Codec::new().decode(&[0x80, 3, 0, 10, 0, 0, 0, 1, 7]).unwrap(),
            Some((Frame::Unknown { frame_type: 10 }, 9))
        );
    }

    /// A fixed-seed randomised test: mutated and random byte strings never
    /// panic the decoder (the libFuzzer target in `runtime/spdy/fuzz` runs the
    /// same entry point without a bound).
    #[test]
    fn mutated_input_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut good = Vec::new();
        let mut c = Codec::new();
        for f in [
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: exec_headers(),
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 7, 1)],
            },
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"xyz"),
            },
        ] {
            c.encode(&f, &mut good).unwrap();
        }
        for _ in 0..20_000 {
            let mut input = good.clone();
            for _ in 0..(rnd() % 8 + 1) {
                let i = (rnd() as usize) % input.len();
                input[i] = rnd() as u8;
            }
            if rnd() % 4 == 0 {
                input.truncate((rnd() as usize) % input.len());
            }
            decode_all(&input);
        }
        for _ in 0..5_000 {
            let n = (rnd() % 64) as usize;
            let input: Vec<u8> = (0..n).map(|_| rnd() as u8).collect();
            decode_all(&input);
        }
    }

    fn decode_all(input: &[u8]) {
        let mut c = Codec::new();
        let mut at = 0;
        while let Ok(Some((_, n))) = c.decode(&input[at..]) {
            at += n;
        }
    }
}
