//! Starting a pod supervisor (`tidelet shim --pod-dir DIR`) and setting it up.
//!
//! The agent calls [`spawn_supervisor`]: it writes `sandbox.json`, runs the shim with a
//! readiness pipe as fd 3 and waits for one line on it: `ready <pid>` or `error <text>`.
//! The shim is `tidelet-shim`, installed beside `tidelet` (the supervisor alone, about 0.7 MiB
//! where `tidelet` is about 9), else `tidelet shim` (see [`shim_program`] for why).
//! The shim double-forks (with `setsid` between) so the supervisor is nobody's child but
//! init's and survives the agent; then, in this order, it joins the pod's infra cgroups,
//! sets its `oom_score_adj`, unshares the network, IPC and UTS namespaces (UTS follows
//! `host_network`, as kubelet does), sets the hostname, brings `lo` up, becomes the child
//! subreaper, creates the shared PID namespace if any, binds `shim.sock`, writes `shim.pid`
//! and reports. Its stdio then goes to /dev/null and it runs the event loop (`event_loop`).
//!
//! Shared PID namespace (`share_process_namespace` without `host_pid`): the supervisor
//! unshares CLONE_NEWPID and forks a tiny pid-1 process (a fork of itself that only reaps,
//! and dies with the supervisor through PR_SET_PDEATHSIG), as Kubernetes' pause container
//! does. Containers are then cloned into that namespace; none of them is its pid 1, so one
//! container exiting never tears the namespace down for the others.
//!
//! Signals: SIGTERM and SIGINT sent to the supervisor are read from its signalfd and
//! ignored (logged): pods survive agent and service restarts, and only a `Shutdown` request
//! (or SIGKILL) ends a supervisor.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{fork, setsid, ForkResult};

use super::event_loop::Supervisor;
use super::protocol::SandboxSpec;
use super::{sys, Error};

/// How long the agent waits for a supervisor to report.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// File names inside the pod directory.
pub const SANDBOX_FILE: &str = "sandbox.json";
pub const SOCKET_FILE: &str = "shim.sock";
pub const PID_FILE: &str = "shim.pid";
pub const RECORDS_DIR: &str = "containers";

/// Start the supervisor of the pod in `pod_dir` (running `exe shim`) and wait until it is
/// ready (socket bound, `shim.pid` written) or has failed; returns its pid. Blocks for at
/// most [`READY_TIMEOUT`] (call it from `spawn_blocking` in async code).
pub fn spawn_supervisor(exe: &Path, pod_dir: &Path, spec: &SandboxSpec) -> Result<i32, Error> {
    let io_err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    fs::create_dir_all(pod_dir).map_err(io_err("create pod dir", pod_dir))?;
    let sandbox = pod_dir.join(SANDBOX_FILE);
    crate::state::atomic_replace_json(&sandbox, spec).map_err(io_err("write", &sandbox))?;
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| io_err("create readiness pipe", pod_dir)(e.into()))?;
    let w_raw = w.as_raw_fd();
    let (program, subcommand) = shim_program(exe, |p| p.is_file());
    let mut cmd = Command::new(&program);
    cmd.args(subcommand)
        .arg("--pod-dir")
        .arg(pod_dir)
        .arg("--ready-fd")
        .arg("3");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure only calls dup2/fcntl, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if w_raw == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(w_raw, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().map_err(io_err("run supervisor", &program))?;
    drop(w);
    // The shim's first process exits as soon as it has forked: reap it.
    let _ = child.wait();
    let line = read_ready_line(&r, READY_TIMEOUT).map_err(|message| Error::SupervisorStart {
        pod_dir: pod_dir.to_path_buf(),
        message,
    })?;
    parse_ready_line(&line).map_err(|message| Error::SupervisorStart {
        pod_dir: pod_dir.to_path_buf(),
        message,
    })
}

/// The file name of the supervisor's own executable, installed beside `tidelet`.
pub const SHIM_EXE: &str = "tidelet-shim";

