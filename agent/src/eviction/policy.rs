//! The eviction manager's decisions (pure): from observations of the signals to the node
//! conditions and the threshold to act on, as kubelet's `synchronize` does it:
//!
//! 1. a threshold is *met* while the signal's available amount is below its value; once met it
//!    stays met until the signal recovers by its minimum reclaim as well;
//! 2. a node condition is raised as soon as one of its thresholds is met (soft ones too, before
//!    their grace period), and stays raised for `evictionPressureTransitionPeriod` after the last
//!    time one was met, so that it does not flap;
//! 3. pods are evicted for a threshold that has been met for its grace period (at once for
//!    hard thresholds), memory before pids before disk.
//!
//! Time comes in as a parameter: monotonic for periods, wall clock for the transition times
//! the node status shows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::config::{Condition, EvictionConfig, Signal, Threshold};

/// One signal's latest reading: how much is available of how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Observation {
    pub available: i64,
    pub capacity: i64,
}

pub type Observations = BTreeMap<Signal, Observation>;

/// Now, twice: `mono` for periods (never jumps), `wall_ns` for the times shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Duration,
    pub wall_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConditionState {
    pub active: bool,
    /// Wall-clock ns of the last change of `active` (of the agent's start at first).
    pub since_ns: i64,
    /// What the condition says (`kubelet has memory pressure: allocatableMemory.available ...`).
    pub message: String,
}

/// What to do about a threshold past its grace period.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Act {
    pub threshold: Threshold,
    pub observation: Observation,
    /// How much must be freed to get back above the threshold plus its minimum reclaim.
    pub to_reclaim: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub conditions: BTreeMap<Condition, ConditionState>,
    /// Whether any condition changed in this step (publish the node status).
    pub changed: bool,
    pub act: Option<Act>,
    /// Thresholds met now (for logs and for deciding how often to look).
    pub met: Vec<Threshold>,
}

pub struct Policy {
    cfg: EvictionConfig,
    /// Index into `cfg.thresholds` -> when it was first seen met in the current episode.
    first_met: BTreeMap<usize, Duration>,
    /// Thresholds met at the last step (minimum reclaim applies to them).
    met_before: BTreeSet<usize>,
    last_seen: BTreeMap<Condition, Duration>,
    conditions: BTreeMap<Condition, ConditionState>,
}

impl Policy {
    pub fn new(cfg: EvictionConfig, start_wall_ns: i64) -> Policy {
        Policy {
            cfg,
            first_met: BTreeMap::new(),
            met_before: BTreeSet::new(),
            last_seen: BTreeMap::new(),
            conditions: initial_conditions(start_wall_ns),
        }
    }

    pub fn config(&self) -> &EvictionConfig {
        &self.cfg
    }

    /// Whether the threshold `i` is met by `obs`, minimum reclaim included if it was met before.
    fn is_met(&self, i: usize, t: &Threshold, obs: &Observations) -> Option<Observation> {
        let o = *obs.get(&t.signal)?;
        let mut value = t.value.resolve(o.capacity);
        if self.met_before.contains(&i) {
            if let Some(r) = t.min_reclaim {
                value += r.resolve(o.capacity);
            }
        }
        (o.available < value).then_some(o)
    }

