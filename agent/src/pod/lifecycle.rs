//! A container's lifecycle as an explicit state machine, `Memo`: `Memo::step(event,
//! restart_policy)` moves it on an `Event` (started, exited, blocked), and `Memo::due(now)`
//! says what the worker must do next (`Due::Start(attempt)`, wait until a time, or nothing).
//! Pure: the worker executes what is due and feeds the results back as events. Persisted with
//! the pod, so restart counts and back-off survive agent restarts.

use serde::{Deserialize, Serialize};

use super::backoff::{self, Backoff};
use super::status::{ContainerView, Current, Terminated};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Life {
    /// Not running yet: waiting for its first start, its image or its config. `retry_at_ns`
    /// `None` means "start as soon as possible".
    Waiting {
        reason: String,
        message: String,
        retry_at_ns: Option<i64>,
    },
    Running {
        attempt: u32,
        started_at: i64,
        container_id: String,
    },
    /// Exited; restarted at `at_ns`, `secs` after the exit (kubelet's CrashLoopBackOff).
    BackOff { attempt: u32, at_ns: i64, secs: u64 },
    /// Exited and not restarted (restart policy).
    Done(Terminated),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memo {
    pub life: Life,
    /// Attempt number of the next start (= restartCount once it has run).
    pub next_attempt: u32,
    pub restart_count: u32,
    pub backoff: Backoff,
    pub last_terminated: Option<Terminated>,
    pub image_id: String,
}

impl Default for Memo {
    fn default() -> Self {
        Memo {
            life: Life::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
                retry_at_ns: None,
            },
            next_attempt: 0,
            restart_count: 0,
            backoff: Backoff::default(),
            last_terminated: None,
            image_id: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The runtime reports attempt `attempt` running.
    Started {
        attempt: u32,
        started_at: i64,
        container_id: String,
    },
    /// Attempt `attempt` ended (or failed to start).
    Exited { attempt: u32, term: Terminated },
    /// It cannot start now (no image, bad config); try again at `retry_at_ns`.
    Blocked {
        reason: String,
        message: String,
        retry_at_ns: i64,
    },
}

/// What the worker must do for this container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Start attempt N now.
    Start(u32),
    /// Nothing until this time (unix ns).
    At(i64),
    Nothing,
}

impl Memo {
    pub fn step(&mut self, ev: Event, restart_policy: &str) {
        match ev {
            Event::Started {
                attempt,
                started_at,
                container_id,
            } => {
                self.life = Life::Running {
                    attempt,
                    started_at,
                    container_id,
                };
                self.restart_count = attempt;
                self.next_attempt = attempt + 1;
            }
            Event::Exited { attempt, term } => {
                // Only the attempt we believe is running (or was just started) can exit.
                match &self.life {
                    Life::Running { attempt: a, .. } if *a == attempt => {}
                    // A start that failed (StartError) exits the attempt that was about to run:
                    // the first one, or the one a back-off was waiting to start (ignored, the
                    // back-off would start it again at once, in a loop).
                    Life::Waiting { .. } if attempt == self.next_attempt => {}
                    Life::BackOff { attempt: a, .. } if *a == attempt => {}
                    _ => return,
                }
                self.restart_count = attempt;
                self.next_attempt = attempt + 1;
                if backoff::should_restart(restart_policy, term.exit_code) {
                    let at = self
                        .backoff
                        .restart_at(term.finished_at)
                        .unwrap_or(term.finished_at);
                    let secs = ((at - term.finished_at) / 1_000_000_000) as u64;
                    self.backoff = self.backoff.next(term.finished_at);
                    self.last_terminated = Some(term);
                    self.life = Life::BackOff {
                        attempt: attempt + 1,
                        at_ns: at,
                        secs,
                    };
                } else {
                    self.life = Life::Done(term);
                }
            }
            Event::Blocked {
                reason,
                message,
                retry_at_ns,
            } => {
                self.life = Life::Waiting {
                    reason,
                    message,
                    retry_at_ns: Some(retry_at_ns),
                };
            }
        }
    }

    pub fn due(&self, now_ns: i64) -> Due {
        match &self.life {
            Life::Waiting {
                retry_at_ns: None, ..
            } => Due::Start(self.next_attempt),
            Life::Waiting {
                retry_at_ns: Some(t),
                ..
            } if *t <= now_ns => Due::Start(self.next_attempt),
            Life::Waiting {
                retry_at_ns: Some(t),
                ..
            } => Due::At(*t),
            Life::BackOff { attempt, at_ns, .. } if *at_ns <= now_ns => Due::Start(*attempt),
            Life::BackOff { at_ns, .. } => Due::At(*at_ns),
            Life::Running { .. } | Life::Done(_) => Due::Nothing,
        }
    }

    pub fn view(&self, name: &str, image: &str, pod_desc: &str, now_ns: i64) -> ContainerView {
        let current = match &self.life {
            Life::Waiting {
                reason, message, ..
            } => Current::Waiting {
                reason: reason.clone(),
                message: message.clone(),
            },
            Life::Running {
                started_at,
                container_id,
                ..
            } => Current::Running {
                started_at: *started_at,
                container_id: container_id.clone(),
            },
            Life::BackOff { at_ns, secs, .. } if *at_ns > now_ns => Current::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "back-off {secs}s restarting failed container={name} pod={pod_desc}"
                ),
            },
            Life::BackOff { .. } => Current::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            Life::Done(t) => Current::Terminated(t.clone()),
        };
        ContainerView {
            name: name.into(),
            image: image.into(),
            image_id: self.image_id.clone(),
            restart_count: self.restart_count,
            current,
            last_terminated: self.last_terminated.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn term(code: i32, fin: i64) -> Terminated {
        Terminated {
            exit_code: code,
            signal: None,
            reason: "Error".into(),
            message: String::new(),
            started_at: fin - S,
            finished_at: fin,
            container_id: "x".into(),
        }
    }

    #[test]
    fn crash_loop_restarts_with_growing_backoff() {
        let mut m = Memo::default();
        assert_eq!(m.due(0), Due::Start(0));
        m.step(
            Event::Started {
                attempt: 0,
                started_at: 0,
                container_id: "a".into(),
            },
            "Always",
        );
        assert_eq!(m.due(0), Due::Nothing);
        m.step(
            Event::Exited {
                attempt: 0,
                term: term(1, 10 * S),
            },
            "Always",
        );
        // first restart is immediate
        assert_eq!(m.due(10 * S), Due::Start(1));
        m.step(
            Event::Started {
                attempt: 1,
                started_at: 10 * S,
                container_id: "b".into(),
            },
            "Always",
        );
        m.step(
            Event::Exited {
                attempt: 1,
                term: term(1, 11 * S),
            },
            "Always",
        );
        assert_eq!(m.due(11 * S), Due::At(21 * S));
        let v = m.view("c", "img", "p", 12 * S);
        assert!(
            matches!(v.current, Current::Waiting { ref reason, ref message } if reason == "CrashLoopBackOff" && message.starts_with("back-off 10s ")),
            "{v:?}"
        );
        assert_eq!(v.restart_count, 1);
        assert_eq!(v.last_terminated.unwrap().exit_code, 1);
        assert_eq!(m.due(21 * S), Due::Start(2));
    }

    #[test]
    fn policy_decides_done_or_restart() {
        let cases = [
            ("Never", 1, false),
            ("Never", 0, false),
            ("OnFailure", 0, false),
            ("OnFailure", 2, true),
            ("Always", 0, true),
        ];
        for (policy, code, restarts) in cases {
            let mut m = Memo::default();
            m.step(
                Event::Started {
                    attempt: 0,
                    started_at: 0,
                    container_id: "a".into(),
                },
                policy,
            );
            m.step(
                Event::Exited {
                    attempt: 0,
                    term: term(code, S),
                },
                policy,
            );
            assert_eq!(
                matches!(m.life, Life::BackOff { .. }),
                restarts,
                "{policy} {code}"
            );
            assert_eq!(
                matches!(m.life, Life::Done(_)),
                !restarts,
                "{policy} {code}"
            );
        }
    }

    #[test]
    fn stale_exit_of_an_old_attempt_is_ignored() {
        let mut m = Memo::default();
        m.step(
            Event::Started {
                attempt: 3,
                started_at: 0,
                container_id: "a".into(),
            },
            "Always",
        );
        m.step(
            Event::Exited {
                attempt: 2,
                term: term(1, S),
            },
            "Always",
        );
        assert!(matches!(m.life, Life::Running { attempt: 3, .. }));
    }

    #[test]
    fn start_error_counts_as_an_exit() {
        let mut m = Memo::default();
        m.step(
            Event::Exited {
                attempt: 0,
                term: term(128, S),
            },
            "Always",
        );
        assert!(matches!(m.life, Life::BackOff { attempt: 1, .. }));
        assert_eq!(m.restart_count, 0);
        // The restart fails to start too: counted, and the back-off grows (10 s), instead of
        // the same attempt being started again at once.
        assert_eq!(m.due(S), Due::Start(1));
        m.step(
            Event::Exited {
                attempt: 1,
                term: term(128, 2 * S),
            },
            "Always",
        );
        assert!(
            matches!(m.life, Life::BackOff { attempt: 2, .. }),
            "{:?}",
            m.life
        );
        assert_eq!(m.restart_count, 1);
        assert_eq!(m.due(2 * S), Due::At(12 * S));
    }

    #[test]
    fn blocked_waits_and_retries() {
        let mut m = Memo::default();
        m.step(
            Event::Blocked {
                reason: "ErrImageNeverPull".into(),
                message: "m".into(),
                retry_at_ns: 5 * S,
            },
            "Always",
        );
        assert_eq!(m.due(S), Due::At(5 * S));
        assert_eq!(m.due(5 * S), Due::Start(0));
    }
}
