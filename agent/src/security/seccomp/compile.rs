//! The compiler: a checked [`Profile`] -> a classic-BPF [`Program`] for one architecture,
//! one capability set and one kernel version.
//!
//! Shape of the program (every container's every system call runs it, so it is short on
//! the path of an allowed call):
//!
//! ```text
//!   ld arch; jeq AUDIT_ARCH_<arch> ? +1 : next; ret KILL_PROCESS
//!   ld nr
//!   dispatch: a balanced binary search (`jge`) over the intervals of system-call numbers
//!             that share a target; a leaf is `ret <action>` or `ja <body>`
//!   bodies:   per call with argument rules, each rule's comparisons (falling through when
//!             true, jumping to the next rule when false), then `ret <its action>`; at the
//!             end `ret <the call's fallback>`
//! ```
//!
//! Dispatching on intervals rather than single numbers is what keeps the tree small: most
//! allowed calls are runs of neighbouring numbers. Every `ret` sits where it is reached: a
//! `ja` to a shared `ret` would cost the same instruction and one more step, since the
//! 8-bit conditional offsets cannot reach a shared block past the tree.
//!
//! The rules for one call: its argument rules in profile order, the first whose comparisons
//! all hold deciding; if none does, the first unconditional rule's action, else the
//! profile's default. Trailing argument rules whose action is that fallback are dropped, and
//! so are calls left with nothing but the default.

use std::collections::BTreeMap;

use super::arch::Arch;
use super::bpf::{self, Asm, Label, To, JEQ_K, JGE_K, JGT_K, MAX_INSNS};
use super::profile::{excludes_hold, includes_hold, Action, ArgCmp, Op, Profile, ProfileError};
use super::Program;

/// x32 system calls on x86_64 carry this bit in `nr`.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What a range of system-call numbers leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Ret(Action),
    /// Index into the bodies.
    Body(usize),
}

/// A call with argument rules.
#[derive(Debug, PartialEq, Eq)]
struct Body<'a> {
    rules: Vec<(&'a [ArgCmp], Action)>,
    fallback: Action,
}

#[derive(Default)]
struct Call<'a> {
    rules: Vec<(&'a [ArgCmp], Action)>,
    unconditional: Option<Action>,
}

/// Compile `profile` for `arch`, for a container whose effective capabilities are
/// `has_cap(name)` (`name` upper case with the `CAP_` prefix, as `CAP_SYS_ADMIN`), on kernel
/// version `(major, minor)`.
pub fn compile(
    profile: &Profile,
    arch: Arch,
    has_cap: &dyn Fn(&str) -> bool,
    kernel: (u32, u32),
) -> Result<Program, ProfileError> {
    let err = |field: &str, reason: String| ProfileError {
        origin: profile.origin.clone(),
        field: field.to_string(),
        reason,
    };
    let default = profile.default_action;
    check_action(default, kernel).map_err(|r| err("defaultAction", r))?;

    let calls = calls(profile, arch, has_cap, kernel).map_err(|(f, r)| err(&f, r))?;
    let (ranges, bodies) = dispatch(calls, default, arch);
    let insns = emit(arch, &ranges, &bodies)
        .map_err(|r| err("", format!("internal error in the BPF emitter: {r}")))?;
    if insns.len() > MAX_INSNS {
        return Err(err(
            "syscalls",
            format!(
                "compiles to {} BPF instructions for {arch}; the kernel takes at most {MAX_INSNS}",
                insns.len()
            ),
        ));
    }
    Ok(Program::new(arch, insns))
}

/// The rules that apply on `arch` with these capabilities and kernel, by call number.
fn calls<'a>(
    profile: &'a Profile,
    arch: Arch,
    has_cap: &dyn Fn(&str) -> bool,
    kernel: (u32, u32),
) -> Result<BTreeMap<u32, Call<'a>>, (String, String)> {
    let mut calls: BTreeMap<u32, Call> = BTreeMap::new();
    for rule in &profile.rules {
        if !includes_hold(&rule.includes, arch, has_cap, kernel)
            || excludes_hold(&rule.excludes, arch, has_cap, kernel)
        {
            continue;
        }
        check_action(rule.action, kernel).map_err(|r| (format!("{}.action", rule.field), r))?;
        // A name this ABI lacks (`open` on aarch64) is skipped, as runc does.
        for nr in rule.names.iter().filter_map(|n| arch.syscall(n)) {
            let call = calls.entry(nr).or_default();
            if !rule.args.is_empty() {
                call.rules.push((&rule.args, rule.action));
            } else if call.unconditional.is_none() {
                call.unconditional = Some(rule.action);
            }
        }
    }
    Ok(calls)
}

