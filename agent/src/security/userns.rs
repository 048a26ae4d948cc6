//! User namespaces for pods with `hostUsers: false`: each such pod gets 65536 host ids of its
//! own, taken from the subordinate ranges `/etc/subuid` and `/etc/subgid` give tidelet's user
//! (kubelet does the same for its `kubelet` user), so that container root is an unprivileged
//! id on the host.
//!
//! The choice of a block is a pure function (`pick`); the allocator keeps which pod holds
//! which block in `<rootDir>/userns_state` (written atomically), so no block is given to a
//! second pod while the first holds it, across agent restarts. The subordinate files are read
//! at each allocation: a range added by the operator needs no restart.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Ids each pod gets (as kubelet).
pub const IDS_PER_POD: u32 = 65536;

/// A pod's mapping: container ids `0..len` are host ids `host_start..host_start+len`, for
/// users and groups alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdRange {
    pub host_start: u32,
    pub len: u32,
}

impl IdRange {
    /// The line written to `uid_map` and `gid_map`.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.host_start, self.len)
    }
    /// As `describe pod` shows it.
    pub fn describe(&self) -> String {
        format!("0 -> {} ({} ids)", self.host_start, self.len)
    }
}

/// Where the subordinate ids come from (`userNamespaces:` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernsConfig {
    /// The user whose subordinate ranges pods get.
    pub user: String,
    pub subuid_file: PathBuf,
    pub subgid_file: PathBuf,
}

impl Default for UsernsConfig {
    fn default() -> Self {
        UsernsConfig {
            user: "tidelet".into(),
            subuid_file: PathBuf::from("/etc/subuid"),
            subgid_file: PathBuf::from("/etc/subgid"),
        }
    }
}

/// The ranges (start, count) a `subuid`-format text gives `user` (by name, or by `uid`).
pub fn parse_subids(text: &str, user: &str, uid: Option<u32>) -> Vec<(u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let mut parts = l.split(':');
            let (who, start, count) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = who == user || uid.is_some_and(|u| who == u.to_string());
            if !matches || parts.next().is_some() {
                return None;
            }
            Some((start.parse().ok()?, count.parse().ok()?))
        })
        .collect()
}

/// Starts of the whole 65536-id blocks inside `ranges`, in order. A block never contains
/// host id 0 (root).
pub fn blocks_of(ranges: &[(u32, u32)]) -> Vec<u32> {
    let mut out = Vec::new();
    for &(start, count) in ranges {
        if start == 0 {
            continue;
        }
        let mut at = start as u64;
        let end = start as u64 + count as u64;
        while at + IDS_PER_POD as u64 <= end && at + IDS_PER_POD as u64 <= u32::MAX as u64 + 1 {
            out.push(at as u32);
            at += IDS_PER_POD as u64;
        }
    }
    out
}

/// The first block of `blocks` no pod in `held` has.
pub fn pick(blocks: &[u32], held: &BTreeMap<String, u32>) -> Option<u32> {
    let taken: HashSet<u32> = held.values().copied().collect();
    blocks.iter().copied().find(|b| !taken.contains(b))
}

/// Hands out and takes back blocks; one per agent.
pub struct Allocator {
    cfg: UsernsConfig,
    state: PathBuf,
    held: Mutex<BTreeMap<String, u32>>,
}

