//! Pod manifests: reading static-pod files and desired-pod payloads from the control plane
//! (`remote`), validating them as the API server would (for what tidelet runs), and their
//! naming and UID (kubelet's `applyDefaults` for file sources; API-pod defaults for remote).

mod defaults;
mod names;
mod parse;
mod remote;
mod support;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

pub use defaults::{
    default_pull_policy, remote_pod_uid, static_pod_name, static_pod_uid, CONFIG_HASH_ANNOTATION,
    CONFIG_SOURCE_ANNOTATION, DEFAULT_TERMINATION_GRACE_PERIOD, DEFAULT_TERMINATION_MESSAGE_PATH,
};
pub use remote::{
    parse_remote, remote_pod_path, remote_source_label, RemoteManifest, RemoteRejection,
    MAX_REMOTE_MANIFEST_BYTES, REMOTE_CONFIG_SOURCE,
};
pub use support::{
    field_warnings, unsupported_fields, DUPLICATE_KEY, HONOURED, KUBERNETES_API, NOT_IN_API,
    NOT_SUPPORTED,
};
pub use validate::{validate_pod, FieldError};

/// Largest manifest file read; larger files are rejected without being parsed.
pub const MAX_MANIFEST_BYTES: u64 = 10 << 20;

/// One problem with a manifest: the file, where in it, the field path
/// (`spec.containers[1].image`, or `""` for the whole document) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub field: String,
    pub reason: String,
    /// The document (in a file of several) and line the field is on, where known.
    pub at: Location,
}

/// Where in a file a problem is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Location {
    /// 1-based, only in a file of several documents (where "document 1" would not suggest
    /// others).
    pub document: Option<usize>,
    /// 1-based: the field's line, or its nearest written ancestor's for a missing field.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.document, self.line) {
            (Some(d), Some(l)) => write!(f, "document {d} (line {l})"),
            (Some(d), None) => write!(f, "document {d}"),
            (None, Some(l)) => write!(f, "line {l}"),
            (None, None) => Ok(()),
        }
    }
}

impl fmt::Display for Problem {
    /// `file: document 2 (line 7): spec.containers[0].image: required`, leaving out what is
    /// not known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if self.at != Location::default() {
            write!(f, "{}: ", self.at)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.reason)
    }
}

/// A pod read from the static-pod directory, defaulted as kubelet defaults static pods:
/// `metadata.name` is `<name>-<nodeName>`, `metadata.namespace` defaults to `default`,
/// `metadata.uid` is derived from the content, the node and the file, `spec.nodeName` is set,
/// and the `kubernetes.io/config.{hash,source}` annotations are added.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticPod {
    pub pod: Pod,
    /// The file it came from.
    pub file: PathBuf,
    /// `metadata.uid`, repeated for convenience.
    pub uid: String,
    /// Fields present in the manifest that tidelet does not honour yet: reported, never
    /// silently dropped.
    pub warnings: Vec<Problem>,
}

/// The outcome of reading one manifest file. A file is all-or-nothing: if any document in it
/// is invalid, `errors` is non-empty and `pods` is empty, so the pods it described before keep
/// running on their last good spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileResult {
    pub pods: Vec<StaticPod>,
    pub errors: Vec<Problem>,
    /// A rejected file's unsupported fields (an accepted file's are on its pods): reported
    /// with its errors, so that fixing the errors does not bring a second round of surprises.
    pub rejected_warnings: Vec<Problem>,
}

/// Whether a directory entry is a manifest: `.yaml`, `.yml`, `.json` (any case); not hidden
/// (`.` prefix) and not an editor leftover (`~` suffix, `.swp`, `#...#`).
pub fn is_manifest_file_name(name: &str) -> bool {
    // Editor leftovers end in other extensions (`.swp`, `.swx`, `.bak`, `.orig`, `~`, vim's
    // `4913` probe) or are hidden (`.#name`, `.name.swp`); emacs autosaves are `#name#`.
    if name.starts_with('.') || name.starts_with('#') || name.ends_with('#') || name.ends_with('~')
    {
        return false;
    }
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return false;
    };
    !stem.is_empty()
        && ["yaml", "yml", "json"]
            .iter()
            .any(|e| ext.eq_ignore_ascii_case(e))
}

/// Read and parse one file (at most `MAX_MANIFEST_BYTES`).
pub fn load_file(path: &Path, node_name: &str) -> FileResult {
    let result = match read_capped(path) {
        Ok(bytes) => parse_manifest(path, &bytes, node_name),
        Err(reason) => FileResult {
            errors: vec![problem(path, "", reason)],
            ..FileResult::default()
        },
    };
    tracing::debug!(file = %path.display(), pods = result.pods.len(), errors = result.errors.len(), "manifest read");
    result
}

/// The file's bytes, refusing anything but a regular file and anything over the limit
/// (checked on the metadata first, then while reading, in case the file grows). The file is
/// opened non-blocking so that a FIFO dropped into the directory cannot hang the reader.
fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(too_large(meta.len()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_MANIFEST_BYTES) as usize);
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn too_large(len: u64) -> String {
    too_large_for("file", len, MAX_MANIFEST_BYTES)
}

fn too_large_for(noun: &str, len: u64, limit: u64) -> String {
    format!("{noun} is too large ({len} bytes; the limit is {limit} bytes)")
}

/// Why bytes were refused before any YAML or JSON parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    TooLarge,
    Empty,
    Binary,
}

