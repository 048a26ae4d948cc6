//! Pod manifests from the control plane: one payload of the retained topic
//! `desired/pods/<namespace>/<name>`, read through the same checks as a static-pod file
//! (bytes, YAML/JSON with its expansion budget, strict decoding, API-server validation,
//! unsupported-field warnings) but defaulted as an API pod: the name is kept as given, the
//! namespace is the topic's, `spec.nodeName` is this node, the config source is `mqtt` and
//! the UID follows the content, the node and the topic.
//!
//! On top of a file's checks: the topic's segments must be valid names, the manifest's own
//! name and namespace (if given) must be the topic's, `spec.nodeName` (if given) must be this
//! node, and a payload holds exactly one Pod. The outcome says which kind of rejection it is,
//! so the control plane can tell a wrong node from a broken manifest.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::validate::{validate_pod_named, Naming};
use super::StaticPod;
use super::{defaults, manifest_text, names, parse, problem, support, Problem, Refused};

/// Largest desired-pod payload accepted: a retained message sits in the broker's memory and
/// in every subscriber's, so it is far below a file's limit (no real Pod comes near it).
pub const MAX_REMOTE_MANIFEST_BYTES: usize = 256 << 10;

/// The `kubernetes.io/config.source` of pods from the control plane.
pub const REMOTE_CONFIG_SOURCE: &str = "mqtt";

/// Fields of the manifest that are not run but echoed back in the result, so they are not
/// reported as unsupported.
const ECHOED: &[&str] = &["metadata.generation", "metadata.resourceVersion"];

/// Why a payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteRejection {
    /// Over `MAX_REMOTE_MANIFEST_BYTES`.
    TooLarge,
    /// Binary, empty, not a mapping, or not a `v1` `Pod`.
    NotAPod,
    /// A Pod that fails a check: syntax, a wrong type, validation, several documents, a
    /// name or namespace that is not the topic's, a bad topic segment.
    Invalid,
    /// `spec.nodeName` names another node.
    WrongNode,
}

/// The outcome of reading one payload. `generation` and `resourceVersion` are taken from the
/// manifest whenever it could be read as a document, even if it is rejected, so the answer
/// names the version it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteManifest {
    /// The pseudo path `mqtt:desired/pods/<namespace>/<name>` every problem names.
    pub source: PathBuf,
    pub generation: Option<i64>,
    pub resource_version: Option<String>,
    pub outcome: Result<StaticPod, (RemoteRejection, Vec<Problem>)>,
}

/// The pseudo path of a desired pod, used as `StaticPod.file` and `Problem.file`.
pub fn remote_pod_path(namespace: &str, name: &str) -> PathBuf {
    PathBuf::from(format!("mqtt:desired/pods/{namespace}/{name}"))
}

/// The source label hashed into the UID: `mqtt:<namespace>/<name>`.
pub fn remote_source_label(namespace: &str, name: &str) -> String {
    format!("{REMOTE_CONFIG_SOURCE}:{namespace}/{name}")
}

/// Read, check and default the payload of `desired/pods/<namespace>/<name>` for `node_name`.
pub fn parse_remote(namespace: &str, name: &str, bytes: &[u8], node_name: &str) -> RemoteManifest {
    let source = remote_pod_path(namespace, name);
    let mut out = RemoteManifest {
        source: source.clone(),
        generation: None,
        resource_version: None,
        outcome: Err((RemoteRejection::Invalid, Vec::new())),
    };
    out.outcome = checked(namespace, name, bytes, node_name, &source, &mut out);
    out
}

