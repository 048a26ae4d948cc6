//! The eviction monitor: one thread that watches the node's signals and evicts.
//!
//! Why a thread of its own and not a task on the runtime: the point is to act within a few
//! milliseconds of the kernel's notification, also when the runtime's two worker threads are
//! busy, and its work (`poll(2)`, reading small kernel files, SIGKILL, waiting for the cgroup
//! to empty) is blocking anyway.
//!
//! Every round (`Monitor::round`): read every signal, let `policy` decide, publish the node
//! conditions, and when a threshold is to be acted on: under disk pressure reclaim first
//! (image GC, dead containers' logs), then rank the pods and evict one; wait until its memory
//! is released. The round says when to look again (`next_look`); between rounds the thread
//! waits for that long or for a kernel trigger (PSI, the v1 usage threshold of `kubepods`, v2
//! `memory.events`), whichever comes first.
//!
//! Everything the monitor needs from the agent comes through `EvictionHost` (`host.rs`), so
//! its rounds run in tests against fakes (`monitor_tests.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::config::{Condition, Signal};
use super::host::{EvictNotice, EvictionHost};
use super::policy::{self, Act, ConditionState, Now, Observation, Observations, Policy};
use super::rank::{self, PodStats};
use crate::signals;

/// How often the signals are read when nothing is near a threshold. Cheap: a few small files.
pub const IDLE_PERIOD: Duration = Duration::from_secs(1);
/// How often while a threshold is near or met.
pub const BUSY_PERIOD: Duration = Duration::from_millis(100);
/// How often while watching after a kernel trigger (see `WATCH_WINDOW`). The working set of
/// a growing workload can cross a threshold for a millisecond or two and fall back under it
/// for hundreds (a process of the workload exiting; seen in `scripts/bench-eviction.sh`):
/// looks every 5 ms missed such a crossing in one or two repetitions of ten, and the decision
/// then came with the next step of the workload, about 200 ms later. A look of the watch
/// reads the memory signals only (`quick_look`), a few small kernel files, so looking every
/// millisecond for the watch's second costs a few percent of one core, and only while memory
/// is close to a threshold.
pub const WATCH_PERIOD: Duration = Duration::from_millis(1);
/// How long the signals a quick look does not read (PIDs, file systems) stand, read at the
/// last full look: the pace the monitor reads them at under pressure anyway.
pub const FULL_LOOK_EVERY: Duration = BUSY_PERIOD;
/// How long the monitor keeps looking every `WATCH_PERIOD` after a kernel trigger woke it,
/// while a threshold is near. A trigger says that memory is moving across the line *now*; the
/// working set can cross a threshold by a few pages and fall back before the look it caused
/// (a process of the workload exiting), and nothing wakes the monitor again when it crosses
/// once more: the v1 usage threshold fired already, PSI does not fire before memory is short.
/// Watching closely for a while turns "the next timer" (100 ms) into a few milliseconds.
pub const WATCH_WINDOW: Duration = Duration::from_secs(1);
/// Where the v1 usage threshold is moved to: this much below the usage at which the pods'
/// working set meets the hard threshold (`v1_placement`), so that a small shrinking of the
/// file cache does not make it fire after the crossing.
pub const V1_EARLY: u64 = 512 << 10;
/// How far below the usage at which the working set meets the hard threshold with no file
/// cache (`wake_working_set`) the fixed v1 threshold, the floor, is registered (see
/// `signals::Triggers`). The kernel compares usage with v1 thresholds only every 128 page
/// events of each CPU (`THRESHOLDS_EVENTS_TARGET`): a workload that grows past the threshold by
/// less than that and stops is never reported (seen in scripts/bench-eviction.sh: 312 KiB over
/// it for 80 ms, no trigger). 2 MiB covers that batch (512 KiB) on four CPUs.
pub const FLOOR_EARLY: u64 = 2 << 20;
/// How far below that usage the registered threshold may be (as `inactive_file` grows)
/// before it is moved up. Moving costs the kernel an RCU grace period (the registration waits
/// in `synchronize_rcu`), so it is not moved for every page.
pub const V1_SLACK: u64 = 2 << 20;
/// The most directory entries read to size one pod's disk use (only under disk pressure).
const DISK_WALK_MAX: usize = 100_000;
/// The longest an eviction waits for the victim's memory to be released.
pub const RECLAIM_WAIT: Duration = Duration::from_secs(2);
/// How often the victim's memory is read while waiting for its release.
const RECLAIM_POLL: Duration = Duration::from_millis(5);
/// How often a gracefully terminated pod's processes are counted.
const GRACE_POLL: Duration = Duration::from_millis(50);

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

