//! CPU sets in the Linux list format (`cpuset(7)`: `0-3,8,10-11`), as `cpuset.cpus`,
//! `/sys/devices/system/cpu/online`, `Cpus_allowed_list` and kubelet's `reservedSystemCPUs`
//! and checkpoint write them.
//!
//! A set is a sorted set of CPU ids; formatting is canonical (ranges merged, ascending), so
//! a set written and read back compares equal. CPU ids are bounded by `MAX_CPU` so that a
//! hostile list such as `0-4294967295` cannot make tidelet allocate gigabytes.

use std::collections::BTreeSet;
use std::fmt;

/// The largest CPU id accepted (Linux's `NR_CPUS` is at most 8192).
pub const MAX_CPU: u32 = 8191;

/// A set of CPU ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet(BTreeSet<u32>);

/// Why a string is not a CPU list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a CPU list like \"0-1,4\": {reason}")]
pub struct ParseError {
    pub value: String,
    pub reason: String,
}

impl CpuSet {
    pub fn new() -> CpuSet {
        CpuSet::default()
    }

    /// Parse the list format; an empty (or all-blank) string is the empty set.
    pub fn parse(s: &str) -> Result<CpuSet, ParseError> {
        let err = |reason: String| ParseError {
            value: s.to_string(),
            reason,
        };
        let mut set = BTreeSet::new();
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Ok(CpuSet(set));
        }
        for part in trimmed.split(',') {
            let part = part.trim();
            let num = |t: &str| -> Result<u32, ParseError> {
                let t = t.trim();
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err(format!("{t:?} is not a CPU number")));
                }
                let n: u32 = t
                    .parse()
                    .map_err(|_| err(format!("{t:?} is too large (max {MAX_CPU})")))?;
                if n > MAX_CPU {
                    return Err(err(format!("CPU {n} is above the maximum {MAX_CPU}")));
                }
                Ok(n)
            };
            if part.is_empty() {
                return Err(err("empty element between commas".into()));
            }
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(err(format!("range {part:?} goes backwards")));
                    }
                    set.extend(a..=b);
                }
                None => {
                    set.insert(num(part)?);
                }
            }
        }
        Ok(CpuSet(set))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn union(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.union(&other.0).copied().collect())
    }

    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn is_disjoint(&self, other: &CpuSet) -> bool {
        self.0.is_disjoint(&other.0)
    }

    /// The `n` lowest CPUs, or `None` when there are fewer.
    pub fn take_lowest(&self, n: usize) -> Option<CpuSet> {
        (self.len() >= n).then(|| CpuSet(self.0.iter().copied().take(n).collect()))
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        CpuSet(iter.into_iter().collect())
    }
}

/// The canonical list format; the empty set is the empty string (as the kernel shows it).
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut it = self.0.iter().copied().peekable();
        while let Some(start) = it.next() {
            let mut end = start;
            while it.peek() == Some(&(end + 1)) {
                end += 1;
                it.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for CpuSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CpuSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CpuSet::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u32]) -> CpuSet {
        v.iter().copied().collect()
    }

    #[test]
    fn parses_and_formats_canonically() {
        let cases: &[(&str, &[u32], &str)] = &[
            ("", &[], ""),
            ("  \n", &[], ""),
            ("0", &[0], "0"),
            ("0-1", &[0, 1], "0-1"),
            ("0-1,4", &[0, 1, 4], "0-1,4"),
            ("4,0-1", &[0, 1, 4], "0-1,4"),
            ("0,1,2,5,6", &[0, 1, 2, 5, 6], "0-2,5-6"),
            ("3-3", &[3], "3"),
            ("0-2,1-3\n", &[0, 1, 2, 3], "0-3"),
            (" 1 , 7 ", &[1, 7], "1,7"),
            ("8191", &[8191], "8191"),
        ];
        for (text, cpus, canon) in cases {
            let got = CpuSet::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(got, set(cpus), "{text:?}");
            assert_eq!(got.to_string(), *canon, "{text:?}");
            assert_eq!(CpuSet::parse(canon).unwrap(), got, "round trip of {text:?}");
        }
    }

    #[test]
    fn rejects_malformed_lists() {
        let cases = [
            ("a", "\"a\" is not a CPU number"),
            ("0,", "empty element between commas"),
            (",1", "empty element between commas"),
            ("0-", "\"\" is not a CPU number"),
            ("-1", "\"\" is not a CPU number"),
            ("3-1", "range \"3-1\" goes backwards"),
            ("1-2-3", "\"2-3\" is not a CPU number"),
            ("8192", "CPU 8192 is above the maximum 8191"),
            ("0-4294967295", "CPU 4294967295 is above the maximum 8191"),
            ("99999999999", "\"99999999999\" is too large (max 8191)"),
            ("+1", "\"+1\" is not a CPU number"),
        ];
        for (text, reason) in cases {
            let e = CpuSet::parse(text).unwrap_err();
            assert_eq!(e.reason, reason, "{text:?}");
            assert!(e.to_string().contains(&format!("{text:?}")), "{e}");
        }
    }

    #[test]
    fn set_operations() {
        let a = set(&[0, 1, 2, 3]);
        let b = set(&[2, 3, 4]);
        assert_eq!(a.union(&b), set(&[0, 1, 2, 3, 4]));
        assert_eq!(a.difference(&b), set(&[0, 1]));
        assert_eq!(a.intersection(&b), set(&[2, 3]));
        assert!(set(&[1, 2]).is_subset(&a) && !b.is_subset(&a));
        assert!(set(&[5]).is_disjoint(&a) && !b.is_disjoint(&a));
        assert_eq!(b.take_lowest(2), Some(set(&[2, 3])));
        assert_eq!(b.take_lowest(0), Some(CpuSet::new()));
        assert_eq!(b.take_lowest(4), None);
    }

    #[test]
    fn serde_uses_the_list_format() {
        let s = serde_json::to_string(&set(&[0, 1, 4])).unwrap();
        assert_eq!(s, "\"0-1,4\"");
        let back: CpuSet = serde_json::from_str(&s).unwrap();
        assert_eq!(back, set(&[0, 1, 4]));
        assert!(serde_json::from_str::<CpuSet>("\"x\"").is_err());
    }
}
