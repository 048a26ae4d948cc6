//! The eviction monitor: one thread that watches the node's signals and evicts.
//!
//! Why a thread of its own and not a task on the runtime: the point is to act within a few
//! milliseconds of the kernel's notification, also when the runtime's two worker threads are
//! busy, and its work (`poll(2)`, reading small kernel files, SIGKILL, waiting for the cgroup
//! to empty) is blocking anyway.
//!
//! Every round: wait for a trigger (PSI, the v1 usage threshold of `kubepods`, v2
//! `memory.events`) or the timer (1 s when calm, 100 ms near a threshold), read every signal,
//! let `policy` decide, publish the node conditions, and when a threshold is to be acted on:
//! under disk pressure reclaim first (image GC, dead containers' logs), then rank the pods and
//! evict one; wait until its memory is released; look again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{Condition, Signal};
use super::policy::{Act, Now, Observation, Observations, Policy};
use super::rank::{self, PodStats};
use crate::agent::{Ctx, EvictNotice};
use crate::signals;

/// How often the signals are read when nothing is near a threshold. Cheap: a few small files.
pub const IDLE_PERIOD: Duration = Duration::from_secs(1);
/// How often while a threshold is near or met.
pub const BUSY_PERIOD: Duration = Duration::from_millis(100);
/// The most directory entries read to size one pod's disk use (only under disk pressure).
const DISK_WALK_MAX: usize = 100_000;
/// The longest an eviction waits for the victim's memory to be released.
const RECLAIM_WAIT: Duration = Duration::from_secs(2);

/// Node-level reclaim under disk pressure (image GC, dead containers' logs): asked to free
/// this many bytes, returns how many it freed.
pub type DiskReclaim = Box<dyn FnMut(u64) -> u64 + Send>;

/// Where the monitor reads the node's signals (parameters, so that tests can point elsewhere).
#[derive(Debug, Clone)]
pub struct Paths {
    pub meminfo: PathBuf,
    pub pid_max: PathBuf,
    pub loadavg: PathBuf,
    /// The host's PSI file, for cgroup v1 (`/proc/pressure/memory`).
    pub psi: PathBuf,
    pub nodefs: PathBuf,
    pub imagefs: PathBuf,
}

impl Paths {
    pub fn host(root_dir: &std::path::Path, images_dir: &std::path::Path) -> Paths {
        Paths {
            meminfo: "/proc/meminfo".into(),
            pid_max: "/proc/sys/kernel/pid_max".into(),
            loadavg: "/proc/loadavg".into(),
            psi: "/proc/pressure/memory".into(),
            nodefs: root_dir.to_path_buf(),
            imagefs: images_dir.to_path_buf(),
        }
    }
}

pub struct Monitor {
    ctx: Arc<Ctx>,
    policy: Policy,
    paths: Paths,
    kubepods: String,
    reclaim: DiskReclaim,
    /// Signals whose reading failed, so that a failure is logged once, not every second.
    failing: std::collections::BTreeSet<Signal>,
    /// Logged once per episode: no pod may be evicted.
    said_nothing_to_evict: bool,
}

fn obs(available: u64, capacity: u64) -> Observation {
    Observation {
        available: available.min(i64::MAX as u64) as i64,
        capacity: capacity.min(i64::MAX as u64) as i64,
    }
}

fn mib(b: i64) -> String {
    format!("{}Mi", b / (1 << 20))
}

impl Monitor {
    pub fn new(ctx: Arc<Ctx>, paths: Paths, reclaim: DiskReclaim) -> Monitor {
        let policy = Policy::new(ctx.cfg.eviction.clone(), ctx.started_ns);
        let kubepods = ctx.cfg.kubepods_cgroup();
        Monitor {
            ctx,
            policy,
            paths,
            kubepods,
            reclaim,
            failing: Default::default(),
            said_nothing_to_evict: false,
        }
    }

    /// Run a monitor from `make` on a thread of its own, forever. After a panic a new one
    /// from `make` takes over (its decisions start afresh from the signals), as `sup` decides.
    pub fn spawn(
        mut make: impl FnMut() -> Monitor + Send + 'static,
        sup: &crate::supervise::Supervisor,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        crate::supervise::thread(
            sup,
            crate::supervise::Kind::Monitor,
            "eviction",
            move || make().run(),
        )
    }

    fn now(&self) -> Now {
        Now {
            mono: self.ctx.mono(),
            wall_ns: crate::clock::now_ns(),
        }
    }

