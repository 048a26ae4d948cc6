//! Exclusive CPUs: kubelet's CPU manager with its `static` policy (`cpuManagerPolicy`).
//!
//! A Guaranteed pod's containers that ask for whole CPUs get CPUs of their own; every other
//! container, and every pod's infra process, runs on the shared pool: the online CPUs minus
//! those exclusive ones (`reservedSystemCPUs` stay in the pool but are never handed out).
//! The decisions are pure (`policy`); `CpuManager` holds the state, keeps it in the checkpoint
//! (`checkpoint`, kubelet's `cpu_manager_state`) so that a restart keeps assignments, and
//! writes the sets into the containers' cgroups through `Cgroups::set_cpuset`.
//!
//! How the agent uses it: `admit` when a pod is created or adopted (allocates, fails with
//! `Error::NotEnough`, kubelet's `UnexpectedAdmissionError`), `apply` on each container's (and
//! the infra's) cgroup after creating it, `release` when the pod is gone; `reconcile` rewrites
//! every tracked cgroup (it runs by itself whenever the pool changes, and may run on a timer
//! as kubelet's reconcile loop does); `status` gives the node facts.

pub mod checkpoint;
pub mod cpuset;
pub mod policy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::PodSpec;

use crate::cgroups::Cgroups;
pub use cpuset::CpuSet;
use policy::Assignments;

/// kubelet's `cpuManagerPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Policy {
    /// Every container on every CPU (the kernel's scheduler decides).
    #[default]
    None,
    /// Exclusive CPUs for Guaranteed containers with whole-CPU requests.
    Static,
}

impl Policy {
    /// The config value (`none`, `static`); kubelet's names.
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "none" => Some(Policy::None),
            "static" => Some(Policy::Static),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Static => "static",
        }
    }
}

/// Where the online CPUs are listed.
pub const ONLINE_FILE: &str = "/sys/devices/system/cpu/online";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reservedSystemCPUs: {value:?} {reason}")]
    Reserved { value: String, reason: String },
    #[error("cpuManagerPolicy: static needs reservedSystemCPUs (as kubelet, the static policy refuses to start without CPUs reserved for the system), e.g. reservedSystemCPUs: \"0\"")]
    NoReservation,
    #[error("{path}: {reason}")]
    Online { path: PathBuf, reason: String },
    #[error("{path}: {reason}; stop tidelet and delete the file to start over (running pods then get their exclusive CPUs assigned afresh)")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("writing {path}: {source}")]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// kubelet's `UnexpectedAdmissionError`.
    #[error("not enough cpus available to satisfy request: container {container:?} of pod {pod} requested {requested} exclusive CPU(s), {available} available ({cpus})")]
    NotEnough {
        pod: String,
        container: String,
        requested: usize,
        available: usize,
        /// The node's CPUs: online, reserved and already exclusive ones.
        cpus: String,
    },
    #[error("cpuset {cpus:?} for {leaf:?} of pod {pod}: {source}")]
    Cgroup {
        pod: String,
        leaf: String,
        cpus: String,
        #[source]
        source: Box<crate::cgroups::Error>,
    },
    #[error("pod {pod} was not admitted by the CPU manager")]
    UnknownPod { pod: String },
}

impl Error {
    /// The Kubernetes reason to report (pod status, events).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotEnough { .. } => "UnexpectedAdmissionError",
            _ => "CPUManagerError",
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What the node status needs to know about CPUs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub policy: &'static str,
    pub online: CpuSet,
    pub reserved: CpuSet,
    /// The pool shared containers run on.
    pub shared: CpuSet,
    /// CPUs that may still be given exclusively.
    pub free: CpuSet,
    /// Exclusive CPUs by pod UID and container.
    pub exclusive: Assignments,
}

/// A pod this process has admitted: where its cgroups are and which leaves to keep set.
#[derive(Debug, Clone)]
struct Tracked {
    cgroup: String,
    /// Container names (init and app) and the infra leaf.
    leaves: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    assignments: Assignments,
    pods: BTreeMap<String, Tracked>,
}

/// The static policy's state and its effects; shared by the pod workers.
pub struct CpuManager {
    online: CpuSet,
    reserved: CpuSet,
    checkpoint: PathBuf,
    /// The leaf (below the pod's cgroup) that holds the pod's infra process.
    infra_leaf: String,
    cgroups: Arc<dyn Cgroups>,
    inner: Mutex<Inner>,
}

