//! Finding a group's nodes under the dev root, and naming them: each match of a group's
//! patterns is a node (`ttyUSB0`, `serial/by-id/usb-x`), a device when it is (or links to) a
//! character or block device; its device IDs are its path with `/` as `_`, and with a share
//! count N > 1, `<name>-0` .. `<name>-(N-1)`.

use std::path::{Path, PathBuf};

use crate::config::Group;

/// Nodes one group may hold; more matches are ignored with a warning.
pub const MAX_NODES: usize = 256;

/// One match of a group's patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Path relative to the dev root, `/`-separated.
    pub rel: String,
    /// Whether it is a character or block device now.
    pub is_device: bool,
    /// The node with symlinks resolved (`serial/by-id/usb-x` -> `<dev>/ttyUSB0`), or its
    /// path as found when it does not resolve: a node and a symlink to it are one device.
    pub real: PathBuf,
}

/// The matches of `group`'s patterns under `dev_root`, sorted and without duplicates.
pub fn scan_group(dev_root: &Path, group: &Group) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    for p in &group.paths {
        let dir = dev_root.join(&p.dir);
        let prefix = if p.dir.as_os_str().is_empty() {
            String::new()
        } else {
            format!("{}/", p.dir.to_string_lossy())
        };
        let mut names: Vec<String> = Vec::new();
        if p.name.is_literal() {
            // One name: no need to read a whole directory for it.
            let name = p.pattern.rsplit('/').next().unwrap_or_default().to_string();
            if std::fs::symlink_metadata(dir.join(&name)).is_ok() {
                names.push(name);
            }
        } else if let Ok(entries) = std::fs::read_dir(&dir) {
            names.extend(
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| p.name.matches(n)),
            );
        }
        for name in names {
            let path = dir.join(&name);
            out.push(Found {
                rel: format!("{prefix}{name}"),
                is_device: is_device(&path),
                real: std::fs::canonicalize(&path).unwrap_or(path),
            });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    out.dedup_by(|a, b| a.rel == b.rel);
    if out.len() > MAX_NODES {
        tracing::warn!(resource = %group.resource, matched = out.len(), kept = MAX_NODES, "too many nodes match, ignoring the rest");
        out.truncate(MAX_NODES);
    }
    out
}

/// Whether `path` is (or links to) a character or block device.
pub fn is_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path)
        .is_ok_and(|m| m.file_type().is_char_device() || m.file_type().is_block_device())
}

/// A node a group found that an earlier group (or an earlier path of the same group)
/// already holds: the same node, by its path or through a symlink.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Overlap {
    /// The group (index in the config) that does not get it, and the node as it found it.
    pub group: usize,
    pub rel: String,
    /// The group that holds it, and under which path.
    pub held_by: usize,
    pub held_as: String,
}

/// Each node goes to the first group that found it (in config order; within a group, the
/// first path in sort order), so that no device is offered twice, under two resources or two
/// IDs, where kubelet would hand it to two containers. The others are dropped and returned.
///
/// (By the resolved path, not the device numbers: a board has one node per device, plus
/// udev's symlinks to it, while test trees reuse a few harmless numbers for many nodes.)
pub fn claim(found: Vec<Vec<Found>>) -> (Vec<Vec<Found>>, Vec<Overlap>) {
    let mut held: std::collections::HashMap<PathBuf, (usize, String)> = Default::default();
    let mut overlaps = Vec::new();
    let mut out = Vec::with_capacity(found.len());
    for (g, nodes) in found.into_iter().enumerate() {
        let mut kept = Vec::with_capacity(nodes.len());
        for f in nodes {
            match held.get(&f.real) {
                Some((held_by, held_as)) => overlaps.push(Overlap {
                    group: g,
                    rel: f.rel,
                    held_by: *held_by,
                    held_as: held_as.clone(),
                }),
                None => {
                    held.insert(f.real.clone(), (g, f.rel.clone()));
                    kept.push(f);
                }
            }
        }
        out.push(kept);
    }
    (out, overlaps)
}

