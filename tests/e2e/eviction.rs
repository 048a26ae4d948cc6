//! Eviction under memory pressure, on the host's real cgroup v1 memory controller (the same
//! scenarios run on cgroup v2 in the QEMU guest, tests/vm). Each test limits its agent's
//! `kubepods` to `PODS_MEMORY` through `systemReserved` (capacity minus reservations), so the
//! host is never at risk, with `memory.available<100Mi`: eviction acts at 284 MiB of working
//! set, the kernel's OOM killer at 384 MiB.
//!
//! Memory is held by busybox `dd` processes blocked writing their buffer into a pipe nobody
//! reads (`dd bs=8M count=1 | sleep`): each holds its whole buffer, charged to its cgroup.

use std::time::Duration;

use serde_json::Value;
use tidelet_e2e::{privileged, read_trim, wait_for, Agent};

use crate::pod_yaml;

const MI: u64 = 1 << 20;
const PODS_MEMORY: u64 = 384 * MI;

/// A config that leaves `PODS_MEMORY` to the pods, with `extra` keys appended.
fn config(hard: &str, extra: &str) -> String {
    format!(
        "systemReserved:\n  memory: \"{}\"\nevictionHard:\n  memory.available: \"{hard}\"\nevictionPressureTransitionPeriod: 3s\n{extra}",
        tidelet_e2e::mem_total() - PODS_MEMORY
    )
}

/// Holds `mib` MiB and sleeps.
fn hold(mib: u64) -> String {
    format!("dd if=/dev/zero bs={mib}M count=1 2>/dev/null | sleep 3600 & wait")
}

/// Grows by `step` MiB every 0.2 s, without end.
fn grow(step: u64) -> String {
    format!("while true; do dd if=/dev/zero bs={step}M count=1 2>/dev/null | sleep 3600 & sleep 0.2; done")
}

fn guaranteed(mib: u64) -> String {
    format!("    resources:\n      requests: {{cpu: 100m, memory: {mib}Mi}}\n      limits: {{cpu: 100m, memory: {mib}Mi}}\n")
}

fn burstable(request: u64, limit: Option<u64>) -> String {
    match limit {
        Some(l) => format!("    resources:\n      requests: {{memory: {request}Mi}}\n      limits: {{memory: {l}Mi}}\n"),
        None => format!("    resources:\n      requests: {{memory: {request}Mi}}\n"),
    }
}

/// OOM kills the kernel made anywhere under `kubepods`.
fn kernel_oom_kills(a: &Agent) -> u64 {
    tidelet_e2e::v1_oom_kills_under(&a.memory_cgroup("kubepods"))
}

