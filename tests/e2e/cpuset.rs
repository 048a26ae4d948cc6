//! Exclusive CPUs (`cpuManagerPolicy: static`) on this 2-core host, on real cgroups: CPU 0 is
//! reserved, so CPU 1 is the only one a Guaranteed pod can have for itself.

use std::time::Duration;

use tidelet_e2e::*;

use crate::pod_yaml;

const CONFIG: &str =
    "kind: KubeletConfiguration\ncpuManagerPolicy: static\nreservedSystemCPUs: \"0\"\n";
const GUARANTEED: &str = "    resources:\n      limits: {cpu: \"1\", memory: 64Mi}\n      requests: {cpu: \"1\", memory: 64Mi}\n";

fn uid(a: &Agent, name: &str) -> String {
    a.pod(name).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `Cpus_allowed_list` of a process.
fn allowed(pid: i32) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// Wait until the container's cgroup and its process both show `want`.
fn wait_cpuset(a: &Agent, cgroup_rel: &str, pid: i32, want: &str) {
    let file = a
        .controller_cgroup("cpuset", cgroup_rel)
        .join("cpuset.cpus");
    wait_for(
        &format!("{} and pid {pid} on CPUs {want}", file.display()),
        Duration::from_secs(10),
        || (read_trim(&file) == want && allowed(pid) == want).then_some(()),
    );
}

fn checkpoint(a: &Agent) -> serde_json::Value {
    let text = std::fs::read_to_string(a.root.join("cpu_manager_state")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn static_policy_gives_a_guaranteed_pod_cpu_1_exclusively() {
    if !privileged() {
        return;
    }
    let online = read_trim("/sys/devices/system/cpu/online");
    assert_eq!(online, "0-1", "this test is written for a 2-core host");
    let mut a = Agent::start_with_config(Some(CONFIG));

    a.write(
        "shared.yaml",
        &pod_yaml("shared", "", &[("c", "sleep 3600", "")]),
    );
    let shared = a.full_name("shared");
    a.wait_running(&shared);
    let shared_cg = format!("kubepods/besteffort/pod{}/c", uid(&a, &shared));
    let shared_pid = a.container_pid(&shared, "c");
    wait_cpuset(&a, &shared_cg, shared_pid, "0-1");

    a.write(
        "excl.yaml",
        &pod_yaml("excl", "", &[("app", "sleep 3600", GUARANTEED)]),
    );
    let excl = a.full_name("excl");
    let p = a.wait_running(&excl);
    assert_eq!(p["status"]["qosClass"], "Guaranteed", "{p}");
    let excl_uid = uid(&a, &excl);
    let excl_cg = format!("kubepods/pod{excl_uid}/app");
    let excl_pid = a.container_pid(&excl, "app");
    wait_cpuset(&a, &excl_cg, excl_pid, "1");
    // The BestEffort pod left CPU 1, and so did the exclusive pod's own infra process.
    wait_cpuset(&a, &shared_cg, shared_pid, "0");
    let infra = a.controller_cgroup("cpuset", &format!("kubepods/pod{excl_uid}/_infra"));
    assert_eq!(read_trim(infra.join("cpuset.cpus")), "0");
    let ck = checkpoint(&a);
    assert_eq!(ck["policyName"], "static", "{ck}");
    assert_eq!(ck["defaultCpuSet"], "0", "{ck}");
    assert_eq!(ck["entries"][&excl_uid]["app"], "1", "{ck}");

    // Only CPU 1 is allocatable (capacity 2 minus reservedSystemCPUs): a second exclusive pod
    // does not fit and is refused at admission, as kubelet does. (The CPU manager's own
    // UnexpectedAdmissionError guard behind it is covered by the cpumanager unit tests.)
    a.write(
        "excl2.yaml",
        &pod_yaml("excl2", "", &[("app", "sleep 3600", GUARANTEED)]),
    );
    let excl2 = a.full_name("excl2");
    let p2 = a.wait_pod(&excl2, "refused", |p| p["status"]["phase"] == "Failed");
    assert_eq!(p2["status"]["reason"], "OutOfcpu", "{p2}");
    let msg = p2["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(
            "Node didn't have enough resource: cpu, requested: 1000, used: 1000, capacity: 1000"
        ),
        "{msg}"
    );

    // An agent restart keeps the assignment (checkpoint), and the pods are adopted as they are.
    a.kill9();
    a.spawn();
    a.wait_running(&excl);
    assert_eq!(
        a.container_pid(&excl, "app"),
        excl_pid,
        "adopted, not restarted"
    );
    wait_cpuset(&a, &excl_cg, excl_pid, "1");
    wait_cpuset(&a, &shared_cg, shared_pid, "0");
    assert_eq!(checkpoint(&a)["entries"][&excl_uid]["app"], "1");
    let p2 = a.wait_pod(&excl2, "still refused", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p2["status"]["reason"], "OutOfcpu", "{p2}");

    // The refused pod goes first (else it would take CPU 1 on its next try), then the
    // exclusive one: its CPU returns to the pool, and the BestEffort pod gets both back.
    a.remove("excl2.yaml");
    wait_for("excl2 gone", Duration::from_secs(20), || {
        a.pod(&excl2).is_none().then_some(())
    });
    a.remove("excl.yaml");
    wait_for("excl gone", Duration::from_secs(30), || {
        a.pod(&excl).is_none().then_some(())
    });
    wait_cpuset(&a, &shared_cg, shared_pid, "0-1");
    let ck = checkpoint(&a);
    assert_eq!(ck["defaultCpuSet"], "0-1", "{ck}");
    assert!(
        ck["entries"].as_object().is_none_or(|e| e.is_empty()),
        "{ck}"
    );
    a.stop_all();
}

#[test]
fn bad_cpu_manager_config_stops_the_start_naming_the_key() {
    if !privileged() {
        return;
    }
    let cases = [
        ("cpuManagerPolicy: exclusive\n", "cpuManagerPolicy"),
        (
            "cpuManagerPolicy: static\nreservedSystemCPUs: \"0-\"\n",
            "reservedSystemCPUs",
        ),
        (
            "cpuManagerPolicy: static\nreservedSystemCPUs: \"7\"\n",
            "reservedSystemCPUs: \"7\" names CPUs 7 that this machine does not have online",
        ),
        (
            "cpuManagerPolicy: static\nreservedSystemCPUs: \"0-1\"\n",
            "reserves every online CPU",
        ),
        (
            "cpuManagerPolicy: static\n",
            "static needs reservedSystemCPUs",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (config, want) in cases {
        let (status, err) = tidelet_e2e::run_with_config(dir.path(), config);
        assert!(!status.success(), "{config:?} started");
        assert!(err.contains(want), "{config:?}: {err}");
    }
    // A corrupt checkpoint: refused, naming the file and how to recover.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("root")).unwrap();
    std::fs::write(dir.path().join("root/cpu_manager_state"), "{torn").unwrap();
    let (status, err) = tidelet_e2e::run_with_config(
        dir.path(),
        "cpuManagerPolicy: static\nreservedSystemCPUs: \"0\"\n",
    );
    assert!(!status.success());
    assert!(
        err.contains("cpu_manager_state") && err.contains("delete the file"),
        "{err}"
    );
}
