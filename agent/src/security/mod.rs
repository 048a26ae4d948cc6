//! What a container may do on its host: capabilities, seccomp, masked and read-only paths,
//! `no_new_privs`, and the `securityContext` rules that choose them.
//!
//! The decisions (which capabilities, which profile, which paths) are pure functions of the
//! manifest and the node's configuration; the supervisor's child only applies their result.

pub mod caps;
pub mod context;
pub mod fsgroup;
pub mod profiles;
pub mod seccomp;
pub mod sysctls;
pub mod userns;

use serde::{Deserialize, Serialize};

pub use caps::CapSet;
pub use context::{decide, Decision, NodePolicy, SeccompChoice};

/// What the supervisor's child applies to one container (see `runtime::harden`). Required
/// in every container spec: a spec without it is refused, never run unconfined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSecurity {
    pub privileged: bool,
    /// Bounding, permitted and effective capabilities (inheritable and ambient: none).
    pub caps: CapSet,
    pub no_new_privs: bool,
    /// Paths in the container hidden by `/dev/null` or an empty read-only tmpfs.
    pub masked_paths: Vec<String>,
    /// Paths in the container bind-mounted read-only over themselves.
    pub readonly_paths: Vec<String>,
    /// The compiled filter; `None` is unconfined.
    pub seccomp: Option<seccomp::Program>,
    /// The profile as the manifest named it, for `describe pod`.
    pub seccomp_profile: String,
}

impl ContainerSecurity {
    /// What a container whose manifest says nothing gets on a node with the defaults: the
    /// 14 capabilities, RuntimeDefault seccomp, masked and read-only paths.
    pub fn runtime_default() -> ContainerSecurity {
        let d = Decision::unconfigured();
        let caps = d.caps;
        let program = seccomp::compile(
            seccomp::Profile::runtime_default(),
            seccomp::Arch::native(),
            &|name| caps.has(name),
            seccomp::kernel_version(),
        )
        .ok();
        ContainerSecurity::new(&d, program)
    }

    /// `d` with its compiled filter (from `profiles::Profiles::program`).
    pub fn new(d: &Decision, seccomp: Option<seccomp::Program>) -> ContainerSecurity {
        ContainerSecurity {
            privileged: d.privileged,
            caps: d.caps,
            no_new_privs: d.no_new_privs,
            masked_paths: d.masked_paths(),
            readonly_paths: d.readonly_paths(),
            seccomp,
            seccomp_profile: d.seccomp.describe(),
        }
    }
}

/// What `describe pod` shows of a running container's confinement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityView {
    pub privileged: bool,
    /// Effective capabilities of a root process (`CapEff`); a non-root one has none of them
    /// effective, only in its bounding set.
    pub capabilities: CapSet,
    pub seccomp: String,
    pub no_new_privs: bool,
    pub read_only_root: bool,
    /// `host`, or the container's uid/gid mapping (`0 -> 165536, 65536 ids`).
    pub user_namespace: String,
}

impl SecurityView {
    pub fn of(sec: &ContainerSecurity, read_only_root: bool, user_namespace: String) -> Self {
        SecurityView {
            privileged: sec.privileged,
            capabilities: sec.caps,
            seccomp: sec.seccomp_profile.clone(),
            no_new_privs: sec.no_new_privs,
            read_only_root,
            user_namespace,
        }
    }
}
