//! Classic BPF as seccomp runs it: the instruction (laid out as the kernel's `sock_filter`),
//! the opcodes the compiler uses, and a small assembler with labels.
//!
//! Classic BPF jumps only forward; a conditional jump's offsets are 8 bits (at most 255
//! instructions), `BPF_JA`'s is 32 bits. The assembler resolves labels and fails, with an
//! error, on a backward jump, an unbound label or a conditional offset past 255: the emitter
//! lays the code out so that this cannot happen, and a mistake there must not become a
//! wrong filter.

/// One instruction, `struct sock_filter` (`code`, `jt`, `jf`, `k`; 8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// `install` hands a `&[Insn]` to the kernel as `sock_filter`s.
const _: () = {
    assert!(std::mem::size_of::<Insn>() == std::mem::size_of::<libc::sock_filter>());
    assert!(std::mem::align_of::<Insn>() == std::mem::align_of::<libc::sock_filter>());
    assert!(std::mem::offset_of!(Insn, code) == std::mem::offset_of!(libc::sock_filter, code));
    assert!(std::mem::offset_of!(Insn, jt) == std::mem::offset_of!(libc::sock_filter, jt));
    assert!(std::mem::offset_of!(Insn, jf) == std::mem::offset_of!(libc::sock_filter, jf));
    assert!(std::mem::offset_of!(Insn, k) == std::mem::offset_of!(libc::sock_filter, k));
};

impl Insn {
    /// The instruction as one number (`code << 48 | jt << 40 | jf << 32 | k`), the form a
    /// [`super::Program`] takes in JSON.
    pub fn pack(self) -> u64 {
        (u64::from(self.code) << 48)
            | (u64::from(self.jt) << 40)
            | (u64::from(self.jf) << 32)
            | u64::from(self.k)
    }

    pub fn unpack(v: u64) -> Insn {
        Insn {
            code: (v >> 48) as u16,
            jt: (v >> 40) as u8,
            jf: (v >> 32) as u8,
            k: v as u32,
        }
    }
}

/// `BPF_LD | BPF_W | BPF_ABS`: A = the 32-bit word at offset k of `seccomp_data`.
pub const LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`: A &= k.
pub const ALU_AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JA`: skip k instructions.
pub const JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
pub const JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGT | BPF_K` (unsigned).
pub const JGT_K: u16 = 0x25;
/// `BPF_JMP | BPF_JGE | BPF_K` (unsigned).
pub const JGE_K: u16 = 0x35;
/// `BPF_RET | BPF_K`: return k.
pub const RET_K: u16 = 0x06;

/// `BPF_MAXINSNS`: the kernel refuses longer programs.
pub const MAX_INSNS: usize = 4096;

/// Offsets in `struct seccomp_data` (`nr`, `arch`, `instruction_pointer`, `args[6]`).
pub const OFF_NR: u32 = 0;
pub const OFF_ARCH: u32 = 4;
/// The low and high 32-bit words of argument `i` (little-endian: tidelet's three ABIs).
pub fn off_arg_lo(i: u8) -> u32 {
    16 + 8 * u32::from(i)
}
pub fn off_arg_hi(i: u8) -> u32 {
    off_arg_lo(i) + 4
}

/// A place in the program, bound once with [`Asm::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Where a conditional jump goes: the next instruction, or a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    Next,
    L(Label),
}

enum Item {
    Plain(Insn),
    Cond { code: u16, k: u32, jt: To, jf: To },
    Ja(Label),
}

/// The assembler: instructions in order, jumps to labels resolved by [`Asm::finish`].
#[derive(Default)]
pub struct Asm {
    items: Vec<Item>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// `l` is the next instruction emitted. Binding a label twice is an error at `finish`.
    pub fn bind(&mut self, l: Label) {
        let here = self.items.len();
        match self.labels.get_mut(l.0) {
            Some(slot @ None) => *slot = Some(here),
            // Poison it: `finish` reports a label bound twice.
            Some(slot) => *slot = Some(usize::MAX),
            None => {}
        }
    }

    pub fn ld(&mut self, off: u32) {
        self.plain(LD_W_ABS, off);
    }

    pub fn and(&mut self, k: u32) {
        self.plain(ALU_AND_K, k);
    }

    pub fn ret(&mut self, k: u32) {
        self.plain(RET_K, k);
    }

    pub fn ja(&mut self, l: Label) {
        self.items.push(Item::Ja(l));
    }

    /// `code` is one of JEQ_K, JGT_K, JGE_K.
    pub fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.items.push(Item::Cond { code, k, jt, jf });
    }

    fn plain(&mut self, code: u16, k: u32) {
        self.items.push(Item::Plain(Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        }));
    }

    /// The program, every jump resolved; `Err` says which jump could not be encoded.
    pub fn finish(self) -> Result<Vec<Insn>, String> {
        let target = |from: usize, l: Label| -> Result<usize, String> {
            let at = match self.labels.get(l.0).copied().flatten() {
                Some(usize::MAX) => return Err(format!("label {} bound twice", l.0)),
                Some(at) => at,
                None => return Err(format!("label {} never bound", l.0)),
            };
            at.checked_sub(from + 1)
                .ok_or_else(|| format!("jump from {from} back to {at}: BPF jumps only forward"))
        };
        let cond = |from: usize, to: To| -> Result<u8, String> {
            let off = match to {
                To::Next => 0,
                To::L(l) => target(from, l)?,
            };
            u8::try_from(off).map_err(|_| {
                format!("conditional jump from {from} over {off} instructions (at most 255)")
            })
        };
        let mut out = Vec::with_capacity(self.items.len());
        for (i, item) in self.items.iter().enumerate() {
            out.push(match *item {
                Item::Plain(insn) => insn,
                Item::Cond { code, k, jt, jf } => Insn {
                    code,
                    jt: cond(i, jt)?,
                    jf: cond(i, jf)?,
                    k,
                },
                Item::Ja(l) => {
                    let off = target(i, l)?;
                    Insn {
                        code: JA,
                        jt: 0,
                        jf: 0,
                        k: u32::try_from(off).map_err(|_| format!("jump from {i} too long"))?,
                    }
                }
            });
        }
        Ok(out)
    }
}
