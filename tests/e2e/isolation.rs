//! Namespaces, cgroups, oom_score_adj and the container's view of its own root.

use tidelet_e2e::*;

use crate::pod_yaml;

#[test]
fn two_container_pod_shares_net_ipc_uts_and_not_mnt_pid() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    a.write(
        "web.yaml",
        &pod_yaml(
            "web",
            "",
            &[("a", "sleep 3600", ""), ("b", "sleep 3600", "")],
        ),
    );
    let name = a.full_name("web");
    a.wait_running(&name);
    let (pa, pb) = (a.container_pid(&name, "a"), a.container_pid(&name, "b"));
    // Each container's root is its own overlay, mounted `volatile` where the kernel can
    // (5.10+): its writable layer is thrown away with the attempt, so it is never synced.
    let root = std::fs::read_to_string(format!("/proc/{pa}/mountinfo"))
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(root.contains(" - overlay overlay "), "{root}");
    let (major, minor) = kernel_version();
    if (major, minor) >= (5, 10) {
        // Shown as `volatile`, or `fsync=volatile` by kernels that also know `fsync=`.
        assert!(
            root.split(',')
                .any(|o| o == "volatile" || o == "fsync=volatile"),
            "{root}"
        );
    }
    let infra = ppid(pa);
    assert_eq!(
        infra,
        ppid(pb),
        "both containers are children of the pod's infra process"
    );
    // The infra process sits in its own leaf of the pod's cgroup, each container in its own.
    let uid = a.pod(&name).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(
        "infra process in the pod's _infra cgroup",
        std::time::Duration::from_secs(5),
        || {
            let cg = std::fs::read_to_string(format!("/proc/{infra}/cgroup")).unwrap();
            cg.lines()
                .any(|l| {
                    (l.contains(":memory:") || l.starts_with("0::"))
                        && l.ends_with(&format!("pod{uid}/_infra"))
                })
                .then_some(())
        },
    );
    let cg = std::fs::read_to_string(format!("/proc/{pa}/cgroup")).unwrap();
    assert!(
        cg.lines()
            .any(|l| l.contains(":memory:") && l.ends_with(&format!("pod{uid}/a"))),
        "{cg}"
    );
    let me = std::process::id() as i32;
    for kind in ["net", "ipc", "uts"] {
        assert_eq!(
            ns(pa, kind),
            ns(pb, kind),
            "{kind} shared between containers"
        );
        assert_eq!(
            ns(pa, kind),
            ns(infra, kind),
            "{kind} held by the infra process"
        );
        assert_ne!(
            ns(pa, kind),
            ns(me, kind),
            "{kind} is the pod's own, not the host's"
        );
    }
    for kind in ["mnt", "pid"] {
        assert_ne!(ns(pa, kind), ns(pb, kind), "{kind} is per container");
        assert_ne!(ns(pa, kind), ns(me, kind), "{kind} is not the host's");
    }
    // Inside: pid 1, the pod name as hostname, /etc/hostname, lo up, read-only /sys, /dev nodes.
    let out = a.cli(&["exec", &name, "-c", "a", "--", "sh", "-c",
        "echo pid=$$; hostname; cat /etc/hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /dev; touch /sys/x 2>&1 || echo sys-ro; cat /sys/class/net/lo/operstate; ls /proc/1 >/dev/null && echo proc-ok"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "exec failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("\n{name}\n{name}\n")),
        "hostname and /etc/hostname are the pod name: {text}"
    );
    assert!(
        text.contains("sleep 3600"),
        "pid 1 is the container's command: {text}"
    );
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue",
    ] {
        assert!(
            text.split_whitespace().any(|w| w == dev),
            "/dev/{dev} present: {text}"
        );
    }
    assert!(text.contains("sys-ro"), "/sys is read-only: {text}");
    assert!(text.contains("proc-ok"));
    assert!(
        text.contains("unknown") || text.contains("up"),
        "lo exists in the pod's netns: {text}"
    );
    a.stop_all();
}

#[test]
fn host_network_and_shared_pid_namespace_follow_the_spec() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    a.write(
        "hn.yaml",
        &pod_yaml(
            "hn",
            "  hostNetwork: true\n  shareProcessNamespace: true\n",
            &[("a", "sleep 3600", ""), ("b", "sleep 3601", "")],
        ),
    );
    let name = a.full_name("hn");
    a.wait_running(&name);
    let (pa, pb) = (a.container_pid(&name, "a"), a.container_pid(&name, "b"));
    let me = std::process::id() as i32;
    assert_eq!(
        ns(pa, "net"),
        ns(me, "net"),
        "hostNetwork uses the host's network namespace"
    );
    assert_eq!(
        ns(pa, "pid"),
        ns(pb, "pid"),
        "shareProcessNamespace: one pid namespace"
    );
    assert_ne!(ns(pa, "pid"), ns(me, "pid"));
    assert_ne!(
        ns(pa, "mnt"),
        ns(pb, "mnt"),
        "mount namespaces stay per container"
    );
    // Each container sees the other's process.
    let out = a.cli(&[
        "exec",
        &name,
        "-c",
        "a",
        "--",
        "sh",
        "-c",
        "ps 2>/dev/null || ls /proc",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sleep 3601")
            || text
                .split_whitespace()
                .filter(|w| w.parse::<u32>().is_ok())
                .count()
                >= 2,
        "shared pid ns: {text}"
    );
    a.stop_all();
}

