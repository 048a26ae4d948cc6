//! The CPU manager's checkpoint, `<rootDir>/cpu_manager_state`, in kubelet's JSON shape:
//! `{"policyName":"static","defaultCpuSet":"0","entries":{"<podUID>":{"<container>":"1"}},
//! "checksum":N}`.
//!
//! tidelet's checksum is FNV-1a (32 bit) of the JSON of the other fields, so a file edited by
//! hand or torn is noticed; kubelet's own checksum hashes a Go dump and cannot be reproduced,
//! so a file without a checksum is accepted too. Validation against the machine (policy, CPUs,
//! the shared pool) is pure (`validate`) and any mismatch stops the agent with the file's name,
//! as kubelet refuses to start on a state it cannot trust.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::cpuset::CpuSet;
use super::policy::{self, Assignments};

/// The file name below the root directory (kubelet's name).
pub const FILE: &str = "cpu_manager_state";
/// Largest checkpoint read; a real one is a few hundred bytes.
const MAX_SIZE: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub policy_name: String,
    /// The shared pool when written (empty: nothing decided yet, as kubelet writes it).
    #[serde(default)]
    pub default_cpu_set: CpuSet,
    #[serde(default)]
    pub entries: Assignments,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u64>,
}

/// FNV-1a, 32 bit.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    u64::from(h)
}

impl Checkpoint {
    pub fn new(policy_name: &str, default_cpu_set: CpuSet, entries: Assignments) -> Checkpoint {
        let mut c = Checkpoint {
            policy_name: policy_name.into(),
            default_cpu_set,
            entries,
            checksum: None,
        };
        c.checksum = Some(c.compute_checksum());
        c
    }

    fn compute_checksum(&self) -> u64 {
        let bare = Checkpoint {
            checksum: None,
            ..self.clone()
        };
        fnv1a(&serde_json::to_vec(&bare).unwrap_or_default())
    }
}

/// Parse a checkpoint's text; `Err` gives the reason.
pub fn parse(text: &str) -> Result<Checkpoint, String> {
    let c: Checkpoint =
        serde_json::from_str(text).map_err(|e| format!("not a CPU manager checkpoint: {e}"))?;
    if let Some(sum) = c.checksum {
        let want = c.compute_checksum();
        if sum != want {
            return Err(format!(
                "checksum {sum} does not match the content (expected {want}): the file is corrupt"
            ));
        }
    }
    Ok(c)
}

/// Check a loaded checkpoint against the configured policy and the machine.
pub fn validate(
    c: &Checkpoint,
    policy_name: &str,
    online: &CpuSet,
    reserved: &CpuSet,
) -> Result<(), String> {
    if c.policy_name != policy_name {
        return Err(format!(
            "written by cpuManagerPolicy {:?}, but the configured policy is {policy_name:?}",
            c.policy_name
        ));
    }
    let mut seen = CpuSet::new();
    for (uid, containers) in &c.entries {
        for (name, cpus) in containers {
            let what = format!("entry {uid}/{name} ({cpus:?})", cpus = cpus.to_string());
            if cpus.is_empty() {
                return Err(format!("{what} is empty"));
            }
            if !cpus.is_subset(online) {
                return Err(format!("{what} names CPUs that are not online ({online})"));
            }
            if !cpus.is_disjoint(reserved) {
                return Err(format!("{what} overlaps reservedSystemCPUs ({reserved})"));
            }
            if !cpus.is_disjoint(&seen) {
                return Err(format!("{what} overlaps another entry"));
            }
            seen = seen.union(cpus);
        }
    }
    let pool = policy::shared_pool(online, &c.entries);
    if !c.default_cpu_set.is_empty() && c.default_cpu_set != pool {
        return Err(format!(
            "defaultCpuSet {:?} is not the online CPUs ({online}) minus the entries ({:?})",
            c.default_cpu_set.to_string(),
            pool.to_string()
        ));
    }
    Ok(())
}

/// Read `path`: `Ok(None)` when it does not exist, `Err(reason)` when unreadable or invalid.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, String> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut text = String::new();
    f.take(MAX_SIZE + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_SIZE {
        return Err(format!("larger than {MAX_SIZE} bytes"));
    }
    parse(&text).map(Some)
}

