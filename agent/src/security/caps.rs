//! Linux capabilities by name and number, and the sets a container gets (pure).
//!
//! Names follow `capability.h` (`CAP_CHOWN` is 0 ... `CAP_CHECKPOINT_RESTORE` is 40).
//! Kubernetes manifests write them without the `CAP_` prefix (`NET_ADMIN`); containerd adds
//! the prefix and upper-cases, so `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` are one name.

use std::fmt;

/// Every capability this build knows, by number.
pub const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The set containerd and runc give a container that is not privileged (and Docker: the 14
/// of moby's `DefaultCapabilities`).
pub const DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The number of capability `name` (`CAP_` prefix optional, any case), if it is one.
pub fn number(name: &str) -> Option<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(|i| i as u32)
}

/// A set of capabilities as the kernel's 64-bit mask (bit `n` is capability `n`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct CapSet(pub u64);

impl CapSet {
    pub const EMPTY: CapSet = CapSet(0);

    /// Capabilities 0 to `last` (the kernel's `/proc/sys/kernel/cap_last_cap`).
    pub fn all(last: u32) -> CapSet {
        let last = last.min(63);
        CapSet(if last == 63 {
            u64::MAX
        } else {
            (1u64 << (last + 1)) - 1
        })
    }

    pub fn default_set() -> CapSet {
        let mut s = CapSet::EMPTY;
        for n in DEFAULT {
            s.insert(number(n).expect("DEFAULT names are known"));
        }
        s
    }

    pub fn contains(self, n: u32) -> bool {
        n < 64 && self.0 & (1 << n) != 0
    }

    pub fn insert(&mut self, n: u32) {
        if n < 64 {
            self.0 |= 1 << n;
        }
    }

    pub fn remove(&mut self, n: u32) {
        if n < 64 {
            self.0 &= !(1 << n);
        }
    }

    /// Whether capability `name` is in the set (false for a name that is none).
    pub fn has(self, name: &str) -> bool {
        number(name).is_some_and(|n| self.contains(n))
    }

    /// `CAP_` names, in number order; a bit this build has no name for shows as `CAP_<n>`.
    pub fn names(self) -> Vec<String> {
        (0..64)
            .filter(|n| self.contains(*n))
            .map(|n| match NAMES.get(n as usize) {
                Some(name) => format!("CAP_{name}"),
                None => format!("CAP_{n}"),
            })
            .collect()
    }
}

