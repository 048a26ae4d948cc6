//! The static-pod directory with kubelet's `staticPodPath` semantics.
//!
//! `StaticDir` keeps, per file, its last stamp (so unchanged files are not re-parsed), its
//! current parse result, and its last good pods. `desired()` is a pure function of that map:
//! a file that became invalid keeps contributing its last good pods (with its errors attached),
//! and a pod name defined twice is taken from the first file in path order.
//! Change notification (inotify through `notify`) only triggers a rescan; the periodic rescan
//! is the safety net for missed events.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::Watcher;
use tokio::sync::mpsc;

use crate::manifest::{self, FileResult, Problem, StaticPod};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

#[derive(Debug, Clone)]
struct FileEntry {
    stamp: Stamp,
    current: FileResult,
    last_good: Vec<Arc<StaticPod>>,
}

/// A pod the directory asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPod {
    pub pod: Arc<StaticPod>,
    /// Errors of its file while the file is invalid (the pod runs on its last good spec).
    pub file_errors: Vec<Problem>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredSet {
    /// By `namespace/name`.
    pub pods: BTreeMap<String, DesiredPod>,
    /// Every current problem: invalid files, duplicate names.
    pub errors: Vec<Problem>,
}

pub fn pod_key(p: &StaticPod) -> String {
    format!(
        "{}/{}",
        p.pod.metadata.namespace.as_deref().unwrap_or("default"),
        p.pod.metadata.name.as_deref().unwrap_or_default()
    )
}

pub struct StaticDir {
    dir: PathBuf,
    node_name: String,
    files: BTreeMap<PathBuf, FileEntry>,
}

impl StaticDir {
    pub fn new(dir: &Path, node_name: &str) -> Self {
        StaticDir {
            dir: dir.to_path_buf(),
            node_name: node_name.to_string(),
            files: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-read the directory; parse new and changed files. Returns whether anything changed.
    pub fn rescan(&mut self) -> std::io::Result<bool> {
        let mut seen = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !manifest::is_manifest_file_name(name) {
                continue;
            }
            let path = entry.path();
            // Follow symlinks as kubelet does (a manifest may be a link into /etc/...).
            let Ok(md) = std::fs::metadata(&path) else {
                continue;
            };
            if !md.is_file() {
                continue;
            }
            let stamp = Stamp {
                ino: md.ino(),
                size: md.size(),
                mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            };
            seen.insert(path, stamp);
        }
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains_key(p));
        let mut changed = before != self.files.len();
        for (path, stamp) in seen {
            if self.files.get(&path).is_some_and(|e| e.stamp == stamp) {
                continue;
            }
            changed = true;
            let current = manifest::load_file(&path, &self.node_name);
            for e in &current.errors {
                tracing::warn!(file = %e.file.display(), field = %e.field, reason = %e.reason, "invalid static pod manifest");
            }
            for w in &current.rejected_warnings {
                tracing::warn!(file = %w.file.display(), field = %w.field, reason = %w.reason, "field of an invalid static pod manifest");
            }
            let last_good = if current.errors.is_empty() {
                current.pods.iter().cloned().map(Arc::new).collect()
            } else {
                self.files
                    .get(&path)
                    .map(|e| e.last_good.clone())
                    .unwrap_or_default()
            };
            self.files.insert(
                path,
                FileEntry {
                    stamp,
                    current,
                    last_good,
                },
            );
        }
        Ok(changed)
    }

    pub fn desired(&self) -> DesiredSet {
        let mut set = DesiredSet::default();
        let mut owner: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (path, entry) in &self.files {
            set.errors.extend(entry.current.errors.iter().cloned());
            for pod in &entry.last_good {
                let key = pod_key(pod);
                if let Some(first) = owner.get(&key) {
                    set.errors.push(Problem {
                        file: path.clone(),
                        field: "metadata.name".into(),
                        reason: format!(
                            "pod {key:?} is already defined in {}; this one is ignored",
                            first.display()
                        ),
                        at: Default::default(),
                    });
                    continue;
                }
                owner.insert(key.clone(), path.clone());
                set.pods.insert(
                    key,
                    DesiredPod {
                        pod: pod.clone(),
                        file_errors: entry.current.errors.clone(),
                    },
                );
            }
        }
        set
    }
}

/// Watch `dir` for changes and signal `tx` (capacity 1: a pending signal already means
/// "rescan", so further ones are coalesced). Only completed writes, removals and renames count,
/// so a manifest is never read half-written by an editor or `cat >`.
pub fn watch(dir: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let relevant = match ev {
            Ok(ev) => {
                matches!(
                    ev.kind,
                    EventKind::Access(AccessKind::Close(AccessMode::Write))
                        | EventKind::Remove(_)
                        | EventKind::Modify(ModifyKind::Name(_))
                        | EventKind::Create(notify::event::CreateKind::Folder)
                ) || ev.need_rescan()
            }
            Err(_) => true,
        };
        if relevant {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
