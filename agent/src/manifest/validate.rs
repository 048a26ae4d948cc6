//! Validation of a Pod as the API server would (`ValidatePodCreate`), for what tidelet runs,
//! plus what tidelet needs on top: the pod name is used in paths and as the hostname, so
//! `<name>-<node>` must itself be a DNS-1123 subdomain, and a given UID must be path-safe.
//! Every problem is collected, not just the first.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, ResourceRequirements, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::defaults::static_pod_name;
use super::names;
use crate::quantity;

/// A problem at a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }
    /// Add `reason` if `check` found one.
    fn check(&mut self, field: impl Into<String>, check: Result<(), String>) {
        if let Err(r) = check {
            self.add(field, r);
        }
    }
}

/// Total size of annotations (keys and values), as the API server limits it.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 << 10;
/// Largest value for user and group IDs (the API server's `int32` limit).
const MAX_ID: i64 = i32::MAX as i64;

/// How the pod will be named on the node, which decides the name checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Naming {
    /// A static pod: run as `<name>-<node>`, which must itself be a valid name.
    Static,
    /// A pod from the control plane: run under the name it was given.
    AsGiven,
}

/// Everything wrong with `pod` (as read, before defaulting) for running on `node_name`.
pub fn validate_pod(pod: &Pod, node_name: &str) -> Vec<FieldError> {
    validate_pod_named(pod, node_name, Naming::Static)
}

/// `validate_pod` with the name checks of `naming`.
pub(crate) fn validate_pod_named(pod: &Pod, node_name: &str, naming: Naming) -> Vec<FieldError> {
    let mut e = Errors::default();
    validate_metadata(pod, node_name, naming, &mut e);
    let Some(spec) = &pod.spec else {
        e.add("spec", "required");
        return e.0;
    };
    if spec.containers.is_empty() {
        e.add("spec.containers", "at least one container is required");
    }
    let volumes = validate_volumes(spec.volumes.as_deref().unwrap_or_default(), &mut e);
    let mut container_names = HashSet::new();
    let lists = [
        ("spec.containers", &spec.containers[..]),
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let at = format!("{list}[{i}]");
            if !container_names.insert(c.name.as_str()) && !c.name.is_empty() {
                e.add(
                    format!("{at}.name"),
                    format!("{:?}: duplicate container name", c.name),
                );
            }
            let host_network = spec.host_network.unwrap_or(false);
            validate_container(c, &at, &volumes, host_network, &mut e);
        }
    }
    one_of(
        &mut e,
        "spec.restartPolicy",
        spec.restart_policy.as_deref(),
        &["Always", "OnFailure", "Never"],
    );
    one_of(
        &mut e,
        "spec.dnsPolicy",
        spec.dns_policy.as_deref(),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
    );
    validate_dns(spec, &mut e);
    if let Some(g) = spec.termination_grace_period_seconds {
        if g < 0 {
            e.add(
                "spec.terminationGracePeriodSeconds",
                format!("{g}: must be greater than or equal to 0"),
            );
        }
    }
    for (field, v) in [
        ("spec.hostname", &spec.hostname),
        ("spec.subdomain", &spec.subdomain),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            e.check(field, names::dns1123_label(v));
        }
    }
    if let Some(sc) = &spec.security_context {
        id(&mut e, "spec.securityContext.runAsUser", sc.run_as_user);
        id(&mut e, "spec.securityContext.runAsGroup", sc.run_as_group);
        for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
            id(
                &mut e,
                &format!("spec.securityContext.supplementalGroups[{i}]"),
                Some(*g),
            );
        }
        id(&mut e, "spec.securityContext.fsGroup", sc.fs_group);
        one_of(
            &mut e,
            "spec.securityContext.fsGroupChangePolicy",
            sc.fs_group_change_policy.as_deref(),
            &["OnRootMismatch", "Always"],
        );
        let mut seen = HashSet::new();
        for (i, x) in sc.sysctls.iter().flatten().enumerate() {
            let at = format!("spec.securityContext.sysctls[{i}].name");
            let dotted = crate::security::sysctls::dotted(&x.name);
            if !seen.insert(dotted) {
                e.add(at, format!("{:?}: duplicate sysctl", x.name));
            }
        }
    }
    validate_security(spec, &mut e);
    e.0
}

