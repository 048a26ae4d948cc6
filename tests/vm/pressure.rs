//! The eviction scenario of issue 4 on cgroup v2 (the end of `tests/vm/stage2`): the guest
//! restarts tidelet with `kubepods` limited to 160Mi through `systemReserved` and
//! `evictionHard: {memory.available: 50Mi}`, runs a Guaranteed pod (`pg`, 16 MiB held), a
//! Burstable pod within its requests (`pb`, 8 MiB) and a BestEffort hog growing by 20 MiB/s,
//! and reports `TIDELET-VM pressure.*` markers. What must hold: the hog evicted (Failed,
//! Evicted, a message naming memory) and its processes gone, the other two running and never
//! restarted, no kernel OOM kill anywhere under `kubepods` (v2's `memory.events` counts the
//! descendants' kills), `MemoryPressure` True at the eviction and False after the transition
//! period, exactly one eviction, and PSI among the monitor's active triggers. The agent's
//! `killed_in_ms` and the usage peak are figures, printed, not asserted.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{get, json};

const MI: u64 = 1 << 20;
/// `kubepods`' limit: capacity minus `systemReserved` (the guest sets MemTotal - 160Mi).
const PODS_MEMORY: u64 = 160 * MI;
/// `evictionHard: {memory.available: 50Mi}`.
const HARD: u64 = 50 * MI;

