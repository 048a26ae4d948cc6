//! A container's process (argv, env, working directory, user) from its spec and its image,
//! following Kubernetes' rules: `command` replaces the image's Entrypoint and drops its Cmd;
//! `args` alone replaces Cmd; `$(VAR)` references are expanded in command, args and env.
//!
//! Who does what in Kubernetes, and so here:
//! - kubelet (`makeEnvironmentVariables`) resolves the container's `env` in order, expanding
//!   `$(VAR)` in each value against the entries *before* it (never the image's env), and
//!   `ExpandContainerCommandAndArgs` expands command and args against the resolved container
//!   env (again without the image's env);
//! - the CRI runtime (containerd `WithProcessArgs`, `WithEnv`, `WithUser`,
//!   `WithAdditionalGIDs`) merges image and container argv and env, and resolves the user
//!   against the image's `/etc/passwd` and `/etc/group`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSecurityContext};
use tidelet_images::ImageConfig;

use crate::quantity;

mod expand;
mod user;

pub use expand::expand;
use user::{resolve_user, LayeredRootfs};

/// `PATH` added when neither the image nor the container sets one (containerd's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Values for `env[].valueFrom.fieldRef` and `resourceFieldRef`, and the pod hostname.
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
    /// The pod's hostname (`spec.hostname`); empty means the pod name cut to 63 characters,
    /// as kubelet does. Used for `HOSTNAME`.
    pub hostname: String,
    /// `status.podIPs`; empty means `[pod_ip]` (or none when that is empty).
    pub pod_ips: Vec<String>,
    /// What `resourceFieldRef` reports for a `limits.{cpu,memory,ephemeral-storage}` the
    /// container does not set, as kubelet uses the node's allocatable resources (see
    /// `NodeAllocatable::from_host`). A zero here is reported as `0`.
    pub allocatable: NodeAllocatable,
}

/// The node's allocatable resources (kubelet's `nodeAllocatable`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
    pub ephemeral_storage_bytes: i64,
}

impl NodeAllocatable {
    /// The host's capacity, as kubelet's allocatable without reservations: CPUs this process
    /// may run on, `MemTotal` of `<proc_root>/meminfo`, and the size of the file system
    /// holding `root_dir` (kubelet's root directory, where ephemeral storage lives).
    pub fn from_host(proc_root: &Path, root_dir: &Path) -> std::io::Result<NodeAllocatable> {
        let meminfo = proc_root.join("meminfo");
        let text = std::fs::read_to_string(&meminfo)?;
        let memory_bytes = meminfo_total_bytes(&text).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: no MemTotal line", meminfo.display()),
            )
        })?;
        let cpus = std::thread::available_parallelism()?.get() as i64;
        let fs = nix::sys::statvfs::statvfs(root_dir).map_err(std::io::Error::from)?;
        let ephemeral_storage_bytes =
            (fs.blocks() as i64).saturating_mul(fs.fragment_size() as i64);
        Ok(NodeAllocatable {
            cpu_milli: cpus * 1000,
            memory_bytes,
            ephemeral_storage_bytes,
        })
    }
}

