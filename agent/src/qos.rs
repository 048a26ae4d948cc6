//! Kubernetes QoS arithmetic, as pure functions: the QoS class, `oom_score_adj`, and the cgroup
//! values kubelet derives from requests and limits (shares, weight, quota).
//!
//! Each function mirrors a named piece of kubelet (Kubernetes 1.33) so that a pod gets the same
//! numbers here as on a real node:
//! - `qos_class`: `pkg/apis/core/v1/helper/qos.GetPodQOS` (without pod-level resources, an
//!   alpha feature in 1.33);
//! - `oom_score_adj`: `pkg/kubelet/qos/policy.go GetContainerOOMScoreAdjust`, sidecar rule
//!   included. kubelet gives -997 to *node-critical* pods, which are critical pods (static pods
//!   are always critical) whose `priorityClassName` is `system-node-critical`. Every tidelet pod
//!   is static, so tidelet does **not** treat a pod as critical for being static; it gives -997
//!   only to pods that ask for `system-node-critical`, which is what kubelet computes for static
//!   pods;
//! - `milli_cpu_to_shares`, `milli_cpu_to_quota`: `pkg/kubelet/cm/helpers_linux.go`;
//! - `container_resources`: `kuberuntime calculateLinuxResources`;
//! - `pod_resources`: `cm.ResourceConfigForPod` (init and sidecar containers, pod overhead);
//! - `qos_cgroup_resources`: the QoS-tier cgroups of `qos_container_manager`.
//!
//! The API server defaults a missing request to its limit; tidelet reads manifests directly, so
//! that defaulting is done here (`request = limit` when only the limit is set). Quantities that
//! do not parse are treated as absent: manifest validation rejects them before a pod gets here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::cgroups::{Resources, MAX_SHARES, MIN_SHARES};
use crate::quantity::{parse_milli, parse_units};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The `status.qosClass` string.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    /// The QoS-level cgroup under `kubepods` (`None` for Guaranteed pods, which sit directly in it).
    pub fn cgroup_dir(self) -> Option<&'static str> {
        match self {
            QosClass::Guaranteed => None,
            QosClass::Burstable => Some("burstable"),
            QosClass::BestEffort => Some("besteffort"),
        }
    }
}

/// kubelet's `QuotaPeriod` (µs): the CFS period tidelet uses.
pub const QUOTA_PERIOD: u64 = 100_000;
/// kubelet's `MinQuotaPeriod` (µs): the smallest quota kubelet writes.
pub const MIN_QUOTA: i64 = 1_000;
const SHARES_PER_CPU: i64 = 1024;
const MILLI_PER_CPU: i64 = 1000;

const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i32 = 1000;
const SYSTEM_NODE_CRITICAL: &str = "system-node-critical";

/// The infra process's (pause container's) score: kubelet's `PodInfraOOMAdj`.
pub const INFRA_OOM_SCORE_ADJ: i32 = -998;

/// CPU (millicores) and memory (bytes) of one container or a sum of them; 0 = not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CpuMem {
    cpu: i64,
    mem: i64,
}

impl CpuMem {
    fn add(self, o: CpuMem) -> CpuMem {
        CpuMem {
            cpu: self.cpu.saturating_add(o.cpu),
            mem: self.mem.saturating_add(o.mem),
        }
    }
    fn max(self, o: CpuMem) -> CpuMem {
        CpuMem {
            cpu: self.cpu.max(o.cpu),
            mem: self.mem.max(o.mem),
        }
    }
}

type ResourceList = BTreeMap<String, Quantity>;

fn cpu_of(list: Option<&ResourceList>) -> Option<i64> {
    list?.get("cpu").and_then(|q| parse_milli(&q.0).ok())
}

fn mem_of(list: Option<&ResourceList>) -> Option<i64> {
    list?.get("memory").and_then(|q| parse_units(&q.0).ok())
}

/// The container's limits, unset ones as 0.
fn limits(c: &Container) -> CpuMem {
    let l = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    CpuMem {
        cpu: cpu_of(l).unwrap_or(0),
        mem: mem_of(l).unwrap_or(0),
    }
}

