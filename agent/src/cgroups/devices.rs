//! Device access rules for a container's cgroup: which device nodes (by type, major, minor)
//! it may read, write or create. The same rules are written as v1 `devices.deny` /
//! `devices.allow` lines and compiled into a v2 eBPF device program (`bpf`).
//!
//! Every container starts from `default_rules()` (deny everything, then allow the nodes every
//! container's `/dev` has, as runc and containerd do) plus one allow rule per device it was
//! given by a device plugin or CDI.
//!
//! Semantics, shared by both backends (they are v1's for the rules tidelet emits): rules are
//! read in order and the last one that matches a request decides. An `a` rule (`DevKind::All`)
//! matches every request whatever its numbers and access, as v1 treats it as "reset the whole
//! list". An allow rule matches when it names every access the request asks for (v1 checks a
//! request against one exception at a time); a deny rule matches when it names any of them.
//! A request no rule matches is denied.

use std::fmt;

/// `c`, `b` or `a` (all) in cgroup terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DevKind {
    Char,
    Block,
    All,
}

impl DevKind {
    /// The letter v1 files use.
    pub fn letter(self) -> char {
        match self {
            DevKind::Char => 'c',
            DevKind::Block => 'b',
            DevKind::All => 'a',
        }
    }
}

/// One rule; rules are applied in order and the last match wins on v1 semantics of
/// deny-all-then-allow (tidelet only emits a leading deny-all followed by allows).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DevKind,
    /// `None` is `*`.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Any of `r`, `w`, `m`, in that order, non-empty.
    pub access: String,
}

/// Largest major number Linux has (12 bits).
pub const MAX_MAJOR: u32 = (1 << 12) - 1;
/// Largest minor number Linux has (20 bits).
pub const MAX_MINOR: u32 = (1 << 20) - 1;

/// A rule `allow` refused; each names the value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("device access {value:?}: {reason}")]
    Access { value: String, reason: &'static str },
    #[error("device {field} number {value}: above the largest Linux has ({max})")]
    Number {
        field: &'static str,
        value: u32,
        max: u32,
    },
    #[error("device rule of type `a` with {major:?}:{minor:?}: `a` covers every device, numbers must be `*` (None)")]
    AllWithNumbers {
        major: Option<u32>,
        minor: Option<u32>,
    },
}

/// Access bits as the v2 device program sees them (`BPF_DEVCG_ACC_*`).
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;

impl DeviceRule {
    /// The rule's access as `BPF_DEVCG_ACC_*` bits; unknown letters count for nothing.
    pub fn access_bits(&self) -> u32 {
        self.access.chars().fold(0, |bits, c| {
            bits | match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => 0,
            }
        })
    }
}

impl fmt::Display for DeviceRule {
    /// The v1 line, e.g. `c 1:3 rwm` or `a *:* rwm`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        write!(
            f,
            "{} {}:{} {}",
            self.kind.letter(),
            num(self.major),
            num(self.minor),
            self.access
        )
    }
}

/// Normalise `access` to the order `rwm`: non-empty, only those letters, each at most once.
pub fn normalize_access(access: &str) -> Result<String, Error> {
    let err = |reason| Error::Access {
        value: access.to_string(),
        reason,
    };
    if access.is_empty() {
        return Err(err("is empty; give any of r, w, m"));
    }
    let mut seen = [false; 3];
    for c in access.chars() {
        let i = match c {
            'r' => 0,
            'w' => 1,
            'm' => 2,
            _ => return Err(err("has a letter other than r, w, m")),
        };
        if seen[i] {
            return Err(err("repeats a letter"));
        }
        seen[i] = true;
    }
    Ok("rwm"
        .chars()
        .zip(seen)
        .filter(|(_, s)| *s)
        .map(|(c, _)| c)
        .collect())
}