fn condition(node: &Value, t: &str) -> Value {
    node["status"]["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("node without conditions: {node}"))
        .iter()
        .find(|c| c["type"] == t)
        .cloned()
        .unwrap_or_else(|| panic!("no {t} condition in {node}"))
}

/// The pod runs, and none of its containers was restarted.
fn untouched(p: &Value, name: &str) {
    assert_eq!(p["status"]["phase"], "Running", "{name}: {p}");
    let cs = p["status"]["containerStatuses"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no containerStatuses: {p}"));
    assert!(!cs.is_empty(), "{name}: {p}");
    for c in cs {
        assert_eq!(c["restartCount"], 0, "{name}: {c}");
        assert!(c["state"]["running"].is_object(), "{name}: {c}");
    }
}

fn num(m: &BTreeMap<String, String>, key: &str) -> u64 {
    let v = get(m, key);
    v.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{key}={v:?}: not a number ({e})"))
}

/// Everything the pressure scenario must show.
pub fn check(m: &BTreeMap<String, String>) {
    // Node allocatable: kubepods limited to capacity - reservations; allocatable further
    // minus the hard threshold; no pressure before the hog.
    assert_eq!(
        num(m, "pressure.kubepods.memory.max"),
        PODS_MEMORY,
        "kubepods memory.max"
    );
    let before = json(m, "pressure.node_before.json");
    assert_eq!(
        before["status"]["allocatable"]["memory"],
        format!("{}Ki", (PODS_MEMORY - HARD) / 1024),
        "{before}"
    );
    assert_eq!(
        condition(&before, "MemoryPressure")["status"],
        "False",
        "{before}"
    );
    // PSI (kubepods' memory.pressure trigger) is live on this kernel.
    let triggers = get(m, "pressure.triggers");
    assert!(
        triggers.contains("\"psi\""),
        "the eviction monitor's active triggers: {triggers:?}"
    );

    // The hog: evicted, saying why, and its processes gone.
    let hog = json(m, "pressure.hog.json");
    assert_eq!(hog["status"]["phase"], "Failed", "{hog}");
    assert_eq!(hog["status"]["reason"], "Evicted", "{hog}");
    let msg = hog["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("low on resource: memory"), "{hog}");
    let t = &hog["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        t["exitCode"], 137,
        "the hog's container ended killed: {hog}"
    );
    assert_eq!(t["reason"], "Evicted", "{hog}");
    assert_eq!(
        get(m, "pressure.hog.procs_left").trim(),
        "0",
        "processes left in the evicted pod's cgroups"
    );
    // Not re-admitted while the pressure lasted (nor in the moment it cleared: back-off).
    // (empty if the agent dropped it at once when its manifest went)
    if !get(m, "pressure.hog_after_clear.json").is_empty() {
        let later = json(m, "pressure.hog_after_clear.json");
        assert_eq!(later["status"]["reason"], "Evicted", "{later}");
    }
    assert_eq!(
        get(m, "pressure.evicted_lines"),
        "1",
        "`pod evicted` lines in the agent's log: {}",
        get(m, "pressure.evicted_line")
    );
    assert!(
        get(m, "pressure.evicted_line").contains("hog-vm"),
        "{}",
        get(m, "pressure.evicted_line")
    );

    // Events say so: the node's names the pod, the pod's says Evicted.
    assert_ne!(
        num(m, "pressure.node_evicted_events"),
        0,
        "`Evicted pod default/hog-vm` in `describe node`"
    );
    assert_ne!(
        num(m, "pressure.hog_evicted_events"),
        0,
        "`Evicted` in `describe pod hog-vm`"
    );

    // The Guaranteed and the within-requests Burstable pods: started before the eviction
    // (the guest writes the hog once the agent's log says so) and untouched by it.
    let order: Vec<&str> = get(m, "pressure.order").split_whitespace().collect();
    let at = |what: &str| order.iter().position(|w| *w == what);
    for started in ["pg-started", "pb-started"] {
        assert!(
            at(started).is_some_and(|i| Some(i) < at("evicted")),
            "the agent's log: {started} must come before the eviction: {order:?}"
        );
    }
    let pg = json(m, "pressure.pg.json");
    assert_eq!(pg["status"]["qosClass"], "Guaranteed", "{pg}");
    untouched(&pg, "pg");
    let pb = json(m, "pressure.pb.json");
    assert_eq!(pb["status"]["qosClass"], "Burstable", "{pb}");
    untouched(&pb, "pb");
    // ... and the kernel's OOM killer never acted under kubepods.
    assert_eq!(
        num(m, "pressure.oom_kill_after"),
        num(m, "pressure.oom_kill_before"),
        "kubepods memory.events oom_kill (the kernel's OOM killer acted)"
    );

    // MemoryPressure: True at the eviction, False later with a new transition time.
    let during = condition(&json(m, "pressure.node_during.json"), "MemoryPressure");
    assert_eq!(during["status"], "True", "{during}");
    assert_eq!(during["reason"], "KubeletHasInsufficientMemory", "{during}");
    let after = condition(&json(m, "pressure.node_after.json"), "MemoryPressure");
    assert_eq!(after["status"], "False", "{after}");
    assert_ne!(
        after["lastTransitionTime"], during["lastTransitionTime"],
        "{after}"
    );
}

/// The figures as one line: the agent's kill time, usage, and how long the phases took.
pub fn figures(m: &BTreeMap<String, String>) -> String {
    let g = |k: &str| m.get(k).map_or("?", String::as_str);
    let mib = |k: &str| {
        m.get(k)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / MI as f64))
    };
    let secs = |from: &str, to: &str| {
        let f = |k: &str| m.get(k).and_then(|v| v.parse::<f64>().ok());
        match (f(from), f(to)) {
            (Some(a), Some(b)) => format!("{:.1} s", b - a),
            _ => "?".into(),
        }
    };
    format!(
        "pressure: hog evicted, killed_in_ms {} (agent's log); triggers {}, the first woken \
         at the threshold by {}; kubepods highest \
         seen {}, memory.peak {}; pods written to hog written {}, hog written to eviction seen \
         {}, eviction to MemoryPressure False seen {}; scenario {}",
        g("pressure.killed_in_ms"),
        g("pressure.triggers"),
        g("pressure.first_wake"),
        mib("pressure.kubepods.current_peak_seen"),
        mib("pressure.kubepods.memory.peak"),
        secs("pressure.pods_written_at", "pressure.hog_written_at"),
        secs("pressure.hog_written_at", "pressure.hog_evicted_seen_at"),
        secs("pressure.hog_evicted_seen_at", "pressure.cleared_seen_at"),
        secs("pressure.agent_ready_at", "pressure.done_at"),
    )
}