/// `MemTotal:  16318912 kB` -> bytes.
fn meminfo_total_bytes(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: i64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// What the runtime executes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    pub argv: Vec<String>,
    /// `KEY=VALUE`, image env first, then the container's (a later value replaces an earlier
    /// one in place), deduplicated; then `HOSTNAME` and `PATH` when neither set them.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// The primary gid first (as containerd sets it), then the user's groups from the image's
    /// `/etc/group`, then the pod's `supplementalGroups`; no duplicates.
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ResolveError {
    /// Field path inside the container, e.g. `env[2].valueFrom`.
    pub field: String,
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ResolveError {
    ResolveError {
        field: field.into(),
        reason: reason.into(),
    }
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
    let container_env = container_env(container, fields)?;
    let argv = argv(container, image, &container_env)?;
    let env = merge_env(&image.env, &container_env, &pod_hostname(fields));
    let cwd = [
        container.working_dir.as_deref().unwrap_or_default(),
        image.working_dir.as_str(),
    ]
    .into_iter()
    .find(|d| !d.is_empty())
    .unwrap_or("/")
    .to_string();
    let user = resolve_user(container, pod_security, image, &LayeredRootfs { lowerdirs })?;
    Ok(Process {
        argv,
        env,
        cwd,
        uid: user.uid,
        gid: user.gid,
        additional_gids: user.additional_gids,
    })
}

/// kubelet's hostname for a pod: `spec.hostname`, else the pod name, cut to 63 characters
/// without a trailing `-` or `.`.
pub fn pod_hostname(fields: &PodFields) -> String {
    if !fields.hostname.is_empty() {
        return fields.hostname.clone();
    }
    let mut h: String = fields.pod_name.chars().take(63).collect();
    while h.ends_with(['-', '.']) {
        h.pop();
    }
    h
}

/// The container's env as kubelet resolves it: in order, each value expanded against the
/// entries before it; a name given twice keeps its first position and its last value.
fn container_env(c: &Container, fields: &PodFields) -> Result<Vec<(String, String)>, ResolveError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, e) in c.env.iter().flatten().enumerate() {
        let value = match env_value(c, e, i, fields, &out, &index)? {
            Some(v) => v,
            None => continue,
        };
        match index.get(&e.name) {
            Some(&at) => out[at].1 = value,
            None => {
                index.insert(e.name.clone(), out.len());
                out.push((e.name.clone(), value));
            }
        }
    }
    Ok(out)
}

/// One entry's value; `None` for an optional reference that is absent (kubelet skips it).
fn env_value(
    c: &Container,
    e: &EnvVar,
    i: usize,
    fields: &PodFields,
    earlier: &[(String, String)],
    index: &HashMap<String, usize>,
) -> Result<Option<String>, ResolveError> {
    let value = e.value.as_deref().unwrap_or_default();
    if !value.is_empty() {
        let lookup = |name: &str| index.get(name).map(|&at| earlier[at].1.as_str());
        return Ok(Some(expand(value, lookup)));
    }
    let Some(from) = &e.value_from else {
        return Ok(Some(String::new()));
    };
    let at = format!("env[{i}].valueFrom");
    if let Some(f) = &from.field_ref {
        return field_ref(&f.field_path, fields)
            .map(Some)
            .map_err(|r| err(format!("{at}.fieldRef.fieldPath"), r));
    }
    if let Some(r) = &from.resource_field_ref {
        if let Some(name) = r
            .container_name
            .as_deref()
            .filter(|n| !n.is_empty() && *n != c.name)
        {
            return Err(err(
                format!("{at}.resourceFieldRef.containerName"),
                format!("{name:?}: only the container's own resources can be referred to"),
            ));
        }
        let divisor = r.divisor.as_ref().map(|d| d.0.as_str()).unwrap_or_default();
        return resource_field_ref(c, &r.resource, divisor, &fields.allocatable)
            .map(Some)
            .map_err(|reason| err(format!("{at}.resourceFieldRef"), reason));
    }
    let optional = |o: Option<bool>| o.unwrap_or(false);
    if let Some(r) = &from.config_map_key_ref {
        if optional(r.optional) {
            return Ok(None);
        }
        return Err(err(
            format!("{at}.configMapKeyRef"),
            "ConfigMaps are not supported by tidelet yet (set optional: true to skip)",
        ));
    }
    if let Some(r) = &from.secret_key_ref {
        if optional(r.optional) {
            return Ok(None);
        }
        return Err(err(
            format!("{at}.secretKeyRef"),
            "Secrets are not supported by tidelet yet (set optional: true to skip)",
        ));
    }
    Err(err(at, "no source given"))
}