/// The byte-level checks every manifest goes through, whatever its source: at most `limit`
/// bytes, not empty, no NUL, valid UTF-8. `noun` names the container in the reason (`file`,
/// `payload`).
pub(crate) fn manifest_text<'a>(
    bytes: &'a [u8],
    limit: u64,
    noun: &str,
) -> Result<&'a str, (Refused, String)> {
    if bytes.len() as u64 > limit {
        return Err((
            Refused::TooLarge,
            too_large_for(noun, bytes.len() as u64, limit),
        ));
    }
    if bytes.is_empty() {
        return Err((Refused::Empty, format!("{noun} is empty")));
    }
    if let Some(at) = bytes.iter().position(|b| *b == 0) {
        return Err((
            Refused::Binary,
            format!("binary data, not a manifest (NUL byte at offset {at})"),
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        (
            Refused::Binary,
            format!(
                "binary data, not a manifest (not UTF-8 at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

fn problem(file: &Path, field: impl Into<String>, reason: impl Into<String>) -> Problem {
    located(file, Location::default(), field, reason)
}

fn located(
    file: &Path,
    at: Location,
    field: impl Into<String>,
    reason: impl Into<String>,
) -> Problem {
    Problem {
        file: file.to_path_buf(),
        field: field.into(),
        reason: reason.into(),
        at,
    }
}

/// The documents of a manifest's text as kubelet reads them (YAML 1.1 scalars, aliases and
/// merge keys; empty documents left out), for tools that look at a manifest before a node
/// does (`fleet apply`): they see what the node will.
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    Ok(parse::documents(text)?
        .into_iter()
        .map(|d| d.value)
        .filter(|v| !v.is_null())
        .collect())
}

/// Parse manifest bytes that came from `path`: one or more YAML documents (or one JSON
/// object), each a `v1` `Pod`, validated and defaulted for `node_name`.
pub fn parse_manifest(path: &Path, bytes: &[u8], node_name: &str) -> FileResult {
    match parse_checked(path, bytes, node_name) {
        Ok(pods) => FileResult {
            pods,
            ..FileResult::default()
        },
        Err((errors, rejected_warnings)) => FileResult {
            errors,
            rejected_warnings,
            ..FileResult::default()
        },
    }
}

/// The pods, or the errors with the unsupported-field warnings of the documents that decoded.
type Checked = Result<Vec<StaticPod>, (Vec<Problem>, Vec<Problem>)>;

fn parse_checked(path: &Path, bytes: &[u8], node_name: &str) -> Checked {
    let whole = |reason: String| (vec![problem(path, "", reason)], Vec::new());
    let text = manifest_text(bytes, MAX_MANIFEST_BYTES, "file").map_err(|(_, r)| whole(r))?;
    let docs = parse::documents(text).map_err(whole)?;
    let docs: Vec<(usize, crate::yaml::Doc)> = docs
        .into_iter()
        .enumerate()
        .filter(|(_, d)| !d.value.is_null())
        .collect();
    if docs.is_empty() {
        return Err(whole(
            "file holds no Pod (only empty documents or comments)".into(),
        ));
    }
    let several = docs.len() > 1;
    let mut errors = Vec::new();
    let mut pods = Vec::new();
    let mut warned = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, doc) in docs {
        let at = |field: &str| Location {
            document: several.then_some(i + 1),
            line: doc.line_of(field),
        };
        let duplicates: Vec<Problem> = doc
            .duplicates
            .iter()
            .map(|f| located(path, at(f), f, DUPLICATE_KEY))
            .collect();
        warned.extend(duplicates.iter().cloned());
        let (pod, unknown) = match parse::pod_from_value(&doc.value) {
            Ok(p) => p,
            Err(probs) => {
                // serde's order is the Pod type's; the file's is the reader's.
                let mut probs: Vec<Problem> = probs
                    .into_iter()
                    .map(|(f, r)| located(path, at(&f), f, r))
                    .collect();
                probs.sort_by_key(|p| p.at.line);
                errors.extend(probs);
                continue;
            }
        };
        let mut warnings = duplicates;
        warnings.extend(
            support::field_warnings(&doc.value, &unknown)
                .into_iter()
                .map(|(f, r)| located(path, at(&f), f, r)),
        );
        warned.extend(warnings.iter().skip(doc.duplicates.len()).cloned());
        let invalid = validate::validate_pod(&pod, node_name);
        if !invalid.is_empty() {
            errors.extend(
                invalid
                    .into_iter()
                    .map(|e| located(path, at(&e.field), e.field, e.reason)),
            );
            continue;
        }
        let key = format!(
            "{}/{}",
            pod.metadata
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        if let Some(first) = names.insert(key.clone(), i) {
            errors.push(located(
                path,
                at("metadata.name"),
                "metadata.name",
                format!("pod {key} is already defined by document {}", first + 1),
            ));
            continue;
        }
        pods.push(static_pod(pod, path, node_name, warnings));
    }
    if errors.is_empty() {
        Ok(pods)
    } else {
        Err((errors, warned))
    }
}

fn static_pod(mut pod: Pod, path: &Path, node_name: &str, warnings: Vec<Problem>) -> StaticPod {
    let uid = defaults::apply_defaults(&mut pod, node_name, path);
    StaticPod {
        pod,
        file: path.to_path_buf(),
        uid,
        warnings,
    }
}

#[cfg(test)]
mod tests;
