//! The device program checked without the kernel: a small interpreter of exactly the opcodes
//! `program` emits runs it on `struct bpf_cgroup_dev_ctx` values, against tables of expected
//! verdicts and against `devices::allows` (the reference semantics) on every request shape.
//! A reachability walk stands in for the verifier's "unreachable insn" check.

use super::*;
use crate::cgroups::devices::{self, allow, default_rules, ACC_MKNOD, ACC_READ, ACC_WRITE};

/// Run `prog` on a device request; panics on anything the kernel's verifier would refuse that
/// this interpreter can see (unknown opcode, context read out of bounds, jump outside).
fn run(prog: &[Insn], dev_type: u32, access: u32, major: u32, minor: u32) -> u32 {
    let ctx = [(access << 16) | dev_type, major, minor];
    let mut regs = [0u64; 11];
    // r1 points to the context; any non-zero marker will do, loads check it.
    const CTX: u64 = 0xc0de_0000;
    regs[1] = CTX;
    let mut pc = 0usize;
    for _ in 0..=prog.len() {
        let i = prog
            .get(pc)
            .unwrap_or_else(|| panic!("pc {pc} ran off the end"));
        let (d, s) = (i.dst as usize, i.src as usize);
        let jump = |taken: bool| {
            if taken {
                let to = pc as i64 + 1 + i64::from(i.off);
                assert!(
                    to > pc as i64 && (to as usize) < prog.len(),
                    "jump at {pc} to {to}"
                );
                to as usize
            } else {
                pc + 1
            }
        };
        pc = match i.code {
            op::LDX_W => {
                assert_eq!(regs[s], CTX, "load at {pc} from a non-context register");
                assert!(
                    i.off >= 0 && i.off % 4 == 0 && i.off < 12,
                    "ctx offset {}",
                    i.off
                );
                regs[d] = u64::from(ctx[i.off as usize / 4]);
                pc + 1
            }
            op::AND32_K => {
                regs[d] = u64::from(regs[d] as u32 & i.imm as u32);
                pc + 1
            }
            op::RSH32_K => {
                regs[d] = u64::from((regs[d] as u32) >> i.imm);
                pc + 1
            }
            op::MOV32_K => {
                regs[d] = u64::from(i.imm as u32);
                pc + 1
            }
            op::MOV32_X => {
                regs[d] = u64::from(regs[s] as u32);
                pc + 1
            }
            // 64-bit comparisons with the immediate sign-extended, as BPF_JMP does.
            op::JNE_K => jump(regs[d] != i.imm as i64 as u64),
            op::JEQ_K => jump(regs[d] == i.imm as i64 as u64),
            op::JA => jump(true),
            op::EXIT => return regs[0] as u32,
            other => panic!("opcode {other:#x} at {pc} is not one program emits"),
        };
    }
    panic!("no exit within {} steps", prog.len() + 1)
}

/// Every instruction is reachable from the first (the verifier refuses dead code) and every
/// path ends in an exit.
fn assert_all_reachable(prog: &[Insn]) {
    let mut seen = vec![false; prog.len()];
    let mut todo = vec![0usize];
    while let Some(pc) = todo.pop() {
        assert!(pc < prog.len(), "falls off the end at {pc}");
        if std::mem::replace(&mut seen[pc], true) {
            continue;
        }
        let i = prog[pc];
        let target = (pc as i64 + 1 + i64::from(i.off)) as usize;
        match i.code {
            op::EXIT => {}
            op::JA => todo.push(target),
            op::JNE_K | op::JEQ_K => todo.extend([pc + 1, target]),
            _ => todo.push(pc + 1),
        }
    }
    let dead: Vec<usize> = (0..prog.len()).filter(|i| !seen[*i]).collect();
    assert!(dead.is_empty(), "unreachable instructions {dead:?}");
}

const R: u32 = ACC_READ;
const W: u32 = ACC_WRITE;
const M: u32 = ACC_MKNOD;
const C: u32 = DEV_CHAR as u32;
const B: u32 = DEV_BLOCK as u32;

fn with(extra: &[DeviceRule]) -> Vec<DeviceRule> {
    let mut r = default_rules();
    r.extend_from_slice(extra);
    r
}

fn c(major: u32, minor: Option<u32>, access: &str) -> DeviceRule {
    allow(DevKind::Char, Some(major), minor, access).unwrap()
}

fn deny(r: DeviceRule) -> DeviceRule {
    DeviceRule { allow: false, ..r }
}

fn all(allow: bool) -> DeviceRule {
    DeviceRule {
        allow,
        kind: DevKind::All,
        major: None,
        minor: None,
        access: "rwm".into(),
    }
}

/// (rules, (device type, major, minor, access), allowed)
type Case = (Vec<DeviceRule>, (u32, u32, u32, u32), bool);

