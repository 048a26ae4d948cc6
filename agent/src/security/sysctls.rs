//! Pod sysctls (`spec.securityContext.sysctls`) as kubelet admits them (pure): the safe set is
//! always allowed; other namespaced sysctls only when the node lists them in
//! `allowedUnsafeSysctls`; a sysctl no namespace isolates never (it would change the host).
//! `net.*` sysctls are set in the pod's network namespace, `kernel.shm*`, `kernel.msg*`,
//! `kernel.sem` and `fs.mqueue.*` in its IPC namespace, so a pod that shares the host's
//! network or IPC namespace may not set them.

/// kubelet's `SafeSysctlAllowlist` (Kubernetes 1.32).
pub const SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The namespace that isolates a sysctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Net,
    Ipc,
}

/// Which namespace isolates `name` (dotted form), as kubelet's `NamespacedBy`.
pub fn namespaced_by(name: &str) -> Option<Namespace> {
    if name == "kernel.sem"
        || name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name.starts_with("fs.mqueue.")
    {
        return Some(Namespace::Ipc);
    }
    name.starts_with("net.").then_some(Namespace::Net)
}

/// `net/ipv4/ip_forward` -> `net.ipv4.ip_forward` (kubelet accepts both separators; in the
/// slash form a dot is part of a name, as in `net/ipv4/conf/eno2.100/rp_filter`).
pub fn dotted(name: &str) -> String {
    if !name.contains('/') {
        return name.to_string();
    }
    name.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

/// The file under `/proc/sys` for a dotted name.
pub fn proc_path(dotted_name: &str) -> String {
    dotted_name
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect()
}

fn valid_name(name: &str) -> bool {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && p.as_bytes()[0].is_ascii_alphanumeric()
            && p.as_bytes()[p.len() - 1].is_ascii_alphanumeric()
    };
    name.len() <= 253 && name.split(['.', '/']).all(ok_part)
}

/// An `allowedUnsafeSysctls` entry: a namespaced name, or a prefix ending in `*`.
pub fn check_pattern(p: &str) -> Result<(), String> {
    let (base, glob) = match p.strip_suffix('*') {
        Some(b) => (b, true),
        None => (p, false),
    };
    let probe = if glob {
        format!("{base}x")
    } else {
        base.to_string()
    };
    if !glob && !valid_name(base) {
        return Err(format!("{p:?}: not a sysctl name"));
    }
    if namespaced_by(&dotted(&probe)).is_none() {
        return Err(format!(
            "{p:?}: not a namespaced sysctl; it would change the whole host and cannot be allowed"
        ));
    }
    Ok(())
}

/// Whether `name` (dotted) is allowed by one of `patterns`.
fn allowed_by(name: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(&dotted(prefix)),
        None => dotted(p) == name,
    })
}

/// A sysctl the pod may not set: the field and kubelet's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Forbidden {
    pub field: String,
    pub reason: String,
}

/// The pod's sysctls, dotted, in order, or the first that is forbidden (kubelet's
/// `SysctlForbidden`). `host_network`/`host_ipc`: the pod shares that namespace with the host.
pub fn admit(
    sysctls: &[(String, String)],
    host_network: bool,
    host_ipc: bool,
    allowed_unsafe: &[String],
) -> Result<Vec<(String, String)>, Forbidden> {
    let mut out = Vec::new();
    for (i, (name, value)) in sysctls.iter().enumerate() {
        let field = format!("spec.securityContext.sysctls[{i}].name");
        let bad = |reason: String| Forbidden {
            field: field.clone(),
            reason,
        };
        if !valid_name(name) {
            return Err(bad(format!("{name:?}: not a sysctl name")));
        }
        let d = dotted(name);
        let ns = namespaced_by(&d).ok_or_else(|| {
            bad(format!(
                "forbidden sysctl: {name:?} is not namespaced: it would change the whole host"
            ))
        })?;
        if ns == Namespace::Net && host_network {
            return Err(bad(format!(
                "forbidden sysctl: {name:?} not allowed with host net enabled"
            )));
        }
        if ns == Namespace::Ipc && host_ipc {
            return Err(bad(format!(
                "forbidden sysctl: {name:?} not allowed with host ipc enabled"
            )));
        }
        if !SAFE.contains(&d.as_str()) && !allowed_by(&d, allowed_unsafe) {
            return Err(bad(format!(
                "forbidden sysctl: {name:?} not allowlisted (it is not in the safe set; the node's allowedUnsafeSysctls may allow it)"
            )));
        }
        out.push((d, value.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str) -> Vec<(String, String)> {
        vec![(name.to_string(), "1".to_string())]
    }

    #[test]
    fn admission_follows_kubelet() {
        let unsafe_ok = vec!["net.core.*".to_string(), "kernel.msgmax".to_string()];
        // (name, hostNetwork, hostIPC, Ok(dotted) or Err(part of reason))
        let cases: &[(&str, bool, bool, Result<&str, &str>)] = &[
            (
                "net.ipv4.ip_unprivileged_port_start",
                false,
                false,
                Ok("net.ipv4.ip_unprivileged_port_start"),
            ),
            (
                "net/ipv4/ping_group_range",
                false,
                false,
                Ok("net.ipv4.ping_group_range"),
            ),
            (
                "kernel.shm_rmid_forced",
                false,
                false,
                Ok("kernel.shm_rmid_forced"),
            ),
            ("net.core.somaxconn", false, false, Ok("net.core.somaxconn")),
            ("kernel.msgmax", false, false, Ok("kernel.msgmax")),
            ("kernel.msgmnb", false, false, Err("not allowlisted")),
            ("net.ipv4.ip_forward", false, false, Err("not allowlisted")),
            ("kernel.core_pattern", false, false, Err("not namespaced")),
            ("vm.overcommit_memory", false, false, Err("not namespaced")),
            ("net.ipv4.tcp_syncookies", true, false, Err("host net")),
            ("kernel.shm_rmid_forced", false, true, Err("host ipc")),
            (
                "kernel.shm_rmid_forced",
                true,
                false,
                Ok("kernel.shm_rmid_forced"),
            ),
            ("Net.IPv4", false, false, Err("not a sysctl name")),
            ("net..x", false, false, Err("not a sysctl name")),
        ];
        for (name, hn, hi, want) in cases {
            let got = admit(&one(name), *hn, *hi, &unsafe_ok);
            match want {
                Ok(d) => assert_eq!(
                    got.unwrap(),
                    vec![(d.to_string(), "1".to_string())],
                    "{name}"
                ),
                Err(w) => {
                    let e = got.unwrap_err();
                    assert!(e.reason.contains(w), "{name}: {e}");
                    assert_eq!(e.field, "spec.securityContext.sysctls[0].name");
                }
            }
        }
    }

    #[test]
    fn allowed_patterns_must_be_namespaced() {
        for ok in ["net.*", "net.core.somaxconn", "kernel.shm*", "fs.mqueue.*"] {
            assert_eq!(check_pattern(ok), Ok(()), "{ok}");
        }
        for bad in [
            "kernel.*",
            "vm.swappiness",
            "*",
            "kernel.core_pattern",
            "NET.x",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_convert_between_forms() {
        assert_eq!(
            dotted("net/ipv4/conf/eno2.100/rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
        assert_eq!(
            proc_path("net.ipv4.conf.eno2/100.rp_filter"),
            "net/ipv4/conf/eno2.100/rp_filter"
        );
        assert_eq!(
            proc_path("kernel.shm_rmid_forced"),
            "kernel/shm_rmid_forced"
        );
    }
}
