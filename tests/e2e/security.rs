//! A pod never owns its host: default capabilities, seccomp, masked `/proc`, and the
//! `securityContext` settings, checked from inside the containers (their own processes, not
//! `tidelet exec`) and from the host.

use std::time::Duration;

use tidelet_e2e::*;

use crate::pod_yaml;

const WAIT: Duration = Duration::from_secs(30);

/// What containerd and Docker give a root container: 14 capabilities.
const DEFAULT_CAPS: &str = "00000000a80425fb";

/// The container's log once it printed `done`.
fn log_when_done(a: &Agent, pod: &str, c: &str) -> String {
    wait_for(&format!("{pod}/{c} to print done"), WAIT, || {
        let out = a.cli(&["logs", pod, "-c", c]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains("\ndone").then_some(text)
    })
}

/// `Key:\tvalue` from a `/proc/<pid>/status` text.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

fn host_status(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
}

/// The checks a default container runs on itself (busybox sh): each prints one line.
const SELF_CHECKS: &str = r#"grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status
(echo '|/tmp/pwned %p' > /proc/sys/kernel/core_pattern) 2>/dev/null && echo core_pattern=written || echo core_pattern=refused
mkdir -p /mnt/cg /mnt/proc
mount -t cgroup -o memory cgroup /mnt/cg 2>/dev/null && echo cgroupfs=mounted || echo cgroupfs=refused
mount -t cgroup2 none /mnt/cg 2>/dev/null && echo cgroup2=mounted || echo cgroup2=refused
mount -t proc proc /mnt/proc 2>/dev/null && echo procfs=mounted || echo procfs=refused
for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/latency_stats /proc/timer_stats; do [ -e $f ] && echo "masked $f=$(wc -c < $f)"; done
for d in /proc/acpi /proc/asound /proc/scsi /sys/firmware /sys/devices/virtual/powercap; do [ -e $d ] && echo "masked $d=$(ls $d | wc -l)"; done
grep -E ' /proc/(sys|bus|fs|irq|sysrq-trigger) ' /proc/mounts | awk '{print "ro " $2 "=" substr($4, 1, 2)}'
echo 1 > /proc/sys/net/ipv4/ip_forward 2>/dev/null && echo procsys=written || echo procsys=refused
unshare -U true 2>/dev/null && echo userns=made || echo userns=refused
unshare -m true 2>/dev/null && echo mountns=made || echo mountns=refused
echo fds=$(ls /proc/self/fd | tr '\n' ' ')
"#;

#[test]
fn a_default_pod_gets_containerds_confinement_and_cannot_reach_the_host() {
    if !privileged() {
        return;
    }
    let core_pattern = "/proc/sys/kernel/core_pattern";
    let before = std::fs::read_to_string(core_pattern).unwrap();
    let mut a = Agent::start();
    let script = format!("{SELF_CHECKS}ls {} >/dev/null 2>&1 && echo agent_root=visible || echo agent_root=hidden\necho done; sleep 3600", a.root.display());
    a.write("plain.yaml", &pod_yaml("plain", "", &[("c", &script, "")]));
    let name = a.full_name("plain");
    a.wait_running(&name);
    let log = log_when_done(&a, &name, "c");
    // Whatever the pod managed, the host's core_pattern is put back before anything fails.
    let after = std::fs::read_to_string(core_pattern).unwrap();
    if after != before {
        std::fs::write(core_pattern, before.trim_end()).unwrap();
    }
    assert_eq!(
        after, before,
        "the pod changed the host's core_pattern: {log}"
    );
    for want in [
        format!("CapEff:\t{DEFAULT_CAPS}"),
        format!("CapPrm:\t{DEFAULT_CAPS}"),
        format!("CapBnd:\t{DEFAULT_CAPS}"),
        "CapInh:\t0000000000000000".to_string(),
        "CapAmb:\t0000000000000000".to_string(),
        "NoNewPrivs:\t0".to_string(),
        "Seccomp:\t2".to_string(),
        "core_pattern=refused".into(),
        "cgroupfs=refused".into(),
        "cgroup2=refused".into(),
        "procfs=refused".into(),
        "procsys=refused".into(),
        "userns=refused".into(),
        "mountns=refused".into(),
        // stdin, stdout, stderr and ls's own directory: nothing of the supervisor's leaks.
        "fds=0 1 2 3\n".into(),
        "agent_root=hidden".into(),
    ] {
        assert!(
            log.contains(&want),
            "{want:?} not in the container's log:\n{log}"
        );
    }
    // runc's masked paths: each one this kernel has reads as empty inside; its read-only
    // paths are read-only mounts.
    let masked: Vec<&str> = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/latency_stats",
        "/proc/timer_stats",
        "/proc/acpi",
        "/proc/asound",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]
    .into_iter()
    .filter(|p| std::path::Path::new(p).exists())
    .collect();
    assert!(masked.contains(&"/proc/keys"), "this kernel has /proc/keys");
    for p in masked {
        assert!(
            log.contains(&format!("masked {p}=0\n")),
            "{p} not masked:\n{log}"
        );
    }
    for p in [
        "/proc/sys",
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sysrq-trigger",
    ] {
        if std::path::Path::new(p).exists() {
            assert!(
                log.contains(&format!("ro {p}=ro\n")),
                "{p} not read-only:\n{log}"
            );
        }
    }
    // From the host: the container's process.
    let status = host_status(a.container_pid(&name, "c"));
    assert_eq!(status_field(&status, "CapEff"), DEFAULT_CAPS);
    assert_eq!(status_field(&status, "Seccomp"), "2");
    // describe pod shows it.
    let d = String::from_utf8_lossy(&a.cli(&["describe", "pod", &name]).stdout).to_string();
    for want in [
        "Privileged:      false",
        "Capabilities:    CAP_CHOWN,CAP_DAC_OVERRIDE,CAP_FOWNER,CAP_FSETID,CAP_KILL,CAP_SETGID,CAP_SETUID,CAP_SETPCAP,CAP_NET_BIND_SERVICE,CAP_NET_RAW,CAP_SYS_CHROOT,CAP_MKNOD,CAP_AUDIT_WRITE,CAP_SETFCAP",
        "Seccomp:         RuntimeDefault",
        "NoNewPrivs:      false",
        "ReadOnlyRoot:    false",
        "User Namespace:  host",
    ] {
        assert!(d.contains(want), "{want:?} not in describe:\n{d}");
    }
    a.stop_all();
}

