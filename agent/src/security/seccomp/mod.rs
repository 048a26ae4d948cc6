//! Seccomp filters for containers: Docker/OCI JSON profiles compiled, in pure Rust, to the
//! classic-BPF programs the kernel runs on every system call, for Linux x86_64, aarch64 and
//! armv7 (`arm`).
//!
//! - [`profile`]: the JSON format, parsed strictly into a [`Profile`];
//! - [`compile()`]: a profile, an architecture, a capability set and a kernel version -> a
//!   [`Program`] (binary search on the call number, per-call argument checks);
//! - [`arch`]: the ABIs and their system-call tables (the `syscalls` crate's, plus ARM's
//!   private calls);
//! - [`install`]: the program loaded in the calling thread (the supervisor's child, right
//!   before `execve`).
//!
//! Why not a library: libseccomp is C (a cross-built C dependency for every board, and in
//! Yocto), and rust-vmm's `seccompiler` was considered and rejected because it has no armv7
//! (32-bit ARM) support, one of the three targets tidelet ships.
//!
//! Choices where runc/libseccomp leave room:
//! - Native ABI only. The program starts by checking `seccomp_data.arch` and kills the
//!   process (`SECCOMP_RET_KILL_PROCESS`, libseccomp's bad-arch action) for any other ABI;
//!   on x86_64 it also kills x32 calls (numbers with bit 0x40000000). So a 32-bit binary
//!   (i386 on x86_64, armv7 on aarch64) is killed under a filter: its calls have other
//!   numbers and argument widths, and a filter for them would be a second program to get
//!   right. Docker's `archMap` sub-architectures are accepted and do not change that.
//! - A profile whose `architectures`/`archMap` lack the target still gets a filter for the
//!   target from its rules (libseccomp always adds the native ABI too); profiles are not
//!   refused for the list.
//! - `includes`/`excludes` `arches` name architectures as moby does (`runtime.GOARCH`:
//!   `amd64`, `arm64`, `arm`), so on x86_64 `x86` and `x32` do not match: rules for them
//!   are for other ABIs.
//! - Several comparisons in one rule are ANDed, also on the same argument (runc splits those
//!   into separate, ORed, rules because libseccomp cannot express them).
//! - On arm only the low word of an argument is compared (the kernel zero-extends the 32-bit
//!   registers); a value above 32 bits is decided at compile time against a high word of 0.
//! - `SCMP_ACT_LOG` on a kernel before 4.14 is refused (the kernel would kill);
//!   `SCMP_ACT_KILL_PROCESS` there acts as a thread kill. `SCMP_ACT_NOTIFY` is refused.
//!   `flags` are accepted and ignored (the filter is installed without flags).
//!
//! `default.json` is moby's default profile, the same entries in the same order
//! (github.com/moby/moby `profiles/seccomp/default.json` as of commit 00f3d189e420, the one
//! with the `CAP_BPF` and `CAP_PERFMON` rules; Apache-2.0, as tidelet): its allow list and
//! its capability-, kernel- and architecture-conditional rules. Its entries for other
//! architectures (ppc64le, s390, riscv64) parse and never apply.
//!
//! A [`Program`] is computed by the agent and sent to the pod supervisor in the container
//! spec (JSON: each instruction packed into one number). [`install`] uses it as it is, with
//! no allocation, so it may run in a forked child of a multi-threaded process.

pub mod arch;
mod bpf;
mod compile;
pub mod profile;

#[cfg(test)]
mod compile_tests;
#[cfg(test)]
mod install_tests;
#[cfg(test)]
mod interp;
#[cfg(test)]
mod tests;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

pub use arch::Arch;
pub use bpf::Insn;
pub use compile::compile;
pub use profile::{Profile, ProfileError};

/// A compiled filter for one architecture. In JSON: `{"arch": "aarch64", "insns": [...]}`,
/// one number per instruction (see [`Insn::pack`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    arch: Arch,
    /// Shared: every container of every pod with the same profile and capabilities holds the
    /// same compiled filter (about 4 KiB), which `Profiles` compiles once.
    #[serde(with = "packed")]
    insns: std::sync::Arc<[Insn]>,
}

impl Program {
    pub(crate) fn new(arch: Arch, insns: Vec<Insn>) -> Program {
        Program {
            arch,
            insns: insns.into(),
        }
    }

    /// Instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }
}

mod packed {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Insn;

    pub fn serialize<S: Serializer>(insns: &[Insn], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(insns.iter().map(|i| i.pack()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<std::sync::Arc<[Insn]>, D::Error> {
        let packed = Vec::<u64>::deserialize(d)?;
        Ok(packed.into_iter().map(Insn::unpack).collect())
    }
}

/// Load `prog` as a seccomp filter of the calling thread (and the processes it `execve`s).
/// The thread must have `no_new_privs` set or `CAP_SYS_ADMIN`.
///
/// It allocates nothing and makes one system call, so it may run in a forked child of a
/// multi-threaded process: the `sock_fprog` points into `prog`'s own instructions, which are
/// laid out as the kernel's `sock_filter`. `ENOEXEC` for a program compiled for another
/// architecture (it would kill the process on its next call), `EINVAL` for an empty or
/// too long one; else the kernel's errno.
pub fn install(prog: &Program) -> Result<(), Errno> {
    if prog.arch != Arch::native() {
        return Err(Errno::ENOEXEC);
    }
    if prog.insns.is_empty() || prog.insns.len() > bpf::MAX_INSNS {
        return Err(Errno::EINVAL);
    }
    let fprog = libc::sock_fprog {
        len: prog.insns.len() as libc::c_ushort,
        // The kernel only reads it (copy_from_user); the cast is for the C type.
        filter: prog.insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `len` instructions with `sock_filter`'s layout (checked at
    // compile time in `bpf`), alive for the whole call; seccomp(2) copies them and keeps no
    // pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The running kernel's `(major, minor)` from `uname`; `(0, 0)` if it cannot be read, so
/// that rules needing a newer kernel (`minKernel`) do not apply.
pub fn kernel_version() -> (u32, u32) {
    // SAFETY: an all-zero utsname is a valid value (arrays of c_char).
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (0, 0);
    }
    let release: Vec<u8> = u
        .release
        .iter()
        .take_while(|c| **c != 0)
        // c_char is i8 on x86_64 and u8 on ARM: the byte either way.
        .map(|c| c.to_ne_bytes()[0])
        .collect();
    parse_release(&String::from_utf8_lossy(&release)).unwrap_or((0, 0))
}

/// `"6.1.0-18-amd64"` -> (6, 1).
fn parse_release(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor_text = parts.next()?;
    let digits = minor_text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(minor_text.len());
    let minor = minor_text[..digits].parse().ok()?;
    Some((major, minor))
}