/// Read the online CPUs from `file` (normally `ONLINE_FILE`).
pub fn read_online(file: &Path) -> Result<CpuSet> {
    let err = |reason: String| Error::Online {
        path: file.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
    let set = CpuSet::parse(&text).map_err(|e| err(e.to_string()))?;
    if set.is_empty() {
        return Err(err("lists no online CPU".into()));
    }
    Ok(set)
}

/// Check `reservedSystemCPUs` against the online CPUs.
pub fn check_reserved(online: &CpuSet, reserved: &CpuSet) -> Result<()> {
    let err = |reason: String| Error::Reserved {
        value: reserved.to_string(),
        reason,
    };
    if reserved.is_empty() {
        return Err(Error::NoReservation);
    }
    let missing = reserved.difference(online);
    if !missing.is_empty() {
        return Err(err(format!(
            "names CPUs {missing} that this machine does not have online (online: {online})"
        )));
    }
    if reserved == online {
        return Err(err(format!(
            "reserves every online CPU ({online}): none would be left to give exclusively"
        )));
    }
    Ok(())
}

/// What the CPU manager takes from the agent's config (`Config::cpu_manager_options`), so
/// that it does not depend on the whole config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `cpuManagerPolicy`.
    pub policy: Policy,
    /// `reservedSystemCPUs` (empty: none).
    pub reserved: CpuSet,
    /// The agent's state directory (`rootDir`): the checkpoint is `cpu_manager_state` in it.
    pub root_dir: PathBuf,
}

impl CpuManager {
    /// The manager `opts` ask for: `None` with policy `none`. Fails on a bad reservation,
    /// or on a checkpoint that is corrupt or from another policy (kubelet refuses to start
    /// then too). `online_file` is normally `ONLINE_FILE`.
    pub fn from_options(
        opts: &Options,
        online_file: &Path,
        cgroups: Arc<dyn Cgroups>,
        infra_leaf: &str,
    ) -> Result<Option<CpuManager>> {
        let path = opts.root_dir.join(checkpoint::FILE);
        match opts.policy {
            Policy::None => {
                let ck = checkpoint::load(&path).map_err(|reason| Error::Checkpoint {
                    path: path.clone(),
                    reason,
                })?;
                if let Some(c) = ck.filter(|c| c.policy_name != Policy::None.as_str()) {
                    return Err(Error::Checkpoint {
                        path,
                        reason: format!(
                            "written by cpuManagerPolicy {:?}, but the configured policy is \"none\"",
                            c.policy_name
                        ),
                    });
                }
                Ok(None)
            }
            Policy::Static => {
                let online = read_online(online_file)?;
                CpuManager::new(online, opts.reserved.clone(), path, cgroups, infra_leaf).map(Some)
            }
        }
    }

    /// A static-policy manager over `online` CPUs, keeping state in `checkpoint_path`.
    pub fn new(
        online: CpuSet,
        reserved: CpuSet,
        checkpoint_path: PathBuf,
        cgroups: Arc<dyn Cgroups>,
        infra_leaf: &str,
    ) -> Result<CpuManager> {
        check_reserved(&online, &reserved)?;
        let ck_err = |reason: String| Error::Checkpoint {
            path: checkpoint_path.clone(),
            reason,
        };
        let assignments = match checkpoint::load(&checkpoint_path).map_err(ck_err)? {
            Some(c) => {
                checkpoint::validate(&c, Policy::Static.as_str(), &online, &reserved)
                    .map_err(ck_err)?;
                c.entries
            }
            None => Assignments::new(),
        };
        let m = CpuManager {
            online,
            reserved,
            checkpoint: checkpoint_path,
            infra_leaf: infra_leaf.to_string(),
            cgroups,
            inner: Mutex::new(Inner {
                assignments,
                pods: BTreeMap::new(),
            }),
        };
        m.save(&m.lock())?;
        tracing::info!(
            online = %m.online,
            reserved = %m.reserved,
            shared = %m.status().shared,
            checkpoint = %m.checkpoint.display(),
            "CPU manager: static policy"
        );
        Ok(m)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent across a panic elsewhere: every change is one insert or
        // remove under the lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, inner: &Inner) -> Result<()> {
        let c = checkpoint::Checkpoint::new(
            Policy::Static.as_str(),
            policy::shared_pool(&self.online, &inner.assignments),
            inner.assignments.clone(),
        );
        checkpoint::save(&self.checkpoint, &c).map_err(|source| Error::Save {
            path: self.checkpoint.clone(),
            source,
        })
    }

