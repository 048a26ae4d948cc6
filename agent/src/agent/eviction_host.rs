//! The agent's shared context as the eviction monitor's host (`eviction::host`): the monitor
//! reads the agent's pods and settings and reports through here, and imports nothing of the
//! agent.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::{lock, Ctx};
use crate::cgroups::Cgroups;
use crate::eviction::config::{Condition, EvictionConfig};
use crate::eviction::host::{EvictNotice, EvictionHost};
use crate::eviction::policy::ConditionState;
use crate::pod::layout::{self, PodPlan};
use crate::pod::view::PodView;

impl EvictionHost for Ctx {
    fn eviction_config(&self) -> &EvictionConfig {
        &self.cfg.eviction
    }

    fn kubepods_cgroup(&self) -> String {
        self.cfg.kubepods_cgroup()
    }

    fn pods_memory_limit(&self) -> i64 {
        self.resources.pods_memory_limit
    }

    fn started_wall_ns(&self) -> i64 {
        self.started_ns
    }

    fn cgroups(&self) -> &dyn Cgroups {
        &*self.cgroups
    }

    fn pods(&self) -> Vec<PodView> {
        self.shared.list()
    }

    fn plan(&self, pod: &Pod) -> PodPlan {
        layout::plan(&self.cfg, &self.node, pod)
    }

    fn evicted(&self, uid: &str) -> bool {
        self.eviction_notice(uid).is_some()
    }

    fn record_eviction(&self, notice: EvictNotice) {
        // Not yet taken into admission (`Agent::admit` marks it).
        lock(&self.evictions).insert(notice.uid.clone(), (notice, false));
        self.wake.notify_one();
    }

    fn terminate(&self, pid: i32) {
        // The pid was read from the pod's cgroup just before; one that exited since is fine.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    fn set_conditions(&self, conditions: BTreeMap<Condition, ConditionState>) {
        Ctx::set_conditions(self, conditions)
    }

    fn node_event(&self, warning: bool, reason: &str, message: String) {
        Ctx::node_event(self, warning, reason, message)
    }

    fn mono(&self) -> Duration {
        Ctx::mono(self)
    }

    fn wall_ns(&self) -> i64 {
        crate::clock::now_ns()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}
