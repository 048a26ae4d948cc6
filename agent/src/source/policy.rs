//! The local policy for pods from the control plane (`mqtt.remotePodPolicy`): what a remote
//! back-end may not ask of this node unless its owner allowed it. By default: no privileged
//! containers, no capability beyond the default set unless listed in `allowedCapabilities`,
//! no `seccompProfile: Unconfined`, no `procMount: Unmasked`, no sysctl outside kubelet's
//! safe set, no host namespaces, no `hostPath` at all; `requireUserNamespaces` also demands
//! `hostUsers: false`.
//! Static pods are not subject to it: whoever can write the static-pod directory is root.
//!
//! `check` is a pure function of the pod and returns every violation with its field path.
//! Host paths are compared lexically, component by component, after normalising `.` and `..`
//! (so `/data/../etc` is `/etc` and `/data` does not allow `/database`). Symbolic links are not
//! followed here: a prefix is allowed as the tree it names on this node.

use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, SecurityContext};
use serde_json::Value;

/// The field that makes `pod` critical, for the error.
fn critical_field(pod: &Pod) -> String {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::eviction::rank::CRITICAL_ANNOTATION))
        .is_some_and(|v| v == "true");
    let spec = pod.spec.as_ref();
    if annotated {
        format!(
            "metadata.annotations[{}]",
            crate::eviction::rank::CRITICAL_ANNOTATION
        )
    } else if spec.is_some_and(|s| s.priority.is_some()) {
        "spec.priority".into()
    } else {
        "spec.priorityClassName".into()
    }
}

/// Where the config section lives, for error field paths.
const SECTION: &str = "mqtt.remotePodPolicy";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemotePolicy {
    /// `privileged: true` containers, and any capability added (`ALL` included).
    pub allow_privileged: bool,
    /// Capabilities a remote container may add beyond the default set (`CAP_` names, any
    /// case, stored bare and upper-case: `NET_ADMIN`).
    pub allowed_capabilities: Vec<String>,
    /// `seccompProfile: Unconfined` (pod or container).
    pub allow_unconfined: bool,
    /// `procMount: Unmasked`.
    pub allow_unmasked_proc: bool,
    /// Sysctls outside kubelet's safe set (the node's `allowedUnsafeSysctls` still applies).
    pub allow_unsafe_sysctls: bool,
    /// Refuse remote pods that do not ask for their own user namespace (`hostUsers: false`).
    pub require_user_namespaces: bool,
    /// `hostNetwork`, `hostPID`, `hostIPC`.
    pub allow_host_namespaces: bool,
    /// `hostPath` volumes are allowed only at or under one of these (absolute, clean).
    pub allowed_host_paths: Vec<PathBuf>,
    /// Pods the eviction manager never chooses (a `system-*-critical` priority class, a
    /// priority of 2000000000 or more, or `tidelet.io/critical: "true"`): a remote pod that
    /// makes itself critical could take the node's memory with nothing to stop it.
    pub allow_critical: bool,
}

impl RemotePolicy {
    /// Parse the `remotePodPolicy` map (absent or `null` = the defaults). Errors name the
    /// field (`mqtt.remotePodPolicy.allowedHostPaths[1]`) and the reason.
    pub fn from_yaml(v: &Value) -> Result<RemotePolicy, (String, String)> {
        let mut policy = RemotePolicy::default();
        let map = match v {
            Value::Null => return Ok(policy),
            Value::Object(m) => m,
            _ => return Err((SECTION.into(), "must be a mapping".into())),
        };
        for (k, v) in map {
            // Keys are text here: YAML's numbers and booleans were written out when read.
            let key = k.as_str();
            let field = format!("{SECTION}.{key}");
            match key {
                "allowPrivileged" => policy.allow_privileged = boolean(&field, v)?,
                "allowHostNamespaces" => policy.allow_host_namespaces = boolean(&field, v)?,
                "allowedHostPaths" => policy.allowed_host_paths = host_paths(&field, v)?,
                "allowCritical" => policy.allow_critical = boolean(&field, v)?,
                "allowedCapabilities" => policy.allowed_capabilities = capabilities(&field, v)?,
                "allowUnconfined" => policy.allow_unconfined = boolean(&field, v)?,
                "allowUnmaskedProc" => policy.allow_unmasked_proc = boolean(&field, v)?,
                "allowUnsafeSysctls" => policy.allow_unsafe_sysctls = boolean(&field, v)?,
                "requireUserNamespaces" => policy.require_user_namespaces = boolean(&field, v)?,
                _ => {
                    return Err((
                        field,
                        "unknown key (allowPrivileged, allowedCapabilities, allowUnconfined, \
                         allowUnmaskedProc, allowUnsafeSysctls, requireUserNamespaces, \
                         allowHostNamespaces, allowedHostPaths, allowCritical)"
                            .into(),
                    ))
                }
            }
        }
        Ok(policy)
    }

