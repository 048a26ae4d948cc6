//! The emitter: argument comparisons (64-bit on x86_64/aarch64, low word on arm), rule
//! order, the dispatch tree on large profiles, program size and the steps of a common call.

use super::bpf::{Asm, To, JEQ_K};
use super::interp::{self, Data};
use super::tests::{errno, verdict, ALLOW};
use super::*;
use crate::security::caps::CapSet;

fn one_rule(op: &str, value: u64, value_two: u64) -> Profile {
    let json = format!(
        r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["read"],
            "action":"SCMP_ACT_ERRNO","errnoRet":5,
            "args":[{{"index":2,"value":{value},"valueTwo":{value_two},"op":"{op}"}}]}}]}}"#
    );
    Profile::parse(json.as_bytes(), "t").unwrap()
}

/// What the comparison means, on 64-bit values.
fn holds(op: &str, v: u64, w: u64, arg: u64) -> bool {
    match op {
        "SCMP_CMP_EQ" => arg == v,
        "SCMP_CMP_NE" => arg != v,
        "SCMP_CMP_LT" => arg < v,
        "SCMP_CMP_LE" => arg <= v,
        "SCMP_CMP_GT" => arg > v,
        "SCMP_CMP_GE" => arg >= v,
        "SCMP_CMP_MASKED_EQ" => arg & v == w,
        _ => unreachable!(),
    }
}

const OPS: [&str; 7] = [
    "SCMP_CMP_EQ",
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_GT",
    "SCMP_CMP_GE",
    "SCMP_CMP_MASKED_EQ",
];

fn matched(arch: Arch, prog: &Program, arg: u64) -> bool {
    match verdict(prog, arch, "read", &[0, 0, arg]) {
        r if r == errno(5) => true,
        ALLOW => false,
        r => panic!("ret {r:#x}"),
    }
}

#[test]
fn comparisons_use_all_64_bits_on_64_bit_arches() {
    // (op, value, valueTwo, arg, holds): cases that differ only in the high word first.
    let cases: &[(&str, u64, u64, u64, bool)] = &[
        ("SCMP_CMP_EQ", 0, 0, 0x1_0000_0000, false),
        ("SCMP_CMP_EQ", 0x1_0000_0000, 0, 0x1_0000_0000, true),
        ("SCMP_CMP_EQ", 0x1_0000_0000, 0, 0, false),
        ("SCMP_CMP_NE", 0, 0, 0x1_0000_0000, true),
        ("SCMP_CMP_NE", 7, 0, 7, false),
        ("SCMP_CMP_GT", 0xffff_ffff, 0, 0x1_0000_0000, true),
        ("SCMP_CMP_GT", 0x1_0000_0000, 0, 0xffff_ffff, false),
        ("SCMP_CMP_GT", 0x1_0000_0005, 0, 0x1_0000_0005, false),
        ("SCMP_CMP_GE", 0x1_0000_0005, 0, 0x1_0000_0005, true),
        ("SCMP_CMP_GE", 0x2_0000_0000, 0, 0x1_ffff_ffff, false),
        ("SCMP_CMP_LT", 0x1_0000_0000, 0, 0xffff_ffff, true),
        ("SCMP_CMP_LT", 5, 0, 0x1_0000_0004, false),
        ("SCMP_CMP_LE", 0x1_0000_0000, 0, 0x1_0000_0000, true),
        ("SCMP_CMP_LE", 0x1_0000_0000, 0, 0x1_0000_0001, false),
        (
            "SCMP_CMP_MASKED_EQ",
            0xff00_0000_0000_00ff,
            0x0100_0000_0000_0002,
            0x0123_4567_89ab_cd02,
            true,
        ),
        (
            "SCMP_CMP_MASKED_EQ",
            0xff00_0000_0000_00ff,
            0x0100_0000_0000_0002,
            0x0223_4567_89ab_cd02,
            false,
        ),
        ("SCMP_CMP_MASKED_EQ", 0x7e02_0000, 0, 0x1_0000_0000, true),
        (
            "SCMP_CMP_MASKED_EQ",
            0xff,
            0x1_0000_0000,
            0x1_0000_0000,
            false,
        ),
    ];
    for arch in [Arch::X86_64, Arch::Aarch64] {
        for &(op, v, w, arg, want) in cases {
            assert_eq!(
                holds(op, v, w, arg),
                want,
                "the table itself: {op} {v:#x} {arg:#x}"
            );
            let prog = compile(&one_rule(op, v, w), arch, &|_| false, (6, 1)).unwrap();
            assert_eq!(
                matched(arch, &prog, arg),
                want,
                "{arch}: {arg:#x} {op} {v:#x}/{w:#x}"
            );
        }
    }
    // And every pair of some edge values, against the reference.
    let edges = [
        0,
        1,
        5,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0005,
        u64::MAX - 1,
        u64::MAX,
    ];
    for arch in [Arch::X86_64, Arch::Aarch64] {
        for op in OPS {
            for v in edges {
                let prog = compile(&one_rule(op, v, v & 5), arch, &|_| false, (6, 1)).unwrap();
                for arg in edges {
                    let want = holds(op, v, v & 5, arg);
                    assert_eq!(
                        matched(arch, &prog, arg),
                        want,
                        "{arch}: {arg:#x} {op} {v:#x}"
                    );
                }
            }
        }
    }
}

