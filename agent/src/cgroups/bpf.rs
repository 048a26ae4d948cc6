//! The cgroup v2 device controller: an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`
//! attached (`BPF_CGROUP_DEVICE`) to a container's cgroup directory. The kernel runs it on
//! every open and mknod of a device node by a process of that cgroup; it returns 1 to allow
//! and 0 to deny (the caller gets `EPERM`).
//!
//! `program` compiles `DeviceRule`s into raw instructions (pure, tested by interpreting them:
//! see `bpf_tests.rs`); `load` and `attach` are thin wrappers of the `bpf(2)` system call, as
//! tidelet carries no eBPF library. The program's logic is that of `devices::allows`: rules are
//! walked last to first and the first that matches decides; no match denies (runc's
//! devicefilter and youki's emitter work the same way).
//!
//! `attach` replaces the programs tidelet attached to the same cgroup before (a restarted
//! container gets new rules, not a stack of programs): it attaches the new one first with
//! `BPF_F_ALLOW_MULTI` and only then detaches the old ones (found with `BPF_PROG_QUERY` and
//! recognised by their name), so the cgroup is never without a program. The kernel keeps an
//! attached program alive after its fd is closed, until detached or the cgroup is removed.
//! Hybrid hosts (cgroup v1 controllers plus a cgroup2 at `/sys/fs/cgroup/unified`) enforce
//! programs on the unified hierarchy too: a task's v2 cgroup is checked on every device access.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::devices::{DevKind, DeviceRule};

/// One `struct bpf_insn`, with the two register nibbles kept apart (`encode` packs them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

/// The opcodes `program` emits (class | size/op | source, from `linux/bpf.h`).
pub mod op {
    /// `dst = *(u32 *)(src + off)`.
    pub const LDX_W: u8 = 0x61; // BPF_LDX | BPF_W | BPF_MEM
    /// `dst = (u32)dst & imm`.
    pub const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
    /// `dst = (u32)dst >> imm`.
    pub const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
    /// `dst = (u32)imm`.
    pub const MOV32_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
    /// `dst = (u32)src`.
    pub const MOV32_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
    /// `if dst != imm goto pc + 1 + off`.
    pub const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
    /// `if dst == imm goto pc + 1 + off`.
    pub const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    /// `goto pc + 1 + off`.
    pub const JA: u8 = 0x05; // BPF_JMP | BPF_JA
    /// `return r0`.
    pub const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
}

/// Registers the program uses: r1 holds the context on entry, then scratch; r0 the verdict.
const R0: u8 = 0;
const R1: u8 = 1;
/// Device type: `access_type & 0xffff` (`BPF_DEVCG_DEV_BLOCK` 1, `BPF_DEVCG_DEV_CHAR` 2).
const R_TYPE: u8 = 2;
/// Requested access: `access_type >> 16` (`BPF_DEVCG_ACC_MKNOD` 1, `READ` 2, `WRITE` 4).
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

pub const DEV_BLOCK: i32 = 1;
pub const DEV_CHAR: i32 = 2;
/// All three access bits.
const ACC_ALL: u32 = 7;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// The device program for `rules` (semantics of `devices::allows`). It reads
/// `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`, then for each rule,
/// last first, jumps to the next rule on any mismatch and otherwise returns the rule's verdict;
/// after the first rule it returns 0. No instruction is unreachable (the verifier refuses
/// those): an `a` rule matches everything, so nothing is emitted after it. A rule with a number
/// no device can have (above `i32::MAX`) can never match and is left out.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(op::LDX_W, R_TYPE, R1, 0, 0),
        insn(op::AND32_K, R_TYPE, 0, 0, 0xffff),
        insn(op::LDX_W, R_ACCESS, R1, 0, 0),
        insn(op::RSH32_K, R_ACCESS, 0, 0, 16),
        insn(op::LDX_W, R_MAJOR, R1, 4, 0),
        insn(op::LDX_W, R_MINOR, R1, 8, 0),
    ];
    let verdict = |p: &mut Vec<Insn>, allow: bool| {
        p.push(insn(op::MOV32_K, R0, 0, 0, i32::from(allow)));
        p.push(insn(op::EXIT, 0, 0, 0, 0));
    };
    // A number that does not fit the instruction's i32 is no device's.
    let number = |n: Option<u32>| n.map(i32::try_from).transpose().ok();
    for rule in rules.iter().rev() {
        let dev_type = match rule.kind {
            DevKind::All => {
                verdict(&mut p, rule.allow);
                return p;
            }
            DevKind::Block => DEV_BLOCK,
            DevKind::Char => DEV_CHAR,
        };
        let (Some(major), Some(minor)) = (number(rule.major), number(rule.minor)) else {
            continue;
        };
        // Jumps to the next rule, patched once its start is known.
        let mut to_next = vec![p.len()];
        p.push(insn(op::JNE_K, R_TYPE, 0, 0, dev_type));
        let bits = rule.access_bits();
        if rule.allow && bits != ACC_ALL {
            // Allowed only when the request asks for nothing outside the rule's access.
            p.push(insn(op::MOV32_X, R1, R_ACCESS, 0, 0));
            p.push(insn(op::AND32_K, R1, 0, 0, !bits as i32));
            to_next.push(p.len());
            p.push(insn(op::JNE_K, R1, 0, 0, 0));
        } else if !rule.allow && bits != ACC_ALL {
            // Denied when the request asks for any of the rule's access.
            p.push(insn(op::MOV32_X, R1, R_ACCESS, 0, 0));
            p.push(insn(op::AND32_K, R1, 0, 0, bits as i32));
            to_next.push(p.len());
            p.push(insn(op::JEQ_K, R1, 0, 0, 0));
        }
        for (reg, value) in [(R_MAJOR, major), (R_MINOR, minor)] {
            if let Some(value) = value {
                to_next.push(p.len());
                p.push(insn(op::JNE_K, reg, 0, 0, value));
            }
        }
        verdict(&mut p, rule.allow);
        let next = p.len();
        for at in to_next {
            p[at].off = i16::try_from(next - at - 1).expect("a rule is a few instructions");
        }
    }
    verdict(&mut p, false);
    p
}

