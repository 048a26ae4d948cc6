//! Docker/OCI seccomp profiles: the JSON read strictly (an unknown key, action, operator,
//! architecture, capability or system call is an error naming its field, because a typo must
//! not silently weaken a profile) and checked into a [`Profile`] the compiler can trust.
//!
//! Accepted: moby's format (`defaultAction`, `defaultErrnoRet`, `architectures`, `archMap`,
//! `syscalls` entries with `names` or the older `name`, `action`, `errnoRet`, `args`,
//! `includes`, `excludes`, `comment`) and the OCI runtime spec's `linux.seccomp` (the same
//! keys plus `flags`, `listenerPath` and `listenerMetadata`, which are accepted and ignored;
//! an unknown `SECCOMP_FILTER_FLAG_*` is still an error).

use std::sync::OnceLock;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::arch::{self, Arch};
use crate::security::caps;

/// A profile that cannot be used: in file `origin`, field `field` (`syscalls[3].names[1]`,
/// `architectures[0]`, `defaultAction`; empty for the document as a whole), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {}{reason}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct ProfileError {
    pub origin: String,
    pub field: String,
    pub reason: String,
}

/// What a filter does with a call (`SCMP_ACT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    KillThread,
    KillProcess,
    Trap,
    /// Fail the call with this errno.
    Errno(u16),
    /// Hand the call to a `ptrace` tracer, with this data.
    Trace(u16),
    Allow,
    Log,
}

impl Action {
    /// The `SECCOMP_RET_*` value the filter returns.
    pub fn ret(self) -> u32 {
        match self {
            Action::KillProcess => 0x8000_0000,
            Action::KillThread => 0,
            Action::Trap => 0x0003_0000,
            Action::Errno(e) => 0x0005_0000 | u32::from(e),
            Action::Trace(d) => 0x7ff0_0000 | u32::from(d),
            Action::Log => 0x7ffc_0000,
            Action::Allow => 0x7fff_0000,
        }
    }
}

/// An argument comparison (`SCMP_CMP_*`), unsigned 64-bit as in libseccomp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `arg & value == value_two`.
    MaskedEq,
}

/// One `args` element: argument `index` (0-5) compared with `value` (and `value_two`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArgCmp {
    pub index: u8,
    pub op: Op,
    pub value: u64,
    pub value_two: u64,
}

/// `includes` or `excludes` of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Architecture names as moby writes them (`amd64`, `arm64`, `arm`, `s390x`...).
    pub arches: Vec<String>,
    /// Capability names, upper case with the `CAP_` prefix.
    pub caps: Vec<String>,
    /// `(major, minor)`.
    pub min_kernel: Option<(u32, u32)>,
}

/// One `syscalls` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its place in the file (`syscalls[3]`), for errors found when compiling.
    pub field: String,
    pub names: Vec<String>,
    pub action: Action,
    /// All must hold (AND).
    pub args: Vec<ArgCmp>,
    pub includes: Filter,
    pub excludes: Filter,
}

/// A parsed and checked profile. Only [`Profile::parse`] makes one, so the compiler can
/// trust it (argument indexes 0-5, at most 6 comparisons per rule, known names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub(crate) origin: String,
    pub(crate) default_action: Action,
    /// `architectures` and every `archMap` architecture and sub-architecture, as written.
    pub(crate) architectures: Vec<String>,
    pub(crate) rules: Vec<Rule>,
}

/// moby's default profile (see the module doc of `seccomp`).
const RUNTIME_DEFAULT: &[u8] = include_bytes!("default.json");

/// libseccomp's limit: a rule compares each of the 6 arguments at most once; tidelet allows
/// 6 comparisons in any order (they are ANDed).
const MAX_ARGS: usize = 6;

/// The `SECCOMP_FILTER_FLAG_*` names `flags` may hold (all ignored; see the module doc).
const FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_NEW_LISTENER",
    "SECCOMP_FILTER_FLAG_TSYNC_ESRCH",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

