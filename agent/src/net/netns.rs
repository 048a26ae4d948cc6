//! Pinned network namespaces: a pod's network namespace bind-mounted on a file of tidelet's,
//! as `ip netns` and containerd pin theirs, so that it outlives the pod's processes until its
//! CNI DEL has run (the bridge plugin finds the addresses to unmasquerade inside it).

use std::io;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Pin the network namespace of process `pid` on `path` (created).
pub fn pin(pid: i32, path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if super::cni::is_netns(path) {
        // Pinned already (an ADD that is done again after a crash): a second mount would
        // stack on the first and the unpin would leave one behind.
        unpin(path)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let ns = format!("/proc/{pid}/ns/net");
    mount(
        Some(ns.as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| io::Error::other(format!("bind {ns} on {}: {}", path.display(), e.desc())))
}

/// Let go of a pinned namespace: unmount (lazily: a plugin may still be inside) and remove
/// the file. Nothing pinned or no file is fine.
pub fn unpin(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(io::Error::other(format!(
                "unmount {}: {}",
                path.display(),
                e.desc()
            )))
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