fn node(a: &Agent) -> Value {
    let out = a.cli(&["get", "node", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn condition(n: &Value, t: &str) -> Value {
    n["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .cloned()
        .unwrap_or_else(|| panic!("no {t} condition in {n}"))
}

fn evicted(p: &Value) -> bool {
    p["status"]["phase"] == "Failed" && p["status"]["reason"] == "Evicted"
}

fn wait_evicted(a: &Agent, name: &str) -> Value {
    wait_for(
        &format!("pod {name} evicted"),
        Duration::from_secs(60),
        || a.pod(&a.full_name(name)).filter(evicted),
    )
}

/// The pod runs and none of its containers was ever restarted or killed.
fn untouched(a: &Agent, name: &str) {
    let p = a.pod(&a.full_name(name)).unwrap();
    assert_eq!(p["status"]["phase"], "Running", "{name}: {p}");
    for c in p["status"]["containerStatuses"].as_array().unwrap() {
        assert_eq!(c["restartCount"], 0, "{name}: {c}");
        assert!(c["state"]["running"].is_object(), "{name}: {c}");
    }
}

#[test]
fn best_effort_hog_is_evicted_before_the_oom_killer_and_readmitted() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start_with_config(Some(&config("100Mi", "")));
    // allocatable = capacity - reservations - the hard threshold.
    let n = node(&a);
    let alloc = n["status"]["allocatable"]["memory"].as_str().unwrap();
    assert_eq!(
        alloc,
        format!("{}Ki", (PODS_MEMORY - 100 * MI) / 1024),
        "{n}"
    );
    let limit: u64 = read_trim(a.memory_cgroup("kubepods").join("memory.limit_in_bytes"))
        .parse()
        .unwrap();
    assert_eq!(limit, PODS_MEMORY);
    assert_eq!(condition(&n, "MemoryPressure")["status"], "False");

    a.write(
        "g.yaml",
        &pod_yaml("guaranteed", "", &[("c", &hold(32), &guaranteed(64))]),
    );
    a.write(
        "b.yaml",
        &pod_yaml(
            "burstable",
            "",
            &[("c", &hold(16), &burstable(64, Some(128)))],
        ),
    );
    a.wait_running(&a.full_name("guaranteed"));
    a.wait_running(&a.full_name("burstable"));
    // kubelet's QoS tiers: BestEffort pods get the least cpu weight (2 shares).
    assert_eq!(
        read_trim(a.cpu_cgroup("kubepods/besteffort").join("cpu.shares")),
        "2"
    );
    let ooms_before = kernel_oom_kills(&a);
    a.write("hog.yaml", &pod_yaml("hog", "", &[("c", &grow(8), "")]));
    let p = wait_evicted(&a, "hog");
    let msg = p["status"]["message"].as_str().unwrap();
    assert!(msg.contains("low on resource: memory"), "{msg}");
    // Its container ended as kubelet shows an evicted one: killed, exit code 137.
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 137, "{p}");
    assert_eq!(t["reason"], "Evicted", "{p}");
    assert_eq!(
        kernel_oom_kills(&a),
        ooms_before,
        "the kernel's OOM killer acted"
    );
    untouched(&a, "guaranteed");
    untouched(&a, "burstable");
    // The node said so, and its events name the pod.
    let n = node(&a);
    let mp = condition(&n, "MemoryPressure");
    assert_eq!(mp["status"], "True", "{mp}");
    let d = a.cli(&["describe", "node"]);
    let text = String::from_utf8_lossy(&d.stdout);
    assert!(text.contains("Evicted pod default/hog-e2e"), "{text}");
    assert!(text.contains("NodeHasInsufficientMemory"), "{text}");
    let ev = a.cli(&["describe", "pod", &a.full_name("hog")]);
    assert!(String::from_utf8_lossy(&ev.stdout).contains("Evicted"));
    // The condition clears after the transition period; the pod stays held until then.
    let cleared = wait_for("MemoryPressure cleared", Duration::from_secs(30), || {
        let n = node(&a);
        let c = condition(&n, "MemoryPressure");
        if c["status"] == "False" {
            return Some(c);
        }
        assert!(
            evicted(&a.pod(&a.full_name("hog")).unwrap()),
            "readmitted under pressure"
        );
        None
    });
    assert_ne!(cleared["lastTransitionTime"], mp["lastTransitionTime"]);
    // ... and after its 10 s back-off it runs again.
    a.wait_pod(
        &a.full_name("hog"),
        "running again",
        tidelet_e2e::all_running,
    );
    a.remove("hog.yaml");
    untouched(&a, "guaranteed");
    assert_eq!(kernel_oom_kills(&a), ooms_before);
    a.stop_all();
}

#[test]
fn the_larger_best_effort_hog_goes_first() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start_with_config(Some(&config("100Mi", "")));
    a.write(
        "large.yaml",
        &pod_yaml("large", "", &[("c", &hold(150), "")]),
    );
    a.wait_running(&a.full_name("large"));
    a.write("small.yaml", &pod_yaml("small", "", &[("c", &grow(4), "")]));
    wait_evicted(&a, "large");
    // `small` was growing when `large` went: it is still there.
    let s = a.pod(&a.full_name("small")).unwrap();
    assert!(!evicted(&s), "{s}");
    a.stop_all();
}

#[test]
fn burstable_over_its_requests_goes_before_one_within_them() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start_with_config(Some(&config("100Mi", "")));
    // 100 MiB against a request of 8 MiB.
    a.write(
        "over.yaml",
        &pod_yaml("over", "", &[("c", &hold(100), &burstable(8, None))]),
    );
    a.wait_running(&a.full_name("over"));
    // Grows to about 184 MiB by the time the threshold is met: larger, but within its request.
    a.write(
        "within.yaml",
        &pod_yaml("within", "", &[("c", &grow(4), &burstable(250, Some(270)))]),
    );
    wait_evicted(&a, "over");
    let w = a.pod(&a.full_name("within")).unwrap();
    assert!(!evicted(&w), "{w}");
    a.remove("within.yaml");
    a.stop_all();
}