/// Write `c` atomically and durably (it must survive a power loss: exclusive CPUs of pods
/// that a restart adopts).
pub fn save(path: &Path, c: &Checkpoint) -> std::io::Result<()> {
    crate::state::atomic_write_json(path, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> CpuSet {
        CpuSet::parse(s).unwrap()
    }

    fn entries(v: &[(&str, &str, &str)]) -> Assignments {
        let mut a = Assignments::new();
        for (uid, c, cpus) in v {
            a.entry(uid.to_string())
                .or_default()
                .insert(c.to_string(), set(cpus));
        }
        a
    }

    #[test]
    fn round_trips_in_kubelets_shape() {
        let c = Checkpoint::new("static", set("0"), entries(&[("uid-1", "app", "1")]));
        let text = serde_json::to_string(&c).unwrap();
        assert!(
            text.starts_with(r#"{"policyName":"static","defaultCpuSet":"0","entries":{"uid-1":{"app":"1"}},"checksum":"#),
            "{text}"
        );
        assert_eq!(parse(&text), Ok(c));
        // kubelet's own file (its checksum is left out: it cannot be reproduced).
        let kubelet = r#"{"policyName":"none","defaultCpuSet":"","checksum":null}"#;
        let k = parse(kubelet).unwrap();
        assert_eq!(k.policy_name, "none");
        assert!(k.entries.is_empty() && k.default_cpu_set.is_empty());
    }

    #[test]
    fn rejects_corrupt_files() {
        let good = serde_json::to_string(&Checkpoint::new(
            "static",
            set("0"),
            entries(&[("u", "a", "1")]),
        ))
        .unwrap();
        let tampered = good.replace("\"a\":\"1\"", "\"a\":\"0\"");
        let cases = [
            ("", "not a CPU manager checkpoint"),
            ("{\"policyName\":", "not a CPU manager checkpoint"),
            ("{\"defaultCpuSet\":\"0\"}", "missing field `policyName`"),
            (
                "{\"policyName\":\"static\",\"defaultCpuSet\":\"x\"}",
                "is not a CPU list",
            ),
            (tampered.as_str(), "the file is corrupt"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn validates_against_the_machine() {
        let online = set("0-3");
        let reserved = set("0");
        let ok = |d: &str, e: &[(&str, &str, &str)]| Checkpoint::new("static", set(d), entries(e));
        let cases: Vec<(&str, Checkpoint, Option<&str>)> = vec![
            ("fresh", ok("", &[]), None),
            ("consistent", ok("0,2-3", &[("u", "a", "1")]), None),
            (
                "policy changed",
                Checkpoint::new("none", set(""), entries(&[])),
                Some(
                    "written by cpuManagerPolicy \"none\", but the configured policy is \"static\"",
                ),
            ),
            (
                "offline cpu",
                ok("", &[("u", "a", "7")]),
                Some("not online"),
            ),
            (
                "reserved cpu",
                ok("", &[("u", "a", "0")]),
                Some("overlaps reservedSystemCPUs"),
            ),
            (
                "double",
                ok("", &[("u", "a", "1"), ("v", "b", "1-2")]),
                Some("overlaps another entry"),
            ),
            ("empty entry", ok("", &[("u", "a", "")]), Some("is empty")),
            (
                "pool mismatch",
                ok("0-3", &[("u", "a", "1")]),
                Some("defaultCpuSet \"0-3\" is not"),
            ),
        ];
        for (name, c, want) in cases {
            let got = validate(&c, "static", &online, &reserved);
            match want {
                None => assert_eq!(got, Ok(()), "{name}"),
                Some(w) => {
                    let e = got.unwrap_err();
                    assert!(e.contains(w), "{name}: {e}");
                }
            }
        }
    }

    #[test]
    fn load_and_save() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(FILE);
        assert_eq!(load(&p), Ok(None));
        let c = Checkpoint::new("static", set("0"), entries(&[("u", "a", "1")]));
        save(&p, &c).unwrap();
        assert_eq!(load(&p), Ok(Some(c)));
        std::fs::write(&p, vec![b' '; (MAX_SIZE + 10) as usize]).unwrap();
        assert!(load(&p).unwrap_err().contains("larger than"));
    }
}
