//! Disk reclaim: kubelet's image GC and container (log) GC for tidelet. The eviction manager
//! calls `reclaim_disk` under disk pressure before it evicts anything; the agent also runs
//! `image_gc_tick` on a timer (kubelet: every 5 min), which collects images only when the
//! images' file system is used at or above `imageGCHighThresholdPercent`, down to
//! `imageGCLowThresholdPercent`.
//!
//! What is in use comes from the caller (`images_in_use` derives it from the pods it knows):
//! an image named by a pod's spec or status, or a pod UID whose logs must stay. The store
//! never removes a layer of an image in use, so a running container's overlay keeps its lower
//! directories. The file-system figures come through `FsStatsSource` (real: `statvfs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use tidelet_images::{GcReport, Store};

pub mod logs;

pub use logs::{reclaim_logs, LogsReclaimed};

/// kubelet's image GC policy (`Config::image_gc_policy` builds it from the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    pub high_threshold_percent: u8,
    pub low_threshold_percent: u8,
    pub minimum_age: Duration,
}

/// A file system's size and free space, as `statvfs` gives them (free = available to
/// unprivileged users, as kubelet's `nodefs.available`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStats {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// Where file-system figures come from; tests pass a fake.
pub trait FsStatsSource: Send + Sync {
    fn stats(&self, path: &Path) -> std::io::Result<FsStats>;
}

/// `statvfs(2)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Statvfs;

