//! A container's effective security from its pod's and its own `securityContext`, with
//! Kubernetes' merge rules and containerd's defaults (pure).
//!
//! Merge rules (kubelet's `DetermineEffectiveSecurityContext`): `runAsUser`, `runAsGroup`,
//! `runAsNonRoot` and `seccompProfile` are set on the pod and overridden per container;
//! `privileged`, `capabilities`, `allowPrivilegeEscalation`, `readOnlyRootFilesystem` and
//! `procMount` exist on the container only. The seccomp profile, when neither says, is the
//! node's `seccompDefault` (tidelet: `RuntimeDefault`; kubelet: `Unconfined`).
//!
//! A privileged container gets every capability, no seccomp filter, unmasked `/proc` and a
//! writable `/sys`, as containerd gives it.

use k8s_openapi::api::core::v1::{Container, PodSpec, SeccompProfile, SecurityContext};
use serde::{Deserialize, Serialize};

use super::caps::{self, CapSet};

/// runc's (and containerd's) masked paths: a file gets `/dev/null` over it, a directory an
/// empty read-only tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's read-only paths: bind-mounted read-only over themselves.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Which seccomp profile a container runs under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompChoice {
    Unconfined,
    RuntimeDefault,
    /// A profile file, relative to the node's `seccompProfileRoot`.
    Localhost(String),
}

impl SeccompChoice {
    /// As `describe pod` shows it (the manifest's words).
    pub fn describe(&self) -> String {
        match self {
            SeccompChoice::Unconfined => "Unconfined".into(),
            SeccompChoice::RuntimeDefault => "RuntimeDefault".into(),
            SeccompChoice::Localhost(p) => format!("Localhost ({p})"),
        }
    }
}

/// The node's side of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePolicy {
    /// KubeletConfiguration `seccompDefault`: RuntimeDefault where the manifest says nothing.
    pub seccomp_default: bool,
    /// The capabilities tidelet holds: what `ALL` and privileged mean, and the most any
    /// container gets (a capability tidelet lacks cannot be given).
    pub available_caps: CapSet,
}

/// What a container gets, decided from its manifest alone (the image's user is checked
/// against `run_as_non_root` later, once the image is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub privileged: bool,
    /// Bounding, permitted and effective set (a root process keeps them across `execve`;
    /// a non-root one keeps them in its bounding set only). Inheritable and ambient are
    /// empty, as containerd sets them since CVE-2022-24769.
    pub caps: CapSet,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    pub seccomp: SeccompChoice,
    pub readonly_rootfs: bool,
    /// `procMount: Unmasked`: no masked or read-only paths.
    pub unmasked_proc: bool,
    /// `runAsNonRoot: true`, from the container or the pod.
    pub run_as_non_root: bool,
    /// `runAsUser`, from the container or the pod.
    pub run_as_user: Option<i64>,
}

impl Decision {
    /// What a container whose manifest says nothing gets on a node with `seccompDefault`.
    pub fn unconfigured() -> Decision {
        Decision {
            privileged: false,
            caps: CapSet::default_set(),
            no_new_privs: false,
            seccomp: SeccompChoice::RuntimeDefault,
            readonly_rootfs: false,
            unmasked_proc: false,
            run_as_non_root: false,
            run_as_user: None,
        }
    }

    pub fn masked_paths(&self) -> Vec<String> {
        self.paths(MASKED_PATHS)
    }
    pub fn readonly_paths(&self) -> Vec<String> {
        self.paths(READONLY_PATHS)
    }
    fn paths(&self, list: &[&str]) -> Vec<String> {
        if self.privileged || self.unmasked_proc {
            return Vec::new();
        }
        list.iter().map(|p| p.to_string()).collect()
    }
}

/// A field of the manifest that cannot be honoured, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