/// The number line cut into ranges with one target each (sorted by start, the first at 0),
/// and the bodies of the calls with argument rules.
fn dispatch<'a>(
    calls: BTreeMap<u32, Call<'a>>,
    default: Action,
    arch: Arch,
) -> (Vec<(u32, Target)>, Vec<Body<'a>>) {
    let mut bodies: Vec<Body> = Vec::new();
    let mut ranges = vec![(0u32, Target::Ret(default))];
    for (nr, call) in calls {
        let fallback = call.unconditional.unwrap_or(default);
        let mut rules = call.rules;
        while rules.last().is_some_and(|(_, a)| *a == fallback) {
            rules.pop();
        }
        let target = if rules.is_empty() {
            Target::Ret(fallback)
        } else {
            let body = Body { rules, fallback };
            let i = match bodies.iter().position(|b| *b == body) {
                Some(i) => i,
                None => {
                    bodies.push(body);
                    bodies.len() - 1
                }
            };
            Target::Body(i)
        };
        ranges.push((nr, target));
        if let Some(next) = nr.checked_add(1) {
            ranges.push((next, Target::Ret(default)));
        }
    }
    if arch == Arch::X86_64 {
        // x32 calls (tidelet builds native filters only). -1, which a tracer uses to skip a
        // call, is no x32 call: it gets the default action, as any unknown number.
        ranges.push((X32_SYSCALL_BIT, Target::Ret(Action::KillProcess)));
        ranges.push((u32::MAX, Target::Ret(default)));
    }
    (normalise(ranges), bodies)
}

/// The program: arch check, dispatch tree, bodies.
fn emit(arch: Arch, ranges: &[(u32, Target)], bodies: &[Body]) -> Result<Vec<bpf::Insn>, String> {
    let mut asm = Asm::default();
    asm.ld(bpf::OFF_ARCH);
    let arch_ok = asm.label();
    asm.jump(JEQ_K, arch.audit(), To::L(arch_ok), To::Next);
    asm.ret(Action::KillProcess.ret());
    asm.bind(arch_ok);
    asm.ld(bpf::OFF_NR);
    let labels: Vec<Label> = bodies.iter().map(|_| asm.label()).collect();
    tree(&mut asm, ranges, &labels);
    for (body, label) in bodies.iter().zip(&labels) {
        asm.bind(*label);
        for (args, action) in &body.rules {
            let next = asm.label();
            for a in *args {
                compare(&mut asm, a, arch, next);
            }
            asm.ret(action.ret());
            asm.bind(next);
        }
        asm.ret(body.fallback.ret());
    }
    asm.finish()
}

/// Actions an older kernel does not know (it would kill instead).
fn check_action(a: Action, kernel: (u32, u32)) -> Result<(), String> {
    if a == Action::Log && kernel < (4, 14) {
        return Err(format!(
            "SCMP_ACT_LOG needs Linux 4.14 or later; this kernel is {}.{} and would kill the \
             process instead",
            kernel.0, kernel.1
        ));
    }
    Ok(())
}

/// Sorted `(start, target)` pairs -> one per start (the last given wins), neighbours with
/// the same target merged. Each range runs up to the next one's start.
fn normalise(ranges: Vec<(u32, Target)>) -> Vec<(u32, Target)> {
    debug_assert!(ranges.windows(2).all(|w| w[0].0 <= w[1].0), "{ranges:?}");
    let mut out: Vec<(u32, Target)> = Vec::with_capacity(ranges.len());
    for (start, t) in ranges {
        if out.last().is_some_and(|(s, _)| *s == start) {
            out.pop();
        }
        if out.last().is_some_and(|(_, lt)| *lt == t) {
            continue;
        }
        out.push((start, t));
    }
    out
}

/// Instructions `tree` emits for `ranges`.
fn tree_size(ranges: &[(u32, Target)]) -> usize {
    if ranges.len() <= 1 {
        return 1;
    }
    let (left, right) = ranges.split_at(ranges.len() / 2);
    let l = tree_size(left);
    1 + usize::from(l > 255) + l + tree_size(right)
}