/// What runs a supervisor, given the agent's executable `exe` (pure but for `is_file`):
/// `tidelet-shim` beside it when there is one, else `exe shim`.
///
/// Why a second executable: a supervisor lives as long as its pod, on every pod, and what it
/// costs is mostly what it maps of its executable. `tidelet` is ~9 MiB of PIE code: a
/// supervisor started from it gets ~220 KiB of relocated `.data.rel.ro` (private, dirty: the
/// loader writes every pointer of it) and maps, 64 KiB around each page its loop runs (the
/// kernel's fault-around), ~4 MiB of the agent's code spread through the file, which PSS
/// charges to it as a share. `tidelet-shim` is the same library code linked for the
/// supervisor alone (~0.7 MiB, 15 KiB of relocated data). `tidelet shim` stays for
/// installations that ship one file: same behaviour, more memory per pod.
pub fn shim_program(
    exe: &Path,
    is_file: impl Fn(&Path) -> bool,
) -> (PathBuf, Option<&'static str>) {
    let own = exe.with_file_name(SHIM_EXE);
    if exe.file_name().is_some() && is_file(&own) {
        (own, None)
    } else {
        (exe.to_path_buf(), Some("shim"))
    }
}

/// Read one line (at most 4 KiB) from the readiness pipe, waiting at most `timeout`.
fn read_ready_line(r: &OwnedFd, timeout: Duration) -> Result<String, String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("no readiness report within {}s", timeout.as_secs()));
        }
        let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll readiness pipe: {}", e.desc())),
        }
        let mut buf = [0u8; 512];
        match nix::unistd::read(r, &mut buf) {
            Ok(0) => {
                return Err(if line.is_empty() {
                    "the supervisor exited without reporting".to_string()
                } else {
                    format!("truncated report {:?}", String::from_utf8_lossy(&line))
                })
            }
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("read readiness pipe: {}", e.desc())),
        }
        if let Some(i) = line.iter().position(|&b| b == b'\n') {
            line.truncate(i);
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        if line.len() > 4096 {
            return Err("readiness report longer than 4 KiB".into());
        }
    }
}

/// `ready <pid>` -> pid; `error <text>` -> the text as the error (pure).
pub fn parse_ready_line(line: &str) -> Result<i32, String> {
    if let Some(pid) = line.strip_prefix("ready ") {
        return pid
            .trim()
            .parse()
            .map_err(|_| format!("bad readiness report {line:?}"));
    }
    if let Some(msg) = line.strip_prefix("error ") {
        return Err(msg.to_string());
    }
    Err(format!("bad readiness report {line:?}"))
}

