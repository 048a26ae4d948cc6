//! Starting one container: `clone(2)` into new mount (and PID) namespaces, then, in the
//! child, the rootfs (overlayfs, `/proc`, read-only `/sys`, a private `/dev`, bind mounts),
//! `pivot_root`, the user, the working directory and `execve`.
//!
//! The parent (the pod supervisor) puts the child into its cgroups and sets its
//! `oom_score_adj` before releasing it through a sync pipe, so not one instruction of the
//! container runs outside its limits. Every failure in the child is written to a CLOEXEC
//! error pipe as `<step>: <errno text>` and the child exits; EOF on that pipe without a
//! message therefore means `execve` succeeded.
//!
//! The clone is a raw `clone(2)` without a new stack (fork semantics). The supervisor is
//! single-threaded, so the child may allocate and use the standard library freely: no other
//! thread can hold the allocator's lock at the instant of the clone.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{pipe2, Pid};

use super::protocol::ContainerSpec;
use super::sys;

/// Default `PATH` when the container's env has none (as runc/containerd use).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Longest error message read back from a child.
const MAX_CHILD_ERROR: usize = 4096;

/// A container that was started: its init pid (in the supervisor's PID namespace) and the
/// read ends of its stdout/stderr pipes.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Start `spec`'s process. `new_pid_ns`: give it its own PID namespace. On failure the
/// message is the StartError text (`<step>: <reason>`), and no child is left behind.
pub fn spawn(spec: &ContainerSpec, new_pid_ns: bool) -> Result<Spawned, String> {
    let pipe =
        |what: &str| pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("{what} pipe: {}", e.desc()));
    let (out_r, out_w) = pipe("stdout")?;
    let (err_r, err_w) = pipe("stderr")?;
    let (sync_r, sync_w) = pipe("sync")?;
    let (errp_r, errp_w) = pipe("error")?;

    let mut flags = libc::CLONE_NEWNS;
    if new_pid_ns {
        flags |= libc::CLONE_NEWPID;
    }
    // SAFETY: a raw clone without a new stack behaves as fork(2); the supervisor is
    // single-threaded (see the module doc), so the child has a consistent copy of memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if ret < 0 {
        return Err(format!("clone: {}", Errno::last().desc()));
    }
    if ret == 0 {
        drop((out_r, err_r, sync_w, errp_r));
        let msg = match child(spec, &out_w, &err_w, sync_r) {
            Err(m) => m,
            Ok(never) => match never {},
        };
        let mut f = fs::File::from(errp_w);
        let _ = f.write_all(msg.as_bytes());
        // SAFETY: _exit ends the child without running the parent's atexit handlers or
        // flushing its copied stdio buffers.
        unsafe { libc::_exit(127) };
    }
    let pid = ret as i32;
    drop((out_w, err_w, sync_r, errp_w));
    let released = (|| {
        for procs in &spec.cgroup_procs {
            sys::write_file(procs, pid.to_string().as_bytes())
                .map_err(|e| format!("join cgroup {}: {e}", procs.display()))?;
        }
        sys::set_oom_score_adj(pid, spec.oom_score_adj)
            .map_err(|e| format!("oom_score_adj: {e}"))?;
        fs::File::from(sync_w)
            .write_all(b"g")
            .map_err(|e| format!("release child: {e}"))
    })();
    if let Err(msg) = released {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        return Err(msg);
    }
    let mut msg = Vec::new();
    let _ = fs::File::from(errp_r)
        .take(MAX_CHILD_ERROR as u64)
        .read_to_end(&mut msg);
    if !msg.is_empty() {
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        return Err(String::from_utf8_lossy(&msg).into_owned());
    }
    Ok(Spawned {
        pid,
        stdout: out_r,
        stderr: err_r,
    })
}

fn fail(step: impl std::fmt::Display, e: Errno) -> String {
    format!("{step}: {}", e.desc())
}

fn io_fail(step: impl std::fmt::Display, e: io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => fail(step, Errno::from_raw(n)),
        None => format!("{step}: {e}"),
    }
}