/// The API server's `validatePodDNSConfig` and `ValidateHostAliases`: `dnsPolicy: None` needs
/// a `dnsConfig` with a nameserver; at most 3 nameservers, each an IP address; at most 32
/// search domains of at most 2048 characters in all, each a DNS subdomain; options named;
/// each host alias an IP address with names that are DNS subdomains.
fn validate_dns(spec: &k8s_openapi::api::core::v1::PodSpec, e: &mut Errors) {
    let ip = |v: &str| {
        v.parse::<std::net::IpAddr>()
            .map(|_| ())
            .map_err(|_| format!("{v:?}: must be a valid IP address"))
    };
    let cfg = spec.dns_config.as_ref();
    if spec.dns_policy.as_deref() == Some("None") {
        match cfg {
            None => e.add(
                "spec.dnsConfig",
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ),
            Some(c) if c.nameservers.as_ref().is_none_or(|n| n.is_empty()) => e.add(
                "spec.dnsConfig.nameservers",
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            ),
            _ => {}
        }
    }
    if let Some(c) = cfg {
        let ns = c.nameservers.as_deref().unwrap_or_default();
        if ns.len() > 3 {
            e.add(
                "spec.dnsConfig.nameservers",
                format!("{}: must not have more than 3 nameservers", ns.len()),
            );
        }
        for (i, n) in ns.iter().enumerate() {
            e.check(format!("spec.dnsConfig.nameservers[{i}]"), ip(n));
        }
        let searches = c.searches.as_deref().unwrap_or_default();
        if searches.len() > 32 {
            e.add(
                "spec.dnsConfig.searches",
                format!(
                    "{}: must not have more than 32 search paths",
                    searches.len()
                ),
            );
        }
        let chars: usize =
            searches.iter().map(|s| s.len()).sum::<usize>() + searches.len().saturating_sub(1);
        if chars > 2048 {
            e.add(
                "spec.dnsConfig.searches",
                format!("must not have more than 2048 characters (including spaces) in the search list, not {chars}"),
            );
        }
        for (i, d) in searches.iter().enumerate() {
            // A trailing dot is allowed (a fully qualified name).
            let d = d.strip_suffix('.').unwrap_or(d);
            e.check(
                format!("spec.dnsConfig.searches[{i}]"),
                names::dns1123_subdomain(d),
            );
        }
        for (i, o) in c.options.iter().flatten().enumerate() {
            if o.name.as_deref().unwrap_or("").is_empty() {
                e.add(
                    format!("spec.dnsConfig.options[{i}].name"),
                    "must not be empty",
                );
            }
        }
    }
    for (i, h) in spec.host_aliases.iter().flatten().enumerate() {
        e.check(format!("spec.hostAliases[{i}].ip"), ip(&h.ip));
        for (j, n) in h.hostnames.iter().flatten().enumerate() {
            e.check(
                format!("spec.hostAliases[{i}].hostnames[{j}]"),
                names::dns1123_subdomain(n),
            );
        }
    }
}

/// The `securityContext` rules the API server enforces, and what tidelet could not honour
/// (an unknown capability, a bad seccomp profile reference, procMount without a user
/// namespace), as `security::decide` finds them.
fn validate_security(spec: &k8s_openapi::api::core::v1::PodSpec, e: &mut Errors) {
    use crate::security::{decide, NodePolicy};
    let node = NodePolicy {
        seccomp_default: true,
        available_caps: crate::security::CapSet::all(crate::security::caps::NAMES.len() as u32 - 1),
    };
    if spec.host_users == Some(false) {
        for (field, on) in [
            ("spec.hostNetwork", spec.host_network),
            ("spec.hostPID", spec.host_pid),
            ("spec.hostIPC", spec.host_ipc),
        ] {
            if on == Some(true) {
                e.add(field, "must not be true when `hostUsers` is false");
            }
        }
    }
    if let Some(p) = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
    {
        localhost_only_with_type(p, "spec.securityContext.seccompProfile", e);
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let at = format!("spec.containers[{i}]");
        if let Err(err) = decide(spec, c, &at, &node) {
            // A pod-level field is found once per container: reported once.
            if !e.0.iter().any(|x| x.field == err.field) {
                e.add(err.field, err.reason);
            }
        }
        let Some(sc) = &c.security_context else {
            continue;
        };
        if let Some(p) = &sc.seccomp_profile {
            localhost_only_with_type(p, &format!("{at}.securityContext.seccompProfile"), e);
        }
        if sc.allow_privilege_escalation == Some(false) {
            let field = format!("{at}.securityContext.allowPrivilegeEscalation");
            if sc.privileged == Some(true) {
                e.add(
                    &field,
                    "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
                );
            }
            let adds = sc
                .capabilities
                .as_ref()
                .and_then(|c| c.add.as_deref())
                .unwrap_or_default();
            if adds
                .iter()
                .any(|a| crate::security::caps::number(a) == Some(21))
            {
                e.add(&field, "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN");
            }
        }
    }
}

