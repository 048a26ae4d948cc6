//! Pod networking: a pod without `hostNetwork` gets its network through CNI, as under kubelet
//! with containerd or CRI-O.
//!
//! - `cni`: the protocol (config lists, running plugins bounded in time and output, chains);
//! - `netns`: the pod's network namespace pinned on a file until its DEL has run;
//! - `ports`: `hostPort`s (kubelet's `NodePorts` rule, portmap's `portMappings`, holding
//!   the port on the host);
//! - `bandwidth`: the bandwidth annotations;
//! - `dns`, `hosts`: the pod's `/etc/resolv.conf` and `/etc/hosts` as kubelet forms them.
//!
//! [`Network`] ties them together for the agent. An attachment's lifecycle:
//! claimed by the pod's worker → pinned and recorded (`<state>/<uid>.json`, durably, before
//! any plugin runs) → ADD → recorded with its result → ... → DEL from the record → unpinned,
//! record removed. A record whose pod no worker claims (the agent died between two of these
//! steps, or a DEL failed) is DELeted by [`Network::gc`], at start and periodically: nothing a
//! plugin allocated outlives its pod for long.

pub mod bandwidth;
pub mod cni;
pub mod dns;
pub mod hosts;
pub mod masq;
pub mod netns;
pub mod ports;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use cni::config::{self, ConfList, DefaultNetwork, Found};

/// The interface a pod's network is attached as.
pub const IFNAME: &str = "eth0";

/// What pod networking is set up from (the agent's config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The first valid config list here is used (`cniConfDir`).
    pub conf_dir: PathBuf,
    /// Where plugins are looked for, in order (`cniBinDir`).
    pub bin_dirs: Vec<PathBuf>,
    /// The network used when `conf_dir` has no config.
    pub default: DefaultNetwork,
    /// How long one plugin may run (`cniTimeout`).
    pub timeout: Duration,
    /// Attachment records (`<root>/networks`).
    pub state_dir: PathBuf,
    /// Pinned namespaces (`<root>/netns`).
    pub netns_dir: PathBuf,
}

/// What tidelet records of one attachment: everything its DEL needs, written before its ADD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The pod's `namespace/name` and UID.
    pub key: String,
    pub uid: String,
    /// The config list the ADD ran (DEL must run the same, even if the directory changed).
    pub list: Value,
    pub args: cni::Args,
    /// The ADD's result, once it succeeded.
    #[serde(default)]
    pub result: Option<Value>,
}

/// What a worker asks for its pod.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub key: &'a str,
    pub uid: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    /// The supervisor, whose network namespace is the pod's.
    pub pid: i32,
    pub ports: &'a [ports::HostPort],
    /// The bandwidth plugin's argument (`bandwidth::from_annotations`).
    pub bandwidth: Option<Value>,
}

/// What an ADD gave the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub pod_ips: Vec<String>,
    /// The whole attach's time, for the start-up figures, and its parts: the record written
    /// before the ADD (durably), and the plugins' ADD.
    pub took: Duration,
    pub record_took: Duration,
    pub add_took: Duration,
}

/// An attachment's lock (`Network::op_lock`), released when dropped.
struct OpLock {
    file: Option<std::fs::File>,
    path: PathBuf,
}

impl OpLock {
    fn fd(&self) -> cni::Hold {
        use std::os::fd::AsRawFd;
        self.file.as_ref().map(|f| f.as_raw_fd())
    }