#[test]
fn cgroup_limits_qos_and_oom_score_adj_are_written() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    let guaranteed = "    resources:\n      limits: {cpu: 250m, memory: 64Mi}\n";
    let burstable = "    resources:\n      requests: {cpu: 100m, memory: 32Mi}\n      limits: {memory: 128Mi}\n";
    a.write(
        "g.yaml",
        &pod_yaml("g", "", &[("c", "sleep 3600", guaranteed)]),
    );
    a.write(
        "b.yaml",
        &pod_yaml("b", "", &[("c", "sleep 3600", burstable)]),
    );
    a.write("be.yaml", &pod_yaml("be", "", &[("c", "sleep 3600", "")]));
    let (g, b, be) = (a.full_name("g"), a.full_name("b"), a.full_name("be"));
    let gp = a.wait_running(&g);
    let bp = a.wait_running(&b);
    let bep = a.wait_running(&be);
    assert_eq!(gp["status"]["qosClass"], "Guaranteed");
    assert_eq!(bp["status"]["qosClass"], "Burstable");
    assert_eq!(bep["status"]["qosClass"], "BestEffort");

    let adj = |pod: &str| {
        read_trim(format!("/proc/{}/oom_score_adj", a.container_pid(pod, "c")))
            .parse::<i64>()
            .unwrap()
    };
    // Negative scores need CAP_SYS_RESOURCE (which container sandboxes often drop): without
    // it tidelet keeps the lowest score it may set, 0, and says so in its log.
    if cap_sys_resource() {
        assert_eq!(adj(&g), -997);
    } else {
        assert_eq!(adj(&g), 0);
        assert!(a.agent_log().contains("no CAP_SYS_RESOURCE"));
    }
    assert_eq!(adj(&be), 1000);
    let mem_total_kib: i64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let want = (1000 - 1000 * (32 << 20) / (mem_total_kib * 1024)).clamp(3, 999);
    assert_eq!(adj(&b), want, "Burstable formula");

    let guid = gp["metadata"]["uid"].as_str().unwrap();
    let c = format!("kubepods/pod{guid}/c");
    let mem = a.memory_cgroup(&c);
    let cpu = a.cpu_cgroup(&c);
    if mem.join("memory.limit_in_bytes").exists() {
        assert_eq!(
            read_trim(mem.join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(read_trim(cpu.join("cpu.cfs_quota_us")), "25000");
        assert_eq!(read_trim(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read_trim(cpu.join("cpu.shares")), "256");
        // The process is in it.
        let procs = read_trim(mem.join("cgroup.procs"));
        assert!(
            procs
                .lines()
                .any(|l| l == a.container_pid(&g, "c").to_string()),
            "container in its memory cgroup"
        );
        // Pod level and QoS level.
        assert_eq!(
            read_trim(
                a.memory_cgroup(&format!("kubepods/pod{guid}"))
                    .join("memory.limit_in_bytes")
            ),
            (64u64 << 20).to_string()
        );
        let buid = bp["metadata"]["uid"].as_str().unwrap();
        assert!(a
            .memory_cgroup(&format!("kubepods/burstable/pod{buid}/c"))
            .exists());
        assert_eq!(
            read_trim(
                a.cpu_cgroup(&format!("kubepods/burstable/pod{buid}/c"))
                    .join("cpu.shares")
            ),
            "102"
        );
        let beuid = bep["metadata"]["uid"].as_str().unwrap();
        assert_eq!(
            read_trim(
                a.cpu_cgroup(&format!("kubepods/besteffort/pod{beuid}/c"))
                    .join("cpu.shares")
            ),
            "2"
        );
    } else {
        assert_eq!(read_trim(mem.join("memory.max")), (64u64 << 20).to_string());
        assert_eq!(read_trim(mem.join("cpu.max")), "25000 100000");
    }
    a.stop_all();
}

fn cap_sys_resource() -> bool {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = s.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap();
    u64::from_str_radix(caps.trim(), 16).unwrap() & (1 << 24) != 0
}

#[test]
fn containers_and_exec_run_as_the_pod_user() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    let mut yaml = pod_yaml(
        "user",
        "  securityContext: {runAsUser: 1000, runAsGroup: 1000}\n",
        &[("c", "id -u > /tmp/uid; sleep 3600", "")],
    );
    yaml.push_str("    workingDir: /tmp\n");
    a.write("user.yaml", &yaml);
    let name = a.full_name("user");
    a.wait_running(&name);
    let pid = a.container_pid(&name, "c");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "1000"),
        "{uid_line}"
    );
    let out = a.cli(&["exec", &name, "--", "sh", "-c", "id -u; id -g; pwd"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1000\n1000\n/tmp\n");
    // exec passes the command's exit status through
    let out = a.cli(&["exec", &name, "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    a.stop_all();
}

/// The running kernel's major and minor version, from uname(2).
fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname().unwrap();
    let release = release.release().to_string_lossy().into_owned();
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}
