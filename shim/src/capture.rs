//! ExecSync's output capture: both pipes read on the shim's runtime (no
//! thread per pipe), each kept up to a cap, and never read past the call.
//!
//! The command's output is untrusted: `yes` would otherwise fill the shim's
//! memory, and a child the command left running (`sleep 1000 &`) holds the
//! pipes open long after the command exited, so a reader waiting for EOF
//! would outlive the call with its buffer. Here reading stops when the call
//! ends; the pipes close with it.

use std::future::Future;
use std::time::Duration;

use crate::fdio::FdStream;

/// Output kept per stream (kubelet's probes read far less; CRI-O keeps 16 MiB).
pub const OUTPUT_CAP_BYTES: usize = 16 * 1024 * 1024;

/// Ends a stream whose output was cut at the cap (berthd uses the same text
/// when it cuts a response to fit a CRI message).
pub const TRUNCATED_MARKER: &[u8] = b"\n[berth: output truncated]\n";

/// One output pipe read into memory, keeping at most `cap` bytes.
#[derive(Debug)]
pub struct Capture {
    data: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Capture {
    /// An empty capture that keeps up to `cap` bytes (`cap` must exceed the
    /// marker's length).
    pub fn new(cap: usize) -> Self {
        Capture {
            data: Vec::new(),
            cap,
            truncated: false,
        }
    }

    /// Reads `from` to EOF. Bytes past the cap are read and dropped, so the
    /// command never blocks on a full pipe and its exit code stays its own.
    async fn read_from(&mut self, from: &FdStream) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let keep = n.min(self.cap - self.data.len());
            self.data.extend_from_slice(&buf[..keep]);
            self.truncated |= keep < n;
        }
    }

    /// The bytes kept; a cut stream ends with [`TRUNCATED_MARKER`] and is
    /// still no longer than the cap.
    pub fn into_bytes(mut self) -> Vec<u8> {
        if self.truncated {
            self.data.truncate(self.cap - TRUNCATED_MARKER.len());
            self.data.extend_from_slice(TRUNCATED_MARKER);
        }
        self.data
    }
}

/// Runs `exited` (the wait for the command, with its timeout and kill)
/// while reading `stdout` and `stderr`; once it resolves, the pipes get
/// `grace` to reach EOF, then reading stops and both pipes are closed.
/// Returns what `exited` gave and the two outputs.
pub async fn collect<T>(
    exited: impl Future<Output = T>,
    stdout: FdStream,
    stderr: FdStream,
    grace: Duration,
    cap: usize,
) -> (T, Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Capture::new(cap), Capture::new(cap));
    let result = {
        let reads = async {
            tokio::join!(out.read_from(&stdout), err.read_from(&stderr));
        };
        tokio::pin!(reads);
        tokio::pin!(exited);
        let mut read_all = false;
        let result = loop {
            tokio::select! {
                r = &mut exited => break r,
                _ = &mut reads, if !read_all => read_all = true,
            }
        };
        if !read_all {
            // Children it left behind may hold the pipes open: don't wait
            // for them.
            let _ = tokio::time::timeout(grace, &mut reads).await;
        }
        result
    };
    drop((stdout, stderr));
    (result, out.into_bytes(), err.into_bytes())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::OwnedFd;

    use super::*;

    fn pipe() -> (FdStream, std::fs::File) {
        let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (FdStream::new(r).unwrap(), std::fs::File::from(w))
    }

    /// 20 MiB written: the capture keeps the cap, ends with the marker, and
    /// the writer was never blocked (it wrote everything).
    #[tokio::test]
    async fn output_past_the_cap_is_cut_with_a_marker() {
        let (out_r, mut out_w) = pipe();
        let (err_r, err_w) = pipe();
        drop(err_w);
        let writer = berth_sys::thread::spawn(move || {
            let chunk: Vec<u8> = (0..1024 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
            for _ in 0..20 {
                out_w.write_all(&chunk).unwrap();
            }
        });
        let exited = async {
            tokio::task::spawn_blocking(move || writer.join().is_ok())
                .await
                .unwrap()
        };
        let (ok, out, err) = collect(exited, out_r, err_r, Duration::from_secs(5), OUTPUT_CAP_BYTES).await;
        assert!(ok, "the writer wrote all 20 MiB");
        assert_eq!(out.len(), OUTPUT_CAP_BYTES);
        assert!(out.ends_with(TRUNCATED_MARKER));
        assert!(out[..26] == *b"abcdefghijklmnopqrstuvwxyz");
        assert!(err.is_empty());
    }

    /// Output under the cap is returned as is.
    #[tokio::test]
    async fn small_output_is_whole() {
        let (out_r, mut out_w) = pipe();
        let (err_r, mut err_w) = pipe();
        out_w.write_all(b"hi\n").unwrap();
        err_w.write_all(b"oops\n").unwrap();
        drop((out_w, err_w));
        let ((), out, err) = collect(async {}, out_r, err_r, Duration::from_secs(5), 1024).await;
        assert_eq!((out.as_slice(), err.as_slice()), (&b"hi\n"[..], &b"oops\n"[..]));
    }

    /// A pipe held open by someone else (a child the command left behind):
    /// the call returns after the grace with what was written, and the
    /// read end is closed, so the holder gets EPIPE. (Another test of this
    /// binary forking at that moment holds a copy of the read end until
    /// its child execs or exits: the late write is retried for a while.)
    #[tokio::test]
    async fn a_pipe_held_open_does_not_hold_the_call() {
        let (out_r, mut out_w) = pipe();
        let (err_r, _err_w) = pipe();
        out_w.write_all(b"hi\n").unwrap();
        let ((), out, err) = collect(async {}, out_r, err_r, Duration::from_millis(100), 1024).await;
        assert_eq!(out, b"hi\n");
        assert!(err.is_empty());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let e = loop {
            match out_w.write_all(b"late") {
                Err(e) => break e,
                Ok(()) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(()) => panic!("the read end is still open 10 s after the call returned"),
            }
        };
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "the reader is gone");
    }
}
