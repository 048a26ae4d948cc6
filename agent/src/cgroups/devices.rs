//! Device access rules for a container's cgroup: which device nodes (by type, major, minor)
//! it may read, write or create. The same rules are written as v1 `devices.deny` /
//! `devices.allow` lines and compiled into a v2 eBPF device program (`bpf`).
//!
//! Every container starts from `default_rules()` (deny everything, then allow the nodes every
//! container's `/dev` has, as runc and containerd do) plus one allow rule per device it was
//! given by a device plugin or CDI.
//! (Contract for the cgroups helper: implement the bodies; keep the names.)

/// `c`, `b` or `a` (all) in cgroup terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DevKind {
    Char,
    Block,
    All,
}

/// One rule; rules are applied in order and the last match wins on v1 semantics of
/// deny-all-then-allow (tidelet only emits a leading deny-all followed by allows).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DevKind,
    /// `None` is `*`.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Any of `r`, `w`, `m`, in that order, non-empty.
    pub access: String,
}
