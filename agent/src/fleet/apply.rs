//! `fleet apply` and `fleet delete`, the pure parts: the local check of a manifest (one Pod
//! with a name: the node does the real validation, with its own policy), the
//! `DesiredPodResult` the node answers with, and whether a result answers what we published.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What `fleet apply` needs from a manifest: where to publish it and how to recognise the
/// node's answer to this version of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub resource_version: Option<String>,
}

impl ManifestInfo {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A namespace or name that can be a topic level: non-empty, no `/`, no wildcard, no NUL, and
/// no longer than a Kubernetes name may be (the node checks the DNS rules).
pub fn check_topic_level(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.contains(['/', '+', '#', '\0']) {
        return Err(format!(
            "{what} {s:?} cannot be a topic level (contains '/', '+', '#' or NUL)"
        ));
    }
    if s.len() > 253 {
        return Err(format!("{what} is {} bytes long (at most 253)", s.len()));
    }
    Ok(())
}

/// Check that `bytes` hold exactly one `v1` Pod with
/// a name; YAML or JSON. Returns the reason on failure (the caller names the file).
pub fn check_manifest(bytes: &[u8]) -> Result<ManifestInfo, String> {
    let limit = crate::manifest::MAX_MANIFEST_BYTES;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "{} bytes is too large (the limit is {limit} bytes)",
            bytes.len()
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("empty file".into());
    }
    if let Some(at) = bytes.iter().position(|b| *b == 0) {
        return Err(format!(
            "binary data, not a manifest (NUL byte at offset {at})"
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "binary data, not a manifest (not UTF-8 at offset {})",
            e.valid_up_to()
        )
    })?;
    let docs = crate::manifest::documents(text).map_err(|e| format!("not YAML or JSON: {e}"))?;
    let doc = match docs.as_slice() {
        [] => return Err("holds no document (only comments or empty documents)".into()),
        [one] => one,
        more => {
            return Err(format!(
                "holds {} documents; fleet apply takes exactly one Pod",
                more.len()
            ))
        }
    };
    if !doc.is_object() {
        return Err("the document is not a mapping (a Pod object)".into());
    }
    let s = |p: &str| doc.pointer(p).and_then(Value::as_str);
    match s("/kind") {
        Some("Pod") => {}
        Some(k) => return Err(format!("kind: {k:?} is not Pod")),
        None => return Err("kind: missing (want Pod)".into()),
    }
    match s("/apiVersion") {
        Some("v1") => {}
        Some(v) => return Err(format!("apiVersion: {v:?} is not v1")),
        None => return Err("apiVersion: missing (want v1)".into()),
    }
    let name = s("/metadata/name").ok_or("metadata.name: missing")?;
    check_topic_level("metadata.name", name)?;
    let namespace = match doc.pointer("/metadata/namespace") {
        None | Some(Value::Null) => "default",
        Some(Value::String(ns)) if ns.is_empty() => "default",
        Some(Value::String(ns)) => ns,
        Some(other) => return Err(format!("metadata.namespace: {other} is not a string")),
    };
    check_topic_level("metadata.namespace", namespace)?;
    let generation = match doc.pointer("/metadata/generation") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| format!("metadata.generation: {v} is not an integer"))?,
        ),
    };
    let resource_version = match doc.pointer("/metadata/resourceVersion") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => return Err(format!("metadata.resourceVersion: {v} is not a string")),
    };
    Ok(ManifestInfo {
        namespace: namespace.to_string(),
        name: name.to_string(),
        generation,
        resource_version,
    })
}

