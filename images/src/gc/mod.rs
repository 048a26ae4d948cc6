//! Image garbage collection, with kubelet's image GC semantics: when the image file system is
//! used at or above the high threshold, free bytes down to the low threshold by removing
//! images no pod uses, least recently used first, never one younger than the minimum age.
//!
//! The decision (`bytes_to_free`, `plan`) is pure. `Store::garbage_collect` surveys the store
//! (what each unpacked layer and blob costs on disk), plans, and removes: first the images
//! from `index.json` (one atomic rewrite), then every layer directory and blob no remaining
//! image references. A crash between the two leaves only orphans, which the next GC sweeps
//! (orphans are swept on every pass, before planning, and count towards the bytes to free).
//! A layer of an image in use is referenced by that image, so it is never removed.
//!
//! GC holds `.gc.lock` exclusively and imports hold it shared: an import's freshly unpacked
//! layers are referenced by no image until its index write, and must not be swept meanwhile.
//! GC never waits for an import: it fails with `Error::Busy` and the caller tries later.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

mod plan;
use plan::unique;
pub use plan::{bytes_to_free, plan, Candidate, Plan};

use crate::digest::Digest;
use crate::store::{self, find_record, io_err, temp_owner, ImageRecord, IndexFile};
use crate::{manifest, Error, Result, Store};

/// Seconds since the Unix epoch (0 before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn from_secs(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

/// What one image costs on disk (blocks really allocated, hard links counted once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUsage {
    pub id: String,
    pub names: Vec<String>,
    /// Its blobs and unpacked layers, shared layers included.
    pub total_bytes: u64,
    /// What removing only this image would free: its own blobs and the layers no other
    /// image references.
    pub unique_bytes: u64,
    pub imported: SystemTime,
    pub last_used: SystemTime,
}

/// An image a GC pass removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedImage {
    pub id: String,
    pub names: Vec<String>,
}

/// What a GC pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub images_removed: Vec<RemovedImage>,
    /// Diff ID hex (or directory name, for debris) of every layer directory removed.
    pub layers_removed: Vec<String>,
    pub blobs_removed: usize,
    /// Names removed from an image that keeps other names (`remove_image` by such a name).
    pub untagged: Vec<String>,
    /// Bytes of the files removed (orphans swept included).
    pub bytes_freed: u64,
}

/// Disk cost of a file or tree: allocated blocks, not following symlinks, each hard-linked
/// inode once. Entries that vanish while walking count as nothing.
pub fn disk_bytes(path: &Path) -> u64 {
    tree_disk_bytes(path, usize::MAX)
}

/// `disk_bytes`, reading at most `max_entries` entries and never leaving `path`'s file system
/// (a pod's directory holds its containers' mounted root file systems, whose lower layers are
/// the image store's, not the pod's).
pub fn tree_disk_bytes(path: &Path, max_entries: usize) -> u64 {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = 0u64;
    let Ok(root) = fs::symlink_metadata(path) else {
        return 0;
    };
    let dev = root.dev();
    let mut read = 0usize;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.dev() != dev || (md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())))
        {
            continue;
        }
        read += 1;
        if read > max_entries {
            break;
        }
        total = total.saturating_add(md.blocks().saturating_mul(512));
        if md.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// What the store holds and what references what, read under the GC lock.
struct Survey {
    index: IndexFile,
    /// Layer diff ID hex -> bytes (unpacked directory plus its compressed blob).
    layer_bytes: BTreeMap<String, u64>,
    /// Image ID -> bytes of its config and manifest blobs.
    own_bytes: BTreeMap<String, u64>,
    /// Every blob hex some image references; `None` when a manifest could not be read, in
    /// which case no blob is swept (better an orphan kept than a blob lost).
    blobs: Option<BTreeSet<String>>,
}

/// Held while GC runs (exclusive) or an import runs (shared).
pub(crate) struct GcLock {
    _lock: Flock<fs::File>,
}

