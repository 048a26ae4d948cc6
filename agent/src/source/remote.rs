//! The desired-pod source fed by the control plane: one retained message per pod on
//! `desired/pods/<namespace>/<name>`, an empty one removing it. No MQTT here: the session
//! hands over `(namespace, name, payload)` and publishes the `DesiredResult` it gets back.
//!
//! A payload is read as a static-pod file is (`manifest::parse_remote`), then checked against
//! the local `RemotePolicy`. An accepted pod is persisted under the state directory (one file
//! per pod, written atomically and durably) before it is reported accepted, so it restarts
//! after a reboot with no broker. A rejected update leaves the accepted version running, as a
//! static file that became invalid does, and the result says why.
//!
//! Memory is bounded by what the back-end retains for this node: one entry per pod it
//! asked for; entries holding only a rejection or a removal are capped at
//! `MAX_RESULTS_WITHOUT_POD`, oldest dropped first.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::merge::Conflict;
use super::policy::RemotePolicy;
use super::static_dir::{DesiredPod, DesiredSet};
use crate::manifest::{self, Problem, RemoteRejection, StaticPod};

pub use crate::manifest::MAX_REMOTE_MANIFEST_BYTES;

/// Entries kept that hold no accepted pod (a rejection or a removal, for `results`).
pub const MAX_RESULTS_WITHOUT_POD: usize = 1024;

/// Mode of the persisted files: a manifest may carry credentials in its environment.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;
/// Longest plain file name: most file systems take 255 bytes, and the temp file written
/// beside it adds a dot and `.tmp<pid>`.
const NAME_MAX: usize = 236;

/// Why a desired pod was accepted or rejected: the `reason` of the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultReason {
    Accepted,
    Removed,
    Invalid,
    PolicyViolation,
    Conflict,
    WrongNode,
    TooLarge,
    NotAPod,
}

impl From<RemoteRejection> for ResultReason {
    fn from(r: RemoteRejection) -> Self {
        match r {
            RemoteRejection::TooLarge => ResultReason::TooLarge,
            RemoteRejection::NotAPod => ResultReason::NotAPod,
            RemoteRejection::Invalid => ResultReason::Invalid,
            RemoteRejection::WrongNode => ResultReason::WrongNode,
        }
    }
}

pub const RESULT_API_VERSION: &str = "tidelet.io/v1";
pub const RESULT_KIND: &str = "DesiredPodResult";

/// The answer published on `desired/results/<namespace>/<name>` (the `DesiredPodResult` of
/// docs/mqtt.md). `generation` and `resourceVersion` echo the manifest the answer is about;
/// `uid` is the pod tidelet runs for this key, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredResult {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub accepted: bool,
    pub reason: ResultReason,
    pub message: String,
    /// `field: reason` of each problem.
    pub errors: Vec<String>,
    pub generation: Option<i64>,
    pub resource_version: Option<String>,
    pub uid: Option<String>,
}