#[test]
fn a_critical_pod_is_never_chosen() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start_with_config(Some(&config("100Mi", "")));
    a.write("idle.yaml", &pod_yaml("idle", "", &[("c", &hold(8), "")]));
    a.wait_running(&a.full_name("idle"));
    a.write(
        "crit.yaml",
        &pod_yaml(
            "crit",
            "  priorityClassName: system-node-critical\n",
            &[("c", &grow(8), "")],
        ),
    );
    // The small idle pod goes, not the critical one that uses the memory.
    wait_evicted(&a, "idle");
    let c = a.pod(&a.full_name("crit")).unwrap();
    assert!(!evicted(&c), "{c}");
    // It keeps growing: the monitor sees the threshold met and refuses to touch it.
    wait_for(
        "the monitor to find nothing to evict",
        Duration::from_secs(30),
        || {
            a.agent_log()
                .contains("no pod may be evicted")
                .then_some(())
        },
    );
    let c = a.pod(&a.full_name("crit")).unwrap();
    assert!(!evicted(&c), "{c}");
    a.remove("crit.yaml");
    a.stop_all();
}

#[test]
fn a_hog_faster_than_the_signals_is_oom_killed_and_reported_as_such() {
    if !privileged() {
        return;
    }
    // The monitor reacts to a hard threshold within milliseconds, faster than even a hog that
    // takes 600 MiB in one read (memcg reclaim runs before the OOM killer). So this hog outruns
    // a soft threshold instead: pressure is seen at once, but eviction waits 30 s, and the
    // kernel kills the hog at the limit first. It must be reported as OOMKilled, not evicted.
    let soft = "evictionSoft:\n  memory.available: 100Mi\nevictionSoftGracePeriod:\n  memory.available: 30s\n";
    let mut a = Agent::start_with_config(Some(&config("0", soft)));
    a.write(
        "g.yaml",
        &pod_yaml("guaranteed", "", &[("c", &hold(32), &guaranteed(64))]),
    );
    a.wait_running(&a.full_name("guaranteed"));
    let before = kernel_oom_kills(&a);
    a.write(
        "fast.yaml",
        &pod_yaml(
            "fast",
            "  restartPolicy: Never\n",
            &[("c", "exec dd if=/dev/zero of=/dev/null bs=600M count=1", "")],
        ),
    );
    let p = a.wait_pod(&a.full_name("fast"), "terminated", |p| {
        p["status"]["containerStatuses"][0]["state"]["terminated"].is_object() || evicted(p)
    });
    assert!(
        kernel_oom_kills(&a) > before,
        "the kernel did not kill the hog: {p}"
    );
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{p}");
    assert_eq!(p["status"]["phase"], "Failed", "{p}");
    assert_ne!(p["status"]["reason"], "Evicted", "{p}");
    untouched(&a, "guaranteed");
    assert!(!a.agent_log().contains("pod evicted"), "{}", a.agent_log());
    a.stop_all();
}

#[test]
fn requests_beyond_allocatable_are_rejected_and_others_keep_running() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start_with_config(Some(&config("100Mi", "")));
    a.write(
        "g.yaml",
        &pod_yaml("small", "", &[("c", "sleep 3600", &guaranteed(64))]),
    );
    a.wait_running(&a.full_name("small"));
    // 284 MiB allocatable, 64 MiB taken: 250 MiB does not fit.
    a.write(
        "big.yaml",
        &pod_yaml("big", "", &[("c", "sleep 3600", &guaranteed(250))]),
    );
    let p = a.wait_pod(&a.full_name("big"), "rejected", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "OutOfmemory", "{p}");
    let m = p["status"]["message"].as_str().unwrap();
    assert!(
        m.contains("Node didn't have enough resource: memory"),
        "{m}"
    );
    untouched(&a, "small");
    // Once the small pod is gone, the big one fits and runs.
    a.remove("g.yaml");
    a.wait_running(&a.full_name("big"));
    a.stop_all();
}

