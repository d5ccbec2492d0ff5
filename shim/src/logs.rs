//! Copies a container's stdout/stderr into its CRI log file.
//!
//! Format (what kubelet and `crictl logs` parse):
//! `<RFC3339Nano UTC> <stdout|stderr> <F|P> <content>\n`, where `F` ends a line
//! and `P` marks a piece of a line longer than [`MAX_LINE_BYTES`]. Each record
//! is one `write(2)` to an `O_APPEND` file, so the two streams interleave at
//! line granularity in the order the shim reads them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::stream::Stream;

/// Lines longer than this are split into `P` records (kubelet's default is 16 KiB).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// A CRI log file shared by a container's streams.
#[derive(Clone)]
pub struct LogFile {
    path: Arc<String>,
    file: Arc<Mutex<Option<File>>>,
    /// Records that could not be written (disk full, I/O error) and were
    /// dropped so the container never blocks on its stdout.
    dropped: Arc<AtomicU64>,
}

impl LogFile {
    /// Opens (creating, appending) the log file; an empty path discards output.
    pub fn open(path: &str) -> std::io::Result<Self> {
        let file = if path.is_empty() {
            None
        } else {
            if let Some(dir) = Path::new(path).parent() {
                // Dirs we create: root and the log readers' group, as the
                // file; never others, whatever the umask (a world-writable
                // dir would let a node user plant a symlink where we append
                // as root). Existing dirs (kubelet's) keep their mode.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)?;
            }
            // Container output is the pod's business: root and the log
            // readers' group (kubelet runs as root), never everyone.
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(path)?;
            if f.metadata()?.is_file() {
                f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
            }
            Some(f)
        };
        Ok(LogFile {
            path: Arc::new(path.to_string()),
            file: Arc::new(Mutex::new(file)),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many records were dropped because they could not be written.
    pub fn dropped_records(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Opens the path again (kubelet renamed the old file away) and switches
    /// to it between two records, so no line is lost or split.
    pub fn reopen(&self) -> std::io::Result<()> {
        if self.path.is_empty() {
            return Ok(());
        }
        let fresh = Self::open(&self.path)?;
        let new = fresh.file.lock().expect("log lock").take();
        *self.file.lock().expect("log lock") = new;
        Ok(())
    }

    fn write_record(&self, stream: Stream, tag: char, content: &[u8]) {
        let mut rec = Vec::with_capacity(content.len() + 48);
        rec.extend_from_slice(format_rfc3339_nano(crate::reaper::now_ns()).as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.as_str().as_bytes());
        rec.push(b' ');
        rec.push(tag as u8);
        rec.push(b' ');
        rec.extend_from_slice(content);
        rec.push(b'\n');
        if let Some(f) = self.file.lock().expect("log lock").as_mut() {
            // A full disk must not stall the container: the record is dropped
            // and counted, and a piece of it that did get written is cut off
            // again, so readers only ever see whole records.
            if let Err((written, e)) = write_whole(f, &rec) {
                if written > 0 {
                    let _ = f
                        .metadata()
                        .and_then(|m| f.set_len(m.len().saturating_sub(written as u64)));
                }
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(log = %self.path, error = %e, "log record dropped; later drops are only counted");
                }
            }
        }
    }
}

/// `write_all` that says how much got written before an error.
fn write_whole(f: &mut impl Write, mut buf: &[u8]) -> Result<(), (usize, std::io::Error)> {
    let mut written = 0;
    while !buf.is_empty() {
        match f.write(buf) {
            Ok(0) => return Err((written, std::io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                written += n;
                buf = &buf[n..];
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

/// Splits a byte stream into CRI records; keeps the unfinished tail.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit(tag, content)` for each finished record.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut dyn FnMut(char, &[u8])) {
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&data[..pos]);
            self.flush_full(emit);
            data = &data[pos + 1..];
        }
        self.pending.extend_from_slice(data);
        while self.pending.len() >= MAX_LINE_BYTES {
            let rest = self.pending.split_off(MAX_LINE_BYTES);
            emit('P', &self.pending);
            self.pending = rest;
        }
    }

    fn flush_full(&mut self, emit: &mut dyn FnMut(char, &[u8])) {
        // A line exactly MAX_LINE_BYTES long still ends with an F record.
        while self.pending.len() > MAX_LINE_BYTES {
            let rest = self.pending.split_off(MAX_LINE_BYTES);
            emit('P', &self.pending);
            self.pending = rest;
        }
        emit('F', &self.pending);
        self.pending.clear();
    }

    /// End of stream: an unterminated last line is written as a full line.
    pub fn finish(&mut self, emit: &mut dyn FnMut(char, &[u8])) {
        if !self.pending.is_empty() {
            self.flush_full(emit);
        }
    }
}

/// Copies `pipe` into `log` until EOF on a dedicated thread; the returned
/// receiver resolves when the stream is fully drained. Every chunk also goes
/// to the container's attachers, if any (never waiting for them).
pub fn spawn_copier(
    pipe: OwnedFd,
    stream: Stream,
    log: LogFile,
    attachers: crate::stdio::Fanout,
) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = crate::threads::thread().spawn(move || {
        let mut reader = File::from(pipe);
        let mut splitter = LineSplitter::default();
        let mut buf = vec![0u8; 32 * 1024];
        let mut emit = |tag: char, content: &[u8]| log.write_record(stream, tag, content);
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    attachers.send(stream, &buf[..n]);
                    splitter.feed(&buf[..n], &mut emit)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        splitter.finish(&mut emit);
        let _ = tx.send(());
    });
    // As std::thread::spawn would: a shim that cannot make a thread is done.
    spawned.expect("spawn a log copier thread");
    rx
}

/// Formats unix nanoseconds as RFC 3339 with nanoseconds in UTC
/// (`2016-10-06T00:17:09.669794202Z`).
pub fn format_rfc3339_nano(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under umask 000 the log directories Berth creates are still closed
    /// to others (a world-writable one would let a node user plant a
    /// symlink where the shim, as root, appends container output) and the
    /// log is 0640.
    #[test]
    fn log_dirs_and_files_get_their_modes_under_any_umask() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("pod/ctr/0.log");
        // SAFETY: umask(2) only swaps the process mask; restored at once.
        let old = unsafe { libc::umask(0) };
        let opened = LogFile::open(path.to_str().unwrap());
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        opened.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&d.path().join("pod")), 0o750);
        assert_eq!(mode(&d.path().join("pod/ctr")), 0o750);
        assert_eq!(mode(&path), 0o640);
    }