fn localhost_only_with_type(
    p: &k8s_openapi::api::core::v1::SeccompProfile,
    at: &str,
    e: &mut Errors,
) {
    if p.type_ != "Localhost" && p.localhost_profile.is_some() {
        e.add(
            format!("{at}.localhostProfile"),
            "can only be set for type \"Localhost\"",
        );
    }
}

fn validate_metadata(pod: &Pod, node_name: &str, naming: Naming, e: &mut Errors) {
    let m = &pod.metadata;
    match m.name.as_deref() {
        None | Some("") => e.add(
            "metadata.name",
            "required (static pods need a name; generateName is not supported)",
        ),
        Some(name) => match names::dns1123_subdomain(name) {
            Err(r) => e.add("metadata.name", r),
            Ok(()) if naming == Naming::AsGiven => {}
            Ok(()) => {
                let full = static_pod_name(name, node_name);
                if let Err(r) = names::dns1123_subdomain(&full) {
                    e.add(
                        "metadata.name",
                        format!("the static pod name {full:?} (<name>-<node>) is not valid: {r}"),
                    );
                }
            }
        },
    }
    if let Some(ns) = m.namespace.as_deref().filter(|n| !n.is_empty()) {
        e.check("metadata.namespace", names::dns1123_label(ns));
    }
    for (k, v) in m.labels.iter().flatten() {
        let at = format!("metadata.labels[{k:?}]");
        e.check(at.clone(), names::qualified_name(k));
        e.check(at, names::label_value(v));
    }
    let mut total = 0;
    for (k, v) in m.annotations.iter().flatten() {
        e.check(
            format!("metadata.annotations[{k:?}]"),
            names::qualified_name(&k.to_lowercase()),
        );
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        e.add(
            "metadata.annotations",
            format!("{total} bytes: may not be larger than {MAX_ANNOTATIONS_BYTES} bytes in total"),
        );
    }
}

/// Volume names, checked and returned for the mounts to refer to.
fn validate_volumes<'a>(volumes: &'a [Volume], e: &mut Errors) -> HashSet<&'a str> {
    let mut seen = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let at = format!("spec.volumes[{i}]");
        e.check(format!("{at}.name"), names::dns1123_label(&v.name));
        if !seen.insert(v.name.as_str()) {
            e.add(
                format!("{at}.name"),
                format!("{:?}: duplicate volume name", v.name),
            );
        }
        if let Some(hp) = &v.host_path {
            if hp.path.is_empty() {
                e.add(format!("{at}.hostPath.path"), "required");
            } else {
                e.check(
                    format!("{at}.hostPath.path"),
                    names::clean_path(&hp.path, true),
                );
            }
            let types = [
                "",
                "DirectoryOrCreate",
                "Directory",
                "FileOrCreate",
                "File",
                "Socket",
                "CharDevice",
                "BlockDevice",
            ];
            one_of(
                e,
                &format!("{at}.hostPath.type"),
                hp.type_.as_deref(),
                &types,
            );
        }
        if let Some(ed) = &v.empty_dir {
            one_of(
                e,
                &format!("{at}.emptyDir.medium"),
                ed.medium.as_deref(),
                &["", "Memory"],
            );
            if let Some(q) = &ed.size_limit {
                quantity_at(e, &format!("{at}.emptyDir.sizeLimit"), "memory", q);
            }
        }
    }
    seen
}