impl fmt::Display for CapSet {
    /// `/proc/<pid>/status` style: 16 hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An unknown capability name in `capabilities.add[i]` or `.drop[i]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {name:?} is not a Linux capability")]
pub struct UnknownCapability {
    pub field: String,
    pub name: String,
}

/// The capabilities of a container that is not privileged, as containerd's CRI plugin
/// computes them: the default set; `add: [ALL]` makes it every capability and `drop: [ALL]`
/// empties it (in that order, so `drop: [ALL]` wins); then each named `add`, then each named
/// `drop`. `available` is what tidelet holds: what `ALL` means, and the most the result can
/// have (a capability tidelet lacks cannot be given). `at` is the field path of the
/// `capabilities` object, for errors.
pub fn container_caps(
    add: &[String],
    drop: &[String],
    available: CapSet,
    at: &str,
) -> Result<CapSet, UnknownCapability> {
    let is_all = |c: &String| c.trim().eq_ignore_ascii_case("ALL");
    let mut set = CapSet::default_set();
    if add.iter().any(is_all) {
        set = available;
    }
    if drop.iter().any(is_all) {
        set = CapSet::EMPTY;
    }
    for (list, name, insert) in [(add, "add", true), (drop, "drop", false)] {
        for (i, c) in list.iter().enumerate() {
            if is_all(c) {
                continue;
            }
            let n = number(c).ok_or_else(|| UnknownCapability {
                field: format!("{at}.{name}[{i}]"),
                name: c.clone(),
            })?;
            if insert {
                set.insert(n);
            } else {
                set.remove(n);
            }
        }
    }
    Ok(CapSet(set.0 & available.0))
}

/// The permitted capabilities of this process (`CapPrm` in `<proc>/self/status`); every
/// capability up to the kernel's last when that cannot be read.
pub fn own_permitted(proc_root: &std::path::Path) -> CapSet {
    std::fs::read_to_string(proc_root.join("self/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapPrm:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .map(CapSet)
        .unwrap_or_else(|| CapSet::all(last_cap(proc_root)))
}

/// The kernel's last capability number, from `<proc>/sys/kernel/cap_last_cap`; 40 (Linux
/// 5.9's `CAP_CHECKPOINT_RESTORE`) when it cannot be read.
pub fn last_cap(proc_root: &std::path::Path) -> u32 {
    std::fs::read_to_string(proc_root.join("sys/kernel/cap_last_cap"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn names_are_case_and_prefix_insensitive() {
        let cases = [
            ("CHOWN", Some(0)),
            ("cap_chown", Some(0)),
            ("CAP_SYS_ADMIN", Some(21)),
            ("net_admin", Some(12)),
            ("CHECKPOINT_RESTORE", Some(40)),
            ("SYS_ADMINX", None),
            ("ALL", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(number(name), want, "{name}");
        }
    }

    #[test]
    fn default_set_is_containerds_fourteen() {
        let d = CapSet::default_set();
        // What `CapEff` shows for a root container under containerd or Docker.
        assert_eq!(d.to_string(), "00000000a80425fb");
        assert_eq!(d.names().len(), 14);
        assert!(d.has("KILL") && !d.has("SYS_ADMIN") && !d.has("NET_ADMIN"));
    }

    #[test]
    fn add_and_drop_follow_containerds_order() {
        let all = CapSet::all(40);
        let def = CapSet::default_set();
        let with = |mut s: CapSet, n: &str| {
            s.insert(number(n).unwrap());
            s
        };
        let without = |mut s: CapSet, n: &str| {
            s.remove(number(n).unwrap());
            s
        };
        let cases: Vec<(Vec<String>, Vec<String>, CapSet)> = vec![
            (s(&[]), s(&[]), def),
            (s(&["NET_ADMIN"]), s(&[]), with(def, "NET_ADMIN")),
            (s(&[]), s(&["ALL"]), CapSet::EMPTY),
            (s(&["all"]), s(&[]), all),
            (s(&["ALL"]), s(&["CHOWN"]), without(all, "CHOWN")),
            (
                s(&["NET_ADMIN"]),
                s(&["ALL"]),
                with(CapSet::EMPTY, "NET_ADMIN"),
            ),
            (s(&["ALL"]), s(&["ALL"]), CapSet::EMPTY),
            (s(&["KILL"]), s(&["kill"]), without(def, "KILL")),
            (s(&[]), s(&["NET_RAW"]), without(def, "NET_RAW")),
        ];
        for (add, drop, want) in cases {
            assert_eq!(
                container_caps(&add, &drop, all, "c").unwrap(),
                want,
                "add {add:?} drop {drop:?}"
            );
        }
        let err =
            container_caps(&s(&["CHOWN", "SYS_BOGUS"]), &[], all, "x.capabilities").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.capabilities.add[1]: \"SYS_BOGUS\" is not a Linux capability"
        );
    }

    #[test]
    fn nothing_beyond_what_tidelet_holds_is_given() {
        let mut held = CapSet::default_set();
        held.remove(number("AUDIT_WRITE").unwrap());
        held.insert(number("NET_ADMIN").unwrap());
        let got = container_caps(&s(&["SYS_ADMIN"]), &[], held, "c").unwrap();
        assert!(!got.has("SYS_ADMIN") && !got.has("AUDIT_WRITE") && got.has("CHOWN"));
        assert_eq!(container_caps(&s(&["ALL"]), &[], held, "c").unwrap(), held);
    }

    #[test]
    fn own_permitted_reads_cap_prm() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        std::fs::write(
            dir.path().join("self/status"),
            "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n",
        )
        .unwrap();
        assert_eq!(own_permitted(dir.path()), CapSet::default_set());
    }

    #[test]
    fn all_covers_the_kernels_capabilities() {
        assert_eq!(CapSet::all(40).to_string(), "000001ffffffffff");
        assert_eq!(CapSet::all(63).0, u64::MAX);
        assert_eq!(CapSet::all(0).0, 1);
    }
}