/// Read and check a manifest file; the error names the file.
pub fn read_manifest(path: &Path) -> Result<(Vec<u8>, ManifestInfo), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > crate::manifest::MAX_MANIFEST_BYTES {
        return Err(format!(
            "{} bytes is too large (the limit is {} bytes)",
            meta.len(),
            crate::manifest::MAX_MANIFEST_BYTES
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let info = check_manifest(&bytes)?;
    Ok((bytes, info))
}

/// The node's answer on `P desired/results/<ns>/<name>` (docs/mqtt.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredPodResult {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    pub accepted: bool,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub generation: Option<i64>,
    #[serde(default)]
    pub resource_version: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
}

/// What we published and so which answer we wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub resource_version: Option<String>,
    /// An empty retained message (delete): the answer is `Removed` (or a rejection).
    pub delete: bool,
}

/// Whether a result answers what we published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not ours: why (for the debug log).
    Ignore(&'static str),
    /// The answer: `accepted` says which.
    Answer,
}

/// Retained results (delivered at subscription) are history: they answer an earlier publish.
/// A live result answers ours unless it says otherwise: another pod, a `generation` or
/// `resourceVersion` that both sides have and that differ, or the other kind of answer (an
/// `Accepted` while we wait for `Removed`, and the reverse) left by an earlier publish racing
/// with ours. A live rejection without versions is ours: the node could not read them.
pub fn judge(expect: &Expect, r: &DesiredPodResult, retained: bool) -> Verdict {
    if retained {
        return Verdict::Ignore("retained: answers an earlier publish");
    }
    if r.namespace != expect.namespace || r.name != expect.name {
        return Verdict::Ignore("about another pod");
    }
    let removed = r.reason == "Removed";
    if r.accepted && expect.delete && !removed {
        return Verdict::Ignore("accepts an earlier apply, not our delete");
    }
    if r.accepted && !expect.delete && removed {
        return Verdict::Ignore("confirms an earlier delete, not our apply");
    }
    if !expect.delete {
        if matches!((expect.generation, r.generation), (Some(a), Some(b)) if a != b) {
            return Verdict::Ignore("answers another generation");
        }
        if matches!((&expect.resource_version, &r.resource_version), (Some(a), Some(b)) if a != b) {
            return Verdict::Ignore("answers another resourceVersion");
        }
    }
    Verdict::Answer
}

/// The lines printed for an answer: `pod/<name> accepted on <node>` or
/// `pod/<name> rejected on <node>: <reason>: <message>` and one line per error.
pub fn answer_lines(r: &DesiredPodResult, node: &str, delete: bool) -> Vec<String> {
    if r.accepted {
        let verb = if delete {
            "removed from"
        } else {
            "accepted on"
        };
        let mut l = format!("pod/{} {verb} {node}", r.name);
        if let Some(uid) = r.uid.as_deref().filter(|_| !delete) {
            l.push_str(&format!(" (uid {uid})"));
        }
        return vec![l];
    }
    let mut lines = vec![format!(
        "pod/{} rejected on {node}: {}: {}",
        r.name, r.reason, r.message
    )];
    lines.extend(r.errors.iter().map(|e| format!("  - {e}")));
    lines
}

/// What `fleet apply`/`delete` says when no answer came: the node's online state from its
/// retained `online` topic, and that the desired message stays on the broker.
pub fn timeout_lines(
    node: &str,
    waited: std::time::Duration,
    online: Option<&Value>,
    desired_topic: &str,
    delete: bool,
) -> Vec<String> {
    let state = match online
        .and_then(|o| o.get("online"))
        .and_then(Value::as_bool)
    {
        Some(true) => {
            format!("{node} is online (but did not answer: is it stuck or on another broker?)")
        }
        Some(false) => {
            let why = online
                .and_then(|o| o.get("reason"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            format!("{node} is offline ({why})")
        }
        None => format!(
            "{node} has never reported its online state on this broker (wrong node name or root?)"
        ),
    };
    let what = if delete {
        "the removal"
    } else {
        "the desired pod"
    };
    vec![
        format!(
            "no answer from {node} within {}s: {state}",
            waited.as_secs()
        ),
        format!("{what} stays retained on {desired_topic}: {node} picks it up when it comes back"),
    ]
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
