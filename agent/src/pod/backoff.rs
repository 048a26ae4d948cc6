//! Restart back-off, as kubelet's `flowcontrol.Backoff` keyed by container: the first restart
//! is immediate, then 10 s doubling to 5 min; an exit more than 10 min (twice the maximum) after
//! the previous one resets it. kubelet measures from the container's `finishedAt`, so do we.

use serde::{Deserialize, Serialize};

pub const INITIAL_SECS: u64 = 10;
pub const MAX_SECS: u64 = 300;

/// Per-container back-off state, persisted with the pod so it survives agent restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Current back-off in seconds (0 before the first exit was counted).
    pub secs: u64,
    /// `finishedAt` (unix ns) of the exit that last advanced the back-off.
    pub last_exit_ns: i64,
}

impl Backoff {
    fn expired(&self, exit_ns: i64) -> bool {
        self.secs == 0
            || exit_ns.saturating_sub(self.last_exit_ns) > 2 * MAX_SECS as i64 * 1_000_000_000
    }

    /// The earliest time (unix ns) a container that exited at `exit_ns` may start again, given
    /// the back-off before this exit. `None` means at once.
    pub fn restart_at(&self, exit_ns: i64) -> Option<i64> {
        if self.expired(exit_ns) {
            None
        } else {
            Some(exit_ns + self.secs as i64 * 1_000_000_000)
        }
    }

    /// The state after a restart for the exit at `exit_ns` has been granted (kubelet's `Next`).
    pub fn next(&self, exit_ns: i64) -> Backoff {
        let secs = if self.expired(exit_ns) {
            INITIAL_SECS
        } else {
            (self.secs * 2).min(MAX_SECS)
        };
        Backoff {
            secs,
            last_exit_ns: exit_ns,
        }
    }
}

/// Whether a container that exited with `exit_code` is restarted under `policy`
/// (`Always`, `OnFailure`, `Never`).
pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn delays_follow_kubelet_sequence() {
        // Each exit happens right after the restart it was granted: 0, 10, 20, 40, ... 300, 300.
        let mut b = Backoff::default();
        let mut t = 1_000 * S;
        let mut delays = vec![];
        for _ in 0..9 {
            let at = b.restart_at(t);
            delays.push(at.map(|a| (a - t) / S).unwrap_or(0));
            b = b.next(t);
            t = at.unwrap_or(t) + S; // ran for one second
        }
        assert_eq!(delays, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn long_run_resets_backoff() {
        let b = Backoff {
            secs: 160,
            last_exit_ns: 0,
        };
        assert_eq!(b.restart_at(11 * 60 * S), None);
        assert_eq!(b.next(11 * 60 * S).secs, INITIAL_SECS);
        // within ten minutes it keeps growing
        assert_eq!(b.restart_at(9 * 60 * S), Some(9 * 60 * S + 160 * S));
        assert_eq!(b.next(9 * 60 * S).secs, 300);
    }

    #[test]
    fn restart_policy_table() {
        let cases = [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 137, true),
            ("Never", 0, false),
            ("Never", 1, false),
        ];
        for (p, code, want) in cases {
            assert_eq!(should_restart(p, code), want, "{p} {code}");
        }
    }
}