impl FsStatsSource for Statvfs {
    fn stats(&self, path: &Path) -> std::io::Result<FsStats> {
        let s = crate::signals::fs_sample(path).map_err(std::io::Error::other)?;
        Ok(FsStats {
            capacity_bytes: s.capacity,
            available_bytes: s.available,
            inodes: s.inodes,
            inodes_free: s.inodes_free,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("{path}: cannot read file-system figures: {source}")]
    Stats {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image GC: {0}")]
    Images(#[from] tidelet_images::Error),
}

/// What the pods use: image references and IDs (spec `image` of every container, status
/// `imageID`), and the pod UIDs whose logs stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InUse {
    pub images: BTreeSet<String>,
    pub pod_uids: BTreeSet<String>,
}

/// `InUse` of a set of pods: every image their containers (init and ephemeral included) name
/// or ran with, and their UIDs.
pub fn images_in_use<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> InUse {
    let mut out = InUse::default();
    for pod in pods {
        if let Some(uid) = &pod.metadata.uid {
            out.pod_uids.insert(uid.clone());
        }
        if let Some(spec) = &pod.spec {
            let images = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .filter_map(|c| c.image.clone());
            let ephemeral = spec
                .ephemeral_containers
                .iter()
                .flatten()
                .filter_map(|c| c.image.clone());
            out.images.extend(images.chain(ephemeral));
        }
        if let Some(status) = &pod.status {
            let ids = status
                .container_statuses
                .iter()
                .flatten()
                .chain(status.init_container_statuses.iter().flatten())
                .flat_map(|s| [s.image_id.clone(), s.image.clone()]);
            out.images.extend(ids.filter(|s| !s.is_empty()));
        }
    }
    out
}

/// What `reclaim_disk` freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Bytes of the files removed (logs and images).
    pub bytes: u64,
    pub images_removed: usize,
    /// Log files and dead pods' log directories removed.
    pub logs_removed: usize,
    /// Image GC could not run (e.g. `Busy` while an import runs); logs were still reclaimed.
    pub image_error: Option<String>,
}

/// Reclaim disk before evicting: first dead containers' logs (cheap, harmless), then unused
/// images, least recently used first and none younger than `minimum_age`, until `need_bytes`
/// are freed (`u64::MAX`: everything reclaimable, as kubelet's eviction manager asks).
pub fn reclaim_disk(
    store: &Store,
    logs_dir: &Path,
    in_use: &InUse,
    need_bytes: u64,
    minimum_age: Duration,
    now: SystemTime,
) -> Reclaimed {
    let span = tracing::info_span!("reclaim_disk", need_bytes);
    let _enter = span.enter();
    let logs = reclaim_logs(logs_dir, &in_use.pod_uids);
    let mut out = Reclaimed {
        bytes: logs.bytes,
        logs_removed: logs.files_removed + logs.pod_dirs_removed,
        ..Reclaimed::default()
    };
    let rest = need_bytes.saturating_sub(logs.bytes);
    if rest > 0 {
        match store.garbage_collect(&in_use.images, rest, minimum_age, now) {
            Ok(r) => {
                out.bytes = out.bytes.saturating_add(r.bytes_freed);
                out.images_removed = r.images_removed.len();
            }
            Err(e) => {
                tracing::warn!(error = %e, "image GC failed during disk reclaim");
                out.image_error = Some(e.to_string());
            }
        }
    }
    tracing::info!(
        bytes = out.bytes,
        images_removed = out.images_removed,
        logs_removed = out.logs_removed,
        "disk reclaimed"
    );
    out
}

/// The periodic image GC: when the store's file system is used at or above the high
/// threshold, remove unused images until usage is down to the low threshold. `Ok(None)` when
/// below the threshold (nothing done).
pub fn image_gc_tick(
    store: &Store,
    fs: &dyn FsStatsSource,
    policy: &ImageGcPolicy,
    in_use_images: &BTreeSet<String>,
    now: SystemTime,
) -> Result<Option<GcReport>, GcError> {
    let path = store.root();
    let stats = fs.stats(path).map_err(|source| GcError::Stats {
        path: path.to_path_buf(),
        source,
    })?;
    let need = tidelet_images::gc::bytes_to_free(
        stats.capacity_bytes,
        stats.available_bytes,
        policy.high_threshold_percent,
        policy.low_threshold_percent,
    );
    if need == 0 {
        return Ok(None);
    }
    tracing::info!(
        capacity = stats.capacity_bytes,
        available = stats.available_bytes,
        high = policy.high_threshold_percent,
        low = policy.low_threshold_percent,
        need,
        "image file system above the GC threshold"
    );
    let report = store.garbage_collect(in_use_images, need, policy.minimum_age, now)?;
    if report.bytes_freed < need {
        tracing::warn!(
            freed = report.bytes_freed,
            need,
            "image GC could not free enough: the rest is in use or too young"
        );
    }
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::sync::Mutex;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn tar_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append_data(&mut h, p, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Import a one-layer OCI image holding `file` of `size` bytes, named `name`.
    fn import(store: &Store, dir: &Path, name: &str, file: &str, size: usize) {
        let layer = tar_of(&[(file, vec![b'x'; size])]);
        let cfg = serde_json::to_vec(&serde_json::json!({
            "architecture": if cfg!(target_arch = "x86_64") { "amd64" } else if cfg!(target_arch = "aarch64") { "arm64" } else { "arm" },
            "os": "linux", "config": {"Cmd": ["/x"]},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha(&layer))]}
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha(&cfg)), "size": cfg.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{}", sha(&layer)), "size": layer.len()}],
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", sha(&manifest)), "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": name}}],
        }))
        .unwrap();
        let archive = tar_of(&[
            (&format!("blobs/sha256/{}", sha(&cfg)), cfg.clone()),
            (&format!("blobs/sha256/{}", sha(&layer)), layer.clone()),
            (
                &format!("blobs/sha256/{}", sha(&manifest)),
                manifest.clone(),
            ),
            ("index.json", index),
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ]);
        let path = dir.join(format!("{file}.tar"));
        std::fs::write(&path, archive).unwrap();
        store.import(&path).unwrap();
    }

    fn names(store: &Store) -> Vec<String> {
        let mut v: Vec<String> = store
            .list()
            .unwrap()
            .into_iter()
            .flat_map(|i| i.names)
            .collect();
        v.sort();
        v
    }

    struct FakeFs(Mutex<std::io::Result<FsStats>>);

    impl FsStatsSource for FakeFs {
        fn stats(&self, _: &Path) -> std::io::Result<FsStats> {
            match &*self.0.lock().unwrap() {
                Ok(s) => Ok(*s),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            }
        }
    }

    fn fs(capacity: u64, available: u64) -> FakeFs {
        FakeFs(Mutex::new(Ok(FsStats {
            capacity_bytes: capacity,
            available_bytes: available,
            ..FsStats::default()
        })))
    }

    #[test]
    fn tick_collects_only_above_the_high_threshold_and_keeps_images_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("images")).unwrap();
        import(&store, dir.path(), "localhost/a:1", "a", 20_000);
        import(&store, dir.path(), "localhost/b:1", "b", 20_000);
        import(&store, dir.path(), "localhost/c:1", "c", 20_000);
        let policy = crate::config::Config::default().image_gc_policy();
        let later = SystemTime::now() + Duration::from_secs(3600);
        let in_use: BTreeSet<String> = ["localhost/a:1".to_string()].into();

        // 84 % used: nothing happens.
        let r = image_gc_tick(&store, &fs(100 << 20, 16 << 20), &policy, &in_use, later).unwrap();
        assert_eq!(r, None);
        assert_eq!(names(&store).len(), 3);
        // 90 % used, 10 MiB to free: every unused image goes, the one in use stays.
        let r = image_gc_tick(&store, &fs(100 << 20, 10 << 20), &policy, &in_use, later)
            .unwrap()
            .expect("above the threshold");
        assert_eq!(r.images_removed.len(), 2);
        assert_eq!(names(&store), vec!["localhost/a:1"]);
        // Too young for the minimum age: kept even above the threshold.
        import(&store, dir.path(), "localhost/d:1", "d", 20_000);
        let r = image_gc_tick(&store, &fs(100, 1), &policy, &in_use, SystemTime::now())
            .unwrap()
            .unwrap();
        assert!(r.images_removed.is_empty());
        assert_eq!(names(&store).len(), 2);

        let broken = FakeFs(Mutex::new(Err(std::io::Error::from_raw_os_error(
            libc::EIO,
        ))));
        let e = image_gc_tick(&store, &broken, &policy, &in_use, later).unwrap_err();
        assert!(
            e.to_string().contains(&store.root().display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn reclaim_takes_logs_first_then_images_as_needed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("images")).unwrap();
        let logs = dir.path().join("logs");
        import(&store, dir.path(), "localhost/a:1", "a", 50_000);
        import(&store, dir.path(), "localhost/b:1", "b", 50_000);
        let dead = logs.join("default_gone-n_u0/c");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join("0.log"), vec![b'l'; 40_000]).unwrap();
        let old = SystemTime::now() - logs::DEAD_POD_MIN_AGE - Duration::from_secs(5);
        std::fs::File::open(logs.join("default_gone-n_u0"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let live = logs.join("default_web-n_u1/c");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(live.join("3.log"), b"now").unwrap();
        let mut in_use = InUse::default();
        in_use.pod_uids.insert("u1".into());
        in_use.images.insert("localhost/a:1".into());
        let later = SystemTime::now() + Duration::from_secs(3600);
        let min_age = Duration::from_secs(120);

        // The dead pod's logs cover what is needed: no image goes.
        let r = reclaim_disk(&store, &logs, &in_use, 4096, min_age, later);
        assert_eq!((r.logs_removed, r.images_removed), (1, 0));
        assert!(r.bytes >= 40_000, "{r:?}");
        assert_eq!(names(&store).len(), 2);
        assert!(live.join("3.log").exists());
        // Now only images can give: the unused one goes, the used one stays.
        let r = reclaim_disk(&store, &logs, &in_use, u64::MAX, min_age, later);
        assert_eq!((r.logs_removed, r.images_removed), (0, 1));
        assert!(r.bytes >= 50_000, "{r:?}");
        assert_eq!(r.image_error, None);
        assert_eq!(names(&store), vec!["localhost/a:1"]);
    }

    #[test]
    fn in_use_comes_from_specs_and_statuses() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {
                "containers": [{"name": "a", "image": "busybox"}],
                "initContainers": [{"name": "i", "image": "localhost/init:1"}],
            },
            "status": {"containerStatuses": [{"name": "a", "image": "busybox", "imageID": "sha256:abc",
                "ready": true, "restartCount": 0}]},
        }))
        .unwrap();
        let got = images_in_use([&pod]);
        assert_eq!(
            got.images,
            ["busybox", "localhost/init:1", "sha256:abc"]
                .map(String::from)
                .into()
        );
        assert_eq!(got.pod_uids, ["u1".to_string()].into());
    }
}
