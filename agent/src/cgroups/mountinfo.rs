//! `/proc/<pid>/mountinfo` parsing and the pure decision of which cgroup layout a host has.
//!
//! The parser knows the format of `proc(5)`: `id parent major:minor root mount-point options
//! [optional fields...] - fstype source super-options`, with `\040`-style octal escapes in
//! paths. `layout` then looks at what is mounted at and directly below the mount root: cgroup2
//! at the root itself is v2; cgroup v1 hierarchies below it are v1 (a cgroup2 at
//! `<root>/unified`, the hybrid layout, carries no controllers tidelet uses and is ignored).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One line of mountinfo, the fields tidelet needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The path inside the mounted file system that is mounted here (`/` normally).
    pub root: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    pub super_options: Vec<String>,
}

/// A mountinfo line that does not have the documented shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub reason: &'static str,
}

/// The v1 controllers the kernel knows; other super options (`rw`, `name=systemd`,
/// `clone_children`, ...) are not controllers.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// Undo the octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(o)) = (b[i], oct) {
            // Three octal digits fit in 9 bits; mountinfo only escapes values below 0o400.
            let v = o.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse the whole file. Empty lines are skipped; any other malformed line is an error.
pub fn parse(contents: &str) -> Result<Vec<Mount>, ParseError> {
    let mut mounts = Vec::new();
    for (i, line) in contents.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        mounts.push(parse_line(line).map_err(|reason| ParseError {
            line: i + 1,
            reason,
        })?);
    }
    Ok(mounts)
}

fn parse_line(line: &str) -> Result<Mount, &'static str> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields
        .iter()
        .position(|f| *f == "-")
        .ok_or("no \" - \" separator before the file system type")?;
    if sep < 6 {
        return Err("fewer than 6 fields before the separator");
    }
    if fields.len() < sep + 3 {
        return Err("fewer than 3 fields after the separator");
    }
    if fields[0].parse::<u64>().is_err() || fields[1].parse::<u64>().is_err() {
        return Err("mount id and parent id must be numbers");
    }
    // The root is a path only for file systems with a directory tree: a bind-mounted
    // namespace (`ip netns add`, Podman's netavark, tidelet's own pods) shows `net:[4026532181]`
    // there, and refusing that line kept the agent from starting on any such host.
    if !fields[4].starts_with('/') {
        return Err("the mount point must be an absolute path");
    }
    Ok(Mount {
        root: unescape(fields[3]),
        mount_point: PathBuf::from(unescape(fields[4])),
        fs_type: fields[sep + 1].to_string(),
        source: unescape(fields[sep + 2]),
        super_options: fields[sep + 3..]
            .join(" ")
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// A v1 hierarchy: where it is mounted and which controllers it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    pub controllers: Vec<String>,
}

/// What the host offers at the mount root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup2 mounted at the root.
    V2 { root: PathBuf },
    /// v1 hierarchies (with at least one controller) mounted directly below the root.
    V1 { hierarchies: Vec<Hierarchy> },
}