fn validate_container(
    c: &Container,
    at: &str,
    volumes: &HashSet<&str>,
    host_network: bool,
    e: &mut Errors,
) {
    e.check(format!("{at}.name"), names::dns1123_label(&c.name));
    match c.image.as_deref() {
        None | Some("") => e.add(format!("{at}.image"), "required"),
        Some(i) if i.chars().any(char::is_whitespace) => e.add(
            format!("{at}.image"),
            format!("{i:?}: must not contain whitespace"),
        ),
        Some(_) => {}
    }
    one_of(
        e,
        &format!("{at}.imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        &["Always", "IfNotPresent", "Never"],
    );
    one_of(
        e,
        &format!("{at}.terminationMessagePolicy"),
        c.termination_message_policy.as_deref(),
        &["File", "FallbackToLogsOnError"],
    );
    if let Some(w) = c.working_dir.as_deref().filter(|w| !w.is_empty()) {
        if !w.starts_with('/') {
            e.add(
                format!("{at}.workingDir"),
                format!("{w:?}: must be an absolute path"),
            );
        }
    }
    if let Some(r) = &c.resources {
        validate_resources(r, &format!("{at}.resources"), e);
    }
    for (i, env) in c.env.iter().flatten().enumerate() {
        validate_env(env, &format!("{at}.env[{i}]"), e);
    }
    let mut paths = HashSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mat = format!("{at}.volumeMounts[{i}]");
        if !volumes.contains(m.name.as_str()) {
            e.add(
                format!("{mat}.name"),
                format!("{:?}: no volume of that name in spec.volumes", m.name),
            );
        }
        e.check(
            format!("{mat}.mountPath"),
            names::clean_path(&m.mount_path, true),
        );
        if !paths.insert(m.mount_path.trim_end_matches('/')) {
            e.add(
                format!("{mat}.mountPath"),
                format!("{:?}: must be unique", m.mount_path),
            );
        }
    }
    let mut port_names = HashSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let pat = format!("{at}.ports[{i}]");
        if !(1..=65535).contains(&p.container_port) {
            e.add(
                format!("{pat}.containerPort"),
                format!("{}: must be between 1 and 65535", p.container_port),
            );
        }
        match p.host_port.filter(|hp| *hp != 0) {
            Some(hp) if !(1..=65535).contains(&hp) => e.add(
                format!("{pat}.hostPort"),
                format!("{hp}: must be between 1 and 65535"),
            ),
            Some(hp) if host_network && hp != p.container_port => e.add(
                format!("{pat}.hostPort"),
                format!(
                    "{hp}: must match containerPort {} when hostNetwork is true",
                    p.container_port
                ),
            ),
            _ => {}
        }
        one_of(
            e,
            &format!("{pat}.protocol"),
            p.protocol.as_deref(),
            &["TCP", "UDP", "SCTP"],
        );
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            e.check(format!("{pat}.name"), names::port_name(n));
            if !port_names.insert(n) {
                e.add(format!("{pat}.name"), format!("{n:?}: duplicate port name"));
            }
        }
    }
    if let Some(sc) = &c.security_context {
        id(
            e,
            &format!("{at}.securityContext.runAsUser"),
            sc.run_as_user,
        );
        id(
            e,
            &format!("{at}.securityContext.runAsGroup"),
            sc.run_as_group,
        );
    }
}

