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

pub mod protocol;

pub use protocol::*;
mod stubs;
pub use stubs::spawn_supervisor;
pub mod client { pub use super::stubs::Client; }
pub mod supervisor { pub use super::stubs::main; }
pub mod logs { pub use super::stubs::read_logs; }
pub mod exec { pub use super::stubs::exec_in_container; }
