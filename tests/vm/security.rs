//! A default pod's confinement on cgroup v2, on both architectures (`tests/vm/security.sh`,
//! sourced by `stage2` after the device stage; pod `pods/security.yaml`): the self-checks of
//! the host's e2e test (`tests/e2e/security.rs`) run in the guest, where tidelet's seccomp
//! compiler must use the guest's syscall numbers. Container `plain` (default) must stat a file
//! (newfstatat: each path check relies on it) and show containerd's 14 capabilities,
//! `NoNewPrivs` 0 and `Seccomp` 2; writing `core_pattern` and `/proc/sys`, mounting cgroup
//! (v1), cgroup2 and proc, `unshare -U` and `unshare -m` refused, while PID 1 (the control)
//! could do each; runc's masked paths that the guest has read as empty; `/proc/sys` and its
//! siblings, and `/sys`, read-only; no file descriptor of the supervisor's and no sight of the
//! agent's root. Container `sysadmin` (CAP_SYS_ADMIN added, `allowPrivilegeEscalation: true`)
//! makes a mount namespace and mounts a tmpfs: the capability-conditional rules of
//! RuntimeDefault compiled for this architecture. Container `nomkdir` (default capabilities,
//! Localhost `deny-mkdir.json`: mkdir and mkdirat -> EPERM) cannot `mkdir` ("Operation not
//! permitted") but can `touch`, while `plain` can `mkdir`: only the filter can refuse root
//! that, and only with the right numbers (mkdirat is 34 on aarch64, 258 on x86_64; a table for
//! the wrong architecture lets it through). The stage's guest time is a figure, printed, not
//! asserted.

use std::collections::BTreeMap;

use crate::get;

/// What containerd and Docker give a root container: 14 capabilities.
const DEFAULT_CAPS: &str = "00000000a80425fb";

/// The default set plus CAP_SYS_ADMIN (bit 21).
const SYS_ADMIN_CAPS: &str = "00000000a82425fb";

/// The masked paths of the default container, each one of which exists in both guests'
/// kernels (Debian's): an empty read means masked, not absent.
const MASKED_IN_EVERY_GUEST: [&str; 4] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/sys/firmware",
];

/// The marker `security.KEY` must be `want` (a missing one is named, without every marker).
fn expect(m: &BTreeMap<String, String>, key: &str, want: &str, why: &str) {
    let key = format!("security.{key}");
    assert_eq!(m.get(&key).map(String::as_str), Some(want), "{key}: {why}");
}

