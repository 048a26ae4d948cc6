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
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Set up the global subscriber: filter from `$TIDELET_LOG`, else `info` for the agent and
/// `warn` for the one-shot commands.
///
/// `$TIDELET_LOG` is `RUST_LOG`'s directive list without span filters: a default level and
/// per-module levels (`info,tidelet::eviction=debug`). It is read by `Targets`, not
/// `EnvFilter`: `EnvFilter`'s span and field matching brings the `regex` crates, over 200 KiB
/// of the board's binary, for filters nobody here writes.
pub fn init(for_agent: bool) {
    let default = if for_agent { "info" } else { "warn" };
    let (filter, bad) = filter(std::env::var("TIDELET_LOG").ok().as_deref(), default);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let registry = tracing_subscriber::registry().with(filter);
    if stderr_is_journal() {
        registry.with(layer.event_format(Journal::default())).init();
    } else {
        registry.with(layer).init();
    }
    if let Some(reason) = bad {
        tracing::warn!(%reason, "TIDELET_LOG not understood; logging at {default}");
    }
}

/// The filter `value` (`$TIDELET_LOG`) asks for, or `default` with the reason it is not
/// understood.
fn filter(value: Option<&str>, default: &str) -> (Targets, Option<String>) {
    let fallback = || default.parse::<Targets>().expect("a level name parses");
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => (fallback(), None),
        Some(v) => match v.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (fallback(), Some(format!("{v:?}: {e}"))),
        },
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
    fn tidelet_log_directives() {
        use Level as L;
        // (TIDELET_LOG, default, target, level, enabled, understood)
        let cases = [
            (None, "info", "tidelet::agent", L::INFO, true, true),
            (None, "info", "tidelet::agent", L::DEBUG, false, true),
            (None, "warn", "tidelet::cli", L::INFO, false, true),
            (Some(""), "warn", "tidelet::cli", L::WARN, true, true),
            (Some("debug"), "info", "h2", L::DEBUG, true, true),
            (Some("DEBUG"), "info", "h2", L::DEBUG, true, true),
            (
                Some("info,tidelet::eviction=debug"),
                "info",
                "tidelet::eviction::monitor",
                L::DEBUG,
                true,
                true,
            ),
            (
                Some("info,tidelet::eviction=debug"),
                "info",
                "tidelet::agent",
                L::DEBUG,
                false,
                true,
            ),
            (
                Some("info,tidelet::eviction=debug"),
                "info",
                "tidelet::agent",
                L::INFO,
                true,
                true,
            ),
            (
                Some("warn,h2=off"),
                "info",
                "h2::codec",
                L::ERROR,
                false,
                true,
            ),
            (Some("off"), "info", "tidelet", L::ERROR, false, true),
            (
                Some("tidelet=verbose"),
                "info",
                "tidelet",
                L::INFO,
                true,
                false,
            ),
            (
                Some("tidelet=verbose"),
                "info",
                "tidelet",
                L::DEBUG,
                false,
                false,
            ),
        ];
        for (value, default, target, level, enabled, understood) in cases {
            let (t, bad) = filter(value, default);
            assert_eq!(
                t.would_enable(target, &level),
                enabled,
                "{value:?} {target} {level}"
            );
            assert_eq!(bad.is_none(), understood, "{value:?}: {bad:?}");
        }
    }

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
