//! Static-pod defaulting, as kubelet's `applyDefaults` does for a file source, plus the API
//! server's defaults that tidelet relies on (restart policy, grace period, pull policy, DNS
//! policy, termination message path, requests defaulted from limits).
//!
//! The UID is the hex MD5 of a canonical serialisation of the pod *as read* (the typed Pod
//! encoded as JSON: fixed field order, sorted maps), followed by `host:<nodeName>` and
//! `file:<path>`, as kubelet hashes its decoded pod. It is therefore deterministic, changes
//! with any change of the content (not of formatting or comments), and differs per node and
//! per file. Unlike kubelet, a `metadata.uid` written in the file is replaced (and reported as
//! ignored): tidelet replaces a pod exactly when its UID changes, so the UID must follow the
//! content.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use md5::{Digest, Md5};

pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
pub const DEFAULT_TERMINATION_GRACE_PERIOD: i64 = 30;
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// kubelet's UID for a static pod read from `file` on `node_name`.
pub fn static_pod_uid(pod: &Pod, node_name: &str, file: &Path) -> String {
    let canonical = serde_json::to_vec(pod).expect("a typed Pod always encodes as JSON");
    let mut h = Md5::new();
    h.update(&canonical);
    h.update(b"host:");
    h.update(node_name.as_bytes());
    h.update(b"file:");
    h.update(file.as_os_str().as_bytes());
    hex::encode(h.finalize())
}

/// The UID of a pod from the control plane: like `static_pod_uid`, with the source label
/// (`mqtt:<namespace>/<name>`) in place of the file, so it follows the content, the node and
/// the topic the manifest came from.
pub fn remote_pod_uid(pod: &Pod, node_name: &str, source_label: &str) -> String {
    let canonical = serde_json::to_vec(pod).expect("a typed Pod always encodes as JSON");
    let mut h = Md5::new();
    h.update(&canonical);
    h.update(b"host:");
    h.update(node_name.as_bytes());
    h.update(b"source:");
    h.update(source_label.as_bytes());
    hex::encode(h.finalize())
}

/// `<name>-<nodename in lower case>`, kubelet's `generatePodName`.
pub fn static_pod_name(name: &str, node_name: &str) -> String {
    format!("{name}-{}", node_name.to_lowercase())
}

/// kubelet's pull-policy default: `Always` for `:latest` or no tag, `IfNotPresent` otherwise
/// (a digest reference counts as tagged).
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag is after the last ':' only if that ':' is after the last '/' (a registry port
    // is not a tag: `localhost:5000/busybox`).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// Apply every default to `pod` (already validated) and return its UID.
pub fn apply_defaults(pod: &mut Pod, node_name: &str, file: &Path) -> String {
    // Hash the pod as read, before any default below changes it.
    let uid = static_pod_uid(pod, node_name, file);
    let meta = &mut pod.metadata;
    meta.name = Some(static_pod_name(
        meta.name.as_deref().unwrap_or_default(),
        node_name,
    ));
    apply_common(pod, node_name, &uid, "file");
    uid
}

/// The defaults of a pod from the control plane (`pod` validated, its name and namespace
/// already those of its topic): the API-server defaults and the node as for a static pod,
/// but the name is kept as given and the config source is `source` (`mqtt`). Returns the UID
/// (`remote_pod_uid` of the pod as given, with `source_label`).
pub fn apply_remote_defaults(
    pod: &mut Pod,
    node_name: &str,
    source: &str,
    source_label: &str,
) -> String {
    let uid = remote_pod_uid(pod, node_name, source_label);
    apply_common(pod, node_name, &uid, source);
    uid
}

/// What every source shares: UID, namespace, config annotations, node and spec defaults.
fn apply_common(pod: &mut Pod, node_name: &str, uid: &str, source: &str) {
    let meta = &mut pod.metadata;
    meta.uid = Some(uid.to_string());
    if meta.namespace.as_deref().unwrap_or_default().is_empty() {
        meta.namespace = Some("default".to_string());
    }
    let ann = meta.annotations.get_or_insert_with(Default::default);
    ann.insert(CONFIG_HASH_ANNOTATION.to_string(), uid.to_string());
    ann.insert(CONFIG_SOURCE_ANNOTATION.to_string(), source.to_string());

    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_string());
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_string());
    spec.termination_grace_period_seconds
        .get_or_insert(DEFAULT_TERMINATION_GRACE_PERIOD);
    spec.dns_policy
        .get_or_insert_with(|| "ClusterFirst".to_string());
    spec.enable_service_links.get_or_insert(true);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c);
    }
}