#[test]
fn capabilities_no_new_privs_and_privileged_follow_the_security_context() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    let status = "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status";
    let net = "ip link add d0 type bridge 2>/dev/null && echo link=made || echo link=refused; mkdir -p /mnt/t; mount -t tmpfs t /mnt/t 2>/dev/null && echo tmpfs=mounted || echo tmpfs=refused";
    let sys = "grep ' /sys ' /proc/mounts | grep -q ' rw,' && echo sys=rw || echo sys=ro; echo timer_list=$(head -c 16 /proc/timer_list | wc -c); (: < /dev/kmsg) 2>/dev/null && echo kmsg=opened || echo kmsg=refused";
    let c = |cmd: &str| format!("{status}; {cmd}; echo done; sleep 3600");
    let containers = [
        (
            "dropall",
            c(net),
            "    securityContext: {capabilities: {drop: [ALL]}}\n",
        ),
        (
            "netadmin",
            c(net),
            "    securityContext: {capabilities: {add: [NET_ADMIN]}}\n",
        ),
        ("plain", c(net), ""),
        (
            "nnp",
            c("true"),
            "    securityContext: {allowPrivilegeEscalation: false}\n",
        ),
        ("priv", c(sys), "    securityContext: {privileged: true}\n"),
    ];
    let list: Vec<(&str, &str, &str)> = containers
        .iter()
        .map(|(n, cmd, sc)| (*n, cmd.as_str(), *sc))
        .collect();
    a.write("caps.yaml", &pod_yaml("caps", "", &list));
    let name = a.full_name("caps");
    a.wait_running(&name);
    let logs: std::collections::BTreeMap<&str, String> = containers
        .iter()
        .map(|(n, _, _)| (*n, log_when_done(&a, &name, n)))
        .collect();
    // Every capability tidelet holds (as root here, the test's own permitted set).
    let all = status_field(&host_status(std::process::id() as i32), "CapPrm");
    let cases: &[(&str, &[&str])] = &[
        (
            "dropall",
            &[
                "CapEff:\t0000000000000000",
                "CapBnd:\t0000000000000000",
                "link=refused",
                "tmpfs=refused",
                "Seccomp:\t2",
            ],
        ),
        // NET_ADMIN (bit 12) on top of the default set: a link in its own netns (a bridge:
        // the host's kernel here has no dummy driver), no mounts.
        (
            "netadmin",
            &[
                "CapEff:\t00000000a80435fb",
                "link=made",
                "tmpfs=refused",
                "Seccomp:\t2",
            ],
        ),
        (
            "plain",
            &[
                "CapEff:\t00000000a80425fb",
                "link=refused",
                "tmpfs=refused",
                "NoNewPrivs:\t0",
            ],
        ),
        (
            "nnp",
            &["NoNewPrivs:\t1", "Seccomp:\t2", "CapEff:\t00000000a80425fb"],
        ),
        (
            "priv",
            // The host's devices too: /dev/kmsg is not in a default container's /dev.
            &[
                "Seccomp:\t0",
                "sys=rw",
                "timer_list=16",
                "NoNewPrivs:\t0",
                "kmsg=opened",
            ],
        ),
    ];
    for (c, wants) in cases {
        for w in *wants {
            assert!(logs[c].contains(w), "{c}: {w:?} not in\n{}", logs[c]);
        }
    }
    assert!(
        logs["priv"].contains(&format!("CapEff:\t{all}")),
        "privileged gets every capability tidelet has ({all}):\n{}",
        logs["priv"]
    );
    // The link is the pod's, not the host's.
    assert!(!std::path::Path::new("/sys/class/net/d0").exists());
    a.stop_all();
}

