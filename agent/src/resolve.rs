//! A container's process (argv, env, working directory, user) from its spec and its image,
//! following Kubernetes' rules: `command` replaces the image's Entrypoint and drops its Cmd;
//! `args` alone replaces Cmd; `$(VAR)` references are expanded in command, args and env.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, PodSecurityContext};
use tidelet_images::ImageConfig;

/// Values for `env[].valueFrom.fieldRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFields {
    pub pod_name: String,
    pub namespace: String,
    pub uid: String,
    pub node_name: String,
    pub host_ip: String,
    pub pod_ip: String,
    pub service_account: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// What the runtime executes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    pub argv: Vec<String>,
    /// `KEY=VALUE`, image env first, then the container's (later wins), deduplicated.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ResolveError {
    /// Field path inside the container, e.g. `env[2].valueFrom`.
    pub field: String,
    pub reason: String,
}

/// Resolve `container`'s process against its image. `lowerdirs` (top-most first) are searched
/// for `/etc/passwd` and `/etc/group` when the user is given by name.
pub fn resolve_process(
    container: &Container,
    pod_security: Option<&PodSecurityContext>,
    image: &ImageConfig,
    lowerdirs: &[PathBuf],
    fields: &PodFields,
) -> Result<Process, ResolveError> {
    let _ = (container, pod_security, image, lowerdirs, fields);
    unimplemented!("resolve: resolve_process")
}
