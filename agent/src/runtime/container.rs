//! Starting one container: `clone(2)` into new mount (and PID) namespaces, then, in the
//! child, the rootfs (see `rootfs`), `pivot_root`, the user, the working directory and
//! `execve`.
//!
//! The parent (the pod supervisor) puts the child into its cgroups and sets its
//! `oom_score_adj` before releasing it through a sync pipe, so not one instruction of the
//! container runs outside its limits. Every failure in the child is written to a CLOEXEC
//! error pipe as `<step>: <errno text>` and the child exits; EOF on that pipe without a
//! message therefore means `execve` succeeded.
//!
//! The supervisor waits (blocking its loop) from the clone until the child has exec'd or
//! failed: a few milliseconds of mounts, and it makes the Start reply carry the outcome.
//!
//! With OCI hooks (from CDI specs; see `hooks`) the order is runc's: the child mounts the
//! rootfs and says so on a ready pipe; the supervisor runs the `prestart` and `createRuntime`
//! hooks, then releases the child, which runs the `createContainer` hooks in its own mount
//! namespace, finishes the rootfs, pivots, runs the `startContainer` hooks and execs. Without
//! such hooks the child pivots while the parent sets up its cgroups, as before.
//!
//! The clone is a raw `clone(2)` without a new stack (fork semantics). The supervisor is
//! single-threaded, so the child may allocate and use the standard library freely: no other
//! thread can hold the allocator's lock at the instant of the clone.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{pipe2, Pid};

use super::hooks::{self, Stage};
use super::protocol::ContainerSpec;
use super::sys::{fail, io_fail};
use super::{harden, rootfs, sys};

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

/// Start `spec`'s process. `new_pid_ns`: give it its own PID namespace. `subject`: the
/// container as its hooks see it. On failure the message is the StartError text
/// (`<step>: <reason>`), and no child is left behind.
pub(crate) fn spawn(
    spec: &ContainerSpec,
    new_pid_ns: bool,
    subject: &hooks::Subject,
    userns: Option<std::os::fd::RawFd>,
) -> Result<Spawned, String> {
    let pipe =
        |what: &str| pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("{what} pipe: {}", e.desc()));
    let (out_r, out_w) = pipe("stdout")?;
    let (err_r, err_w) = pipe("stderr")?;
    let (sync_r, sync_w) = pipe("sync")?;
    let (errp_r, errp_w) = pipe("error")?;
    let runtime_hooks = spec.hooks.iter().any(|h| h.stage.before_pivot_in_runtime());
    let (ready_r, ready_w) = if runtime_hooks {
        let (r, w) = pipe("ready")?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };

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
        drop((out_r, err_r, sync_w, errp_r, ready_r));
        let msg = match child(spec, subject, &out_w, &err_w, sync_r, ready_w, userns) {
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
    drop((out_w, err_w, sync_r, errp_w, ready_w));
    let released = (|| {
        for procs in &spec.cgroup_procs {
            sys::write_file(procs, pid.to_string().as_bytes())
                .map_err(|e| format!("join cgroup {}: {e}", procs.display()))?;
        }
        sys::set_oom_score_adj(pid, spec.oom_score_adj)
            .map_err(|e| format!("oom_score_adj: {e}"))?;
        if let Some(ready) = ready_r {
            // The child's rootfs is mounted (or it failed: EOF, and its error follows).
            let mut b = [0u8; 1];
            match fs::File::from(ready).read(&mut b) {
                Ok(1) => {}
                _ => return Err("wait for the container's rootfs: the child ended".to_string()),
            }
            for stage in [Stage::Prestart, Stage::CreateRuntime] {
                let state = subject.state(stage, Some(pid));
                hooks::run_stage(&spec.hooks, stage, &state, &subject.bundle)?;
            }
        }
        // `g` and the child's pid as we see it (for the state its own hooks get); one small
        // write to a pipe, so all of it or nothing.
        nix::unistd::write(&sync_w, format!("g{pid}").as_bytes())
            .map(drop)
            .map_err(|e| format!("release child: {}", e.desc()))
    })();
    if let Err(msg) = released {
        // The sync pipe stays open until the child is gone: closed first, the child would
        // wake to "released without go" and race that message into the error pipe.
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        drop(sync_w);
        // The child may have failed on its own first (its rootfs): that is the real cause.
        let mut child_msg = Vec::new();
        let _ = fs::File::from(errp_r)
            .take(MAX_CHILD_ERROR as u64)
            .read_to_end(&mut child_msg);
        if !child_msg.is_empty() {
            return Err(String::from_utf8_lossy(&child_msg).into_owned());
        }
        return Err(msg);
    }
    drop(sync_w);
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

/// Wait for the parent's `g<pid>`; returns the pid.
fn wait_go(sync_r: OwnedFd) -> Result<i32, String> {
    let mut go = [0u8; 32];
    let n = fs::File::from(sync_r)
        .read(&mut go)
        .map_err(|e| io_fail("wait for parent", e))?;
    match go[..n].split_first() {
        Some((b'g', pid)) => Ok(std::str::from_utf8(pid)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)),
        _ => Err("wait for parent: released without go".into()),
    }
}

/// The child side: everything from the sync pipe to `execve`. Returns only on failure.
fn child(
    spec: &ContainerSpec,
    subject: &hooks::Subject,
    out_w: &OwnedFd,
    err_w: &OwnedFd,
    sync_r: OwnedFd,
    ready_w: Option<OwnedFd>,
    userns: Option<std::os::fd::RawFd>,
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
    // The rootfs is set up while the parent moves this process into its cgroups: on cgroup
    // v1 each attach waits for an RCU grace period (milliseconds), so doing the two at once
    // takes that off every container start. Nothing of the container's runs before `go`.
    rootfs::setup_rootfs(spec, userns)?;
    let pre_pivot_hooks = spec
        .hooks
        .iter()
        .any(|h| h.stage.before_pivot_in_runtime() || h.stage == Stage::CreateContainer);
    let pid = if pre_pivot_hooks {
        if let Some(w) = ready_w {
            fs::File::from(w)
                .write_all(b"m")
                .map_err(|e| io_fail("tell the parent the rootfs is ready", e))?;
        }
        let pid = wait_go(sync_r)?;
        let state = subject.state(Stage::CreateContainer, Some(pid));
        hooks::run_stage(&spec.hooks, Stage::CreateContainer, &state, &subject.bundle)?;
        rootfs::finish_rootfs(spec)?;
        rootfs::pivot(&spec.rootfs)?;
        pid
    } else {
        rootfs::finish_rootfs(spec)?;
        rootfs::pivot(&spec.rootfs)?;
        wait_go(sync_r)?
    };
    // Paths inside the container now (its rootfs is `/`); the bundle is the host's path,
    // for the state only.
    let state = subject.state(Stage::StartContainer, Some(pid));
    hooks::run_stage(
        &spec.hooks,
        Stage::StartContainer,
        &state,
        std::path::Path::new("/"),
    )?;
    harden::mask_paths(&spec.security)?;
    harden::cloexec_inherited_fds()?;
    if let Some(fd) = userns {
        super::userns::join(fd)?;
    }
    harden::drop_privileges(&spec.security, spec.uid, spec.gid, &spec.additional_gids)?;
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
pub(crate) fn exec(argv: &[String], env: &[String]) -> Result<std::convert::Infallible, String> {
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
}
