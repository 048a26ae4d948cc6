//! The store on disk: committing imported images (blobs, then `index.json`), listing and
//! resolving them. `index.json` is the only mutable file; it is rewritten atomically (temp
//! file, fsync, rename, fsync of the directory) under an exclusive `flock` on `.lock`, so an
//! agent and a CLI import can share a store.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::archive::{self, ImagePlan};
use crate::digest::Digest;
use crate::unpack::{self, LayerSource};
use crate::{reference, Error, ImageConfig, ImageSummary, ResolvedImage, Result};

/// Largest `index.json` the store reads back.
const MAX_INDEX_BYTES: u64 = 16 * 1024 * 1024;

/// The content-addressed store.
pub struct Store {
    root: PathBuf,
}

/// One image in `index.json`: everything `list` and `resolve` need without reading blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    /// `sha256:` digest of the config: the image ID.
    pub id: String,
    pub names: Vec<String>,
    /// `sha256:` digest of the OCI manifest blob (synthesised for `docker save` archives).
    pub manifest: String,
    pub size: u64,
    pub architecture: String,
    pub os: String,
    /// Bottom-most first, as in the config.
    pub diff_ids: Vec<String>,
    pub config: ImageConfig,
    /// Unix seconds of the import (kubelet's "first detected"); absent in older indexes,
    /// where GC falls back to the config blob's mtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<u64>,
    /// Unix seconds a container last started with it (`Store::mark_used`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct IndexFile {
    pub version: u32,
    pub images: Vec<ImageRecord>,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// fsync a directory so a rename in it survives a crash.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Record `new` in `index`: same ID merges names; each name moves to the image it now names;
/// images left with no name stay, reachable by ID (like docker's `<none>`).
pub(crate) fn merge_record(index: &mut IndexFile, new: ImageRecord) {
    for img in index.images.iter_mut().filter(|i| i.id != new.id) {
        img.names.retain(|n| !new.names.contains(n));
    }
    match index.images.iter_mut().find(|i| i.id == new.id) {
        Some(existing) => {
            for n in &new.names {
                if !existing.names.contains(n) {
                    existing.names.push(n.clone());
                }
            }
            let names = std::mem::take(&mut existing.names);
            let last_used = existing.last_used.max(new.last_used);
            *existing = ImageRecord {
                names,
                last_used,
                ..new
            };
        }
        None => index.images.push(new),
    }
}

/// How `resolve` finds a record: by name, by `name@digest`, or by (unique) ID prefix.
pub(crate) fn find_record<'a>(
    index: &'a IndexFile,
    query: &str,
) -> Result<Option<(&'a ImageRecord, String)>> {
    if let Ok(r) = reference::parse(query) {
        let full = r.to_string();
        if let Some(img) = index.images.iter().find(|i| i.names.contains(&full)) {
            return Ok(Some((img, full)));
        }
        if let Some(d) = &r.digest {
            let d = d.to_string();
            let same_repo =
                |n: &String| reference::parse(n).is_ok_and(|p| p.repository == r.repository);
            if let Some(img) = index
                .images
                .iter()
                .find(|i| (i.manifest == d || i.id == d) && i.names.iter().any(same_repo))
            {
                return Ok(Some((img, full)));
            }
        }
    }
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    if hex.is_empty()
        || hex.len() > 64
        || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Ok(None);
    }
    let mut hits = index
        .images
        .iter()
        .filter(|i| i.id["sha256:".len()..].starts_with(hex));
    match (hits.next(), hits.next()) {
        (Some(img), None) => Ok(Some((
            img,
            img.names.first().cloned().unwrap_or_else(|| img.id.clone()),
        ))),
        (Some(_), Some(_)) => Err(Error::BadReference {
            reference: query.to_string(),
            reason: "ID prefix matches more than one image".into(),
        }),
        (None, _) => Ok(None),
    }
}