    pub fn step(&mut self, now: Now, obs: &Observations) -> Step {
        let mut met = BTreeSet::new();
        let mut met_list = Vec::new();
        for (i, t) in self.cfg.thresholds.iter().enumerate() {
            if self.is_met(i, t, obs).is_some() {
                met.insert(i);
                met_list.push(t.clone());
                self.first_met.entry(i).or_insert(now.mono);
                self.last_seen.insert(t.signal.condition(), now.mono);
            }
        }
        self.first_met.retain(|i, _| met.contains(i));
        let mut changed = false;
        for c in Condition::ALL {
            let active = self.last_seen.get(&c).is_some_and(|seen| {
                now.mono.saturating_sub(*seen) < self.cfg.pressure_transition_period
            }) || met
                .iter()
                .any(|i| self.cfg.thresholds[*i].signal.condition() == c);
            let message = match met
                .iter()
                .map(|i| &self.cfg.thresholds[*i])
                .find(|t| t.signal.condition() == c)
            {
                Some(t) => {
                    let o = obs[&t.signal];
                    format!(
                        "{}: {} available, threshold {}",
                        t.signal.as_str(),
                        o.available,
                        t.value.resolve(o.capacity)
                    )
                }
                None if active => {
                    let cur = &self.conditions[&c];
                    if cur.active {
                        cur.message.clone()
                    } else {
                        format!("{} recently", no_pressure(c))
                    }
                }
                None => no_pressure(c).into(),
            };
            let cur = self.conditions.get_mut(&c).expect("every condition");
            if cur.active != active {
                cur.active = active;
                cur.since_ns = now.wall_ns;
                changed = true;
            }
            cur.message = message;
        }
        // Act on the most urgent threshold past its grace period: memory first, hard first.
        let act = met
            .iter()
            .map(|i| (*i, &self.cfg.thresholds[*i]))
            .filter(|(i, t)| now.mono.saturating_sub(self.first_met[i]) >= t.grace)
            .min_by_key(|(_, t)| (t.signal.priority(), !t.hard))
            .map(|(_, t)| {
                let o = obs[&t.signal];
                let reclaim = t.min_reclaim.map(|r| r.resolve(o.capacity)).unwrap_or(0);
                Act {
                    threshold: t.clone(),
                    observation: o,
                    to_reclaim: (t.value.resolve(o.capacity) + reclaim - o.available).max(0),
                }
            });
        self.met_before = met;
        Step {
            conditions: self.conditions.clone(),
            changed,
            act,
            met: met_list,
        }
    }

    /// Whether a signal is near enough to a threshold that the monitor should look often:
    /// within `margin` (a fraction of the threshold's value; for byte signals at least 16 MiB,
    /// which is how fast a hog can move between two looks).
    pub fn near(&self, obs: &Observations, margin: f64) -> bool {
        self.cfg.thresholds.iter().any(|t| {
            obs.get(&t.signal).is_some_and(|o| {
                let v = t.value.resolve(o.capacity);
                let mut slack = ((v as f64) * margin) as i64;
                if t.signal.in_bytes() {
                    slack = slack.max(16 << 20);
                }
                o.available < v + slack
            })
        })
    }
}

/// Every node condition cleared, as at the agent's start (`start_wall_ns`).
pub fn initial_conditions(start_wall_ns: i64) -> BTreeMap<Condition, ConditionState> {
    Condition::ALL
        .into_iter()
        .map(|c| {
            (
                c,
                ConditionState {
                    active: false,
                    since_ns: start_wall_ns,
                    message: no_pressure(c).into(),
                },
            )
        })
        .collect()
}