#[test]
fn disk_pressure_collects_unused_images_and_holds_new_pods() {
    if !privileged() {
        return;
    }
    // nodefs.available<99%: the state directory's file system is "full" from the start, so the
    // monitor reclaims first (the unused image goes), and then, the pressure remaining, evicts.
    let cfg = "evictionHard:\n  memory.available: 100Mi\n  nodefs.available: \"99%\"\nevictionPressureTransitionPeriod: 3s\nimageMinimumGCAge: 0s\n";
    // The critical pod and an unused image are there before the agent's first look.
    let mut a = Agent::prepare(Some(cfg), &[]);
    let imp = a.cli(&[
        "image",
        "import",
        tidelet_e2e::images()
            .join("layered.oci.tar")
            .to_str()
            .unwrap(),
    ]);
    assert!(
        imp.status.success(),
        "{}",
        String::from_utf8_lossy(&imp.stderr)
    );
    a.write(
        "crit.yaml",
        &pod_yaml(
            "crit",
            "  priorityClassName: system-node-critical\n",
            &[("c", "sleep 3600", "")],
        ),
    );
    a.spawn();
    wait_for("DiskPressure", Duration::from_secs(30), || {
        (condition(&node(&a), "DiskPressure")["status"] == "True").then_some(())
    });
    // Critical pods are admitted under DiskPressure; no other new pod is (kubelet's rule).
    a.wait_running(&a.full_name("crit"));
    a.write(
        "plain.yaml",
        &pod_yaml("plain", "", &[("c", "sleep 3600", "")]),
    );
    a.wait_running(&a.full_name("crit"));
    let p = a.wait_pod(&a.full_name("plain"), "held", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap()
            .contains("DiskPressure"),
        "{p}"
    );
    let ls = wait_for(
        "the unused image collected",
        Duration::from_secs(30),
        || {
            let ls = a.cli(&["image", "ls"]);
            let t = String::from_utf8_lossy(&ls.stdout).to_string();
            (!t.contains("layered")).then_some(t)
        },
    );
    assert!(ls.contains("busybox"), "the image in use stays: {ls}");
    assert_eq!(condition(&node(&a), "DiskPressure")["status"], "True");
    // The image leaves `image ls` when its record goes, before its layers and before the
    // monitor, the pressure remaining, looks for a pod: the line comes a little later.
    a.wait_log_line(
        "threshold met but no pod may be evicted",
        Duration::from_secs(30),
    );
    let c = a.pod(&a.full_name("crit")).unwrap();
    assert!(!evicted(&c), "{c}");
    a.stop_all();
}

#[test]
fn bad_eviction_config_stops_the_agent_at_start_naming_the_key() {
    if !privileged() {
        return;
    }
    tidelet_e2e::assert_configs_refused(&[
        (
            "evictionHard:\n  memory.available: 100 Mi\n",
            "evictionHard[memory.available]",
        ),
        (
            "evictionHard:\n  memory.availabel: 100Mi\n",
            "evictionHard[memory.availabel]: unknown eviction signal",
        ),
        (
            "evictionHard:\n  nodefs.available: 120%\n",
            "evictionHard[nodefs.available]",
        ),
        (
            "evictionSoft:\n  memory.available: 1Gi\n",
            "evictionSoftGracePeriod[memory.available]",
        ),
        (
            "evictionPressureTransitionPeriod: soon\n",
            "evictionPressureTransitionPeriod",
        ),
        (
            "systemReserved:\n  memory: 100Ti\n",
            "systemReserved[memory]: reserves",
        ),
        (
            "kubeReserved:\n  cpu: \"1000\"\n",
            "kubeReserved[cpu]: reserves",
        ),
        (
            "systemReserved:\n  pid: 100000000\n",
            "systemReserved[pid]: reserves",
        ),
        (
            "evictionHard:\n  memory.available: 100Ti\n",
            "evictionHard[memory.available]",
        ),
        ("maxPods: -3\n", "maxPods"),
    ]);
}

#[test]
fn pid_pressure_evicts_the_pod_with_the_most_processes() {
    if !privileged() {
        return;
    }
    // pid.available = pid_max - threads; the threshold sits 1000 below what is available now,
    // and one pod forks 2000 processes (other tests' processes move the count by far less).
    let pid_max: u64 = read_trim("/proc/sys/kernel/pid_max").parse().unwrap();
    let threads: u64 = read_trim("/proc/loadavg")
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    let threshold = pid_max - threads - 1000;
    let cfg = format!(
        "evictionHard:\n  memory.available: 100Mi\n  pid.available: \"{threshold}\"\nevictionPressureTransitionPeriod: 3s\n"
    );
    let mut a = Agent::start_with_config(Some(&cfg));
    a.write("few.yaml", &pod_yaml("few", "", &[("c", "sleep 3600", "")]));
    a.wait_running(&a.full_name("few"));
    a.write(
        "many.yaml",
        &pod_yaml(
            "many",
            "",
            &[(
                "c",
                "i=0; while [ $i -lt 2000 ]; do sleep 3600 & i=$((i+1)); done; wait",
                "",
            )],
        ),
    );
    let p = wait_evicted(&a, "many");
    let msg = p["status"]["message"].as_str().unwrap();
    assert!(msg.contains("low on resource: pids"), "{msg}");
    assert_eq!(condition(&node(&a), "PIDPressure")["status"], "True");
    untouched(&a, "few");
    a.remove("many.yaml");
    a.stop_all();
}