    /// Every violation of the policy by `pod`, as (field path, reason).
    pub fn check(&self, pod: &Pod) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Some(spec) = &pod.spec else {
            return out;
        };
        let lists = [
            ("spec.initContainers", spec.init_containers.as_deref()),
            ("spec.containers", Some(&spec.containers[..])),
        ];
        for (list, containers) in lists {
            for (i, c) in containers.unwrap_or_default().iter().enumerate() {
                self.security_context(
                    &format!("{list}[{i}]"),
                    c.security_context.as_ref(),
                    &mut out,
                );
            }
        }
        for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
            let at = format!("spec.ephemeralContainers[{i}]");
            self.security_context(&at, c.security_context.as_ref(), &mut out);
        }
        let psc = spec.security_context.as_ref();
        if let Some(p) = psc.and_then(|s| s.seccomp_profile.as_ref()) {
            self.seccomp("spec.securityContext", p, &mut out);
        }
        if !self.allow_unsafe_sysctls {
            for (i, x) in psc
                .and_then(|s| s.sysctls.as_ref())
                .into_iter()
                .flatten()
                .enumerate()
            {
                let name = crate::security::sysctls::dotted(&x.name);
                if !crate::security::sysctls::SAFE.contains(&name.as_str()) {
                    out.push((
                        format!("spec.securityContext.sysctls[{i}].name"),
                        format!("{:?} is not in kubelet's safe set; unsafe sysctls are not allowed for remote pods ({SECTION}.allowUnsafeSysctls is false)", x.name),
                    ));
                }
            }
        }
        if self.require_user_namespaces && spec.host_users != Some(false) {
            out.push((
                "spec.hostUsers".to_string(),
                format!("remote pods must run in their own user namespace (hostUsers: false), as {SECTION}.requireUserNamespaces is true"),
            ));
        }
        if !self.allow_host_namespaces {
            for (field, on) in [
                ("spec.hostNetwork", spec.host_network),
                ("spec.hostPID", spec.host_pid),
                ("spec.hostIPC", spec.host_ipc),
            ] {
                if on == Some(true) {
                    out.push((
                        field.to_string(),
                        format!("host namespaces are not allowed for remote pods ({SECTION}.allowHostNamespaces is false)"),
                    ));
                }
            }
        }
        if !self.allow_critical
            && crate::eviction::rank::is_critical(spec, pod.metadata.annotations.as_ref())
        {
            out.push((
                critical_field(pod),
                format!("critical pods (never evicted) are not allowed for remote pods ({SECTION}.allowCritical is false)"),
            ));
        }
        for (i, v) in spec.volumes.iter().flatten().enumerate() {
            let Some(hp) = &v.host_path else { continue };
            if !self.host_path_allowed(&hp.path) {
                out.push((
                    format!("spec.volumes[{i}].hostPath.path"),
                    self.host_path_reason(&hp.path),
                ));
            }
        }
        out
    }

    /// `check`, plus the host paths resolved on this node: a path lexically under an allowed
    /// prefix that reaches elsewhere through a symbolic link (`/data/x -> /`, made by a pod
    /// that had `/data` writable) is refused too. The longest existing part of each path is
    /// resolved (`canonicalize`), and so are the allowed prefixes (one may itself be a link).
    /// This is a check at admission: the mount must still not follow links out of the
    /// prefix, which is the runtime's part.
    pub fn check_on_host(&self, pod: &Pod) -> Vec<(String, String)> {
        let mut out = self.check(pod);
        let Some(spec) = &pod.spec else {
            return out;
        };
        let prefixes: Vec<PathBuf> = self
            .allowed_host_paths
            .iter()
            .map(|p| resolve_on_host(p))
            .collect();
        for (i, v) in spec.volumes.iter().flatten().enumerate() {
            let Some(hp) = &v.host_path else { continue };
            let field = format!("spec.volumes[{i}].hostPath.path");
            if out.iter().any(|(f, _)| *f == field) {
                continue;
            }
            let Some(lexical) = normalise(&hp.path) else {
                continue;
            };
            let real = resolve_on_host(&lexical);
            if !prefixes.iter().any(|p| real.starts_with(p)) {
                out.push((
                    field,
                    format!(
                        "{:?}: resolves to {:?} through a symbolic link, which is not under a host path allowed for remote pods ({SECTION}.allowedHostPaths)",
                        hp.path,
                        real.display().to_string()
                    ),
                ));
            }
        }
        out
    }

    /// Whether `path` (absolute) is, once normalised, at or under an allowed prefix.
    pub fn host_path_allowed(&self, path: &str) -> bool {
        let Some(p) = normalise(path) else {
            return false;
        };
        self.allowed_host_paths.iter().any(|a| p.starts_with(a))
    }

    fn security_context(
        &self,
        at: &str,
        sc: Option<&SecurityContext>,
        out: &mut Vec<(String, String)>,
    ) {
        let Some(sc) = sc else { return };
        if !self.allow_privileged {
            if sc.privileged == Some(true) {
                out.push((
                    format!("{at}.securityContext.privileged"),
                    format!("privileged containers are not allowed for remote pods ({SECTION}.allowPrivileged is false)"),
                ));
            }
            let added = sc.capabilities.as_ref().and_then(|c| c.add.as_deref());
            for (i, cap) in added.unwrap_or_default().iter().enumerate() {
                if let Some(reason) = self.capability_refused(cap) {
                    out.push((
                        format!("{at}.securityContext.capabilities.add[{i}]"),
                        reason,
                    ));
                }
            }
        }
        if let Some(p) = &sc.seccomp_profile {
            self.seccomp(&format!("{at}.securityContext"), p, out);
        }
        if !self.allow_unmasked_proc && sc.proc_mount.as_deref() == Some("Unmasked") {
            out.push((
                format!("{at}.securityContext.procMount"),
                format!("an unmasked /proc is not allowed for remote pods ({SECTION}.allowUnmaskedProc is false)"),
            ));
        }
    }

    /// Why adding `cap` is refused, if it is: `ALL` always (it is every capability), one
    /// of the default set never (a no-op), any other unless `allowedCapabilities` lists it.
    fn capability_refused(&self, cap: &str) -> Option<String> {
        use crate::security::caps;
        let bare = cap.trim().to_ascii_uppercase();
        let bare = bare.strip_prefix("CAP_").unwrap_or(&bare).to_string();
        if bare == "ALL" {
            return Some(format!("{cap:?} (every capability) amounts to a privileged container, not allowed for remote pods ({SECTION}.allowPrivileged is false)"));
        }
        if caps::DEFAULT.contains(&bare.as_str()) || self.allowed_capabilities.contains(&bare) {
            return None;
        }
        Some(format!("{cap:?} is not allowed for remote pods: only the default capabilities and those in {SECTION}.allowedCapabilities ({}) may be added", if self.allowed_capabilities.is_empty() { "none".to_string() } else { self.allowed_capabilities.join(", ") }))
    }

    fn seccomp(
        &self,
        at: &str,
        p: &k8s_openapi::api::core::v1::SeccompProfile,
        out: &mut Vec<(String, String)>,
    ) {
        if !self.allow_unconfined && p.type_ == "Unconfined" {
            out.push((
                format!("{at}.seccompProfile.type"),
                format!("seccomp Unconfined is not allowed for remote pods ({SECTION}.allowUnconfined is false)"),
            ));
        }
    }

    fn host_path_reason(&self, path: &str) -> String {
        if self.allowed_host_paths.is_empty() {
            format!("{path:?}: hostPath volumes are not allowed for remote pods ({SECTION}.allowedHostPaths is empty)")
        } else {
            let allowed: Vec<String> = self
                .allowed_host_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            format!(
                "{path:?}: not under a host path allowed for remote pods ({SECTION}.allowedHostPaths: {})",
                allowed.join(", ")
            )
        }
    }
}

