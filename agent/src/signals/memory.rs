//! Memory samples with Kubernetes semantics, and the node's memory from `/proc/meminfo`.
//!
//! kubelet (through cadvisor) defines `memory.available = capacity - working_set` with
//! `working_set = usage - inactive_file` (floored at 0): inactive page cache is what the
//! kernel reclaims first, so it does not count as pressure. The same `MemorySample` serves the
//! node (read here) and any cgroup (`Cgroups::memory_sample`).
//!
//! For the node, meminfo is used on cgroup v1 as well as v2. On v2 the root cgroup has no
//! `memory.current`, and cadvisor itself derives the root's usage from meminfo
//! (`MemTotal - MemFree`, minus `Inactive(file)` for the working set). On v1 the root's
//! `memory.usage_in_bytes` is not a real counter (the kernel sums a few page counts for the
//! root) and leaves out kernel memory such as slab and page tables and the memory of
//! processes outside any memory cgroup; meminfo counts all of it, which is what decides
//! whether the board runs out, and gives one meaning on both versions.

use std::path::Path;

use super::{read_bounded, SignalError};
// The sample type lives with the cgroups that also produce it; signals sits above cgroups.
use crate::cgroups::{working_set, MemorySample};

/// The node's memory from the text of `/proc/meminfo` (values in kB). Errors name the field
/// and the value; the file is called `meminfo` (see `node_memory` for the real path).
pub fn parse_meminfo(text: &str) -> Result<MemorySample, SignalError> {
    let field = |name: &'static str| -> Result<u64, SignalError> {
        let malformed = |value: &str, reason| SignalError::Malformed {
            file: "meminfo".into(),
            field: name,
            value: value.to_string(),
            reason,
        };
        let rest = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .ok_or(SignalError::Missing {
                file: "meminfo".into(),
                field: name,
            })?;
        let mut parts = rest.split_whitespace();
        let number = parts.next().unwrap_or("");
        let kib: u64 = number
            .parse()
            .map_err(|_| malformed(rest.trim(), "not a number of kB"))?;
        match (parts.next(), parts.next()) {
            (Some("kB"), None) => {}
            _ => return Err(malformed(rest.trim(), "expected `<number> kB`")),
        }
        kib.checked_mul(1024)
            .ok_or_else(|| malformed(rest.trim(), "too large"))
    };
    let total = field("MemTotal")?;
    let free = field("MemFree")?;
    let inactive_file = field("Inactive(file)")?;
    let usage = total.saturating_sub(free);
    Ok(MemorySample {
        capacity: total,
        usage,
        working_set: working_set(usage, inactive_file),
    })
}

/// The node's memory, read from `meminfo` (normally `/proc/meminfo`).
pub fn node_memory(meminfo: &Path) -> Result<MemorySample, SignalError> {
    parse_meminfo(&read_bounded(meminfo)?).map_err(|e| e.in_file(meminfo))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    #[test]
    fn parses_meminfo() {
        let real = "MemTotal:       24684000 kB\nMemFree:        10892000 kB\n\
                    MemAvailable:   24035000 kB\nBuffers:            1000 kB\n\
                    Active(file):    1700000 kB\nInactive(file):  9310000 kB\n\
                    HugePages_Total:       0\n";
        let usage = (24684000 - 10892000) * KIB;
        let cases: &[(&str, Result<MemorySample, &str>)] = &[
            (
                real,
                Ok(MemorySample {
                    capacity: 24684000 * KIB,
                    usage,
                    working_set: usage - 9310000 * KIB,
                }),
            ),
            // Inactive(file) above usage (counters read at different times): floor at 0.
            (
                "MemTotal: 100 kB\nMemFree: 60 kB\nInactive(file): 50 kB\n",
                Ok(MemorySample {
                    capacity: 100 * KIB,
                    usage: 40 * KIB,
                    working_set: 0,
                }),
            ),
            // Order does not matter; `Inactive(anon)` is not mistaken for the file one.
            (
                "Inactive(anon): 7 kB\nInactive(file): 10 kB\nMemFree: 0 kB\nMemTotal: 30 kB\n",
                Ok(MemorySample {
                    capacity: 30 * KIB,
                    usage: 30 * KIB,
                    working_set: 20 * KIB,
                }),
            ),
            (
                "MemFree: 1 kB\nInactive(file): 1 kB\n",
                Err("no \"MemTotal\" field"),
            ),
            (
                "MemTotal: 1 kB\nInactive(file): 1 kB\n",
                Err("no \"MemFree\" field"),
            ),
            (
                "MemTotal: 1 kB\nMemFree: 1 kB\n",
                Err("no \"Inactive(file)\" field"),
            ),
            (
                "MemTotal: lots kB\nMemFree: 1 kB\nInactive(file): 1 kB\n",
                Err("field \"MemTotal\" has value \"lots kB\": not a number of kB"),
            ),
            (
                "MemTotal: 5 MB\nMemFree: 1 kB\nInactive(file): 1 kB\n",
                Err("field \"MemTotal\" has value \"5 MB\": expected `<number> kB`"),
            ),
            (
                "MemTotal: 5\nMemFree: 1 kB\nInactive(file): 1 kB\n",
                Err("expected `<number> kB`"),
            ),
            (
                "MemTotal: 18446744073709551615 kB\nMemFree: 1 kB\nInactive(file): 1 kB\n",
                Err("too large"),
            ),
            ("", Err("no \"MemTotal\" field")),
        ];
        for (text, want) in cases {
            match (parse_meminfo(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text:?}"),
                (Err(e), Err(want)) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(want) && msg.starts_with("meminfo"),
                        "{text:?}: {msg}"
                    );
                }
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn available_and_working_set() {
        let cases = [
            (
                MemorySample {
                    capacity: 100,
                    usage: 80,
                    working_set: 30,
                },
                70,
            ),
            (
                MemorySample {
                    capacity: 100,
                    usage: 200,
                    working_set: 150,
                },
                0,
            ),
            (
                MemorySample {
                    capacity: u64::MAX,
                    usage: 5,
                    working_set: 5,
                },
                u64::MAX - 5,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.available(), want, "{s:?}");
        }
        assert_eq!(working_set(10, 3), 7);
        assert_eq!(working_set(3, 10), 0);
    }

    #[test]
    fn node_memory_names_the_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("meminfo");
        std::fs::write(&p, "MemTotal: 4 kB\nMemFree: x kB\nInactive(file): 0 kB\n").unwrap();
        let err = node_memory(&p).unwrap_err().to_string();
        assert!(
            err.starts_with(&p.display().to_string()) && err.contains("MemFree"),
            "{err}"
        );
        std::fs::write(&p, "MemTotal: 4 kB\nMemFree: 1 kB\nInactive(file): 1 kB\n").unwrap();
        assert_eq!(
            node_memory(&p).unwrap(),
            MemorySample {
                capacity: 4096,
                usage: 3072,
                working_set: 2048
            }
        );
        assert!(node_memory(&t.path().join("gone")).unwrap_err().is_gone());
        // The real file parses and is plausible.
        let host = node_memory(Path::new("/proc/meminfo")).unwrap();
        assert!(host.capacity > 0 && host.usage <= host.capacity && host.working_set <= host.usage);
    }
}
