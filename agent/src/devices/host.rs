//! The host's device nodes, for privileged containers (containerd's `HostDevices`). It lives
//! with the other device edits of a container; the runtime only creates what it is given.

use std::path::Path;

use crate::cgroups::devices::DevKind;
use crate::runtime::DeviceNode;

/// The device nodes a privileged container gets: every character and block device under
/// `dev_root` (the host's `/dev`), as containerd's `HostDevices` finds them: the
/// directories `pts`, `shm`, `fd`, `mqueue`, `.lxc`, `.lxd-mounts` and `.udev` and the node
/// `console` are skipped, and so is `ptmx` (the container's is its own devpts'), symbolic
/// links are not followed, and at most 4096 nodes are taken.
pub fn host_devices(dev_root: &Path) -> Vec<DeviceNode> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    const MAX: usize = 4096;
    let mut out = Vec::new();
    let mut todo = vec![dev_root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let skip = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
                if !skip.iter().any(|s| name == *s) {
                    todo.push(e.path());
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                DevKind::Char
            } else if ft.is_block_device() {
                DevKind::Block
            } else {
                continue;
            };
            if name == "console" || name == "ptmx" || out.len() >= MAX {
                continue;
            }
            let Ok(rel) = e.path().strip_prefix(dev_root).map(|r| r.to_path_buf()) else {
                continue;
            };
            let rdev = meta.rdev();
            out.push(DeviceNode {
                container_path: format!("/dev/{}", rel.display()),
                host_path: e.path(),
                kind,
                major: nix::sys::stat::major(rdev) as u32,
                minor: nix::sys::stat::minor(rdev) as u32,
                file_mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                permissions: "rwm".into(),
            });
        }
    }
    out.sort_by(|a, b| a.container_path.cmp(&b.container_path));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_devices_skip_what_containerd_skips() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["pts", "shm", "input", "mqueue"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("not-a-node"), "").unwrap();
        std::os::unix::fs::symlink("/dev/null", d.join("link")).unwrap();
        // Making nodes needs root; the pure filtering above is checked either way.
        let made = nix::sys::stat::mknod(
            &d.join("input/event0"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o640),
            nix::sys::stat::makedev(13, 64),
        )
        .is_ok();
        if made {
            for n in ["pts/0", "console", "ptmx"] {
                nix::sys::stat::mknod(
                    &d.join(n),
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    nix::sys::stat::makedev(136, 0),
                )
                .unwrap();
            }
        } else {
            // mknod refused: not root. Where privileged tests are demanded, a failure.
            let _ = tidelet_testgate::privileged_here();
        }
        let got: Vec<(String, u32, u32, u32)> = super::host_devices(d)
            .into_iter()
            .map(|n| (n.container_path, n.major, n.minor, n.file_mode))
            .collect();
        let want = if made {
            vec![("/dev/input/event0".to_string(), 13, 64, 0o640)]
        } else {
            vec![]
        };
        assert_eq!(got, want);
    }
}
