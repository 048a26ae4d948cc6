//! The memory controller: the limit (v1 `memory.limit_in_bytes`, v2 `memory.max`), the
//! file that counts OOM kills, and memory samples for eviction (usage, working set, limit).
//!
//! tidelet never sets a swap limit, so raising or lowering the memory limit needs no ordering
//! against `memory.memsw.limit_in_bytes`. A limit of 0 or below means "unlimited".

use std::path::{Path, PathBuf};

use super::common::{read_bounded, write};
use super::{Error, Resources, Result};

/// Memory of a cgroup (or of the node, `signals::node_memory`), in bytes. `capacity` is
/// `u64::MAX` for a cgroup without a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct MemorySample {
    pub capacity: u64,
    pub usage: u64,
    pub working_set: u64,
}

impl MemorySample {
    /// `capacity - working_set`, 0 when the working set is above capacity.
    pub fn available(&self) -> u64 {
        self.capacity.saturating_sub(self.working_set)
    }
}

/// kubelet's working set: `usage - inactive_file`, never below 0 (the two counters are read at
/// slightly different times, so inactive_file can briefly exceed usage).
pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// v1 `memory.limit_in_bytes` value (`-1` is unlimited).
pub(crate) fn v1_limit(res: &Resources) -> Option<String> {
    res.memory_limit
        .map(|v| if v > 0 { v.to_string() } else { "-1".into() })
}

/// v2 `memory.max` value.
pub(crate) fn v2_max(res: &Resources) -> Option<String> {
    res.memory_limit
        .map(|v| if v > 0 { v.to_string() } else { "max".into() })
}

pub(crate) fn apply_v1(dir: &Path, res: &Resources) -> Result<()> {
    match v1_limit(res) {
        Some(v) => write(dir, "memory.limit_in_bytes", &v),
        None => Ok(()),
    }
}

pub(crate) fn apply_v2(dir: &Path, res: &Resources) -> Result<()> {
    match v2_max(res) {
        Some(v) => write(dir, "memory.max", &v),
        None => Ok(()),
    }
}

/// v1 has hierarchical accounting always on since Linux 5.x (writing 0 fails there); on older
/// kernels it must be switched on before the cgroup gets children. Best effort: a failure is
/// logged, never fatal.
pub(crate) fn use_hierarchy_v1(dir: &Path) {
    if let Err(e) = write(dir, "memory.use_hierarchy", "1") {
        tracing::debug!(dir = %dir.display(), error = %e, "memory.use_hierarchy not written");
    }
}

pub(crate) const OOM_FILE_V1: &str = "memory.oom_control";
pub(crate) const OOM_FILE_V2: &str = "memory.events";
pub(crate) const EVENTS_V2: &str = "memory.events";
pub(crate) const USAGE_V1: &str = "memory.usage_in_bytes";

/// v1 reports "no limit" as the page counter's maximum times the page size: just under 8 EiB
/// on 64-bit kernels, just under 8 TiB on 32-bit ones. No real limit is that large, so
/// anything from there on is unlimited.
pub(crate) const V1_UNLIMITED_FROM: u64 = 0x7FFF_FFFF << 12;

/// Why a `memory.stat` field could not be used: the key, the value seen, the reason.
pub(crate) type StatError = (&'static str, String, &'static str);

/// The value of the `key value` line of `memory.stat` named `key`; the kernel always writes
/// the keys tidelet reads, so a missing one is an error too.
pub(crate) fn stat_field(text: &str, key: &'static str) -> std::result::Result<u64, StatError> {
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() != Some(key) {
            continue;
        }
        let value = parts.next().unwrap_or("");
        return match (value.parse::<u64>(), parts.next()) {
            (Ok(v), None) => Ok(v),
            _ => Err((key, line[key.len()..].trim().to_string(), "not a number")),
        };
    }
    Err((key, String::new(), "missing"))
}

/// `total_inactive_file` of a v1 `memory.stat` (hierarchical: the cgroup and its children;
/// the plain `inactive_file` counts only the cgroup's own pages).
pub(crate) fn inactive_file_v1(stat: &str) -> std::result::Result<u64, StatError> {
    stat_field(stat, "total_inactive_file")
}

/// `inactive_file` of a v2 `memory.stat` (always hierarchical on v2).
pub(crate) fn inactive_file_v2(stat: &str) -> std::result::Result<u64, StatError> {
    stat_field(stat, "inactive_file")
}

/// `memory.limit_in_bytes` as a capacity (`u64::MAX` when unlimited).
pub(crate) fn capacity_v1(value: u64) -> u64 {
    if value >= V1_UNLIMITED_FROM {
        u64::MAX
    } else {
        value
    }
}

/// `memory.max` (`max` or bytes) as a capacity.
pub(crate) fn capacity_v2(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => Some(u64::MAX),
        v => v.parse().ok(),
    }
}

