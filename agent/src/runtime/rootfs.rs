//! A container's root filesystem, set up by the child in its new mount namespace: make `/`
//! rprivate, overlayfs of the image layers at `rootfs`, `/proc`, read-only `/sys`, a private
//! `/dev` (device nodes, devpts, shm, mqueue, the standard links), the device nodes a
//! container was given (device plugins, CDI), the bind mounts (whose
//! destinations are resolved inside the rootfs and may not escape it), then (after the
//! `createContainer` hooks, see `hooks`) an optional read-only remount and `pivot_root` with
//! the old root detached.
//!
//! Errors are the StartError text `<step>: <errno text>`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::protocol::ContainerSpec;
use super::sys::{fail, io_fail};
use super::DeviceNode;
use crate::cgroups::devices::DevKind;

fn mnt(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    step: &str,
) -> Result<(), String> {
    mount(src, target, fstype, flags, data)
        .map_err(|e| fail(format!("{step} at {:?}", target.display().to_string()), e))
}

fn mkdir_p(p: &Path, mode: u32) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .map_err(|e| io_fail(format!("mkdir {:?}", p.display().to_string()), e))
}

/// Mount the container's filesystems at `spec.rootfs` (in the child's mount namespace).
pub(crate) fn setup_rootfs(
    spec: &ContainerSpec,
    userns: Option<std::os::fd::RawFd>,
) -> Result<(), String> {
    let root = &spec.rootfs;
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
        "make / rprivate",
    )?;
    for d in [&spec.upperdir, &spec.workdir, root] {
        mkdir_p(d, 0o755)?;
    }
    // In the pod's own user namespace: the layers idmapped, and the writable layer owned by
    // the pod's root (the overlay's root directory takes its owner from it).
    let lowerdirs = match (userns, &spec.userns) {
        (Some(fd), Some(range)) => {
            let id = Some(range.host_start);
            std::os::unix::fs::chown(&spec.upperdir, id, id).map_err(|e| {
                io_fail(
                    format!(
                        "chown {:?} to {}",
                        spec.upperdir.display().to_string(),
                        range.host_start
                    ),
                    e,
                )
            })?;
            let under = root.parent().unwrap_or(root).join("idmapped");
            super::userns::idmapped_lowers(&spec.lowerdirs, &under, fd)?
        }
        (None, Some(_)) => {
            return Err("the pod has no user namespace to join (its supervisor made none)".into())
        }
        _ => spec.lowerdirs.clone(),
    };
    let data = overlay_options(&lowerdirs, &spec.upperdir, &spec.workdir)?;
    // `volatile` (Linux 5.10+): the overlay never syncs its upper file system. Each attempt's
    // writable layer is thrown away with the attempt (a new attempt, a restarted agent's new
    // sandbox and a rebooted node all start from a new one), so nothing is lost; without it
    // the last process to leave the container's mount namespace waits in the unmount for the
    // host's writeback of the whole upper file system, which held an evicted pod's last
    // process for hundreds of milliseconds on a busy disk. Podman does the same for `--rm`
    // containers. Older kernels (and upper file systems that cannot) refuse the option:
    // mounted again without it.
    let overlay = |data: &str| {
        mount(
            Some("overlay"),
            root,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        )
    };
    overlay(&format!("{data},volatile"))
        .or_else(|e| match e {
            nix::errno::Errno::EINVAL => overlay(&data),
            e => Err(e),
        })
        .map_err(|e| {
            let msg = fail(
                format!("mount overlay at {:?}", root.display().to_string()),
                e,
            );
            match overlay_hint(e) {
                Some(_) if e == nix::errno::Errno::EINVAL && userns.is_some() => {
                    format!("{msg}: {}", super::userns::OVERLAY_IDMAP_HINT)
                }
                Some(h) => format!("{msg}: {h}"),
                None => msg,
            }
        })?;
    let nsd = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mkdir_p(&root.join("proc"), 0o555)?;
    mnt(
        Some("proc"),
        &root.join("proc"),
        Some("proc"),
        nsd,
        None,
        "mount proc",
    )?;
    mkdir_p(&root.join("sys"), 0o555)?;
    mnt(
        Some("sysfs"),
        &root.join("sys"),
        Some("sysfs"),
        nsd,
        None,
        "mount sysfs",
    )?;
    // Writable only for a privileged container, as containerd mounts it. Read-only as a
    // property of this mount, not of the file system: all of a pod's containers share one
    // sysfs superblock (one per network namespace), and a read-only superblock made by the
    // first container would make a privileged sibling's /sys read-only too.
    if !spec.security.privileged {
        mnt(
            None,
            &root.join("sys"),
            None,
            nsd | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
            "remount sysfs read-only",
        )?;
    }
    setup_dev(&root.join("dev"))?;
    for d in &spec.devices {
        create_device_node(root, d)?;
    }
    for m in &spec.mounts {
        bind_mount(root, &m.source, &m.destination, m.readonly)?;
    }
    Ok(())
}

