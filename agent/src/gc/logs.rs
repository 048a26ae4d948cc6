//! Dead containers' logs, as kubelet's container GC sees them. The agent keeps a container's
//! logs at `<logs_dir>/<namespace>_<pod>_<uid>/<container>/<attempt>.log` (rotated files
//! `<attempt>.log.<k>`), see `agent::prepare::log_path`. Dead are: the logs of attempts older
//! than the previous one (kubelet keeps one dead container per container,
//! `MaxPerPodContainer = 1`, which `tidelet logs --previous` reads), and the log directories
//! of pods that no longer exist (the agent removes them with the pod; these are left by a
//! crash). Which files are dead is decided by pure functions; `reclaim_logs` only walks and
//! removes.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A pod log directory changed this recently is kept even when its UID is unknown: a pod
/// being set up creates it before every caller's view of the pods lists the pod.
pub const DEAD_POD_MIN_AGE: Duration = Duration::from_secs(60);

/// The pod UID of a log directory name `<namespace>_<name>_<uid>`; `None` for names of
/// another shape (left alone). Namespaces and names are DNS labels/subdomains: no `_`.
pub fn pod_uid_of(dir_name: &str) -> Option<&str> {
    let mut parts = dir_name.split('_');
    let (ns, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && !ns.is_empty() && !name.is_empty() && !uid.is_empty()).then_some(uid)
}

/// The attempt a log file name belongs to: `N.log` or a rotated `N.log.K`.
pub fn attempt_of(file_name: &str) -> Option<u32> {
    let (n, rest) = file_name.split_once(".log")?;
    let rotated_ok = rest.is_empty()
        || rest
            .strip_prefix('.')
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
    if !rotated_ok || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The files of one container's log directory to remove: those of every attempt but the two
/// newest (the current one and the previous). Names not shaped like logs are kept.
pub fn dead_attempt_files<'a>(file_names: &[&'a str]) -> Vec<&'a str> {
    let attempts: BTreeSet<u32> = file_names.iter().filter_map(|f| attempt_of(f)).collect();
    let Some(&oldest_kept) = attempts.iter().rev().nth(1) else {
        return Vec::new();
    };
    let mut dead: Vec<&str> = file_names
        .iter()
        .copied()
        .filter(|f| attempt_of(f).is_some_and(|a| a < oldest_kept))
        .collect();
    dead.sort_unstable();
    dead
}

/// What `reclaim_logs` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsReclaimed {
    /// Bytes of the files removed (allocated blocks).
    pub bytes: u64,
    /// Log files of old attempts removed.
    pub files_removed: usize,
    /// Log directories of pods that no longer exist removed.
    pub pod_dirs_removed: usize,
}