    /// The `kubepods` usage at which the v1 threshold wakes the monitor: where the pods'
    /// working set would meet the hard memory threshold (usage >= working set, so it fires at
    /// or before that point).
    fn v1_wake_bytes(&self) -> u64 {
        let limit = self.ctx.resources.pods_memory_limit;
        let t = self
            .policy
            .config()
            .thresholds
            .iter()
            .filter(|t| t.signal == Signal::AllocatableMemoryAvailable)
            .map(|t| t.value.resolve(limit))
            .max()
            .unwrap_or(0);
        (limit - t).max(1) as u64
    }

    fn run(mut self) {
        let files = self.ctx.cgroups.memory_files(&self.kubepods);
        let spec = signals::TriggerSpec::for_cgroup(&files, &self.paths.psi, self.v1_wake_bytes());
        let (mut triggers, warnings) = signals::Triggers::open(&spec);
        for w in warnings {
            tracing::warn!("{w}");
        }
        tracing::info!(
            triggers = ?triggers.active(),
            idle_period = ?IDLE_PERIOD,
            thresholds = self.policy.config().thresholds.len(),
            "eviction monitor started"
        );
        let mut period = IDLE_PERIOD;
        loop {
            let wake = triggers.wait(period);
            for w in triggers.take_lost() {
                tracing::warn!("{w}");
            }
            let observed = self.observe();
            let step = self.policy.step(self.now(), &observed);
            if step.changed {
                self.announce(&step.conditions);
            }
            self.ctx.set_conditions(step.conditions.clone());
            let mut evicted = false;
            if let Some(act) = step.act {
                tracing::debug!(
                    ?wake,
                    signal = act.threshold.signal.as_str(),
                    available = act.observation.available,
                    "threshold met"
                );
                evicted = self.act(act);
            } else {
                self.said_nothing_to_evict = false;
            }
            period = if evicted {
                Duration::ZERO
            } else if !step.met.is_empty() || self.policy.near(&observed, 0.5) {
                BUSY_PERIOD
            } else {
                IDLE_PERIOD
            };
        }
    }

    fn note<T>(&mut self, signal: Signal, r: Result<T, impl std::fmt::Display>) -> Option<T> {
        match r {
            Ok(v) => {
                self.failing.remove(&signal);
                Some(v)
            }
            Err(e) => {
                if self.failing.insert(signal) {
                    tracing::warn!(signal = signal.as_str(), error = %e, "cannot read an eviction signal; it is not watched until it can be read again");
                }
                None
            }
        }
    }

    /// Read every signal; one that cannot be read is left out (never met).
    pub fn observe(&mut self) -> Observations {
        let mut o = Observations::new();
        let node = signals::node_memory(&self.paths.meminfo);
        if let Some(m) = self.note(Signal::MemoryAvailable, node) {
            o.insert(Signal::MemoryAvailable, obs(m.available(), m.capacity));
        }
        let pods = self.ctx.cgroups.memory_sample(&self.kubepods);
        if let Some(m) = self.note(Signal::AllocatableMemoryAvailable, pods) {
            // kubelet: allocatable capacity (capacity minus reservations) minus the pods'
            // working set, whatever limit the cgroup shows.
            let cap = self.ctx.resources.pods_memory_limit.max(0) as u64;
            o.insert(
                Signal::AllocatableMemoryAvailable,
                obs(cap.saturating_sub(m.working_set), cap),
            );
        }
        let pids = signals::node_pids(&self.paths.pid_max, &self.paths.loadavg);
        if let Some(p) = self.note(Signal::PidAvailable, pids) {
            o.insert(Signal::PidAvailable, obs(p.available(), p.max));
        }
        let nodefs = signals::fs_sample(&self.paths.nodefs);
        if let Some(f) = self.note(Signal::NodeFsAvailable, nodefs) {
            o.insert(Signal::NodeFsAvailable, obs(f.available, f.capacity));
            o.insert(Signal::NodeFsInodesFree, obs(f.inodes_free, f.inodes));
        }
        let imagefs = signals::fs_sample(&self.paths.imagefs);
        if let Some(f) = self.note(Signal::ImageFsAvailable, imagefs) {
            o.insert(Signal::ImageFsAvailable, obs(f.available, f.capacity));
            o.insert(Signal::ImageFsInodesFree, obs(f.inodes_free, f.inodes));
        }
        o
    }

