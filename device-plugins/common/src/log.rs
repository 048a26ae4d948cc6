//! A tiny stderr logger for the plugin binaries: one line per event, `LEVEL target: message
//! key=value ...`, filtered by `RUST_LOG` (a level, or `target=level` prefixes, comma
//! separated). It replaces tracing-subscriber to keep an idle plugin under 3 MiB: no spans
//! are kept, nothing is buffered beyond the line being written.

use std::fmt::Write as _;
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// `RUST_LOG` as parsed: a default level and `(target prefix, level)` overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default: Option<Level>,
    targets: Vec<(String, Option<Level>)>,
}

impl Filter {
    /// Parses `RUST_LOG`-style directives; unknown words are ignored, `off` turns a target
    /// off. An empty string means `info`.
    pub fn parse(spec: &str) -> Filter {
        let mut f = Filter {
            default: Some(Level::INFO),
            targets: Vec::new(),
        };
        for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match d.split_once('=') {
                Some((target, level)) => {
                    if let Some(level) = parse_level(level) {
                        f.targets.push((target.replace('-', "_"), level));
                    }
                }
                None => match parse_level(d) {
                    Some(level) => f.default = level,
                    // A bare target name means "everything from it".
                    None => f.targets.push((d.replace('-', "_"), Some(Level::TRACE))),
                },
            }
        }
        // Longest prefix wins.
        f.targets.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        f
    }

    /// Whether an event at `level` from `target` is logged.
    pub fn enabled(&self, target: &str, level: &Level) -> bool {
        let max = self
            .targets
            .iter()
            .find(|(t, _)| target.starts_with(t.as_str()))
            .map(|(_, l)| *l)
            .unwrap_or(self.default);
        max.is_some_and(|max| *level <= max)
    }
}

fn parse_level(s: &str) -> Option<Option<Level>> {
    match s.trim().to_ascii_lowercase().as_str() {
        "off" => Some(None),
        "error" => Some(Some(Level::ERROR)),
        "warn" => Some(Some(Level::WARN)),
        "info" => Some(Some(Level::INFO)),
        "debug" => Some(Some(Level::DEBUG)),
        "trace" => Some(Some(Level::TRACE)),
        _ => None,
    }
}

/// Installs the logger as the global default, filtered by `RUST_LOG`. Call once from `main`.
pub fn init() {
    let filter = Filter::parse(&std::env::var("RUST_LOG").unwrap_or_default());
    let _ = tracing::subscriber::set_global_default(StderrLogger { filter });
}

struct StderrLogger {
    filter: Filter,
}

impl Subscriber for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata.target(), metadata.level())
    }
    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        // Spans are not kept; every span shares one id.
        Id::from_u64(1)
    }
    fn record(&self, _span: &Id, _values: &Record<'_>) {}
    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let line = format_event(event);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
    fn enter(&self, _span: &Id) {}
    fn exit(&self, _span: &Id) {}
}

fn format_event(event: &Event<'_>) -> String {
    let meta = event.metadata();
    let mut v = LineVisitor {
        message: String::new(),
        fields: String::new(),
    };
    event.record(&mut v);
    let mut line = String::with_capacity(64 + v.message.len() + v.fields.len());
    let _ = write!(
        line,
        "{:>5} {}: {}{}",
        meta.level(),
        meta.target(),
        v.message,
        v.fields
    );
    line.push('\n');
    line
}

struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_filters_by_level_and_target_prefix() {
        // (RUST_LOG, target, level, logged)
        let cases: &[(&str, &str, Level, bool)] = &[
            ("", "tidelet_gpu_plugin", Level::INFO, true),
            ("", "tidelet_gpu_plugin", Level::DEBUG, false),
            ("debug", "h2::codec", Level::DEBUG, true),
            ("warn", "tidelet_gpu_plugin", Level::INFO, false),
            ("warn", "tidelet_gpu_plugin", Level::ERROR, true),
            (
                "info,tidelet_device_plugin=debug",
                "tidelet_device_plugin::runner",
                Level::DEBUG,
                true,
            ),
            (
                "info,tidelet_device_plugin=debug",
                "h2",
                Level::DEBUG,
                false,
            ),
            (
                "tidelet-device-plugin=trace",
                "tidelet_device_plugin",
                Level::TRACE,
                true,
            ),
            ("off", "tidelet_gpu_plugin", Level::ERROR, false),
            ("debug,h2=off", "h2::proto", Level::ERROR, false),
            ("debug,h2=off", "tidelet", Level::DEBUG, true),
            (
                "tidelet=info,tidelet_gpu=debug",
                "tidelet_gpu_plugin",
                Level::DEBUG,
                true,
            ),
            (
                "tidelet=info,tidelet_gpu=debug",
                "tidelet_generic",
                Level::DEBUG,
                false,
            ),
            ("bogus", "tidelet", Level::INFO, true),
            ("tidelet", "tidelet", Level::TRACE, true),
        ];
        for (spec, target, level, want) in cases {
            assert_eq!(
                Filter::parse(spec).enabled(target, level),
                *want,
                "RUST_LOG={spec:?} {target} {level}"
            );
        }
    }
}
