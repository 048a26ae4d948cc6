//! `tidelet exec`: run a command inside a running container, from the CLI process (root).
//!
//! The calling process may be multi-threaded (tokio), and `setns(CLONE_NEWNS)` refuses a
//! process whose threads share its filesystem state, so all namespace work happens in a
//! forked child: it joins the container's cgroups, `setns`es into
//! `/proc/<pid>/ns/{ipc,uts,net,pid,mnt}` (mnt last: after it the root is the container's),
//! then forks again so the new PID namespace applies, and the grandchild `chdir`s and
//! `execve`s with the container's env and the caller's stdio. Everything the children need
//! (namespace fds, C strings, candidate paths) is prepared before the first fork, so after
//! it they only make raw system calls (no allocation in a possibly multi-threaded fork).
//! Failures come back over a CLOEXEC pipe as `errno (4 bytes) + step name`.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;

use super::container::exec_candidates;
use super::Error;

/// Joined in this order: the mount namespace after the others (after it the root is the
/// container's), the user namespace of a `hostUsers: false` pod last (joining the others
/// needs the host's privileges over them).
const NAMESPACES: [(&str, libc::c_int); 6] = [
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
    ("user", libc::CLONE_NEWUSER),
];

/// Run `argv` in the container whose init is `pid` (as seen from the host), with `env` and
/// working directory `cwd`, after joining `cgroup_procs`. Returns the exit status (128 +
/// signal when killed by a signal).
/// Who the command runs as: the container's user, as `kubectl exec` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
}

pub fn exec_in_container(
    pid: i32,
    argv: &[String],
    env: &[String],
    cwd: &str,
    user: ExecUser,
    security: Option<&crate::security::ContainerSecurity>,
    cgroup_procs: &[PathBuf],
) -> Result<i32, Error> {
    let fail = |step: &str, message: String| Error::Exec {
        pid,
        step: step.to_string(),
        message,
    };
    let arg0 = argv
        .first()
        .ok_or_else(|| fail("exec", "empty command".into()))?;
    let mut ns_fds: Vec<(File, libc::c_int, &'static [u8])> = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = format!("/proc/{pid}/ns/{name}");
        // A pod in the host's user namespace: nothing to join (and setns would refuse).
        if name == "user" && same_file(&path, "/proc/self/ns/user") {
            continue;
        }
        let f = File::open(&path).map_err(|e| fail("open namespace", format!("{path}: {e}")))?;
        let step: &'static [u8] = match name {
            "ipc" => b"setns ipc",
            "uts" => b"setns uts",
            "net" => b"setns net",
            "pid" => b"setns pid",
            "user" => b"setns user",
            _ => b"setns mnt",
        };
        ns_fds.push((f, flag, step));
    }
    let cgroups = cgroup_procs
        .iter()
        .map(|p| {
            OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(|e| fail("join cgroup", format!("{}: {e}", p.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cs =
        |s: &str| CString::new(s).map_err(|_| fail("exec", format!("{s:?} contains a NUL byte")));
    let c_argv = argv.iter().map(|a| cs(a)).collect::<Result<Vec<_>, _>>()?;
    let c_env = env.iter().map(|a| cs(a)).collect::<Result<Vec<_>, _>>()?;
    let c_paths = exec_candidates(arg0, env)
        .iter()
        .map(|a| cs(a))
        .collect::<Result<Vec<_>, _>>()?;
    let c_cwd = cs(if cwd.is_empty() { "/" } else { cwd })?;
    let mut argv_p: Vec<*const libc::c_char> = c_argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = c_env.iter().map(|c| c.as_ptr()).collect();
    env_p.push(std::ptr::null());
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| fail("pipe", e.desc().into()))?;

    // SAFETY: after fork the child only makes async-signal-safe system calls on data
    // prepared above (see the module doc) and ends with _exit.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(fail("fork", Errno::last().desc().into()));
    }
    if child == 0 {
        let prog = Prog {
            user,
            security,
            cwd: &c_cwd,
            paths: &c_paths,
            argv: &argv_p,
            env: &env_p,
        };
        // SAFETY: see above; `in_child` never returns.
        unsafe { in_child(&err_w, &cgroups, &ns_fds, &prog) }
    }
    drop(err_w);
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child into a local int.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        if r >= 0 {
            break;
        }
        if Errno::last() != Errno::EINTR {
            return Err(fail("wait", Errno::last().desc().into()));
        }
    }
    let mut msg = Vec::new();
    let _ = File::from(err_r).take(256).read_to_end(&mut msg);
    if msg.len() >= 4 {
        let errno = i32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]);
        let step = String::from_utf8_lossy(&msg[4..]).into_owned();
        let step = if step == "exec" {
            format!("exec {arg0:?}")
        } else {
            step
        };
        return Err(fail(
            "exec",
            format!("{step}: {}", Errno::from_raw(errno).desc()),
        ));
    }
    Ok(status_code(status))
}

/// Exit status of a wait status: the code, or 128 + signal.
fn status_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        128
    }
}

/// Report `step` with the current errno on the error pipe and exit.
///
/// # Safety
/// Only async-signal-safe calls; ends the process.
unsafe fn die(err_w: &OwnedFd, step: &[u8], errno: i32) -> ! {
    let mut buf = [0u8; 64];
    buf[..4].copy_from_slice(&errno.to_ne_bytes());
    let n = step.len().min(60);
    buf[4..4 + n].copy_from_slice(&step[..n]);
    // SAFETY: write(2) from a stack buffer, then _exit(2).
    unsafe {
        libc::write(err_w.as_raw_fd(), buf.as_ptr().cast(), 4 + n);
        libc::_exit(127)
    }
}