/// A `bpf(2)` step that failed on a cgroup, or the load itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the device program ({insns} instructions): {source}{}; verifier log: {log:?}", load_hint(.source))]
    Load {
        insns: usize,
        #[source]
        source: io::Error,
        log: String,
    },
    #[error("{path}: {step} the device program: {source}{}", hint(.source))]
    Cgroup {
        path: PathBuf,
        step: Step,
        #[source]
        source: io::Error,
    },
}

/// What was being done to the cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Open,
    Query,
    Attach,
    Detach,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Open => "opening the cgroup for",
            Step::Query => "querying",
            Step::Attach => "attaching",
            Step::Detach => "detaching an old copy of",
        })
    }
}

fn load_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::EACCES) => {
            " (the verifier refused it, see its log; an empty log means the kernel lacks \
             BPF_PROG_TYPE_CGROUP_DEVICE, Linux 4.15+)"
        }
        _ => hint(e),
    }
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) => {
            " (bpf(2) needs CAP_BPF or CAP_SYS_ADMIN: run tidelet as root; attaching also \
             fails so when a program was attached to the cgroup without BPF_F_ALLOW_MULTI)"
        }
        Some(libc::EBADF) => " (the directory is not a cgroup v2 cgroup)",
        Some(libc::EINVAL) => " (the kernel lacks CONFIG_CGROUP_BPF or cgroup device programs)",
        Some(libc::ENOSYS) => " (the kernel lacks CONFIG_BPF_SYSCALL)",
        _ => "",
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The name tidelet gives its programs, by which `attach` recognises its earlier ones.
pub const PROG_NAME: &[u8] = b"tidelet_devices";
const LICENSE: &str = "Apache-2.0";
/// Verifier log capacity for a failed load.
const LOG_SIZE: usize = 64 << 10;
/// `BPF_CGROUP_MAX_PROGS`: no cgroup has more programs of one attach type.
const MAX_PROGS: usize = 64;

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `struct bpf_insn` as the kernel reads it: the register nibbles are a C bit-field, `dst`
/// first, which lands in the low nibble on little-endian targets and the high one on big.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn encode(i: &Insn) -> RawInsn {
    let regs = if cfg!(target_endian = "little") {
        (i.src << 4) | (i.dst & 0xf)
    } else {
        (i.dst << 4) | (i.src & 0xf)
    };
    RawInsn {
        code: i.code,
        regs,
        off: i.off,
        imm: i.imm,
    }
}

// The `union bpf_attr` members used here, with explicit padding so that no byte is left
// uninitialised (the kernel refuses non-zero bytes it does not know).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_prog_info`, up to the name.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// Every pointer in `attr` must point to memory valid for what `cmd` does with it (buffers
/// the kernel writes: writable and as long as the size fields say).
unsafe fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live repr(C) value of `size_of::<T>()` bytes, all initialised; the
    // kernel reads and writes at most that many bytes of it, and the caller vouches for the
    // pointers inside it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Load `insns` as a cgroup device program named `PROG_NAME`. When the kernel refuses it, the