    #[test]
    fn a_full_disk_drops_and_counts_records() {
        // /dev/full answers every write with ENOSPC.
        let log = LogFile::open("/dev/full").unwrap();
        log.write_record(Stream::Stdout, 'F', b"lost");
        log.write_record(Stream::Stderr, 'F', b"lost too");
        assert_eq!(log.dropped_records(), 2);
        let dir = tempfile::tempdir().unwrap();
        let ok = LogFile::open(dir.path().join("c.log").to_str().unwrap()).unwrap();
        ok.write_record(Stream::Stdout, 'F', b"kept");
        assert_eq!(ok.dropped_records(), 0);
    }

    #[test]
    fn partial_writes_report_what_got_written() {
        /// Takes 5 bytes, then fails as a full disk does.
        struct FillsUp(usize);
        impl Write for FillsUp {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let room = 5usize.saturating_sub(self.0);
                if room == 0 {
                    return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
                }
                let n = room.min(buf.len()).min(3);
                self.0 += n;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (written, e) = write_whole(&mut FillsUp(0), b"0123456789").unwrap_err();
        assert_eq!(written, 5);
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(write_whole(&mut Vec::new(), b"all of it").is_ok());
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_nano(0), "1970-01-01T00:00:00.000000000Z");
        // 2016-10-06T00:17:09.669794202Z, the CRI docs' example instant.
        assert_eq!(
            format_rfc3339_nano(1_475_713_029_669_794_202),
            "2016-10-06T00:17:09.669794202Z"
        );
        // Leap day.
        assert_eq!(
            format_rfc3339_nano(1_709_210_096_000_000_001),
            "2024-02-29T12:34:56.000000001Z"
        );
    }

    fn split(chunks: &[&[u8]]) -> Vec<(char, Vec<u8>)> {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        let mut emit = |t: char, c: &[u8]| out.push((t, c.to_vec()));
        for c in chunks {
            s.feed(c, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    #[test]
    fn splits_lines_across_chunks() {
        let out = split(&[b"hel", b"lo\nwor", b"ld\n\nlast"]);
        let want: Vec<(char, Vec<u8>)> = vec![
            ('F', b"hello".to_vec()),
            ('F', b"world".to_vec()),
            ('F', b"".to_vec()),
            ('F', b"last".to_vec()),
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn long_lines_become_partial_records() {
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let mut input = long.clone();
        input.push(b'\n');
        let out = split(&[&input]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].0, 'P');
        assert_eq!(out[1].0, 'P');
        assert_eq!(out[2], ('F', vec![b'x'; 10]));
        let joined: Vec<u8> = out.iter().flat_map(|(_, c)| c.clone()).collect();
        assert_eq!(joined, long);
    }

    #[test]
    fn exact_limit_line_is_one_full_record() {
        let mut input = vec![b'y'; MAX_LINE_BYTES];
        input.push(b'\n');
        let out = split(&[&input]);
        assert_eq!(out, vec![('F', vec![b'y'; MAX_LINE_BYTES])]);
    }
}