/// What the grandchild executes, prepared before the fork (nothing allocates after it).
#[derive(Clone, Copy)]
struct Prog<'a> {
    user: ExecUser,
    security: Option<&'a crate::security::ContainerSecurity>,
    cwd: &'a CString,
    paths: &'a [CString],
    argv: &'a [*const libc::c_char],
    env: &'a [*const libc::c_char],
}

fn same_file(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The container's confinement, first part (runc's order, as `runtime::harden`): the
/// seccomp filter unless `no_new_privs` defers it, then the bounding set. No allocation.
///
/// # Safety
/// In the forked grandchild only; see `in_child`.
unsafe fn confine_before_user(err_w: &OwnedFd, sec: &crate::security::ContainerSecurity) {
    // SAFETY: raw prctl calls with integer arguments; `install` does not allocate.
    unsafe {
        if !sec.no_new_privs {
            if let Some(p) = &sec.seccomp {
                if let Err(e) = crate::security::seccomp::install(p) {
                    die(err_w, b"load seccomp filter", e as i32);
                }
            }
        }
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 {
            die(err_w, b"keep capabilities", Errno::last_raw());
        }
        for cap in 0..64u32 {
            if sec.caps.contains(cap) {
                continue;
            }
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0 {
                if Errno::last_raw() == libc::EINVAL {
                    break;
                }
                die(err_w, b"drop from the bounding set", Errno::last_raw());
            }
        }
    }
}

/// The second part, after the user is set: capabilities, ambient set, `no_new_privs` and
/// the deferred filter.
///
/// # Safety
/// In the forked grandchild only; see `in_child`.
unsafe fn confine_after_user(err_w: &OwnedFd, sec: &crate::security::ContainerSecurity) {
    // SAFETY: raw system calls with integer arguments and stack data; no allocation.
    unsafe {
        if let Err(e) = super::harden::capset_raw(sec.caps.0) {
            die(err_w, b"set capabilities", e as i32);
        }
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        if sec.no_new_privs {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                die(err_w, b"set no_new_privs", Errno::last_raw());
            }
            if let Some(p) = &sec.seccomp {
                if let Err(e) = crate::security::seccomp::install(p) {
                    die(err_w, b"load seccomp filter", e as i32);
                }
            }
        }
    }
}

/// The forked child: cgroups, setns, fork, and in the grandchild chdir + execve.
///
/// # Safety
/// Must run in a freshly forked child; uses only async-signal-safe calls.
unsafe fn in_child(
    err_w: &OwnedFd,
    cgroups: &[File],
    ns_fds: &[(File, libc::c_int, &'static [u8])],
    prog: &Prog<'_>,
) -> ! {
    let Prog {
        user,
        security,
        cwd,
        paths,
        argv,
        env,
    } = *prog;
    // SAFETY: the whole body makes raw system calls on descriptors and C strings prepared
    // before the fork, which outlive this function (it never returns); nothing allocates.
    unsafe {
        let mut digits = [0u8; 12];
        let mut n = libc::getpid() as u32;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for f in cgroups {
            if libc::write(f.as_raw_fd(), digits[i..].as_ptr().cast(), digits.len() - i) < 0 {
                die(err_w, b"join cgroup", Errno::last_raw());
            }
        }
        for (f, flag, step) in ns_fds {
            if libc::setns(f.as_raw_fd(), *flag) < 0 {
                die(err_w, step, Errno::last_raw());
            }
        }
        let grandchild = libc::fork();
        if grandchild < 0 {
            die(err_w, b"fork into the pid namespace", Errno::last_raw());
        }
        if grandchild == 0 {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if let Some(sec) = security {
                confine_before_user(err_w, sec);
            }
            let gid = user.gid as libc::gid_t;
            if libc::setgroups(1, &gid) < 0 {
                die(err_w, b"setgroups", Errno::last_raw());
            }
            if libc::setgid(gid) < 0 {
                die(err_w, b"setgid", Errno::last_raw());
            }
            if libc::setuid(user.uid as libc::uid_t) < 0 {
                die(err_w, b"setuid", Errno::last_raw());
            }
            if let Some(sec) = security {
                confine_after_user(err_w, sec);
            }
            if libc::chdir(cwd.as_ptr()) < 0 {
                die(err_w, b"chdir", Errno::last_raw());
            }
            let mut last = libc::ENOENT;
            for p in paths {
                libc::execve(p.as_ptr(), argv.as_ptr(), env.as_ptr());
                let e = Errno::last_raw();
                if e == libc::EACCES {
                    last = e;
                } else if e != libc::ENOENT && e != libc::ENOTDIR {
                    die(err_w, b"exec", e);
                }
            }
            die(err_w, b"exec", last);
        }
        let mut status = 0;
        while libc::waitpid(grandchild, &mut status, 0) < 0 {
            if Errno::last_raw() != libc::EINTR {
                libc::_exit(127);
            }
        }
        libc::_exit(status_code(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_process_is_an_error_naming_its_namespace_file() {
        let err = exec_in_container(
            i32::MAX,
            &["true".into()],
            &[],
            "/",
            ExecUser::default(),
            None,
            &[],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("/proc/{}/ns/ipc", i32::MAX)),
            "{err}"
        );
    }

    #[test]
    fn empty_command_is_refused() {
        let err = exec_in_container(1, &[], &[], "/", ExecUser::default(), None, &[]).unwrap_err();
        assert!(err.to_string().contains("empty command"), "{err}");
    }
}