static RM_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Take `.gc.lock`: exclusive (GC, never waiting: `Error::Busy` if an import runs) or
    /// shared (imports, waiting for a GC to finish).
    pub(crate) fn gc_lock(&self, exclusive: bool) -> Result<GcLock> {
        let path = self.root().join(".gc.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let arg = if exclusive {
            FlockArg::LockExclusiveNonblock
        } else {
            FlockArg::LockShared
        };
        match Flock::lock(file, arg) {
            Ok(lock) => Ok(GcLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::Busy {
                path,
                reason: "an import is running; image GC will try again later".into(),
            }),
            Err((_, e)) => Err(Error::Io {
                path,
                source: e.into(),
            }),
        }
    }

    /// Record that a container started with `reference` (name, ID or ID prefix) at `at`, for
    /// least-recently-used GC. `Ok(false)` if no image matches.
    pub fn mark_used(&self, reference: &str, at: SystemTime) -> Result<bool> {
        let mut found = false;
        let mut lookup = Ok(());
        self.update_index(|index| {
            let id = match find_record(index, reference) {
                Ok(hit) => hit.map(|(r, _)| r.id.clone()),
                Err(e) => {
                    lookup = Err(e);
                    None
                }
            };
            if let Some(img) = index.images.iter_mut().find(|i| Some(&i.id) == id.as_ref()) {
                img.last_used = Some(unix_secs(at).max(img.last_used.unwrap_or(0)));
                found = true;
            }
        })?;
        lookup.map(|()| found)
    }

    /// What each image costs on disk, in index order.
    pub fn disk_usage(&self) -> Result<Vec<ImageUsage>> {
        let survey = self.survey()?;
        let cands = self.candidates(&survey, &BTreeSet::new());
        let mut refs: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &cands {
            for l in unique(&c.layers) {
                *refs.entry(l).or_default() += 1;
            }
        }
        Ok(cands
            .iter()
            .zip(&survey.index.images)
            .map(|(c, rec)| {
                let layers = unique(&c.layers);
                let bytes = |only_unique: bool| {
                    layers
                        .iter()
                        .filter(|l| !only_unique || refs.get(**l) == Some(&1))
                        .map(|l| survey.layer_bytes.get(*l).copied().unwrap_or(0))
                        .sum::<u64>()
                        + c.own_bytes
                };
                ImageUsage {
                    id: c.id.clone(),
                    names: rec.names.clone(),
                    total_bytes: bytes(false),
                    unique_bytes: bytes(true),
                    imported: c.imported,
                    last_used: c.last_used,
                }
            })
            .collect())
    }

    /// One GC pass: sweep orphans, then remove images not in `in_use` (names, IDs or ID
    /// prefixes the pods use), at least `min_age` old, least recently used first, until
    /// `bytes_to_free` (orphans included) are freed. `u64::MAX` removes every eligible image.
    pub fn garbage_collect(
        &self,
        in_use: &BTreeSet<String>,
        bytes_to_free: u64,
        min_age: Duration,
        now: SystemTime,
    ) -> Result<GcReport> {
        let _lock = self.gc_lock(true)?;
        let mut report = GcReport::default();
        self.sweep(&self.survey()?, &mut report);
        let need = bytes_to_free.saturating_sub(report.bytes_freed);
        let survey = self.survey()?;
        let cands = self.candidates(&survey, in_use);
        let plan = plan(&cands, &survey.layer_bytes, need, min_age, now);
        if plan.remove.is_empty() {
            return Ok(report);
        }
        self.remove_and_sweep(&plan.remove, &mut report)?;
        Ok(report)
    }

    /// Remove every image no pod uses, whatever its age (`tidelet image prune`).
    pub fn prune(&self, in_use: &BTreeSet<String>) -> Result<GcReport> {
        self.garbage_collect(in_use, u64::MAX, Duration::ZERO, SystemTime::now())
    }

    /// `tidelet image rm`: by a name the image shares with others, untag that name only
    /// (refused if a pod names it); else (its only name, or its ID) remove the image, refused
    /// when `in_use` designates it.
    pub fn remove_image(&self, reference: &str, in_use: &BTreeSet<String>) -> Result<GcReport> {
        let _lock = self.gc_lock(true)?;
        let index = self.read_index()?;
        let Some((rec, _)) = find_record(&index, reference)? else {
            return Err(Error::BadReference {
                reference: reference.into(),
                reason: "no such image in the store".into(),
            });
        };
        let by_name = crate::normalize_reference(reference)
            .ok()
            .filter(|n| rec.names.contains(n));
        let mut report = GcReport::default();
        if let Some(name) = by_name.filter(|_| rec.names.len() > 1) {
            let named_by_pod = in_use
                .iter()
                .any(|u| crate::normalize_reference(u).is_ok_and(|n| n == name));
            if named_by_pod {
                return Err(Error::InUse {
                    reference: reference.into(),
                    id: rec.id.clone(),
                });
            }
            let id = rec.id.clone();
            self.update_index(|index| {
                for img in index.images.iter_mut().filter(|i| i.id == id) {
                    img.names.retain(|n| *n != name);
                }
            })?;
            tracing::info!(image = %id, name = %name, "image name removed");
            report.untagged.push(name);
            return Ok(report);
        }
        if in_use_ids(&index, in_use).contains(&rec.id) {
            return Err(Error::InUse {
                reference: reference.into(),
                id: rec.id.clone(),
            });
        }
        self.remove_and_sweep(std::slice::from_ref(&rec.id), &mut report)?;
        Ok(report)
    }

    /// Drop `ids` from the index (atomically, first), then sweep what nothing references.
    fn remove_and_sweep(&self, ids: &[String], report: &mut GcReport) -> Result<()> {
        let mut removed = Vec::new();
        self.update_index(|index| {
            index.images.retain(|img| {
                let gone = ids.contains(&img.id);
                if gone {
                    removed.push(RemovedImage {
                        id: img.id.clone(),
                        names: img.names.clone(),
                    });
                }
                !gone
            });
        })?;
        for r in &removed {
            tracing::info!(image = %r.id, names = ?r.names, "image removed by GC");
        }
        report.images_removed.extend(removed);
        self.sweep(&self.survey()?, report);
        Ok(())
    }

    fn survey(&self) -> Result<Survey> {
        let index = self.read_index()?;
        let blobs_dir = self.root().join("blobs/sha256");
        let blob_bytes = |hex: &str| disk_bytes(&blobs_dir.join(hex));
        let mut layer_bytes = BTreeMap::new();
        let mut own_bytes = BTreeMap::new();
        let mut blobs = Some(BTreeSet::new());
        for img in &index.images {
            let config_hex = hex_of(&img.id);
            let manifest_hex = hex_of(&img.manifest);
            own_bytes.insert(
                img.id.clone(),
                blob_bytes(config_hex) + blob_bytes(manifest_hex),
            );
            let layer_blobs = self.layer_blobs(img);
            if let Some(set) = &mut blobs {
                match &layer_blobs {
                    Some(lb) => {
                        set.insert(config_hex.to_string());
                        set.insert(manifest_hex.to_string());
                        set.extend(lb.iter().cloned());
                    }
                    None => blobs = None,
                }
            }
            for (i, diff_id) in img.diff_ids.iter().enumerate() {
                let hex = hex_of(diff_id).to_string();
                if layer_bytes.contains_key(&hex) {
                    continue;
                }
                let blob = layer_blobs
                    .as_ref()
                    .and_then(|lb| lb.get(i))
                    .map_or(0, |b| blob_bytes(b));
                let dir = disk_bytes(&self.layers_dir().join(&hex));
                layer_bytes.insert(hex, dir + blob);
            }
        }
        Ok(Survey {
            index,
            layer_bytes,
            own_bytes,
            blobs,
        })
    }

    /// The compressed layer blobs of `img`, in diff ID order, from its manifest blob.
    fn layer_blobs(&self, img: &ImageRecord) -> Option<Vec<String>> {
        let path = self.root().join("blobs/sha256").join(hex_of(&img.manifest));
        let read = fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
            if b.len() as u64 > manifest::MAX_JSON_BYTES {
                return Err("manifest too large".into());
            }
            manifest::parse_manifest(&b)
        });
        match read {
            Ok(m) => Some(
                m.layers
                    .iter()
                    .map(|l| {
                        Digest::parse(&l.digest)
                            .map_or_else(|_| l.digest.clone(), |d| d.hex().into())
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(path = %path.display(), image = %img.id, error = %e, "cannot read manifest; unreferenced blobs are kept");
                None
            }
        }
    }

    fn candidates(&self, survey: &Survey, in_use: &BTreeSet<String>) -> Vec<Candidate> {
        let used = in_use_ids(&survey.index, in_use);
        survey
            .index
            .images
            .iter()
            .map(|img| {
                let imported = img.imported.map(from_secs).unwrap_or_else(|| {
                    // Older index: the config blob was written at import.
                    let blob = self.root().join("blobs/sha256").join(hex_of(&img.id));
                    fs::metadata(&blob)
                        .and_then(|m| m.modified())
                        .unwrap_or(UNIX_EPOCH)
                });
                Candidate {
                    id: img.id.clone(),
                    own_bytes: survey.own_bytes.get(&img.id).copied().unwrap_or(0),
                    layers: img.diff_ids.iter().map(|d| hex_of(d).to_string()).collect(),
                    imported,
                    last_used: img
                        .last_used
                        .map(from_secs)
                        .unwrap_or(imported)
                        .max(imported),
                    in_use: used.contains(&img.id),
                }
            })
            .collect()
    }

    /// Remove layer directories and blobs no image in `survey` references, and debris of
    /// dead processes. A layer directory is first renamed to a temp name (so a reader sees
    /// it whole or not at all; a crash mid-removal leaves debris the next pass removes).
    fn sweep(&self, survey: &Survey, report: &mut GcReport) {
        let layers: BTreeSet<&str> = survey
            .index
            .images
            .iter()
            .flat_map(|i| i.diff_ids.iter().map(|d| hex_of(d)))
            .collect();
        let layers_dir = self.layers_dir();
        for (name, path) in entries(&layers_dir) {
            if layers.contains(name.as_str()) || live_temp(&name) {
                continue;
            }
            let n = RM_COUNTER.fetch_add(1, Ordering::Relaxed);
            let doomed = if name.starts_with(".tmp-") {
                path.clone()
            } else {
                layers_dir.join(format!(".tmp-rm{name}-{}-{n}", std::process::id()))
            };
            if doomed != path {
                if let Err(e) = fs::rename(&path, &doomed) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove layer");
                    continue;
                }
            }
            let bytes = disk_bytes(&doomed);
            let removed = if doomed.is_dir() {
                fs::remove_dir_all(&doomed)
            } else {
                fs::remove_file(&doomed)
            };
            match removed {
                Ok(()) => {
                    tracing::info!(layer = %name, bytes, "layer removed by GC");
                    report.layers_removed.push(name);
                    report.bytes_freed = report.bytes_freed.saturating_add(bytes);
                }
                Err(e) => {
                    tracing::warn!(path = %doomed.display(), error = %e, "cannot remove layer")
                }
            }
        }
        let _ = store::fsync_dir(&layers_dir);
        let Some(blobs) = &survey.blobs else {
            return;
        };
        let blobs_dir = self.root().join("blobs/sha256");
        for (name, path) in entries(&blobs_dir) {
            let debris = name.starts_with('.') && !live_temp(&name);
            let orphan = Digest::from_hex(&name).is_some() && !blobs.contains(&name);
            if !(debris || orphan) {
                continue;
            }
            let bytes = disk_bytes(&path);
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(blob = %name, bytes, "blob removed by GC");
                    report.blobs_removed += 1;
                    report.bytes_freed = report.bytes_freed.saturating_add(bytes);
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove blob"),
            }
        }
        let _ = store::fsync_dir(&blobs_dir);
    }
}

