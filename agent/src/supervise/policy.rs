//! When a panicked task is started again, and when the agent gives up instead (pure).
//!
//! The shape is systemd's `StartLimitBurst=` within `StartLimitIntervalSec=`, with a doubling
//! delay as kubelet's crash-loop back-off has: a task that panics now and then is restarted
//! quickly; one that keeps panicking must not spin (each restart can redo real work, such as
//! adopting a pod) and after `burst` restarts within `window` the agent exits so that systemd
//! starts it afresh.

use std::collections::VecDeque;
use std::time::Duration;

/// The restart policy of one supervised task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The delay before the first restart; doubled for each earlier panic within `window`.
    pub initial: Duration,
    /// The longest delay. Kept well under the systemd watchdog's period (`WatchdogSec=30s` in
    /// the shipped unit), which is not fed while a task waits to be restarted.
    pub cap: Duration,
    /// Restarts allowed within `window`; the next panic there makes the agent give up.
    pub burst: usize,
    pub window: Duration,
}

/// 0.5 s, 1 s, 2 s, 4 s, 8 s, then give up: 6 panics of one task within 10 minutes.
pub const DEFAULT: Policy = Policy {
    initial: Duration::from_millis(500),
    cap: Duration::from_secs(8),
    burst: 5,
    window: Duration::from_secs(600),
};

/// What to do about a task that just panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay.
    Restart { after: Duration },
    /// Too many panics: the agent must exit non-zero (systemd restarts it; pods survive).
    GiveUp,
}

/// The decision for a panic at `now`, given the times of the task's `earlier` panics (any
/// order; those older than `policy.window` do not count). Times are on one monotonic clock.
pub fn decide(policy: &Policy, earlier: &[Duration], now: Duration) -> Decision {
    let recent = earlier
        .iter()
        .filter(|t| now.saturating_sub(**t) < policy.window)
        .count();
    if recent >= policy.burst {
        return Decision::GiveUp;
    }
    let factor = 1u32.checked_shl(recent as u32).unwrap_or(u32::MAX);
    Decision::Restart {
        after: policy.initial.saturating_mul(factor).min(policy.cap),
    }
}

/// A task's panics, as many as `decide` can need (`burst`): the memory of a task that panics
/// forever stays bounded.
#[derive(Debug, Default, Clone)]
pub struct History {
    times: VecDeque<Duration>,
    total: u64,
}

impl History {
    /// Decide about a panic at `now`, and remember it.
    pub fn panicked(&mut self, policy: &Policy, now: Duration) -> Decision {
        let d = decide(policy, self.times.make_contiguous(), now);
        self.times.push_back(now);
        self.total += 1;
        while self.times.len() > policy.burst.max(1) {
            self.times.pop_front();
        }
        d
    }

    /// Panics ever, for the log.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Panics remembered (at most `burst`).
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }
    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn restarts_back_off_and_give_up_after_the_burst() {
        use Decision::*;
        let restart = |after| Restart { after };
        let p = DEFAULT;
        let cases: Vec<(&str, Policy, Vec<Duration>, Duration, Decision)> = vec![
            ("first panic", p, vec![], s(100), restart(ms(500))),
            ("second, soon after", p, vec![s(100)], s(101), restart(s(1))),
            ("third", p, vec![s(100), s(101)], s(103), restart(s(2))),
            (
                "fifth: the last restart allowed",
                p,
                vec![s(1), s(2), s(3), s(4)],
                s(5),
                restart(s(8)),
            ),
            (
                "sixth within the window: give up",
                p,
                vec![s(1), s(2), s(3), s(4), s(5)],
                s(6),
                GiveUp,
            ),
            (
                "old panics are forgiven",
                p,
                vec![s(1), s(2), s(3), s(4), s(5)],
                s(700),
                restart(ms(500)),
            ),
            (
                "only the ones inside the window count",
                p,
                vec![s(1), s(2), s(650), s(660)],
                s(700),
                restart(s(2)),
            ),
            (
                "exactly one window ago is outside it",
                p,
                vec![s(100)],
                s(700),
                restart(ms(500)),
            ),
            (
                "the cap holds",
                Policy { burst: 100, ..p },
                vec![s(1); 40],
                s(2),
                restart(s(8)),
            ),
            (
                "burst 0: never restart",
                Policy { burst: 0, ..p },
                vec![],
                s(1),
                GiveUp,
            ),
        ];
        for (what, policy, earlier, now, want) in cases {
            assert_eq!(decide(&policy, &earlier, now), want, "{what}");
        }
    }

    #[test]
    fn history_is_bounded_and_decides_as_decide_does() {
        let p = DEFAULT;
        let mut h = History::default();
        let got: Vec<Decision> = (1..=7).map(|i| h.panicked(&p, s(i))).collect();
        assert_eq!(got[0], Decision::Restart { after: ms(500) });
        assert_eq!(got[4], Decision::Restart { after: s(8) });
        assert_eq!(&got[5..], &[Decision::GiveUp, Decision::GiveUp]);
        assert_eq!(h.len(), p.burst);
        assert_eq!(h.total(), 7);
        // Quiet for a window: the task starts from the first delay again.
        assert_eq!(
            h.panicked(&p, s(1000)),
            Decision::Restart { after: ms(500) }
        );
    }
}
