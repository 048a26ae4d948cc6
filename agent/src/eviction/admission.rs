//! Which desired pods may run (pure): kubelet's admission (requests must fit node
//! allocatable; no BestEffort pod under memory pressure, no pod under disk pressure) plus
//! tidelet's rule for evicted pods.
//!
//! A static pod stays desired after it is rejected or evicted (its file is still there), so
//! instead of failing it for good, as kubelet does with an API pod, tidelet holds it with phase
//! `Failed` and admits it again when it can run:
//! - rejected for resources: when it fits (another pod went away or the file changed);
//! - rejected or evicted under pressure: once the node condition has cleared (which takes
//!   `evictionPressureTransitionPeriod` after the last time a threshold was met) *and* its
//!   back-off has passed: 10 s after its first eviction, doubling for each eviction after,
//!   at most 5 min; the count starts again once the pod has run 10 min without eviction.
//!
//! - rejected for host ports (kubelet's `NodePorts`): when the pod holding them is gone.
//!
//! Pods are considered in name order; already admitted pods keep their place.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::allocatable::{fits, Requests, Resources};
use super::config::Condition;
use crate::net::ports::{self, HostPort};

pub const BACKOFF_START: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Running this long without eviction resets a pod's eviction count.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// A pod's admission state, as its worker is told.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Gate {
    #[default]
    Admitted,
    /// Not running: phase Failed with this reason and message.
    Held { reason: String, message: String },
}

/// One desired pod, as admission sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub key: String,
    pub uid: String,
    pub requests: Requests,
    pub best_effort: bool,
    pub critical: bool,
    /// The host ports it would hold (`net::ports::host_ports`).
    pub host_ports: Vec<HostPort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    uid: String,
    gate: Gate,
    requests: Requests,
    host_ports: Vec<HostPort>,
    evictions: u32,
    /// When the last eviction happened, and the condition it was for.
    evicted: Option<(Duration, Condition)>,
    admitted_at: Option<Duration>,
}

/// The back-off after the `n`th eviction (n >= 1).
pub fn backoff(n: u32) -> Duration {
    let shift = n.saturating_sub(1).min(16);
    (BACKOFF_START * (1u32 << shift)).min(BACKOFF_MAX)
}

#[derive(Debug, Default)]
pub struct Admission {
    entries: BTreeMap<String, Entry>,
}

/// The result of one `decide`: every desired pod's gate, and when to look again (a back-off
/// ending) if nothing else happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub gates: BTreeMap<String, Gate>,
    pub recheck_in: Option<Duration>,
}

fn pressure_message(c: Condition) -> String {
    format!("The node had condition: [{}]. ", c.as_str())
}

impl Admission {
    /// Record that the pod `key` (UID `uid`) was evicted for `condition`.
    pub fn evicted(
        &mut self,
        key: &str,
        uid: &str,
        condition: Condition,
        message: &str,
        now: Duration,
    ) {
        if let Some(e) = self.entries.get_mut(key).filter(|e| e.uid == uid) {
            if e.admitted_at
                .is_some_and(|t| now.saturating_sub(t) >= BACKOFF_RESET)
            {
                e.evictions = 0;
            }
            e.evictions += 1;
            e.evicted = Some((now, condition));
            e.admitted_at = None;
            e.gate = Gate::Held {
                reason: "Evicted".into(),
                message: message.to_string(),
            };
        }
    }