fn default_container(c: &mut Container) {
    if c.image_pull_policy
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        c.image_pull_policy =
            Some(default_pull_policy(c.image.as_deref().unwrap_or_default()).to_string());
    }
    c.termination_message_path
        .get_or_insert_with(|| DEFAULT_TERMINATION_MESSAGE_PATH.to_string());
    c.termination_message_policy
        .get_or_insert_with(|| "File".to_string());
    // SetDefaults_Pod: a resource with a limit and no request is requested at its limit.
    if let Some(res) = c.resources.as_mut() {
        if let Some(limits) = &res.limits {
            let requests = res.requests.get_or_insert_with(Default::default);
            for (k, v) in limits {
                requests.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> Pod {
        pod(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                   "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}),
        )
    }

    #[test]
    fn uid_is_deterministic_and_follows_content_node_and_file() {
        let f = Path::new("/etc/tidelet/pods/web.yaml");
        let a = static_pod_uid(&base(), "node1", f);
        assert_eq!(
            a,
            static_pod_uid(&base(), "node1", f),
            "same content, same UID"
        );
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        let mut changed = base();
        changed.spec.as_mut().unwrap().containers[0].image = Some("busybox:1.37".into());
        assert_ne!(
            a,
            static_pod_uid(&changed, "node1", f),
            "changed spec, new UID"
        );
        assert_ne!(
            a,
            static_pod_uid(&base(), "node2", f),
            "other node, other UID"
        );
        assert_ne!(
            a,
            static_pod_uid(&base(), "node1", Path::new("/etc/tidelet/pods/web2.yaml"))
        );
    }

    #[test]
    fn applies_kubelet_and_api_defaults() {
        let mut p = base();
        let uid = apply_defaults(&mut p, "Node1", Path::new("/p/web.yaml"));
        assert_eq!(
            uid,
            static_pod_uid(&base(), "Node1", Path::new("/p/web.yaml"))
        );
        assert_eq!(p.metadata.name.as_deref(), Some("web-node1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(p.metadata.uid.as_deref(), Some(uid.as_str()));
        let ann = p.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[CONFIG_HASH_ANNOTATION], uid);
        assert_eq!(ann[CONFIG_SOURCE_ANNOTATION], "file");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("Node1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
    }

    #[test]
    fn keeps_what_the_file_says() {
        let mut p = pod(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "kube-system", "uid": "1234-abcd"},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "Never",
                                     "resources": {"limits": {"cpu": "1", "memory": "64Mi"}, "requests": {"cpu": "100m"}}}]}}));
        let as_read = p.clone();
        let uid = apply_defaults(&mut p, "n", Path::new("/p"));
        assert_eq!(
            uid,
            static_pod_uid(&as_read, "n", Path::new("/p")),
            "a uid in the file is replaced"
        );
        assert_eq!(p.metadata.namespace.as_deref(), Some("kube-system"));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.termination_grace_period_seconds, Some(0));
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
        let req = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(
            req["cpu"],
            Quantity("100m".into()),
            "an explicit request is kept"
        );
        assert_eq!(
            req["memory"],
            Quantity("64Mi".into()),
            "a missing request defaults to the limit"
        );
    }

    #[test]
    fn pull_policy_defaults_by_tag() {
        let cases = [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("localhost:5000/busybox", "Always"),
            ("localhost:5000/busybox:v1", "IfNotPresent"),
            ("busybox@sha256:abcd", "IfNotPresent"),
        ];
        for (image, want) in cases {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }
}