/// What one round saw and did, for the loop (when to look again) and for tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// The `kubepods` usage at which its working set would meet the hard memory threshold now
    /// (`limit - threshold + inactive_file`), when `kubepods` could be read: where the v1
    /// usage threshold belongs (`v1_placement`).
    pub v1_target: Option<u64>,
    /// The thresholds met at this look.
    pub met: Vec<Signal>,
    /// The threshold the policy decided to act on, if any.
    pub act: Option<Signal>,
    /// The pod evicted (`namespace/name`), if any.
    pub evicted: Option<String>,
    /// How long to wait (for a trigger at most) before the next look.
    pub next: Duration,
    /// Every signal was read (else the memory signals only: `quick_look`).
    pub full: bool,
}

/// What decides how soon the monitor looks again (`next_look`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// A pod was evicted in this round (and its memory released, or the wait ran out).
    pub evicted: bool,
    /// A threshold is met or near (`Policy::near`).
    pub pressure: bool,
    /// Within `WATCH_WINDOW` of the last kernel trigger.
    pub watching: bool,
    /// A threshold is to be acted on but no pod may be evicted (none running, all critical).
    pub no_victim: bool,
}

/// Whether a look at `now` may read the memory signals only and take the others from the full
/// look at `last_full`: only while watching after a trigger (memory is what a trigger is
/// about, and what moves within milliseconds), and only within `FULL_LOOK_EVERY` of it.
pub fn quick_look(watching: bool, last_full: Option<Duration>, now: Duration) -> bool {
    watching && last_full.is_some_and(|at| now >= at && now - at < FULL_LOOK_EVERY)
}

/// How long to wait before the next look: at once after an eviction (the next pod may have to
/// go too; the memory of this one is released already), `WATCH_PERIOD` under pressure while
/// watching after a trigger (unless there is nobody to evict), `BUSY_PERIOD` under pressure,
/// else `IDLE_PERIOD`.
pub fn next_look(p: Pace) -> Duration {
    if p.evicted {
        Duration::ZERO
    } else if p.pressure && p.watching && !p.no_victim {
        WATCH_PERIOD
    } else if p.pressure {
        BUSY_PERIOD
    } else {
        IDLE_PERIOD
    }
}

/// Where to move the v1 usage threshold of `kubepods`, registered at `registered`, given the
/// working set `wake` at which the hard threshold is met and the usage `target` at which the
/// working set gets there now (`wake + inactive_file`); `None` to leave it.
///
/// kubelet's memcg notifier does the same (`capacity - threshold + inactive_file`, updated as
/// it looks): a usage threshold at `wake` alone fires `inactive_file` bytes before the working
/// set gets there, and then never again while usage stays above, however long the working set
/// takes to follow. It is kept between `target - V1_SLACK` (early is harmless but for a wasted
/// look: the monitor watches after a trigger) and `target` (late would miss the crossing), and
/// never below `wake`: usage is never below the working set, so a threshold at `wake` can fire
/// early but never late.
pub fn v1_placement(registered: u64, wake: u64, target: u64) -> Option<u64> {
    if registered <= target && registered.saturating_add(V1_SLACK) >= target {
        return None;
    }
    let to = target.saturating_sub(V1_EARLY).max(wake).max(1);
    (to != registered).then_some(to)
}

