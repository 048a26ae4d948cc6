//! The static policy's decisions, pure: which containers get exclusive CPUs, which CPUs they
//! get, and what the shared pool is. No I/O; the manager (`super::CpuManager`) applies them.
//!
//! As kubelet's `staticPolicy`: a container gets exclusive CPUs iff its pod is Guaranteed and
//! its cpu request is a whole number of CPUs (`1`, `2000m`). Init containers are not given
//! exclusive CPUs here (kubelet lends theirs to the app containers); they run in the shared
//! pool. kubelet picks CPUs topology-aware (whole sockets, then whole cores); tidelet's boards
//! have one socket without SMT siblings worth keeping apart, so it takes the lowest-numbered
//! free CPUs, which is what kubelet's ordering gives on such a machine too. Reserved CPUs are
//! never handed out exclusively but stay in the shared pool, as in kubelet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::cpuset::CpuSet;
use crate::qos::{qos_class, QosClass};

/// Exclusive CPUs by pod UID, then container name.
pub type Assignments = BTreeMap<String, BTreeMap<String, CpuSet>>;

/// Not enough CPUs are free for a container (kubelet: `UnexpectedAdmissionError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotEnough {
    pub container: String,
    pub requested: usize,
    pub available: usize,
}

/// The container's cpu request in millicores after API defaulting (a missing request takes the
/// limit); `None` when unset or malformed.
fn cpu_request_milli(c: &Container) -> Option<i64> {
    let r = c.resources.as_ref()?;
    let q = r
        .requests
        .as_ref()
        .and_then(|m| m.get("cpu"))
        .or_else(|| r.limits.as_ref().and_then(|m| m.get("cpu")))?;
    crate::quantity::parse_milli(&q.0).ok()
}

/// How many exclusive CPUs container `c` of a pod with `spec` gets (kubelet's
/// `guaranteedCPUs`): its whole-CPU request when the pod is Guaranteed, else 0.
pub fn guaranteed_cpus(spec: &PodSpec, c: &Container) -> usize {
    if qos_class(spec) != QosClass::Guaranteed {
        return 0;
    }
    match cpu_request_milli(c) {
        Some(m) if m > 0 && m % 1000 == 0 => usize::try_from(m / 1000).unwrap_or(0),
        _ => 0,
    }
}

/// Every CPU assigned exclusively to some container.
pub fn assigned(assignments: &Assignments) -> CpuSet {
    assignments
        .values()
        .flat_map(|m| m.values())
        .fold(CpuSet::new(), |acc, s| acc.union(s))
}

/// The shared pool: the online CPUs no container holds exclusively (reserved ones included).
pub fn shared_pool(online: &CpuSet, assignments: &Assignments) -> CpuSet {
    online.difference(&assigned(assignments))
}

/// CPUs that may still be handed out exclusively.
pub fn free(online: &CpuSet, reserved: &CpuSet, assignments: &Assignments) -> CpuSet {
    shared_pool(online, assignments).difference(reserved)
}

/// The exclusive CPUs of every app container of pod `uid` that qualifies, taking the lowest
/// free ones in container order. A pod that already has assignments keeps them (a restart, or
/// a second call for the same pod). Nothing is assigned when any container cannot be served:
/// the pod is admitted whole or not at all.
pub fn allocate_pod(
    online: &CpuSet,
    reserved: &CpuSet,
    assignments: &Assignments,
    uid: &str,
    spec: &PodSpec,
) -> Result<BTreeMap<String, CpuSet>, NotEnough> {
    if let Some(existing) = assignments.get(uid) {
        return Ok(existing.clone());
    }
    let mut left = free(online, reserved, assignments);
    let mut out = BTreeMap::new();
    for c in &spec.containers {
        let n = guaranteed_cpus(spec, c);
        if n == 0 {
            continue;
        }
        let Some(cpus) = left.take_lowest(n) else {
            return Err(NotEnough {
                container: c.name.clone(),
                requested: n,
                available: left.len(),
            });
        };
        left = left.difference(&cpus);
        out.insert(c.name.clone(), cpus);
    }
    Ok(out)
}