/// The binary search over `ranges` (non-empty): `nr >= right[0].start` goes right. The left
/// half follows its node; a left half too long for the 8-bit offset to the right half puts
/// a `ja` to the right half after the node.
fn tree(asm: &mut Asm, ranges: &[(u32, Target)], bodies: &[Label]) {
    if let [(_, target)] = ranges {
        match *target {
            Target::Ret(a) => asm.ret(a.ret()),
            Target::Body(i) => asm.ja(bodies[i]),
        }
        return;
    }
    let (left, right) = ranges.split_at(ranges.len() / 2);
    let right_label = asm.label();
    if tree_size(left) <= 255 {
        asm.jump(JGE_K, right[0].0, To::L(right_label), To::Next);
    } else {
        let left_label = asm.label();
        asm.jump(JGE_K, right[0].0, To::Next, To::L(left_label));
        asm.ja(right_label);
        asm.bind(left_label);
    }
    tree(asm, left, bodies);
    asm.bind(right_label);
    tree(asm, right, bodies);
}

/// One comparison: falls through when it holds, jumps to `fail` when not. 64-bit ABIs
/// compare the high word, then the low one; on a 32-bit ABI the high word is known to be 0
/// (the kernel zero-extends), so only the low word is loaded and the rest is decided here.
fn compare(asm: &mut Asm, a: &ArgCmp, arch: Arch, fail: Label) {
    let (hi, lo) = (bpf::off_arg_hi(a.index), bpf::off_arg_lo(a.index));
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    let (vh, vl) = split(a.value);
    let f = To::L(fail);
    if !arch.is_64bit() {
        // The high word is 0: decide its part of the comparison now.
        let low_decides = match a.op {
            Op::MaskedEq => split(a.value_two).0 == 0,
            _ => vh == 0,
        };
        if !low_decides {
            // vh > 0 (or an unreachable masked value): 0 is below it, never equal to it.
            if matches!(a.op, Op::Eq | Op::MaskedEq | Op::Gt | Op::Ge) {
                asm.ja(fail);
            }
            return;
        }
        asm.ld(lo);
        match a.op {
            Op::Eq => asm.jump(JEQ_K, vl, To::Next, f),
            Op::Ne => asm.jump(JEQ_K, vl, f, To::Next),
            Op::Gt => asm.jump(JGT_K, vl, To::Next, f),
            Op::Ge => asm.jump(JGE_K, vl, To::Next, f),
            Op::Lt => asm.jump(JGE_K, vl, f, To::Next),
            Op::Le => asm.jump(JGT_K, vl, f, To::Next),
            Op::MaskedEq => {
                let (mask, want) = (a.value as u32, a.value_two as u32);
                asm.and(mask);
                asm.jump(JEQ_K, want, To::Next, f);
            }
        }
        return;
    }
    let pass = asm.label();
    let p = To::L(pass);
    match a.op {
        Op::Eq | Op::Ne => {
            // Equal iff both words are.
            let (unequal, equal) = if a.op == Op::Eq {
                (f, To::Next)
            } else {
                (p, f)
            };
            asm.ld(hi);
            asm.jump(JEQ_K, vh, To::Next, unequal);
            asm.ld(lo);
            asm.jump(JEQ_K, vl, equal, unequal);
        }
        Op::MaskedEq => {
            let ((mh, ml), (wh, wl)) = (split(a.value), split(a.value_two));
            if mh == 0 && wh != 0 {
                asm.ja(fail);
            } else if mh != 0 {
                asm.ld(hi);
                asm.and(mh);
                asm.jump(JEQ_K, wh, To::Next, f);
            }
            asm.ld(lo);
            asm.and(ml);
            asm.jump(JEQ_K, wl, To::Next, f);
        }
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            // above: hi > vh, or hi == vh and lo > vl (>= for Ge, Lt). Lt and Le are the
            // negations of Ge and Gt.
            let low_op = if matches!(a.op, Op::Gt | Op::Le) {
                JGT_K
            } else {
                JGE_K
            };
            let (yes, no) = if matches!(a.op, Op::Gt | Op::Ge) {
                (p, f)
            } else {
                (f, p)
            };
            asm.ld(hi);
            asm.jump(JGT_K, vh, yes, To::Next);
            asm.jump(JEQ_K, vh, To::Next, no);
            asm.ld(lo);
            asm.jump(low_op, vl, yes, no);
        }
    }
    asm.bind(pass);
}
