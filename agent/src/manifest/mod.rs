//! Pod manifests: reading static-pod files, validating them as the API server would (for what
//! tidelet runs), and static-pod naming and UID (kubelet's `applyDefaults` for file sources).

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

/// Largest manifest file read; larger files are rejected without being parsed.
pub const MAX_MANIFEST_BYTES: u64 = 10 << 20;

/// One problem with a manifest: the file, the field path (`spec.containers[1].image`, or
/// `""` for the whole document) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.field, self.reason)
        }
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
}

/// Whether a directory entry is a manifest: `.yaml`, `.yml`, `.json`; not hidden (`.` prefix)
/// and not an editor leftover (`~` suffix, `.swp`, `#...#`).
pub fn is_manifest_file_name(name: &str) -> bool {
    let _ = name;
    unimplemented!("manifest: is_manifest_file_name")
}

/// Read and parse one file (at most `MAX_MANIFEST_BYTES`).
pub fn load_file(path: &Path, node_name: &str) -> FileResult {
    let _ = (path, node_name);
    unimplemented!("manifest: load_file")
}

/// Parse manifest bytes that came from `path`: one or more YAML documents (or one JSON
/// object), each a `v1` `Pod`, validated and defaulted for `node_name`.
pub fn parse_manifest(path: &Path, bytes: &[u8], node_name: &str) -> FileResult {
    let _ = (path, bytes, node_name);
    unimplemented!("manifest: parse_manifest")
}
