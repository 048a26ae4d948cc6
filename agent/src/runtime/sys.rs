//! Small system helpers shared by the supervisor, container spawn and exec: writing control
//! files, `oom_score_adj`, signal state for children, and bringing `lo` up without `ip`.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

/// A failed step of container set-up as the message the agent shows (`mount /proc: EPERM…`).
pub fn fail(step: impl std::fmt::Display, e: nix::errno::Errno) -> String {
    format!("{step}: {}", e.desc())
}

/// `fail` for an `io::Error`, by its errno where it has one.
pub fn io_fail(step: impl std::fmt::Display, e: io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => fail(step, nix::errno::Errno::from_raw(n)),
        None => format!("{step}: {e}"),
    }
}

/// Write `data` to an existing control file (cgroup.procs, oom_score_adj…) in one `write(2)`.
pub fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    OpenOptions::new().write(true).open(path)?.write_all(data)
}

/// Set `/proc/<pid>/oom_score_adj`; returns the value in force afterwards.
///
/// Lowering a score below the process's floor needs CAP_SYS_RESOURCE. Without it (a
/// container engine's sandbox, a systemd unit without that capability) the process keeps
/// the lowest score it may have, its current one, rather than failing the pod: the agent
/// warns at start-up that negative scores cannot be applied on this node.
pub fn set_oom_score_adj(pid: i32, adj: i32) -> io::Result<i32> {
    let path = format!("/proc/{pid}/oom_score_adj");
    match write_file(Path::new(&path), adj.to_string().as_bytes()) {
        Ok(()) => Ok(adj),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let current: i32 = std::fs::read_to_string(&path)?.trim().parse().unwrap_or(0);
            if adj < current {
                Ok(current)
            } else {
                Err(io::Error::new(e.kind(), format!("{path}: {e}")))
            }
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
    }
}

/// Give a child the signal state a fresh process expects: nothing blocked (the supervisor
/// blocks the signals it reads through its signalfd) and SIGPIPE at its default (Rust's
/// runtime ignores it, and an ignored disposition survives `execve`).
pub fn reset_signals() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in [
        Signal::SIGPIPE,
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        let _ = unsafe { sigaction(sig, &dfl) };
    }
}

/// Bring the loopback interface of the current network namespace up (SIOCGIFFLAGS, set
/// IFF_UP, SIOCSIFFLAGS on a datagram socket).
pub fn bring_up_loopback() -> io::Result<()> {
    // SAFETY: plain socket(2); the result is checked and wrapped in an OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own, sized as the kernel expects.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the flags member of the union is the one SIOCGIFFLAGS filled.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
