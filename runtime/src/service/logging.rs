//! berthd's log: a `tracing` filter that SIGHUP can replace, over a text
//! or JSON formatter on stderr (journald-shaped when stderr is the
//! journal, see [`super::journal`]).

use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use super::journal::Prefixed;

type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;

/// Changes the running log filter.
#[derive(Debug, Clone)]
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl LogHandle {
    /// Replaces the filter with `level`; a filter that does not parse is
    /// refused and the old one stays.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(level).map_err(|e| format!("log_level {level:?}: {e}"))?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// How lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// JSON objects instead of text.
    pub json: bool,
    /// `<N>` priority prefix, no timestamp (stderr is journald's stream).
    pub journald: bool,
}

/// The subscriber berthd logs through, writing to `writer`.
fn build<W>(level: &str, style: Style, writer: W) -> (impl tracing::Subscriber + Send + Sync, LogHandle)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let base = fmt::layer().with_writer(writer).with_ansi(false);
    let format: Box<dyn Layer<Filtered> + Send + Sync> = match (style.json, style.journald) {
        (false, false) => base.boxed(),
        (false, true) => base
            .event_format(Prefixed(fmt::format().with_ansi(false).without_time()))
            .boxed(),
        (true, false) => base.json().boxed(),
        (true, true) => base
            .fmt_fields(JsonFields::new())
            .event_format(Prefixed(fmt::format().json().without_time()))
            .boxed(),
    };
    (Registry::default().with(filter).with(format), LogHandle(handle))
}

/// Installs the global subscriber on stderr.
pub fn init(level: &str, style: Style) -> LogHandle {
    let (subscriber, handle) = build(level, style, std::io::stderr);
    subscriber.init();
    handle
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buf {
        type Writer = Buf;
        fn make_writer(&'w self) -> Buf {
            self.clone()
        }
    }

    fn logged(style: Style, f: impl FnOnce(&LogHandle)) -> Vec<String> {
        let buf = Buf::default();
        let (sub, handle) = build("info", style, buf.clone());
        tracing::subscriber::with_default(sub, || f(&handle));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(String::from).collect()
    }

    #[test]
    fn journald_lines_carry_priorities_and_no_timestamp() {
        let lines = logged(
            Style {
                json: false,
                journald: true,
            },
            |_| {
                tracing::error!("e");
                tracing::warn!("w");
                tracing::info!("i");
            },
        );
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("<3>ERROR "), "{lines:?}");
        assert!(lines[1].starts_with("<4> WARN "), "{lines:?}");
        assert!(lines[2].starts_with("<6> INFO "), "{lines:?}");
        let json = logged(
            Style {
                json: true,
                journald: true,
            },
            |_| tracing::warn!("w"),
        );
        let obj: serde_json::Value = serde_json::from_str(json[0].strip_prefix("<4>").unwrap()).unwrap();
        assert_eq!(obj["level"], "WARN");
        assert!(obj.get("timestamp").is_none(), "{obj}");
    }

    #[test]
    fn plain_lines_keep_their_timestamp() {
        let lines = logged(
            Style {
                json: false,
                journald: false,
            },
            |_| tracing::info!("i"),
        );
        assert!(lines[0].starts_with(|c: char| c.is_ascii_digit()), "{lines:?}");
    }

    #[test]
    fn the_level_changes_while_running_and_a_bad_one_is_refused() {
        let lines = logged(
            Style {
                json: false,
                journald: false,
            },
            |h| {
                tracing::debug!("hidden");
                h.set_level("debug").unwrap();
                tracing::debug!("shown");
                assert!(h.set_level("berth=[").is_err());
                tracing::debug!("still shown");
            },
        );
        let text = lines.join("\n");
        assert!(!text.contains("hidden"), "{text}");
        assert!(text.contains("shown"), "{text}");
        assert!(text.contains("still shown"), "{text}");
    }
}
