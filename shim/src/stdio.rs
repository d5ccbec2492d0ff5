//! A container's stdio as the shim holds it for attachers: the output
//! fan-out and the ends of its stdin.
//!
//! The log copier (logs.rs) stays the only reader of the container's pipes
//! or terminal; each chunk it reads is also offered to a broadcast channel.
//! Offering never waits: a container must never be slowed by an attacher
//! (the same rule as a full log disk), so an attacher that falls more than
//! [`FANOUT_CHUNKS`] chunks behind loses the oldest ones, and is told so in
//! the shim's log. The log itself always gets everything.

use std::fs::File;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::stream::Stream;

/// Chunks an attacher may fall behind before it loses output.
pub const FANOUT_CHUNKS: usize = 512;

/// One piece of output, from the stream it was read on.
pub type Chunk = (Stream, Arc<[u8]>);

/// The broadcast side of a container's output.
#[derive(Clone)]
pub struct Fanout(broadcast::Sender<Chunk>);

impl Default for Fanout {
    fn default() -> Self {
        Fanout(broadcast::channel(FANOUT_CHUNKS).0)
    }
}

impl Fanout {
    /// Offers `data` to the current attachers (copied only when there are some).
    pub fn send(&self, stream: Stream, data: &[u8]) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send((stream, Arc::from(data)));
        }
    }

    /// A new attacher: output from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Chunk> {
        self.0.subscribe()
    }
}

/// What attachers of one container share.
pub struct AttachPoint {
    /// The container's output.
    pub fanout: Fanout,
    /// A duplicate of the terminal master (tty containers): keystrokes and
    /// resizes go there. Blocking, like the copier's descriptor it shares.
    pub terminal: Option<Arc<File>>,
    /// Write end of the stdin pipe (`stdin: true` without a terminal); gone
    /// once a `stdin_once` container's first attacher closed it.
    pub stdin_pipe: Mutex<Option<Arc<File>>>,
    /// The container was created with `stdin: true`.
    pub stdin: bool,
    /// The container was created with `stdin_once: true`.
    pub stdin_once: bool,
}

impl AttachPoint {
    /// The attach point of a new container: `terminal` is a duplicate of
    /// its terminal master, `stdin_pipe` the write end of its stdin pipe.
    pub fn new(terminal: Option<File>, stdin_pipe: Option<File>, stdin: bool, stdin_once: bool) -> Self {
        AttachPoint {
            fanout: Fanout::default(),
            terminal: terminal.map(Arc::new),
            stdin_pipe: Mutex::new(stdin_pipe.map(Arc::new)),
            stdin,
            stdin_once,
        }
    }

    /// Where an attacher's stdin goes: the terminal, or the stdin pipe
    /// while it is open; nothing for a container created without stdin.
    pub fn stdin_writer(&self) -> Option<Arc<File>> {
        if !self.stdin {
            return None;
        }
        match &self.terminal {
            Some(t) => Some(t.clone()),
            None => self.stdin_pipe.lock().expect("stdin lock").clone(),
        }
    }

    /// An attacher is done with stdin: a `stdin_once` container's stdin
    /// closes (it reads EOF once no write is in flight).
    pub fn stdin_done(&self) {
        if self.stdin_once && self.terminal.is_none() {
            self.stdin_pipe.lock().expect("stdin lock").take();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn pipe() -> (File, File) {
        let (r, w) = std::io::pipe().unwrap();
        (
            File::from(std::os::fd::OwnedFd::from(r)),
            File::from(std::os::fd::OwnedFd::from(w)),
        )
    }

    /// `stdin_once`: the first attacher that finishes with stdin closes
    /// it, and the container reads EOF; later attachers get no writer.
    #[test]
    fn stdin_once_closes_the_pipe_after_the_first_attacher() {
        let (mut r, w) = pipe();
        let point = AttachPoint::new(None, Some(w), true, true);
        let writer = point.stdin_writer().expect("a writer");
        (&*writer).write_all(b"hi").unwrap();
        drop(writer);
        point.stdin_done();
        assert!(point.stdin_writer().is_none());
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hi", "then EOF: no write end is left");
    }

    /// Without `stdin_once` the pipe stays for the next attacher; a
    /// container created without stdin never gets a writer.
    #[test]
    fn stdin_stays_open_or_is_never_offered() {
        let (_r, w) = pipe();
        let point = AttachPoint::new(None, Some(w), true, false);
        point.stdin_done();
        assert!(point.stdin_writer().is_some());
        let (_r, w) = pipe();
        assert!(AttachPoint::new(None, Some(w), false, false)
            .stdin_writer()
            .is_none());
        // A terminal is stdin for every attacher, stdin_once or not.
        let (_r, t) = pipe();
        let point = AttachPoint::new(Some(t), None, true, true);
        point.stdin_done();
        assert!(point.stdin_writer().is_some());
    }

    /// Output nobody attached to is not kept; an attacher that falls
    /// behind loses the oldest chunks, never blocks the sender.
    #[tokio::test]
    async fn the_fanout_never_waits_for_attachers() {
        let fanout = Fanout::default();
        fanout.send(Stream::Stdout, b"before anyone");
        let mut rx = fanout.subscribe();
        for i in 0..FANOUT_CHUNKS + 3 {
            fanout.send(Stream::Stderr, i.to_string().as_bytes());
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(3))
        ));
        let (stream, data) = rx.recv().await.unwrap();
        assert_eq!((stream, &*data), (Stream::Stderr, &b"3"[..]));
    }
}
