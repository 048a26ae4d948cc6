//! The one table of Pod fields tidelet honours. Every other field present in a manifest with
//! a non-empty value becomes a warning, so nothing a user wrote is dropped silently. To honour
//! a new field, implement it and add its path here (indices written as `[]`); an entry covers
//! everything beneath it.

use serde_json::Value;

use crate::yaml::join;

/// Field paths tidelet honours; `[]` stands for any list index.
pub const HONOURED: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata.name",
    "metadata.namespace",
    "metadata.labels",
    "metadata.annotations",
    "spec.containers[].name",
    "spec.containers[].image",
    "spec.containers[].imagePullPolicy",
    "spec.containers[].command",
    "spec.containers[].args",
    "spec.containers[].workingDir",
    "spec.containers[].env[].name",
    "spec.containers[].env[].value",
    "spec.containers[].env[].valueFrom.fieldRef",
    "spec.containers[].env[].valueFrom.resourceFieldRef",
    "spec.containers[].resources.requests",
    "spec.containers[].resources.limits",
    "spec.containers[].volumeMounts[].name",
    "spec.containers[].volumeMounts[].mountPath",
    "spec.containers[].volumeMounts[].readOnly",
    "spec.containers[].securityContext.runAsUser",
    "spec.containers[].securityContext.runAsGroup",
    "spec.containers[].securityContext.runAsNonRoot",
    "spec.containers[].securityContext.privileged",
    "spec.containers[].securityContext.capabilities",
    "spec.containers[].securityContext.allowPrivilegeEscalation",
    "spec.containers[].securityContext.readOnlyRootFilesystem",
    "spec.containers[].securityContext.seccompProfile",
    "spec.containers[].securityContext.procMount",
    // `hostPort` (with `hostIP` and `protocol`) is published through CNI's portmap plugin;
    // the rest is informational, as in Kubernetes: declaring a port opens nothing.
    "spec.containers[].ports",
    "spec.containers[].terminationMessagePath",
    "spec.containers[].terminationMessagePolicy",
    "spec.restartPolicy",
    "spec.terminationGracePeriodSeconds",
    "spec.hostNetwork",
    "spec.hostIPC",
    "spec.hostPID",
    "spec.shareProcessNamespace",
    "spec.hostname",
    "spec.nodeName",
    "spec.volumes[].name",
    // `emptyDir: {}` says nothing more and is honoured as a directory on the node's disk;
    // `medium: Memory` and `sizeLimit` are not honoured yet, so an emptyDir with either is
    // reported (it is still created, on disk).
    "spec.volumes[].hostPath",
    "spec.priority",
    "spec.priorityClassName",
    "spec.serviceAccountName",
    "spec.dnsPolicy",
    "spec.dnsConfig",
    "spec.hostAliases",
    "spec.subdomain",
    "spec.setHostnameAsFQDN",
    "spec.enableServiceLinks",
    "spec.securityContext.runAsUser",
    "spec.securityContext.runAsGroup",
    "spec.securityContext.supplementalGroups",
    "spec.securityContext.runAsNonRoot",
    "spec.securityContext.seccompProfile",
    "spec.securityContext.sysctls",
    "spec.securityContext.fsGroup",
    "spec.securityContext.fsGroupChangePolicy",
    "spec.hostUsers",
];

/// The reason given for every field outside `HONOURED`.
pub const NOT_SUPPORTED: &str = "not supported by tidelet yet; ignored";

/// The Kubernetes version whose Pod API tidelet compiles in: k8s-openapi's feature in the
/// workspace's Cargo.toml (the newest it offers), checked by a unit test.
pub const KUBERNETES_API: &str = "1.37";

/// The reason given for a field the Pod API above does not have. kubelet's decoder drops such
/// fields (a newer Kubernetes', or a typo), so tidelet warns and runs the pod;
/// `tidelet validate --strict` makes it an error, for CI pipelines.
pub const NOT_IN_API: &str = "not in the Kubernetes 1.37 Pod API that tidelet knows; ignored";

/// The reason given for a key written twice in one mapping. kubelet's YAML reading keeps the
/// last value without a word; tidelet keeps it too and warns; `tidelet validate --strict`
/// makes it an error.
pub const DUPLICATE_KEY: &str =
    "written more than once in its mapping; the last value is used, as kubelet reads it";