fn checked(
    namespace: &str,
    name: &str,
    bytes: &[u8],
    node_name: &str,
    source: &std::path::Path,
    echo: &mut RemoteManifest,
) -> Result<StaticPod, (RemoteRejection, Vec<Problem>)> {
    use RemoteRejection::*;
    let fail =
        |kind, field: &str, reason: String| Err((kind, vec![problem(source, field, reason)]));
    let mut topic = Vec::new();
    if let Err(r) = names::dns1123_label(namespace) {
        topic.push(problem(source, "topic namespace", r));
    }
    if let Err(r) = names::dns1123_subdomain(name) {
        topic.push(problem(source, "topic name", r));
    }
    if !topic.is_empty() {
        return Err((Invalid, topic));
    }
    let text = match manifest_text(bytes, MAX_REMOTE_MANIFEST_BYTES as u64, "payload") {
        Ok(t) => t,
        Err((Refused::TooLarge, r)) => return fail(TooLarge, "", r),
        Err((Refused::Empty | Refused::Binary, r)) => return fail(NotAPod, "", r),
    };
    let docs = match parse::documents(text) {
        Ok(d) => d,
        Err(r) => return fail(Invalid, "", r),
    };
    let mut docs: Vec<crate::yaml::Doc> = docs.into_iter().filter(|d| !d.value.is_null()).collect();
    match docs.len() {
        0 => {
            return fail(
                NotAPod,
                "",
                "payload holds no Pod (only empty documents or comments)".into(),
            )
        }
        1 => {}
        n => {
            return fail(
                Invalid,
                "",
                format!("payload holds {n} documents; a desired-pod message holds exactly one Pod"),
            )
        }
    }
    let written = docs.remove(0);
    let doc = &written.value;
    echo.generation = doc.pointer("/metadata/generation").and_then(Value::as_i64);
    echo.resource_version = doc
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    if !is_pod(doc) {
        // The same field-level reasons a file gets (`kind: "Deployment" is not supported`).
        let probs = parse::pod_from_value(doc).err().unwrap_or_default();
        return Err((NotAPod, to_problems(source, &written, probs)));
    }
    let (mut pod, unknown) =
        parse::pod_from_value(doc).map_err(|p| (Invalid, to_problems(source, &written, p)))?;

    let mut errors = Vec::new();
    let meta = &mut pod.metadata;
    match meta.name.as_deref() {
        None | Some("") => meta.name = Some(name.to_string()),
        Some(n) if n != name => errors.push(problem(
            source,
            "metadata.name",
            format!("{n:?} is not the name in the topic ({name:?})"),
        )),
        Some(_) => {}
    }
    match meta.namespace.as_deref() {
        None | Some("") => meta.namespace = Some(namespace.to_string()),
        Some(n) if n != namespace => errors.push(problem(
            source,
            "metadata.namespace",
            format!("{n:?} is not the namespace in the topic ({namespace:?})"),
        )),
        Some(_) => {}
    }
    errors.extend(
        validate_pod_named(&pod, node_name, Naming::AsGiven)
            .into_iter()
            .map(|e| problem(source, e.field, e.reason)),
    );
    let wrong_node = match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(n) if !n.is_empty() && n != node_name => Some(problem(
            source,
            "spec.nodeName",
            format!("{n:?}: this pod is for another node (this node is {node_name:?})"),
        )),
        _ => None,
    };
    if let Some(p) = wrong_node {
        errors.insert(0, p);
        return Err((WrongNode, errors));
    }
    if !errors.is_empty() {
        return Err((Invalid, errors));
    }
    let warnings = support::field_warnings(doc, &unknown)
        .into_iter()
        .filter(|(f, _)| !ECHOED.contains(&f.as_str()))
        .map(|(f, r)| problem(source, f, r))
        .collect();
    strip_server_fields(&mut pod);
    let uid = defaults::apply_remote_defaults(
        &mut pod,
        node_name,
        REMOTE_CONFIG_SOURCE,
        &remote_source_label(namespace, name),
    );
    Ok(StaticPod {
        pod,
        file: source.to_path_buf(),
        uid,
        warnings,
    })
}

/// A mapping with `apiVersion: v1` and `kind: Pod`.
fn is_pod(doc: &Value) -> bool {
    doc.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && doc.get("kind").and_then(Value::as_str) == Some("Pod")
}

/// The type errors of a payload, each with its line, in the payload's order.
fn to_problems(
    source: &std::path::Path,
    written: &crate::yaml::Doc,
    probs: Vec<(String, String)>,
) -> Vec<Problem> {
    let mut out: Vec<Problem> = probs
        .into_iter()
        .map(|(f, r)| {
            let at = super::Location {
                document: None,
                line: written.line_of(&f),
            };
            super::located(source, at, f, r)
        })
        .collect();
    out.sort_by_key(|p| p.at.line);
    out
}

/// Fields the API server sets and a back-end may send back (`kubectl get -o json`): they are
/// not part of what to run, so they must not change the UID (a new `resourceVersion` of the
/// same spec must not restart the pod). `generation` and `resourceVersion` are echoed in the
/// result instead; the others are reported as unsupported.
fn strip_server_fields(pod: &mut Pod) {
    let m = &mut pod.metadata;
    m.generation = None;
    m.resource_version = None;
    m.uid = None;
    m.creation_timestamp = None;
    m.managed_fields = None;
    m.self_link = None;
    pod.status = None;
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