fn boolean(field: &str, v: &Value) -> Result<bool, (String, String)> {
    v.as_bool().ok_or_else(|| {
        (
            field.to_string(),
            format!("{}: must be true or false", show(v)),
        )
    })
}

/// The items of a list key (`null` is none), or the error naming what it must be a list of.
fn items<'a>(field: &str, v: &'a Value, of_what: &str) -> Result<&'a [Value], (String, String)> {
    match v {
        Value::Null => Ok(&[]),
        Value::Array(s) => Ok(s),
        _ => Err((
            field.to_string(),
            format!("{}: must be a list of {of_what}", show(v)),
        )),
    }
}

fn capabilities(field: &str, v: &Value) -> Result<Vec<String>, (String, String)> {
    let items = items(field, v, "capability names")?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let name = item.as_str().ok_or_else(|| {
            (
                at.clone(),
                format!("{}: must be a capability name", show(item)),
            )
        })?;
        let n = crate::security::caps::number(name)
            .ok_or_else(|| (at.clone(), format!("{name:?} is not a Linux capability")))?;
        out.push(crate::security::caps::NAMES[n as usize].to_string());
    }
    Ok(out)
}

fn host_paths(field: &str, v: &Value) -> Result<Vec<PathBuf>, (String, String)> {
    let items = items(field, v, "absolute paths")?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(s) = item.as_str() else {
            return Err((at, format!("{}: must be an absolute path", show(item))));
        };
        if !s.starts_with('/') {
            return Err((at, format!("{s:?}: must be an absolute path")));
        }
        match normalise(s) {
            Some(clean) if clean.as_os_str() == s => out.push(clean),
            Some(clean) => {
                return Err((
                    at,
                    format!(
                        "{s:?}: must be a clean path (write {:?})",
                        clean.display().to_string()
                    ),
                ))
            }
            None => return Err((at, format!("{s:?}: must be a clean absolute path"))),
        }
    }
    Ok(out)
}

fn show(v: &Value) -> String {
    v.to_string()
}

/// `path` made absolute-clean lexically: `.` and empty components dropped, `..` removes the
/// previous component and stops at `/` (as the kernel resolves `/..`). `None` for a relative
/// path or one with a NUL.
pub fn normalise(path: &str) -> Option<PathBuf> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// `path` (absolute, normalised) with its longest existing ancestor replaced by its
/// canonical form; the part that does not exist yet is appended as is.
pub fn resolve_on_host(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
