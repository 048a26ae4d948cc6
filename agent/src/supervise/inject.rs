//! A test-only hook that makes supervised tasks panic, so that end-to-end tests can show
//! what the supervision does with a real panic in the real binary.
//!
//! `TIDELET_TEST_PANIC` is a comma-separated list of task labels: `worker:<namespace>/<name>`,
//! `monitor`, `api`, `reporter`, `session` (the MQTT connection loop, at an incoming
//! message), `session-lease`, `device-registration`, `device-plugin`. Each task calls
//! [`fire`] at one chosen point; a listed label panics there once per process (the restarted
//! task then runs normally), or every time with a trailing `*` (`api*`: a task that keeps
//! panicking, to reach the restart limit). Unset, as in production, `fire` costs one load.

use std::sync::{Mutex, OnceLock};

/// The environment variable read (once, at the first `fire`).
pub const VAR: &str = "TIDELET_TEST_PANIC";

/// One armed label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Armed {
    pub label: String,
    /// Fire every time, not only once.
    pub repeat: bool,
}

/// The labels of `TIDELET_TEST_PANIC` (pure).
pub fn parse(value: &str) -> Vec<Armed> {
    value
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.strip_suffix('*') {
            Some(l) => Armed {
                label: l.to_string(),
                repeat: true,
            },
            None => Armed {
                label: l.to_string(),
                repeat: false,
            },
        })
        .collect()
}

/// Whether `label` names the task `kind` with `id` (`worker` + `default/x` is
/// `worker:default/x`; an empty id is the kind alone).
fn names(label: &str, kind: &str, id: &str) -> bool {
    if id.is_empty() {
        return label == kind;
    }
    label
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix(':'))
        .is_some_and(|r| r == id)
}

fn armed() -> Option<&'static Mutex<Vec<Armed>>> {
    static ARMED: OnceLock<Option<Mutex<Vec<Armed>>>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = parse(&std::env::var(VAR).ok()?);
            (!v.is_empty()).then(|| Mutex::new(v))
        })
        .as_ref()
}

/// Panic here if `TIDELET_TEST_PANIC` names this task (see the module comment).
pub fn fire(kind: &str, id: &str) {
    let Some(m) = armed() else { return };
    let mut list = m.lock().unwrap_or_else(|e| e.into_inner());
    let Some(i) = list.iter().position(|a| names(&a.label, kind, id)) else {
        return;
    };
    let label = list[i].label.clone();
    if !list[i].repeat {
        list.remove(i);
    }
    drop(list);
    panic!("injected panic ({VAR}={label})");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_name_their_task() {
        let a = |l: &str, repeat| Armed {
            label: l.into(),
            repeat,
        };
        assert_eq!(
            parse(" worker:default/web-n1, monitor,,api*,"),
            vec![
                a("worker:default/web-n1", false),
                a("monitor", false),
                a("api", true)
            ]
        );
        assert_eq!(parse(""), vec![]);
        for (label, kind, id, want) in [
            ("monitor", "monitor", "", true),
            ("monitor", "api", "", false),
            ("worker:default/web", "worker", "default/web", true),
            ("worker:default/web", "worker", "default/webx", false),
            ("worker", "worker", "default/web", false),
            ("workerx:default/web", "worker", "default/web", false),
            ("device-plugin", "device-plugin", "", true),
        ] {
            assert_eq!(names(label, kind, id), want, "{label} {kind} {id}");
        }
    }
}