impl Allocator {
    /// The allocator whose state is at `state` (loaded if it exists; an unreadable state
    /// file is an error: forgetting it could hand a held range to a second pod).
    pub fn open(cfg: UsernsConfig, state: &Path) -> Result<Allocator, String> {
        let held = match std::fs::read(state) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", state.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", state.display())),
        };
        Ok(Allocator {
            cfg,
            state: state.to_path_buf(),
            held: Mutex::new(held),
        })
    }

    /// The blocks tidelet's user has in both files.
    fn blocks(&self) -> Result<Vec<u32>, String> {
        let uid = nix::unistd::User::from_name(&self.cfg.user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw());
        let read = |p: &Path| -> Result<Vec<u32>, String> {
            let text = std::fs::read_to_string(p).map_err(|e| {
                format!(
                    "hostUsers: false needs subordinate ids for user {:?}: {}: {e}",
                    self.cfg.user,
                    p.display()
                )
            })?;
            let b = blocks_of(&parse_subids(&text, &self.cfg.user, uid));
            if b.is_empty() {
                return Err(format!(
                    "hostUsers: false needs subordinate ids: {} has no range of at least {IDS_PER_POD} ids for user {:?} (add a line like `{}:1000000:{}`)",
                    p.display(),
                    self.cfg.user,
                    self.cfg.user,
                    IDS_PER_POD * 100
                ));
            }
            Ok(b)
        };
        let uids = read(&self.cfg.subuid_file)?;
        let gids: HashSet<u32> = read(&self.cfg.subgid_file)?.into_iter().collect();
        Ok(uids.into_iter().filter(|b| gids.contains(b)).collect())
    }

    /// The range of pod `uid`: the one it holds, or a free one (recorded before it is
    /// returned). `Err` says why none can be had.
    pub fn allocate(&self, pod_uid: &str) -> Result<IdRange, String> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let range = |start| IdRange {
            host_start: start,
            len: IDS_PER_POD,
        };
        if let Some(&b) = held.get(pod_uid) {
            return Ok(range(b));
        }
        let blocks = self.blocks()?;
        let b = pick(&blocks, &held).ok_or_else(|| {
            format!(
                "hostUsers: false: all {} ranges of {IDS_PER_POD} subordinate ids of user {:?} are held by other pods",
                blocks.len(),
                self.cfg.user
            )
        })?;
        held.insert(pod_uid.to_string(), b);
        if let Err(e) = crate::state::atomic_write_json(&self.state, &*held) {
            held.remove(pod_uid);
            return Err(format!("{}: {e}", self.state.display()));
        }
        Ok(range(b))
    }

    /// Give pod `uid`'s range back.
    pub fn release(&self, pod_uid: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.remove(pod_uid).is_some() {
            if let Err(e) = crate::state::atomic_write_json(&self.state, &*held) {
                tracing::warn!(file = %self.state.display(), error = %e, "cannot save the user-namespace ranges");
            }
        }
    }

    /// Keep only the ranges of `live` pods (those gone while the agent was down go back).
    pub fn retain(&self, live: &BTreeSet<String>) {
        let gone: Vec<String> = {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.keys()
                .filter(|k| !live.contains(*k))
                .cloned()
                .collect()
        };
        for uid in gone {
            self.release(&uid);
        }
    }

    pub fn held(&self) -> BTreeMap<String, u32> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_files_parse_by_name_or_uid() {
        let text = "# comment\nalice:100000:65536\ntidelet:1000000:131072\n998:3000000:65536\nbad line\ntidelet:x:1\n";
        assert_eq!(
            parse_subids(text, "tidelet", Some(998)),
            vec![(1000000, 131072), (3000000, 65536)]
        );
        assert_eq!(parse_subids(text, "bob", None), vec![]);
    }

    #[test]
    fn blocks_are_whole_and_never_hold_root() {
        type Case<'a> = (&'a [(u32, u32)], &'a [u32]);
        let cases: &[Case] = &[
            (&[(100000, 65536)], &[100000]),
            (&[(100000, 65535)], &[]),
            (&[(100000, 200000)], &[100000, 165536, 231072]),
            (&[(0, 1 << 20)], &[]),
            (&[(u32::MAX - 65535, 65536)], &[u32::MAX - 65535]),
            (&[(u32::MAX - 65534, 65536)], &[]),
        ];
        for (ranges, want) in cases {
            assert_eq!(blocks_of(ranges), *want, "{ranges:?}");
        }
    }

    #[test]
    fn pick_takes_the_first_free_block() {
        let held = |v: &[(&str, u32)]| v.iter().map(|(k, b)| (k.to_string(), *b)).collect();
        let blocks = [10, 20, 30];
        assert_eq!(pick(&blocks, &held(&[])), Some(10));
        assert_eq!(pick(&blocks, &held(&[("a", 10), ("b", 30)])), Some(20));
        assert_eq!(
            pick(&blocks, &held(&[("a", 10), ("b", 20), ("c", 30)])),
            None
        );
    }

    #[test]
    fn ranges_survive_a_restart_and_are_not_given_twice() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("subuid");
        std::fs::write(&sub, "tidelet:200000:131072\n").unwrap();
        let cfg = UsernsConfig {
            user: "tidelet".into(),
            subuid_file: sub.clone(),
            subgid_file: sub.clone(),
        };
        let state = dir.path().join("userns_state");
        let a = Allocator::open(cfg.clone(), &state).unwrap();
        let r1 = a.allocate("pod-1").unwrap();
        assert_eq!(
            r1,
            IdRange {
                host_start: 200000,
                len: 65536
            }
        );
        assert_eq!(a.allocate("pod-1").unwrap(), r1, "idempotent");
        drop(a);
        let b = Allocator::open(cfg.clone(), &state).unwrap();
        let r2 = b.allocate("pod-2").unwrap();
        assert_eq!(r2.host_start, 265536);
        let e = b.allocate("pod-3").unwrap_err();
        assert!(
            e.contains("all 2 ranges") && e.contains("held by other pods"),
            "{e}"
        );
        b.retain(&["pod-2".to_string()].into());
        assert_eq!(b.allocate("pod-3").unwrap().host_start, 200000);
        // Missing files and users name the file and what to add.
        let missing = Allocator::open(
            UsernsConfig {
                subuid_file: dir.path().join("nope"),
                ..cfg.clone()
            },
            &dir.path().join("s2"),
        )
        .unwrap();
        let e = missing.allocate("p").unwrap_err();
        assert!(e.contains("nope") && e.contains("subordinate ids"), "{e}");
        let other = Allocator::open(
            UsernsConfig {
                user: "nobody-here".into(),
                ..cfg
            },
            &dir.path().join("s3"),
        )
        .unwrap();
        let e = other.allocate("p").unwrap_err();
        assert!(
            e.contains("no range") && e.contains("nobody-here:1000000:6553600"),
            "{e}"
        );
        std::fs::write(&state, "{broken").unwrap();
        assert!(Allocator::open(UsernsConfig::default(), &state).is_err());
    }
}