impl DesiredResult {
    fn new(namespace: &str, name: &str, reason: ResultReason, message: String) -> Self {
        DesiredResult {
            api_version: RESULT_API_VERSION.into(),
            kind: RESULT_KIND.into(),
            namespace: namespace.into(),
            name: name.into(),
            accepted: matches!(reason, ResultReason::Accepted | ResultReason::Removed),
            reason,
            message,
            errors: Vec::new(),
            generation: None,
            resource_version: None,
            uid: None,
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What is on disk for one accepted pod.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Persisted {
    namespace: String,
    name: String,
    /// The payload as received (UTF-8, checked before acceptance).
    payload: String,
    generation: Option<i64>,
    resource_version: Option<String>,
}

#[derive(Debug, Clone)]
struct Accepted {
    pod: Arc<StaticPod>,
    generation: Option<i64>,
    resource_version: Option<String>,
    /// MD5 of the payload on disk, if it was saved: the broker re-sends every retained
    /// message on each resubscription, and rewriting (and syncing) an unchanged file each
    /// time would only wear the board's flash.
    saved: Option<[u8; 16]>,
}

#[derive(Debug, Clone)]
struct Entry {
    namespace: String,
    name: String,
    accepted: Option<Accepted>,
    /// Problems of the latest payload when it was rejected (the accepted version, if any,
    /// keeps running).
    rejected: Vec<Problem>,
    /// The answer to the latest payload, before any conflict with a local file.
    own: DesiredResult,
    /// The local static-pod file that defines the same key and wins.
    conflict: Option<PathBuf>,
    /// When it was last touched, to drop the oldest entries without a pod first.
    seq: u64,
}

pub struct RemoteSource {
    dir: PathBuf,
    node_name: String,
    policy: RemotePolicy,
    entries: BTreeMap<String, Entry>,
    seq: u64,
}

impl RemoteSource {
    /// Loads the persisted accepted pods (re-validated and re-checked against the policy:
    /// one now rejected is dropped with an error, its file removed); corrupt files are
    /// reported and skipped, never fatal.
    pub fn open(dir: &Path, node_name: &str, policy: RemotePolicy) -> (RemoteSource, Vec<Problem>) {
        let mut src = RemoteSource {
            dir: dir.to_path_buf(),
            node_name: node_name.to_string(),
            policy,
            entries: BTreeMap::new(),
            seq: 0,
        };
        let mut problems = Vec::new();
        let whole = |path: &Path, reason: String| Problem {
            file: path.to_path_buf(),
            field: String::new(),
            reason,
            at: Default::default(),
        };
        if let Err(e) = fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
        {
            problems.push(whole(
                dir,
                format!("cannot create the remote-pod directory: {e}"),
            ));
            return (src, problems);
        }
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push(whole(
                    dir,
                    format!("cannot read the remote-pod directory: {e}"),
                ));
                return (src, problems);
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let Some(fname) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if fname.starts_with('.') && fname.contains(".tmp") {
                // A temp file left by a crash in the middle of a write: the rename never
                // happened, so the previous file (if any) is the truth.
                let _ = fs::remove_file(&path);
                continue;
            }
            if !fname.ends_with(".json") {
                continue;
            }
            match read_persisted(&path) {
                Ok(p) if file_name(&p.namespace, &p.name) != fname => problems.push(whole(
                    &path,
                    format!(
                        "holds pod {}/{}, whose file would be {}; skipped",
                        p.namespace,
                        p.name,
                        file_name(&p.namespace, &p.name)
                    ),
                )),
                Ok(p) => src.restore(&path, p, &mut problems),
                Err(reason) => problems.push(whole(&path, format!("{reason}; skipped"))),
            }
        }
        for p in &problems {
            tracing::warn!(file = %p.file.display(), field = %p.field, reason = %p.reason, "persisted remote pod not restored");
        }
        (src, problems)
    }

    /// One persisted pod, read back as if it had just arrived (without writing it again).
    fn restore(&mut self, path: &Path, p: Persisted, problems: &mut Vec<Problem>) {
        let (result, ok) = self.admit(&p.namespace, &p.name, p.payload.as_bytes(), false);
        if ok {
            tracing::info!(pod = %result.key(), uid = ?result.uid, "remote pod restored from disk");
            return;
        }
        let key = result.key();
        problems.extend(
            self.entries
                .get(&key)
                .map(|e| e.rejected.clone())
                .unwrap_or_default(),
        );
        if let Err(e) = fs::remove_file(path) {
            problems.push(Problem {
                file: path.to_path_buf(),
                field: String::new(),
                reason: format!("cannot remove it: {e}"),
                at: Default::default(),
            });
        }
    }

    /// One message from `desired/pods/<namespace>/<name>`. Empty payload = remove.
    /// Accepted => persisted atomically before returning. Rejected => the previous accepted
    /// version (if any) keeps running (like a static file that became invalid) and the result
    /// says why. Topic segments are validated too (DNS-1123), a bad one is rejected.
    pub fn handle(&mut self, namespace: &str, name: &str, payload: &[u8]) -> DesiredResult {
        if payload.is_empty() {
            return self.remove(namespace, name);
        }
        self.admit(namespace, name, payload, true).0
    }

    /// Parse, check and (when `persist`) save one payload; record the outcome. Returns the
    /// effective result and whether the payload was accepted.
    /// The parsed pod, or why it is rejected: its parse problems, or the node's policy for
    /// remote pods (privileged, host namespaces, ...).
    fn checked(
        &self,
        parsed: &manifest::RemoteManifest,
    ) -> Result<StaticPod, (ResultReason, Vec<Problem>)> {
        let sp = match &parsed.outcome {
            Ok(sp) => sp,
            Err((kind, probs)) => return Err(((*kind).into(), probs.clone())),
        };
        let violations = self.policy.check_on_host(&sp.pod);
        if violations.is_empty() {
            return Ok(sp.clone());
        }
        let probs = violations
            .into_iter()
            .map(|(field, reason)| Problem {
                file: parsed.source.clone(),
                field,
                reason,
                at: Default::default(),
            })
            .collect();
        Err((ResultReason::PolicyViolation, probs))
    }

    fn admit(
        &mut self,
        namespace: &str,
        name: &str,
        payload: &[u8],
        persist: bool,
    ) -> (DesiredResult, bool) {
        let key = format!("{namespace}/{name}");
        let parsed = manifest::parse_remote(namespace, name, payload, &self.node_name);
        let echo = |mut r: DesiredResult| {
            r.generation = parsed.generation;
            r.resource_version = parsed.resource_version.clone();
            r
        };
        let outcome = self.checked(&parsed);
        let seq = self.next_seq();
        let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry {
            namespace: namespace.to_string(),
            name: name.to_string(),
            accepted: None,
            rejected: Vec::new(),
            own: DesiredResult::new(namespace, name, ResultReason::Removed, String::new()),
            conflict: None,
            seq,
        });
        entry.seq = seq;
        let accepted = outcome.is_ok();
        match outcome {
            Ok(sp) => {
                let mut message = accepted_message(&key, &sp);
                let digest: [u8; 16] = Md5::digest(payload).into();
                let unchanged = entry.accepted.as_ref().and_then(|a| a.saved) == Some(digest);
                let mut saved = (!persist || unchanged).then_some(digest);
                if persist && !unchanged {
                    let file = self.dir.join(file_name(namespace, name));
                    let record = Persisted {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        payload: String::from_utf8_lossy(payload).into_owned(),
                        generation: parsed.generation,
                        resource_version: parsed.resource_version.clone(),
                    };
                    match write_durably(&file, &record) {
                        Ok(()) => saved = Some(digest),
                        Err(e) => {
                            tracing::error!(pod = %key, file = %file.display(), error = %e, "cannot persist the remote pod; it runs but will not restart without the broker");
                            message.push_str(&format!(
                                "; but it could not be saved to {}: {e} (it will not restart without the broker)",
                                file.display()
                            ));
                        }
                    }
                }
                let mut r = echo(DesiredResult::new(
                    namespace,
                    name,
                    ResultReason::Accepted,
                    message,
                ));
                r.uid = Some(sp.uid.clone());
                tracing::info!(pod = %key, uid = %sp.uid, generation = ?parsed.generation, "remote pod accepted");
                entry.accepted = Some(Accepted {
                    pod: Arc::new(sp),
                    generation: parsed.generation,
                    resource_version: parsed.resource_version.clone(),
                    saved,
                });
                entry.rejected.clear();
                entry.own = r;
            }
            Err((reason, probs)) => {
                for p in &probs {
                    tracing::warn!(pod = %key, field = %p.field, reason = %p.reason, kind = ?reason, "remote pod rejected");
                }
                let running = entry.accepted.as_ref().map(|a| a.pod.uid.clone());
                let message = rejected_message(reason, &probs, running.as_deref());
                let mut r = echo(DesiredResult::new(namespace, name, reason, message));
                r.errors = probs.iter().map(field_reason).collect();
                r.uid = running;
                entry.rejected = probs;
                entry.own = r;
            }
        }
        let result = effective(entry);
        self.bound();
        (result, accepted)
    }

    fn remove(&mut self, namespace: &str, name: &str) -> DesiredResult {
        let key = format!("{namespace}/{name}");
        let seq = self.next_seq();
        let had = self
            .entries
            .get(&key)
            .and_then(|e| e.accepted.as_ref())
            .map(|a| a.pod.uid.clone());
        let message = match &had {
            Some(uid) => format!("pod {key} (uid {uid}) removed"),
            None => format!("pod {key} was not running; nothing to remove"),
        };
        if had.is_some() {
            self.forget_file(namespace, name);
            tracing::info!(pod = %key, uid = ?had, "remote pod removed");
        }
        // `uid` is the removed pod's, as docs/mqtt.md says: the back-end can tell which
        // version went (null when nothing ran under this name).
        let r = DesiredResult {
            uid: had,
            ..DesiredResult::new(namespace, name, ResultReason::Removed, message)
        };
        self.entries.insert(
            key,
            Entry {
                namespace: namespace.to_string(),
                name: name.to_string(),
                accepted: None,
                rejected: Vec::new(),
                own: r.clone(),
                conflict: None,
                seq,
            },
        );
        self.bound();
        r
    }

    /// After a (re)subscription: every persisted/accepted pod whose key is NOT in `present`
    /// (the retained desired messages the broker just sent) is removed, returning a
    /// `Removed` result for each. Entries that only held a rejection or a removal and are not
    /// present either are forgotten.
    pub fn sweep(&mut self, present: &BTreeSet<String>) -> Vec<DesiredResult> {
        let gone: Vec<(String, String, bool)> = self
            .entries
            .iter()
            .filter(|(k, _)| !present.contains(*k))
            .map(|(_, e)| (e.namespace.clone(), e.name.clone(), e.accepted.is_some()))
            .collect();
        let mut out = Vec::new();
        for (ns, name, running) in gone {
            if running {
                out.push(self.remove(&ns, &name));
            } else {
                self.entries.remove(&format!("{ns}/{name}"));
            }
        }
        out
    }

    /// The accepted pods as a `DesiredSet` (same type the static dir produces).
    pub fn desired(&self) -> DesiredSet {
        let mut set = DesiredSet::default();
        for (key, e) in &self.entries {
            set.errors.extend(e.rejected.iter().cloned());
            if let Some(a) = &e.accepted {
                set.pods.insert(
                    key.clone(),
                    DesiredPod {
                        pod: a.pod.clone(),
                        file_errors: e.rejected.clone(),
                    },
                );
            }
        }
        set
    }

    /// The latest result per key (for re-publishing after a reconnect).
    pub fn results(&self) -> Vec<DesiredResult> {
        self.entries.values().map(effective).collect()
    }

    /// The answer for `key` now (`Conflict` where a local file shadows its pod).
    pub fn result(&self, key: &str) -> Option<DesiredResult> {
        self.entries.get(key).map(effective)
    }

    /// Record which remote pods lose to a local static-pod file (`merge`'s conflicts, all of
    /// them, after every merge). Returns the results that changed: a `Conflict` for a newly
    /// shadowed pod, the `Accepted` answer again for one whose local file went away.
    pub fn note_conflicts(&mut self, conflicts: &[Conflict]) -> Vec<DesiredResult> {
        let by_key: BTreeMap<&str, &Path> = conflicts
            .iter()
            .map(|c| (c.key.as_str(), c.local_file.as_path()))
            .collect();
        let mut changed = Vec::new();
        for (key, e) in self.entries.iter_mut() {
            let now = by_key.get(key.as_str()).map(|p| p.to_path_buf());
            if e.conflict == now {
                continue;
            }
            let before = effective(e);
            e.conflict = now;
            let after = effective(e);
            if after != before {
                changed.push(after);
            }
        }
        changed
    }

    /// The `Conflict` answer for the remote pod `key`, shadowed by `local_file`, with the
    /// echo fields of the version it holds (`None` if it holds no pod for `key`).
    pub(super) fn conflict_result(&self, key: &str, local_file: &Path) -> Option<DesiredResult> {
        let e = self.entries.get(key)?;
        let a = e.accepted.as_ref()?;
        Some(conflict_answer(e, a, local_file))
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Drop the oldest entries holding no pod beyond `MAX_RESULTS_WITHOUT_POD`.
    fn bound(&mut self) {
        let mut idle: Vec<(u64, String)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.accepted.is_none())
            .map(|(k, e)| (e.seq, k.clone()))
            .collect();
        if idle.len() <= MAX_RESULTS_WITHOUT_POD {
            return;
        }
        idle.sort();
        for (_, k) in idle.iter().take(idle.len() - MAX_RESULTS_WITHOUT_POD) {
            self.entries.remove(k);
        }
    }

    fn forget_file(&self, namespace: &str, name: &str) {
        let file = self.dir.join(file_name(namespace, name));
        match fs::remove_file(&file) {
            Ok(()) => {
                if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot sync the remote-pod directory");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "cannot remove a remote pod's file; it would restart after a reboot until the broker says otherwise")
            }
        }
    }
}

/// The result to publish for an entry: its own, unless a local file shadows its accepted pod.
fn effective(e: &Entry) -> DesiredResult {
    match (&e.conflict, &e.accepted) {
        (Some(file), Some(a)) if e.rejected.is_empty() => conflict_answer(e, a, file),
        _ => e.own.clone(),
    }
}

fn conflict_answer(e: &Entry, a: &Accepted, local_file: &Path) -> DesiredResult {
    let key = format!("{}/{}", e.namespace, e.name);
    let message = conflict_message(&key, local_file);
    let mut r = DesiredResult::new(
        &e.namespace,
        &e.name,
        ResultReason::Conflict,
        message.clone(),
    );
    r.errors = vec![format!("metadata.name: {message}")];
    r.generation = a.generation;
    r.resource_version = a.resource_version.clone();
    r
}

/// Why a remote pod does not run when a static pod has its key.
pub(super) fn conflict_message(key: &str, local_file: &Path) -> String {
    format!(
        "pod {key} is defined by the local static-pod file {}; the local file wins",
        local_file.display()
    )
}

/// The result's message for an accepted pod: its key and UID, and each ignored field with
/// why (not supported yet, or not in the Pod API at all).
fn accepted_message(key: &str, sp: &StaticPod) -> String {
    let mut message = format!("accepted as pod {key} (uid {})", sp.uid);
    let ignored: Vec<String> = sp
        .warnings
        .iter()
        .map(|w| format!("{} ({})", w.field, w.reason.trim_end_matches("; ignored")))
        .collect();
    if !ignored.is_empty() {
        message.push_str(&format!("; fields ignored: {}", ignored.join(", ")));
    }
    message
}

/// The result's message for a rejected pod: the first problem, so that a one-line view says
/// why (all of them are in `errors`), and whether an accepted version keeps running.
fn rejected_message(reason: ResultReason, probs: &[Problem], running: Option<&str>) -> String {
    let why = match probs {
        [] => format!("{reason:?}"),
        [one] => field_reason(one),
        [first, rest @ ..] => format!("{} (and {} more)", field_reason(first), rest.len()),
    };
    match running {
        Some(uid) => format!("rejected: {why}; the accepted version (uid {uid}) keeps running"),
        None => format!("rejected: {why}"),
    }
}

fn field_reason(p: &Problem) -> String {
    if p.field.is_empty() {
        p.reason.clone()
    } else {
        format!("{}: {}", p.field, p.reason)
    }
}

/// `<namespace>_<name>.json` (names are DNS-1123, so `_` cannot occur in either); a name too
/// long for a file name is replaced by its MD5 (the file holds the real name).
pub fn file_name(namespace: &str, name: &str) -> String {
    let plain = format!("{namespace}_{name}.json");
    if plain.len() <= NAME_MAX {
        return plain;
    }
    let mut h = Md5::new();
    h.update(name.as_bytes());
    format!("{namespace}_{}.json", hex::encode(h.finalize()))
}

fn read_persisted(path: &Path) -> Result<Persisted, String> {
    // A JSON string may escape each byte of the payload as `\uXXXX`.
    let limit = (MAX_REMOTE_MANIFEST_BYTES as u64) * 6 + 4096;
    let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("too large (over {limit} bytes)"));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("corrupt: {e}"))
}

/// Temp file (mode 0600), fsync, rename, fsync of the directory: after a crash at any
/// instant the file is the old version or the new one, never a torn one.
fn write_durably(path: &Path, record: &Persisted) -> io::Result<()> {
    let data = serde_json::to_vec(record).map_err(io::Error::other)?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
