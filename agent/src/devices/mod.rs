//! Devices for pods: tidelet as the kubelet side of the device-plugin API (`v1beta1`).
//!
//! - `manager`: the `Registration` server on `kubelet.sock`, one task per registered plugin
//!   (options, `ListAndWatch`), the node's extended resources, admission and `Allocate`.
//! - `registry`: what the manager knows (pure): resources, devices and health, allocations.
//! - `checkpoint`: allocations on disk, so that an agent restart keeps them.
//! - `cdi`: Container Device Interface specs (`/etc/cdi`, `/var/run/cdi`) and name resolution.
//! - `edits`: an `Allocate` answer (plus CDI) turned into what the runtime applies to one
//!   container: env, mounts, device nodes, cgroup device rules, annotations.

pub mod cdi;
pub mod checkpoint;
pub mod edits;
pub mod manager;
pub mod registry;

pub use manager::{AdmitFailure, DevicesConfig, Manager, Notice};
