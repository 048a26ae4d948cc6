//! Parsing errors (table), and the RuntimeDefault profile's behaviour on each of the three
//! ABIs, checked with the test interpreter using each ABI's own system-call numbers.

use super::interp::{self, Data};
use super::profile::{Action, ArgCmp, Op};
use super::*;
use crate::security::caps::{self, CapSet};

pub(super) const ALLOW: u32 = 0x7fff_0000;
pub(super) const KILL_PROCESS: u32 = 0x8000_0000;
pub(super) const fn errno(e: u32) -> u32 {
    0x0005_0000 | e
}
const EPERM: u32 = errno(1);
const ENOSYS: u32 = errno(38);

const CLONE_NEWUSER: u64 = 0x1000_0000;
const CLONE_NEWNS: u64 = 0x0002_0000;
const SIGCHLD: u64 = 17;
const AF_INET: u64 = 2;
const AF_VSOCK: u64 = 40;
const ADDR_NO_RANDOMIZE: u64 = 0x0040000;

fn with_caps(extra: &[&str]) -> CapSet {
    let mut set = CapSet::default_set();
    for c in extra {
        set.insert(caps::number(c).unwrap());
    }
    set
}

fn compile_default(arch: Arch, set: CapSet, kernel: (u32, u32)) -> Program {
    compile(
        Profile::runtime_default(),
        arch,
        &|n: &str| set.has(n),
        kernel,
    )
    .unwrap()
}

/// The verdict of `prog` for call `name` of `arch` (its number on `arch`).
pub(super) fn verdict(prog: &Program, arch: Arch, name: &str, args: &[u64]) -> u32 {
    let nr = arch
        .syscall(name)
        .unwrap_or_else(|| panic!("{name} is not a call on {arch}"));
    interp::run(prog, &Data::new(nr, arch.audit(), args)).ret
}