/// The `sha256:` IDs of the images `in_use` designates (by ID, name or ID prefix). An
/// ambiguous prefix protects every image it matches.
fn in_use_ids(index: &IndexFile, in_use: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for q in in_use {
        if let Some(img) = index.images.iter().find(|i| &i.id == q) {
            out.insert(img.id.clone());
            continue;
        }
        match find_record(index, q) {
            Ok(Some((img, _))) => {
                out.insert(img.id.clone());
            }
            Ok(None) => {}
            Err(_) => {
                let hex = q.strip_prefix("sha256:").unwrap_or(q);
                out.extend(
                    index
                        .images
                        .iter()
                        .filter(|i| hex_of(&i.id).starts_with(hex))
                        .map(|i| i.id.clone()),
                );
            }
        }
    }
    out
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A temp name (`.tmp-…-<pid>-<n>`, `.<file>.tmp-<pid>`) of a process still alive.
fn live_temp(name: &str) -> bool {
    temp_owner(name).is_some_and(|pid| pid == std::process::id() || store::process_alive(pid))
}

fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, PathBuf)> = rd
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_bytes_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, vec![1u8; 64 * 1024]).unwrap();
        let one = disk_bytes(&dir.path().join("f"));
        assert!(one >= 64 * 1024, "{one}");
        fs::hard_link(&f, dir.path().join("g")).unwrap();
        let with_link = disk_bytes(dir.path());
        let dir_only = fs::symlink_metadata(dir.path()).unwrap().blocks() * 512;
        assert_eq!(with_link, one + dir_only);
        assert_eq!(disk_bytes(&dir.path().join("missing")), 0);
    }

    #[test]
    fn tree_disk_bytes_stops_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("a")).unwrap();
        fs::write(dir.path().join("a/f"), vec![1u8; 64 << 10]).unwrap();
        fs::write(dir.path().join("g"), vec![1u8; 64 << 10]).unwrap();
        let all = tree_disk_bytes(dir.path(), usize::MAX);
        assert!(all >= 128 << 10, "{all}");
        assert_eq!(all, disk_bytes(dir.path()));
        assert!(tree_disk_bytes(dir.path(), 2) < all);
    }
}