    /// The attachment is gone: its lock file too (removed while held, so no one waits on it).
    fn forget(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The CNI container ID of a new attachment of pod `uid`: the UID and a suffix of this
/// sandbox's own, as kubelet's sandbox IDs are new for each sandbox. A pod made again with
/// the same UID (its supervisor died) never meets its predecessor's leftovers in a plugin's
/// state, nor does the same pod of another agent on the host (tests run several).
fn container_id(uid: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    format!("{uid}-{:08x}", nanos ^ std::process::id().rotate_left(16))
}

/// Messages of a network that is not ready, in kubelet's and containerd's words.
pub fn not_ready_message(detail: &str) -> String {
    format!(
        "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: {detail}"
    )
}

pub struct Network {
    opts: Options,
    rt: cni::Runtime,
    /// UIDs whose attachments belong to a worker: GC leaves them alone.
    live: Mutex<BTreeSet<String>>,
    /// UIDs GC is DELeting now: a worker that claims one waits.
    busy: Mutex<BTreeSet<String>>,
    /// Host ports held for each pod.
    held: Mutex<BTreeMap<String, Vec<OwnedFd>>>,
    /// Why the network is not ready, as last found (`None`: ready).
    not_ready: Mutex<Option<String>>,
    /// The built-in network's own rules are in place (`masq`). A mutex, not a flag alone:
    /// two first attaches at once would both find a rule missing and both insert it.
    masq_done: Mutex<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Network {
    pub fn new(opts: Options) -> Network {
        let rt = cni::Runtime {
            bin_dirs: opts.bin_dirs.clone(),
            timeout: opts.timeout,
        };
        Network {
            opts,
            rt,
            live: Mutex::new(BTreeSet::new()),
            busy: Mutex::new(BTreeSet::new()),
            held: Mutex::new(BTreeMap::new()),
            not_ready: Mutex::new(None),
            masq_done: Mutex::new(false),
        }
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The config list pods are attached with, or why there is none that can run: the
    /// first valid list of the config directory, else the built-in default; every plugin it
    /// names installed; and, for 1.1.0 lists, every plugin's STATUS good. Remembered for
    /// [`Network::not_ready`].
    pub fn config(&self) -> Result<ConfList, String> {
        let r = self.find_config();
        *lock(&self.not_ready) = r.as_ref().err().cloned();
        r
    }

    /// Why the network was not ready when last looked at (`None`: it was).
    pub fn not_ready(&self) -> Option<String> {
        lock(&self.not_ready).clone()
    }

    fn find_config(&self) -> Result<ConfList, String> {
        let dirs = || {
            self.opts
                .bin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        let list = match config::load_dir(&self.opts.conf_dir) {
            Found::List(l, skipped) => {
                for s in skipped {
                    tracing::warn!(error = %s, "CNI config skipped");
                }
                *l
            }
            Found::Invalid(why) => {
                return Err(format!(
                    "no valid networks found in {}: {}",
                    self.opts.conf_dir.display(),
                    why.join("; ")
                ))
            }
            Found::Nothing => {
                if masq::iptables().is_none() {
                    return Err(format!(
                        "no CNI config in {} and the built-in default network needs iptables, which is not installed (Debian: apt install iptables)",
                        self.opts.conf_dir.display()
                    ));
                }
                config::default_list(&self.opts.default)
            }
        };
        let missing = self.rt.missing(&list);
        if !missing.is_empty() {
            let what = if list.file.is_none() {
                format!(
                    "no CNI config in {} and the built-in default network",
                    self.opts.conf_dir.display()
                )
            } else {
                list.origin()
            };
            return Err(format!(
                "{what} needs CNI plugins {} not found in {} (Debian: apt install containernetworking-plugins)",
                missing.join(", "),
                dirs()
            ));
        }
        self.rt
            .status(&list)
            .map_err(|e| format!("{}: {e}", list.origin()))?;
        Ok(list)
    }

    /// The pod's worker owns `uid`'s attachment from now on; waits while GC is DELeting an
    /// attachment of that UID left from before.
    pub async fn claim(&self, uid: &str) {
        lock(&self.live).insert(uid.to_string());
        while lock(&self.busy).contains(uid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Claim many at once (the pods found on disk at start, before GC may run).
    pub fn claim_all<'a>(&self, uids: impl IntoIterator<Item = &'a str>) {
        lock(&self.live).extend(uids.into_iter().map(str::to_string));
    }

    /// The worker lets go of `uid` (after its DEL, successful or not: GC retries).
    pub fn unclaim(&self, uid: &str) {
        lock(&self.live).remove(uid);
    }

    fn record_path(&self, uid: &str) -> PathBuf {
        self.opts.state_dir.join(format!("{uid}.json"))
    }

    fn pin_path(&self, uid: &str) -> PathBuf {
        self.opts.netns_dir.join(uid)
    }

    /// The attachment recorded for `uid`, if any (unreadable records are said and skipped).
    pub fn record(&self, uid: &str) -> Option<Attachment> {
        let p = self.record_path(uid);
        let bytes = std::fs::read(&p).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(path = %p.display(), error = %e, "unreadable network attachment record");
                None
            }
        }
    }

    /// Hold the pod's host ports on the host (see `ports::reserve`).
    pub fn hold_ports(&self, uid: &str, p: &[ports::HostPort]) -> Result<(), String> {
        let fds = ports::reserve(p)?;
        lock(&self.held).insert(uid.to_string(), fds);
        Ok(())
    }

    pub fn release_ports(&self, uid: &str) {
        lock(&self.held).remove(uid);
    }

    /// Attach the pod (blocking): pin its namespace, record, ADD, record the result. A failed
    /// ADD is DELeted at once (with a fresh deadline) and leaves nothing behind. `list` is
    /// what [`Network::config`] gave.
    pub fn attach(&self, list: &ConfList, req: &Request<'_>) -> Result<Attached, String> {
        let t = std::time::Instant::now();
        let default;
        let list = if list.file.is_none() {
            let mut done = lock(&self.masq_done);
            if !*done {
                let d = &self.opts.default;
                masq::ensure(&d.name, &d.subnet)
                    .map_err(|e| format!("network {:?}: {e}", d.name))?;
                *done = true;
            }
            drop(done);
            default = config::default_for_pod(
                &self.opts.default,
                !req.ports.is_empty(),
                req.bandwidth.is_some(),
            );
            &default
        } else {
            list
        };
        let lock = self.op_lock(req.uid);
        let pin = self.pin_path(req.uid);
        if let Err(e) = netns::pin(req.pid, &pin) {
            lock.forget();
            return Err(format!("network namespace: {e}"));
        }
        let mut caps = Map::new();
        if let Some(pm) = ports::port_mappings(req.ports) {
            caps.insert("portMappings".into(), pm);
        }
        if let Some(bw) = &req.bandwidth {
            caps.insert("bandwidth".into(), bw.clone());
        }
        let mut rec = Attachment {
            key: req.key.to_string(),
            uid: req.uid.to_string(),
            list: list.raw.clone(),
            args: cni::Args {
                container_id: container_id(req.uid),
                netns: Some(pin.clone()),
                ifname: IFNAME.into(),
                // What containerd passes (`toCNILabels`), so that plugins that read it work.
                cni_args: vec![
                    ("IgnoreUnknown".into(), "1".into()),
                    ("K8S_POD_NAMESPACE".into(), req.namespace.into()),
                    ("K8S_POD_NAME".into(), req.name.into()),
                    ("K8S_POD_INFRA_CONTAINER_ID".into(), req.uid.into()),
                    ("K8S_POD_UID".into(), req.uid.into()),
                ],
                capability_args: caps,
            },
            result: None,
        };
        let path = self.record_path(req.uid);
        std::fs::create_dir_all(&self.opts.state_dir)
            .map_err(|e| format!("{}: {e}", self.opts.state_dir.display()))?;
        // Durably: after a power cut the IPAM leases on disk must still be freed.
        let t_record = std::time::Instant::now();
        if let Err(e) = crate::state::atomic_write_json(&path, &rec) {
            let _ = netns::unpin(&pin);
            lock.forget();
            return Err(format!("{}: {e}", path.display()));
        }
        let record_took = t_record.elapsed();
        let t_add = std::time::Instant::now();
        let result = match self.rt.add(list, &rec.args, lock.fd()) {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("failed to setup network for sandbox {:?}: {e}", req.uid);
                if let Err(d) = self.delete_locked(&rec, lock) {
                    tracing::error!(pod = %req.key, error = %d, "CNI DEL after a failed ADD; the record is kept for a later try");
                }
                return Err(msg);
            }
        };
        let add_took = t_add.elapsed();
        let pod_ips = cni::result::pod_ips(&result, IFNAME);
        rec.result = Some(result);
        if let Err(e) = crate::state::atomic_replace_json(&path, &rec) {
            // The record before ADD still lets DEL free everything.
            tracing::warn!(path = %path.display(), error = %e, "cannot record the CNI result");
        }
        Ok(Attached {
            pod_ips,
            took: t.elapsed(),
            record_took,
            add_took,
        })
    }

    /// The attachment `uid`'s lock, held through each of its operations and inherited by the
    /// plugins they run (and what those start). CNI allows no two operations on one container
    /// at once; within the agent the worker's claim sees to that, and this lock to the rest: a
    /// plugin the previous agent started before it was killed keeps running, and the new
    /// agent's DEL of that attachment must wait for it, or the ADD finishes after the DEL and
    /// leaves its rules behind. Waited for at most the plugins' timeout; after that, the
    /// operation goes on unlocked (said in the log).
    fn op_lock(&self, uid: &str) -> OpLock {
        let path = self.opts.state_dir.join(format!("{uid}.lock"));
        let _ = std::fs::create_dir_all(&self.opts.state_dir);
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "network attachment lock");
                return OpLock { file: None, path };
            }
        };
        let deadline = std::time::Instant::now() + self.opts.timeout + Duration::from_secs(5);
        loop {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return OpLock {
                    file: Some(file),
                    path,
                };
            }
            if std::time::Instant::now() > deadline {
                tracing::warn!(
                    uid,
                    "a plugin of an earlier operation on this attachment still runs; going on"
                );
                return OpLock {
                    file: Some(file),
                    path,
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// DEL what `rec` says and forget it: unpin, remove the record. On failure the record
    /// stays, for GC to try again.
    fn delete(&self, rec: &Attachment) -> Result<(), String> {
        let lock = self.op_lock(&rec.uid);
        self.delete_locked(rec, lock)
    }

    fn delete_locked(&self, rec: &Attachment, lock: OpLock) -> Result<(), String> {
        let list = config::from_raw(&rec.list)
            .map_err(|e| format!("recorded network of {}: {e}", rec.key))?;
        let pin = self.pin_path(&rec.uid);
        let mut args = rec.args.clone();
        // A namespace gone with a reboot: DEL without one, as the spec allows.
        args.netns = args.netns.filter(|p| cni::is_netns(p));
        self.rt
            .del(&list, &args, rec.result.as_ref(), lock.fd())
            .map_err(|e| format!("failed to destroy network for sandbox {:?}: {e}", rec.uid))?;
        netns::unpin(&pin).map_err(|e| format!("{}: {e}", pin.display()))?;
        let path = self.record_path(&rec.uid);
        let r = match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("{}: {e}", path.display()))
            }
            _ => Ok(()),
        };
        lock.forget();
        r
    }

