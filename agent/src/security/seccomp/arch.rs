//! The architectures tidelet builds seccomp filters for, their audit numbers, and their
//! system-call tables (name -> number).
//!
//! The tables are the `syscalls` crate's, which are the kernel's own names (`_llseek`,
//! `arm_fadvise64_64`, ...). ARM's private calls (`__ARM_NR_BASE` 0x0f0000 + n: `breakpoint`,
//! `cacheflush`, `usr26`, `usr32`, `set_tls`, `get_tls`) are not in that crate's `arm` table
//! and are added here, with `sync_file_range2`, the kernel's second name for ARM's
//! `arm_sync_file_range` (libseccomp knows both). 32-bit x86's table, and a short list of
//! other architectures' private calls, are only used to tell a misspelt name from a call of
//! another architecture: tidelet builds no filters for those.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An architecture (native ABI) a filter is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
    /// 32-bit ARM, EABI (armv7).
    #[serde(rename = "arm")]
    Arm,
}

/// `AUDIT_ARCH_X86_64`: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_AARCH64`: EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// `AUDIT_ARCH_ARM`: EM_ARM | __AUDIT_ARCH_LE.
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;

/// ARM calls the `syscalls` crate's `arm` table lacks (see the module doc).
const ARM_EXTRA: &[(&str, u32)] = &[
    ("breakpoint", 0x0f_0001),
    ("cacheflush", 0x0f_0002),
    ("usr26", 0x0f_0003),
    ("usr32", 0x0f_0004),
    ("set_tls", 0x0f_0005),
    ("get_tls", 0x0f_0006),
    ("sync_file_range2", 341),
];

/// Calls private to architectures tidelet has no table for, which Docker/containerd profiles
/// name (moby's default allows the s390, ppc64le and riscv64 ones on those machines): known,
/// so such a profile parses, and never a call of a tidelet target. (Their tables would cost
/// some 25 KiB of binary each; these few names cost nothing.)
const FOREIGN_PRIVATE: &[&str] = &[
    "multiplexer",
    "riscv_flush_icache",
    "riscv_hwprobe",
    "rtas",
    "s390_guarded_storage",
    "s390_pci_mmio_read",
    "s390_pci_mmio_write",
    "s390_runtime_instr",
    "s390_sthyi",
    "spu_create",
    "spu_run",
    "subpage_prot",
    "swapcontext",
    "switch_endian",
    "sys_debug_setcontext",
    "cachectl",
    "sysmips",
];

/// libseccomp's architecture names (`architectures`, `archMap`). Those tidelet does not
/// build filters for are accepted and have no effect.
pub(crate) const SCMP_ARCHES: &[&str] = &[
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// The names an `includes`/`excludes` `arches` list may hold: moby compares them with Go's
/// `runtime.GOARCH` (`amd64`, `arm64`, ...), and its default profile also writes the
/// libseccomp-style `x86`, `x32`, `s390`.
pub(crate) const RULE_ARCHES: &[&str] = &[
    "386",
    "amd64",
    "arm",
    "arm64",
    "aarch64",
    "x86",
    "x86_64",
    "x32",
    "loong64",
    "loongarch64",
    "m68k",
    "mips",
    "mipsle",
    "mipsel",
    "mips64",
    "mips64le",
    "mipsel64",
    "mips64n32",
    "mipsel64n32",
    "mips64p32",
    "mips64p32le",
    "parisc",
    "parisc64",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv64",
    "s390",
    "s390x",
    "sh",
    "sheb",
];

impl Arch {
    /// Every architecture tidelet compiles filters for.
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Arm];

    /// The architecture this binary runs on.
    #[cfg(target_arch = "x86_64")]
    pub fn native() -> Arch {
        Arch::X86_64
    }

    /// The architecture this binary runs on.
    #[cfg(target_arch = "aarch64")]
    pub fn native() -> Arch {
        Arch::Aarch64
    }

    /// The architecture this binary runs on.
    #[cfg(target_arch = "arm")]
    pub fn native() -> Arch {
        Arch::Arm
    }

    /// The `AUDIT_ARCH_*` value the kernel puts in `seccomp_data.arch` for this ABI.
    pub fn audit(self) -> u32 {
        match self {
            Arch::X86_64 => AUDIT_ARCH_X86_64,
            Arch::Aarch64 => AUDIT_ARCH_AARCH64,
            Arch::Arm => AUDIT_ARCH_ARM,
        }
    }

    /// The name tidelet shows (`x86_64`, `aarch64`, `arm`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Arm => "arm",
        }
    }

    /// Whether system-call arguments are 64 bits wide (else only their low word is real: the
    /// kernel zero-extends a 32-bit ABI's registers into `seccomp_data.args`).
    pub fn is_64bit(self) -> bool {
        matches!(self, Arch::X86_64 | Arch::Aarch64)
    }

    /// Whether a rule's `includes`/`excludes` arch name `name` means this ABI. moby compares
    /// with `runtime.GOARCH`, which is `amd64` on x86_64 (so `x86` and `x32` never match
    /// there: they are other ABIs, whose calls a tidelet filter kills, see `compile`), `arm64`
    /// on aarch64 and `arm` on armv7. The kernel-style spellings are accepted too.
    pub(crate) fn matches_rule_arch(self, name: &str) -> bool {
        match self {
            Arch::X86_64 => matches!(name, "amd64" | "x86_64"),
            Arch::Aarch64 => matches!(name, "arm64" | "aarch64"),
            Arch::Arm => name == "arm",
        }
    }

    /// The number of system call `name` on this ABI, if it has one.
    pub fn syscall(self, name: &str) -> Option<u32> {
        let id = match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::from_str(name).ok()?.id(),
            // The syscalls crate names aarch64's 79 `fstatat`; the kernel, libseccomp and
            // moby's profile call it `newfstatat` (as on x86_64). Without this, stat(2) and
            // lstat(2) failed with EPERM in every default container on aarch64.
            Arch::Aarch64 if name == "newfstatat" => 79,
            Arch::Aarch64 => syscalls::aarch64::Sysno::from_str(name).ok()?.id(),
            Arch::Arm => match syscalls::arm::Sysno::from_str(name) {
                Ok(s) => s.id(),
                Err(()) => {
                    let (_, nr) = ARM_EXTRA.iter().find(|(n, _)| *n == name)?;
                    return Some(*nr);
                }
            },
        };
        u32::try_from(id).ok()
    }
}

/// Whether `name` is a system call on any architecture tidelet knows: its three, x86, and
/// the private calls of a few others (see `FOREIGN_PRIVATE`).
pub(crate) fn known_anywhere(name: &str) -> bool {
    Arch::ALL.iter().any(|a| a.syscall(name).is_some())
        || syscalls::x86::Sysno::from_str(name).is_ok()
        || FOREIGN_PRIVATE.contains(&name)
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