/// Remove dead logs under `logs_dir`: directories of pods whose UID is not in `live_pod_uids`
/// (pass every pod the agent knows, running or starting; directories changed in the last
/// `DEAD_POD_MIN_AGE` are kept regardless), and the files of attempts older than the previous one in live pods. Errors
/// are logged and skipped: reclaim is best effort.
pub fn reclaim_logs(logs_dir: &Path, live_pod_uids: &BTreeSet<String>) -> LogsReclaimed {
    let mut out = LogsReclaimed::default();
    let Ok(pods) = fs::read_dir(logs_dir) else {
        return out;
    };
    for pod in pods.flatten() {
        let name = pod.file_name().to_string_lossy().into_owned();
        let Some(uid) = pod_uid_of(&name) else {
            continue;
        };
        let path = pod.path();
        if !pod.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if !live_pod_uids.contains(uid) {
            let recent = pod
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_none_or(|age| age < DEAD_POD_MIN_AGE);
            if recent {
                tracing::debug!(path = %path.display(), "unknown pod's logs are recent; kept for now");
                continue;
            }
            let bytes = tidelet_images::gc::disk_bytes(&path);
            match fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), bytes, "removed logs of a pod that no longer exists");
                    out.bytes += bytes;
                    out.pod_dirs_removed += 1;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a dead pod's logs")
                }
            }
            continue;
        }
        let Ok(containers) = fs::read_dir(&path) else {
            continue;
        };
        for c in containers.flatten() {
            let dir = c.path();
            let Ok(files) = fs::read_dir(&dir) else {
                continue;
            };
            let names: Vec<String> = files
                .flatten()
                .map(|f| f.file_name().to_string_lossy().into_owned())
                .collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            for f in dead_attempt_files(&refs) {
                let file = dir.join(f);
                let bytes = tidelet_images::gc::disk_bytes(&file);
                match fs::remove_file(&file) {
                    Ok(()) => {
                        tracing::info!(path = %file.display(), bytes, "removed an old attempt's log");
                        out.bytes += bytes;
                        out.files_removed += 1;
                    }
                    Err(e) => {
                        tracing::warn!(path = %file.display(), error = %e, "cannot remove an old attempt's log")
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_uid_table() {
        let cases = [
            ("default_web-node1_0123abcd", Some("0123abcd")),
            ("kube-system_a.b_u", Some("u")),
            ("default_web", None),
            ("a_b_c_d", None),
            ("_web_u", None),
            ("default__u", None),
            ("default_web_", None),
            ("lost+found", None),
        ];
        for (name, want) in cases {
            assert_eq!(pod_uid_of(name), want, "{name}");
        }
    }

    #[test]
    fn attempt_table() {
        let cases = [
            ("0.log", Some(0)),
            ("12.log", Some(12)),
            ("3.log.1", Some(3)),
            ("3.log.10", Some(3)),
            ("3.log.", None),
            ("3.log.x", None),
            (".log", None),
            ("x.log", None),
            ("3.txt", None),
            ("3.logx", None),
        ];
        for (name, want) in cases {
            assert_eq!(attempt_of(name), want, "{name}");
        }
    }

    #[test]
    fn dead_attempts_table() {
        let cases: [(&[&str], &[&str]); 6] = [
            (&[], &[]),
            (&["0.log"], &[]),
            (&["0.log", "1.log", "1.log.1"], &[]),
            (
                &["0.log", "0.log.1", "1.log", "2.log"],
                &["0.log", "0.log.1"],
            ),
            // Gaps and order do not matter; odd names stay.
            (&["7.log", "2.log", "notes", "5.log.2", "5.log"], &["2.log"]),
            (
                &["10.log", "9.log", "8.log", "8.log.1", "1.log"],
                &["1.log", "8.log", "8.log.1"],
            ),
        ];
        for (files, want) in cases {
            assert_eq!(dead_attempt_files(files), want, "{files:?}");
        }
    }

    #[test]
    fn reclaim_removes_dead_pods_and_old_attempts_only() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path();
        let live = logs.join("default_web-n_live");
        let dead = logs.join("default_old-n_gone");
        let odd = logs.join("not-a-pod-dir");
        for d in [live.join("c"), live.join("d"), dead.join("c"), odd.clone()] {
            fs::create_dir_all(d).unwrap();
        }
        for (p, n) in [
            (live.join("c/0.log"), 9000),
            (live.join("c/0.log.1"), 9000),
            (live.join("c/1.log"), 10),
            (live.join("c/2.log"), 10),
            (live.join("d/0.log"), 10),
            (dead.join("c/0.log"), 20000),
            (odd.join("x"), 10),
        ] {
            fs::write(p, vec![b'l'; n]).unwrap();
        }
        // Just written: the unknown pod's directory is kept for now.
        let young = logs.join("default_new-n_starting");
        fs::create_dir_all(young.join("c")).unwrap();
        fs::write(young.join("c/0.log"), b"x").unwrap();
        let old = SystemTime::now() - DEAD_POD_MIN_AGE - Duration::from_secs(5);
        fs::File::open(&dead).unwrap().set_modified(old).unwrap();
        let r = reclaim_logs(logs, &["live".to_string()].into_iter().collect());
        assert!(young.join("c/0.log").exists());
        assert_eq!(r.files_removed, 2);
        assert_eq!(r.pod_dirs_removed, 1);
        assert!(r.bytes >= 9000 + 9000 + 20000, "{}", r.bytes);
        assert!(!dead.exists());
        assert!(!live.join("c/0.log").exists() && !live.join("c/0.log.1").exists());
        for kept in ["c/1.log", "c/2.log", "d/0.log"] {
            assert!(live.join(kept).exists(), "{kept}");
        }
        assert!(odd.join("x").exists());
        // Idempotent; a missing logs dir is nothing to do.
        assert_eq!(
            reclaim_logs(logs, &["live".to_string()].into_iter().collect()),
            LogsReclaimed::default()
        );
        assert_eq!(
            reclaim_logs(&logs.join("missing"), &BTreeSet::new()),
            LogsReclaimed::default()
        );
    }
}
