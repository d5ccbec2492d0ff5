//! Logging straight into journald's stream: systemd sets `$JOURNAL_STREAM`
//! to the `dev:ino` of the stream it connected to our stderr. When stderr
//! is that stream, each line starts with its syslog priority (`<3>` error
//! … `<7>` debug, sd-daemon(3)), which journald strips and stores as the
//! entry's priority; the timestamp is left out because journald stamps
//! every entry itself.

use std::os::fd::AsFd;

use tracing::Level;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether `fd` is the stream `$JOURNAL_STREAM` (`journal_stream`) names.
pub fn is_journal_stream(journal_stream: Option<&str>, fd: impl AsFd) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.trim().split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(fd.as_fd()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// The syslog priority journald reads from a `<N>` prefix.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// An event format that puts `<N>` before what `inner` writes.
#[derive(Debug)]
pub struct Prefixed<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn matches_only_the_stream_journal_stream_names() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let other = std::fs::File::create(dir.path().join("other")).unwrap();
        let m = f.metadata().unwrap();
        let value = format!("{}:{}", m.dev(), m.ino());
        assert!(is_journal_stream(Some(&value), &f));
        assert!(!is_journal_stream(Some(&value), &other));
        assert!(!is_journal_stream(None, &f));
        assert!(!is_journal_stream(Some("garbage"), &f));
        assert!(!is_journal_stream(Some(&format!("{}:x", m.dev())), &f));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}
