//! Filters loaded into the real kernel, in forked children (no root needed: the child sets
//! `no_new_privs`). Each child sets `no_new_privs`, installs, makes one raw system call and
//! exits with what it saw: 0 for success, the errno (< 128) for a failure, 128 + errno when
//! the install failed, 255 when `prctl` did. Between `fork` and `_exit` nothing allocates.
//!
//! Under qemu-user (the aarch64 and armv7 unit tests in CI) `seccomp(2)` is not emulated:
//! the tests detect that with `SECCOMP_GET_ACTION_AVAIL` and are skipped, saying so. On a
//! real kernel they run.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use super::*;
use crate::security::caps::CapSet;

/// Why filters cannot be loaded here, if they cannot.
fn seccomp_unavailable() -> Option<String> {
    let action: u32 = libc::SECCOMP_RET_ALLOW;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32, which lives across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0 as libc::c_uint,
            &action as *const u32,
        )
    };
    match (r, Errno::last()) {
        (0, _) => None,
        (_, e @ (Errno::ENOSYS | Errno::EINVAL)) => Some(format!(
            "seccomp(2) is not available ({e}): qemu-user does not emulate it, or the kernel \
             lacks CONFIG_SECCOMP_FILTER"
        )),
        // Anything else is for the test to report.
        _ => None,
    }
}

macro_rules! skip_without_seccomp {
    ($test:literal) => {
        if let Some(why) = seccomp_unavailable() {
            println!("{}: skipped: {why}", $test);
            return;
        }
    };
}

type Probe = fn() -> libc::c_long;

fn probe_unshare_user() -> libc::c_long {
    // SAFETY: unshare with an integer flag.
    unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) }
}

fn probe_mount() -> libc::c_long {
    // A target that does not exist: without a filter this is ENOENT, even for root.
    let (src, target, fs) = (c"none", c"/nonexistent-tidelet-seccomp-test", c"tmpfs");
    // SAFETY: NUL-terminated static strings, null data.
    unsafe {
        libc::syscall(
            libc::SYS_mount,
            src.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            0 as libc::c_ulong,
            std::ptr::null::<libc::c_void>(),
        )
    }
}

fn probe_personality() -> libc::c_long {
    // SAFETY: personality with an integer; it changes only the child's persona.
    unsafe { libc::syscall(libc::SYS_personality, 0x0040000 as libc::c_ulong) }
}

fn probe_clone3() -> libc::c_long {
    // SAFETY: a null clone_args with size 0: the kernel refuses it without creating anything.
    unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<libc::c_void>(), 0usize) }
}

fn probe_vsock() -> libc::c_long {
    // SAFETY: socket with integer arguments; the child exits at once, closing it if made.
    unsafe { libc::syscall(libc::SYS_socket, 40, libc::SOCK_STREAM, 0) }
}

fn probe_getpid() -> libc::c_long {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) }
}

fn probe_getcwd() -> libc::c_long {
    let mut buf = [0u8; 512];
    // SAFETY: the buffer and its length, on the stack.
    unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) }
}

/// Run `probe` in a child under `prog` (or none); its exit code (see the module doc).
fn in_child(prog: Option<&Program>, probe: Probe) -> i32 {
    // SAFETY: the child makes only raw system calls (prctl, seccomp, the probe's) and
    // leaves with _exit: no allocation, no lock, nothing that a fork of a multi-threaded
    // process could find held.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = child(prog, probe);
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
            WaitStatus::Exited(_, code) => code,
            other => panic!("probe child: {other:?}"),
        },
    }
}

fn child(prog: Option<&Program>, probe: Probe) -> i32 {
    if let Some(prog) = prog {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return 255;
        }
        if let Err(e) = install(prog) {
            return 128 + (e as i32).min(126);
        }
    }
    if probe() >= 0 {
        0
    } else {
        (Errno::last() as i32).clamp(1, 127)
    }
}

fn name(code: i32) -> String {
    match code {
        0 => "success".into(),
        1..=127 => format!("{}", Errno::from_raw(code)),
        128..=254 => format!("install failed: {}", Errno::from_raw(code - 128)),
        _ => "prctl(PR_SET_NO_NEW_PRIVS) failed".into(),
    }
}

fn expect(prog: Option<&Program>, cases: &[(&str, Probe, i32)]) {
    for (what, probe, want) in cases {
        let got = in_child(prog, *probe);
        assert_eq!(
            got,
            *want,
            "{what}: {} where {} was expected",
            name(got),
            name(*want)
        );
    }
}

#[test]
fn runtime_default_blocks_namespaces_and_mounts_in_a_real_kernel() {
    skip_without_seccomp!("runtime_default_blocks_namespaces_and_mounts_in_a_real_kernel");
    let set = CapSet::default_set();
    let prog = compile(
        Profile::runtime_default(),
        Arch::native(),
        &|n: &str| set.has(n),
        kernel_version(),
    )
    .unwrap();
    let eperm = Errno::EPERM as i32;
    expect(
        Some(&prog),
        &[
            ("unshare(CLONE_NEWUSER)", probe_unshare_user, eperm),
            ("mount", probe_mount, eperm),
            ("personality(ADDR_NO_RANDOMIZE)", probe_personality, eperm),
            ("clone3", probe_clone3, Errno::ENOSYS as i32),
            ("socket(AF_VSOCK)", probe_vsock, eperm),
            ("getpid", probe_getpid, 0),
            ("getcwd", probe_getcwd, 0),
        ],
    );
}

#[test]
fn a_localhost_profile_denies_exactly_its_calls_in_a_real_kernel() {
    skip_without_seccomp!("a_localhost_profile_denies_exactly_its_calls_in_a_real_kernel");
    let json = br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#;
    let profile = Profile::parse(json, "localhost.json").unwrap();
    let prog = compile(&profile, Arch::native(), &|_| false, kernel_version()).unwrap();
    // Without the filter both work: the probe tells the filter's doing from the kernel's.
    expect(
        None,
        &[("getcwd", probe_getcwd, 0), ("getpid", probe_getpid, 0)],
    );
    expect(
        Some(&prog),
        &[
            ("getcwd", probe_getcwd, Errno::EPERM as i32),
            ("getpid", probe_getpid, 0),
        ],
    );
}

#[test]
fn a_program_for_another_arch_is_not_installed() {
    let other = Arch::ALL
        .into_iter()
        .find(|a| *a != Arch::native())
        .unwrap();
    let prog = compile(Profile::runtime_default(), other, &|_| false, (6, 1)).unwrap();
    // Refused before any system call: this thread is not filtered.
    assert_eq!(install(&prog), Err(Errno::ENOEXEC));
}