/// Everything the security stage must show.
pub fn check(m: &BTreeMap<String, String>) {
    assert!(
        !m.contains_key("security.timeout"),
        "security.timeout={}: a container of pod sec never printed `done` (its json: \
         security.json={:?})",
        get(m, "security.timeout"),
        m.get("security.json"),
    );

    // The control: PID 1 may do what the default container must not.
    for (k, v) in [
        ("cgroupfs", "mounted"),
        ("cgroup2", "mounted"),
        ("procfs", "mounted"),
        ("userns", "made"),
        ("mountns", "made"),
    ] {
        expect(
            m,
            &format!("host.{k}"),
            v,
            "PID 1 (the control) doing what the container tries",
        );
    }

    // The default container. First what every path check below relies on: a stat (busybox's
    // `[ -e ]`: newfstatat, 262 on x86_64, 79 on aarch64) that RuntimeDefault allows.
    expect(
        m,
        "plain.stat",
        "ok",
        "`[ -e /proc/self/status ]` in a default container: RuntimeDefault must allow stat \
         (newfstatat) by this architecture's number",
    );
    let plain: &[(&str, &str, &str)] = &[
        ("CapEff", DEFAULT_CAPS, "containerd's 14 capabilities"),
        ("CapPrm", DEFAULT_CAPS, "containerd's 14 capabilities"),
        ("CapBnd", DEFAULT_CAPS, "containerd's 14 capabilities"),
        ("CapInh", "0000000000000000", "no inheritable capabilities"),
        ("CapAmb", "0000000000000000", "no ambient capabilities"),
        ("NoNewPrivs", "0", "allowPrivilegeEscalation unset"),
        ("Seccomp", "2", "RuntimeDefault, a filter"),
        (
            "core_pattern",
            "refused",
            "writing /proc/sys/kernel/core_pattern",
        ),
        (
            "procsys",
            "refused",
            "writing /proc/sys/net/ipv4/ip_forward",
        ),
        ("cgroupfs", "refused", "mounting cgroup (v1)"),
        ("cgroup2", "refused", "mounting cgroup2"),
        ("procfs", "refused", "mounting proc"),
        ("userns", "refused", "unshare -U true"),
        ("mountns", "refused", "unshare -m true"),
        ("ro./sys", "ro", "/sys read-only"),
        (
            "fds",
            "0 1 2 3",
            "stdin, stdout, stderr and ls's directory: nothing of the supervisor's",
        ),
        (
            "agent_root",
            "hidden",
            "the agent's root from the container",
        ),
        (
            "mkdir",
            "ok",
            "mkdir under RuntimeDefault (nomkdir's control)",
        ),
    ];
    for (k, want, why) in plain {
        expect(m, &format!("plain.{k}"), want, why);
    }
    // runc's masked paths: each one this guest has reads as empty; its read-only paths are
    // read-only mounts.
    let masked: Vec<&str> = get(m, "security.host.masked").split_whitespace().collect();
    for p in MASKED_IN_EVERY_GUEST {
        assert!(
            masked.contains(&p),
            "security.host.masked: the guest's kernel has {p}: {masked:?}"
        );
    }
    for p in &masked {
        expect(
            m,
            &format!("plain.masked.{p}"),
            "0",
            "a masked path the guest has reads empty (no marker: the container did not see it)",
        );
    }
    let ro: Vec<&str> = get(m, "security.host.ro").split_whitespace().collect();
    assert!(
        ro.contains(&"/proc/sys"),
        "security.host.ro: the guest has /proc/sys: {ro:?}"
    );
    for p in &ro {
        expect(m, &format!("plain.ro.{p}"), "ro", "a read-only path");
    }
    // The same process from outside, through PID 1's /proc.
    expect(
        m,
        "plain.host_view",
        &format!("CapEff: {DEFAULT_CAPS} Seccomp: 2"),
        "the plain container's /proc/PID/status read by PID 1",
    );

    // CAP_SYS_ADMIN added: RuntimeDefault's rules for that capability allow unshare and mount.
    let sysadmin: &[(&str, &str, &str)] = &[
        (
            "CapEff",
            SYS_ADMIN_CAPS,
            "the default set plus CAP_SYS_ADMIN",
        ),
        ("NoNewPrivs", "0", "allowPrivilegeEscalation: true"),
        ("Seccomp", "2", "RuntimeDefault, a filter"),
        (
            "mountns",
            "made",
            "unshare -m true, allowed by RuntimeDefault's CAP_SYS_ADMIN rules",
        ),
        (
            "tmpfs",
            "mounted",
            "mount -t tmpfs, allowed by RuntimeDefault's CAP_SYS_ADMIN rules",
        ),
    ];
    for (k, want, why) in sysadmin {
        expect(m, &format!("sysadmin.{k}"), want, why);
    }

    // The Localhost profile: mkdir and mkdirat denied by number, nothing else.
    expect(
        m,
        "nomkdir.CapEff",
        DEFAULT_CAPS,
        "the default capabilities",
    );
    expect(m, "nomkdir.Seccomp", "2", "the Localhost profile, a filter");
    expect(
        m,
        "nomkdir.touch",
        "ok",
        "touch /tmp/y: the profile allows the rest",
    );
    let mkdir = get(m, "security.nomkdir.mkdir");
    assert!(
        mkdir.starts_with("refused") && mkdir.contains("Operation not permitted"),
        "security.nomkdir.mkdir: mkdir /tmp/x under deny-mkdir.json must fail with EPERM \
         (the filter's syscall numbers for this architecture): {mkdir:?}"
    );
}

/// The stage's figures: guest seconds from its start to the containers' reports and to its
/// end.
pub fn figures(m: &BTreeMap<String, String>) -> String {
    let secs = |k: &str| m.get(k).and_then(|v| v.parse::<f64>().ok());
    match (
        secs("security.start_at"),
        secs("security.reported_at"),
        secs("security.done_at"),
    ) {
        (Some(a), Some(r), Some(d)) => format!(
            "security stage: containers reported {:.2} s after the stage began, stage {:.2} s",
            r - a,
            d - a
        ),
        _ => "security stage: times missing".to_string(),
    }
}