/// `tidelet shim --pod-dir DIR [--ready-fd N]`: `args` are the words after `shim`. Returns
/// the process exit code (for the first two processes of the double fork, 0 at once).
pub fn main(args: &[String]) -> i32 {
    let mut pod_dir = None;
    let mut ready_fd: Option<RawFd> = None;
    let mut it = args.iter();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}\n\nThe per-pod supervisor (infra process); the agent starts it.");
        return 0;
    }
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--pod-dir", Some(v)) => pod_dir = Some(PathBuf::from(v)),
            ("--ready-fd", Some(v)) => match v.parse() {
                Ok(fd) => ready_fd = Some(fd),
                Err(_) => return usage(&format!("bad --ready-fd {v:?}")),
            },
            (other, _) => return usage(&format!("unexpected argument {other:?}")),
        }
    }
    let Some(pod_dir) = pod_dir else {
        return usage("missing --pod-dir");
    };
    // SAFETY: the agent passes us the write end of its readiness pipe as this fd and we
    // are its only owner in this process.
    let ready = ready_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    let mut ready = ready.map(fs::File::from);
    // Detach: fork, setsid, fork again. The process is single-threaded here.
    // SAFETY: single-threaded (main.rs dispatches `shim` before starting any runtime).
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            // The middle process exits at once; reaping it here leaves no zombie to init.
            let _ = nix::sys::wait::waitpid(child, None);
            return 0;
        }
        Ok(ForkResult::Child) => {}
        Err(e) => return report(&mut ready, Err(format!("fork: {}", e.desc()))),
    }
    let _ = setsid();
    // Do not pin the agent's working directory (or its mount); predictable file modes.
    let _ = nix::unistd::chdir("/");
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    // SAFETY: as above, still single-threaded.
    match unsafe { fork() } {
        // SAFETY: _exit skips atexit handlers that belong to the grandchild too.
        Ok(ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
        Ok(ForkResult::Child) => {}
        Err(e) => return report(&mut ready, Err(format!("fork: {}", e.desc()))),
    }
    set_name(b"tidelet-shim\0");
    let setup = setup(&pod_dir, ready.as_ref().map(|f| f.as_raw_fd()));
    let mut sup = match setup {
        Ok(s) => s,
        Err(msg) => {
            report(&mut ready, Err(msg));
            // SAFETY: end the detached process without unwinding into the agent's code.
            unsafe { libc::_exit(1) }
        }
    };
    report(&mut ready, Ok(std::process::id() as i32));
    drop(ready);
    redirect_stdio_to_null();
    // What set-up allocated (the parsed spec, paths, serde's buffers) is freed by now; give
    // the free pages back before the loop that lives as long as the pod.
    crate::malloc::trim();
    let code = sup.run();
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

const USAGE: &str = "usage: tidelet shim --pod-dir DIR [--ready-fd N] (or tidelet-shim ...)";

fn usage(msg: &str) -> i32 {
    eprintln!("tidelet shim: {msg} ({USAGE})");
    2
}

fn report(ready: &mut Option<fs::File>, result: Result<i32, String>) -> i32 {
    let line = match &result {
        Ok(pid) => format!("ready {pid}\n"),
        Err(msg) => format!("error {}\n", msg.replace('\n', " ")),
    };
    match ready {
        Some(f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => eprint!("{line}"),
    }
    i32::from(result.is_err())
}

/// The name `ps` shows (`comm`); `name` ends with a NUL.
fn set_name(name: &'static [u8]) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from `name`.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

fn redirect_stdio_to_null() {
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// Everything between the double fork and readiness. The error is the text the agent shows.
fn setup(pod_dir: &Path, ready_fd: Option<RawFd>) -> Result<Supervisor, String> {
    let sandbox = pod_dir.join(SANDBOX_FILE);
    let data = fs::read(&sandbox).map_err(|e| format!("{}: {e}", sandbox.display()))?;
    let spec: SandboxSpec =
        serde_json::from_slice(&data).map_err(|e| format!("{}: {e}", sandbox.display()))?;
    drop(data);
    let mut flags = CloneFlags::empty();
    if !spec.host_network {
        flags |= CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS;
    }
    if !spec.host_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    let userns = match &spec.userns {
        Some(range) => Some(super::userns::make_pod_namespaces(range, flags)?),
        None => {
            unshare(flags).map_err(|e| format!("unshare namespaces: {}", e.desc()))?;
            None
        }
    };
    if !spec.host_network {
        nix::unistd::sethostname(&spec.hostname)
            .map_err(|e| format!("sethostname {:?}: {}", spec.hostname, e.desc()))?;
        sys::bring_up_loopback().map_err(|e| format!("bring lo up: {e}"))?;
    }
    // The pod's sysctls, admitted by the agent (`security::sysctls`): each lives in the
    // network or IPC namespace just made, so writing it here changes this pod only.
    for (name, value) in &spec.sysctls {
        let path = Path::new("/proc/sys").join(crate::security::sysctls::proc_path(name));
        sys::write_file(&path, value.as_bytes())
            .map_err(|e| format!("sysctl {name}={value:?}: {}: {e}", path.display()))?;
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(format!(
            "PR_SET_CHILD_SUBREAPER: {}",
            io::Error::last_os_error()
        ));
    }
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("block signals: {}", e.desc()))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {}", e.desc()))?;
    // Join the pod's cgroups last, right before readiness: on cgroup v1 an attach waits for
    // an RCU grace period unless another attach happened just before, so the first
    // container's attach, which follows within milliseconds, then costs nothing.
    let me = std::process::id();
    for procs in &spec.cgroup_procs {
        sys::write_file(procs, me.to_string().as_bytes())
            .map_err(|e| format!("join cgroup {}: {e}", procs.display()))?;
    }
    sys::set_oom_score_adj(me as i32, spec.oom_score_adj)
        .map_err(|e| format!("oom_score_adj: {e}"))?;
    let shared_pid_ns = spec.share_process_namespace && !spec.host_pid;
    let pid_one = if shared_pid_ns {
        Some(start_pid_one(ready_fd)?)
    } else {
        None
    };
    let records = pod_dir.join(RECORDS_DIR);
    fs::create_dir_all(&records).map_err(|e| format!("{}: {e}", records.display()))?;
    let sock = pod_dir.join(SOCKET_FILE);
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        let pid = fs::read_to_string(pod_dir.join(PID_FILE)).unwrap_or_default();
        return Err(format!(
            "{}: a supervisor already serves this pod (pid {})",
            sock.display(),
            pid.trim()
        ));
    }
    let _ = fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).map_err(|e| format!("bind {}: {e}", sock.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", sock.display()))?;
    let pid_file = pod_dir.join(PID_FILE);
    crate::state::atomic_replace(&pid_file, format!("{me}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", pid_file.display()))?;
    Ok(Supervisor::new(
        pod_dir.to_path_buf(),
        me as i32,
        !spec.host_pid && !shared_pid_ns,
        pid_one,
        sigfd,
        listener,
        userns,
    ))
}

/// Create the pod's PID namespace and its pid 1 (a reaper that does nothing else).
fn start_pid_one(ready_fd: Option<RawFd>) -> Result<i32, String> {
    unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("unshare pid namespace: {}", e.desc()))?;
    // SAFETY: the supervisor is single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => Ok(child.as_raw()),
        Ok(ForkResult::Child) => {
            if let Some(fd) = ready_fd {
                // SAFETY: close our copy of the readiness pipe so the agent sees EOF.
                unsafe { libc::close(fd) };
            }
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            redirect_stdio_to_null();
            sys::reset_signals();
            set_name(b"tidelet-pid1\0");
            loop {
                // SAFETY: wait(2) for any child; orphans of the namespace are reparented here.
                if unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } < 0 {
                    // SAFETY: sleep(3) has no memory effects; with no child yet, poll again later.
                    unsafe { libc::sleep(1) };
                }
            }
        }
        Err(e) => Err(format!("fork pid 1: {}", e.desc())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_lines_parse() {
        assert_eq!(parse_ready_line("ready 42"), Ok(42));
        assert_eq!(
            parse_ready_line("error bind /x: denied"),
            Err("bind /x: denied".into())
        );
        assert!(parse_ready_line("ready x")
            .unwrap_err()
            .contains("bad readiness"));
        assert!(parse_ready_line("").unwrap_err().contains("bad readiness"));
    }

    #[test]
    fn the_shim_beside_the_agent_is_preferred() {
        let exe = Path::new("/usr/bin/tidelet");
        let shim = Path::new("/usr/bin/tidelet-shim");
        let cases: &[(bool, (&Path, Option<&str>))] =
            &[(true, (shim, None)), (false, (exe, Some("shim")))];
        for (present, (program, sub)) in cases {
            let got = shim_program(exe, |p| *present && p == shim);
            assert_eq!(
                got,
                (program.to_path_buf(), *sub),
                "shim present: {present}"
            );
        }
    }

    #[test]
    fn spawning_a_missing_executable_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SandboxSpec {
            pod_uid: "u".into(),
            pod_name: "p".into(),
            namespace: "default".into(),
            hostname: "p".into(),
            sysctls: vec![],
            userns: None,
            host_network: true,
            host_ipc: true,
            host_pid: true,
            share_process_namespace: false,
            pod_dir: dir.path().into(),
            cgroup_procs: vec![],
            oom_score_adj: 0,
        };
        let err =
            spawn_supervisor(Path::new("/nonexistent/tidelet"), dir.path(), &spec).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tidelet"), "{err}");
        assert!(dir.path().join(SANDBOX_FILE).exists());
    }
}