/// The last step before `pivot_root`, after the `createContainer` hooks (which may still
/// write into the rootfs, as with runc): the read-only remount, if asked for.
pub(crate) fn finish_rootfs(spec: &ContainerSpec) -> Result<(), String> {
    if spec.readonly_rootfs {
        let f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mnt(
            None,
            &spec.rootfs,
            None,
            f,
            None,
            "remount rootfs read-only",
        )?;
    }
    Ok(())
}

/// What to tell the user when overlayfs refuses a mount for a reason of the kernel's, not
/// of the paths.
pub fn overlay_hint(e: nix::errno::Errno) -> Option<&'static str> {
    use nix::errno::Errno;
    match e {
        // No such filesystem type: not built in, and the module could not be loaded.
        Errno::ENODEV => Some(OVERLAY_MISSING),
        // Upper directory on a filesystem overlayfs cannot use (tmpfs without xattrs, NFS...).
        Errno::EINVAL => Some("is the state directory (rootDir) on a filesystem overlayfs can use as upper layer (ext4, xfs, btrfs, tmpfs; not overlayfs, NFS or FAT)?"),
        _ => None,
    }
}

/// The kernel has no overlay filesystem.
pub const OVERLAY_MISSING: &str = "this kernel has no overlay filesystem: load the module (`modprobe overlay`) or build the kernel with CONFIG_OVERLAY_FS=y (or =m)";

/// Whether `/proc/filesystems` (its text) lists overlay.
pub fn overlay_listed(proc_filesystems: &str) -> bool {
    proc_filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
}

/// `lowerdir=…,upperdir=…,workdir=…`, refusing paths overlayfs would misparse.
pub fn overlay_options(lowerdirs: &[PathBuf], upper: &Path, work: &Path) -> Result<String, String> {
    if lowerdirs.is_empty() {
        return Err("mount overlay: no lower directories".into());
    }
    let check = |p: &Path| {
        let s = p
            .to_str()
            .ok_or_else(|| format!("mount overlay: path {p:?} is not UTF-8"))?;
        if s.contains([',', ':']) || s.is_empty() {
            return Err(format!(
                "mount overlay: path {s:?} is empty or contains ',' or ':'"
            ));
        }
        Ok(s.to_string())
    };
    let lower = lowerdirs
        .iter()
        .map(|p| check(p))
        .collect::<Result<Vec<_>, _>>()?
        .join(":");
    Ok(format!(
        "lowerdir={lower},upperdir={},workdir={}",
        check(upper)?,
        check(work)?
    ))
}

fn setup_dev(dev: &Path) -> Result<(), String> {
    mkdir_p(dev, 0o755)?;
    let f = MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME;
    mnt(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        f,
        Some("mode=755,size=65536k"),
        "mount /dev tmpfs",
    )?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|e| fail(format!("mknod /dev/{name}"), e))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666))
            .map_err(|e| io_fail(format!("chmod /dev/{name}"), e))?;
    }
    let nsx = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mkdir_p(&dev.join("pts"), 0o755)?;
    mnt(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        nsx,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        "mount devpts",
    )?;
    mkdir_p(&dev.join("shm"), 0o1777)?;
    mnt(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        nsx | MsFlags::MS_NODEV,
        Some("mode=1777,size=65536k"),
        "mount /dev/shm",
    )?;
    mkdir_p(&dev.join("mqueue"), 0o755)?;
    mnt(
        Some("mqueue"),
        &dev.join("mqueue"),
        Some("mqueue"),
        nsx | MsFlags::MS_NODEV,
        None,
        "mount mqueue",
    )?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(|e| io_fail(format!("symlink /dev/{name}"), e))?;
    }
    Ok(())
}

