//! The runtime side of `hostUsers: false` (the ranges come from `security::userns`):
//!
//! - `make_pod_namespaces` (the supervisor): a short-lived child unshares a user namespace
//!   together with the pod's network, IPC and UTS namespaces (the user namespace is made
//!   first, so it owns the others); the supervisor writes its `uid_map`/`gid_map`, joins the
//!   network, IPC and UTS namespaces and keeps a descriptor of the user namespace. The
//!   supervisor itself stays in the host's user namespace: it writes cgroup files, records
//!   and logs as the host's root.
//! - `idmapped_lowers` (a container's child, in its own mount namespace): each image layer
//!   bind-mounted idmapped through the pod's user namespace (`open_tree`, `mount_setattr`,
//!   `move_mount`), so files the image owns as root are the pod's root inside, and the
//!   overlay is mounted over those;
//! - `join` (the same child, after its mounts and masks): `setns` into the pod's user
//!   namespace, where it then becomes its user and drops capabilities as usual.
//!
//! Errors are the StartError text `<step>: <errno text>`, with the kernel feature named
//! where one is missing.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::unistd::{fork, pipe2, ForkResult};

use super::sys::fail;
use crate::security::userns::IdRange;

/// Make the pod's user namespace (mapped as `range`) with the namespaces in `flags` owned by
/// it, join those, and return a descriptor of the user namespace.
pub(crate) fn make_pod_namespaces(range: &IdRange, flags: CloneFlags) -> Result<OwnedFd, String> {
    let pipe = |what: &str| pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(format!("{what} pipe"), e));
    let (made_r, made_w) = pipe("user namespace")?;
    let (done_r, done_w) = pipe("user namespace")?;
    // SAFETY: the supervisor is single-threaded; the child only makes system calls and
    // ends with _exit.
    let child = match unsafe { fork() } {
        Err(e) => return Err(fail("fork for the user namespace", e)),
        Ok(ForkResult::Child) => {
            drop((made_r, done_w));
            let r = nix::sched::unshare(CloneFlags::CLONE_NEWUSER | flags);
            let code: i32 = match r {
                Ok(()) => 0,
                Err(e) => e as i32,
            };
            let _ = nix::unistd::write(&made_w, &code.to_ne_bytes());
            let mut b = [0u8; 1];
            let _ = fs::File::from(done_r).read(&mut b);
            // SAFETY: ends the child without running the parent's handlers.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop((made_w, done_r));
    let result = (|| {
        let mut code = [0u8; 4];
        fs::File::from(made_r)
            .read_exact(&mut code)
            .map_err(|e| super::sys::io_fail("wait for the user namespace", e))?;
        let code = i32::from_ne_bytes(code);
        if code != 0 {
            let e = Errno::from_raw(code);
            let hint = if e == Errno::EINVAL || e == Errno::ENOSPC || e == Errno::EPERM {
                " (is CONFIG_USER_NS on and user.max_user_namespaces above 0?)"
            } else {
                ""
            };
            return Err(format!("{}{hint}", fail("unshare a user namespace", e)));
        }
        let pid = child.as_raw();
        for file in ["uid_map", "gid_map"] {
            let path = format!("/proc/{pid}/{file}");
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(range.map_line().as_bytes()))
                .map_err(|e| {
                    super::sys::io_fail(format!("write {file} {:?}", range.map_line().trim()), e)
                })?;
        }
        let open = |ns: &str| {
            fs::File::open(format!("/proc/{pid}/ns/{ns}"))
                .map(OwnedFd::from)
                .map_err(|e| super::sys::io_fail(format!("open the pod's {ns} namespace"), e))
        };
        for (ns, flag) in [
            ("net", CloneFlags::CLONE_NEWNET),
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
        ] {
            if flags.contains(flag) {
                nix::sched::setns(open(ns)?, flag)
                    .map_err(|e| fail(format!("join the pod's {ns} namespace"), e))?;
            }
        }
        open("user")
    })();
    drop(done_w);
    let _ = nix::sys::wait::waitpid(child, None);
    result
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("path {p:?} contains a NUL byte"))
}

/// Bind-mount each of `lowers` idmapped through the user namespace `userns` at
/// `<under>/<i>`, and return those paths (overlayfs `lowerdir=` order kept).
pub(crate) fn idmapped_lowers(
    lowers: &[PathBuf],
    under: &Path,
    userns: RawFd,
) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for (i, lower) in lowers.iter().enumerate() {
        let target = under.join(i.to_string());
        fs::create_dir_all(&target).map_err(|e| {
            super::sys::io_fail(format!("mkdir {:?}", target.display().to_string()), e)
        })?;
        let src = cpath(lower)?;
        let what = format!(
            "idmapped mount of image layer {:?}",
            lower.display().to_string()
        );
        // SAFETY: open_tree with a valid C path; the result is a new descriptor we own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                src.as_ptr(),
                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE,
            )
        };
        if fd < 0 {
            let e = Errno::last();
            let hint = if e == Errno::ENOSYS {
                ": this kernel has no open_tree (the new mount API, Linux 5.2+)"
            } else {
                ""
            };
            return Err(format!("{}{hint}", fail(format!("{what}: open_tree"), e)));
        }
        // SAFETY: open_tree returned a fresh descriptor that nothing else owns.
        let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns as u64,
        };
        let empty = c"";
        // SAFETY: mount_setattr on our detached tree with a valid attribute struct and size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r < 0 {
            let e = Errno::last();
            let hint = match e {
                Errno::ENOSYS => ": this kernel has no idmapped mounts (mount_setattr, Linux 5.12+)",
                Errno::EINVAL | Errno::EPERM => ": the file system holding the image layers cannot be idmapped (idmapped mounts need Linux 5.12+ and ext4, xfs or btrfs; tmpfs needs Linux 6.3+)",
                _ => "",
            };
            return Err(format!(
                "{}{hint}",
                fail(format!("{what}: mount_setattr"), e)
            ));
        }
        let dst = cpath(&target)?;
        // SAFETY: move_mount of our detached tree onto an existing directory.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                dst.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(fail(format!("{what}: move_mount"), Errno::last()));
        }
        out.push(target);
    }
    Ok(out)
}

/// What to say when overlayfs refuses idmapped layers.
pub const OVERLAY_IDMAP_HINT: &str = "overlayfs over idmapped layers needs Linux 5.19 or later";

/// Join the pod's user namespace (the last namespace a container's child enters).
pub(crate) fn join(userns: RawFd) -> Result<(), String> {
    // SAFETY: setns on a descriptor of a user namespace the supervisor holds open.
    if unsafe { libc::setns(userns, libc::CLONE_NEWUSER) } < 0 {
        return Err(fail("join the pod's user namespace", Errno::last()));
    }
    Ok(())
}
