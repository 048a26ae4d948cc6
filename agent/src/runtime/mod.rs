//! Running pods: the per-pod supervisor (the infra process), container spawn, CRI logs, exec.
//!
//! A pod is one supervisor process, started by `tidelet shim` and detached from the agent so it
//! outlives agent restarts. It creates (or joins the host's) network, IPC and UTS namespaces,
//! is the child subreaper of its containers, spawns each container into its own mount and PID
//! namespaces over an overlayfs rootfs, copies their stdout/stderr into CRI-format log files,
//! and records every exit in `<pod_dir>/containers/<name>.json` (atomically), so an exit that
//! happens while the agent is down is still reported. The agent decides (restarts, stops); the
//! supervisor executes and records. They talk over `<pod_dir>/shim.sock`, one JSON request and
//! one JSON response per line (see `protocol`).
//!
//! Modules: `supervisor` (starting and setting up a supervisor; `tidelet shim`),
//! `event_loop` (its poll loop and reaper), `container` (clone and exec of one container),
//! `rootfs` (its mounts and `pivot_root`), `logs` (CRI log writer, rotation, reader),
//! `exec` (`tidelet exec`), `client` (the agent's async client), `harden` (the container's
//! capabilities, seccomp filter, masked paths and `no_new_privs`, applied in the child),
//! `hooks` (OCI hooks: CDI's `prestart` to `poststop`), `userns` (the pod's user namespace and
//! idmapped mounts for `hostUsers: false`), `protocol` (the agent <-> supervisor wire types,
//! `ContainerSpec`, `DeviceNode`, ...), `sys` (small helpers).

use std::path::PathBuf;

pub mod client;
pub mod container;
pub mod event_loop;
pub mod exec;
mod harden;
pub mod hooks;
pub mod logs;
pub mod protocol;
pub mod rootfs;
pub mod supervisor;
mod sys;
mod userns;

pub use client::{Client, ClientError};
pub use exec::exec_in_container;
pub use logs::read_logs;
pub use protocol::*;
pub use supervisor::spawn_supervisor;

/// Errors of the synchronous runtime functions (starting a supervisor, exec).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod {pod_dir}: the supervisor failed to start: {message}")]
    SupervisorStart { pod_dir: PathBuf, message: String },
    #[error("exec in container (pid {pid}): {step}: {message}")]
    Exec {
        pid: i32,
        step: String,
        message: String,
    },
}