fn field_err(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Decide `c`'s security. `at` is its field path (`spec.containers[0]`), for errors.
pub fn decide(
    pod: &PodSpec,
    c: &Container,
    at: &str,
    node: &NodePolicy,
) -> Result<Decision, FieldError> {
    let psc = pod.security_context.as_ref();
    let csc = c.security_context.as_ref();
    let privileged = csc.and_then(|s| s.privileged) == Some(true);
    let caps = if privileged {
        node.available_caps
    } else {
        let cp = csc.and_then(|s| s.capabilities.as_ref());
        let add = cp.and_then(|c| c.add.clone()).unwrap_or_default();
        let drop = cp.and_then(|c| c.drop.clone()).unwrap_or_default();
        caps::container_caps(
            &add,
            &drop,
            node.available_caps,
            &format!("{at}.securityContext.capabilities"),
        )
        .map_err(|e| {
            field_err(
                e.field.clone(),
                format!("{:?} is not a Linux capability", e.name),
            )
        })?
    };
    let seccomp = if privileged {
        SeccompChoice::Unconfined
    } else {
        let (field, profile) = match csc.and_then(|s| s.seccomp_profile.as_ref()) {
            Some(p) => (format!("{at}.securityContext.seccompProfile"), Some(p)),
            None => (
                "spec.securityContext.seccompProfile".to_string(),
                psc.and_then(|s| s.seccomp_profile.as_ref()),
            ),
        };
        match profile {
            Some(p) => seccomp_choice(p, &field)?,
            None if node.seccomp_default => SeccompChoice::RuntimeDefault,
            None => SeccompChoice::Unconfined,
        }
    };
    let proc_mount = csc
        .and_then(|s| s.proc_mount.as_deref())
        .unwrap_or("Default");
    let unmasked_proc = match proc_mount {
        "Default" | "" => false,
        "Unmasked" => {
            if pod.host_users != Some(false) {
                return Err(field_err(
                    format!("{at}.securityContext.procMount"),
                    "Unmasked needs the pod in its own user namespace (spec.hostUsers: false), as Kubernetes requires",
                ));
            }
            true
        }
        other => {
            return Err(field_err(
                format!("{at}.securityContext.procMount"),
                format!("{other:?}: must be Default or Unmasked"),
            ))
        }
    };
    let pick =
        |f: fn(&SecurityContext) -> Option<i64>,
         g: fn(&k8s_openapi::api::core::v1::PodSecurityContext) -> Option<i64>| {
            csc.and_then(f).or_else(|| psc.and_then(g))
        };
    Ok(Decision {
        privileged,
        caps,
        no_new_privs: csc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        seccomp,
        readonly_rootfs: csc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        unmasked_proc,
        run_as_non_root: csc
            .and_then(|s| s.run_as_non_root)
            .or_else(|| psc.and_then(|s| s.run_as_non_root))
            == Some(true),
        run_as_user: pick(|s| s.run_as_user, |s| s.run_as_user),
    })
}

fn seccomp_choice(p: &SeccompProfile, field: &str) -> Result<SeccompChoice, FieldError> {
    match p.type_.as_str() {
        "RuntimeDefault" => Ok(SeccompChoice::RuntimeDefault),
        "Unconfined" => Ok(SeccompChoice::Unconfined),
        "Localhost" => {
            let path = p.localhost_profile.as_deref().unwrap_or_default();
            let f = format!("{field}.localhostProfile");
            if path.is_empty() {
                return Err(field_err(f, "must be set when type is Localhost"));
            }
            if path.starts_with('/') {
                return Err(field_err(
                    f,
                    format!("{path:?}: must be a path relative to the node's seccompProfileRoot"),
                ));
            }
            if path.split('/').any(|c| c == "..") {
                return Err(field_err(f, format!("{path:?}: must not contain \"..\"")));
            }
            Ok(SeccompChoice::Localhost(path.to_string()))
        }
        other => Err(field_err(
            format!("{field}.type"),
            format!("{other:?}: must be RuntimeDefault, Localhost or Unconfined"),
        )),
    }
}

/// kubelet's `verifyRunAsNonRoot`, once the image's user is known: `Err` is the
/// `CreateContainerConfigError` message. `image_user` is the image config's `User` (`""` is
/// root); `uid` the uid the container will run as.
pub fn verify_run_as_non_root(
    d: &Decision,
    image_user: &str,
    uid: u32,
    pod: &str,
    container: &str,
) -> Result<(), String> {
    if !d.run_as_non_root {
        return Ok(());
    }
    if let Some(u) = d.run_as_user {
        if u == 0 {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: {pod:?}, container: {container})"
            ));
        }
        return Ok(());
    }
    let user = image_user.split(':').next().unwrap_or_default();
    if !user.is_empty() && user.parse::<u32>().is_err() {
        return Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod:?}, container: {container})"
        ));
    }
    if uid == 0 {
        return Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "context_tests.rs"]
mod tests;
