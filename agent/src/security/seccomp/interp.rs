//! A classic-BPF interpreter for tests: runs a [`Program`] on a `seccomp_data` the way the
//! kernel would, for any architecture, and counts the instructions executed. It also checks
//! the program as the kernel's loader does (known opcodes, jumps in range, aligned loads
//! inside `seccomp_data`, a `ret` at the end), so a test fails on a program the kernel
//! would refuse.

use super::bpf::{Insn, ALU_AND_K, JA, JEQ_K, JGE_K, JGT_K, LD_W_ABS, RET_K};
use super::Program;

/// `struct seccomp_data`.
#[derive(Debug, Clone, Copy)]
pub struct Data {
    pub nr: u32,
    pub arch: u32,
    pub ip: u64,
    pub args: [u64; 6],
}

impl Data {
    pub fn new(nr: u32, arch: u32, args: &[u64]) -> Data {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        Data {
            nr,
            arch,
            ip: 0x1000,
            args: a,
        }
    }

    /// The 32-bit word at byte offset `off` (little-endian, as on tidelet's ABIs).
    fn word(&self, off: u32) -> u32 {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&self.nr.to_le_bytes());
        bytes.extend_from_slice(&self.arch.to_le_bytes());
        bytes.extend_from_slice(&self.ip.to_le_bytes());
        for a in self.args {
            bytes.extend_from_slice(&a.to_le_bytes());
        }
        let o = off as usize;
        u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap())
    }
}

/// The program's verdict and how many instructions ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub ret: u32,
    pub steps: usize,
}

/// What the kernel's `seccomp_check_filter` and `bpf_check_classic` would refuse.
pub fn check(p: &[Insn]) -> Result<(), String> {
    if p.is_empty() || p.len() > 4096 {
        return Err(format!("{} instructions", p.len()));
    }
    for (i, insn) in p.iter().enumerate() {
        let after = |off: u32| i + 1 + off as usize;
        match insn.code {
            LD_W_ABS => {
                if insn.k % 4 != 0 || insn.k >= 64 {
                    return Err(format!("{i}: load at {}", insn.k));
                }
            }
            ALU_AND_K | RET_K => {}
            JA => {
                if after(insn.k) >= p.len() {
                    return Err(format!("{i}: ja past the end"));
                }
            }
            JEQ_K | JGT_K | JGE_K => {
                if after(insn.jt.into()) >= p.len() || after(insn.jf.into()) >= p.len() {
                    return Err(format!("{i}: jump past the end"));
                }
            }
            c => return Err(format!("{i}: opcode {c:#x}")),
        }
    }
    match p.last() {
        Some(last) if last.code == RET_K => Ok(()),
        _ => Err("does not end in ret".into()),
    }
}

/// Run `prog` on `d`. Panics on a program `check` refuses.
pub fn run(prog: &Program, d: &Data) -> Run {
    let p = prog.instructions();
    check(p).unwrap_or_else(|e| panic!("the kernel would refuse this program: {e}"));
    let (mut a, mut pc, mut steps) = (0u32, 0usize, 0usize);
    loop {
        let insn = p[pc];
        steps += 1;
        pc += 1;
        let jump = |cond: bool| usize::from(if cond { insn.jt } else { insn.jf });
        match insn.code {
            LD_W_ABS => a = d.word(insn.k),
            ALU_AND_K => a &= insn.k,
            RET_K => return Run { ret: insn.k, steps },
            JA => pc += insn.k as usize,
            JEQ_K => pc += jump(a == insn.k),
            JGT_K => pc += jump(a > insn.k),
            JGE_K => pc += jump(a >= insn.k),
            c => unreachable!("opcode {c:#x} passed check"),
        }
    }
}