#[test]
fn run_as_non_root_with_a_root_image_waits_with_kubelets_reason() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    a.write(
        "nonroot.yaml",
        &pod_yaml(
            "nonroot",
            "  securityContext: {runAsNonRoot: true}\n",
            &[("c", "sleep 3600", "")],
        ),
    );
    let m = a.waiting_message(&a.full_name("nonroot"), "CreateContainerConfigError");
    assert!(
        m.contains("container has runAsNonRoot and image will run as root"),
        "{m}"
    );
    // With a non-root runAsUser the same pod runs.
    a.write(
        "nonroot2.yaml",
        &pod_yaml(
            "nonroot2",
            "  securityContext: {runAsNonRoot: true, runAsUser: 1000}\n",
            &[(
                "c",
                "grep -E '^(Uid|CapEff|CapBnd):' /proc/self/status; echo done; sleep 3600",
                "",
            )],
        ),
    );
    let name = a.full_name("nonroot2");
    a.wait_running(&name);
    let log = log_when_done(&a, &name, "c");
    // A non-root process keeps the default set in its bounding set only, as under containerd.
    for w in [
        "Uid:\t1000\t1000\t1000\t1000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t00000000a80425fb",
    ] {
        assert!(log.contains(w), "{w:?} not in\n{log}");
    }
    a.stop_all();
}