impl Store {
    /// Open (creating if needed) a store rooted at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        for d in ["blobs/sha256", "layers", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let store = Store {
            root: root.to_path_buf(),
        };
        store.remove_stale_temps();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// Import an OCI archive (OCI layout in a tar, as `skopeo copy oci-archive:` writes) or a
    /// `docker save` archive; returns the normalised names imported.
    pub fn import(&self, archive: &Path) -> Result<Vec<String>> {
        self.import_named(archive, None)
    }

    /// As `import`, naming every image of the archive `name` (normalised) instead of what the
    /// archive says: for archives that carry only a tag or no name at all.
    pub fn import_named(&self, archive: &Path, name: Option<&str>) -> Result<Vec<String>> {
        // Shared with other imports, exclusive with GC: a layer unpacked here is referenced by
        // no image until the index is written, and GC must not sweep it meanwhile.
        let _gc_guard = self.gc_lock(false)?;
        let staging = tempdir_in(&self.root.join("tmp"), "import")?;
        let result = self.import_staged(archive, &staging, name);
        archive::remove_staging(&staging);
        result
    }

    fn import_staged(
        &self,
        archive: &Path,
        staging: &Path,
        name: Option<&str>,
    ) -> Result<Vec<String>> {
        let span = tracing::info_span!("import", archive = %archive.display());
        let _enter = span.enter();
        let staged = archive::stage(archive, staging)?;
        let plans = archive::plan(&staged, name)?;
        // Every layer of every image first: a rejected layer must leave no blob or name behind.
        for plan in &plans {
            for layer in &plan.layers {
                let src = LayerSource {
                    archive,
                    blob: &layer.file.path,
                    media_type: layer.media_type.as_deref(),
                    diff_id: &layer.diff_id,
                };
                unpack::unpack_layer(&src, &self.layers_dir())?;
            }
        }
        let mut records = Vec::new();
        for plan in &plans {
            self.commit_blobs(plan)?;
            records.push(record_of(plan));
        }
        self.update_index(|index| {
            for r in records.clone() {
                merge_record(index, r);
            }
        })?;
        let names: Vec<String> = plans.iter().flat_map(|p| p.names.iter().cloned()).collect();
        tracing::info!(names = ?names, "imported");
        Ok(names)
    }

    /// Move the verified blobs of `plan` into `blobs/sha256/`.
    fn commit_blobs(&self, plan: &ImagePlan) -> Result<()> {
        let dir = self.root.join("blobs/sha256");
        let mut files: Vec<(&Digest, &Path)> =
            vec![(&plan.config_file.digest, &plan.config_file.path)];
        files.extend(
            plan.layers
                .iter()
                .map(|l| (&l.file.digest, l.file.path.as_path())),
        );
        for (digest, path) in files {
            let dest = dir.join(digest.hex());
            // Already there, or a file listed twice (a repeated layer) and moved already.
            if dest.exists() {
                continue;
            }
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(io_err(path))?;
            fs::rename(path, &dest).map_err(io_err(&dest))?;
        }
        let dest = dir.join(plan.manifest_digest.hex());
        if !dest.exists() {
            write_atomic(&dest, &plan.manifest_json)?;
        }
        fsync_dir(&dir)
    }

    pub(crate) fn update_index(&self, change: impl FnOnce(&mut IndexFile)) -> Result<()> {
        let lock_path = self.root.join(".lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let _lock =
            Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| Error::Io {
                path: lock_path.clone(),
                source: e.into(),
            })?;
        let mut index = self.read_index()?;
        change(&mut index);
        index.version = 1;
        let path = self.root.join("index.json");
        let json = serde_json::to_vec_pretty(&index).map_err(|e| Error::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        write_atomic(&path, &json)
    }

    pub(crate) fn read_index(&self) -> Result<IndexFile> {
        let path = self.root.join("index.json");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(IndexFile::default()),
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        let mut buf = Vec::new();
        file.take(MAX_INDEX_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(io_err(&path))?;
        if buf.len() as u64 > MAX_INDEX_BYTES {
            return Err(Error::BadArchive {
                archive: path,
                reason: format!("store index over {MAX_INDEX_BYTES} bytes"),
            });
        }
        serde_json::from_slice(&buf).map_err(|e| Error::BadArchive {
            archive: path,
            reason: format!("store index is corrupt: {e}"),
        })
    }

    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        Ok(self
            .read_index()?
            .images
            .into_iter()
            .map(|i| ImageSummary {
                names: i.names,
                id: i.id,
                size: i.size,
                architecture: i.architecture,
                os: i.os,
            })
            .collect())
    }

    /// Find an image by reference (normalised first) or by ID / ID prefix; `Ok(None)` when absent.
    pub fn resolve(&self, reference: &str) -> Result<Option<ResolvedImage>> {
        let index = self.read_index()?;
        let Some((img, name)) = find_record(&index, reference)? else {
            return Ok(None);
        };
        let mut lowerdirs = Vec::with_capacity(img.diff_ids.len());
        for d in img.diff_ids.iter().rev() {
            let digest = Digest::parse(d).map_err(|reason| Error::BadArchive {
                archive: self.root.join("index.json"),
                reason,
            })?;
            let dir = self.layers_dir().join(digest.hex());
            if !dir.is_dir() {
                return Err(Error::Io {
                    path: dir,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("layer {d} of image {} is missing", img.id),
                    ),
                });
            }
            lowerdirs.push(dir);
        }
        Ok(Some(ResolvedImage {
            id: img.id.clone(),
            name,
            lowerdirs,
            config: img.config.clone(),
        }))
    }

    /// Remove temp dirs left by a crashed import, never one a live process is still writing.
    fn remove_stale_temps(&self) {
        let dirs = [
            self.layers_dir(),
            self.root.join("tmp"),
            self.root.clone(),
            self.root.join("blobs/sha256"),
        ];
        for dir in dirs {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = temp_owner(&name) else {
                    continue;
                };
                if pid == std::process::id() || process_alive(pid) {
                    continue;
                }
                tracing::info!(path = %e.path().display(), "removing stale temp file");
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    archive::remove_staging(&e.path());
                } else {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

fn record_of(plan: &ImagePlan) -> ImageRecord {
    ImageRecord {
        id: plan.config_file.digest.to_string(),
        names: plan.names.clone(),
        manifest: plan.manifest_digest.to_string(),
        size: plan.layers.iter().map(|l| l.file.size).sum(),
        architecture: plan.config.architecture.clone(),
        os: plan.config.os.clone(),
        diff_ids: plan.config.diff_ids.iter().map(Digest::to_string).collect(),
        config: plan.config.config.clone(),
        imported: Some(crate::gc::unix_secs(std::time::SystemTime::now())),
        last_used: None,
    }
}

/// The pid in `.tmp-<hex>-<pid>-<n>` (layers), `import-<pid>-<n>` (staging) or
/// `.<file>.tmp-<pid>` (an atomic write).
pub(crate) fn temp_owner(name: &str) -> Option<u32> {
    if let Some(rest) = name
        .strip_prefix(".tmp-")
        .or_else(|| name.strip_prefix("import-"))
    {
        let mut parts = rest.rsplit('-');
        let _n = parts.next()?;
        return parts.next()?.parse().ok();
    }
    let (_, pid) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    pid.parse().ok()
}

pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

fn tempdir_in(parent: &Path, prefix: &str) -> Result<PathBuf> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = parent.join(format!("{prefix}-{}-{n}", std::process::id()));
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::Io { path: p, source: e }),
        }
    }
}