#[test]
fn bad_profiles_name_the_field_and_the_reason() {
    let entry = |e: &str| format!(r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{e}]}}"#);
    let cases: Vec<(String, &str, &str)> = vec![
        ("{\"defaultAction\": ".into(), "defaultAction", "EOF while parsing a value at line 1 column 18"),
        ("{\n\"defaultAction\" 1}".into(), "", "expected `:` at line 2 column 17"),
        ("[\"SCMP_ACT_ALLOW\"]".into(), "", "a profile is a JSON object"),
        ("{\"defaultAction\": \"SCMP_ACT_ALLOW\"} x".into(), "", "trailing characters"),
        ("{}".into(), "", "missing field `defaultAction`"),
        (
            entry(r#"{"names":["read","foo"],"action":"SCMP_ACT_ALLOW"}"#),
            "syscalls[0].names[1]",
            "\"foo\": not a system call on any architecture tidelet knows",
        ),
        (
            entry(r#"{"name":"fooo","action":"SCMP_ACT_ALLOW"}"#),
            "syscalls[0].name",
            "\"fooo\": not a system call",
        ),
        (
            entry(r#"{"names":[],"action":"SCMP_ACT_ALLOW"}"#),
            "syscalls[0].names",
            "names no system call",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_Z80"]}"#.into(),
            "architectures[1]",
            "\"SCMP_ARCH_Z80\": not a libseccomp architecture",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["x86"]}]}"#.into(),
            "archMap[0].subArchitectures[0]",
            "not a libseccomp architecture",
        ),
        (
            entry(r#"{"names":["read"],"action":"SCMP_ACT_ALLOWW"}"#),
            "syscalls[0].action",
            "\"SCMP_ACT_ALLOWW\": not a seccomp action",
        ),
        (r#"{"defaultAction":"ALLOW"}"#.into(), "defaultAction", "not a seccomp action"),
        (
            entry(r#"{"names":["read"],"action":"SCMP_ACT_NOTIFY"}"#),
            "syscalls[0].action",
            "SCMP_ACT_NOTIFY: not supported",
        ),
        (r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#.into(), "defaultAction", "not supported"),
        (
            entry(r#"{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":70000}"#),
            "syscalls[0].action",
            "errnoRet 70000 is more than 4095",
        ),
        (
            entry(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQQ"}]}"#),
            "syscalls[0].args[0].op",
            "\"SCMP_CMP_EQQ\": not a comparison",
        ),
        (
            entry(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}"#),
            "syscalls[0].args[1].index",
            "6: a system call has arguments 0 to 5",
        ),
        (
            entry(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":-1,"op":"SCMP_CMP_EQ"}]}"#),
            "syscalls[0].args[0].value",
            "invalid value: integer `-1`",
        ),
        (
            entry(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN","CAP_SYS_WIZARD"]}}"#),
            "syscalls[0].includes.caps[1]",
            "\"CAP_SYS_WIZARD\": not a capability",
        ),
        (
            entry(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["NOPE"]}}"#),
            "syscalls[0].excludes.caps[0]",
            "not a capability",
        ),
        (
            entry(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4"}}"#),
            "syscalls[0].includes.minKernel",
            "\"4\": not a kernel version",
        ),
        (
            entry(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.x"}}"#),
            "syscalls[0].includes.minKernel",
            "not a kernel version",
        ),
        (
            entry(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["SCMP_ARCH_X86_64"]}}"#),
            "syscalls[0].includes.arches[0]",
            "as Go does",
        ),
        (
            entry(r#"{"nmes":["read"],"action":"SCMP_ACT_ALLOW"}"#),
            "syscalls[0].nmes",
            "unknown field `nmes`",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","sycalls":[]}"#.into(),
            "sycalls",
            "unknown field `sycalls`",
        ),
        (
            entry(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minkernel":"4.8"}}"#),
            "syscalls[0].includes.minkernel",
            "unknown field",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_FAST"]}"#.into(),
            "flags[1]",
            "\"SECCOMP_FILTER_FLAG_FAST\": not a seccomp filter flag",
        ),
    ];
    for (json, field, reason) in cases {
        let e = Profile::parse(json.as_bytes(), "/etc/p.json").unwrap_err();
        assert_eq!(e.origin, "/etc/p.json", "{json}");
        assert_eq!(e.field, field, "{json}: {e}");
        assert!(e.reason.contains(reason), "{json}: {e}");
        let shown = e.to_string();
        assert!(
            shown.starts_with("/etc/p.json: ") && shown.contains(field),
            "{shown}"
        );
    }
}

#[test]
fn good_profiles_parse_with_every_form() {
    let json = r#"{
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64", "SCMP_ARCH_S390X"],
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"], "listenerPath": "/run/x.sock",
        "listenerMetadata": "m",
        "syscalls": [
            {"name": "read", "action": "SCMP_ACT_ALLOW", "args": null, "comment": "",
             "includes": {}, "excludes": {}},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 7,
             "includes": {"arches": ["amd64", "s390x"], "caps": ["sys_ptrace"], "minKernel": "4.8.0"}},
            {"names": ["write"], "action": "SCMP_ACT_KILL_PROCESS",
             "args": [{"index": 5, "value": 18446744073709551615, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    }"#;
    let p = Profile::parse(json.as_bytes(), "p").unwrap();
    assert_eq!(p.default_action, Action::Errno(13));
    assert_eq!(p.architectures.len(), 3);
    assert_eq!(p.rules[0].names, ["read"]);
    assert_eq!(p.rules[1].action, Action::Trace(7));
    assert_eq!(p.rules[1].includes.caps, ["CAP_SYS_PTRACE"]);
    assert_eq!(p.rules[1].includes.min_kernel, Some((4, 8)));
    assert_eq!(
        p.rules[2].args,
        [ArgCmp {
            index: 5,
            op: Op::MaskedEq,
            value: u64::MAX,
            value_two: 1
        }]
    );
    assert_eq!(p.rules[2].field, "syscalls[2]");
    // SCMP_ACT_ERRNO without errnoRet is EPERM, SCMP_ACT_KILL a thread kill.
    let p = Profile::parse(br#"{"defaultAction":"SCMP_ACT_KILL","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO"}]}"#, "p").unwrap();
    assert_eq!(
        (p.default_action, p.rules[0].action),
        (Action::KillThread, Action::Errno(1))
    );
}

#[test]
fn runtime_default_is_mobys_profile() {
    let p = Profile::runtime_default();
    assert_eq!(p.default_action, Action::Errno(1));
    assert!(p.rules[0].names.len() > 300, "the allow list");
    assert!(p
        .rules
        .iter()
        .any(|r| r.includes.caps == ["CAP_SYS_ADMIN"] && r.names.iter().any(|n| n == "mount")));
    assert!(p.rules.iter().any(|r| r
        .args
        .first()
        .is_some_and(|a| a.value == 2_114_060_288 && a.op == Op::MaskedEq)));
    assert!(std::ptr::eq(p, Profile::runtime_default()), "parsed once");
}

#[test]
fn runtime_default_denies_and_allows_on_every_arch() {
    let denied = [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "keyctl",
        "add_key",
        "request_key",
        "kexec_load",
        "bpf",
        "perf_event_open",
        "open_by_handle_at",
        "init_module",
        "finit_module",
        "reboot",
        "swapon",
        "pivot_root",
        "acct",
        "settimeofday",
        "clock_settime",
    ];
    let allowed = [
        "read",
        "write",
        "openat",
        "close",
        "execve",
        "futex",
        "exit_group",
        "getpid",
        "brk",
        "rt_sigaction",
        "fstat",
        "chroot",
        "socketpair",
        "seccomp",
    ];
    for arch in Arch::ALL {
        let prog = compile_default(arch, CapSet::default_set(), (6, 1));
        for name in denied {
            assert_eq!(verdict(&prog, arch, name, &[]), EPERM, "{arch}: {name}");
        }
        for name in allowed {
            assert_eq!(verdict(&prog, arch, name, &[]), ALLOW, "{arch}: {name}");
        }
        assert_eq!(verdict(&prog, arch, "clone3", &[]), ENOSYS, "{arch}");
        let clone = |flags: u64| verdict(&prog, arch, "clone", &[flags, 0, 0, 0, 0]);
        assert_eq!(clone(SIGCHLD), ALLOW, "{arch}: fork-style clone");
        assert_eq!(clone(0x003d_0f00), ALLOW, "{arch}: pthread_create's clone");
        assert_eq!(clone(CLONE_NEWUSER | SIGCHLD), EPERM, "{arch}");
        assert_eq!(clone(CLONE_NEWNS), EPERM, "{arch}");
        assert_eq!(
            verdict(&prog, arch, "socket", &[AF_VSOCK, 1, 0]),
            EPERM,
            "{arch}"
        );
        assert_eq!(
            verdict(&prog, arch, "socket", &[AF_INET, 1, 0]),
            ALLOW,
            "{arch}"
        );
        for p in [0, 8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
            assert_eq!(
                verdict(&prog, arch, "personality", &[p]),
                ALLOW,
                "{arch}: {p:#x}"
            );
        }
        assert_eq!(
            verdict(&prog, arch, "personality", &[ADDR_NO_RANDOMIZE]),
            EPERM
        );
        // Another ABI's calls (i386's, and each other's) are killed.
        let read = arch.syscall("read").unwrap();
        for other in [0x4000_0003].into_iter().chain(Arch::ALL.map(Arch::audit)) {
            let want = if other == arch.audit() {
                ALLOW
            } else {
                KILL_PROCESS
            };
            let got = interp::run(&prog, &Data::new(read, other, &[])).ret;
            assert_eq!(got, want, "{arch}: read with arch {other:#x}");
        }
        // A number beyond every table gets the default.
        assert_eq!(
            interp::run(&prog, &Data::new(0x3fff_0000, arch.audit(), &[])).ret,
            EPERM
        );
    }
}

#[test]
fn capabilities_and_kernel_version_open_their_rules() {
    for arch in Arch::ALL {
        let admin = compile_default(arch, with_caps(&["SYS_ADMIN"]), (6, 1));
        for name in ["mount", "umount2", "unshare", "setns", "sethostname", "bpf"] {
            assert_eq!(verdict(&admin, arch, name, &[]), ALLOW, "{arch}: {name}");
        }
        assert_eq!(
            verdict(&admin, arch, "clone", &[CLONE_NEWUSER]),
            ALLOW,
            "{arch}"
        );
        assert_eq!(verdict(&admin, arch, "clone3", &[]), ALLOW, "{arch}");
        assert_eq!(verdict(&admin, arch, "reboot", &[]), EPERM, "{arch}");

        let more = compile_default(arch, with_caps(&["SYS_BOOT", "SYS_MODULE", "BPF"]), (6, 1));
        for name in ["reboot", "init_module", "delete_module", "bpf"] {
            assert_eq!(verdict(&more, arch, name, &[]), ALLOW, "{arch}: {name}");
        }
        assert_eq!(
            verdict(&more, arch, "perf_event_open", &[]),
            EPERM,
            "{arch}"
        );

        // ptrace: from Linux 4.8 for everyone (minKernel), before it with CAP_SYS_PTRACE.
        let old = compile_default(arch, CapSet::default_set(), (4, 4));
        assert_eq!(verdict(&old, arch, "ptrace", &[]), EPERM, "{arch}");
        let new = compile_default(arch, CapSet::default_set(), (4, 8));
        assert_eq!(verdict(&new, arch, "ptrace", &[]), ALLOW, "{arch}");
        let traced = compile_default(arch, with_caps(&["SYS_PTRACE"]), (4, 4));
        assert_eq!(verdict(&traced, arch, "kcmp", &[]), ALLOW, "{arch}");
        assert_eq!(verdict(&old, arch, "kcmp", &[]), EPERM, "{arch}");
    }
    // Without CAP_SYS_CHROOT, chroot goes too.
    let mut set = CapSet::default_set();
    set.remove(caps::number("SYS_CHROOT").unwrap());
    let prog = compile_default(Arch::Aarch64, set, (6, 1));
    assert_eq!(verdict(&prog, Arch::Aarch64, "chroot", &[]), EPERM);
}

#[test]
fn arch_specific_rules_follow_the_target() {
    let x86 = compile_default(Arch::X86_64, CapSet::default_set(), (6, 1));
    let a64 = compile_default(Arch::Aarch64, CapSet::default_set(), (6, 1));
    let arm = compile_default(Arch::Arm, CapSet::default_set(), (6, 1));
    assert_eq!(verdict(&x86, Arch::X86_64, "arch_prctl", &[]), ALLOW);
    assert_eq!(verdict(&x86, Arch::X86_64, "modify_ldt", &[]), ALLOW);
    assert_eq!(verdict(&x86, Arch::X86_64, "open", &[]), ALLOW);
    // ARM's private calls, from the arm/arm64 rule.
    for name in [
        "cacheflush",
        "set_tls",
        "breakpoint",
        "arm_fadvise64_64",
        "sync_file_range2",
    ] {
        assert_eq!(verdict(&arm, Arch::Arm, name, &[]), ALLOW, "{name}");
    }
    assert_eq!(Arch::Arm.syscall("cacheflush"), Some(0xf_0002));
    assert_eq!(verdict(&arm, Arch::Arm, "_llseek", &[]), ALLOW);
    assert_eq!(verdict(&arm, Arch::Arm, "mmap2", &[]), ALLOW);
    assert_eq!(verdict(&arm, Arch::Arm, "get_tls", &[]), EPERM);
    // Names another ABI has are skipped (`open` on aarch64), not errors.
    assert_eq!(Arch::Aarch64.syscall("open"), None);
    assert_eq!(Arch::X86_64.syscall("cacheflush"), None);

    // The tables are per ABI: x86_64's mount is 165, aarch64's is 40; aarch64's 165 is
    // getrusage. x86_64's numbers run through the aarch64 program give aarch64's verdicts.
    assert_eq!(Arch::X86_64.syscall("mount"), Some(165));
    assert_eq!(Arch::Aarch64.syscall("mount"), Some(40));
    assert_eq!(Arch::Aarch64.syscall("getrusage"), Some(165));
    let at =
        |p: &Program, arch: Arch, nr: u32| interp::run(p, &Data::new(nr, arch.audit(), &[])).ret;
    assert_eq!(at(&x86, Arch::X86_64, 165), EPERM);
    assert_eq!(at(&a64, Arch::Aarch64, 165), ALLOW);
    assert_eq!(at(&a64, Arch::Aarch64, 40), EPERM);
    assert_ne!(x86, a64);
    let differ = (0..450).filter(|nr| at(&x86, Arch::X86_64, *nr) != at(&a64, Arch::Aarch64, *nr));
    assert!(differ.count() > 50);
}

#[test]
fn x32_calls_are_killed_on_x86_64() {
    let prog = compile_default(Arch::X86_64, CapSet::default_set(), (6, 1));
    let run = |nr: u32| interp::run(&prog, &Data::new(nr, Arch::X86_64.audit(), &[])).ret;
    assert_eq!(run(0x4000_0000), KILL_PROCESS, "x32 read");
    assert_eq!(run(0x4000_0000 | 59), KILL_PROCESS, "x32 execve");
    assert_eq!(
        run(0x4000_0000 | 520),
        KILL_PROCESS,
        "x32 execve (x32 number)"
    );
    assert_eq!(run(0xffff_fffe), KILL_PROCESS);
    // -1 (a tracer skipping a call) is no x32 call: the default.
    assert_eq!(run(0xffff_ffff), EPERM);
    let arm = compile_default(Arch::Arm, CapSet::default_set(), (6, 1));
    assert_eq!(
        interp::run(&arm, &Data::new(0x4000_0003, Arch::Arm.audit(), &[])).ret,
        EPERM
    );
}

#[test]
fn programs_round_trip_through_json() {
    let prog = compile_default(Arch::Arm, CapSet::default_set(), (6, 1));
    let json = serde_json::to_string(&prog).unwrap();
    assert!(json.starts_with(r#"{"arch":"arm","insns":["#), "{json}");
    let back: Program = serde_json::from_str(&json).unwrap();
    assert_eq!(back, prog);
    assert_eq!(back.instructions(), prog.instructions());
}

#[test]
fn kernel_releases_parse() {
    assert_eq!(super::parse_release("6.1.0-18-amd64"), Some((6, 1)));
    assert_eq!(super::parse_release("5.15.148-tegra"), Some((5, 15)));
    assert_eq!(super::parse_release("4.9"), Some((4, 9)));
    assert_eq!(super::parse_release("6.10rc1"), Some((6, 10)));
    assert_eq!(super::parse_release("linux"), None);
    let (major, _) = kernel_version();
    assert!(major >= 3, "{:?}", kernel_version());
}

/// Each ABI's system calls as Linux 6.1's UAPI headers number them (testdata/, made from
/// Debian's linux-libc-dev, -arm64-cross and -armhf-cross): `(name, number)`.
fn kernel_table(arch: Arch) -> Vec<(&'static str, u32)> {
    let text = match arch {
        Arch::X86_64 => include_str!("testdata/x86_64-linux-6.1.txt"),
        Arch::Aarch64 => include_str!("testdata/aarch64-linux-6.1.txt"),
        Arch::Arm => include_str!("testdata/arm-linux-6.1.txt"),
    };
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (n, nr) = l.split_once(' ').unwrap();
            (n, nr.parse().unwrap())
        })
        .collect()
}

#[test]
fn every_kernel_name_has_the_kernels_number_on_every_abi() {
    for arch in Arch::ALL {
        let wrong: Vec<String> = kernel_table(arch)
            .into_iter()
            .filter(|(n, nr)| arch.syscall(n) != Some(*nr))
            .map(|(n, nr)| format!("{n} (kernel {nr}, tidelet {:?})", arch.syscall(n)))
            .collect();
        assert!(wrong.is_empty(), "{arch}: {wrong:?}");
    }
}

#[test]
fn runtime_default_allows_every_call_moby_allows_unconditionally_on_every_abi() {
    let json: serde_json::Value = serde_json::from_str(include_str!("default.json")).unwrap();
    let mut plain = std::collections::BTreeSet::new();
    for e in json["syscalls"].as_array().unwrap() {
        let unconditional = e["action"] == "SCMP_ACT_ALLOW"
            && e.get("args")
                .is_none_or(|a| a.is_null() || a.as_array().is_some_and(|a| a.is_empty()))
            && e.get("includes")
                .is_none_or(|i| i.as_object().is_none_or(|o| o.is_empty()))
            && e.get("excludes")
                .is_none_or(|i| i.as_object().is_none_or(|o| o.is_empty()));
        if unconditional {
            for n in e["names"].as_array().unwrap() {
                plain.insert(n.as_str().unwrap().to_string());
            }
        }
    }
    assert!(plain.contains("newfstatat") && plain.contains("read"));
    for arch in Arch::ALL {
        let prog = compile_default(arch, CapSet::default_set(), (6, 1));
        let denied: Vec<&str> = kernel_table(arch)
            .into_iter()
            .filter(|(n, _)| plain.contains(*n))
            .filter(|(_, nr)| interp::run(&prog, &Data::new(*nr, arch.audit(), &[])).ret != ALLOW)
            .map(|(n, _)| n)
            .collect();
        assert!(
            denied.is_empty(),
            "{arch}: moby allows these, tidelet's filter does not: {denied:?}"
        );
    }
}