/// An allow rule for `kind` `major:minor` (`None` is `*`) with `access` (any of `r`, `w`, `m`,
/// in any order; stored as `rwm` order). Numbers above Linux's 12/20 bits are refused, and so
/// are numbers on `DevKind::All` (v1 ignores them there, which would surprise).
pub fn allow(
    kind: DevKind,
    major: Option<u32>,
    minor: Option<u32>,
    access: &str,
) -> Result<DeviceRule, Error> {
    let access = normalize_access(access)?;
    if kind == DevKind::All && (major.is_some() || minor.is_some()) {
        return Err(Error::AllWithNumbers { major, minor });
    }
    for (field, value, max) in [("major", major, MAX_MAJOR), ("minor", minor, MAX_MINOR)] {
        if let Some(value) = value.filter(|v| *v > max) {
            return Err(Error::Number { field, value, max });
        }
    }
    Ok(DeviceRule {
        allow: true,
        kind,
        major,
        minor,
        access,
    })
}

/// A privileged container's rules: every device (`a *:* rwm`).
pub fn allow_all() -> Vec<DeviceRule> {
    vec![rule(true, DevKind::All, None, None)]
}

fn rule(allow: bool, kind: DevKind, major: Option<u32>, minor: Option<u32>) -> DeviceRule {
    DeviceRule {
        allow,
        kind,
        major,
        minor,
        access: "rwm".into(),
    }
}

/// Deny everything, allow creating any node (mknod; opening it is still refused, as
/// containerd does), and allow the nodes every container's `/dev` has: null, zero, full,
/// random, urandom, tty, console, ptmx and the pts.
pub fn default_rules() -> Vec<DeviceRule> {
    let c = |major, minor| rule(true, DevKind::Char, Some(major), minor);
    let mknod = |kind| DeviceRule {
        access: "m".into(),
        ..rule(true, kind, None, None)
    };
    vec![
        rule(false, DevKind::All, None, None),
        mknod(DevKind::Char),
        mknod(DevKind::Block),
        c(1, Some(3)),
        c(1, Some(5)),
        c(1, Some(7)),
        c(1, Some(8)),
        c(1, Some(9)),
        c(5, Some(0)),
        c(5, Some(1)),
        c(5, Some(2)),
        c(136, None),
    ]
}

/// What to write, in order, into a v1 cgroup: (`devices.deny` or `devices.allow`, line).
pub fn v1_lines(rules: &[DeviceRule]) -> Vec<(&'static str, String)> {
    rules
        .iter()
        .map(|r| {
            let file = if r.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            (file, r.to_string())
        })
        .collect()
}

