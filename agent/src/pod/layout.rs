//! Where a pod lives on the node, derived once from its manifest: its QoS tier and cgroup
//! (`<cgroupRoot>/kubepods[/qos]/pod<uid>`, the infra process in `_infra` under it), its
//! directories and its hostname. The worker plans with it; the eviction monitor finds a pod's
//! cgroup with it.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::qos::{self, QosClass};

/// Where the agent keeps pods, as `plan` needs it; `config::Config` implements it. A trait
/// rather than the config itself so that `pod` sits below `config` (which composes the
/// subsystems' settings, `eviction`'s among them, and `eviction` plans pods).
pub trait PodDirs {
    /// `<cgroupRoot>/kubepods`.
    fn kubepods_cgroup(&self) -> String;
    /// `<rootDir>/pods`: one directory per pod UID.
    fn pods_dir(&self) -> PathBuf;
    /// `<rootDir>/logs`: one directory per pod, named as kubelet names them.
    fn logs_dir(&self) -> PathBuf;
}

/// The host's hostname (what `hostNetwork` pods see); `node::Node` implements it.
pub trait HostName {
    fn hostname(&self) -> &str;
}

/// Where a pod lives on the node; derived once from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub qos: QosClass,
    /// `<cgroupRoot>/kubepods[/qos]/pod<uid>`.
    pub cgroup: String,
    pub pod_dir: PathBuf,
    pub log_dir: PathBuf,
    pub restart_policy: String,
    pub grace_secs: u64,
}

/// The cgroup (under the pod's) that holds the infra process. Not a DNS label, so it can
/// never collide with a container's name.
pub const INFRA_CGROUP: &str = "_infra";

pub fn spec(pod: &Pod) -> &PodSpec {
    static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
    pod.spec
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
}

/// Where `pod` lives, under `dirs`, on `host`.
pub fn plan(dirs: &impl PodDirs, host: &impl HostName, pod: &Pod) -> PodPlan {
    let s = spec(pod);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let qos = qos::qos_class(s);
    let mut cgroup = dirs.kubepods_cgroup();
    if let Some(dir) = qos.cgroup_dir() {
        cgroup = format!("{cgroup}/{dir}");
    }
    cgroup = format!("{cgroup}/pod{uid}");
    let hostname = if s.host_network == Some(true) {
        host.hostname().to_string()
    } else {
        // kubelet truncates the pod name to a valid hostname (63 chars, no trailing '-' or '.').
        let h = s.hostname.clone().unwrap_or_else(|| name.clone());
        let mut h: String = h.chars().take(63).collect();
        while h.ends_with(['-', '.']) {
            h.pop();
        }
        h
    };
    PodPlan {
        pod_dir: dirs.pods_dir().join(&uid),
        log_dir: dirs.logs_dir().join(format!("{namespace}_{name}_{uid}")),
        uid,
        name,
        namespace,
        hostname,
        qos,
        cgroup,
        restart_policy: s.restart_policy.clone().unwrap_or_else(|| "Always".into()),
        grace_secs: s.termination_grace_period_seconds.unwrap_or(30).max(0) as u64,
    }
}