/// The device IDs of node `rel` with share count `share`; `None` when they would not be
/// valid IDs (longer than 63 characters, or odd characters).
pub fn device_ids(rel: &str, share: u32) -> Option<Vec<String>> {
    let base = rel.replace('/', "_");
    let ids: Vec<String> = if share <= 1 {
        vec![base]
    } else {
        (0..share).map(|i| format!("{base}-{i}")).collect()
    };
    ids.iter()
        .all(|id| tidelet_device_plugin::is_valid_device_id(id))
        .then_some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_goes_to_the_first_group_that_finds_it() {
        // (path as found, the node it resolves to)
        let f = |rel: &str, real: &str| Found {
            rel: rel.into(),
            is_device: true,
            real: PathBuf::from("/d").join(real),
        };
        let o = |group, rel: &str, held_by, held_as: &str| Overlap {
            group,
            rel: rel.into(),
            held_by,
            held_as: held_as.into(),
        };
        let usb0 = f("ttyUSB0", "ttyUSB0");
        let usb1 = f("ttyUSB1", "ttyUSB1");
        let by_id = f("serial/by-id/usb-x", "ttyUSB0");
        type Groups = Vec<Vec<Found>>;
        // (found per group, kept per group, overlaps)
        let cases: Vec<(Groups, Groups, Vec<Overlap>)> = vec![
            // Disjoint groups: all kept.
            (
                vec![vec![usb0.clone()], vec![usb1.clone()]],
                vec![vec![usb0.clone()], vec![usb1.clone()]],
                vec![],
            ),
            // Two globs matching one path: the first group keeps it.
            (
                vec![vec![usb0.clone()], vec![usb0.clone(), usb1.clone()]],
                vec![vec![usb0.clone()], vec![usb1.clone()]],
                vec![o(1, "ttyUSB0", 0, "ttyUSB0")],
            ),
            // A by-id symlink to a node another group holds: the same device.
            (
                vec![vec![usb0.clone()], vec![by_id.clone()]],
                vec![vec![usb0.clone()], vec![]],
                vec![o(1, "serial/by-id/usb-x", 0, "ttyUSB0")],
            ),
            // Both names in one group: one ID for the device, the first in order.
            (
                vec![vec![by_id.clone(), usb0.clone()]],
                vec![vec![by_id.clone()]],
                vec![o(0, "ttyUSB0", 0, "serial/by-id/usb-x")],
            ),
            // Two nodes (even with the same numbers) are two devices.
            (
                vec![vec![usb0.clone(), usb1.clone()]],
                vec![vec![usb0.clone(), usb1.clone()]],
                vec![],
            ),
        ];
        for (found, want_kept, want_overlaps) in cases {
            let label = format!("{found:?}");
            let (kept, overlaps) = claim(found);
            assert_eq!(kept, want_kept, "{label}");
            assert_eq!(overlaps, want_overlaps, "{label}");
        }
    }

    #[test]
    fn share_counts_make_ids() {
        let cases: &[(&str, u32, Option<&[&str]>)] = &[
            ("ttyUSB0", 1, Some(&["ttyUSB0"])),
            ("ttyUSB0", 3, Some(&["ttyUSB0-0", "ttyUSB0-1", "ttyUSB0-2"])),
            ("serial/by-id/usb-x", 1, Some(&["serial_by-id_usb-x"])),
            ("video 0", 1, None),
        ];
        for (rel, share, want) in cases {
            let want: Option<Vec<String>> = want.map(|w| w.iter().map(|s| s.to_string()).collect());
            assert_eq!(device_ids(rel, *share), want, "{rel} x{share}");
        }
        assert!(device_ids(&"x".repeat(63), 1).is_some());
        assert!(
            device_ids(&"x".repeat(62), 2).is_none(),
            "the suffix makes it 64"
        );
        assert_eq!(
            device_ids("a", 12).unwrap().last().map(String::as_str),
            Some("a-11")
        );
    }
}