/// kubelet's `podFieldSelectorRuntimeValue` for the paths the API server allows in env.
fn field_ref(path: &str, f: &PodFields) -> Result<String, String> {
    let pod_ips = || {
        if f.pod_ips.is_empty() {
            f.pod_ip.clone()
        } else {
            f.pod_ips.join(",")
        }
    };
    Ok(match path {
        "metadata.name" => f.pod_name.clone(),
        "metadata.namespace" => f.namespace.clone(),
        "metadata.uid" => f.uid.clone(),
        "spec.nodeName" => f.node_name.clone(),
        "spec.serviceAccountName" => f.service_account.clone(),
        "status.hostIP" | "status.hostIPs" => f.host_ip.clone(),
        "status.podIP" => f.pod_ip.clone(),
        "status.podIPs" => pod_ips(),
        _ => {
            let map = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_default();
            match subscript(path) {
                Some(("labels", k)) => map(&f.labels, k),
                Some(("annotations", k)) => map(&f.annotations, k),
                _ => return Err(format!("{path:?}: not a supported field path")),
            }
        }
    })
}

/// `metadata.labels['k']` -> `("labels", "k")`.
fn subscript(p: &str) -> Option<(&str, &str)> {
    let rest = p.strip_prefix("metadata.")?;
    let (map, rest) = rest.split_once('[')?;
    let key = rest.strip_prefix('\'')?.strip_suffix("']")?;
    matches!(map, "labels" | "annotations").then_some((map, key))
}

/// kubelet's `ExtractContainerResourceValue`, after `MergeContainerResourceLimits` (a missing
/// or zero cpu/memory/ephemeral-storage limit is the node's allocatable): the value divided by
/// the divisor (default 1), rounded up.
fn resource_field_ref(
    c: &Container,
    resource: &str,
    divisor: &str,
    alloc: &NodeAllocatable,
) -> Result<String, String> {
    let (kind, name) = resource
        .split_once('.')
        .filter(|(k, _)| matches!(*k, "limits" | "requests"))
        .ok_or_else(|| format!("{resource:?}: unsupported container resource"))?;
    let cpu = name == "cpu";
    if !(cpu || matches!(name, "memory" | "ephemeral-storage") || name.starts_with("hugepages-")) {
        return Err(format!("{resource:?}: unsupported container resource"));
    }
    let parse = |q: &str| {
        if cpu {
            quantity::parse_milli(q)
        } else {
            quantity::parse_units(q)
        }
    };
    let res = c.resources.as_ref();
    let list = if kind == "limits" {
        res.and_then(|r| r.limits.as_ref())
    } else {
        res.and_then(|r| r.requests.as_ref())
    };
    let mut value = match list.and_then(|l| l.get(name)) {
        Some(q) => parse(&q.0).map_err(|e| e.to_string())?,
        None => 0,
    };
    if kind == "limits" && value == 0 {
        value = match name {
            "cpu" => alloc.cpu_milli,
            "memory" => alloc.memory_bytes,
            "ephemeral-storage" => alloc.ephemeral_storage_bytes,
            _ => 0,
        };
    }
    let divisor = match divisor {
        "" => 0,
        d => parse(d).map_err(|e| format!("divisor: {e}"))?,
    };
    let divisor = if divisor > 0 {
        divisor
    } else {
        parse("1").map_err(|e| e.to_string())?
    };
    Ok(((value + divisor - 1).div_euclid(divisor)).to_string())
}

/// containerd's `WithProcessArgs`: a non-empty `command` replaces Entrypoint and drops Cmd;
/// `args` alone replaces Cmd; an Entrypoint of `[""]` means none. Command and args are
/// expanded against the container env (not the image's).
fn argv(
    c: &Container,
    image: &ImageConfig,
    env: &[(String, String)],
) -> Result<Vec<String>, ResolveError> {
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter()
            .flatten()
            .map(|s| expand(s, |n| map.get(n).copied()))
            .collect()
    };
    let mut command = expand_all(&c.command);
    let mut args = expand_all(&c.args);
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(err(
            "command",
            "no command specified (neither the container nor its image gives one)",
        ));
    }
    Ok(command)
}

