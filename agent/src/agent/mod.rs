//! The agent: sources -> reconcile -> pod workers, plus the local API.
//!
//! The main loop owns the static-pod directory and the map of pod workers. On every change
//! notification (and on the periodic rescan) it recomputes the desired set and tells each
//! worker its pod (a `watch` channel: the latest value wins). Workers own everything else.

mod eviction_host;
pub mod prepare;
pub mod remote;
mod status_source;
pub mod supervision;

pub mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::cgroups::Cgroups;
use crate::config::Config;
use crate::eviction::admission::{Admission, Candidate, Gate};
use crate::eviction::allocatable::{NodeResources, Requests};
use crate::eviction::config::Condition;
use crate::eviction::host::EvictNotice;
use crate::eviction::policy::ConditionState;
use crate::node::{self, Node};
use crate::pod::events::Events;
use crate::pod::layout;
use crate::pod::view::Shared;
use crate::reconcile::{self, Action, Told};
use crate::source::{DesiredSet, StaticDir};
use worker::{Assigned, PodRecord, Worker};

/// The longest `run` waits for the workers' adoption before it reports ready.
const ADOPTION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What every worker shares.
pub struct Ctx {
    pub cfg: Config,
    pub node: Node,
    pub store: tidelet_images::Store,
    pub cgroups: Arc<dyn Cgroups>,
    pub shared: Shared,
    /// The tidelet binary, started as `tidelet shim` for each pod.
    pub exe: PathBuf,
    /// Exclusive CPUs (`cpuManagerPolicy: static`); `None` with policy `none`.
    pub cpu: Option<Arc<crate::cpumanager::CpuManager>>,
    /// Device plugins: extended resources, their allocations, CDI.
    pub devices: Arc<crate::devices::Manager>,
    /// Seccomp profiles (RuntimeDefault and `seccompProfileRoot`), compiled once each.
    pub profiles: crate::security::profiles::Profiles,
    /// Host id ranges of the pods with `hostUsers: false`.
    pub userns: crate::security::userns::Allocator,
    /// Pod networks (CNI).
    pub net: crate::net::Network,
    /// Capacity, allocatable and the `kubepods` limits.
    pub resources: NodeResources,
    pub started: Instant,
    pub started_ns: i64,
    /// Pods the eviction monitor evicted, by UID, until they are admitted again; the flag
    /// says admission has taken the notice in.
    evictions: Mutex<BTreeMap<String, (EvictNotice, bool)>>,
    conditions: Mutex<BTreeMap<Condition, ConditionState>>,
    node_events: Mutex<Events>,
    /// Every desired pod, admitted or not: their images are in use for image GC even before
    /// their workers publish them.
    desired: Mutex<Vec<k8s_openapi::api::core::v1::Pod>>,
    /// Wakes the main loop (an eviction, a condition change or an idle worker to act on).
    wake: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ctx {
    /// Monotonic time since the agent started.
    pub fn mono(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn eviction_notice(&self, uid: &str) -> Option<EvictNotice> {
        lock(&self.evictions).get(uid).map(|(n, _)| n.clone())
    }

    pub fn conditions(&self) -> BTreeMap<Condition, ConditionState> {
        lock(&self.conditions).clone()
    }

    pub fn active_conditions(&self) -> BTreeSet<Condition> {
        lock(&self.conditions)
            .iter()
            .filter(|(_, s)| s.active)
            .map(|(c, _)| *c)
            .collect()
    }

    /// Publish the node conditions; the main loop is woken when one changed (admission
    /// depends on them).
    pub fn set_conditions(&self, c: BTreeMap<Condition, ConditionState>) {
        let mut cur = lock(&self.conditions);
        let changed = cur
            .iter()
            .any(|(k, v)| c.get(k).map(|n| n.active) != Some(v.active));
        *cur = c;
        drop(cur);
        if changed {
            self.wake.notify_one();
            self.shared.touch();
        }
    }

    pub fn node_event(&self, warning: bool, reason: &str, message: String) {
        lock(&self.node_events).push(warning, reason, message, crate::clock::now_ns());
        self.shared.touch();
    }

    /// The images the agent's pods use (desired ones, and any still published), for image GC.
    pub fn images_in_use(&self) -> crate::gc::InUse {
        let desired = lock(&self.desired).clone();
        let views = self.shared.list();
        crate::gc::images_in_use(desired.iter().chain(views.iter().map(|v| &v.pod)))
    }

    pub fn node_events(&self) -> Events {
        lock(&self.node_events).clone()
    }

    /// The node as a Kubernetes object.
    pub fn node_object(&self) -> k8s_openapi::api::core::v1::Node {
        let mut n = node::node_object(
            &self.node,
            &self.resources,
            &self.conditions(),
            self.started_ns,
            crate::clock::now_ns(),
        );
        node::add_extended(&mut n, &self.devices.counts());
        if let Some(why) = self.net.not_ready() {
            node::set_not_ready(&mut n, &crate::net::not_ready_message(&why));
        }
        n
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: another tidelet is already using this root directory")]
    Locked { path: PathBuf },
    #[error(transparent)]
    Cgroups(#[from] crate::cgroups::Error),
    #[error(transparent)]
    Images(#[from] tidelet_images::Error),
    #[error(transparent)]
    Cpu(#[from] crate::cpumanager::Error),
    #[error(transparent)]
    ConfigFile(#[from] crate::config::ConfigError),
    #[error("watching {path}: {message}")]
    Watch { path: PathBuf, message: String },
    /// The user-namespace state cannot be read (forgetting it could give a held id range to
    /// a second pod).
    #[error("user namespaces: {0}")]
    Userns(String),
    #[error("{file}: {field}: {reason}")]
    Config {
        file: String,
        field: String,
        reason: String,
    },
}

struct WorkerHandle {
    tx: watch::Sender<Option<Assigned>>,
    gone: watch::Receiver<bool>,
}

pub struct Agent {
    ctx: Arc<Ctx>,
    source: StaticDir,
    workers: BTreeMap<String, WorkerHandle>,
    told: BTreeMap<String, Told>,
    /// Problems of the last scan that are not a file's own parse errors (those are logged
    /// when the file is read): duplicates across files. Logged once when they appear.
    cross_file_errors: Vec<crate::manifest::Problem>,
    admission: Admission,
    /// When admission wants another look (an evicted pod's back-off ends).
    recheck_at: Option<tokio::time::Instant>,
    /// The QoS-tier cgroup values last written.
    qos_applied: Option<crate::qos::QosCgroups>,
    /// MQTT (`None`: local-only) and the desired pods it brings.
    mqtt: Option<crate::mqtt::MqttConfig>,
    remote: Option<remote::Remote>,
    /// The device manager's notices, read by a task of `run`.
    device_notices: Option<tokio::sync::mpsc::Receiver<crate::devices::Notice>>,
    /// Restarts the agent's tasks after a panic (see `supervision`).
    sup: crate::supervise::Supervisor,
    _lock: std::fs::File,
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The agent's directories, and its lock on the root directory: two agents on one root
/// would adopt and tear down each other's pods.
fn lock_root(cfg: &Config) -> Result<std::fs::File, AgentError> {
    for d in [
        cfg.root_dir.clone(),
        cfg.pods_dir(),
        cfg.logs_dir(),
        cfg.images_dir(),
        cfg.static_pod_path.clone(),
    ] {
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    let lock_path = cfg.root_dir.join("tidelet.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        return Err(AgentError::Locked { path: lock_path });
    }
    Ok(lock)
}

/// Where pods' cgroups go. cgroup v2 under systemd: inside the delegated unit when systemd
/// started tidelet in its leaf (DelegateSubgroup=), else beside the unit (see
/// cgroups::delegation); the controllers they need are checked there.
fn pods_cgroup_root(cfg: &Config, cgroups: &dyn Cgroups) -> Result<String, AgentError> {
    let placement = crate::cgroups::delegation::setup(
        &cfg.cgroup_mount,
        cgroups.version(),
        &cfg.cgroup_root,
        crate::cgroups::delegation::under_systemd(
            std::env::var("NOTIFY_SOCKET").ok().as_deref(),
            std::env::var("INVOCATION_ID").ok().as_deref(),
        ),
        std::path::Path::new("/proc/self/cgroup"),
    )?;
    Ok(format!("/{}", placement.pods_root))
}

/// Capacity, the reservations and eviction thresholds, and what is left for pods
/// (kubelet's node allocatable). A reservation that does not fit names the config file.
fn allocatable(cfg: &Config, node: &Node) -> Result<NodeResources, AgentError> {
    let capacity = crate::eviction::allocatable::Resources {
        cpu_milli: node.cpus as i64 * 1000,
        memory: node.memory_capacity,
        pods: cfg.max_pods,
        ephemeral_storage: node::fs_capacity(&cfg.root_dir),
    };
    // kubelet: `reservedSystemCPUs` replaces the cpu of systemReserved and kubeReserved.
    let (mut system_reserved, mut kube_reserved) = (cfg.system_reserved, cfg.kube_reserved);
    if let Some(cpus) = &cfg.reserved_system_cpus {
        system_reserved.cpu_milli = cpus.len() as i64 * 1000;
        kube_reserved.cpu_milli = 0;
    }
    let resources = crate::eviction::allocatable::node_resources(
        capacity,
        node::pid_max(std::path::Path::new("/proc/sys/kernel/pid_max")),
        &system_reserved,
        &kube_reserved,
        &cfg.eviction,
    )
    .map_err(|e| AgentError::Config {
        file: cfg
            .config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "configuration".into()),
        field: e.field,
        reason: e.reason,
    })?;
    tracing::info!(
        memory_capacity = resources.capacity.memory,
        memory_allocatable = resources.allocatable.memory,
        kubepods_memory_limit = resources.pods_memory_limit,
        cpu_allocatable_milli = resources.allocatable.cpu_milli,
        "node allocatable"
    );
    Ok(resources)
}

/// kubelet's node allocatable enforcement: `kubepods` gets capacity minus reservations (not
/// minus the eviction threshold: that gap is where eviction acts first), and its QoS tiers.
fn enforce_allocatable(
    cfg: &Config,
    cgroups: &dyn Cgroups,
    resources: &NodeResources,
) -> Result<(), AgentError> {
    cgroups.apply(
        &cfg.kubepods_cgroup(),
        &crate::cgroups::Resources {
            memory_limit: Some(resources.pods_memory_limit),
            cpu_shares: Some(crate::qos::milli_cpu_to_shares(resources.pods_cpu_milli)),
            pids_limit: resources.pods_pids_limit,
            ..Default::default()
        },
    )?;
    for q in ["burstable", "besteffort"] {
        cgroups.apply(
            &format!("{}/{q}", cfg.kubepods_cgroup()),
            &Default::default(),
        )?;
    }
    Ok(())
}

/// What the host lacks that pods will miss, said at start so that the cause is in the log
/// before the first pod fails on it.
fn warn_about_the_host(node: &Node) {
    if !node.can_lower_oom_score {
        tracing::warn!("no CAP_SYS_RESOURCE: negative oom_score_adj values (Guaranteed pods, infra processes) cannot be applied; those processes keep score 0");
    }
    // Not an error yet: the first overlay mount makes the kernel load the module.
    if let Ok(fs) = std::fs::read_to_string("/proc/filesystems") {
        if !crate::runtime::rootfs::overlay_listed(&fs) {
            tracing::warn!(
                "overlay is not in /proc/filesystems yet; if the kernel cannot load it, no container can start: {}",
                crate::runtime::rootfs::OVERLAY_MISSING
            );
        }
    }
}

impl Agent {
    /// Everything the agent needs before its loop runs, in order: its directories and lock,
    /// the cgroup hierarchy and where pods go in it, the CPU manager, the node and what it
    /// can give pods, the device manager, seccomp profiles, user-namespace ranges, MQTT.
    pub fn new(mut cfg: Config) -> Result<Agent, AgentError> {
        let lock = lock_root(&cfg)?;
        let cgroups: Arc<dyn Cgroups> =
            Arc::from(crate::cgroups::detect(&cfg.cgroup_mount, &cfg.mountinfo)?);
        // Checked before any cgroup is created: a bad reservation or checkpoint stops the start.
        let cpu = crate::cpumanager::CpuManager::from_options(
            &cfg.cpu_manager_options(),
            std::path::Path::new(crate::cpumanager::ONLINE_FILE),
            cgroups.clone(),
            layout::INFRA_CGROUP,
        )?
        .map(Arc::new);
        cfg.cgroup_root = pods_cgroup_root(&cfg, &*cgroups)?;
        let node = Node::detect(&cfg.node_name, cfg.node_ip.as_deref());
        let resources = allocatable(&cfg, &node)?;
        enforce_allocatable(&cfg, &*cgroups, &resources)?;
        let store = tidelet_images::Store::open(&cfg.images_dir())?;
        warn_about_the_host(&node);
        let mqtt = cfg.mqtt()?;
        let exe = std::fs::read_link("/proc/self/exe")
            .map_err(io(std::path::Path::new("/proc/self/exe")))?;
        let source = StaticDir::new(&cfg.static_pod_path, &cfg.node_name);
        let (notices, device_notices) = crate::devices::Notices::channel();
        let devices = crate::devices::Manager::new(cfg.devices.clone(), &cfg.root_dir, notices);
        let profiles = crate::security::profiles::Profiles::new(&cfg.seccomp_root());
        let userns = crate::security::userns::Allocator::open(
            cfg.userns.clone(),
            &cfg.root_dir.join("userns_state"),
        )
        .map_err(AgentError::Userns)?;
        let net = crate::net::Network::new(cfg.network_options());
        if let Err(why) = net.config() {
            tracing::warn!(reason = %why, "pod network not ready: pods without hostNetwork wait for it");
        }
        let ctx = Arc::new(Ctx {
            profiles,
            userns,
            net,
            cfg,
            node,
            store,
            cgroups,
            shared: Shared::default(),
            exe,
            resources,
            started: Instant::now(),
            started_ns: crate::clock::now_ns(),
            evictions: Mutex::new(BTreeMap::new()),
            conditions: Mutex::new(crate::eviction::policy::initial_conditions(
                crate::clock::now_ns(),
            )),
            node_events: Mutex::new(Events::default()),
            desired: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            cpu,
            devices,
        });
        let remote = mqtt.as_ref().map(|m| remote::Remote::open(&ctx, m));
        let sup = supervision::supervisor(&ctx);
        Ok(Agent {
            sup,
            ctx,
            source,
            workers: BTreeMap::new(),
            told: BTreeMap::new(),
            cross_file_errors: Vec::new(),
            admission: Admission::default(),
            recheck_at: None,
            qos_applied: None,
            mqtt,
            remote,
            device_notices: Some(device_notices),
            _lock: lock,
        })
    }

    pub fn ctx(&self) -> Arc<Ctx> {
        self.ctx.clone()
    }

    /// The supervisor of the agent's long-lived tasks, for those started outside it (the API).
    pub fn supervisor(&self) -> crate::supervise::Supervisor {
        self.sup.clone()
    }

    fn rescan(&mut self) -> DesiredSet {
        if let Err(e) = self.source.rescan() {
            tracing::error!(dir = %self.source.dir().display(), error = %e, "cannot read the static pod directory");
        }
        self.desired()
    }

    /// The desired set from what the sources hold now (no rescan): the static pods, and the
    /// remote pods no local file shadows.
    fn desired(&mut self) -> DesiredSet {
        let local = self.source.desired();
        match &mut self.remote {
            Some(r) => r.merge(local),
            None => local,
        }
    }

    /// Start the worker of `key`, told `initial` from the start: a worker that adopts pods
    /// must never see a transient "not desired" and tear down what it should keep. The
    /// receiver fires once it has adopted (or cleaned up) the pods `adopt` lists.
    ///
    /// Supervised: a worker that panics is replaced by a new one that adopts the key's pods
    /// from disk (`pod.json`, as after an agent restart) and reads the current desired pod
    /// from the same channel; the pod itself runs on under its supervisor meanwhile.
    fn spawn_worker(
        &mut self,
        key: &str,
        adopt: Vec<PodRecord>,
        initial: Option<Assigned>,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = watch::channel(initial);
        let (gone_tx, gone_rx) = watch::channel(false);
        let (adopted_tx, adopted_rx) = tokio::sync::oneshot::channel();
        let mut first = Some((adopt, adopted_tx));
        let (ctx, k) = (self.ctx.clone(), key.to_string());
        // A receiver, not the sender: the channel still closes when the agent drops the worker.
        crate::supervise::task(&self.sup, crate::supervise::Kind::Worker, key, move || {
            let restart = first.is_none();
            let (adopt, adopted) = first.take().unwrap_or_else(|| {
                let mut recs = worker::load_records(&ctx.cfg.pods_dir());
                recs.retain(|r| r.key == k);
                (recs, tokio::sync::oneshot::channel().0)
            });
            let w = Worker::new(
                ctx.clone(),
                k.clone(),
                rx.clone(),
                adopt,
                gone_tx.clone(),
                adopted,
            );
            if restart { w.restarted() } else { w }.run()
        });
        self.workers
            .insert(key.to_string(), WorkerHandle { tx, gone: gone_rx });
        adopted_rx
    }

    fn apply(&mut self, set: &DesiredSet) {
        let gates = self.admit(set);
        self.apply_admitted(set, gates);
    }

    /// `apply` with admission already decided (`gates`).
    fn apply_admitted(&mut self, set: &DesiredSet, gates: BTreeMap<String, Gate>) {
        let cross: Vec<_> = set
            .errors
            .iter()
            .filter(|e| e.field == "metadata.name" && e.reason.contains("already defined"))
            .cloned()
            .collect();
        for e in cross.iter().filter(|e| !self.cross_file_errors.contains(e)) {
            tracing::warn!(file = %e.file.display(), field = %e.field, reason = %e.reason, "static pod ignored");
        }
        self.cross_file_errors = cross;
        let desired: BTreeMap<String, Told> = set
            .pods
            .iter()
            .map(|(k, d)| {
                (
                    k.clone(),
                    Told {
                        uid: d.pod.uid.clone(),
                        file_errors: d.file_errors.clone(),
                        gate: gates.get(k).cloned().unwrap_or_default(),
                    },
                )
            })
            .collect();
        for action in reconcile::diff(&desired, &self.told) {
            match action {
                Action::Set { key } => {
                    let d = Assigned {
                        pod: set.pods[&key].clone(),
                        gate: desired[&key].gate.clone(),
                    };
                    tracing::debug!(pod = %key, uid = %d.pod.pod.uid, gate = ?d.gate, "desired");
                    match self.workers.get(&key) {
                        Some(w) => {
                            let _ = w.tx.send(Some(d));
                        }
                        None => {
                            self.spawn_worker(&key, vec![], Some(d));
                        }
                    }
                }
                Action::Remove { key } => {
                    if let Some(w) = self.workers.get(&key) {
                        let _ = w.tx.send(None);
                    }
                }
            }
        }
        self.told = desired;
        // Workers whose pod is gone and not wanted again are dropped (closing their channel).
        let told = &self.told;
        self.workers
            .retain(|k, w| told.contains_key(k) || !*w.gone.borrow());
    }

    /// Admission: which desired pods may run now (see `eviction::admission`). Evictions the
    /// monitor reported are taken in first; notices of pods admitted again are dropped.
    fn admit(&mut self, set: &DesiredSet) -> BTreeMap<String, Gate> {
        let now = self.ctx.mono();
        *lock(&self.ctx.desired) = set.pods.values().map(|d| d.pod.pod.clone()).collect();
        {
            let mut ev = lock(&self.ctx.evictions);
            for (n, recorded) in ev.values_mut().filter(|(_, r)| !*r) {
                self.admission
                    .evicted(&n.key, &n.uid, n.condition, &n.message, n.at);
                *recorded = true;
            }
        }
        let candidates: Vec<Candidate> = set
            .pods
            .iter()
            .map(|(k, d)| candidate(k, &d.pod.pod))
            .collect();
        let active = self.ctx.active_conditions();
        let decision =
            self.admission
                .decide(now, &candidates, &self.ctx.resources.allocatable, &active);
        self.recheck_at = decision
            .recheck_in
            .map(|d| tokio::time::Instant::now() + d + Duration::from_millis(10));
        self.apply_qos_cgroups(set, &decision.gates);
        lock(&self.ctx.evictions).retain(|_, (n, recorded)| {
            !*recorded
                || (set.pods.get(&n.key).is_some_and(|d| d.pod.uid == n.uid)
                    && decision.gates.get(&n.key) != Some(&Gate::Admitted))
        });
        decision.gates
    }

    /// kubelet's QoS-tier cgroups over the admitted pods: `besteffort` gets 2 cpu shares,
    /// `burstable` the shares of its pods' summed cpu requests. Written when they change.
    fn apply_qos_cgroups(&mut self, set: &DesiredSet, gates: &BTreeMap<String, Gate>) {
        let admitted = set
            .pods
            .iter()
            .filter(|(k, _)| gates.get(*k) == Some(&Gate::Admitted))
            .map(|(_, d)| layout::spec(&d.pod.pod));
        let q = crate::qos::qos_cgroup_resources(admitted);
        if self.qos_applied.as_ref() == Some(&q) {
            return;
        }
        let kubepods = self.ctx.cfg.kubepods_cgroup();
        for (tier, res) in [("burstable", &q.burstable), ("besteffort", &q.besteffort)] {
            if let Err(e) = self.ctx.cgroups.apply(&format!("{kubepods}/{tier}"), res) {
                tracing::warn!(tier, error = %e, "cannot set the QoS cgroup's cpu shares");
                return;
            }
        }
        self.qos_applied = Some(q);
    }

    /// The device manager: its notices become node events (a task), and its registration
    /// server starts. Without it pods run, but no plugin can register.
    fn start_devices(&mut self) {
        if let Some(rx) = self.device_notices.take() {
            tokio::spawn(device_notices(self.ctx.clone(), rx));
        }
        if let Err(e) = self.ctx.devices.serve(&self.sup) {
            self.ctx.node_event(
                true,
                "DevicePluginsUnavailable",
                format!("device plugins are off: {e}"),
            );
            tracing::error!(error = %e, "device plugins are off");
        }
    }

    /// The pods the state directory records, grouped by name and handed to their workers,
    /// which adopt or remove them, then every other desired pod. Returns once they are
    /// adopted (bounded): READY=1 means "the pods that were running are under control again":
    /// a unit ordered after tidelet, or `systemctl restart` in a script, can rely on it.
    /// Adoption only talks to local supervisors, so it is quick; the bound keeps a wedged one
    /// from holding start-up until systemd's start timeout kills the agent.
    async fn adopt_pods_on_disk(&mut self) -> DesiredSet {
        let set = self.rescan();
        let mut on_disk: BTreeMap<String, Vec<PodRecord>> = BTreeMap::new();
        for rec in worker::load_records(&self.ctx.cfg.pods_dir()) {
            on_disk.entry(rec.key.clone()).or_default().push(rec);
        }
        // Their network attachments are their workers' to adopt or DEL, not GC's.
        self.ctx.net.claim_all(
            on_disk
                .values()
                .flatten()
                .filter_map(|r| r.pod.metadata.uid.as_deref()),
        );
        let mut adopting = Vec::new();
        let gates = self.admit(&set);
        for (key, recs) in on_disk {
            let initial = set.pods.get(&key).cloned().map(|pod| Assigned {
                pod,
                gate: gates.get(&key).cloned().unwrap_or_default(),
            });
            adopting.push(self.spawn_worker(&key, recs, initial));
        }
        self.apply_admitted(&set, gates);
        let n = adopting.len();
        let all = async {
            for rx in adopting {
                let _ = rx.await;
            }
        };
        if tokio::time::timeout(ADOPTION_WAIT, all).await.is_err() {
            tracing::warn!(pods = n, wait = ?ADOPTION_WAIT, "adoption not finished; reporting ready anyway");
        } else if n > 0 {
            tracing::info!(pods = n, "pods found on disk adopted");
        }
        set
    }

    /// Pods deleted while the agent was down give their devices, host id ranges and
    /// exclusive CPUs back; network attachments no pod owns are DELeted (in the background:
    /// a plugin may take its time).
    fn release_what_pods_left(&self, set: &DesiredSet) {
        let ctx = self.ctx.clone();
        tokio::task::spawn_blocking(move || network_gc(&ctx));
        let active: BTreeSet<String> = set.pods.values().map(|d| d.pod.uid.clone()).collect();
        self.ctx.devices.retain(&active);
        self.ctx.userns.retain(&active);
        if let Some(cpu) = &self.ctx.cpu {
            if let Err(e) = cpu.remove_stale(&active) {
                tracing::error!(error = %e, "CPU manager: removing stale assignments");
            }
        }
    }

    /// The eviction monitor, on a supervised thread: after a panic a new monitor is made.
    /// Under disk pressure it first removes dead containers' logs, then unused images, least
    /// recently used first; pods known to the agent in any state keep theirs.
    fn start_monitor(&self) {
        let paths = crate::eviction::monitor::Paths::host(
            &self.ctx.cfg.root_dir,
            &self.ctx.cfg.images_dir(),
        );
        let gc_ctx = self.ctx.clone();
        let reclaim = move || -> crate::eviction::monitor::DiskReclaim {
            let gc_ctx = gc_ctx.clone();
            Box::new(move |need| {
                let in_use = gc_ctx.images_in_use();
                let r = crate::gc::reclaim_disk(
                    &gc_ctx.store,
                    &gc_ctx.cfg.logs_dir(),
                    &in_use,
                    need,
                    gc_ctx.cfg.image_minimum_gc_age,
                    std::time::SystemTime::now(),
                );
                if let Some(e) = &r.image_error {
                    tracing::warn!(error = %e, "image garbage collection did not run");
                }
                r.bytes
            })
        };
        let monitor_ctx = self.ctx.clone();
        let make_monitor = move || {
            crate::supervise::inject::fire("monitor", "");
            crate::eviction::monitor::Monitor::new(monitor_ctx.clone(), paths.clone(), reclaim())
        };
        if let Err(e) = crate::eviction::monitor::Monitor::spawn(make_monitor, &self.sup) {
            tracing::error!(error = %e, "cannot start the eviction monitor; pods run without eviction");
        }
    }

    /// Adopt what the state directory records, then reconcile forever. `ready` runs once the
    /// sources are read and the pods on disk handed to their workers; `watchdog`, if given,
    /// is called from this loop every period, so it stops when the loop is stuck or a
    /// supervised task is down.
    pub async fn run(
        mut self,
        mut shutdown: mpsc::Receiver<()>,
        ready: impl FnOnce(),
        watchdog: Option<(std::time::Duration, Box<dyn Fn() + Send>)>,
    ) -> Result<(), AgentError> {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let dir = self.ctx.cfg.static_pod_path.clone();
        let _watcher =
            crate::source::static_dir::watch(&dir, tx).map_err(|e| AgentError::Watch {
                path: dir.clone(),
                message: e.to_string(),
            })?;
        self.start_devices();
        let set = self.adopt_pods_on_disk().await;
        self.release_what_pods_left(&set);
        ready();
        let mut down = match (&mut self.remote, &self.mqtt) {
            (Some(r), Some(m)) => r.connect(&self.ctx, m, &self.sup),
            _ => None,
        };
        self.start_monitor();
        let (period, pet) = match watchdog {
            Some((p, f)) => (p, Some(f)),
            None => (std::time::Duration::from_secs(3600), None),
        };
        let Timers {
            mut beat,
            mut tick,
            mut dog,
            mut image_gc,
        } = Timers::new(
            self.ctx.cfg.file_check_frequency,
            self.mqtt.as_ref().map(|m| m.lease_period),
            period,
        );
        let ctx = self.ctx.clone();
        let mut last = set;
        loop {
            let recheck = self.recheck_at;
            if let Some(r) = &mut self.remote {
                r.alive(&ctx, &last);
            }
            let mut periodic = false;
            tokio::select! {
                _ = rx.recv() => {}
                d = remote::recv(&mut down) => {
                    if let Some(r) = &mut self.remote {
                        r.take(&ctx, d);
                    }
                    let set = self.desired();
                    self.apply(&set);
                    last = set;
                    continue;
                }
                _ = beat.tick() => continue,
                _ = tick.tick() => periodic = true,
                _ = image_gc.tick() => {
                    let ctx = ctx.clone();
                    tokio::task::spawn_blocking(move || {
                        image_gc_round(&ctx);
                        network_gc(&ctx);
                    });
                    continue;
                }
                _ = ctx.wake.notified() => {
                    // An eviction, a condition change or a worker gone idle: admission and
                    // reconcile again (which lets go of idle workers), no rescan needed.
                    self.apply(&last);
                    continue;
                }
                _ = async { tokio::time::sleep_until(recheck.expect("checked")).await }, if recheck.is_some() => {
                    self.apply(&last);
                    continue;
                }
                _ = dog.tick() => {
                    // Not while a supervised task is down: a task that cannot be restarted
                    // gets the agent restarted by systemd.
                    match &pet {
                        Some(pet) if self.sup.all_up() => pet(),
                        Some(_) => tracing::warn!(down = self.sup.down(), "a supervised task is down; not feeding the watchdog"),
                        None => {}
                    }
                    continue;
                }
                _ = shutdown.recv() => {
                    tracing::info!("agent stopping; pods keep running");
                    if let Some(r) = &self.remote {
                        r.shutdown().await;
                    }
                    return Ok(());
                }
            }
            let set = self.rescan();
            self.apply(&set);
            last = set;
            if periodic {
                // The network's readiness (the node's `Ready`), as the CNI config directory and
                // plugins are now: a readdir and a few stats.
                let before = ctx.net.not_ready();
                if ctx.net.config().err() != before {
                    ctx.shared.touch();
                }
                // Give the heap's free pages back at every periodic check (20 s by default):
                // the trims after a teardown run before the last requests of a churn (the
                // API's, the status writer's) have allocated and freed again, and glibc
                // returns only the heap's top by itself. A walk of a heap of a few MiB: well
                // under a millisecond, so it runs here rather than on a thread of its own.
                crate::malloc::trim();
            }
        }
    }
}

/// The main loop's timers.
struct Timers {
    /// The MQTT lease is renewed only while the loop turns (a stuck agent whose MQTT task
    /// still answers keep-alives must be noticed): at least every min(lease / 2, 5 s).
    beat: tokio::time::Interval,
    /// The static-pod directory's periodic rescan (`fileCheckFrequency`).
    tick: tokio::time::Interval,
    /// systemd's watchdog, fed from the loop so that it stops when the loop is stuck.
    dog: tokio::time::Interval,
    /// kubelet's image GC period: unused images go once the image file system is above
    /// imageGCHighThresholdPercent, down to the low threshold.
    image_gc: tokio::time::Interval,
}

impl Timers {
    fn new(file_check: Duration, lease: Option<Duration>, watchdog: Duration) -> Timers {
        let delayed = |period| {
            let mut i = tokio::time::interval(period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        };
        Timers {
            beat: delayed(
                lease
                    .map(|l| (l / 2).min(Duration::from_secs(5)))
                    .unwrap_or(Duration::from_secs(3600)),
            ),
            tick: delayed(file_check),
            dog: tokio::time::interval(watchdog),
            image_gc: delayed(IMAGE_GC_PERIOD),
        }
    }
}

/// The device manager's notices: plugin events become node events; any notice means the
/// node's capacity or the pods' devices may have changed, so the status is published again.
async fn device_notices(
    ctx: Arc<Ctx>,
    mut rx: tokio::sync::mpsc::Receiver<crate::devices::Notice>,
) {
    while let Some(n) = rx.recv().await {
        if let crate::devices::Notice::Event {
            warning,
            reason,
            message,
        } = n
        {
            ctx.node_event(warning, reason, message);
        }
        ctx.shared.touch();
    }
}

/// How often unused images are collected when the image file system is above its high
/// threshold (kubelet: 5 min).
const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// DEL the network attachments no pod owns (see `net::Network::gc`).
fn network_gc(ctx: &Ctx) {
    let (released, errors) = ctx.net.gc();
    if released > 0 {
        tracing::info!(
            attachments = released,
            "network attachments of pods that are gone released"
        );
    }
    for e in errors {
        tracing::warn!(error = %e, "network garbage collection");
    }
}

fn image_gc_round(ctx: &Ctx) {
    let in_use = ctx.images_in_use();
    match crate::gc::image_gc_tick(
        &ctx.store,
        &crate::gc::Statvfs,
        &ctx.cfg.image_gc_policy(),
        &in_use.images,
        std::time::SystemTime::now(),
    ) {
        Ok(Some(r)) => tracing::info!(
            images = r.images_removed.len(),
            bytes = r.bytes_freed,
            "image garbage collection"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "image garbage collection did not run"),
    }
}

/// A desired pod as admission sees it.
fn candidate(key: &str, pod: &k8s_openapi::api::core::v1::Pod) -> Candidate {
    let spec = layout::spec(pod);
    let (cpu_milli, memory) = crate::qos::pod_requests(spec);
    Candidate {
        key: key.to_string(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        requests: Requests { cpu_milli, memory },
        best_effort: crate::qos::qos_class(spec) == crate::qos::QosClass::BestEffort,
        critical: crate::eviction::rank::is_critical(spec, pod.metadata.annotations.as_ref()),
        host_ports: crate::net::ports::host_ports(spec),
    }
}