    fn announce(
        &self,
        conditions: &std::collections::BTreeMap<Condition, super::policy::ConditionState>,
    ) {
        let before = self.ctx.conditions();
        for (c, s) in conditions {
            if before.get(c).map(|b| b.active) == Some(s.active) {
                continue;
            }
            let reason = match (c, s.active) {
                (Condition::MemoryPressure, true) => "NodeHasInsufficientMemory",
                (Condition::MemoryPressure, false) => "NodeHasSufficientMemory",
                (Condition::DiskPressure, true) => "NodeHasDiskPressure",
                (Condition::DiskPressure, false) => "NodeHasNoDiskPressure",
                (Condition::PIDPressure, true) => "NodeHasInsufficientPID",
                (Condition::PIDPressure, false) => "NodeHasSufficientPID",
            };
            if s.active {
                tracing::warn!(condition = c.as_str(), message = %s.message, "node condition raised");
            } else {
                tracing::info!(condition = c.as_str(), "node condition cleared");
            }
            self.ctx.node_event(
                s.active,
                reason,
                format!("Node status is now: {reason} ({})", s.message),
            );
        }
    }

    /// The running pods as ranking sees them, with what `evict` needs.
    fn candidates(&self, signal: Signal) -> Vec<(PodStats, Victim)> {
        let mut out = Vec::new();
        for v in self.ctx.shared.list() {
            if v.cgroup.is_empty() {
                continue;
            }
            let uid = v.pod.metadata.uid.clone().unwrap_or_default();
            if self.ctx.eviction_notice(&uid).is_some() {
                continue;
            }
            let spec = crate::pod::layout::spec(&v.pod);
            let memory = match self.ctx.cgroups.memory_sample(&v.cgroup) {
                Ok(m) => m.working_set,
                Err(e) if e.is_gone() => continue,
                Err(e) => {
                    tracing::debug!(cgroup = %v.cgroup, error = %e, "pod memory unreadable");
                    0
                }
            };
            let pids = if signal == Signal::PidAvailable {
                self.ctx
                    .cgroups
                    .pids(&v.cgroup)
                    .map(|p| p.len() as u64)
                    .unwrap_or(0)
            } else {
                0
            };
            let plan = crate::pod::layout::plan(&self.ctx.cfg, &self.ctx.node, &v.pod);
            let disk = if signal.condition() == Condition::DiskPressure {
                tidelet_images::gc::tree_disk_bytes(&plan.pod_dir, DISK_WALK_MAX)
                    + tidelet_images::gc::tree_disk_bytes(&plan.log_dir, DISK_WALK_MAX)
            } else {
                0
            };
            let key = format!(
                "{}/{}",
                v.pod.metadata.namespace.as_deref().unwrap_or("default"),
                v.pod.metadata.name.as_deref().unwrap_or("")
            );
            out.push((
                PodStats {
                    key: key.clone(),
                    priority: rank::priority(spec),
                    critical: rank::is_critical(spec, v.pod.metadata.annotations.as_ref()),
                    memory,
                    memory_request: crate::qos::pod_requests(spec).1.max(0) as u64,
                    pids,
                    disk,
                    disk_request: ephemeral_request(spec),
                },
                Victim {
                    key,
                    uid,
                    cgroup: v.cgroup.clone(),
                    grace: Duration::from_secs(plan.grace_secs),
                },
            ));
        }
        out
    }

    /// Reclaim or evict for `act`. True when a pod was evicted.
    fn act(&mut self, act: Act) -> bool {
        let signal = act.threshold.signal;
        if signal.condition() == Condition::DiskPressure {
            let freed = (self.reclaim)(act.to_reclaim.max(0) as u64);
            if freed > 0 {
                tracing::info!(
                    signal = signal.as_str(),
                    freed,
                    "disk space reclaimed before evicting"
                );
                let again = self.observe();
                if again
                    .get(&signal)
                    .is_some_and(|o| o.available >= act.observation.available + act.to_reclaim)
                {
                    return false;
                }
            }
        }
        let cands = self.candidates(signal);
        let stats: Vec<PodStats> = cands.iter().map(|(s, _)| s.clone()).collect();
        let ranked = rank::rank(signal, &stats);
        let Some(first) = ranked.first() else {
            if !self.said_nothing_to_evict {
                tracing::warn!(
                    signal = signal.as_str(),
                    available = act.observation.available,
                    "threshold met but no pod may be evicted (none running, or all critical)"
                );
                self.said_nothing_to_evict = true;
            }
            return false;
        };
        let (stats, victim) = cands
            .iter()
            .find(|(s, _)| s.key == first.key)
            .expect("ranked from candidates");
        // Look again right before killing: the kernel's OOM killer (or the pod itself) may
        // have freed the memory since the observation; an eviction must then not happen, and
        // a pod the kernel killed must be reported as OOMKilled, never as evicted.
        if signal.condition() == Condition::MemoryPressure {
            let again = self.observe();
            let still = self.policy.config().thresholds.iter().any(|t| {
                t.signal == signal
                    && again
                        .get(&signal)
                        .is_some_and(|o| o.available < t.value.resolve(o.capacity))
            });
            if !still {
                tracing::info!(
                    signal = signal.as_str(),
                    "pressure gone before the eviction; nothing evicted"
                );
                return false;
            }
        }
        let threshold = act.threshold.value.resolve(act.observation.capacity);
        let usage = match signal.condition() {
            Condition::MemoryPressure => format!(
                "Pod was using {} of memory, request is {}.",
                mib(stats.memory as i64),
                mib(stats.memory_request as i64)
            ),
            Condition::PIDPressure => format!("Pod had {} processes.", stats.pids),
            Condition::DiskPressure => format!(
                "Pod was using {} of local storage, request is {}.",
                mib(stats.disk as i64),
                mib(stats.disk_request as i64)
            ),
        };
        let (avail_s, thr_s) =
            if signal.resource() == "memory" || signal.resource() == "ephemeral-storage" {
                (mib(act.observation.available), mib(threshold))
            } else {
                (act.observation.available.to_string(), threshold.to_string())
            };
        let message = format!(
            "The node was low on resource: {}. Threshold quantity: {thr_s}, available: {avail_s} ({}). {usage}",
            signal.resource(),
            signal.as_str()
        );
        self.evict(victim, signal, act.threshold.hard, message, stats.memory);
        true
    }

