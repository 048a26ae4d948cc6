//! Finding a group's nodes under the dev root, and naming them: each match of a group's
//! patterns is a node (`ttyUSB0`, `serial/by-id/usb-x`), a device when it is (or links to) a
//! character or block device; its device IDs are its path with `/` as `_`, and with a share
//! count N > 1, `<name>-0` .. `<name>-(N-1)`.

use std::path::Path;

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
            let is_device = is_device(&dir.join(&name));
            out.push(Found {
                rel: format!("{prefix}{name}"),
                is_device,
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