const EPERM: u32 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProfile {
    default_action: String,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<String>>,
    arch_map: Option<Vec<RawArchMap>>,
    syscalls: Option<Vec<RawSyscall>>,
    flags: Option<Vec<String>>,
    #[serde(rename = "listenerPath")]
    _listener_path: Option<IgnoredAny>,
    #[serde(rename = "listenerMetadata")]
    _listener_metadata: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawArchMap {
    architecture: String,
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSyscall {
    names: Option<Vec<String>>,
    name: Option<String>,
    action: String,
    errno_ret: Option<u32>,
    args: Option<Vec<RawArg>>,
    includes: Option<RawFilter>,
    excludes: Option<RawFilter>,
    #[serde(rename = "comment")]
    _comment: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawArg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFilter {
    arches: Option<Vec<String>>,
    caps: Option<Vec<String>>,
    min_kernel: Option<String>,
}

impl Profile {
    /// Parse a Docker/OCI JSON profile. `origin` names the file for errors.
    pub fn parse(json: &[u8], origin: &str) -> Result<Profile, ProfileError> {
        let err = |field: String, reason: String| ProfileError {
            origin: origin.to_string(),
            field,
            reason,
        };
        // serde would also take a struct from an array, by position: a profile is an object.
        if let Some(c) = json.iter().find(|c| !c.is_ascii_whitespace()) {
            if *c != b'{' {
                return Err(err(String::new(), "a profile is a JSON object".into()));
            }
        }
        let mut de = serde_json::Deserializer::from_slice(json);
        let raw: RawProfile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            err(field, e.into_inner().to_string())
        })?;
        de.end().map_err(|e| err(String::new(), e.to_string()))?;

        let default_action = action(&raw.default_action, raw.default_errno_ret)
            .map_err(|r| err("defaultAction".into(), r))?;
        let mut architectures = Vec::new();
        for (i, a) in raw.architectures.iter().flatten().enumerate() {
            architectures.push(scmp_arch(a).map_err(|r| err(format!("architectures[{i}]"), r))?);
        }
        for (i, m) in raw.arch_map.iter().flatten().enumerate() {
            let at = format!("archMap[{i}]");
            architectures.push(
                scmp_arch(&m.architecture).map_err(|r| err(format!("{at}.architecture"), r))?,
            );
            for (j, s) in m.sub_architectures.iter().flatten().enumerate() {
                architectures
                    .push(scmp_arch(s).map_err(|r| err(format!("{at}.subArchitectures[{j}]"), r))?);
            }
        }
        for (i, f) in raw.flags.iter().flatten().enumerate() {
            if !FLAGS.contains(&f.as_str()) {
                let reason = format!("{f:?}: not a seccomp filter flag ({})", FLAGS.join(", "));
                return Err(err(format!("flags[{i}]"), reason));
            }
        }
        let mut rules = Vec::new();
        for (i, s) in raw.syscalls.into_iter().flatten().enumerate() {
            rules.push(rule(s, format!("syscalls[{i}]")).map_err(|(f, r)| err(f, r))?);
        }
        Ok(Profile {
            origin: origin.to_string(),
            default_action,
            architectures,
            rules,
        })
    }

    /// The file it came from, as given to `parse`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn default_action(&self) -> Action {
        self.default_action
    }

    /// The architectures it lists (`architectures`, and `archMap` with sub-architectures).
    /// They do not change what `compile` builds (see the module doc of `seccomp`).
    pub fn architectures(&self) -> &[String] {
        &self.architectures
    }

    /// Its `syscalls` entries, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The RuntimeDefault profile (moby's `default.json`), parsed once.
    pub fn runtime_default() -> &'static Profile {
        static DEFAULT: OnceLock<Profile> = OnceLock::new();
        DEFAULT.get_or_init(|| {
            // The file is part of this build and a unit test parses it: this cannot fail.
            Profile::parse(RUNTIME_DEFAULT, "RuntimeDefault")
                .unwrap_or_else(|e| panic!("the embedded default seccomp profile: {e}"))
        })
    }
}

/// One `syscalls` entry checked; `Err((field, reason))`.
fn rule(s: RawSyscall, at: String) -> Result<Rule, (String, String)> {
    let mut names = Vec::new();
    let (list_field, list) = match (s.names, s.name) {
        (Some(list), _) if !list.is_empty() => (format!("{at}.names"), list),
        (_, Some(one)) => (format!("{at}.name"), vec![one]),
        _ => return Err((format!("{at}.names"), "names no system call".into())),
    };
    let single = list_field.ends_with(".name");
    for (j, n) in list.into_iter().enumerate() {
        if !arch::known_anywhere(&n) {
            let field = if single {
                list_field.clone()
            } else {
                format!("{list_field}[{j}]")
            };
            let reason = format!(
                "{n:?}: not a system call on any architecture tidelet knows (x86_64, aarch64, \
                 arm, x86)"
            );
            return Err((field, reason));
        }
        names.push(n);
    }
    let action = action(&s.action, s.errno_ret).map_err(|r| (format!("{at}.action"), r))?;
    let raw_args = s.args.unwrap_or_default();
    if raw_args.len() > MAX_ARGS {
        let reason = format!(
            "{} comparisons; at most {MAX_ARGS} in one rule",
            raw_args.len()
        );
        return Err((format!("{at}.args"), reason));
    }
    let mut args = Vec::new();
    for (j, a) in raw_args.into_iter().enumerate() {
        let af = format!("{at}.args[{j}]");
        let index = match u8::try_from(a.index) {
            Ok(i) if i <= 5 => i,
            _ => {
                let reason = format!("{}: a system call has arguments 0 to 5", a.index);
                return Err((format!("{af}.index"), reason));
            }
        };
        let op = op(&a.op).map_err(|r| (format!("{af}.op"), r))?;
        args.push(ArgCmp {
            index,
            op,
            value: a.value,
            value_two: a.value_two,
        });
    }
    Ok(Rule {
        names,
        action,
        args,
        includes: filter(s.includes, &format!("{at}.includes"))?,
        excludes: filter(s.excludes, &format!("{at}.excludes"))?,
        field: at,
    })
}