pub struct Monitor {
    host: Arc<dyn EvictionHost>,
    policy: Policy,
    paths: Paths,
    kubepods: String,
    reclaim: DiskReclaim,
    /// The node conditions last published (the monitor is their only writer).
    published: BTreeMap<Condition, ConditionState>,
    /// The last reading of `kubepods`' memory.
    pods_memory: Option<signals::MemorySample>,
    /// Until when (monotonic) the last kernel trigger keeps the monitor watching.
    watch_until: Option<Duration>,
    /// When the last full look read every signal, and what it read (`quick_look`).
    last_full: Option<(Duration, Observations)>,
    /// Signals whose reading failed, so that a failure is logged once, not every second.
    failing: BTreeSet<Signal>,
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
    pub fn new(host: Arc<dyn EvictionHost>, paths: Paths, reclaim: DiskReclaim) -> Monitor {
        let started = host.started_wall_ns();
        let policy = Policy::new(host.eviction_config().clone(), started);
        let kubepods = host.kubepods_cgroup();
        Monitor {
            host,
            policy,
            paths,
            kubepods,
            reclaim,
            published: policy::initial_conditions(started),
            pods_memory: None,
            watch_until: None,
            last_full: None,
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
            mono: self.host.mono(),
            wall_ns: self.host.wall_ns(),
        }
    }