fn no_pressure(c: Condition) -> &'static str {
    match c {
        Condition::MemoryPressure => "kubelet has sufficient memory available",
        Condition::DiskPressure => "kubelet has no disk pressure",
        Condition::PIDPressure => "kubelet has sufficient PID available",
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::{parse, RawEviction};
    use super::*;

    const MI: i64 = 1 << 20;

    fn cfg(raw: RawEviction) -> EvictionConfig {
        parse(&raw).unwrap()
    }

    fn map(kv: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn at(s: u64) -> Now {
        Now {
            mono: Duration::from_secs(s),
            wall_ns: (1000 + s as i64) * 1_000_000_000,
        }
    }

    fn mem(available_mi: i64) -> Observations {
        [(
            Signal::AllocatableMemoryAvailable,
            Observation {
                available: available_mi * MI,
                capacity: 384 * MI,
            },
        )]
        .into()
    }

    /// (time s, available MiB, want MemoryPressure, want act)
    fn run(c: EvictionConfig, steps: &[(u64, i64, bool, bool)]) {
        let mut p = Policy::new(c, 0);
        for (t, avail, cond, act) in steps {
            let s = p.step(at(*t), &mem(*avail));
            assert_eq!(
                s.conditions[&Condition::MemoryPressure].active,
                *cond,
                "t={t} avail={avail}: condition"
            );
            assert_eq!(s.act.is_some(), *act, "t={t} avail={avail}: act");
        }
    }

    #[test]
    fn hard_threshold_acts_at_once_and_condition_lingers() {
        let c = cfg(RawEviction {
            hard: map(&[("memory.available", "100Mi")]),
            pressure_transition_period: Some("30s".into()),
            ..Default::default()
        });
        run(
            c,
            &[
                (0, 200, false, false),
                (1, 99, true, true),
                (2, 150, true, false),
                (30, 150, true, false),
                (31, 150, false, false),
            ],
        );
    }

    #[test]
    fn soft_threshold_waits_for_its_grace_period() {
        let c = cfg(RawEviction {
            hard: map(&[]),
            soft: map(&[("memory.available", "100Mi")]),
            soft_grace_period: map(&[("memory.available", "10s")]),
            pressure_transition_period: Some("0s".into()),
            ..Default::default()
        });
        run(
            c,
            &[
                (0, 90, true, false),
                (5, 90, true, false),
                (10, 90, true, true),
                // Recovery resets the clock.
                (11, 200, false, false),
                (12, 90, true, false),
                (22, 90, true, true),
            ],
        );
    }

    #[test]
    fn minimum_reclaim_keeps_the_threshold_met() {
        let c = cfg(RawEviction {
            hard: map(&[("memory.available", "100Mi")]),
            minimum_reclaim: map(&[("memory.available", "50Mi")]),
            pressure_transition_period: Some("0s".into()),
            ..Default::default()
        });
        let mut p = Policy::new(c, 0);
        let s = p.step(at(0), &mem(120));
        assert!(s.act.is_none());
        let s = p.step(at(1), &mem(90));
        assert_eq!(s.act.as_ref().unwrap().to_reclaim, 60 * MI);
        // 120 Mi is above the threshold but not above threshold + minimum reclaim.
        let s = p.step(at(2), &mem(120));
        assert!(s.act.is_some());
        let s = p.step(at(3), &mem(151));
        assert!(s.act.is_none());
        // Not met before, so 120 Mi does not meet it again.
        let s = p.step(at(4), &mem(120));
        assert!(s.act.is_none());
    }

    #[test]
    fn memory_is_acted_on_before_disk_and_transitions_are_stamped() {
        let c = cfg(RawEviction {
            hard: map(&[("memory.available", "100Mi"), ("nodefs.available", "10%")]),
            pressure_transition_period: Some("0s".into()),
            ..Default::default()
        });
        let mut p = Policy::new(c, 0);
        let mut obs = mem(10);
        obs.insert(
            Signal::NodeFsAvailable,
            Observation {
                available: 1,
                capacity: 100,
            },
        );
        let s = p.step(at(5), &obs);
        assert_eq!(
            s.act.unwrap().threshold.signal,
            Signal::AllocatableMemoryAvailable
        );
        assert!(s.changed);
        assert!(s.conditions[&Condition::DiskPressure].active);
        assert_eq!(
            s.conditions[&Condition::MemoryPressure].since_ns,
            at(5).wall_ns
        );
        assert!(s.conditions[&Condition::MemoryPressure]
            .message
            .contains("allocatableMemory.available"));
        assert!(!s.conditions[&Condition::PIDPressure].active);
        let s = p.step(at(6), &obs);
        assert!(!s.changed);
        let s = p.step(at(7), &mem(300));
        assert!(s.changed);
        assert!(
            !s.conditions[&Condition::DiskPressure].active,
            "no reading, no pressure"
        );
    }

    #[test]
    fn near_counts_bytes_and_counts_differently() {
        let p = Policy::new(
            cfg(RawEviction {
                hard: map(&[("memory.available", "100Mi"), ("nodefs.inodesFree", "5%")]),
                ..Default::default()
            }),
            0,
        );
        let inodes = |free| -> Observations {
            [(
                Signal::NodeFsInodesFree,
                Observation {
                    available: free,
                    capacity: 16_000_000,
                },
            )]
            .into()
        };
        // 5% of 16 M inodes is 800 k; half again is 1.2 M. No 16 Mi floor for a count.
        assert!(!p.near(&inodes(15_000_000), 0.5));
        assert!(p.near(&inodes(1_000_000), 0.5));
        // Memory: 100 Mi threshold, 150 Mi with the margin.
        assert!(!p.near(&mem(160), 0.5));
        assert!(p.near(&mem(140), 0.5));
    }

    #[test]
    fn a_missing_signal_is_never_met() {
        let mut p = Policy::new(EvictionConfig::default(), 0);
        let s = p.step(at(0), &Observations::new());
        assert!(s.act.is_none() && s.met.is_empty());
    }
}
