//! Which pod to evict first (pure), as kubelet ranks them, and who may never be chosen.
//!
//! Memory: pods using more than they request first, then lower priority, then the larger
//! usage above requests. PIDs: lower priority, then more processes. Disk: over their
//! ephemeral-storage requests first, then lower priority, then larger usage.
//!
//! Unlike kubelet, static pods are evictable (on a board every pod is a static pod); only a
//! pod marked critical is exempt: priority of `system-cluster-critical` or above, or the
//! annotation `tidelet.io/critical: "true"`.

use std::cmp::Ordering;

use k8s_openapi::api::core::v1::PodSpec;

use super::config::Signal;

pub const SYSTEM_CLUSTER_CRITICAL: i32 = 2_000_000_000;
pub const SYSTEM_NODE_CRITICAL: i32 = 2_000_001_000;
/// kubelet's `IsCriticalPodBasedOnPriority` boundary.
pub const CRITICAL_PRIORITY: i32 = SYSTEM_CLUSTER_CRITICAL;
/// The annotation that exempts a pod from eviction without giving it a priority class.
pub const CRITICAL_ANNOTATION: &str = "tidelet.io/critical";

/// A pod's priority: `spec.priority`, else its class (the two built-in classes are known;
/// any other class name is unknown on a node without an API server and counts as 0).
pub fn priority(spec: &PodSpec) -> i32 {
    if let Some(p) = spec.priority {
        return p;
    }
    match spec.priority_class_name.as_deref() {
        Some("system-node-critical") => SYSTEM_NODE_CRITICAL,
        Some("system-cluster-critical") => SYSTEM_CLUSTER_CRITICAL,
        _ => 0,
    }
}

pub fn is_critical(
    spec: &PodSpec,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    priority(spec) >= CRITICAL_PRIORITY
        || annotations
            .and_then(|a| a.get(CRITICAL_ANNOTATION))
            .is_some_and(|v| v == "true")
}

/// What ranking needs to know about one running pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStats {
    pub key: String,
    pub priority: i32,
    pub critical: bool,
    /// Bytes of memory working set, and the pod's memory request.
    pub memory: u64,
    pub memory_request: u64,
    /// Processes (threads) in the pod's cgroup.
    pub pids: u64,
    /// Bytes the pod writes on the node's disk (writable layers, logs, emptyDirs), and its
    /// ephemeral-storage request.
    pub disk: u64,
    pub disk_request: u64,
}

fn over(usage: u64, request: u64) -> bool {
    usage > request
}

fn above(usage: u64, request: u64) -> u64 {
    usage.saturating_sub(request)
}

fn compare(signal: Signal, a: &PodStats, b: &PodStats) -> Ordering {
    // `true` sorts first: reverse the bool order.
    let by_over = |ua, ra, ub, rb| over(ub, rb).cmp(&over(ua, ra));
    let by_priority = a.priority.cmp(&b.priority);
    match signal {
        Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => {
            by_over(a.memory, a.memory_request, b.memory, b.memory_request)
                .then(by_priority)
                .then(above(b.memory, b.memory_request).cmp(&above(a.memory, a.memory_request)))
        }
        Signal::PidAvailable => by_priority.then(b.pids.cmp(&a.pids)),
        _ => by_over(a.disk, a.disk_request, b.disk, b.disk_request)
            .then(by_priority)
            .then(above(b.disk, b.disk_request).cmp(&above(a.disk, a.disk_request))),
    }
    .then_with(|| a.key.cmp(&b.key))
}