    /// The pods' working set at which the hard memory threshold is met (`kubepods` limit minus
    /// the largest `allocatableMemory.available` threshold).
    pub fn wake_working_set(&self) -> u64 {
        let limit = self.host.pods_memory_limit();
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

    /// The `kubepods` usage at which its working set meets the hard memory threshold, given
    /// the `inactive_file` of `sample` (usage minus working set).
    fn v1_target(&self, sample: &signals::MemorySample) -> u64 {
        let inactive = sample.usage.saturating_sub(sample.working_set);
        self.wake_working_set().saturating_add(inactive)
    }

    fn run(mut self) {
        let files = self.host.cgroups().memory_files(&self.kubepods);
        // The floor, and the moving threshold until the first look: below the working set's
        // own threshold (usage >= working set, so it fires before the crossing).
        let wake_ws = self.wake_working_set();
        let floor = wake_ws.saturating_sub(FLOOR_EARLY).max(1);
        let spec = signals::TriggerSpec::for_cgroup(&files, &self.paths.psi, floor);
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
        let mut next = IDLE_PERIOD;
        // A failed move is logged once until a move works again.
        let mut move_failed = false;
        loop {
            let wake = triggers.wait(next);
            for w in triggers.take_lost() {
                tracing::warn!("{w}");
            }
            let round = self.round(wake);
            next = round.next;
            if let Some(to) = round
                .v1_target
                .zip(triggers.v1_threshold())
                .and_then(|(target, at)| v1_placement(at, wake_ws, target))
            {
                match triggers.set_v1_threshold(to) {
                    Ok(()) => {
                        move_failed = false;
                        if let Some(watch) = self.moved_threshold(to) {
                            next = next.min(watch);
                        }
                    }
                    // The old threshold stays; the watch and the timers still look.
                    Err(e) if !move_failed => {
                        move_failed = true;
                        tracing::warn!(error = %e, "cannot move the v1 memory threshold");
                    }
                    Err(_) => {}
                }
            }
        }
    }

    /// The v1 usage threshold was just moved to `to`. The kernel tells of a crossing only if
    /// usage crosses `to` after the move: when it rose past `to` between this round's reading
    /// and the move (a workload growing by megabytes in milliseconds), no trigger would come,
    /// and the crossing would wait for a timer. So usage is read once more: at or above `to`,
    /// the monitor watches as after a trigger, and this returns when to look next.
    pub fn moved_threshold(&mut self, to: u64) -> Option<Duration> {
        let usage = self
            .host
            .cgroups()
            .memory_sample(&self.kubepods)
            .ok()?
            .usage;
        if usage < to {
            return None;
        }
        self.watch_until = Some(self.host.mono() + WATCH_WINDOW);
        Some(WATCH_PERIOD)
    }

    /// One look: read the signals, decide, publish, act. `wake` says what ended the wait
    /// before it (a kernel trigger starts a `WATCH_WINDOW`).
    pub fn round(&mut self, wake: signals::Wake) -> Round {
        let now = self.now();
        if !wake.timed_out() {
            self.watch_until = Some(now.mono + WATCH_WINDOW);
        }
        let watching = self.watch_until.is_some_and(|until| now.mono < until);
        let quick = quick_look(watching, self.last_full.as_ref().map(|f| f.0), now.mono);
        let observed = match self.last_full.as_ref().filter(|_| quick) {
            Some((_, full)) => {
                let mut o = full.clone();
                self.observe_memory(&mut o);
                o
            }
            None => {
                let o = self.observe();
                self.last_full = Some((now.mono, o.clone()));
                o
            }
        };
        let step = self.policy.step(now, &observed);
        if step.changed {
            self.announce(&step.conditions);
        }
        self.published = step.conditions.clone();
        self.host.set_conditions(step.conditions);
        let mut round = Round {
            v1_target: None,
            met: step.met.iter().map(|t| t.signal).collect(),
            act: step.act.as_ref().map(|a| a.threshold.signal),
            evicted: None,
            next: Duration::ZERO,
            full: !quick,
        };
        if let Some(act) = step.act {
            tracing::debug!(
                ?wake,
                signal = act.threshold.signal.as_str(),
                available = act.observation.available,
                "threshold met"
            );
            round.evicted = self.act(act);
        } else {
            self.said_nothing_to_evict = false;
        }
        round.next = next_look(Pace {
            evicted: round.evicted.is_some(),
            pressure: !round.met.is_empty() || self.policy.near(&observed, 0.5),
            watching,
            no_victim: self.said_nothing_to_evict,
        });
        // From the latest reading (an eviction reads again, and frees memory).
        round.v1_target = self.pods_memory.map(|m| self.v1_target(&m));
        round
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
        self.observe_memory(&mut o);
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

    /// Read the memory signals into `o` (empty, or a copy of the last full look's for a quick
    /// one); one that cannot be read is taken out (never met).
    fn observe_memory(&mut self, o: &mut Observations) {
        o.remove(&Signal::MemoryAvailable);
        o.remove(&Signal::AllocatableMemoryAvailable);
        let node = signals::node_memory(&self.paths.meminfo);
        if let Some(m) = self.note(Signal::MemoryAvailable, node) {
            o.insert(Signal::MemoryAvailable, obs(m.available(), m.capacity));
        }
        let pods = self.host.cgroups().memory_sample(&self.kubepods);
        self.pods_memory = pods.as_ref().ok().copied();
        if let Some(m) = self.note(Signal::AllocatableMemoryAvailable, pods) {
            // kubelet: allocatable capacity (capacity minus reservations) minus the pods'
            // working set, whatever limit the cgroup shows.
            let cap = self.host.pods_memory_limit().max(0) as u64;
            o.insert(
                Signal::AllocatableMemoryAvailable,
                obs(cap.saturating_sub(m.working_set), cap),
            );
        }
    }

    /// A log line and a node event for every condition whose state changed since the last
    /// publication.
    fn announce(&self, conditions: &BTreeMap<Condition, ConditionState>) {
        for (c, s) in conditions {
            if self.published.get(c).map(|b| b.active) == Some(s.active) {
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
            self.host.node_event(
                s.active,
                reason,
                format!("Node status is now: {reason} ({})", s.message),
            );
        }
    }

    /// The running pods as ranking sees them, with what `evict` needs.
    fn candidates(&self, signal: Signal) -> Vec<(PodStats, Victim)> {
        let cgroups = self.host.cgroups();
        let mut out = Vec::new();
        for v in self.host.pods() {
            if v.cgroup.is_empty() {
                continue;
            }
            let uid = v.pod.metadata.uid.clone().unwrap_or_default();
            if self.host.evicted(&uid) {
                continue;
            }
            let spec = crate::pod::layout::spec(&v.pod);
            let memory = match cgroups.memory_sample(&v.cgroup) {
                Ok(m) => m.working_set,
                Err(e) if e.is_gone() => continue,
                Err(e) => {
                    tracing::debug!(cgroup = %v.cgroup, error = %e, "pod memory unreadable");
                    0
                }
            };
            let pids = if signal == Signal::PidAvailable {
                cgroups.pids(&v.cgroup).map(|p| p.len() as u64).unwrap_or(0)
            } else {
                0
            };
            let plan = self.host.plan(&v.pod);
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

    /// Reclaim or evict for `act`. The pod evicted, if one was.
    fn act(&mut self, act: Act) -> Option<String> {
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
                    return None;
                }
            }
        }
        let cands = self.candidates(signal);
        let stats: Vec<PodStats> = cands.iter().map(|(s, _)| s.clone()).collect();
        let ranked = rank::rank(signal, &stats);
        let Some((stats, victim)) = ranked
            .first()
            .and_then(|first| cands.iter().find(|(s, _)| s.key == first.key))
        else {
            if !self.said_nothing_to_evict {
                tracing::warn!(
                    signal = signal.as_str(),
                    available = act.observation.available,
                    "threshold met but no pod may be evicted (none running, or all critical)"
                );
                self.said_nothing_to_evict = true;
            }
            return None;
        };
        self.said_nothing_to_evict = false;
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
                return None;
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
        Some(victim.key.clone())
    }

    fn evict(&mut self, v: &Victim, signal: Signal, hard: bool, message: String, memory: u64) {
        let started = self.host.mono();
        self.host.record_eviction(EvictNotice::new(
            &v.key,
            &v.uid,
            signal.condition(),
            message.clone(),
            started,
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
        let killed = self.host.cgroups().kill_all(&v.cgroup);
        let gone_after = self.host.mono().saturating_sub(started);
        match &killed {
            Ok(()) => {
                tracing::warn!(pod = %v.key, uid = %v.uid, signal = signal.as_str(), %message, killed_in_ms = gone_after.as_secs_f64() * 1e3, "pod evicted")
            }
            Err(e) => {
                tracing::error!(pod = %v.key, signal = signal.as_str(), error = %e, "evicting pod: not every process could be killed")
            }
        }
        self.host
            .node_event(true, "Evicted", format!("Evicted pod {}: {message}", v.key));
        // Wait for reclaim: the victim's memory is uncharged as its processes' memory is torn
        // down; looking again before that would evict a second pod for the same shortage.
        let wait_from = self.host.mono();
        while self.host.mono().saturating_sub(wait_from) < RECLAIM_WAIT {
            match self.host.cgroups().memory_sample(&v.cgroup) {
                Ok(m) if m.working_set > memory / 10 + (1 << 20) => self.host.sleep(RECLAIM_POLL),
                _ => break,
            }
        }
    }

    /// SIGTERM the pod's containers (not its infra process), then wait up to `grace` for them.
    fn terminate_gracefully(&self, v: &Victim, grace: Duration) {
        let cgroups = self.host.cgroups();
        let infra = format!("{}/{}", v.cgroup, crate::pod::layout::INFRA_CGROUP);
        let keep: Vec<i32> = cgroups.pids(&infra).unwrap_or_default();
        let targets = || -> Vec<i32> {
            cgroups
                .pids(&v.cgroup)
                .unwrap_or_default()
                .into_iter()
                .filter(|p| !keep.contains(p))
                .collect()
        };
        for pid in targets() {
            self.host.terminate(pid);
        }
        let until = self.host.mono() + grace;
        while self.host.mono() < until && !targets().is_empty() {
            self.host.sleep(GRACE_POLL);
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

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;