    /// Detach the pod `uid` (blocking): DEL from its record, if it has one, and let go of its
    /// host ports.
    pub fn detach(&self, uid: &str) -> Result<(), String> {
        self.release_ports(uid);
        match self.record(uid) {
            Some(rec) => self.delete(&rec),
            None => netns::unpin(&self.pin_path(uid)).map_err(|e| e.to_string()),
        }
    }

    /// CHECK the pod's attachment (blocking): `Ok(None)` when it is whole, `Ok(Some(why))`
    /// when CHECK failed, `Err` when there is no complete attachment to check.
    pub fn check(&self, uid: &str) -> Result<Option<String>, String> {
        let rec = self
            .record(uid)
            .ok_or_else(|| "no network attachment recorded".to_string())?;
        let result = rec
            .result
            .as_ref()
            .ok_or_else(|| "the network's ADD did not finish".to_string())?;
        let list = config::from_raw(&rec.list)?;
        let lock = self.op_lock(uid);
        Ok(self
            .rt
            .check(&list, &rec.args, result, lock.fd())
            .err()
            .map(|e| e.to_string()))
    }

    /// The pod IPs of `uid`'s recorded attachment.
    pub fn pod_ips(&self, uid: &str) -> Vec<String> {
        self.record(uid)
            .and_then(|r| r.result)
            .map(|r| cni::result::pod_ips(&r, IFNAME))
            .unwrap_or_default()
    }