/// load is repeated with a 64 KiB verifier log, whose text goes into the error.
pub fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let raw: Vec<RawInsn> = insns.iter().map(encode).collect();
    let license = CString::new(LICENSE).expect("no NUL in the license");
    let mut name = [0u8; 16];
    name[..PROG_NAME.len()].copy_from_slice(PROG_NAME);
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: raw.len() as u32,
            insns: raw.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            ..Default::default()
        };
        if let Some(log) = log {
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
        }
        // SAFETY: `insns` points to `insn_cnt` encoded instructions and `license` to a
        // NUL-terminated string, both alive for the call; `log_buf`, when set, is a writable
        // buffer of `log_size` bytes.
        let fd = unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) }?;
        // SAFETY: a successful BPF_PROG_LOAD returns a new file descriptor that nothing else
        // owns.
        Ok::<_, io::Error>(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    };
    let first = match attempt(None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    let source = match attempt(Some(&mut log)) {
        // Loaded the second time (a transient failure): use it.
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => first,
        Err(e) => e,
    };
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    Err(Error::Load {
        insns: insns.len(),
        source,
        log: String::from_utf8_lossy(&log[..end]).trim_end().to_string(),
    })
}

/// The cgroup directory, opened for `bpf(2)`.
fn open_cgroup(dir: &Path) -> Result<OwnedFd> {
    let err = |source| Error::Cgroup {
        path: dir.to_path_buf(),
        step: Step::Open,
        source,
    };
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| err(io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: `c` is a NUL-terminated path alive for the call; `open` has no other inputs.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: `open` succeeded and returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Ids of the device programs attached directly to the cgroup at `dir` (not inherited ones).
pub fn attached(dir: &Path) -> Result<Vec<u32>> {
    query(dir, open_cgroup(dir)?.as_fd())
}

fn query(dir: &Path, cgroup: BorrowedFd<'_>) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; MAX_PROGS];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    // SAFETY: `prog_ids` is a writable buffer of `prog_cnt` u32s, alive for the call.
    unsafe { sys_bpf(BPF_PROG_QUERY, &mut attr) }.map_err(|source| Error::Cgroup {
        path: dir.to_path_buf(),
        step: Step::Query,
        source,
    })?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// The program with `id`, if it still exists and is one of ours (named `PROG_NAME`).
fn ours(id: u32) -> Option<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        prog_id: id,
        ..Default::default()
    };
    // SAFETY: the attribute holds no pointers.
    let fd = unsafe { sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }.ok()?;
    // SAFETY: a successful BPF_PROG_GET_FD_BY_ID returns a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let mut info = ProgInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    };
    // SAFETY: `info` is a writable, zeroed `ProgInfo` of `info_len` bytes, alive for the call;
    // its buffer pointers are null with lengths 0, so the kernel writes nothing through them.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }.ok()?;
    let end = info.name.iter().position(|b| *b == 0).unwrap_or(16);
    (&info.name[..end] == PROG_NAME).then_some(fd)
}

/// Attach `prog` to the cgroup at `dir` and detach the programs tidelet attached there before.
pub fn attach(dir: &Path, prog: BorrowedFd<'_>) -> Result<()> {
    let cgroup = open_cgroup(dir)?;
    let before = query(dir, cgroup.as_fd())?;
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    // SAFETY: the attribute holds no pointers, only descriptors alive for the call.
    unsafe { sys_bpf(BPF_PROG_ATTACH, &mut attr) }.map_err(|source| Error::Cgroup {
        path: dir.to_path_buf(),
        step: Step::Attach,
        source,
    })?;
    for id in before {
        let Some(old) = ours(id) else { continue };
        let mut attr = AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: old.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        // SAFETY: the attribute holds no pointers, only descriptors alive for the call.
        match unsafe { sys_bpf(BPF_PROG_DETACH, &mut attr) } {
            Ok(_) => tracing::debug!(cgroup = %dir.display(), id, "old device program detached"),
            // Detached meanwhile by someone else: the goal is reached.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(source) => {
                return Err(Error::Cgroup {
                    path: dir.to_path_buf(),
                    step: Step::Detach,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Compile, load and attach `rules` to the cgroup v2 directory `dir`, replacing tidelet's
/// earlier program there.
pub fn apply(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let insns = program(rules);
    let prog = load(&insns)?;
    attach(dir, prog.as_fd())?;
    tracing::debug!(cgroup = %dir.display(), rules = rules.len(), insns = insns.len(), "device program attached");
    Ok(())
}

#[cfg(test)]
#[path = "bpf_tests.rs"]
mod tests;