#[test]
fn comparisons_on_arm_see_the_low_word_only() {
    let edges = [
        0,
        1,
        5,
        0x7fff_ffff,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0005,
        u64::MAX,
    ];
    for op in OPS {
        for v in edges {
            let prog = compile(&one_rule(op, v, v & 5), Arch::Arm, &|_| false, (6, 1)).unwrap();
            for arg in edges {
                // The filter behaves as for the argument with its high word 0 (which is what
                // the kernel gives a 32-bit ABI); a high word in seccomp_data is not read.
                let want = holds(op, v, v & 5, arg & 0xffff_ffff);
                assert_eq!(
                    matched(Arch::Arm, &prog, arg),
                    want,
                    "arm: {arg:#x} {op} {v:#x}"
                );
            }
        }
    }
    let prog = compile(
        &one_rule("SCMP_CMP_EQ", 5, 0),
        Arch::Arm,
        &|_| false,
        (6, 1),
    )
    .unwrap();
    assert!(matched(Arch::Arm, &prog, 0x1_0000_0005));
    // Only the low words of arguments are loaded (16 + 8 * i).
    let loads = prog
        .instructions()
        .iter()
        .filter(|i| i.code == bpf::LD_W_ABS && i.k >= 16);
    assert!(loads.clone().count() > 0 && loads.clone().all(|i| i.k % 8 == 0));
}

#[test]
fn rules_apply_in_order_and_conditions_are_anded() {
    let json = br#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":99,"syscalls":[
        {"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
        {"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":11,
         "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":2,"op":"SCMP_CMP_EQ"}]},
        {"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":12,
         "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
        {"names":["write"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":10,"op":"SCMP_CMP_GE"},
         {"index":0,"value":20,"op":"SCMP_CMP_LT"}]},
        {"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{"index":0,"value":3,"op":"SCMP_CMP_EQ"}]},
        {"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":99,"args":[{"index":0,"value":3,"op":"SCMP_CMP_EQ"}]},
        {"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":3,"op":"SCMP_CMP_EQ"}]}
    ]}"#;
    let p = Profile::parse(json, "t").unwrap();
    for arch in Arch::ALL {
        let prog = compile(&p, arch, &|_| false, (6, 1)).unwrap();
        let w = |a: &[u64]| verdict(&prog, arch, "write", a);
        assert_eq!(w(&[1, 2]), errno(11), "{arch}: both conditions");
        assert_eq!(w(&[1, 3]), errno(12), "{arch}: the first condition only");
        assert_eq!(w(&[15]), ALLOW, "{arch}: a range");
        assert_eq!(w(&[20]), errno(13), "{arch}: the unconditional rule");
        assert_eq!(w(&[3]), errno(13), "{arch}");
        // The first matching rule decides, even if a later one would allow.
        assert_eq!(verdict(&prog, arch, "read", &[3]), errno(99), "{arch}");
        assert_eq!(verdict(&prog, arch, "getpid", &[]), errno(99), "{arch}");
    }
}