    /// DEL every recorded attachment that no worker claims, and unpin namespaces that have no
    /// record; then, for 1.1.0 lists, the plugins' own GC with the attachments still valid.
    /// Blocking. Returns how many attachments were released and the errors.
    pub fn gc(&self) -> (usize, Vec<String>) {
        let mut released = 0;
        let mut errors = Vec::new();
        let uids = |dir: &Path, suffix: &str| -> Vec<String> {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let n = e.file_name().into_string().ok()?;
                    let uid = n.strip_suffix(suffix)?;
                    (!uid.starts_with('.')).then(|| uid.to_string())
                })
                .collect()
        };
        for uid in uids(&self.opts.state_dir, ".json") {
            {
                let live = lock(&self.live);
                if live.contains(&uid) {
                    continue;
                }
                lock(&self.busy).insert(uid.clone());
            }
            let r = match self.record(&uid) {
                Some(rec) => self.delete(&rec).map(|()| 1),
                None => Ok(0),
            };
            lock(&self.busy).remove(&uid);
            match r {
                Ok(n) => released += n,
                Err(e) => errors.push(e),
            }
        }
        for uid in uids(&self.opts.netns_dir, "") {
            let live = lock(&self.live);
            if !live.contains(&uid) && !self.record_path(&uid).exists() {
                if let Err(e) = netns::unpin(&self.pin_path(&uid)) {
                    errors.push(e.to_string());
                }
            }
        }
        // The built-in network's rules again, in case a firewall reload removed them (three
        // `iptables -C` when they are there).
        let done = lock(&self.masq_done);
        if *done {
            let d = &self.opts.default;
            if let Err(e) = masq::ensure(&d.name, &d.subnet) {
                errors.push(format!("network {:?}: {e}", d.name));
            }
        }
        drop(done);
        if let Ok(list) = self.config() {
            let live: Vec<String> = lock(&self.live).iter().cloned().collect();
            let valid: Vec<(String, String)> = live
                .iter()
                .filter_map(|u| self.record(u))
                .map(|r| (r.args.container_id, r.args.ifname))
                .collect();
            if let Err(e) = self.rt.gc(&list, &valid) {
                errors.push(e.to_string());
            }
        }
        (released, errors)
    }
}