    fn evict(&mut self, v: &Victim, signal: Signal, hard: bool, message: String, memory: u64) {
        let started = Instant::now();
        self.ctx.record_eviction(EvictNotice::new(
            &v.key,
            &v.uid,
            signal.condition(),
            message.clone(),
            self.ctx.mono(),
        ));
        // Hard thresholds kill at once: on a board without swap, waiting is what lets the
        // kernel's OOM killer act first. Soft ones give the pod up to
        // evictionMaxPodGracePeriod (capped by its own grace period) to stop.
        let grace = if hard {
            Duration::ZERO
        } else {
            v.grace.min(self.policy.config().max_pod_grace_period)
        };
        if !grace.is_zero() {
            self.terminate_gracefully(v, grace);
        }
        let killed = self.ctx.cgroups.kill_all(&v.cgroup);
        let gone_after = started.elapsed();
        match &killed {
            Ok(()) => {
                tracing::warn!(pod = %v.key, uid = %v.uid, signal = signal.as_str(), %message, killed_in_ms = gone_after.as_secs_f64() * 1e3, "pod evicted")
            }
            Err(e) => {
                tracing::error!(pod = %v.key, signal = signal.as_str(), error = %e, "evicting pod: not every process could be killed")
            }
        }
        self.ctx
            .node_event(true, "Evicted", format!("Evicted pod {}: {message}", v.key));
        // Wait for reclaim: the victim's memory is uncharged as its processes' memory is torn
        // down; looking again before that would evict a second pod for the same shortage.
        let wait_from = Instant::now();
        while wait_from.elapsed() < RECLAIM_WAIT {
            match self.ctx.cgroups.memory_sample(&v.cgroup) {
                Ok(m) if m.working_set > memory / 10 + (1 << 20) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => break,
            }
        }
    }

    /// SIGTERM the pod's containers (not its infra process), then wait up to `grace` for them.
    fn terminate_gracefully(&self, v: &Victim, grace: Duration) {
        let infra = format!("{}/{}", v.cgroup, crate::pod::layout::INFRA_CGROUP);
        let keep: Vec<i32> = self.ctx.cgroups.pids(&infra).unwrap_or_default();
        let targets = |cg: &dyn crate::cgroups::Cgroups| -> Vec<i32> {
            cg.pids(&v.cgroup)
                .unwrap_or_default()
                .into_iter()
                .filter(|p| !keep.contains(p))
                .collect()
        };
        for pid in targets(&*self.ctx.cgroups) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let until = Instant::now() + grace;
        while Instant::now() < until && !targets(&*self.ctx.cgroups).is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What eviction needs to act on a pod.
#[derive(Debug, Clone)]
struct Victim {
    key: String,
    uid: String,
    cgroup: String,
    grace: Duration,
}

fn ephemeral_request(spec: &k8s_openapi::api::core::v1::PodSpec) -> u64 {
    spec.containers
        .iter()
        .filter_map(|c| {
            c.resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("ephemeral-storage")
        })
        .filter_map(|q| crate::quantity::parse_units(&q.0).ok())
        .sum::<i64>()
        .max(0) as u64
}
