//! What the agent and a pod supervisor say to each other, and what the supervisor records.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Written by the agent to `<pod_dir>/sandbox.json` before it starts the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub pod_uid: String,
    /// `metadata.name` (already `<name>-<node>`).
    pub pod_name: String,
    pub namespace: String,
    /// UTS hostname inside the pod (the pod name, or `spec.hostname`).
    pub hostname: String,
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// One PID namespace for all the pod's containers.
    pub share_process_namespace: bool,
    /// `<root-dir>/pods/<uid>`: the supervisor's socket, records and scratch live here.
    pub pod_dir: PathBuf,
    /// `cgroup.procs` files the supervisor writes itself into (the pod's infra cgroup).
    pub cgroup_procs: Vec<PathBuf>,
    pub oom_score_adj: i32,
    /// Pod sysctls (dotted names), admitted by the agent, set in the pod's namespaces.
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// `hostUsers: false`: the pod's own user namespace with this mapping; its network, IPC
    /// and UTS namespaces belong to it.
    #[serde(default)]
    pub userns: Option<crate::security::userns::IdRange>,
}

/// A bind mount into a container's rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Host path (file or directory).
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: String,
    pub readonly: bool,
}

/// A device node to create in the container (`mknod` in its private `/dev` or wherever
/// `container_path` says, always inside the rootfs), from device plugins, CDI
/// (`devices::edits`) or the host's `/dev` for a privileged container (`devices::host_devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// Absolute path in the container, e.g. `/dev/nvidia0`.
    pub container_path: String,
    /// Where it came from on the host (for messages and `describe`).
    pub host_path: PathBuf,
    /// `Char` or `Block` (never `All`).
    pub kind: crate::cgroups::devices::DevKind,
    pub major: u32,
    pub minor: u32,
    /// Permission bits of the node, e.g. 0o666.
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup access: any of `r`, `w`, `m` (in that order).
    pub permissions: String,
}

/// Everything needed to start one container (one attempt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    /// Restart count: 0 for the first start.
    pub attempt: u32,
    pub image: String,
    pub image_id: String,
    pub argv: Vec<String>,
    /// `KEY=VALUE`; `PATH` here is used to find `argv[0]` when it has no `/`.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Image layers, top-most first (overlayfs `lowerdir=` order).
    pub lowerdirs: Vec<PathBuf>,
    /// overlayfs upper and work dirs (kept across restarts of the container) and the mount point.
    pub upperdir: PathBuf,
    pub workdir: PathBuf,
    pub rootfs: PathBuf,
    pub readonly_rootfs: bool,
    /// Capabilities, seccomp, masked paths, `no_new_privs` (see `runtime::harden`). No serde
    /// default: a spec without it is refused rather than run with the supervisor's privileges.
    pub security: crate::security::ContainerSecurity,
    /// The pod's user-namespace mapping, if it has one: the image layers are mounted
    /// idmapped through it and the process joins it before dropping privileges.
    #[serde(default)]
    pub userns: Option<crate::security::userns::IdRange>,
    /// Bind mounts in order: `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`, volumes.
    pub mounts: Vec<BindMount>,
    /// Device nodes to create (after the private `/dev`, before the bind mounts), from
    /// device plugins and CDI.
    #[serde(default)]
    pub devices: Vec<DeviceNode>,
    /// OCI lifecycle hooks (from CDI specs), run as `runtime::hooks` says.
    #[serde(default)]
    pub hooks: Vec<super::hooks::Hook>,
    /// The container's annotations (from its devices), in the state hooks get.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// `cgroup.procs` files of the container's cgroup.
    pub cgroup_procs: Vec<PathBuf>,
    /// File to read `oom_kill N` from (see `cgroups::read_oom_kills`) to tell an OOM kill.
    pub oom_kill_file: Option<PathBuf>,
    pub oom_score_adj: i32,
    /// CRI-format log file of this attempt; rotated to `<log_path>.1`, `.2`, ... by size.
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    pub log_max_files: u32,
    /// Signal number sent first on stop (SIGTERM unless the image says otherwise).
    pub stop_signal: i32,
}

/// A container's state as the supervisor knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum ContainerState {
    Running {
        pid: i32,
        /// Unix time, nanoseconds.
        started_at: i64,
    },
    /// The process ended (or could not be started: `reason` `StartError`, exit code 128).
    Exited {
        exit_code: i32,
        /// The signal that killed it, if any (exit_code is then 128 + signal).
        signal: Option<i32>,
        /// `Completed`, `Error`, `OOMKilled` or `StartError`.
        reason: String,
        message: String,
        started_at: i64,
        finished_at: i64,
    },
}

/// What `<pod_dir>/containers/<name>.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub attempt: u32,
    pub state: ContainerState,
    /// Supervisor-wide change counter at the last change of this record.
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStatus {
    /// The supervisor's (infra process's) pid.
    pub pid: i32,
    /// Increases on every container state change.
    pub seq: u64,
    pub containers: Vec<ContainerRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Start a container; answered once it runs (`Ok(Record)`) or failed to start.
    Start {
        spec: Box<ContainerSpec>,
    },
    /// Send `signal`, then SIGKILL after `grace_secs`; answered at once.
    Stop {
        name: String,
        signal: i32,
        grace_secs: u64,
    },
    /// Forget an exited container's record (before it is started again or removed).
    Remove {
        name: String,
    },
    Status,
    /// Answered once `seq` is greater than `since` or `timeout_ms` passed.
    Wait {
        since: u64,
        timeout_ms: u64,
    },
    /// Stop every container (signal, grace, SIGKILL), then exit.
    Shutdown {
        grace_secs: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Response {
    Ok,
    Record { record: ContainerRecord },
    Status { status: SandboxStatus },
    Error { message: String },
}