/// Read a small interface file (bounded) as cgroup errors: a missing or vanished file stays
/// an `Io` error so that `Error::is_gone` sees it.
fn read_small(path: &Path) -> Result<String> {
    match read_bounded(path) {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(Error::Malformed {
            path: path.to_path_buf(),
            field: "contents",
            value: String::new(),
            reason: "larger than a kernel interface file",
        }),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_u64(dir: &Path, file: &'static str) -> Result<u64> {
    let path = dir.join(file);
    let text = read_small(&path)?;
    text.trim().parse().map_err(|_| Error::Malformed {
        value: text.trim().to_string(),
        path,
        field: file,
        reason: "not a number of bytes",
    })
}

fn stat_error(path: PathBuf) -> impl FnOnce(StatError) -> Error {
    move |(field, value, reason)| Error::Malformed {
        path,
        field,
        value,
        reason,
    }
}

/// Usage, working set and limit of the v1 memory cgroup at `dir`. Usage is read first: if
/// the cgroup vanishes between the reads the next read fails (`is_gone`), so a half-read
/// sample is never returned.
pub(crate) fn sample_v1(dir: &Path) -> Result<MemorySample> {
    let usage = read_u64(dir, USAGE_V1)?;
    let stat_path = dir.join("memory.stat");
    let inactive = inactive_file_v1(&read_small(&stat_path)?).map_err(stat_error(stat_path))?;
    let capacity = capacity_v1(read_u64(dir, "memory.limit_in_bytes")?);
    Ok(MemorySample {
        capacity,
        usage,
        working_set: working_set(usage, inactive),
    })
}

/// Usage, working set and limit of the v2 cgroup at `dir`.
pub(crate) fn sample_v2(dir: &Path) -> Result<MemorySample> {
    let usage = read_u64(dir, "memory.current")?;
    let stat_path = dir.join("memory.stat");
    let inactive = inactive_file_v2(&read_small(&stat_path)?).map_err(stat_error(stat_path))?;
    let max_path = dir.join("memory.max");
    let max = read_small(&max_path)?;
    let capacity = capacity_v2(&max).ok_or_else(|| Error::Malformed {
        path: max_path,
        field: "memory.max",
        value: max.trim().to_string(),
        reason: "neither `max` nor a number of bytes",
    })?;
    Ok(MemorySample {
        capacity,
        usage,
        working_set: working_set(usage, inactive),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_values() {
        let cases = [
            (None, None, None),
            (Some(64 << 20), Some("67108864"), Some("67108864")),
            (Some(0), Some("-1"), Some("max")),
            (Some(-1), Some("-1"), Some("max")),
        ];
        for (limit, v1, v2) in cases {
            let res = Resources {
                memory_limit: limit,
                ..Default::default()
            };
            assert_eq!(v1_limit(&res).as_deref(), v1, "{limit:?}");
            assert_eq!(v2_max(&res).as_deref(), v2, "{limit:?}");
        }
    }

    #[test]
    fn stat_fields() {
        let v1 = "cache 10833920\ninactive_file 40960\nactive_file 1724416\n\
                  total_cache 13327192064\ntotal_inactive_file 9533116416\n";
        let v2 = "anon 1000\nfile 5000\nactive_file 1000\ninactive_file 4000\n\
                  slab 7\n";
        let cases: &[(&str, bool, std::result::Result<u64, &str>)] = &[
            (v1, true, Ok(9533116416)),
            (v1, false, Ok(40960)),
            (v2, false, Ok(4000)),
            (v2, true, Err("missing")),
            ("", false, Err("missing")),
            ("inactive_file\n", false, Err("not a number")),
            ("inactive_file -5\n", false, Err("not a number")),
            ("inactive_file 5 6\n", false, Err("not a number")),
            ("inactive_file 0\n", false, Ok(0)),
            // A longer key that starts with the one asked for is a different key.
            ("inactive_file_x 9\ninactive_file 3\n", false, Ok(3)),
        ];
        for (text, is_v1, want) in cases {
            let got = if *is_v1 {
                inactive_file_v1(text)
            } else {
                inactive_file_v2(text)
            };
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text:?}"),
                (Err((_, _, reason)), Err(want)) => assert_eq!(reason, *want, "{text:?}"),
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn capacities() {
        let v1 = [
            (9223372036854771712, u64::MAX), // 64-bit "unlimited", 4 KiB pages
            (9223372036854710272, u64::MAX), // 64-bit, 64 KiB pages
            (8796093018112, u64::MAX),       // 32-bit "unlimited"
            (536870912, 536870912),
            (0, 0),
        ];
        for (value, want) in v1 {
            assert_eq!(capacity_v1(value), want, "{value}");
        }
        let v2 = [
            ("max\n", Some(u64::MAX)),
            ("536870912\n", Some(536870912)),
            ("0", Some(0)),
            ("", None),
            ("-1", None),
            ("unlimited", None),
        ];
        for (text, want) in v2 {
            assert_eq!(capacity_v2(text), want, "{text:?}");
        }
    }

    fn files(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (f, v) in files {
            std::fs::write(dir.join(f), v).unwrap();
        }
    }

    #[test]
    fn samples_from_interface_files() {
        let t = tempfile::tempdir().unwrap();
        let d1 = t.path().join("v1");
        files(
            &d1,
            &[
                ("memory.usage_in_bytes", "300000000\n"),
                (
                    "memory.stat",
                    "inactive_file 1\ntotal_inactive_file 100000000\n",
                ),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
            ],
        );
        let s = sample_v1(&d1).unwrap();
        assert_eq!(
            s,
            MemorySample {
                capacity: u64::MAX,
                usage: 300000000,
                working_set: 200000000
            }
        );
        let d2 = t.path().join("v2");
        files(
            &d2,
            &[
                ("memory.current", "300\n"),
                ("memory.stat", "inactive_file 500\n"),
                ("memory.max", "1000\n"),
            ],
        );
        let s = sample_v2(&d2).unwrap();
        assert_eq!(
            s,
            MemorySample {
                capacity: 1000,
                usage: 300,
                working_set: 0
            }
        );

        // Malformed contents name the file, the field and the value.
        std::fs::write(d2.join("memory.max"), "lots\n").unwrap();
        let err = sample_v2(&d2).unwrap_err().to_string();
        assert!(
            err.contains("memory.max") && err.contains("\"lots\""),
            "{err}"
        );
        assert!(!sample_v2(&d2).unwrap_err().is_gone());
        std::fs::write(d1.join("memory.stat"), "total_inactive_file x\n").unwrap();
        let err = sample_v1(&d1).unwrap_err().to_string();
        assert!(
            err.contains("memory.stat") && err.contains("total_inactive_file"),
            "{err}"
        );
        std::fs::write(d1.join("memory.usage_in_bytes"), "").unwrap();
        let err = sample_v1(&d1).unwrap_err().to_string();
        assert!(
            err.contains("memory.usage_in_bytes") && err.contains("not a number"),
            "{err}"
        );

        // A cgroup that is gone (a pod exiting) is told apart from a broken one.
        for (dir, sample) in [
            (
                t.path().join("gone"),
                sample_v1 as fn(&Path) -> Result<MemorySample>,
            ),
            (t.path().join("gone"), sample_v2),
        ] {
            let err = sample(&dir).unwrap_err();
            assert!(err.is_gone(), "{err}");
        }
        // Half gone: usage read, stat missing.
        std::fs::remove_file(d2.join("memory.stat")).unwrap();
        let err = sample_v2(&d2).unwrap_err();
        assert!(
            err.is_gone() && err.to_string().contains("memory.stat"),
            "{err}"
        );
    }

    #[test]
    fn backends_name_their_files_and_refuse_the_v2_root() {
        use super::super::{mountinfo::Hierarchy, Cgroups, MemoryFiles, V1, V2};
        let t = tempfile::tempdir().unwrap();
        let v2 = V2::with_controllers(t.path(), &[]);
        assert_eq!(
            v2.memory_files("/tidelet/kubepods/"),
            MemoryFiles::V2 {
                events: t.path().join("tidelet/kubepods/memory.events"),
                pressure: t.path().join("tidelet/kubepods/memory.pressure"),
            }
        );
        let err = v2.memory_sample("/").unwrap_err();
        assert!(
            !err.is_gone() && err.to_string().contains("node_memory"),
            "{err}"
        );
        let h = |c: &[&str]| Hierarchy {
            mount_point: t.path().join(c.join(",")),
            controllers: c.iter().map(|s| s.to_string()).collect(),
        };
        let v1 = V1::new(vec![h(&["memory"]), h(&["cpu", "cpuacct"]), h(&["pids"])]).unwrap();
        assert_eq!(
            v1.memory_files("tidelet/kubepods"),
            MemoryFiles::V1 {
                usage: t
                    .path()
                    .join("memory/tidelet/kubepods/memory.usage_in_bytes"),
                event_control: t
                    .path()
                    .join("memory/tidelet/kubepods/cgroup.event_control"),
            }
        );
        files(
            &t.path().join("memory/tidelet/kubepods"),
            &[
                ("memory.usage_in_bytes", "10\n"),
                ("memory.stat", "total_inactive_file 4\n"),
                ("memory.limit_in_bytes", "20\n"),
            ],
        );
        let s = v1.memory_sample("tidelet/kubepods").unwrap();
        assert_eq!(
            (s.capacity, s.usage, s.working_set, s.available()),
            (20, 10, 6, 14)
        );
        assert!(v1
            .memory_sample("tidelet/kubepods/gone")
            .unwrap_err()
            .is_gone());
    }
}