/// The pods in eviction order for `signal`, critical pods left out.
pub fn rank(signal: Signal, pods: &[PodStats]) -> Vec<&PodStats> {
    let mut v: Vec<&PodStats> = pods.iter().filter(|p| !p.critical).collect();
    v.sort_by(|a, b| compare(signal, a, b));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    fn pod(key: &str, prio: i32, mem: u64, req: u64) -> PodStats {
        PodStats {
            key: key.into(),
            priority: prio,
            critical: prio >= CRITICAL_PRIORITY,
            memory: mem * MI,
            memory_request: req * MI,
            pids: 0,
            disk: 0,
            disk_request: 0,
        }
    }

    fn order(signal: Signal, pods: &[PodStats]) -> Vec<String> {
        rank(signal, pods)
            .into_iter()
            .map(|p| p.key.clone())
            .collect()
    }

    #[test]
    fn memory_ranking() {
        let cases: &[(&str, Vec<PodStats>, &[&str])] = &[
            (
                "a BestEffort hog goes before a Guaranteed pod within its requests",
                vec![pod("guaranteed", 0, 60, 64), pod("hog", 0, 200, 0)],
                &["hog", "guaranteed"],
            ),
            (
                "two BestEffort hogs: the larger first",
                vec![pod("small", 0, 50, 0), pod("large", 0, 150, 0)],
                &["large", "small"],
            ),
            (
                "over its requests before within them, whatever the sizes",
                vec![pod("within", 0, 300, 400), pod("over", 0, 20, 10)],
                &["over", "within"],
            ),
            (
                "among pods over requests, lower priority first",
                vec![pod("high", 1000, 500, 0), pod("low", 0, 10, 0)],
                &["low", "high"],
            ),
            (
                "same priority: larger usage above requests first",
                vec![pod("a", 0, 100, 90), pod("b", 0, 100, 10)],
                &["b", "a"],
            ),
            (
                "critical pods are never candidates",
                vec![
                    pod("node-critical", SYSTEM_NODE_CRITICAL, 900, 0),
                    pod("cluster-critical", SYSTEM_CLUSTER_CRITICAL, 900, 0),
                    pod("web", 0, 10, 0),
                ],
                &["web"],
            ),
            ("nothing to rank", vec![], &[]),
            (
                "ties break by name, deterministically",
                vec![pod("b", 0, 10, 0), pod("a", 0, 10, 0)],
                &["a", "b"],
            ),
        ];
        for (what, pods, want) in cases {
            assert_eq!(
                order(Signal::AllocatableMemoryAvailable, pods),
                *want,
                "{what}"
            );
            assert_eq!(order(Signal::MemoryAvailable, pods), *want, "{what}");
        }
    }

    #[test]
    fn pid_and_disk_ranking() {
        let mut a = pod("a", 0, 0, 0);
        let mut b = pod("b", 0, 0, 0);
        a.pids = 10;
        b.pids = 500;
        assert_eq!(
            order(Signal::PidAvailable, &[a.clone(), b.clone()]),
            ["b", "a"]
        );
        a.priority = -5;
        assert_eq!(
            order(Signal::PidAvailable, &[a.clone(), b.clone()]),
            ["a", "b"]
        );
        let mut c = pod("c", 0, 0, 0);
        let mut d = pod("d", 0, 0, 0);
        c.disk = 10 * MI;
        c.disk_request = 100 * MI;
        d.disk = 5 * MI;
        assert_eq!(order(Signal::NodeFsAvailable, &[c, d]), ["d", "c"]);
    }

    #[test]
    fn priorities_and_critical_marks() {
        let mut s = PodSpec::default();
        assert_eq!(priority(&s), 0);
        s.priority_class_name = Some("system-node-critical".into());
        assert_eq!(priority(&s), SYSTEM_NODE_CRITICAL);
        assert!(is_critical(&s, None));
        s.priority_class_name = Some("system-cluster-critical".into());
        assert!(is_critical(&s, None));
        s.priority_class_name = Some("high-priority".into());
        assert_eq!(priority(&s), 0);
        assert!(!is_critical(&s, None));
        s.priority = Some(7);
        assert_eq!(priority(&s), 7);
        let ann: std::collections::BTreeMap<_, _> =
            [(CRITICAL_ANNOTATION.to_string(), "true".to_string())].into();
        assert!(is_critical(&s, Some(&ann)));
        let ann: std::collections::BTreeMap<_, _> =
            [(CRITICAL_ANNOTATION.to_string(), "yes".to_string())].into();
        assert!(!is_critical(&s, Some(&ann)));
    }
}