fn bind_mount(root: &Path, source: &Path, dest: &str, readonly: bool) -> Result<(), String> {
    let target = resolve_in_root(root, dest)?;
    let meta = fs::metadata(source).map_err(|e| {
        io_fail(
            format!("bind mount source {:?}", source.display().to_string()),
            e,
        )
    })?;
    if meta.is_dir() {
        mkdir_p(&target, 0o755)?;
    } else if fs::symlink_metadata(&target).is_err() {
        if let Some(parent) = target.parent() {
            mkdir_p(parent, 0o755)?;
        }
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&target)
            .map_err(|e| io_fail(format!("create mount point {dest:?}"), e))?;
    }
    let step = format!("bind mount {:?} on {dest:?}", source.display().to_string());
    mount(
        Some(source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| fail(&step, e))?;
    if readonly {
        let f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, &target, None::<&str>, f, None::<&str>)
            .map_err(|e| fail(format!("{step} (read-only)"), e))?;
    }
    Ok(())
}

/// Create device node `d` in the container at `root`: its path resolved inside the rootfs
/// (never out of it), parent directories made, whatever was there (e.g. the standard
/// `/dev/null`) replaced, then `mknod` with its type and numbers, `chmod` to its mode (not
/// subject to the umask) and `chown` to its owner.
pub fn create_device_node(root: &Path, d: &DeviceNode) -> Result<(), String> {
    let what = format!("device node {:?}", d.container_path);
    let target = resolve_in_root_as(root, &d.container_path, "device node")?;
    if target == root {
        return Err(format!("{what}: is the container's root"));
    }
    let kind = match d.kind {
        DevKind::Char => SFlag::S_IFCHR,
        DevKind::Block => SFlag::S_IFBLK,
        DevKind::All => return Err(format!("{what}: type \"all\" is not a node type")),
    };
    if let Some(parent) = target.parent() {
        mkdir_p(parent, 0o755)?;
    }
    match fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => return Err(format!("{what}: a directory is in the way")),
        Ok(_) => fs::remove_file(&target).map_err(|e| io_fail(format!("{what}: remove"), e))?,
        Err(_) => {}
    }
    let mode = d.file_mode & 0o7777;
    mknod(
        &target,
        kind,
        Mode::from_bits_truncate(mode),
        makedev(u64::from(d.major), u64::from(d.minor)),
    )
    .map_err(|e| fail(format!("{what}: mknod {}:{}", d.major, d.minor), e))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(mode))
        .map_err(|e| io_fail(format!("{what}: chmod {mode:o}"), e))?;
    nix::unistd::chown(
        &target,
        Some(nix::unistd::Uid::from_raw(d.uid)),
        Some(nix::unistd::Gid::from_raw(d.gid)),
    )
    .map_err(|e| fail(format!("{what}: chown {}:{}", d.uid, d.gid), e))
}

/// The host path of `dest` inside `root`, following symlinks as the container would see
/// them (absolute targets are relative to `root`). Refuses a `..` in `dest` and any symlink
/// that would lead out of `root`. Missing components are fine (they will be created).
pub fn resolve_in_root(root: &Path, dest: &str) -> Result<PathBuf, String> {
    resolve_in_root_as(root, dest, "mount destination")
}

/// `resolve_in_root`, with `what` naming `dest` in errors.
fn resolve_in_root_as(root: &Path, dest: &str, what: &str) -> Result<PathBuf, String> {
    let refuse = |why: &str| Err(format!("{what} {dest:?}: {why}"));
    if !dest.starts_with('/') {
        return refuse("not an absolute path");
    }
    let mut todo: Vec<std::ffi::OsString> = Vec::new();
    for c in Path::new(dest).components() {
        match c {
            Component::Normal(n) => todo.push(n.to_os_string()),
            Component::ParentDir => return refuse("contains \"..\""),
            _ => {}
        }
    }
    todo.reverse();
    let mut done: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        let here: PathBuf = root.join(done.iter().collect::<PathBuf>()).join(&name);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return refuse("too many levels of symbolic links");
                }
                let target = fs::read_link(&here).map_err(|e| {
                    io_fail(format!("readlink {:?}", here.display().to_string()), e)
                })?;
                if target.is_absolute() {
                    done.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push(OsStr::from_bytes(b"..").to_os_string()),
                        _ => {}
                    }
                }
            }
            _ if name == ".." => {
                if done.pop().is_none() {
                    return refuse("a symbolic link in it leads out of the rootfs");
                }
            }
            _ => done.push(name),
        }
    }
    Ok(root.join(done.iter().collect::<PathBuf>()))
}