/// The cpuset a container (or the infra process, which is never exclusive) runs on.
pub fn cpuset_for(
    online: &CpuSet,
    assignments: &Assignments,
    uid: &str,
    container: &str,
) -> CpuSet {
    assignments
        .get(uid)
        .and_then(|m| m.get(container))
        .cloned()
        .unwrap_or_else(|| shared_pool(online, assignments))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: &[(&str, Option<&str>, Option<&str>)]) -> PodSpec {
        // (name, cpu request=limit, memory request=limit); None leaves the resource out.
        let containers = containers
            .iter()
            .map(|(name, cpu, mem)| {
                let mut list = BTreeMap::new();
                if let Some(c) = cpu {
                    list.insert(
                        "cpu".to_string(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity(c.to_string()),
                    );
                }
                if let Some(m) = mem {
                    list.insert(
                        "memory".to_string(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity(m.to_string()),
                    );
                }
                Container {
                    name: name.to_string(),
                    resources: (!list.is_empty()).then(|| {
                        k8s_openapi::api::core::v1::ResourceRequirements {
                            requests: Some(list.clone()),
                            limits: Some(list),
                            ..Default::default()
                        }
                    }),
                    ..Default::default()
                }
            })
            .collect();
        PodSpec {
            containers,
            ..Default::default()
        }
    }

    fn set(s: &str) -> CpuSet {
        CpuSet::parse(s).unwrap()
    }

    #[test]
    fn who_gets_exclusive_cpus() {
        let burstable = {
            let mut p = pod(&[("a", Some("1"), Some("64Mi"))]);
            p.containers[0].resources.as_mut().unwrap().limits = None;
            p
        };
        let only_limits = {
            let mut p = pod(&[("a", Some("2"), Some("64Mi"))]);
            p.containers[0].resources.as_mut().unwrap().requests = None;
            p
        };
        let cases: Vec<(&str, PodSpec, usize)> = vec![
            (
                "guaranteed whole cpu",
                pod(&[("a", Some("1"), Some("64Mi"))]),
                1,
            ),
            (
                "guaranteed 2000m",
                pod(&[("a", Some("2000m"), Some("64Mi"))]),
                2,
            ),
            (
                "guaranteed fraction",
                pod(&[("a", Some("1500m"), Some("64Mi"))]),
                0,
            ),
            (
                "guaranteed 0.5",
                pod(&[("a", Some("0.5"), Some("64Mi"))]),
                0,
            ),
            ("besteffort", pod(&[("a", None, None)]), 0),
            ("burstable (request only)", burstable, 0),
            ("no memory: burstable", pod(&[("a", Some("1"), None)]), 0),
            ("limits only default the requests", only_limits, 2),
        ];
        for (name, spec, want) in cases {
            assert_eq!(guaranteed_cpus(&spec, &spec.containers[0]), want, "{name}");
        }
    }

    #[test]
    fn allocation_takes_the_lowest_free_non_reserved_cpus() {
        let online = set("0-3");
        let g = |cpu: &str| pod(&[("a", Some(cpu), Some("64Mi"))]);
        let mut taken = Assignments::new();
        taken.insert("old".into(), [("x".to_string(), set("1"))].into());
        let two = pod(&[
            ("a", Some("1"), Some("64Mi")),
            ("b", Some("2"), Some("64Mi")),
        ]);
        let mixed = pod(&[
            ("a", Some("1"), Some("64Mi")),
            ("b", Some("500m"), Some("64Mi")),
        ]);
        type Want = Result<Vec<(&'static str, &'static str)>, (&'static str, usize, usize)>;
        let cases: Vec<(&str, &str, Assignments, PodSpec, Want)> = vec![
            (
                "first cpu after the reserved one",
                "0",
                Assignments::new(),
                g("1"),
                Ok(vec![("a", "1")]),
            ),
            (
                "skips taken cpus",
                "0",
                taken.clone(),
                g("2"),
                Ok(vec![("a", "2-3")]),
            ),
            ("not enough", "0", taken.clone(), g("3"), Err(("a", 3, 2))),
            (
                "reserved never exclusive",
                "0-2",
                Assignments::new(),
                g("2"),
                Err(("a", 2, 1)),
            ),
            (
                "two containers, in order",
                "0",
                Assignments::new(),
                two.clone(),
                Ok(vec![("a", "1"), ("b", "2-3")]),
            ),
            (
                "second container does not fit: none assigned",
                "0",
                taken.clone(),
                two,
                Err(("b", 2, 1)),
            ),
            (
                "fractional container stays shared",
                "0",
                Assignments::new(),
                mixed,
                Ok(vec![("a", "1")]),
            ),
            (
                "besteffort gets nothing",
                "0",
                Assignments::new(),
                pod(&[("a", None, None)]),
                Ok(vec![]),
            ),
        ];
        for (name, reserved, assignments, spec, want) in cases {
            let got = allocate_pod(&online, &set(reserved), &assignments, "new", &spec);
            let want = want
                .map(|v| {
                    v.into_iter()
                        .map(|(c, s)| (c.to_string(), set(s)))
                        .collect::<BTreeMap<_, _>>()
                })
                .map_err(|(c, r, a)| NotEnough {
                    container: c.into(),
                    requested: r,
                    available: a,
                });
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_pod_keeps_its_assignment() {
        let mut a = Assignments::new();
        a.insert("p".into(), [("a".to_string(), set("3"))].into());
        // Even a spec that would now get another CPU keeps what the checkpoint says.
        let got = allocate_pod(
            &set("0-3"),
            &set("0"),
            &a,
            "p",
            &pod(&[("a", Some("1"), Some("1Mi"))]),
        );
        assert_eq!(got, Ok([("a".to_string(), set("3"))].into()));
    }

    #[test]
    fn shared_pool_and_cpusets() {
        let online = set("0-3");
        let mut a = Assignments::new();
        assert_eq!(shared_pool(&online, &a), set("0-3"));
        a.insert(
            "p".into(),
            [("a".to_string(), set("1")), ("b".to_string(), set("3"))].into(),
        );
        assert_eq!(shared_pool(&online, &a), set("0,2"));
        assert_eq!(free(&online, &set("0"), &a), set("2"));
        assert_eq!(cpuset_for(&online, &a, "p", "a"), set("1"));
        assert_eq!(cpuset_for(&online, &a, "p", "c"), set("0,2"));
        assert_eq!(cpuset_for(&online, &a, "q", "a"), set("0,2"));
        a.remove("p");
        assert_eq!(cpuset_for(&online, &a, "q", "a"), set("0-3"));
    }
}
