//! The container's child applies its `ContainerSecurity` (decided by the agent, see
//! `security`): masked and read-only paths after `pivot_root`, then the user, the
//! capability sets, `no_new_privs` and the seccomp filter, in runc's order:
//!
//! 1. masked paths (`/dev/null` over a file, an empty read-only tmpfs over a directory) and
//!    read-only paths (bind-mounted read-only over themselves);
//! 2. without `no_new_privs`, the seccomp filter now, while the child still has
//!    `CAP_SYS_ADMIN` (loading a filter needs it or `no_new_privs`); the calls that follow
//!    (`prctl`, `setgroups`, `setuid`, `capset`, `execve`) must then pass it, as with runc;
//! 3. `PR_SET_KEEPCAPS`, the bounding set cut down, `setgroups`/`setgid`/`setuid`, then
//!    `capset` (effective = permitted = the container's set, inheritable empty) and the
//!    ambient set cleared. A root process keeps its set across `execve`; a non-root one
//!    keeps only the bounding set, as under containerd;
//! 4. with `no_new_privs`, the prctl and then the filter, as late as it can be.
//!
//! Errors are the StartError text `<step>: <errno text>`.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use super::sys::fail;
use crate::security::ContainerSecurity;

/// Step 1: mask and make read-only the paths `sec` names (after `pivot_root`: the paths are
/// the container's). A path the container does not have is skipped, as runc does.
pub(crate) fn mask_paths(sec: &ContainerSecurity) -> Result<(), String> {
    for p in &sec.masked_paths {
        let path = Path::new(p);
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let r = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
        } else {
            mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        r.map_err(|e| fail(format!("mask {p}"), e))?;
    }
    for p in &sec.readonly_paths {
        let path = Path::new(p);
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| fail(format!("bind {p} read-only"), e))?;
        // The flags the mount has must be kept on a remount (a locked flag cannot be dropped
        // inside a user namespace).
        let kept = nix::sys::statvfs::statvfs(path)
            .map(|s| mount_flags_of(s.flags()))
            .unwrap_or(MsFlags::empty());
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept,
            None::<&str>,
        )
        .map_err(|e| fail(format!("remount {p} read-only"), e))?;
    }
    Ok(())
}

fn mount_flags_of(f: nix::sys::statvfs::FsFlags) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let mut out = MsFlags::empty();
    for (s, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(s) {
            out |= m;
        }
    }
    out
}

/// Mark every descriptor above stderr close-on-exec, so nothing the supervisor (or a library
/// of it) left open reaches the container: an inherited descriptor of a host file or
/// directory is a way out of the rootfs (runc's CVE-2024-21626). The error pipe is
/// close-on-exec already and stays usable until `execve`.
pub(crate) fn cloexec_inherited_fds() -> Result<(), String> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with integer arguments; it only changes descriptor flags.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return Ok(());
    }
    // Before Linux 5.11: each open descriptor, from the container's /proc.
    let dir = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| super::sys::io_fail("list /proc/self/fd", e))?;
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number; an fd closed meanwhile (the directory's
        // own) gives EBADF, which is ignored.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Steps 2 to 4: user, capabilities, `no_new_privs`, seccomp. The last step before `execve`
/// but for `chdir`.
pub(crate) fn drop_privileges(
    sec: &ContainerSecurity,
    uid: u32,
    gid: u32,
    additional_gids: &[u32],
) -> Result<(), String> {
    if !sec.no_new_privs {
        if let Some(p) = &sec.seccomp {
            crate::security::seccomp::install(p).map_err(|e| fail("load seccomp filter", e))?;
        }
    }
    prctl(libc::PR_SET_KEEPCAPS, 1, "keep capabilities across setuid")?;
    for cap in 0..64u32 {
        if sec.caps.contains(cap) {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            match Errno::last() {
                // Past the kernel's last capability.
                Errno::EINVAL => break,
                e => {
                    return Err(fail(
                        format!("drop capability {cap} from the bounding set"),
                        e,
                    ))
                }
            }
        }
    }
    let gids: Vec<nix::unistd::Gid> = additional_gids
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids).map_err(|e| fail("setgroups", e))?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))
        .map_err(|e| fail(format!("setgid {gid}"), e))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))
        .map_err(|e| fail(format!("setuid {uid}"), e))?;
    capset(sec.caps.0)?;
    prctl(libc::PR_SET_KEEPCAPS, 0, "reset keep-capabilities")?;
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r < 0 && Errno::last() != Errno::EINVAL {
        return Err(fail("clear the ambient capabilities", Errno::last()));
    }
    if sec.no_new_privs {
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "set no_new_privs")?;
        if let Some(p) = &sec.seccomp {
            crate::security::seccomp::install(p).map_err(|e| fail("load seccomp filter", e))?;
        }
    }
    Ok(())
}

fn prctl(op: libc::c_int, arg: libc::c_ulong, step: &str) -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(op, arg, 0, 0, 0) } < 0 {
        return Err(fail(step, Errno::last()));
    }
    Ok(())
}

/// `capset(2)` with effective = permitted = `set`, inheritable empty (version 3: 64 bits).
fn capset(set: u64) -> Result<(), String> {
    capset_raw(set).map_err(|e| fail(format!("set capabilities to {set:016x}"), e))
}

/// `capset` without allocation (for `tidelet exec`'s forked child).
pub(crate) fn capset_raw(set: u64) -> Result<(), Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut hdr = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |w: u64| Data {
        effective: w as u32,
        permitted: w as u32,
        inheritable: 0,
    };
    let data = [word(set), word(set >> 32)];
    // SAFETY: the header and the two data words are the layout capset(2) reads for version 3;
    // both live until the call returns.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}