/// The fields of `doc` to warn about: those not in the Pod API (`unknown`, from
/// `parse::pod_from_value`) with `NOT_IN_API`, then the rest tidelet does not honour with
/// `NOT_SUPPORTED`. A field is named once: what lies below an unknown field is not listed again.
pub fn field_warnings(doc: &Value, unknown: &[String]) -> Vec<(String, &'static str)> {
    let below_unknown = |f: &str| {
        unknown.iter().any(|u| {
            f.strip_prefix(u.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
        })
    };
    unknown
        .iter()
        .map(|f| (f.clone(), NOT_IN_API))
        .chain(
            unsupported_fields(doc)
                .into_iter()
                .filter(|f| !below_unknown(f))
                .map(|f| (f, NOT_SUPPORTED)),
        )
        .collect()
}

/// Paths (with real indices, e.g. `spec.containers[1].livenessProbe`) of the non-empty fields
/// of `doc` that tidelet does not honour.
pub fn unsupported_fields(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(doc, "", "", &mut out);
    out
}

/// `null`, `""`, `[]` and `{}` say nothing: a field set to one of them is not reported
/// (`tolerations: []`, `status: {}`). Booleans are always reported: `false` is not always the
/// default (`allowPrivilegeEscalation: false` asks for a restriction).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(_) => false,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}

/// `pattern` is the path with indices as `[]`, `path` the real one.
fn walk(v: &Value, pattern: &str, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                let pat = join(pattern, k);
                let p = join(path, k);
                if HONOURED.contains(&pat.as_str()) {
                    continue;
                }
                if is_prefix_of_honoured(&pat) {
                    walk(child, &pat, &p, out);
                } else if !is_empty(child) {
                    out.push(p);
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                walk(child, &format!("{pattern}[]"), &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_prefix_of_honoured(pattern: &str) -> bool {
    HONOURED.iter().any(|h| {
        h.strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with("[]"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_only_unhonoured_non_empty_fields() {
        let cases = [
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "y"}}}),
                vec![],
            ),
            (
                json!({"metadata": {"name": "a", "generateName": "a-", "ownerReferences": []}}),
                vec!["metadata.generateName"],
            ),
            (json!({"metadata": {"creationTimestamp": null}}), vec![]),
            (json!({"status": {"phase": "Running"}}), vec!["status"]),
            (
                json!({"spec": {"containers": [
                    {"name": "a", "image": "b", "env": [{"name": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
                    {"name": "c", "image": "d", "livenessProbe": {"exec": {"command": ["true"]}},
                     "env": [{"name": "y", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                     "securityContext": {"runAsUser": 1, "privileged": true, "readOnlyRootFilesystem": false, "seLinuxOptions": {}, "appArmorProfile": {"type": "RuntimeDefault"}}}
                ]}}),
                vec![
                    "spec.containers[1].env[0].valueFrom.secretKeyRef",
                    "spec.containers[1].livenessProbe",
                    "spec.containers[1].securityContext.appArmorProfile",
                ],
            ),
            (
                json!({"spec": {"hostNetwork": true, "tolerations": [{"key": "k"}], "initContainers": [{"name": "i"}],
                       "volumes": [{"name": "v", "emptyDir": {}}, {"name": "w", "configMap": {"name": "c"}}],
                       "activeDeadlineSeconds": 0, "securityContext": {"fsGroup": 2, "runAsUser": 3, "seLinuxOptions": {"level": "s0"}}}}),
                vec![
                    "spec.activeDeadlineSeconds",
                    "spec.initContainers",
                    "spec.securityContext.seLinuxOptions",
                    "spec.tolerations",
                    "spec.volumes[1].configMap",
                ],
            ),
        ];
        for (doc, want) in cases {
            assert_eq!(unsupported_fields(&doc), want, "{doc}");
        }
    }

    #[test]
    fn every_honoured_entry_is_reachable_and_not_shadowed() {
        for h in HONOURED {
            let shadowing: Vec<_> = HONOURED
                .iter()
                .filter(|o| {
                    *o != h
                        && h.strip_prefix(*o)
                            .is_some_and(|r| r.starts_with('.') || r.starts_with("[]"))
                })
                .collect();
            assert!(shadowing.is_empty(), "{h} is shadowed by {shadowing:?}");
        }
    }
}