fn validate_env(env: &EnvVar, at: &str, e: &mut Errors) {
    e.check(format!("{at}.name"), names::env_var_name(&env.name));
    let Some(from) = &env.value_from else { return };
    if !env.value.as_deref().unwrap_or_default().is_empty() {
        e.add(
            format!("{at}.valueFrom"),
            "may not be specified when `value` is not empty",
        );
    }
    let n = [
        from.field_ref.is_some(),
        from.resource_field_ref.is_some(),
        from.config_map_key_ref.is_some(),
        from.secret_key_ref.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    match n {
        0 => e.add(format!("{at}.valueFrom"), "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"),
        1 => {}
        _ => e.add(format!("{at}.valueFrom"), "may not have more than one field specified at a time"),
    }
    if let Some(f) = &from.field_ref {
        if let Some(v) = f
            .api_version
            .as_deref()
            .filter(|v| !v.is_empty() && *v != "v1")
        {
            e.add(
                format!("{at}.valueFrom.fieldRef.apiVersion"),
                format!("{v:?}: only \"v1\" is supported"),
            );
        }
        e.check(
            format!("{at}.valueFrom.fieldRef.fieldPath"),
            names::env_field_path(&f.field_path),
        );
    }
    if let Some(r) = &from.resource_field_ref {
        e.check(
            format!("{at}.valueFrom.resourceFieldRef.resource"),
            names::env_resource(&r.resource),
        );
        if let Some(d) = &r.divisor {
            let ok = match r.resource.split_once('.').map(|(_, res)| res) {
                Some("cpu") => ["1m", "1"].contains(&d.0.as_str()),
                _ => [
                    "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi",
                    "1Ei",
                ]
                .contains(&d.0.as_str()),
            };
            if !ok && !d.0.is_empty() {
                e.add(
                    format!("{at}.valueFrom.resourceFieldRef.divisor"),
                    format!("{:?}: not a valid divisor for {}", d.0, r.resource),
                );
            }
        }
    }
}

/// Names, quantities, non-negativity, and requests against limits (per the API server:
/// requests <= limits for overcommittable resources; equal, and a limit required, for the
/// others: hugepages and extended resources).
fn validate_resources(r: &ResourceRequirements, at: &str, e: &mut Errors) {
    let empty = BTreeMap::new();
    let limits = r.limits.as_ref().unwrap_or(&empty);
    let requests = r.requests.as_ref().unwrap_or(&empty);
    let mut lim_values = BTreeMap::new();
    for (name, q) in limits {
        let f = format!("{at}.limits[{name:?}]");
        e.check(f.clone(), names::resource_name(name));
        if let Some(v) = quantity_at(e, &f, name, q) {
            lim_values.insert(name.as_str(), v);
        }
    }
    for (name, q) in requests {
        let f = format!("{at}.requests[{name:?}]");
        e.check(f.clone(), names::resource_name(name));
        let Some(v) = quantity_at(e, &f, name, q) else {
            continue;
        };
        let overcommit = names::overcommit_allowed(name);
        match lim_values.get(name.as_str()) {
            Some(&l) if !overcommit && v != l => e.add(
                f,
                format!(
                    "{}: must be equal to {name} limit of {}",
                    q.0, limits[name].0
                ),
            ),
            Some(&l) if v > l => e.add(
                f,
                format!(
                    "{}: must be less than or equal to {name} limit of {}",
                    q.0, limits[name].0
                ),
            ),
            None if !overcommit && !limits.contains_key(name) => e.add(
                format!("{at}.limits[{name:?}]"),
                "required: a limit must be set for resources that cannot be overcommitted",
            ),
            _ => {}
        }
    }
}

/// The quantity's value (millicores for CPU, units otherwise), or `None` after recording why
/// it is not acceptable.
fn quantity_at(e: &mut Errors, at: &str, resource: &str, q: &Quantity) -> Option<i64> {
    let parsed = if resource == "cpu" {
        quantity::parse_milli(&q.0)
    } else {
        quantity::parse_units(&q.0)
    };
    match parsed {
        Err(err) => {
            e.add(at, err.to_string());
            None
        }
        Ok(v) if v < 0 => {
            e.add(at, format!("{}: must be greater than or equal to 0", q.0));
            None
        }
        Ok(v) => Some(v),
    }
}

fn one_of(e: &mut Errors, at: &str, value: Option<&str>, allowed: &[&str]) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        if !allowed.contains(&v) {
            e.add(
                at,
                format!(
                    "{v:?}: must be one of {}",
                    allowed
                        .iter()
                        .filter(|a| !a.is_empty())
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
}

fn id(e: &mut Errors, at: &str, v: Option<i64>) {
    if let Some(v) = v.filter(|v| !(0..=MAX_ID).contains(v)) {
        e.add(at, format!("{v}: must be between 0 and {MAX_ID}"));
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