    /// Decide every desired pod's gate under the active conditions.
    pub fn decide(
        &mut self,
        now: Duration,
        desired: &[Candidate],
        allocatable: &Resources,
        active: &BTreeSet<Condition>,
    ) -> Decision {
        let wanted: BTreeMap<&str, &Candidate> =
            desired.iter().map(|c| (c.key.as_str(), c)).collect();
        self.entries
            .retain(|k, e| wanted.get(k.as_str()).is_some_and(|c| c.uid == e.uid));
        let mut admitted: Vec<Requests> = self
            .entries
            .values()
            .filter(|e| e.gate == Gate::Admitted)
            .map(|e| e.requests)
            .collect();
        let mut taken: Vec<HostPort> = self
            .entries
            .values()
            .filter(|e| e.gate == Gate::Admitted)
            .flat_map(|e| e.host_ports.iter().cloned())
            .collect();
        let mut recheck: Option<Duration> = None;
        let mut gates = BTreeMap::new();
        for c in desired {
            let entry = self.entries.entry(c.key.clone()).or_insert_with(|| Entry {
                uid: c.uid.clone(),
                gate: Gate::Held {
                    reason: "Pending".into(),
                    message: String::new(),
                },
                requests: c.requests,
                host_ports: c.host_ports.clone(),
                evictions: 0,
                evicted: None,
                admitted_at: None,
            });
            if entry.gate == Gate::Admitted {
                gates.insert(c.key.clone(), Gate::Admitted);
                continue;
            }
            let held_for = |entry: &Entry| -> Option<Gate> {
                let (at, cond) = entry.evicted?;
                if active.contains(&cond) {
                    return Some(entry.gate.clone());
                }
                let until = at + backoff(entry.evictions);
                (now < until).then(|| entry.gate.clone())
            };
            let gate = if let Some(g) = held_for(entry) {
                if let Some((at, cond)) = entry.evicted {
                    if !active.contains(&cond) {
                        let left = (at + backoff(entry.evictions)).saturating_sub(now);
                        recheck = Some(recheck.map_or(left, |r| r.min(left)));
                    }
                }
                g
            } else if !c.critical && active.contains(&Condition::DiskPressure) {
                Gate::Held {
                    reason: "Evicted".into(),
                    message: pressure_message(Condition::DiskPressure),
                }
            } else if !c.critical && c.best_effort && active.contains(&Condition::MemoryPressure) {
                Gate::Held {
                    reason: "Evicted".into(),
                    message: pressure_message(Condition::MemoryPressure),
                }
            } else if c
                .host_ports
                .iter()
                .any(|p| taken.iter().any(|t| ports::conflict(p, t)))
            {
                Gate::Held {
                    reason: ports::NODE_PORTS_REASON.into(),
                    message: ports::NODE_PORTS_MESSAGE.into(),
                }
            } else {
                match fits(allocatable, &admitted, c.requests) {
                    Ok(()) => {
                        admitted.push(c.requests);
                        taken.extend(c.host_ports.iter().cloned());
                        entry.admitted_at = Some(now);
                        Gate::Admitted
                    }
                    Err(r) => Gate::Held {
                        reason: r.reason,
                        message: r.message,
                    },
                }
            };
            entry.gate = gate.clone();
            gates.insert(c.key.clone(), gate);
        }
        Decision {
            gates,
            recheck_in: recheck,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: i64 = 1 << 20;

    fn alloc() -> Resources {
        Resources {
            cpu_milli: 2000,
            memory: 256 * MI,
            pods: 110,
            ephemeral_storage: 0,
        }
    }

    fn cand(key: &str, mem: i64, best_effort: bool) -> Candidate {
        Candidate {
            key: key.into(),
            uid: format!("uid-{key}"),
            requests: Requests {
                cpu_milli: 0,
                memory: mem * MI,
            },
            best_effort,
            critical: false,
            host_ports: vec![],
        }
    }

    fn reasons(d: &Decision) -> Vec<(String, String)> {
        d.gates
            .iter()
            .map(|(k, g)| {
                (
                    k.clone(),
                    match g {
                        Gate::Admitted => "Admitted".to_string(),
                        Gate::Held { reason, .. } => reason.clone(),
                    },
                )
            })
            .collect()
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn requests_must_fit_and_admitted_pods_keep_their_place() {
        let mut a = Admission::default();
        let none = BTreeSet::new();
        let pods = [
            cand("a", 200, false),
            cand("b", 100, false),
            cand("c", 0, true),
        ];
        let d = a.decide(s(0), &pods, &alloc(), &none);
        assert_eq!(
            reasons(&d),
            [
                ("a".into(), "Admitted".into()),
                ("b".into(), "OutOfmemory".into()),
                ("c".into(), "Admitted".into())
            ]
        );
        // `a` goes away: `b` now fits.
        let d = a.decide(s(1), &pods[1..], &alloc(), &none);
        assert_eq!(reasons(&d)[0], ("b".into(), "Admitted".into()));
        // `a` comes back: it is new now and does not fit next to `b`... 200 + 100 > 256.
        let d = a.decide(s(2), &pods, &alloc(), &none);
        assert_eq!(reasons(&d)[0], ("a".into(), "OutOfmemory".into()));
    }

    #[test]
    fn a_pod_whose_host_ports_are_taken_waits_with_kubelets_node_ports_reason() {
        let port = |proto: &str, ip: &str, p: u16| HostPort {
            protocol: proto.into(),
            host_ip: ip.parse().unwrap(),
            host_port: p,
            container_port: 80,
        };
        let with = |key: &str, ports: Vec<HostPort>| {
            let mut c = cand(key, 0, false);
            c.host_ports = ports;
            c
        };
        let mut a = Admission::default();
        let none = BTreeSet::new();
        let pods = [
            with("a", vec![port("TCP", "0.0.0.0", 8080)]),
            with("b", vec![port("TCP", "127.0.0.1", 8080)]),
            with("c", vec![port("UDP", "0.0.0.0", 8080)]),
            with("d", vec![port("TCP", "0.0.0.0", 8081)]),
        ];
        let d = a.decide(s(0), &pods, &alloc(), &none);
        assert_eq!(
            reasons(&d),
            [
                ("a".into(), "Admitted".into()),
                ("b".into(), "NodePorts".into()),
                ("c".into(), "Admitted".into()),
                ("d".into(), "Admitted".into())
            ]
        );
        let Gate::Held { message, .. } = &d.gates["b"] else {
            panic!()
        };
        assert_eq!(message, "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports");
        // Decided again, `a` keeps its place and `b` still waits.
        let d = a.decide(s(1), &pods, &alloc(), &none);
        assert_eq!(reasons(&d)[1], ("b".into(), "NodePorts".into()));
        // `a` goes away: `b` gets the port.
        let d = a.decide(s(2), &pods[1..], &alloc(), &none);
        assert_eq!(reasons(&d)[0], ("b".into(), "Admitted".into()));
    }

    #[test]
    fn pressure_holds_new_best_effort_pods_and_disk_pressure_holds_all() {
        let mut a = Admission::default();
        let mem: BTreeSet<_> = [Condition::MemoryPressure].into();
        let disk: BTreeSet<_> = [Condition::DiskPressure].into();
        let mut crit = cand("crit", 0, true);
        crit.critical = true;
        let pods = [cand("be", 0, true), cand("bu", 10, false), crit];
        let d = a.decide(s(0), &pods, &alloc(), &mem);
        assert_eq!(
            reasons(&d),
            [
                ("be".into(), "Evicted".into()),
                ("bu".into(), "Admitted".into()),
                ("crit".into(), "Admitted".into())
            ]
        );
        let mut b = Admission::default();
        let d = b.decide(s(0), &pods, &alloc(), &disk);
        assert_eq!(
            reasons(&d),
            [
                ("be".into(), "Evicted".into()),
                ("bu".into(), "Evicted".into()),
                ("crit".into(), "Admitted".into())
            ]
        );
        let Gate::Held { message, .. } = &d.gates["bu"] else {
            panic!()
        };
        assert_eq!(message, "The node had condition: [DiskPressure]. ");
    }

    #[test]
    fn evicted_pods_wait_for_the_condition_and_their_back_off() {
        let mut a = Admission::default();
        let none = BTreeSet::new();
        let mem: BTreeSet<_> = [Condition::MemoryPressure].into();
        let pods = [cand("hog", 0, true)];
        a.decide(s(0), &pods, &alloc(), &none);
        a.evicted(
            "hog",
            "uid-hog",
            Condition::MemoryPressure,
            "low on memory",
            s(100),
        );
        // Held while the condition lasts, whatever the time.
        let d = a.decide(s(200), &pods, &alloc(), &mem);
        assert_eq!(
            d.gates["hog"],
            Gate::Held {
                reason: "Evicted".into(),
                message: "low on memory".into()
            }
        );
        assert_eq!(d.recheck_in, None);
        // Condition cleared but the 10 s back-off has not passed.
        let d = a.decide(s(105), &pods, &alloc(), &none);
        assert!(matches!(d.gates["hog"], Gate::Held { .. }));
        assert_eq!(d.recheck_in, Some(s(5)));
        let d = a.decide(s(110), &pods, &alloc(), &none);
        assert_eq!(d.gates["hog"], Gate::Admitted);
        // Second eviction soon after: 20 s.
        a.evicted("hog", "uid-hog", Condition::MemoryPressure, "again", s(120));
        assert!(matches!(
            a.decide(s(139), &pods, &alloc(), &none).gates["hog"],
            Gate::Held { .. }
        ));
        assert_eq!(
            a.decide(s(140), &pods, &alloc(), &none).gates["hog"],
            Gate::Admitted
        );
        // Ran for 10 min: the count starts again.
        a.evicted("hog", "uid-hog", Condition::MemoryPressure, "later", s(740));
        assert_eq!(
            a.decide(s(750), &pods, &alloc(), &none).gates["hog"],
            Gate::Admitted
        );
        // An eviction of another UID (an old pod of the same name) changes nothing.
        a.evicted("hog", "other", Condition::MemoryPressure, "x", s(751));
        assert_eq!(
            a.decide(s(751), &pods, &alloc(), &none).gates["hog"],
            Gate::Admitted
        );
    }

    #[test]
    fn back_off_doubles_up_to_five_minutes() {
        let got: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(1000), BACKOFF_MAX);
    }
}
