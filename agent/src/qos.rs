//! Kubernetes QoS arithmetic, as pure functions: the QoS class, `oom_score_adj`, and the cgroup
//! values kubelet derives from requests and limits (shares, weight, quota).

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::cgroups::Resources;

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

/// The pod's QoS class, computed as `GetPodQOS` does (init containers included).
pub fn qos_class(spec: &PodSpec) -> QosClass {
    let _ = spec;
    unimplemented!("qos: qos_class")
}

/// kubelet's `GetContainerOOMScoreAdjust`: -997 for Guaranteed, 1000 for BestEffort, and
/// `1000 - 1000 * memoryRequest / memoryCapacity` clamped to [2, 999] for Burstable
/// (1000 when there is no memory request). `memory_capacity` is the node's, in bytes.
pub fn oom_score_adj(spec: &PodSpec, container: &Container, memory_capacity: i64) -> i32 {
    let _ = (spec, container, memory_capacity);
    unimplemented!("qos: oom_score_adj")
}

/// The infra process's (pause container's) score: kubelet's `PodInfraOOMAdj`.
pub const INFRA_OOM_SCORE_ADJ: i32 = -998;

/// The cgroup limits of one container.
pub fn container_resources(container: &Container) -> Resources {
    let _ = container;
    unimplemented!("qos: container_resources")
}

/// The pod-level cgroup limits (kubelet's `ResourceConfigForPod`).
pub fn pod_resources(spec: &PodSpec) -> Resources {
    let _ = spec;
    unimplemented!("qos: pod_resources")
}