/// The child side: everything from the sync pipe to `execve`. Returns only on failure.
fn child(
    spec: &ContainerSpec,
    out_w: &OwnedFd,
    err_w: &OwnedFd,
    sync_r: OwnedFd,
) -> Result<std::convert::Infallible, String> {
    sys::reset_signals();
    let null = fs::File::open("/dev/null").map_err(|e| io_fail("open /dev/null", e))?;
    for (from, to) in [
        (null.as_raw_fd(), 0),
        (out_w.as_raw_fd(), 1),
        (err_w.as_raw_fd(), 2),
    ] {
        // SAFETY: dup2 on descriptors this process owns; the targets are the standard fds.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(fail("set up stdio", Errno::last()));
        }
    }
    let mut go = [0u8; 1];
    match fs::File::from(sync_r).read(&mut go) {
        Ok(1) => {}
        _ => return Err("wait for parent: released without go".into()),
    }
    setup_rootfs(spec)?;
    pivot(&spec.rootfs)?;
    let gids: Vec<nix::unistd::Gid> = spec
        .additional_gids
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids).map_err(|e| fail("setgroups", e))?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(spec.gid))
        .map_err(|e| fail(format!("setgid {}", spec.gid), e))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(spec.uid))
        .map_err(|e| fail(format!("setuid {}", spec.uid), e))?;
    let cwd = if spec.cwd.is_empty() {
        "/"
    } else {
        spec.cwd.as_str()
    };
    nix::unistd::chdir(cwd).map_err(|e| fail(format!("chdir {cwd:?}"), e))?;
    exec(&spec.argv, &spec.env)
}

fn cstr(s: &[u8], what: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| {
        format!(
            "{what} {:?}: contains a NUL byte",
            String::from_utf8_lossy(s)
        )
    })
}

/// `execve` `argv` with `env`, looking `argv[0]` up in the env's `PATH` when it has no `/`.
pub fn exec(argv: &[String], env: &[String]) -> Result<std::convert::Infallible, String> {
    let Some(arg0) = argv.first() else {
        return Err("exec: empty command".into());
    };
    let c_argv = argv
        .iter()
        .map(|a| cstr(a.as_bytes(), "argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let c_env = env
        .iter()
        .map(|a| cstr(a.as_bytes(), "env"))
        .collect::<Result<Vec<_>, _>>()?;
    let candidates = exec_candidates(arg0, env);
    let mut last = Errno::ENOENT;
    for cand in candidates {
        let path = cstr(cand.as_bytes(), "path")?;
        match nix::unistd::execve(&path, &c_argv, &c_env) {
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
            Err(Errno::EACCES) => last = Errno::EACCES,
            Err(e) => return Err(fail(format!("exec {arg0:?}"), e)),
            Ok(never) => match never {},
        }
    }
    Err(fail(format!("exec {arg0:?}"), last))
}

/// The paths `execve` is tried with, in order (pure).
pub fn exec_candidates(arg0: &str, env: &[String]) -> Vec<String> {
    if arg0.contains('/') {
        return vec![arg0.to_string()];
    }
    if arg0.is_empty() {
        return vec![];
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|d| if d.is_empty() { "." } else { d })
        .map(|d| format!("{}/{arg0}", d.trim_end_matches('/')))
        .collect()
}

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
fn setup_rootfs(spec: &ContainerSpec) -> Result<(), String> {
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
    let data = overlay_options(&spec.lowerdirs, &spec.upperdir, &spec.workdir)?;
    mnt(
        Some("overlay"),
        root,
        Some("overlay"),
        MsFlags::empty(),
        Some(&data),
        "mount overlay",
    )?;
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
        nsd | MsFlags::MS_RDONLY,
        None,
        "mount sysfs",
    )?;
    setup_dev(&root.join("dev"))?;
    for m in &spec.mounts {
        bind_mount(root, &m.source, &m.destination, m.readonly)?;
    }
    if spec.readonly_rootfs {
        let f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mnt(None, root, None, f, None, "remount rootfs read-only")?;
    }
    Ok(())
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

/// The host path of `dest` inside `root`, following symlinks as the container would see
/// them (absolute targets are relative to `root`). Refuses a `..` in `dest` and any symlink
/// that would lead out of `root`. Missing components are fine (they will be created).
pub fn resolve_in_root(root: &Path, dest: &str) -> Result<PathBuf, String> {
    let refuse = |why: &str| Err(format!("mount destination {dest:?}: {why}"));
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
fn pivot(root: &Path) -> Result<(), String> {
    nix::unistd::chdir(root).map_err(|e| fail("chdir to rootfs", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| fail("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| fail("detach old root", e))?;
    nix::unistd::chdir("/").map_err(|e| fail("chdir /", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_candidates_follow_path_rules() {
        let env = |p: &str| vec!["A=1".to_string(), format!("PATH={p}")];
        let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
            ("/bin/sh", env("/x"), vec!["/bin/sh"]),
            ("./run", env("/x"), vec!["./run"]),
            ("sh", env("/x:/y/"), vec!["/x/sh", "/y/sh"]),
            ("sh", env("/x::/z"), vec!["/x/sh", "./sh", "/z/sh"]),
            (
                "sh",
                vec![],
                DEFAULT_PATH
                    .split(':')
                    .map(|d| Box::leak(format!("{d}/sh").into_boxed_str()) as &str)
                    .collect(),
            ),
            ("", env("/x"), vec![]),
        ];
        for (arg0, env, want) in cases {
            assert_eq!(exec_candidates(arg0, &env), want, "{arg0}");
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