/// Write `path` so that readers see the old or the new content, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Io {
            path: tmp,
            source: e,
        });
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: char, names: &[&str]) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id.to_string().repeat(64)),
            names: names.iter().map(|s| s.to_string()).collect(),
            manifest: format!("sha256:{}", "f".repeat(64)),
            size: 1,
            architecture: "amd64".into(),
            os: "linux".into(),
            diff_ids: vec![],
            config: ImageConfig::default(),
            imported: None,
            last_used: None,
        }
    }

    #[test]
    fn merge_moves_names_and_is_idempotent() {
        let mut idx = IndexFile::default();
        merge_record(&mut idx, rec('a', &["localhost/x:1"]));
        merge_record(&mut idx, rec('a', &["localhost/x:1"]));
        assert_eq!(idx.images.len(), 1);
        assert_eq!(idx.images[0].names, vec!["localhost/x:1"]);
        merge_record(&mut idx, rec('a', &["localhost/y:1"]));
        assert_eq!(idx.images[0].names, vec!["localhost/x:1", "localhost/y:1"]);
        merge_record(&mut idx, rec('b', &["localhost/x:1"]));
        assert_eq!(idx.images.len(), 2);
        assert_eq!(idx.images[0].names, vec!["localhost/y:1"]);
        assert_eq!(idx.images[1].names, vec!["localhost/x:1"]);
        merge_record(&mut idx, rec('b', &["localhost/y:1"]));
        assert!(
            idx.images[0].names.is_empty(),
            "dangling image keeps no name"
        );
    }

    #[test]
    fn find_table() {
        let mut idx = IndexFile::default();
        idx.images
            .push(rec('a', &["docker.io/library/busybox:latest"]));
        let mut b = rec('b', &["localhost/busybox:1.35"]);
        b.id = format!("sha256:ab{}", "0".repeat(62));
        idx.images.push(b);
        let ff = "f".repeat(64);
        // want: position in the index
        let cases: Vec<(String, Option<usize>)> = vec![
            ("busybox".into(), Some(0)),
            ("docker.io/library/busybox:latest".into(), Some(0)),
            ("localhost/busybox:1.35".into(), Some(1)),
            ("localhost/busybox".into(), None),
            (format!("busybox@sha256:{ff}"), Some(0)),
            (format!("quay.io/busybox@sha256:{ff}"), None),
            (format!("sha256:{}", "a".repeat(64)), Some(0)),
            ("aaaa".into(), Some(0)),
            ("ab0".into(), Some(1)),
            ("c".into(), None),
            ("".into(), None),
        ];
        for (q, want) in cases {
            let got = find_record(&idx, &q)
                .unwrap()
                .map(|(r, _)| idx.images.iter().position(|i| i.id == r.id).unwrap());
            assert_eq!(got, want, "{q:?}");
        }
        assert!(
            matches!(find_record(&idx, "a"), Err(Error::BadReference { .. })),
            "ambiguous prefix"
        );
        assert_eq!(
            find_record(&idx, "busybox").unwrap().unwrap().1,
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn temp_names() {
        assert_eq!(temp_owner(".tmp-abc-123-4"), Some(123));
        assert_eq!(temp_owner("import-77-0"), Some(77));
        assert_eq!(temp_owner("abc"), None);
        assert_eq!(temp_owner(".tmp-x"), None);
        assert_eq!(temp_owner(".index.json.tmp-42"), Some(42));
        assert_eq!(temp_owner("index.json"), None);
        assert_eq!(temp_owner(&"a".repeat(64)), None);
    }
}
