//! tidelet's OCI image store.
//!
//! Layout under the store root (`<root-dir>/images` in the agent):
//! - `blobs/sha256/<hex>`: every blob, verified against its digest before it is kept;
//! - `layers/<diffid-hex>/`: each layer unpacked once, whiteouts applied, shared by images;
//! - `index.json`: image names -> manifest digest (plus what `list`/`resolve` need), written
//!   atomically;
//! - `tmp/`: staging of archives being imported (removed afterwards, or on the next `open`
//!   if the importing process died).
//!
//! A container's rootfs is an overlayfs whose lower dirs are `ResolvedImage::lowerdirs`.
//! Registry pulls (a later issue) will feed the same store through `Store::import_*`.
//!
//! Modules: `archive` stages an archive and plans its images, `manifest` parses the JSON
//! documents, `digest` verifies, `tarext` bounds tar extension headers, `unpack` writes a
//! layer safely with overlay whiteouts, `store` commits and looks up, `reference` normalises
//! names, `gc` removes unused images (least recently used first) and sweeps orphaned layers.

use std::path::PathBuf;

mod archive;
mod digest;
pub mod gc;
mod manifest;
mod reference;
mod store;
mod tarext;
mod unpack;
mod xattr;

pub use gc::{GcReport, ImageUsage, RemovedImage};
pub use store::Store;
pub use unpack::OPAQUE_XATTR;
pub use xattr::{lgetxattr, lsetxattr};

use serde::{Deserialize, Serialize};

/// What a container needs from its image's config (`config` in the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` strings, in image order.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `user:group`, `uid` or `uid:gid`, as in the image config; empty for root.
    pub user: String,
    pub stop_signal: Option<String>,
}

/// An image ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// `sha256:<hex>` of the image config: the image ID.
    pub id: String,
    /// The name it was found under, normalised (`docker.io/library/busybox:latest`).
    pub name: String,
    /// Unpacked layer directories, top-most layer first (overlayfs `lowerdir=` order).
    pub lowerdirs: Vec<PathBuf>,
    pub config: ImageConfig,
}

/// One row of `tidelet image ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    pub names: Vec<String>,
    pub id: String,
    /// Sum of the compressed layer sizes.
    pub size: u64,
    pub architecture: String,
    pub os: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{archive}: {reason}")]
    BadArchive { archive: PathBuf, reason: String },
    #[error("{archive}: blob {digest}: digest mismatch (content hashes to {actual})")]
    DigestMismatch {
        archive: PathBuf,
        digest: String,
        actual: String,
    },
    #[error("{archive}: layer {layer}: entry {entry:?}: {reason}")]
    UnsafeEntry {
        archive: PathBuf,
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("image reference {reference:?} is not valid: {reason}")]
    BadReference { reference: String, reason: String },
    /// The store is locked by another operation (GC while an import runs).
    #[error("{path}: {reason}")]
    Busy { path: PathBuf, reason: String },
    /// `Store::remove_image` of an image a pod uses.
    #[error("image {reference:?} ({id}) is in use by a pod")]
    InUse { reference: String, id: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Normalise an image reference as the container runtimes do: `busybox` ->
/// `docker.io/library/busybox:latest`, `localhost/busybox:1.35` unchanged, digests kept.
pub fn normalize_reference(reference: &str) -> Result<String> {
    reference::parse(reference).map(|r| r.to_string())
}
