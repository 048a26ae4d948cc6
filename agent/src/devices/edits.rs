//! What a container gets from its devices, checked and ready for the runtime.
//! (Contract for the CDI/edits helper: implement; keep the public names.)

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cgroups::devices::DevKind;
use crate::runtime::BindMount;

/// A device node to create in the container (`mknod` in its private `/dev` or wherever
/// `container_path` says, always inside the rootfs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceNode {
    /// Absolute path in the container, e.g. `/dev/nvidia0`.
    pub container_path: String,
    /// Where it came from on the host (for messages and `describe`).
    pub host_path: PathBuf,
    /// `Char` or `Block` (never `All`).
    pub kind: DevKind,
    pub major: u32,
    pub minor: u32,
    /// Permission bits of the node, e.g. 0o666.
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup access: any of `r`, `w`, `m` (in that order).
    pub permissions: String,
}

/// Everything to apply to one container for its devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerEdits {
    /// `KEY=VALUE`, appended after the container's own env (device env wins, as in kubelet).
    pub env: Vec<String>,
    pub mounts: Vec<BindMount>,
    pub devices: Vec<DeviceNode>,
    pub annotations: BTreeMap<String, String>,
}