#[test]
fn large_profiles_keep_every_jump_encodable() {
    // Every call of each table with its own action: ~400 ranges, a tree whose halves are
    // past the 8-bit offsets, and a body per call with an argument rule.
    for arch in Arch::ALL {
        let names: Vec<String> = match arch {
            Arch::X86_64 => syscalls::x86_64::Sysno::iter()
                .map(|s| s.name().to_string())
                .collect(),
            Arch::Aarch64 => syscalls::aarch64::Sysno::iter()
                .map(|s| s.name().to_string())
                .collect(),
            Arch::Arm => syscalls::arm::Sysno::iter()
                .map(|s| s.name().to_string())
                .collect(),
        };
        let entries: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let args = if i % 3 == 0 {
                    r#","args":[{"index":1,"value":7,"op":"SCMP_CMP_EQ"}]"#
                } else {
                    ""
                };
                format!(
                    r#"{{"names":["{n}"],"action":"SCMP_ACT_ERRNO","errnoRet":{}{args}}}"#,
                    i % 4000 + 1
                )
            })
            .collect();
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{}]}}"#,
            entries.join(",")
        );
        let prog = compile(
            &Profile::parse(json.as_bytes(), "big").unwrap(),
            arch,
            &|_| false,
            (6, 1),
        )
        .unwrap();
        for (i, n) in names.iter().enumerate() {
            let e = errno(i as u32 % 4000 + 1);
            if i % 3 == 0 {
                assert_eq!(verdict(&prog, arch, n, &[0, 7]), e, "{arch}: {n}");
                assert_eq!(verdict(&prog, arch, n, &[0, 8]), ALLOW, "{arch}: {n}");
            } else {
                assert_eq!(verdict(&prog, arch, n, &[]), e, "{arch}: {n}");
            }
        }
        println!(
            "{arch}: {} calls -> {} instructions",
            names.len(),
            prog.len()
        );
    }
}

#[test]
fn too_large_programs_and_bad_jumps_are_errors() {
    let entries: Vec<String> = (0..700)
        .map(|i| {
            let args: Vec<String> = (0..6)
                .map(|a| format!(r#"{{"index":{a},"value":{i},"op":"SCMP_CMP_GT"}}"#))
                .collect();
            format!(
                r#"{{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":{},"args":[{}]}}"#,
                i % 2 + 1,
                args.join(",")
            )
        })
        .collect();
    let json = format!(
        r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{}]}}"#,
        entries.join(",")
    );
    let p = Profile::parse(json.as_bytes(), "huge.json").unwrap();
    let e = compile(&p, Arch::X86_64, &|_| false, (6, 1)).unwrap_err();
    assert_eq!(
        (e.origin.as_str(), e.field.as_str()),
        ("huge.json", "syscalls")
    );
    assert!(e.reason.contains("at most 4096"), "{e}");

    let mut asm = Asm::default();
    let far = asm.label();
    asm.jump(JEQ_K, 1, To::L(far), To::Next);
    for _ in 0..256 {
        asm.ret(0);
    }
    asm.bind(far);
    asm.ret(0);
    assert!(asm.finish().unwrap_err().contains("over 256 instructions"));
    let mut asm = Asm::default();
    let back = asm.label();
    asm.bind(back);
    asm.ret(0);
    asm.ja(back);
    assert!(asm.finish().unwrap_err().contains("only forward"));
    let mut asm = Asm::default();
    let never = asm.label();
    asm.ja(never);
    assert!(asm.finish().unwrap_err().contains("never bound"));
}

#[test]
fn log_needs_linux_4_14() {
    let p = Profile::parse(br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_LOG"}]}"#, "t").unwrap();
    let e = compile(&p, Arch::Arm, &|_| false, (4, 9)).unwrap_err();
    assert_eq!(e.field, "syscalls[0].action");
    assert!(compile(&p, Arch::Arm, &|_| false, (4, 14)).is_ok());
}

#[test]
fn the_default_profile_is_small_and_fast() {
    for arch in Arch::ALL {
        for (label, set) in [
            ("default caps", CapSet::default_set()),
            ("all caps", CapSet::all(40)),
        ] {
            let prog = compile(
                Profile::runtime_default(),
                arch,
                &|n: &str| set.has(n),
                (6, 1),
            )
            .unwrap();
            let steps = |name: &str, args: &[u64]| {
                let nr = arch.syscall(name).unwrap();
                interp::run(&prog, &Data::new(nr, arch.audit(), args)).steps
            };
            let (read, clone, mount) = (
                steps("read", &[]),
                steps("clone", &[17]),
                steps("mount", &[]),
            );
            println!(
                "{arch} ({label}): {} instructions; steps: read {read}, clone {clone}, mount {mount}",
                prog.len()
            );
            assert!(prog.len() < 1024, "{arch}: {}", prog.len());
            assert!(
                read < 40 && clone < 40 && mount < 40,
                "{arch}: {read} {clone} {mount}"
            );
        }
    }
}