fn filter(f: Option<RawFilter>, at: &str) -> Result<Filter, (String, String)> {
    let Some(f) = f else {
        return Ok(Filter::default());
    };
    let mut out = Filter::default();
    for (i, a) in f.arches.into_iter().flatten().enumerate() {
        if !arch::RULE_ARCHES.contains(&a.as_str()) {
            let hint = if a.starts_with("SCMP_ARCH_") {
                " (rules name architectures as Go does: amd64, arm64, arm, ...)"
            } else {
                ""
            };
            return Err((
                format!("{at}.arches[{i}]"),
                format!("{a:?}: not an architecture name{hint}"),
            ));
        }
        out.arches.push(a);
    }
    for (i, c) in f.caps.into_iter().flatten().enumerate() {
        let Some(n) = caps::number(&c) else {
            return Err((
                format!("{at}.caps[{i}]"),
                format!("{c:?}: not a capability"),
            ));
        };
        // `number` accepted it, so it is in NAMES.
        let bare = caps::NAMES.get(n as usize).copied().unwrap_or_default();
        out.caps.push(format!("CAP_{bare}"));
    }
    if let Some(k) = f.min_kernel {
        let v = parse_kernel(&k).ok_or_else(|| {
            (
                format!("{at}.minKernel"),
                format!("{k:?}: not a kernel version (MAJOR.MINOR, as \"4.8\")"),
            )
        })?;
        out.min_kernel = Some(v);
    }
    Ok(out)
}

/// `"4.8"` (or `"4.8.1"`) -> (4, 8).
fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split('.');
    let num = |p: Option<&str>| -> Option<u32> {
        let p = p?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let major = num(parts.next())?;
    let minor = num(parts.next())?;
    match parts.next() {
        None => Some((major, minor)),
        Some(patch) if parts.next().is_none() && num(Some(patch)).is_some() => Some((major, minor)),
        Some(_) => None,
    }
}

fn scmp_arch(a: &str) -> Result<String, String> {
    if arch::SCMP_ARCHES.contains(&a) {
        Ok(a.to_string())
    } else {
        Err(format!(
            "{a:?}: not a libseccomp architecture (SCMP_ARCH_X86_64, ...)"
        ))
    }
}

/// `SCMP_ACT_*` with its `errnoRet` (EPERM when absent, as runc does).
fn action(name: &str, errno_ret: Option<u32>) -> Result<Action, String> {
    let data = |max: u32| -> Result<u16, String> {
        let v = errno_ret.unwrap_or(EPERM);
        match u16::try_from(v) {
            Ok(d) if v <= max => Ok(d),
            _ => Err(format!("{name}: errnoRet {v} is more than {max}")),
        }
    };
    Ok(match name {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        // The kernel returns -data: beyond MAX_ERRNO it is not an error return.
        "SCMP_ACT_ERRNO" => Action::Errno(data(4095)?),
        "SCMP_ACT_TRACE" => Action::Trace(data(0xffff)?),
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_NOTIFY" => {
            return Err(
                "SCMP_ACT_NOTIFY: not supported (tidelet has no seccomp agent to \
                        hand notifications to)"
                    .into(),
            )
        }
        _ => {
            return Err(format!(
                "{name:?}: not a seccomp action (SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, \
                 SCMP_ACT_KILL, SCMP_ACT_KILL_THREAD, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, \
                 SCMP_ACT_TRACE, SCMP_ACT_LOG)"
            ))
        }
    })
}

fn op(name: &str) -> Result<Op, String> {
    Ok(match name {
        "SCMP_CMP_NE" => Op::Ne,
        "SCMP_CMP_LT" => Op::Lt,
        "SCMP_CMP_LE" => Op::Le,
        "SCMP_CMP_EQ" => Op::Eq,
        "SCMP_CMP_GE" => Op::Ge,
        "SCMP_CMP_GT" => Op::Gt,
        "SCMP_CMP_MASKED_EQ" => Op::MaskedEq,
        _ => {
            return Err(format!(
                "{name:?}: not a comparison (SCMP_CMP_EQ, SCMP_CMP_NE, SCMP_CMP_LT, \
                 SCMP_CMP_LE, SCMP_CMP_GT, SCMP_CMP_GE, SCMP_CMP_MASKED_EQ)"
            ))
        }
    })
}

/// Whether `f`, as `includes`, holds for `arch`, these capabilities and kernel.
pub(crate) fn includes_hold(
    f: &Filter,
    arch: Arch,
    has_cap: &dyn Fn(&str) -> bool,
    kernel: (u32, u32),
) -> bool {
    (f.arches.is_empty() || f.arches.iter().any(|a| arch.matches_rule_arch(a)))
        && f.caps.iter().all(|c| has_cap(c))
        && f.min_kernel.is_none_or(|k| kernel >= k)
}

/// Whether `f`, as `excludes`, removes the rule: any of its conditions holds.
pub(crate) fn excludes_hold(
    f: &Filter,
    arch: Arch,
    has_cap: &dyn Fn(&str) -> bool,
    kernel: (u32, u32),
) -> bool {
    f.arches.iter().any(|a| arch.matches_rule_arch(a))
        || f.caps.iter().any(|c| has_cap(c))
        || f.min_kernel.is_some_and(|k| kernel >= k)
}