#[test]
fn program_verdicts_table() {
    let tun = c(10, Some(200), "rwm");
    let with_tun = with(std::slice::from_ref(&tun));
    let cases: Vec<Case> = vec![
        (default_rules(), (C, 1, 3, R | W), true),
        (default_rules(), (C, 1, 9, R), true),
        (default_rules(), (C, 136, 42, R | W), true),
        (default_rules(), (C, 5, 2, R | W), true),
        (default_rules(), (C, 10, 200, R | W), false),
        (default_rules(), (C, 10, 200, M), true),
        (default_rules(), (B, 8, 0, M), true),
        (default_rules(), (B, 8, 0, R), false),
        (default_rules(), (B, 1, 3, R), false),
        (default_rules(), (C, 1, 11, W), false),
        (with_tun.clone(), (C, 10, 200, R | W), true),
        (with_tun.clone(), (C, 10, 229, R | W), false),
        (with_tun.clone(), (B, 10, 200, R), false),
        (with(&[c(10, Some(200), "r")]), (C, 10, 200, R), true),
        (with(&[c(10, Some(200), "r")]), (C, 10, 200, R | W), false),
        (with(&[c(10, None, "rw")]), (C, 10, 229, W), true),
        (with(&[c(10, None, "rw")]), (C, 11, 229, W), false),
        (
            with(&[tun.clone(), deny(c(10, Some(200), "w"))]),
            (C, 10, 200, R),
            true,
        ),
        (
            with(&[tun.clone(), deny(c(10, Some(200), "w"))]),
            (C, 10, 200, R | W),
            false,
        ),
        (vec![], (C, 1, 3, R), false),
        (vec![all(true)], (B, 7, 7, R | W | M), true),
        (
            vec![all(true), deny(c(1, Some(3), "rwm"))],
            (C, 1, 3, R),
            false,
        ),
        (
            vec![all(true), deny(c(1, Some(3), "rwm"))],
            (C, 1, 5, R),
            true,
        ),
        (vec![tun.clone(), all(false)], (C, 10, 200, R), false),
        // A number no device has is dropped, not wrapped into a negative immediate.
        (
            vec![
                all(false),
                DeviceRule {
                    major: Some(u32::MAX),
                    ..tun.clone()
                },
            ],
            (C, u32::MAX, 200, R),
            false,
        ),
    ];
    for (rules, (t, major, minor, access), want) in cases {
        let prog = program(&rules);
        assert_all_reachable(&prog);
        assert_eq!(
            run(&prog, t, access, major, minor) == 1,
            want,
            "{rules:?}: type {t} {major}:{minor} access {access}"
        );
    }
}

#[test]
fn program_agrees_with_the_reference_on_every_request() {
    let rule_sets = vec![
        default_rules(),
        with(&[c(10, Some(200), "rw")]),
        with(&[c(10, Some(200), "rwm"), deny(c(10, Some(200), "m"))]),
        with(&[allow(DevKind::Block, Some(8), None, "r").unwrap()]),
        vec![
            all(true),
            deny(allow(DevKind::Block, None, None, "w").unwrap()),
        ],
        vec![
            all(false),
            all(true),
            deny(c(1, None, "rw")),
            c(1, Some(3), "r"),
        ],
        vec![c(1, Some(3), "m")],
    ];
    let kinds = [(DevKind::Char, C), (DevKind::Block, B)];
    let numbers = [
        (1, 3),
        (1, 5),
        (10, 200),
        (10, 229),
        (8, 0),
        (136, 1),
        (0, 0),
    ];
    for rules in &rule_sets {
        let prog = program(rules);
        assert_all_reachable(&prog);
        for (kind, t) in kinds {
            for (major, minor) in numbers {
                for access in 1..=7 {
                    assert_eq!(
                        run(&prog, t, access, major, minor) == 1,
                        devices::allows(rules, kind, major, minor, access),
                        "{rules:?}: {kind:?} {major}:{minor} access {access}"
                    );
                }
            }
        }
    }
}

#[test]
fn nothing_is_emitted_after_an_all_rule() {
    // Reversed, the allow-all comes first: the program is the header and one verdict.
    let prog = program(&[c(1, Some(3), "rwm"), all(true)]);
    assert_eq!(prog.len(), 6 + 2);
    assert_eq!(prog[6], insn(op::MOV32_K, 0, 0, 0, 1));
    assert_eq!(prog[7].code, op::EXIT);
    // The default rules end in an explicit deny after the deny-all: no trailing default.
    let d = program(&default_rules());
    assert_eq!(d[d.len() - 2], insn(op::MOV32_K, 0, 0, 0, 0));
    assert_all_reachable(&d);
}

#[test]
fn registers_are_packed_by_target_endianness() {
    let raw = encode(&insn(op::LDX_W, 2, 1, 4, 0));
    let want = if cfg!(target_endian = "little") {
        0x12
    } else {
        0x21
    };
    assert_eq!(raw.regs, want);
    assert_eq!(size_of::<RawInsn>(), 8);
    assert_eq!(size_of::<ProgLoadAttr>(), 72);
    assert_eq!(size_of::<QueryAttr>(), 32);
    assert_eq!(size_of::<ProgInfo>(), 80);
}

#[test]
fn errors_name_the_cgroup_the_step_and_a_hint() {
    let e = Error::Cgroup {
        path: "/sys/fs/cgroup/a/b".into(),
        step: Step::Attach,
        source: io::Error::from_raw_os_error(libc::EPERM),
    };
    let text = e.to_string();
    assert!(
        text.starts_with("/sys/fs/cgroup/a/b: attaching the device program"),
        "{text}"
    );
    assert!(text.contains("CAP_BPF"), "{text}");
    let e = Error::Load {
        insns: 3,
        source: io::Error::from_raw_os_error(libc::EACCES),
        log: "0: (95) exit\nR0 !read_ok".into(),
    };
    assert!(e.to_string().contains("R0 !read_ok"), "{e}");
}

#[test]
fn opening_a_missing_cgroup_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = attached(&missing).unwrap_err();
    assert!(
        matches!(&err, Error::Cgroup { path, step: Step::Open, source }
            if path == &missing && source.kind() == io::ErrorKind::NotFound),
        "{err}"
    );
}
