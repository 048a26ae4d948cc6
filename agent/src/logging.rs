//! Log output: `tracing` events as lines on stderr, shaped for where stderr goes.
//!
//! On a terminal or in a file a line carries its own timestamp. Under systemd, when stderr is
//! the journal stream (`$JOURNAL_STREAM` names stderr's device and inode, as `systemd.exec(5)`
//! says to check, so a child that merely inherited the variable is not fooled), journald
//! stamps every line itself: tidelet then writes no timestamp, and starts each line with the
//! syslog priority prefix `<N>` that journald turns into the entry's PRIORITY, so that
//! `journalctl -u tidelet -p warning` shows the warnings and errors.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Set up the global subscriber: filter from `$TIDELET_LOG`, else `info` for the agent and
/// `warn` for the one-shot commands.
pub fn init(for_agent: bool) {
    let filter = EnvFilter::try_from_env("TIDELET_LOG")
        .unwrap_or_else(|_| EnvFilter::new(if for_agent { "info" } else { "warn" }));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if stderr_is_journal() {
        b.event_format(Journal::default()).init();
    } else {
        b.init();
    }
}

/// Whether stderr is the stream `$JOURNAL_STREAM` names.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // stat(2) through /proc follows to the open file itself (a socket for the journal).
    let Ok(st) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    journal_stream_matches(&v.to_string_lossy(), st.dev(), st.ino())
}

/// `$JOURNAL_STREAM` is `DEVICE:INODE` in decimal.
fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The syslog priority journald records for a tracing level (`sd-daemon(3)`'s `SD_*`).
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// `<N>` then the usual line without time (the level word stays: it reads well in
/// `journalctl` output and costs nothing).
struct Journal {
    inner: Format<Full, ()>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            inner: Format::default().without_time(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_value() {
        let cases = [
            ("8:1234", 8, 1234, true),
            ("8:1234", 8, 1235, false),
            ("9:1234", 8, 1234, false),
            ("", 8, 1234, false),
            ("8", 8, 1234, false),
            ("8:1234:5", 8, 1234, false),
            ("x:y", 8, 1234, false),
        ];
        for (v, d, i, want) in cases {
            assert_eq!(journal_stream_matches(v, d, i), want, "{v:?}");
        }
    }

    #[test]
    fn priorities_follow_syslog() {
        let cases = [
            (Level::ERROR, 3),
            (Level::WARN, 4),
            (Level::INFO, 6),
            (Level::DEBUG, 7),
            (Level::TRACE, 7),
        ];
        for (l, p) in cases {
            assert_eq!(priority(&l), p, "{l}");
        }
    }
}