    /// Admit pod `uid` whose cgroup is `pod_cgroup`: allocate its containers' exclusive CPUs
    /// (kept from the checkpoint if it has them) and track its cgroups. Idempotent. When the
    /// shared pool shrinks, the running shared containers are moved off the new CPUs at once.
    /// Returns the pod's exclusive CPUs by container.
    pub fn admit(
        &self,
        uid: &str,
        pod_cgroup: &str,
        spec: &PodSpec,
    ) -> Result<BTreeMap<String, CpuSet>> {
        let mut inner = self.lock();
        let got = policy::allocate_pod(&self.online, &self.reserved, &inner.assignments, uid, spec)
            .map_err(|e| Error::NotEnough {
                pod: uid.to_string(),
                container: e.container,
                requested: e.requested,
                available: e.available,
                cpus: format!(
                    "online {}, reservedSystemCPUs {}, already exclusive {}",
                    self.online,
                    self.reserved,
                    policy::assigned(&inner.assignments)
                ),
            })?;
        let mut leaves: Vec<String> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| c.name.clone())
            .collect();
        leaves.push(self.infra_leaf.clone());
        inner.pods.insert(
            uid.to_string(),
            Tracked {
                cgroup: pod_cgroup.to_string(),
                leaves,
            },
        );
        let changed = !got.is_empty() && inner.assignments.get(uid) != Some(&got);
        if changed {
            inner.assignments.insert(uid.to_string(), got.clone());
            if let Err(e) = self.save(&inner) {
                inner.assignments.remove(uid);
                inner.pods.remove(uid);
                return Err(e);
            }
            tracing::info!(pod = uid, exclusive = ?got, shared = %policy::shared_pool(&self.online, &inner.assignments), "exclusive CPUs assigned");
            self.reconcile_locked(&inner)?;
        }
        Ok(got)
    }

    /// The cpuset `leaf` (a container name or the infra leaf) of pod `uid` runs on.
    pub fn cpuset_for(&self, uid: &str, leaf: &str) -> CpuSet {
        policy::cpuset_for(&self.online, &self.lock().assignments, uid, leaf)
    }

    /// Write the cpuset of `leaf` (a container name or the infra leaf) of admitted pod `uid`
    /// into its cgroup, which must exist. Returns the set written.
    pub fn apply(&self, uid: &str, leaf: &str) -> Result<CpuSet> {
        let inner = self.lock();
        let t = inner.pods.get(uid).ok_or_else(|| Error::UnknownPod {
            pod: uid.to_string(),
        })?;
        let cpus = policy::cpuset_for(&self.online, &inner.assignments, uid, leaf);
        self.write(uid, &t.cgroup, leaf, &cpus)?;
        Ok(cpus)
    }

    fn write(&self, uid: &str, pod_cgroup: &str, leaf: &str, cpus: &CpuSet) -> Result<()> {
        let path = format!("{pod_cgroup}/{leaf}");
        self.cgroups
            .set_cpuset(&path, &cpus.to_string())
            .map_err(|source| Error::Cgroup {
                pod: uid.to_string(),
                leaf: leaf.to_string(),
                cpus: cpus.to_string(),
                source: Box::new(source),
            })
    }

    /// Forget pod `uid`: its exclusive CPUs go back to the shared pool, which the remaining
    /// shared containers get at once.
    pub fn release(&self, uid: &str) -> Result<()> {
        let mut inner = self.lock();
        inner.pods.remove(uid);
        if let Some(freed) = inner.assignments.remove(uid) {
            self.save(&inner)?;
            tracing::info!(pod = uid, freed = ?freed, shared = %policy::shared_pool(&self.online, &inner.assignments), "exclusive CPUs released");
            self.reconcile_locked(&inner)?;
        }
        Ok(())
    }

    /// Drop the assignments of pods not in `active` (kubelet's `removeStaleState`); call it
    /// once the pods found at start are adopted, else a pod deleted while the agent was down
    /// keeps its CPUs.
    pub fn remove_stale(&self, active: &BTreeSet<String>) -> Result<()> {
        let mut inner = self.lock();
        let stale: Vec<String> = inner
            .assignments
            .keys()
            .filter(|u| !active.contains(*u))
            .cloned()
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        for u in &stale {
            inner.assignments.remove(u);
            inner.pods.remove(u);
        }
        tracing::info!(pods = ?stale, "stale exclusive CPU assignments removed");
        self.save(&inner)?;
        self.reconcile_locked(&inner)
    }

    /// Write every tracked pod's cgroups with their cpusets (kubelet's reconcile loop). Leaves
    /// whose cgroup does not exist (a container not started yet, or a pod going away) are
    /// skipped; other failures are logged and the first is returned after trying them all.
    pub fn reconcile(&self) -> Result<()> {
        self.reconcile_locked(&self.lock())
    }

    fn reconcile_locked(&self, inner: &Inner) -> Result<()> {
        let mut first = None;
        for (uid, t) in &inner.pods {
            for leaf in &t.leaves {
                let cpus = policy::cpuset_for(&self.online, &inner.assignments, uid, leaf);
                match self.write(uid, &t.cgroup, leaf, &cpus) {
                    Ok(()) => {}
                    Err(Error::Cgroup { source, .. }) if is_not_found(&source) => {}
                    Err(e) => {
                        tracing::warn!(pod = %uid, leaf = %leaf, error = %e, "cpuset reconcile");
                        first.get_or_insert(e);
                    }
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The node's CPU facts.
    pub fn status(&self) -> Status {
        let inner = self.lock();
        Status {
            policy: Policy::Static.as_str(),
            online: self.online.clone(),
            reserved: self.reserved.clone(),
            shared: policy::shared_pool(&self.online, &inner.assignments),
            free: policy::free(&self.online, &self.reserved, &inner.assignments),
            exclusive: inner.assignments.clone(),
        }
    }
}

fn is_not_found(e: &crate::cgroups::Error) -> bool {
    use crate::cgroups::Error as E;
    match e {
        E::Io { source, .. } | E::Write { source, .. } => {
            source.kind() == std::io::ErrorKind::NotFound
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
