//! `fsGroup` and `fsGroupChangePolicy`: volume ownership as kubelet's `SetVolumeOwnership`
//! gives it. Every file of a volume that supports ownership management (here `emptyDir`;
//! never `hostPath`) gets the group `fsGroup` and group read-write (read-only for a read-only
//! volume), directories also the setgid bit and group search, so files made later inherit
//! the group. `OnRootMismatch` skips the walk when the volume's root already has the group
//! and those bits; `Always` (the default) walks every time the volume is mounted.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const RW: u32 = 0o660;
const RO: u32 = 0o440;
const EXEC: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// The mode `mode` gets (pure): the group bits added, setgid and search for a directory.
pub fn owned_mode(mode: u32, is_dir: bool, readonly: bool) -> u32 {
    let mut mask = if readonly { RO } else { RW };
    if is_dir {
        mask |= SETGID | EXEC;
    }
    mode | mask
}

/// Whether `OnRootMismatch` may skip the walk: the root has `gid` and the bits already.
pub fn root_matches(root_gid: u32, root_mode: u32, gid: u32, readonly: bool) -> bool {
    root_gid == gid && owned_mode(root_mode & 0o7777, true, readonly) == root_mode & 0o7777
}

/// Give `dir` (a volume) to group `host_gid` (the fsGroup, mapped to the host's ids for a
/// pod in its own user namespace) as `policy` says.
pub fn apply(
    dir: &Path,
    host_gid: u32,
    policy: Option<&str>,
    readonly: bool,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if policy == Some("OnRootMismatch") && root_matches(meta.gid(), meta.mode(), host_gid, readonly)
    {
        return Ok(());
    }
    walk(dir, host_gid, readonly)
}

fn walk(p: &Path, gid: u32, readonly: bool) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(p)?;
    std::os::unix::fs::lchown(p, None, Some(gid))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = owned_mode(meta.mode() & 0o7777, meta.is_dir(), readonly);
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(p)? {
            walk(&e?.path(), gid, readonly)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_kubelet() {
        let cases = [
            (0o644, false, false, 0o664),
            (0o600, false, false, 0o660),
            (0o755, true, false, 0o2775),
            (0o700, true, true, 0o2750),
            (0o600, false, true, 0o640),
        ];
        for (mode, dir, ro, want) in cases {
            assert_eq!(
                owned_mode(mode, dir, ro),
                want,
                "{mode:o} dir={dir} ro={ro}"
            );
        }
        assert!(root_matches(2000, 0o2775, 2000, false));
        assert!(!root_matches(0, 0o2775, 2000, false));
        assert!(!root_matches(2000, 0o755, 2000, false));
    }

    #[test]
    fn a_volume_tree_is_given_to_the_group_unless_the_root_matches() {
        if !tidelet_testgate::privileged_here() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("v");
        std::fs::create_dir_all(v.join("sub")).unwrap();
        std::fs::write(v.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(v.join("sub/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", v.join("link")).unwrap();
        apply(&v, 2000, None, false).unwrap();
        for (p, mode) in [("", 0o2755 | 0o020), ("sub", 0o2775), ("sub/f", 0o660)] {
            let m = std::fs::metadata(v.join(p)).unwrap();
            assert_eq!(m.gid(), 2000, "{p}");
            assert_eq!(m.mode() & 0o7777, mode, "{p}");
        }
        // The link itself, not /etc/passwd.
        assert_eq!(std::fs::metadata("/etc/passwd").unwrap().gid(), 0);
        assert_eq!(
            std::fs::symlink_metadata(v.join("link")).unwrap().gid(),
            2000
        );
        // OnRootMismatch: the root matches, so a file changed since is left alone.
        std::os::unix::fs::lchown(v.join("sub/f"), None, Some(0)).unwrap();
        apply(&v, 2000, Some("OnRootMismatch"), false).unwrap();
        assert_eq!(std::fs::metadata(v.join("sub/f")).unwrap().gid(), 0);
        apply(&v, 2000, Some("Always"), false).unwrap();
        assert_eq!(std::fs::metadata(v.join("sub/f")).unwrap().gid(), 2000);
    }
}