#[test]
fn a_localhost_profile_denies_exactly_its_syscall_and_bad_profiles_are_named() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    let profiles = a.root.join("seccomp/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    // chmod(2) on x86_64, fchmodat(2) where there is no chmod (aarch64): one operation.
    std::fs::write(
        profiles.join("no-chmod.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            "syscalls": [{"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .unwrap();
    std::fs::write(profiles.join("broken.json"), "{\"defaultAction\": ").unwrap();
    std::fs::write(
        profiles.join("typo.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["chmodd"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    // Unreadable as a profile (root reads any file: a directory stands for what cannot be read).
    std::fs::create_dir_all(profiles.join("dir.json")).unwrap();
    std::fs::write(
        profiles.join("sparc.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_SPARC"], "syscalls": []}"#,
    )
    .unwrap();
    let local = |p: &str| {
        format!(
            "    securityContext: {{seccompProfile: {{type: Localhost, localhostProfile: {p}}}}}\n"
        )
    };
    let probe = "touch /tmp/f && echo touch=ok; chmod 600 /tmp/f 2>&1 || echo chmod=refused; mkdir /tmp/d && echo mkdir=ok; grep Seccomp: /proc/self/status; echo done; sleep 3600";
    a.write(
        "local.yaml",
        &pod_yaml(
            "local",
            "",
            &[
                ("deny", probe, &local("profiles/no-chmod.json")),
                ("default", probe, ""),
            ],
        ),
    );
    let name = a.full_name("local");
    a.wait_running(&name);
    let deny = log_when_done(&a, &name, "deny");
    for w in [
        "touch=ok",
        "Operation not permitted",
        "chmod=refused",
        "mkdir=ok",
        "Seccomp:\t2",
    ] {
        assert!(deny.contains(w), "{w:?} not in\n{deny}");
    }
    let default = log_when_done(&a, &name, "default");
    assert!(!default.contains("chmod=refused"), "{default}");
    let d = String::from_utf8_lossy(&a.cli(&["describe", "pod", &name]).stdout).to_string();
    assert!(
        d.contains("Seccomp:         Localhost (profiles/no-chmod.json)"),
        "{d}"
    );
    // Bad profiles: the container waits with the file and the reason; the others run.
    let cases = [
        ("missing", "profiles/missing.json", "No such file"),
        ("broken", "profiles/broken.json", "EOF while parsing"),
        (
            "typo",
            "profiles/typo.json",
            "\"chmodd\": not a system call",
        ),
        ("unreadable", "profiles/dir.json", "not a regular file"),
        (
            "arch",
            "profiles/sparc.json",
            "\"SCMP_ARCH_SPARC\": not a libseccomp architecture",
        ),
    ];
    for (pod, file, _) in cases {
        a.write(
            &format!("{pod}.yaml"),
            &pod_yaml(pod, "", &[("c", "sleep 3600", &local(file))]),
        );
    }
    for (pod, file, why) in cases {
        let m = a.waiting_message(&a.full_name(pod), "CreateContainerConfigError");
        let path = profiles.parent().unwrap().join(file).display().to_string();
        assert!(m.contains(&path) && m.contains(why), "{pod}: {m}");
    }
    assert!(all_running(&a.pod(&name).unwrap()));
    assert!(a.alive());
    a.stop_all();
}

#[test]
fn pod_sysctls_are_set_in_the_pods_namespaces_and_forbidden_ones_fail_the_pod() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start_with_config(Some("allowedUnsafeSysctls: [\"net.core.somaxconn\"]\n"));
    let host_port_start = read_trim("/proc/sys/net/ipv4/ip_unprivileged_port_start");
    let host_somaxconn = read_trim("/proc/sys/net/core/somaxconn");
    a.write(
        "sysctl.yaml",
        &pod_yaml(
            "sysctl",
            "  securityContext:\n    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: \"53\"}, {name: net/core/somaxconn, value: \"77\"}]\n",
            &[("c", "echo start=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start) somax=$(cat /proc/sys/net/core/somaxconn); echo done; sleep 3600", "")],
        ),
    );
    let name = a.full_name("sysctl");
    a.wait_running(&name);
    let log = log_when_done(&a, &name, "c");
    assert!(log.contains("start=53 somax=77"), "{log}");
    assert_eq!(
        read_trim("/proc/sys/net/ipv4/ip_unprivileged_port_start"),
        host_port_start
    );
    assert_eq!(read_trim("/proc/sys/net/core/somaxconn"), host_somaxconn);
    // Not namespaced, or not allowed: the pod fails with kubelet's reason and never runs.
    for (pod, sysctl, why) in [
        ("hostwide", "kernel.core_pattern", "not namespaced"),
        ("unlisted", "net.ipv4.ip_forward", "not allowlisted"),
    ] {
        a.write(
            &format!("{pod}.yaml"),
            &pod_yaml(
                pod,
                &format!("  securityContext:\n    sysctls: [{{name: {sysctl}, value: \"1\"}}]\n"),
                &[("c", "sleep 3600", "")],
            ),
        );
        let p = a.wait_pod(&a.full_name(pod), "failed with SysctlForbidden", |p| {
            p["status"]["reason"] == "SysctlForbidden"
        });
        let msg = p["status"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(sysctl) && msg.contains(why), "{pod}: {msg}");
    }
    assert!(all_running(&a.pod(&name).unwrap()));
    a.stop_all();
}

#[test]
fn bad_security_contexts_are_refused_by_validate_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "    securityContext: {capabilities: {add: [NET_ADMIN, CAP_WIZARD]}}\n",
            "spec.containers[0].securityContext.capabilities.add[1]",
            "\"CAP_WIZARD\" is not a Linux capability",
        ),
        (
            "    securityContext: {procMount: Unmasked}\n",
            "spec.containers[0].securityContext.procMount",
            "hostUsers: false",
        ),
        (
            "    securityContext: {privileged: true, allowPrivilegeEscalation: false}\n",
            "spec.containers[0].securityContext.allowPrivilegeEscalation",
            "`privileged` to true",
        ),
        (
            "    securityContext: {seccompProfile: {type: Localhost, localhostProfile: ../../etc/x.json}}\n",
            "spec.containers[0].securityContext.seccompProfile.localhostProfile",
            "must not contain \"..\"",
        ),
    ];
    for (i, (sc, field, why)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("p{i}.yaml"));
        std::fs::write(&file, pod_yaml("p", "", &[("c", "true", sc)])).unwrap();
        let out = std::process::Command::new(bin())
            .args(["validate", file.to_str().unwrap()])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{sc}: {text}");
        assert!(text.contains(field) && text.contains(why), "{sc}: {text}");
        assert!(text.contains(&file.display().to_string()), "{sc}: {text}");
    }
}