/// Image env, then container env, each `KEY=VALUE` replacing an earlier one of the same key
/// in place (an image entry without `=` unsets the key, as containerd does); then `HOSTNAME`
/// and `PATH` if still unset.
fn merge_env(image: &[String], container: &[(String, String)], hostname: &str) -> Vec<String> {
    let mut out: Vec<Option<String>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let container = container.iter().map(|(k, v)| format!("{k}={v}"));
    for entry in image.iter().cloned().chain(container) {
        let (key, set) = match entry.split_once('=') {
            Some((k, _)) => (k.to_string(), true),
            None => (entry.clone(), false),
        };
        match (index.get(&key), set) {
            (Some(&at), true) => out[at] = Some(entry),
            (Some(&at), false) => out[at] = None,
            (None, true) => {
                index.insert(key, out.len());
                out.push(Some(entry));
            }
            (None, false) => {}
        }
    }
    let mut env: Vec<String> = out.into_iter().flatten().collect();
    let has = |env: &[String], k: &str| {
        env.iter()
            .any(|e| e.split_once('=').is_some_and(|(key, _)| key == k))
    };
    if !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={hostname}"));
    }
    if !has(&env, "PATH") {
        env.push(DEFAULT_PATH.to_string());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        let mut v = v;
        v["name"] = json!("app");
        serde_json::from_value(v).unwrap()
    }

    fn image(entrypoint: &[&str], cmd: &[&str], env: &[&str]) -> ImageConfig {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        ImageConfig {
            entrypoint: s(entrypoint),
            cmd: s(cmd),
            env: s(env),
            ..Default::default()
        }
    }

    fn fields() -> PodFields {
        PodFields {
            pod_name: "web-node1".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            node_name: "node1".into(),
            host_ip: "10.0.0.1".into(),
            pod_ip: "10.1.0.5".into(),
            service_account: "sa".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            annotations: [("a/b".to_string(), "c".to_string())].into(),
            pod_ips: vec!["10.1.0.5".into(), "fd00::5".into()],
            allocatable: NodeAllocatable {
                cpu_milli: 2000,
                memory_bytes: 4 << 30,
                ephemeral_storage_bytes: 10 << 30,
            },
            ..Default::default()
        }
    }

    fn resolve(c: serde_json::Value, img: &ImageConfig) -> Result<Process, ResolveError> {
        resolve_process(&container(c), None, img, &[], &fields())
    }

    #[test]
    fn argv_follows_entrypoint_and_cmd_rules() {
        let img = image(&["/bin/sh", "-c"], &["echo hi"], &[]);
        type Case<'a> = (
            serde_json::Value,
            ImageConfig,
            Result<Vec<&'a str>, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (json!({}), img.clone(), Ok(vec!["/bin/sh", "-c", "echo hi"])),
            (
                json!({"command": ["ls", "-l"]}),
                img.clone(),
                Ok(vec!["ls", "-l"]),
            ),
            (
                json!({"args": ["date"]}),
                img.clone(),
                Ok(vec!["/bin/sh", "-c", "date"]),
            ),
            (
                json!({"command": ["a"], "args": ["b"]}),
                img.clone(),
                Ok(vec!["a", "b"]),
            ),
            (
                json!({"command": [], "args": []}),
                img.clone(),
                Ok(vec!["/bin/sh", "-c", "echo hi"]),
            ),
            (json!({}), image(&[""], &["top"], &[]), Ok(vec!["top"])),
            (
                json!({"args": ["x"]}),
                image(&[], &["top"], &[]),
                Ok(vec!["x"]),
            ),
            (
                json!({}),
                image(&[], &[], &[]),
                Err("command: no command specified"),
            ),
            (
                json!({"command": ["echo", "$(X)", "$$(X)", "$(Y)"], "env": [{"name": "X", "value": "1"}]}),
                img.clone(),
                Ok(vec!["echo", "1", "$(X)", "$(Y)"]),
            ),
            // The image's env is not used for expansion, and image Cmd is never expanded.
            (
                json!({"args": ["$(IMG)"]}),
                image(&["e"], &[], &["IMG=i"]),
                Ok(vec!["e", "$(IMG)"]),
            ),
            (
                json!({}),
                image(&["e", "$(X)"], &[], &[]),
                Ok(vec!["e", "$(X)"]),
            ),
        ];
        for (c, img, want) in cases {
            let got = resolve(c.clone(), &img).map(|p| p.argv);
            match want {
                Ok(argv) => {
                    assert_eq!(got, Ok(argv.iter().map(|s| s.to_string()).collect()), "{c}")
                }
                Err(e) => assert!(
                    got.as_ref().is_err_and(|g| g.to_string().starts_with(e)),
                    "{c}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn env_merges_image_and_container_and_expands_in_order() {
        let hostname = "HOSTNAME=web-node1";
        let cases: Vec<(serde_json::Value, Vec<&str>, Vec<&str>)> = vec![
            (json!({}), vec![], vec![hostname, DEFAULT_PATH]),
            (
                json!({}),
                vec!["PATH=/bin", "A=1"],
                vec!["PATH=/bin", "A=1", hostname],
            ),
            (
                json!({"env": [{"name": "C", "value": "3"}, {"name": "A", "value": "4"}]}),
                vec!["A=1", "B=2"],
                vec!["A=4", "B=2", "C=3", hostname, DEFAULT_PATH],
            ),
            // Earlier container entries expand, the image's env does not.
            (
                json!({"env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "$(X)-$(IMG)-$(Z)"}, {"name": "Z", "value": "z"}]}),
                vec!["IMG=i"],
                vec![
                    "IMG=i",
                    "X=1",
                    "Y=1-$(IMG)-$(Z)",
                    "Z=z",
                    hostname,
                    DEFAULT_PATH,
                ],
            ),
            // A name given twice keeps its first place and its last value.
            (
                json!({"env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "$(X)"}, {"name": "X", "value": "2"}]}),
                vec![],
                vec!["X=2", "Y=1", hostname, DEFAULT_PATH],
            ),
            (
                json!({"env": [{"name": "E"}, {"name": "HOSTNAME", "value": "h"}]}),
                vec![],
                vec!["E=", "HOSTNAME=h", DEFAULT_PATH],
            ),
            // An image entry without `=` unsets (containerd).
            (
                json!({}),
                vec!["A=1", "A", "B=2"],
                vec!["B=2", hostname, DEFAULT_PATH],
            ),
            (
                json!({"env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": true}}},
                               {"name": "M", "valueFrom": {"configMapKeyRef": {"name": "m", "key": "k", "optional": true}}}]}),
                vec![],
                vec![hostname, DEFAULT_PATH],
            ),
        ];
        for (c, img_env, want) in cases {
            let got = resolve(c.clone(), &image(&["sh"], &[], &img_env))
                .unwrap()
                .env;
            assert_eq!(got, want, "{c} with image env {img_env:?}");
        }
    }

    #[test]
    fn env_value_from_fields_and_resources() {
        let field = |p: &str| json!({"name": "V", "valueFrom": {"fieldRef": {"fieldPath": p}}});
        let res = |r: &str, d: Option<&str>| json!({"name": "V", "valueFrom": {"resourceFieldRef": {"resource": r, "divisor": d}}});
        let resources = json!({"limits": {"cpu": "500m", "memory": "64Mi", "hugepages-2Mi": "4Mi"}, "requests": {"cpu": "250m", "memory": "32Mi"}});
        let cases: Vec<(serde_json::Value, Result<&str, &str>)> = vec![
            (field("metadata.name"), Ok("web-node1")),
            (field("metadata.namespace"), Ok("default")),
            (field("metadata.uid"), Ok("u-1")),
            (field("spec.nodeName"), Ok("node1")),
            (field("spec.serviceAccountName"), Ok("sa")),
            (field("status.hostIP"), Ok("10.0.0.1")),
            (field("status.podIP"), Ok("10.1.0.5")),
            (field("status.podIPs"), Ok("10.1.0.5,fd00::5")),
            (field("metadata.labels['app']"), Ok("web")),
            (field("metadata.labels['missing']"), Ok("")),
            (field("metadata.annotations['a/b']"), Ok("c")),
            (field("spec.hostname"), Err("env[0].valueFrom.fieldRef.fieldPath: \"spec.hostname\": not a supported field path")),
            (res("limits.cpu", None), Ok("1")),
            (res("limits.cpu", Some("1m")), Ok("500")),
            (res("requests.cpu", Some("1m")), Ok("250")),
            (res("requests.cpu", None), Ok("1")),
            (res("limits.memory", None), Ok("67108864")),
            (res("limits.memory", Some("1Mi")), Ok("64")),
            (res("requests.memory", Some("1Gi")), Ok("1")),
            (res("limits.hugepages-2Mi", Some("1Mi")), Ok("4")),
            (res("limits.ephemeral-storage", Some("1Gi")), Ok("10")),
            (res("requests.ephemeral-storage", None), Ok("0")),
            (res("limits.pids", None), Err("env[0].valueFrom.resourceFieldRef: \"limits.pids\": unsupported container resource")),
            (
                json!({"name": "V", "valueFrom": {"configMapKeyRef": {"name": "m", "key": "k"}}}),
                Err("env[0].valueFrom.configMapKeyRef: ConfigMaps are not supported"),
            ),
            (
                json!({"name": "V", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": false}}}),
                Err("env[0].valueFrom.secretKeyRef: Secrets are not supported"),
            ),
            (
                json!({"name": "V", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "containerName": "other"}}}),
                Err("env[0].valueFrom.resourceFieldRef.containerName: \"other\""),
            ),
        ];
        for (env, want) in cases {
            let got = resolve(
                json!({"env": [env], "resources": resources}),
                &image(&["sh"], &[], &[]),
            );
            match want {
                Ok(v) => assert_eq!(got.unwrap().env[0], format!("V={v}"), "{env}"),
                Err(e) => assert!(
                    got.as_ref().is_err_and(|g| g.to_string().starts_with(e)),
                    "{env}: {got:?}"
                ),
            }
        }
        // Without limits, kubelet reports the node's allocatable.
        let named = |n: &str, r: &str, d: &str| json!({"name": n, "valueFrom": {"resourceFieldRef": {"resource": r, "divisor": d}}});
        let env = json!([
            named("C", "limits.cpu", "1m"),
            named("M", "limits.memory", "1Mi"),
            named("E", "limits.ephemeral-storage", "1Gi")
        ]);
        let got = resolve(json!({"env": env}), &image(&["sh"], &[], &[])).unwrap();
        assert_eq!(got.env[..3], ["C=2000", "M=4096", "E=10"]);
    }

    #[test]
    fn hostname_and_cwd() {
        let mut f = fields();
        f.pod_name = format!("{}-x", "a".repeat(62));
        assert_eq!(
            pod_hostname(&f),
            "a".repeat(62),
            "cut to 63 without the trailing '-'"
        );
        f.hostname = "given".into();
        assert_eq!(pod_hostname(&f), "given");
        let cases = [
            (json!({}), "", "/"),
            (json!({}), "/img", "/img"),
            (json!({"workingDir": "/c"}), "/img", "/c"),
        ];
        for (c, img_dir, want) in cases {
            let img = ImageConfig {
                working_dir: img_dir.into(),
                entrypoint: vec!["sh".into()],
                ..Default::default()
            };
            assert_eq!(resolve(c.clone(), &img).unwrap().cwd, want, "{c}");
        }
    }

    #[test]
    fn node_allocatable_from_meminfo_and_the_host() {
        let cases = [
            (
                "MemTotal:       16318912 kB\nMemFree: 1 kB\n",
                Some(16318912 * 1024),
            ),
            ("MemFree: 1 kB\nMemTotal: 10\n", Some(10)),
            ("MemFree: 1 kB\n", None),
            ("MemTotal: x kB\n", None),
            ("MemTotal: 1 MB\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(meminfo_total_bytes(text), want, "{text:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meminfo"), "MemTotal: 2048 kB\n").unwrap();
        let a = NodeAllocatable::from_host(dir.path(), dir.path()).unwrap();
        assert_eq!(a.memory_bytes, 2048 * 1024);
        assert!(a.cpu_milli >= 1000 && a.cpu_milli % 1000 == 0, "{a:?}");
        assert!(a.ephemeral_storage_bytes > 0, "{a:?}");
        assert!(NodeAllocatable::from_host(&dir.path().join("none"), dir.path()).is_err());
    }
}