/// Decide the layout from the mounts; `Err` describes what was found instead.
pub fn layout(mount_root: &Path, mounts: &[Mount]) -> Result<Layout, String> {
    // A later mount on the same mount point hides the earlier ones.
    let mut visible: BTreeMap<&Path, &Mount> = BTreeMap::new();
    for m in mounts {
        visible.insert(m.mount_point.as_path(), m);
    }
    if let Some(m) = visible.get(mount_root) {
        if m.fs_type == "cgroup2" {
            return Ok(Layout::V2 {
                root: mount_root.to_path_buf(),
            });
        }
    }
    let mut hierarchies = Vec::new();
    for (point, m) in &visible {
        if m.fs_type != "cgroup" || point.parent() != Some(mount_root) {
            continue;
        }
        let controllers: Vec<String> = m
            .super_options
            .iter()
            .filter(|o| V1_CONTROLLERS.contains(&o.as_str()))
            .cloned()
            .collect();
        if !controllers.is_empty() {
            hierarchies.push(Hierarchy {
                mount_point: point.to_path_buf(),
                controllers,
            });
        }
    }
    if !hierarchies.is_empty() {
        return Ok(Layout::V1 { hierarchies });
    }
    let found: Vec<String> = visible
        .iter()
        .filter(|(p, _)| p.starts_with(mount_root))
        .map(|(p, m)| {
            let note = match m.fs_type.as_str() {
                "cgroup2" => {
                    " (cgroup2 not at the mount root: hybrid mode without v1 controllers?)"
                }
                "cgroup" => " (cgroup v1 without controllers, e.g. name=systemd)",
                _ => "",
            };
            format!("{} at {}{}", m.fs_type, p.display(), note)
        })
        .collect();
    Err(if found.is_empty() {
        format!("nothing is mounted at or below {}", mount_root.display())
    } else {
        format!(
            "no cgroup2 at {root} and no cgroup v1 hierarchy with controllers below it; found: {}",
            found.join(", "),
            root = mount_root.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_lines() {
        let cases = [
            (
                "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
                Mount {
                    root: "/mnt1".into(),
                    mount_point: "/mnt2".into(),
                    fs_type: "ext3".into(),
                    source: "/dev/root".into(),
                    super_options: vec!["rw".into(), "errors=continue".into()],
                },
            ),
            (
                "29 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate",
                Mount {
                    root: "/".into(),
                    mount_point: "/sys/fs/cgroup".into(),
                    fs_type: "cgroup2".into(),
                    source: "cgroup2".into(),
                    super_options: vec!["rw".into(), "nsdelegate".into()],
                },
            ),
            (
                r"50 1 0:40 /a\040b /tmp/with\040space\134x rw - cgroup none rw,cpu,cpuacct",
                Mount {
                    root: "/a b".into(),
                    mount_point: r"/tmp/with space\x".into(),
                    fs_type: "cgroup".into(),
                    source: "none".into(),
                    super_options: vec!["rw".into(), "cpu".into(), "cpuacct".into()],
                },
            ),
            (
                "612 29 0:4 net:[4026532181] /run/netns/netns-5f0c rw shared:231 - nsfs nsfs rw",
                Mount {
                    root: "net:[4026532181]".into(),
                    mount_point: "/run/netns/netns-5f0c".into(),
                    fs_type: "nsfs".into(),
                    source: "nsfs".into(),
                    super_options: vec!["rw".into()],
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), Ok(vec![want]), "{line}");
        }
    }

    #[test]
    fn rejects_malformed_lines() {
        let cases = [
            (
                "36 35 98:0 / /mnt rw",
                "no \" - \" separator before the file system type",
            ),
            (
                "36 35 / /mnt - ext3 /dev/root rw",
                "fewer than 6 fields before the separator",
            ),
            (
                "36 35 98:0 / /mnt rw - ext3",
                "fewer than 3 fields after the separator",
            ),
            (
                "x 35 98:0 / /mnt rw - ext3 /dev/root rw",
                "mount id and parent id must be numbers",
            ),
            (
                "36 35 98:0 / mnt rw - ext3 /dev/root rw",
                "the mount point must be an absolute path",
            ),
        ];
        for (line, reason) in cases {
            let text = format!("\n{line}\n");
            assert_eq!(parse(&text), Err(ParseError { line: 2, reason }), "{line}");
        }
    }

    fn v1(points: &[(&str, &[&str])]) -> Layout {
        Layout::V1 {
            hierarchies: points
                .iter()
                .map(|(p, c)| Hierarchy {
                    mount_point: p.into(),
                    controllers: c.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn decides_the_layout() {
        let root = Path::new("/sys/fs/cgroup");
        let pure_v2 = "29 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let combined = "\
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let shadowed = "\
29 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
30 1 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs rw
";
        let cases: Vec<(&str, &str, Result<Layout, &str>)> = vec![
            ("pure v2", pure_v2, Ok(Layout::V2 { root: root.into() })),
            (
                "hybrid is v1",
                HYBRID,
                Ok(v1(&[
                    ("/sys/fs/cgroup/cpu", &["cpu"]),
                    ("/sys/fs/cgroup/cpuacct", &["cpuacct"]),
                    ("/sys/fs/cgroup/memory", &["memory"]),
                    ("/sys/fs/cgroup/pids", &["pids"]),
                ])),
            ),
            (
                "combined cpu,cpuacct",
                combined,
                Ok(v1(&[("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]), ("/sys/fs/cgroup/memory", &["memory"])])),
            ),
            ("nothing", "22 1 0:5 / /proc rw - proc proc rw\n", Err("nothing is mounted at or below /sys/fs/cgroup")),
            (
                "tmpfs shadows cgroup2",
                shadowed,
                Err("no cgroup2 at /sys/fs/cgroup and no cgroup v1 hierarchy with controllers below it; found: tmpfs at /sys/fs/cgroup"),
            ),
            (
                "only the unified part of a hybrid",
                "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
                Err("no cgroup2 at /sys/fs/cgroup and no cgroup v1 hierarchy with controllers below it; found: tmpfs at /sys/fs/cgroup, cgroup2 at /sys/fs/cgroup/unified (cgroup2 not at the mount root: hybrid mode without v1 controllers?)"),
            ),
        ];
        for (name, text, want) in cases {
            let mounts = parse(text).unwrap();
            assert_eq!(
                layout(root, &mounts),
                want.map_err(str::to_string),
                "{name}"
            );
        }
    }

    #[test]
    fn unified_as_mount_root_is_v2() {
        let mounts = parse(HYBRID).unwrap();
        let root = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(layout(root, &mounts), Ok(Layout::V2 { root: root.into() }));
        assert_eq!(
            layout(Path::new("/sys/fs/cgroup/unified/"), &mounts).map(|_| ()),
            Ok(())
        );
    }

    #[test]
    fn cpuset_hierarchy_is_found_when_mounted() {
        let with = format!(
            "{HYBRID}42 31 0:39 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
        );
        let root = Path::new("/sys/fs/cgroup");
        let Ok(Layout::V1 { hierarchies }) = layout(root, &parse(&with).unwrap()) else {
            panic!("not v1");
        };
        assert!(hierarchies
            .iter()
            .any(|h| h.mount_point == root.join("cpuset") && h.controllers == ["cpuset"]));
        // Absent, the layout is still v1 with the others (cpuset is optional).
        let Ok(Layout::V1 { hierarchies }) = layout(root, &parse(HYBRID).unwrap()) else {
            panic!("not v1");
        };
        assert!(!hierarchies
            .iter()
            .any(|h| h.controllers.iter().any(|c| c == "cpuset")));
        assert_eq!(hierarchies.len(), 4);
    }
}