#[test]
fn host_users_false_maps_root_to_an_unprivileged_host_id_and_owns_what_it_writes() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Two pods' worth of ids for tidelet's user, in files of the test's own.
    let sub = dir.path().join("subid");
    std::fs::write(&sub, "tidelet:1000000:131072\n").unwrap();
    // A shared directory anyone may write, and one only the host's root may.
    use std::os::unix::fs::PermissionsExt;
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let config = format!(
        "userNamespaces: {{user: tidelet, subuidFile: {0}, subgidFile: {0}}}\n",
        sub.display()
    );
    let mut a = Agent::start_with_config(Some(&config));
    let volumes = format!(
        "  hostUsers: false\n  volumes:\n  - {{name: data, hostPath: {{path: {}}}}}\n  - {{name: locked, hostPath: {{path: {}}}}}\n  - {{name: scratch, emptyDir: {{}}}}\n",
        data.display(),
        locked.display()
    );
    let script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; grep -E '^(CapEff|Seccomp):' /proc/self/status; \
        echo hi > /data/by-root && echo data=written; { echo hi > /locked/x; } 2>/dev/null && echo locked=written || echo locked=refused; \
        echo hi > /scratch/x && echo scratch=written; \
        touch /etc/new && echo rootfs=written; ls -ln /bin/busybox; echo done; sleep 3600";
    let mut yaml = pod_yaml("userns", &volumes, &[("c", script, "")]);
    yaml.push_str("    volumeMounts: [{name: data, mountPath: /data}, {name: locked, mountPath: /locked}, {name: scratch, mountPath: /scratch}]\n");
    a.write("userns.yaml", &yaml);
    let name = a.full_name("userns");
    a.wait_running(&name);
    // uid_map's columns are padded: compare with single spaces.
    let squeeze = |t: &str| {
        t.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let log = squeeze(&log_when_done(&a, &name, "c"));
    // Container root is host id 1000000 (or 1065536); everything checked against the map.
    // The map's line is found by its form: the container's stdout and stderr reach the log as
    // two streams, so a line of stderr may come first.
    let start: u32 = log
        .lines()
        .find_map(|l| {
            let f: Vec<u32> = l.split(' ').map_while(|w| w.parse().ok()).collect();
            (f.len() == 3 && f[0] == 0).then(|| f[1])
        })
        .unwrap_or_else(|| panic!("no uid_map line:\n{log}"));
    assert!(start == 1_000_000 || start == 1_065_536, "{log}");
    for w in [
        format!("0 {start} 65536"),
        "data=written".to_string(),
        "locked=refused".into(),
        "scratch=written".into(),
        "rootfs=written".into(),
        "Seccomp: 2".into(),
        format!("CapEff: {DEFAULT_CAPS}"),
    ] {
        assert!(log.contains(&w), "{w:?} not in\n{log}");
    }
    // The image's root-owned files are the pod's root's inside (idmapped layers).
    assert!(
        log.lines()
            .any(|l| l.contains("/bin/busybox") && l.split_whitespace().nth(2) == Some("0")),
        "{log}"
    );
    // On the host, what container root wrote is owned by the unprivileged id.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(data.join("by-root")).unwrap();
    assert_eq!((m.uid(), m.gid()), (start, start));
    let pid = a.container_pid(&name, "c");
    assert_eq!(
        read_trim(format!("/proc/{pid}/uid_map"))
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", &start.to_string(), "65536"]
    );
    assert!(read_trim(format!("/proc/{pid}/status")).contains(&format!("Uid:\t{start}\t{start}")));
    let d = String::from_utf8_lossy(&a.cli(&["describe", "pod", &name]).stdout).to_string();
    assert!(
        d.contains(&format!("User Namespace:  0 -> {start} (65536 ids)")),
        "{d}"
    );
    // tidelet exec runs in the pod's user namespace too, as the container's user.
    let out = a.cli(&[
        "exec",
        &name,
        "--",
        "sh",
        "-c",
        "cat /proc/self/uid_map; grep CapEff /proc/self/status",
    ]);
    let text = squeeze(&String::from_utf8_lossy(&out.stdout));
    assert!(
        text.contains(&format!("0 {start} 65536")) && text.contains(DEFAULT_CAPS),
        "{text}"
    );
    // A second pod gets the other range; a third finds none and fails with the reason,
    // the others untouched.
    a.write(
        "userns2.yaml",
        &pod_yaml(
            "userns2",
            "  hostUsers: false\n",
            &[("c", "cat /proc/self/uid_map; echo done; sleep 3600", "")],
        ),
    );
    let other = squeeze(&log_when_done(&a, &a.full_name("userns2"), "c"));
    let other_start = if start == 1_000_000 {
        1_065_536
    } else {
        1_000_000
    };
    assert!(other.contains(&format!("0 {other_start} 65536")), "{other}");
    a.write(
        "userns3.yaml",
        &pod_yaml(
            "userns3",
            "  hostUsers: false\n",
            &[("c", "sleep 3600", "")],
        ),
    );
    let p = a.wait_pod(&a.full_name("userns3"), "failed for want of ids", |p| {
        p["status"]["phase"] == "Failed"
    });
    let msg = p["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("held by other pods"), "{p}");
    assert!(all_running(&a.pod(&name).unwrap()));
    // The ranges are kept across a restart of the agent: the pods keep theirs.
    a.kill9();
    a.spawn();
    a.wait_running(&name);
    assert_eq!(a.container_pid(&name, "c"), pid);
    // A pod gone gives its range back: the third pod can then start.
    a.remove("userns2.yaml");
    a.remove("userns3.yaml");
    wait_for("userns2 gone", WAIT, || {
        a.pod(&a.full_name("userns2")).is_none().then_some(())
    });
    a.write(
        "userns4.yaml",
        &pod_yaml(
            "userns4",
            "  hostUsers: false\n",
            &[("c", "cat /proc/self/uid_map; echo done; sleep 3600", "")],
        ),
    );
    let again = squeeze(&log_when_done(&a, &a.full_name("userns4"), "c"));
    assert!(again.contains(&format!("0 {other_start} 65536")), "{again}");
    a.stop_all();
}

#[test]
fn host_users_false_without_subordinate_ids_fails_naming_the_file() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "userNamespaces: {{subuidFile: {0}/none, subgidFile: {0}/none}}\n",
        dir.path().display()
    );
    let mut a = Agent::start_with_config(Some(&config));
    a.write(
        "plain.yaml",
        &pod_yaml("plain", "", &[("c", "sleep 3600", "")]),
    );
    a.write(
        "userns.yaml",
        &pod_yaml("userns", "  hostUsers: false\n", &[("c", "sleep 3600", "")]),
    );
    let p = a.wait_pod(&a.full_name("userns"), "failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    let msg = p["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("subordinate ids") && msg.contains(&format!("{}/none", dir.path().display())),
        "{p}"
    );
    a.wait_running(&a.full_name("plain"));
    a.stop_all();
}

#[test]
fn fs_group_owns_the_pods_empty_dirs_and_joins_every_container() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    let mut yaml = pod_yaml(
        "fsgroup",
        "  securityContext: {runAsUser: 1000, fsGroup: 2000, fsGroupChangePolicy: OnRootMismatch}\n  volumes: [{name: scratch, emptyDir: {}}]\n",
        &[("c", "id -G; echo hi > /scratch/f && echo write=ok; ls -lnd /scratch /scratch/f | awk '{print $1, $4}'; echo done; sleep 3600", "")],
    );
    yaml.push_str("    volumeMounts: [{name: scratch, mountPath: /scratch}]\n");
    a.write("fsgroup.yaml", &yaml);
    let name = a.full_name("fsgroup");
    a.wait_running(&name);
    let log = log_when_done(&a, &name, "c");
    // The non-root user may write the volume through its group; new files inherit it.
    for w in ["2000", "write=ok", "drwxrwsr-x 2000", "-rw-r--r-- 2000"] {
        assert!(log.contains(w), "{w:?} not in\n{log}");
    }
    assert!(
        log.lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .any(|g| g == "2000"),
        "{log}"
    );
    a.stop_all();
}