/// `pivot_root` into `root` (which must be a mount point) and detach the old root.
pub(crate) fn pivot(root: &Path) -> Result<(), String> {
    nix::unistd::chdir(root).map_err(|e| fail("chdir to rootfs", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| fail("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| fail("detach old root", e))?;
    nix::unistd::chdir("/").map_err(|e| fail("chdir /", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_errors_get_a_hint_naming_the_cause() {
        use nix::errno::Errno;
        let cases = [
            (Errno::ENODEV, Some("CONFIG_OVERLAY_FS")),
            (Errno::EINVAL, Some("rootDir")),
            (Errno::EPERM, None),
            (Errno::ENOENT, None),
        ];
        for (e, want) in cases {
            let got = overlay_hint(e);
            match want {
                Some(w) => assert!(got.is_some_and(|h| h.contains(w)), "{e}: {got:?}"),
                None => assert_eq!(got, None, "{e}"),
            }
        }
    }

    #[test]
    fn proc_filesystems_lists_overlay() {
        let cases = [
            ("nodev\tsysfs\nnodev\toverlay\n", true),
            ("nodev\tsysfs\n\text4\n", false),
            ("nodev\toverlayfs_x\n", false),
            ("", false),
        ];
        for (text, want) in cases {
            assert_eq!(overlay_listed(text), want, "{text:?}");
        }
    }

    #[test]
    fn overlay_options_join_lowers_and_refuse_bad_paths() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            overlay_options(&[p("/l/a"), p("/l/b")], &p("/u"), &p("/w")).unwrap(),
            "lowerdir=/l/a:/l/b,upperdir=/u,workdir=/w"
        );
        assert!(overlay_options(&[], &p("/u"), &p("/w"))
            .unwrap_err()
            .contains("no lower"));
        assert!(overlay_options(&[p("/l:a")], &p("/u"), &p("/w"))
            .unwrap_err()
            .contains("\"/l:a\""));
        assert!(overlay_options(&[p("/l")], &p("/u,x"), &p("/w"))
            .unwrap_err()
            .contains("\"/u,x\""));
    }

    #[test]
    fn mount_destinations_resolve_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc/real")).unwrap();
        fs::create_dir_all(root.join("run")).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var-run")).unwrap();
        std::os::unix::fs::symlink("real", root.join("etc/rel")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("etc/up")).unwrap();
        std::os::unix::fs::symlink("/etc/loop", root.join("etc/loop")).unwrap();
        std::os::unix::fs::symlink("../run", root.join("etc/run")).unwrap();
        let ok: &[(&str, &str)] = &[
            ("/etc/hostname", "etc/hostname"),
            ("/var-run/x", "run/x"),
            ("/etc/rel/hosts", "etc/real/hosts"),
            ("/etc/run/a", "run/a"),
            ("/new/dir/file", "new/dir/file"),
            ("//etc/./hostname", "etc/hostname"),
        ];
        for (dest, want) in ok {
            assert_eq!(
                resolve_in_root(root, dest).unwrap(),
                root.join(want),
                "{dest}"
            );
        }
        let bad: &[(&str, &str)] = &[
            ("/etc/../../x", "contains \"..\""),
            ("etc/hosts", "not an absolute path"),
            ("/etc/up/x", "leads out of the rootfs"),
            ("/etc/loop", "too many levels"),
        ];
        for (dest, want) in bad {
            let err = resolve_in_root(root, dest).unwrap_err();
            assert!(err.contains(want) && err.contains(dest), "{dest}: {err}");
        }
    }
}

#[cfg(test)]
#[path = "rootfs_devices_tests.rs"]
mod devices_tests;
