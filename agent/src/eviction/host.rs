//! What the eviction monitor needs from the node agent, as one narrow trait the monitor owns
//! (kubelet's eviction manager is likewise handed a pod terminator, a stats provider and a
//! clock rather than the kubelet itself), and what it hands back: an `EvictNotice` per pod it
//! evicted.
//!
//! The agent implements `EvictionHost` for its shared context (`agent/eviction_host.rs`); the
//! monitor's tests implement it with fakes (pods, cgroups, a clock that only moves when told),
//! so that every round of the monitor can be checked without root and without waiting.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::config::{Condition, EvictionConfig};
use super::policy::ConditionState;
use crate::cgroups::Cgroups;
use crate::pod::layout::PodPlan;
use crate::pod::view::PodView;

/// An eviction the monitor carried out: for the pod's worker (do not restart what dies, report
/// the pod `Failed`/`Evicted` with `message`) and for admission (hold the pod back while the
/// pressure lasts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictNotice {
    /// `namespace/name`.
    pub key: String,
    pub uid: String,
    /// The node condition whose threshold was met.
    pub condition: Condition,
    /// kubelet's message (`The node was low on resource: memory. ...`).
    pub message: String,
    /// Monotonic time since the agent started (`EvictionHost::mono`).
    pub at: Duration,
}

impl EvictNotice {
    pub fn new(key: &str, uid: &str, condition: Condition, message: String, at: Duration) -> Self {
        EvictNotice {
            key: key.into(),
            uid: uid.into(),
            condition,
            message,
            at,
        }
    }
}

/// The node agent as the eviction monitor sees it.
pub trait EvictionHost: Send + Sync {
    // What to watch.
    /// Thresholds, grace periods, minimum reclaim, `evictionPressureTransitionPeriod`.
    fn eviction_config(&self) -> &EvictionConfig;
    /// The pods' top cgroup (`kubepods`), whose working set `allocatableMemory.available`
    /// counts and whose usage the v1 threshold watches.
    fn kubepods_cgroup(&self) -> String;
    /// The pods' memory capacity in bytes (node allocatable: capacity minus reservations),
    /// what kubelet subtracts the working set from.
    fn pods_memory_limit(&self) -> i64;
    /// The agent's start on the wall clock: the time the node conditions say they last
    /// changed before anything happened.
    fn started_wall_ns(&self) -> i64;
    /// The cgroups of `kubepods` and of the pods: memory, processes, kill.
    fn cgroups(&self) -> &dyn Cgroups;

    // Whom to evict.
    /// The pods the agent knows (a pod without a cgroup is not running and is skipped).
    fn pods(&self) -> Vec<PodView>;
    /// Where a pod lives (its directories, for disk use) and its grace period.
    fn plan(&self, pod: &Pod) -> PodPlan;
    /// Whether the pod with this UID was evicted already (it is not ranked again).
    fn evicted(&self, uid: &str) -> bool;

    // What it does.
    /// Record an eviction, *before* the pod is killed, so that its worker never restarts what
    /// dies.
    fn record_eviction(&self, notice: EvictNotice);
    /// SIGTERM one process of a pod evicted with a grace period (soft thresholds).
    fn terminate(&self, pid: i32);
    /// Publish the node conditions (the node status, admission).
    fn set_conditions(&self, conditions: BTreeMap<Condition, ConditionState>);
    /// Raise a node event (`NodeHasInsufficientMemory`, `Evicted`, ...).
    fn node_event(&self, warning: bool, reason: &str, message: String);

    // Time: periods on the monotonic clock, wall time only for what users see.
    /// Monotonic time since the agent started.
    fn mono(&self) -> Duration;
    /// Nanoseconds since the Unix epoch.
    fn wall_ns(&self) -> i64;
    /// Block the monitor's thread for `d` (waiting for a victim's memory to be released, or
    /// for its processes to stop).
    fn sleep(&self, d: Duration);
}
