//! What the API serves: the latest published view of every pod. Workers publish; the API
//! reads. A plain mutex: views are small and published only on changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use crate::pod::events::Events;

/// What `exec` and `logs` need about a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub name: String,
    /// Host pid of the container's init, while it runs.
    pub pid: Option<i32>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_procs: Vec<PathBuf>,
    /// Log file of the current (or last) attempt.
    pub log_path: Option<PathBuf>,
    /// Its confinement, for `describe pod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<crate::security::SecurityView>,
    /// What `tidelet exec` applies to the processes it starts in the container (the
    /// container's own capabilities, seccomp filter and `no_new_privs`, as `runc exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<crate::security::ContainerSecurity>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PodView {
    /// The pod with its status.
    pub pod: Pod,
    pub events: Events,
    pub containers: Vec<ContainerInfo>,
    /// The manifest file it came from.
    pub file: PathBuf,
    /// The pod's cgroup (relative to the hierarchies' roots) while it has one; empty when it
    /// is not running (held or failed to start).
    #[serde(default)]
    pub cgroup: String,
    /// Devices its containers hold (filled in by the API on each request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<crate::devices::manager::HeldView>,
}

pub struct Shared {
    /// Boxed views: a B-tree node has room for 11 entries, and a view is about 2.6 KiB, so
    /// each node kept 29 KiB (and an emptied map keeps its root node).
    pods: Mutex<BTreeMap<String, Box<PodView>>>,
    /// Bumped on every change of what is published here or of the node's status, so that
    /// the MQTT reporter wakes on changes instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            pods: Mutex::default(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Shared {
    pub fn publish(&self, key: &str, view: PodView) {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), Box::new(view));
        self.touch();
    }
    pub fn remove(&self, key: &str) {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.touch();
    }
    /// Something a watcher of `changes()` should look at again (a pod, the node's conditions
    /// or events).
    pub fn touch(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
    /// Fires after every `publish`, `remove` or `touch`.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
    pub fn list(&self) -> Vec<PodView> {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|v| PodView::clone(v))
            .collect()
    }
    pub fn get(&self, key: &str) -> Option<PodView> {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|v| PodView::clone(v))
    }
}