/// Whether `rules` let a request for `kind` `major:minor` with `access` bits through, by the
/// semantics in the module doc. The reference the eBPF program is tested against, and what
/// the agent can use to explain a denial.
pub fn allows(rules: &[DeviceRule], kind: DevKind, major: u32, minor: u32, access: u32) -> bool {
    for r in rules.iter().rev() {
        if r.kind == DevKind::All {
            return r.allow;
        }
        let bits = r.access_bits();
        let matches = r.kind == kind
            && r.major.is_none_or(|m| m == major)
            && r.minor.is_none_or(|m| m == minor)
            && if r.allow {
                access & !bits == 0
            } else {
                access & bits != 0
            };
        if matches {
            return r.allow;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_is_normalised_or_refused_naming_the_value() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("rwm", Ok("rwm")),
            ("mwr", Ok("rwm")),
            ("r", Ok("r")),
            ("mr", Ok("rm")),
            ("w", Ok("w")),
            ("", Err("is empty")),
            ("rx", Err("other than")),
            ("rr", Err("repeats")),
            ("RWM", Err("other than")),
            ("r w", Err("other than")),
        ];
        for (input, want) in cases {
            let got = normalize_access(input);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(&g, w, "{input:?}"),
                (Err(e), Err(w)) => {
                    let text = e.to_string();
                    assert!(text.contains(w), "{input:?}: {text}");
                    assert!(text.contains(&format!("{input:?}")), "{text}");
                }
                (g, w) => panic!("{input:?}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn allow_validates_numbers_and_kind() {
        let ok = allow(DevKind::Char, Some(10), Some(200), "wr").unwrap();
        assert_eq!(ok.to_string(), "c 10:200 rw");
        assert!(ok.allow);
        assert_eq!(
            allow(DevKind::Block, None, Some(MAX_MINOR), "m")
                .unwrap()
                .to_string(),
            "b *:1048575 m"
        );
        assert_eq!(
            allow(DevKind::Char, Some(MAX_MAJOR + 1), None, "r").unwrap_err(),
            Error::Number {
                field: "major",
                value: 4096,
                max: MAX_MAJOR
            }
        );
        assert!(matches!(
            allow(DevKind::Char, Some(1), Some(MAX_MINOR + 1), "r"),
            Err(Error::Number { field: "minor", .. })
        ));
        assert!(matches!(
            allow(DevKind::All, Some(1), None, "rwm"),
            Err(Error::AllWithNumbers { .. })
        ));
        assert_eq!(
            allow(DevKind::All, None, None, "rwm").unwrap().to_string(),
            "a *:* rwm"
        );
    }

    #[test]
    fn v1_lines_deny_all_first_then_the_allows() {
        let mut rules = default_rules();
        rules.push(allow(DevKind::Char, Some(10), Some(200), "rw").unwrap());
        let lines = v1_lines(&rules);
        let want = [
            ("devices.deny", "a *:* rwm"),
            ("devices.allow", "c *:* m"),
            ("devices.allow", "b *:* m"),
            ("devices.allow", "c 1:3 rwm"),
            ("devices.allow", "c 1:5 rwm"),
            ("devices.allow", "c 1:7 rwm"),
            ("devices.allow", "c 1:8 rwm"),
            ("devices.allow", "c 1:9 rwm"),
            ("devices.allow", "c 5:0 rwm"),
            ("devices.allow", "c 5:1 rwm"),
            ("devices.allow", "c 5:2 rwm"),
            ("devices.allow", "c 136:* rwm"),
            ("devices.allow", "c 10:200 rw"),
        ];
        let got: Vec<(&str, &str)> = lines.iter().map(|(f, l)| (*f, l.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn default_rules_keep_the_test_devices_out() {
        let d = default_rules();
        let rw = ACC_READ | ACC_WRITE;
        let cases: &[(DevKind, u32, u32, u32, bool)] = &[
            (DevKind::Char, 1, 3, rw, true),
            (DevKind::Char, 1, 9, ACC_READ, true),
            (DevKind::Char, 136, 7, rw, true),
            (DevKind::Char, 5, 2, rw | ACC_MKNOD, true),
            (DevKind::Char, 10, 200, rw, false),
            (DevKind::Char, 10, 229, ACC_READ, false),
            (DevKind::Char, 1, 11, ACC_WRITE, false),
            (DevKind::Char, 10, 200, ACC_MKNOD, true),
            (DevKind::Block, 8, 0, ACC_MKNOD, true),
            (DevKind::Block, 8, 0, ACC_READ, false),
            (DevKind::Block, 1, 3, ACC_READ, false),
        ];
        for &(kind, major, minor, access, want) in cases {
            assert_eq!(
                allows(&d, kind, major, minor, access),
                want,
                "{kind:?} {major}:{minor} {access}"
            );
        }
    }

    #[test]
    fn allows_last_match_wins() {
        let a = |s: &str| allow(DevKind::Char, Some(1), Some(3), s).unwrap();
        let deny = |s: &str| DeviceRule {
            allow: false,
            ..a(s)
        };
        let all = |allow| rule(allow, DevKind::All, None, None);
        let (r, w, m) = (ACC_READ, ACC_WRITE, ACC_MKNOD);
        let cases: Vec<(Vec<DeviceRule>, u32, bool)> = vec![
            (vec![], r, false),
            (vec![all(true)], r | w, true),
            (vec![all(false)], r, false),
            (vec![all(true), all(false)], r, false),
            (vec![all(false), all(true)], r, true),
            (vec![all(false), a("r")], r, true),
            (vec![all(false), a("r")], r | w, false),
            (vec![all(false), a("r"), a("w")], r | w, false),
            (vec![all(false), a("rw")], w, true),
            (vec![all(false), a("rwm"), deny("w")], r, true),
            (vec![all(false), a("rwm"), deny("w")], r | w, false),
            (vec![all(false), a("rwm"), deny("w")], m, true),
            (vec![all(true), deny("r")], r, false),
            (vec![all(true), deny("r")], w, true),
            (vec![a("rwm"), all(false)], r, false),
        ];
        for (rules, access, want) in cases {
            assert_eq!(
                allows(&rules, DevKind::Char, 1, 3, access),
                want,
                "{rules:?} access {access}"
            );
        }
    }
}