/// The container's requests after API-server defaulting (a missing request takes the limit).
fn requests(c: &Container) -> CpuMem {
    let r = c.resources.as_ref();
    let (req, lim) = (
        r.and_then(|r| r.requests.as_ref()),
        r.and_then(|r| r.limits.as_ref()),
    );
    let req_has = |name: &str| req.is_some_and(|m| m.contains_key(name));
    let cpu = if req_has("cpu") {
        cpu_of(req)
    } else {
        cpu_of(lim)
    };
    let mem = if req_has("memory") {
        mem_of(req)
    } else {
        mem_of(lim)
    };
    CpuMem {
        cpu: cpu.unwrap_or(0),
        mem: mem.unwrap_or(0),
    }
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn init_containers(spec: &PodSpec) -> &[Container] {
    spec.init_containers.as_deref().unwrap_or(&[])
}

/// The pod's QoS class, computed as `GetPodQOS` does (init containers included).
pub fn qos_class(spec: &PodSpec) -> QosClass {
    // Only positive cpu/memory quantities count; sums are compared as kubelet does.
    let positive = |v: i64| v.max(0);
    let mut req = CpuMem::default();
    let mut lim = CpuMem::default();
    let mut every_container_limited = true;
    for c in spec.containers.iter().chain(init_containers(spec)) {
        let (r, l) = (requests(c), limits(c));
        req = req.add(CpuMem {
            cpu: positive(r.cpu),
            mem: positive(r.mem),
        });
        lim = lim.add(CpuMem {
            cpu: positive(l.cpu),
            mem: positive(l.mem),
        });
        if l.cpu <= 0 || l.mem <= 0 {
            every_container_limited = false;
        }
    }
    if req == CpuMem::default() && lim == CpuMem::default() {
        return QosClass::BestEffort;
    }
    // With every container limited both limit sums are positive, so equal sums also mean that
    // both requests are present: `len(requests) == len(limits)` in kubelet's terms.
    if every_container_limited && req == lim {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// kubelet's `GetContainerOOMScoreAdjust`: -997 for Guaranteed (and node-critical) pods, 1000
/// for BestEffort, and for Burstable `1000 - 1000 * memoryRequest / memoryCapacity`, where a
/// restartable init container (sidecar) never scores above the smallest regular container;
/// then raised to at least 3 (`1000 + -997`) and 1000 lowered to 999 (so a Burstable container
/// without a memory request gets 999). `memory_capacity` is the node's, in bytes; a capacity
/// of 0 or less (unknown) counts as "request is 0% of the node".
pub fn oom_score_adj(spec: &PodSpec, container: &Container, memory_capacity: i64) -> i32 {
    if spec.priority_class_name.as_deref() == Some(SYSTEM_NODE_CRITICAL) {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match qos_class(spec) {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => return BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {}
    }
    let formula = |request: i64| -> i64 {
        if memory_capacity <= 0 {
            return 1000;
        }
        let v = 1000 - (1000 * i128::from(request)) / i128::from(memory_capacity);
        v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    };
    let mut adj = formula(requests(container).mem);
    let is_init_sidecar = is_sidecar(container)
        && init_containers(spec)
            .iter()
            .any(|c| c.name == container.name);
    if is_init_sidecar {
        // minRegularContainerMemory: the smallest request among regular containers.
        let min_regular = spec
            .containers
            .iter()
            .map(|c| requests(c).mem)
            .min()
            .unwrap_or(0);
        if min_regular > 0 {
            adj = adj.min(formula(min_regular));
        }
    }
    let floor = i64::from(1000 + GUARANTEED_OOM_SCORE_ADJ);
    if adj < floor {
        return floor as i32;
    }
    if adj == i64::from(BEST_EFFORT_OOM_SCORE_ADJ) {
        return BEST_EFFORT_OOM_SCORE_ADJ - 1;
    }
    adj as i32
}

/// kubelet's `MilliCPUToShares`: `milli * 1024 / 1000`, within [2, 262144]; 0 gives 2.
pub fn milli_cpu_to_shares(milli_cpu: i64) -> u64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    let shares = milli_cpu.saturating_mul(SHARES_PER_CPU) / MILLI_PER_CPU;
    (shares.max(0) as u64).clamp(MIN_SHARES, MAX_SHARES)
}

/// kubelet's `MilliCPUToQuota`: `milli * period / 1000`, at least 1000 µs; 0 (no limit) gives 0.
pub fn milli_cpu_to_quota(milli_cpu: i64, period: u64) -> i64 {
    if milli_cpu <= 0 {
        return 0;
    }
    let period = i64::try_from(period).unwrap_or(i64::MAX);
    (milli_cpu.saturating_mul(period) / MILLI_PER_CPU).max(MIN_QUOTA)
}

/// The cgroup limits of one container (kubelet's `calculateLinuxResources` with CFS quota on):
/// memory limit from the memory limit, shares from the cpu request (from the cpu limit when
/// only that is set; 2 when neither), quota and period from the cpu limit. No pids limit.
pub fn container_resources(container: &Container) -> Resources {
    let (req, lim) = (requests(container), limits(container));
    let quota = milli_cpu_to_quota(lim.cpu, QUOTA_PERIOD);
    Resources {
        memory_limit: (lim.mem > 0).then_some(lim.mem),
        cpu_shares: Some(milli_cpu_to_shares(req.cpu)),
        cpu_quota: (quota > 0).then_some(quota),
        cpu_period: (quota > 0).then_some(QUOTA_PERIOD),
        pids_limit: None,
    }
}

/// kubelet's `PodRequests`/`PodLimits` aggregation: regular and sidecar containers add up; an
/// init container runs alongside the sidecars started before it, and the pod needs the larger
/// of that peak and the steady state. `declared` is false when some container (or init step)
/// has a zero cpu or memory value, which for limits means "not limited".
fn aggregate(spec: &PodSpec, f: fn(&Container) -> CpuMem) -> (CpuMem, bool, bool) {
    let (mut cpu_declared, mut mem_declared) = (true, true);
    let mut note = |v: CpuMem| {
        cpu_declared &= v.cpu > 0;
        mem_declared &= v.mem > 0;
    };
    let mut total = CpuMem::default();
    for c in &spec.containers {
        let v = f(c);
        note(v);
        total = total.add(v);
    }
    let mut sidecars = CpuMem::default();
    let mut init_peak = CpuMem::default();
    for c in init_containers(spec) {
        let own = f(c);
        let step = if is_sidecar(c) {
            total = total.add(own);
            sidecars = sidecars.add(own);
            sidecars
        } else {
            own.add(sidecars)
        };
        note(step);
        init_peak = init_peak.max(step);
    }
    (total.max(init_peak), cpu_declared, mem_declared)
}

fn overhead(spec: &PodSpec) -> CpuMem {
    let o = spec.overhead.as_ref();
    CpuMem {
        cpu: cpu_of(o).unwrap_or(0),
        mem: mem_of(o).unwrap_or(0),
    }
}

/// The pod's requests as admission counts them (kubelet `PodRequests`, overhead included):
/// (cpu millicores, memory bytes).
pub fn pod_requests(spec: &PodSpec) -> (i64, i64) {
    let r = aggregate(spec, requests).0.add(overhead(spec));
    (r.cpu, r.mem)
}

/// The pod's cpu request sum in millicores (kubelet `PodRequests`, overhead included).
fn pod_cpu_request(spec: &PodSpec) -> i64 {
    aggregate(spec, requests).0.add(overhead(spec)).cpu
}

/// The pod-level cgroup limits (kubelet's `ResourceConfigForPod`, CFS quota enforced, period
/// 100 ms): Guaranteed pods get shares from the summed requests, quota from the summed limits
/// and the summed memory limit; Burstable pods get shares, plus quota only if every container
/// has a cpu limit and a memory limit only if every container has one; BestEffort pods get 2
/// shares and nothing else.
pub fn pod_resources(spec: &PodSpec) -> Resources {
    let over = overhead(spec);
    let req = aggregate(spec, requests).0.add(over);
    let (lim, cpu_declared, mem_declared) = aggregate(spec, limits);
    // PodLimits adds overhead only to resources that some container limits.
    let lim = CpuMem {
        cpu: if lim.cpu > 0 {
            lim.cpu.saturating_add(over.cpu)
        } else {
            0
        },
        mem: if lim.mem > 0 {
            lim.mem.saturating_add(over.mem)
        } else {
            0
        },
    };
    let shares = milli_cpu_to_shares(req.cpu);
    let quota = milli_cpu_to_quota(lim.cpu, QUOTA_PERIOD);
    let mut res = Resources::default();
    match qos_class(spec) {
        QosClass::Guaranteed => {
            res.cpu_shares = Some(shares);
            res.cpu_quota = Some(quota);
            res.cpu_period = Some(QUOTA_PERIOD);
            res.memory_limit = Some(lim.mem);
        }
        QosClass::Burstable => {
            res.cpu_shares = Some(shares);
            if cpu_declared {
                res.cpu_quota = Some(quota);
                res.cpu_period = Some(QUOTA_PERIOD);
            }
            if mem_declared {
                res.memory_limit = Some(lim.mem);
            }
        }
        QosClass::BestEffort => res.cpu_shares = Some(MIN_SHARES),
    }
    res
}

/// Limits of the QoS-tier cgroups `kubepods/burstable` and `kubepods/besteffort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosCgroups {
    pub burstable: Resources,
    pub besteffort: Resources,
}

/// kubelet's `qosContainerManager.setCPUCgroupConfig` over the active pods: `besteffort` gets
/// 2 shares, `burstable` the shares of the summed cpu requests of its pods.
pub fn qos_cgroup_resources<'a>(pods: impl IntoIterator<Item = &'a PodSpec>) -> QosCgroups {
    let burstable_milli: i64 = pods
        .into_iter()
        .filter(|p| qos_class(p) == QosClass::Burstable)
        .map(pod_cpu_request)
        .fold(0, i64::saturating_add);
    QosCgroups {
        burstable: Resources {
            cpu_shares: Some(milli_cpu_to_shares(burstable_milli)),
            ..Resources::default()
        },
        besteffort: Resources {
            cpu_shares: Some(MIN_SHARES),
            ..Resources::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A container from `[cpu_req, mem_req, cpu_lim, mem_lim]` ("" = unset).
    fn ctr(name: &str, r: [&str; 4]) -> Value {
        let mut requests = serde_json::Map::new();
        let mut limits = serde_json::Map::new();
        for (i, v) in r.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            let key = if i % 2 == 0 { "cpu" } else { "memory" };
            let map = if i < 2 { &mut requests } else { &mut limits };
            map.insert(key.into(), json!(v));
        }
        json!({"name": name, "image": "x", "resources": {"requests": requests, "limits": limits}})
    }

    fn sidecar(name: &str, r: [&str; 4]) -> Value {
        let mut c = ctr(name, r);
        c["restartPolicy"] = json!("Always");
        c
    }

    fn pod(containers: Vec<Value>, init: Vec<Value>) -> PodSpec {
        serde_json::from_value(json!({"containers": containers, "initContainers": init})).unwrap()
    }

    const NONE: [&str; 4] = ["", "", "", ""];

    #[test]
    fn qos_class_matches_get_pod_qos() {
        use QosClass::*;
        let cases: Vec<(&str, PodSpec, QosClass)> = vec![
            (
                "no resources",
                pod(vec![ctr("a", NONE)], vec![]),
                BestEffort,
            ),
            ("no containers", pod(vec![], vec![]), BestEffort),
            (
                "zero quantities",
                pod(vec![ctr("a", ["0", "0", "0", "0"])], vec![]),
                BestEffort,
            ),
            (
                "only non-qos resources",
                {
                    let mut c = ctr("a", NONE);
                    c["resources"]["limits"] = json!({"ephemeral-storage": "1Gi"});
                    pod(vec![c], vec![])
                },
                BestEffort,
            ),
            (
                "equal requests and limits",
                pod(vec![ctr("a", ["1", "1Gi", "1", "1Gi"])], vec![]),
                Guaranteed,
            ),
            (
                "limits only default requests",
                pod(vec![ctr("a", ["", "", "500m", "64Mi"])], vec![]),
                Guaranteed,
            ),
            (
                "same value, other units",
                pod(vec![ctr("a", ["1000m", "1024Mi", "1", "1Gi"])], vec![]),
                Guaranteed,
            ),
            (
                "cpu request below limit",
                pod(vec![ctr("a", ["500m", "1Gi", "1", "1Gi"])], vec![]),
                Burstable,
            ),
            (
                "memory limit missing",
                pod(vec![ctr("a", ["1", "", "1", ""])], vec![]),
                Burstable,
            ),
            (
                "only a request",
                pod(vec![ctr("a", ["100m", "", "", ""])], vec![]),
                Burstable,
            ),
            (
                "one guaranteed, one besteffort container",
                pod(
                    vec![ctr("a", ["1", "1Gi", "1", "1Gi"]), ctr("b", NONE)],
                    vec![],
                ),
                Burstable,
            ),
            (
                "init container without limits",
                pod(
                    vec![ctr("a", ["1", "1Gi", "1", "1Gi"])],
                    vec![ctr("i", NONE)],
                ),
                Burstable,
            ),
            (
                "init container guaranteed too",
                pod(
                    vec![ctr("a", ["1", "1Gi", "1", "1Gi"])],
                    vec![ctr("i", ["", "", "2", "2Gi"])],
                ),
                Guaranteed,
            ),
            (
                "only init container has resources",
                pod(
                    vec![ctr("a", NONE)],
                    vec![ctr("i", ["1", "1Gi", "1", "1Gi"])],
                ),
                Burstable,
            ),
            (
                "explicit zero request with limit",
                pod(vec![ctr("a", ["0", "1Gi", "1", "1Gi"])], vec![]),
                Burstable,
            ),
        ];
        for (name, spec, want) in cases {
            assert_eq!(qos_class(&spec), want, "{name}");
        }
    }

    #[test]
    fn oom_score_adj_matches_kubelet_policy() {
        let gib: i64 = 1 << 30;
        let cap = 10 * gib;
        let burst = |mem_req: &str| pod(vec![ctr("a", ["100m", mem_req, "", ""])], vec![]);
        let cases: Vec<(&str, PodSpec, &str, i64, i32)> = vec![
            (
                "guaranteed",
                pod(vec![ctr("a", ["1", "1Gi", "1", "1Gi"])], vec![]),
                "a",
                cap,
                -997,
            ),
            (
                "besteffort",
                pod(vec![ctr("a", NONE)], vec![]),
                "a",
                cap,
                1000,
            ),
            ("burstable 10% of node", burst("1Gi"), "a", cap, 900),
            ("burstable, no memory request", burst(""), "a", cap, 999),
            (
                "burstable, tiny request rounds to 1000 -> 999",
                burst("1Ki"),
                "a",
                cap,
                999,
            ),
            (
                "burstable, request = capacity -> floor 3",
                burst("10Gi"),
                "a",
                cap,
                3,
            ),
            (
                "burstable, request above capacity -> floor 3",
                burst("20Gi"),
                "a",
                cap,
                3,
            ),
            (
                "burstable, 99.8% -> 3",
                pod(vec![ctr("a", ["", "998", "", ""])], vec![]),
                "a",
                1000,
                3,
            ),
            (
                "burstable, 99.6% -> 4",
                pod(vec![ctr("a", ["", "996", "", ""])], vec![]),
                "a",
                1000,
                4,
            ),
            ("unknown capacity", burst("1Gi"), "a", 0, 999),
            (
                "sidecar capped at smallest regular container",
                pod(
                    vec![ctr("a", ["", "5Gi", "", ""]), ctr("b", ["", "2Gi", "", ""])],
                    vec![sidecar("s", ["", "1Gi", "", ""])],
                ),
                "s",
                cap,
                800,
            ),
            (
                "sidecar with larger request keeps its own",
                pod(
                    vec![ctr("a", ["", "1Gi", "", ""])],
                    vec![sidecar("s", ["", "3Gi", "", ""])],
                ),
                "s",
                cap,
                700,
            ),
            (
                "plain init container is not capped",
                pod(
                    vec![ctr("a", ["", "5Gi", "", ""])],
                    vec![ctr("i", ["", "1Gi", "", ""])],
                ),
                "i",
                cap,
                900,
            ),
            (
                "node-critical priority class",
                {
                    let mut p = burst("1Gi");
                    p.priority_class_name = Some("system-node-critical".into());
                    p
                },
                "a",
                cap,
                -997,
            ),
            (
                "static pods are not critical by themselves",
                {
                    let mut p = burst("1Gi");
                    p.priority_class_name = Some("system-cluster-critical".into());
                    p
                },
                "a",
                cap,
                900,
            ),
        ];
        for (name, spec, container, cap, want) in cases {
            let c = spec
                .containers
                .iter()
                .chain(init_containers(&spec))
                .find(|c| c.name == container)
                .unwrap();
            assert_eq!(oom_score_adj(&spec, c, cap), want, "{name}");
        }
    }

    #[test]
    fn cpu_conversions_match_kubelet() {
        for (milli, shares) in [
            (0, 2),
            (1, 2),
            (2, 2),
            (10, 10),
            (100, 102),
            (250, 256),
            (1000, 1024),
            (256_000, 262_144),
            (300_000, 262_144),
            (-5, 2),
        ] {
            assert_eq!(milli_cpu_to_shares(milli), shares, "shares of {milli}m");
        }
        for (milli, quota) in [
            (0, 0),
            (1, 1000),
            (5, 1000),
            (10, 1000),
            (11, 1100),
            (250, 25_000),
            (1000, 100_000),
            (1500, 150_000),
        ] {
            assert_eq!(
                milli_cpu_to_quota(milli, QUOTA_PERIOD),
                quota,
                "quota of {milli}m"
            );
        }
    }

    fn res(mem: Option<i64>, shares: u64, quota: Option<i64>) -> Resources {
        Resources {
            memory_limit: mem,
            cpu_shares: Some(shares),
            cpu_quota: quota,
            cpu_period: quota.map(|_| QUOTA_PERIOD),
            pids_limit: None,
        }
    }

    #[test]
    fn container_resources_match_kubelet() {
        let cases = [
            ("nothing", NONE, res(None, 2, None)),
            (
                "request and limits",
                ["250m", "64Mi", "500m", "128Mi"],
                res(Some(128 << 20), 256, Some(50_000)),
            ),
            (
                "limit only: shares from limit",
                ["", "", "1", ""],
                res(None, 1024, Some(100_000)),
            ),
            (
                "request only",
                ["100m", "64Mi", "", ""],
                res(None, 102, None),
            ),
            (
                "explicit zero request keeps 2 shares",
                ["0", "", "2", ""],
                res(None, 2, Some(200_000)),
            ),
            (
                "tiny limit: minimum quota",
                ["", "", "1m", ""],
                res(None, 2, Some(1000)),
            ),
        ];
        for (name, r, want) in cases {
            let c: Container = serde_json::from_value(ctr("a", r)).unwrap();
            assert_eq!(container_resources(&c), want, "{name}");
        }
    }

    #[test]
    fn pod_resources_match_resource_config_for_pod() {
        let gi: i64 = 1 << 30;
        let cases: Vec<(&str, PodSpec, Resources)> = vec![
            (
                "besteffort",
                pod(vec![ctr("a", NONE)], vec![]),
                Resources {
                    cpu_shares: Some(2),
                    ..Default::default()
                },
            ),
            (
                "guaranteed sums",
                pod(
                    vec![
                        ctr("a", ["1", "1Gi", "1", "1Gi"]),
                        ctr("b", ["", "", "500m", "1Gi"]),
                    ],
                    vec![],
                ),
                res(Some(2 * gi), 1536, Some(150_000)),
            ),
            (
                "burstable, all limited",
                pod(
                    vec![
                        ctr("a", ["100m", "1Gi", "1", "2Gi"]),
                        ctr("b", ["100m", "", "1", "1Gi"]),
                    ],
                    vec![],
                ),
                res(Some(3 * gi), 204, Some(200_000)),
            ),
            (
                "burstable, one without cpu limit",
                pod(
                    vec![
                        ctr("a", ["100m", "1Gi", "1", "2Gi"]),
                        ctr("b", ["100m", "", "", "1Gi"]),
                    ],
                    vec![],
                ),
                Resources {
                    memory_limit: Some(3 * gi),
                    cpu_shares: Some(204),
                    ..Default::default()
                },
            ),
            (
                "burstable, one without memory limit",
                pod(
                    vec![
                        ctr("a", ["100m", "1Gi", "1", "2Gi"]),
                        ctr("b", ["100m", "", "1", ""]),
                    ],
                    vec![],
                ),
                res(None, 204, Some(200_000)),
            ),
            (
                "init container larger than the sum",
                pod(
                    vec![ctr("a", ["1", "1Gi", "1", "1Gi"])],
                    vec![ctr("i", ["2", "3Gi", "2", "3Gi"])],
                ),
                res(Some(3 * gi), 2048, Some(200_000)),
            ),
            (
                "init container smaller than the sum",
                pod(
                    vec![
                        ctr("a", ["1", "1Gi", "1", "1Gi"]),
                        ctr("b", ["1", "1Gi", "1", "1Gi"]),
                    ],
                    vec![ctr("i", ["1", "1Gi", "1", "1Gi"])],
                ),
                res(Some(2 * gi), 2048, Some(200_000)),
            ),
            (
                "sidecar adds to regular containers and to later init containers",
                pod(
                    vec![ctr("a", ["1", "1Gi", "1", "1Gi"])],
                    vec![
                        sidecar("s", ["1", "1Gi", "1", "1Gi"]),
                        ctr("i", ["2", "2Gi", "2", "2Gi"]),
                    ],
                ),
                res(Some(3 * gi), 3072, Some(300_000)),
            ),
        ];
        for (name, spec, want) in cases {
            assert_eq!(pod_resources(&spec), want, "{name}");
        }
    }

    #[test]
    fn pod_overhead_is_added() {
        let mut spec = pod(vec![ctr("a", ["1", "1Gi", "1", "1Gi"])], vec![]);
        spec.overhead = serde_json::from_value(json!({"cpu": "250m", "memory": "64Mi"})).unwrap();
        assert_eq!(
            pod_resources(&spec),
            res(Some((1 << 30) + (64 << 20)), 1280, Some(125_000))
        );
    }

    #[test]
    fn qos_tiers_share_by_burstable_requests() {
        let pods = [
            pod(vec![ctr("a", ["1", "1Gi", "1", "1Gi"])], vec![]),
            pod(vec![ctr("a", ["500m", "", "", ""])], vec![]),
            pod(
                vec![ctr("a", ["250m", "", "1", ""]), ctr("b", ["", "", "1", ""])],
                vec![],
            ),
            pod(vec![ctr("a", NONE)], vec![]),
        ];
        let got = qos_cgroup_resources(&pods);
        // 500m + 250m + 1000m (b's request defaults to its limit)
        assert_eq!(got.burstable.cpu_shares, Some(1792));
        assert_eq!(got.besteffort.cpu_shares, Some(2));
        assert_eq!(qos_cgroup_resources(&[]).burstable.cpu_shares, Some(2));
    }
}
