//! The status JSON tidelet writes, checked by an implementation nobody here wrote:
//! kubernetes-validate (PyPI, pinned in `tests/status/python/venv.sh`) in strict mode, against
//! the Kubernetes API tidelet compiles in (`tidelet::manifest::KUBERNETES_API`). Strict means
//! a field the API does not have is an error, as well as a wrong type or a missing required
//! field.
//!
//! The real agent runs pods in every status shape it can produce (running, Succeeded, Failed,
//! crash-looping with a last state, a missing image, a command that cannot start, all three QoS
//! classes, a pod refused at admission, a running pod whose manifest became invalid, a
//! hostNetwork pod with a pod IP, a pod in another namespace whose spec has the init
//! containers, probes and ports tidelet ignores) beside the node (conditions, capacity,
//! allocatable, addresses, nodeInfo), and
//! every way the objects leave the agent is checked as it leaves: `tidelet get pods|pod|node`
//! in JSON and YAML, and the MQTT payloads (Pods, Node, Events, Lease) as the agent's own
//! `Reporter` renders them from the local API's answer, which is what the MQTT session
//! publishes, without a broker.
//!
//! kubernetes-validate's schemas carry no `enum`s (they are generated without the API's
//! `+enum` values), so the few values the API fixes that tidelet sets are checked here against
//! Kubernetes' constants (`k8s.io/api/core/v1/types.go`). It runs, never skips, as root.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tidelet::api::{NodeView, Request, Response};
use tidelet_e2e::*;

use crate::pod_yaml;

/// The venv's python (made by `tests/status/python/venv.sh`).
fn python() -> PathBuf {
    set_up("tests/status/python/venv.sh").join("bin/python")
}

/// What `validate.py` said: whether every object passed, and its report.
struct Verdict {
    passed: bool,
    report: String,
}

impl Verdict {
    /// The objects that passed, as `ok` lines name them.
    fn ok_count(&self) -> usize {
        self.report.lines().filter(|l| l.starts_with("ok ")).count()
    }
}

/// kubernetes-validate, strict, on every object in `files`.
fn kubernetes_validate(files: &[PathBuf]) -> Verdict {
    let out = Command::new(python())
        .arg(workspace().join("tests/status/python/validate.py"))
        .args(["--kubernetes-version", tidelet::manifest::KUBERNETES_API])
        .args(files)
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // 1 is "some object failed"; anything else (no schema set, unreadable input, a crash) is
    // the check itself not working.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "validate.py could not check ({}):\n{report}",
        out.status
    );
    Verdict {
        passed: out.status.success(),
        report,
    }
}

/// The objects written for the check, and how many each file holds.
struct Outputs {
    dir: PathBuf,
    files: Vec<(PathBuf, usize)>,
}

impl Outputs {
    fn add(&mut self, name: &str, bytes: &[u8], objects: usize) {
        let p = self.dir.join(name.replace('/', "_"));
        std::fs::write(&p, bytes).unwrap();
        self.files.push((p, objects));
    }

    fn objects(&self) -> usize {
        self.files.iter().map(|(_, n)| n).sum()
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|(p, _)| p.clone()).collect()
    }
}

/// The CLI's stdout, which must succeed.
fn cli_out(a: &Agent, args: &[&str]) -> Vec<u8> {
    let out = a.cli(args);
    assert!(
        out.status.success(),
        "tidelet {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn api(a: &Agent, req: &Request) -> Response {
    tidelet::api::client::call(&tidelet::config::api_socket(&a.root), req).unwrap()
}

/// Values Kubernetes fixes (`k8s.io/api/core/v1/types.go`) and rules of its API server's status
/// validation that the schemas cannot check: every violation in `pod`.
fn pod_api_violations(pod: &Value) -> Vec<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("?");
    let st = &pod["status"];
    let mut bad = vec![];
    let mut check = |what: &str, v: &Value, allowed: &[&str]| {
        if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
            bad.push(format!("{name}: {what} = {v}, not one of {allowed:?}"));
        }
    };
    check(
        "status.phase",
        &st["phase"],
        &["Pending", "Running", "Succeeded", "Failed", "Unknown"],
    );
    check(
        "status.qosClass",
        &st["qosClass"],
        &["Guaranteed", "Burstable", "BestEffort"],
    );
    for c in st["conditions"].as_array().into_iter().flatten() {
        check(
            &format!("condition {} status", c["type"]),
            &c["status"],
            &["True", "False", "Unknown"],
        );
    }
    // The address lists' first entries are the single addresses (the API server refuses a
    // status where they differ), and a set address has its list, as kubelet writes them.
    for (one, list) in [("hostIP", "hostIPs"), ("podIP", "podIPs")] {
        if !st[one].is_null() && st[list][0]["ip"] != st[one] {
            bad.push(format!(
                "{name}: status.{list} = {}, status.{one} = {}",
                st[list], st[one]
            ));
        }
    }
    for cs in ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|k| st[*k].as_array().into_iter().flatten())
    {
        // A container is in exactly one state (ContainerState's doc: "Only one of its
        // members may be specified"), and so is its last state when it has one.
        for key in ["state", "lastState"] {
            let Some(s) = cs[key].as_object() else {
                continue;
            };
            let set = s.values().filter(|v| !v.is_null()).count();
            if set != 1 && !(key == "lastState" && set == 0) {
                bad.push(format!(
                    "{name}: {} {key} has {set} members set",
                    cs["name"]
                ));
            }
        }
    }
    bad
}

/// The node's values Kubernetes fixes.
fn node_api_violations(node: &Value) -> Vec<String> {
    let mut bad = vec![];
    for c in node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if !["True", "False", "Unknown"].contains(&c["status"].as_str().unwrap_or("")) {
            bad.push(format!("condition {}: status {}", c["type"], c["status"]));
        }
    }
    for ad in node["status"]["addresses"].as_array().into_iter().flatten() {
        let types = [
            "Hostname",
            "InternalIP",
            "ExternalIP",
            "InternalDNS",
            "ExternalDNS",
        ];
        if !types.contains(&ad["type"].as_str().unwrap_or("")) {
            bad.push(format!("address type {}", ad["type"]));
        }
    }
    bad
}

/// Burstable: requests below limits. Guaranteed: limits only (requests default to them).
const BURSTABLE: &str =
    "    resources:\n      requests: {cpu: 10m, memory: 8Mi}\n      limits: {memory: 64Mi}\n";
const GUARANTEED: &str = "    resources:\n      limits: {cpu: 100m, memory: 32Mi}\n";

/// A pod whose spec carries fields tidelet ignores (init containers, probes, ports): the
/// status must stay valid when the spec is echoed with them.
const EXTRAS: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: extras\n  namespace: other\n  labels: {app: extras}\n  annotations: {note: x}\nspec:\n  terminationGracePeriodSeconds: 2\n  initContainers:\n  - name: init\n    image: localhost/busybox:1.35\n    imagePullPolicy: Never\n    command: [\"true\"]\n  containers:\n  - name: web\n    image: localhost/busybox:1.35\n    imagePullPolicy: Never\n    command: [\"sleep\", \"3600\"]\n    ports: [{containerPort: 8080, protocol: TCP}]\n    env: [{name: A, value: b}, {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]\n    livenessProbe: {exec: {command: [\"true\"]}, periodSeconds: 5}\n    readinessProbe: {tcpSocket: {port: 8080}}\n";

#[test]
fn every_pod_status_shape_and_the_node_pass_kubernetes_validate_strict() {
    if !privileged() {
        return;
    }
    // The venv first: on a fresh machine its install takes longer than any pod wait.
    python();
    let mut a = Agent::prepare(None, &[]);
    let pods: &[(&str, String)] = &[
        (
            "running",
            pod_yaml(
                "running",
                "",
                &[("a", "sleep 3600", ""), ("b", "sleep 3600", "")],
            ),
        ),
        (
            "burstable",
            pod_yaml("burstable", "", &[("c", "sleep 3600", BURSTABLE)]),
        ),
        (
            "guaranteed",
            pod_yaml("guaranteed", "", &[("c", "sleep 3600", GUARANTEED)]),
        ),
        (
            "completed",
            pod_yaml(
                "completed",
                "  restartPolicy: Never\n",
                &[("c", "true", "")],
            ),
        ),
        (
            "failed",
            pod_yaml("failed", "  restartPolicy: Never\n", &[("c", "exit 3", "")]),
        ),
        (
            // One container done, one running: a Running pod with a terminated container.
            "mixed",
            pod_yaml(
                "mixed",
                "  restartPolicy: OnFailure\n",
                &[("done", "true", ""), ("up", "sleep 3600", "")],
            ),
        ),
        (
            "crash",
            pod_yaml("crash", "", &[("c", "echo run; exit 1", "")]),
        ),
        (
            "badimage",
            pod_yaml("badimage", "", &[("c", "true", "")])
                .replace("localhost/busybox:1.35", "localhost/nosuchimage:1"),
        ),
        (
            "badcmd",
            pod_yaml("badcmd", "", &[("c", "true", "")]).replace(
                "command: [\"sh\", \"-c\", \"true\"]",
                "command: [\"/no/such/binary\"]",
            ),
        ),
        (
            // More CPU than any test machine has: refused at admission (phase Failed, OutOfcpu).
            "toobig",
            pod_yaml(
                "toobig",
                "",
                &[(
                    "c",
                    "sleep 3600",
                    "    resources:\n      requests: {cpu: \"100000\"}\n",
                )],
            ),
        ),
        ("keep", pod_yaml("keep", "", &[("c", "sleep 3600", "")])),
        (
            // The node's network: the one pod with a pod IP.
            "hostnet",
            pod_yaml(
                "hostnet",
                "  hostNetwork: true\n",
                &[("c", "sleep 3600", "")],
            ),
        ),
        ("extras", EXTRAS.to_string()),
    ];
    for (file, yaml) in pods {
        a.write(&format!("{file}.yaml"), yaml);
    }
    a.spawn();

    let full = |n: &str| a.full_name(n);
    let cs0 = |p: &Value| p["status"]["containerStatuses"][0].clone();
    for n in ["running", "burstable", "guaranteed", "keep", "hostnet"] {
        a.wait_running(&full(n));
    }
    let extras = wait_for("pod other/extras running", Duration::from_secs(30), || {
        let out = a.cli(&["get", "pod", &full("extras"), "-n", "other", "-o", "json"]);
        let p: Value = serde_json::from_slice(&out.stdout).ok()?;
        all_running(&p).then_some(p)
    });
    assert_eq!(extras["metadata"]["namespace"], "other");
    a.wait_pod(&full("completed"), "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    a.wait_pod(&full("failed"), "Failed with exit code 3", |p| {
        p["status"]["phase"] == "Failed" && cs0(p)["state"]["terminated"]["exitCode"] == 3
    });
    // Within seconds, not the harness's 30: `done` exits while `up` is being started, and the
    // agent once took that start's answer as having seen the exit, which then showed only at
    // its 30 s supervisor wait (worker.rs, `seen_after_start`).
    wait_for(
        "pod mixed: one container done, one running",
        Duration::from_secs(10),
        || {
            a.pod(&full("mixed")).filter(|p| {
                let st = |c| Agent::container_status(p, c)["state"].clone();
                st("done")["terminated"]["reason"] == "Completed" && st("up")["running"].is_object()
            })
        },
    );
    a.wait_pod(&full("crash"), "CrashLoopBackOff with a last state", |p| {
        let cs = cs0(p);
        cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && cs["lastState"]["terminated"]["exitCode"] == 1
    });
    a.waiting_message(&full("badimage"), "ErrImageNeverPull");
    a.wait_pod(&full("badcmd"), "a StartError", |p| {
        let cs = cs0(p);
        cs["lastState"]["terminated"]["reason"] == "StartError"
            || cs["state"]["terminated"]["reason"] == "StartError"
    });
    a.wait_pod(&full("toobig"), "refused at admission", |p| {
        p["status"]["phase"] == "Failed" && p["status"]["reason"] == "OutOfcpu"
    });
    // An edit that breaks the manifest keeps the pod running on its last good spec, with a
    // reason on the status.
    a.write(
        "keep.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: keep}\nspec:\n  containers:\n  - name: c\n    image: [not, a, string\n",
    );
    a.wait_pod(&full("keep"), "InvalidManifest", |p| {
        p["status"]["reason"] == "InvalidManifest"
    });

    let tmp = tempfile::tempdir().unwrap();
    let mut o = Outputs {
        dir: tmp.path().to_path_buf(),
        files: vec![],
    };
    let npods = pods.len();
    // The CLI, as users and scripts read it.
    o.add(
        "get-pods.json",
        &cli_out(&a, &["get", "pods", "-o", "json"]),
        npods,
    );
    o.add(
        "get-pods.yaml",
        &cli_out(&a, &["get", "pods", "-o", "yaml"]),
        npods,
    );
    let listed: Value =
        serde_json::from_slice(&cli_out(&a, &["get", "pods", "-o", "json"])).unwrap();
    let listed = listed["items"].as_array().unwrap().clone();
    assert_eq!(listed.len(), npods, "every pod is listed: {listed:?}");
    let qos: std::collections::BTreeSet<&str> = listed
        .iter()
        .filter_map(|p| p["status"]["qosClass"].as_str())
        .collect();
    assert_eq!(
        qos,
        ["BestEffort", "Burstable", "Guaranteed"].into(),
        "the pods cover every QoS class"
    );
    for p in &listed {
        let (ns, name) = (
            p["metadata"]["namespace"].as_str().unwrap(),
            p["metadata"]["name"].as_str().unwrap(),
        );
        o.add(
            &format!("get-pod-{ns}-{name}.json"),
            &cli_out(&a, &["get", "pod", name, "-n", ns, "-o", "json"]),
            1,
        );
    }
    o.add(
        "get-node.json",
        &cli_out(&a, &["get", "node", "-o", "json"]),
        1,
    );
    o.add(
        "get-node.yaml",
        &cli_out(&a, &["get", "node", "-o", "yaml"]),
        1,
    );

    // MQTT: what the reporter hands the session for the state the agent serves now.
    let Response::Pods { pods: views } = api(&a, &Request::ListPods) else {
        panic!("ListPods: not a pod list");
    };
    let Response::Node { node } = api(&a, &Request::GetNode) else {
        panic!("GetNode: not a node");
    };
    let NodeView { node, events, .. } = *node;
    let report = tidelet::mqtt::reporter::Reporter::default().step(&a.node, node, &views, &events);
    let mut retained = 0;
    for (topic, payload) in &report.retained {
        let payload = payload
            .as_ref()
            .unwrap_or_else(|| panic!("{topic}: cleared in a first snapshot"));
        o.add(&format!("mqtt-{topic}.json"), payload, 1);
        retained += 1;
    }
    assert_eq!(retained, npods + 1, "a payload per pod and the node");
    assert!(
        report.events.len() >= npods,
        "every pod has events (at least its scheduling or start): {}",
        report.events.len()
    );
    for (i, e) in report.events.iter().enumerate() {
        o.add(&format!("mqtt-event-{i}.json"), e, 1);
    }
    o.add(
        "mqtt-lease.json",
        &tidelet::mqtt::payload::lease(&a.node, Duration::from_secs(60), 1_764_000_000_000_000_000),
        1,
    );

    let v = kubernetes_validate(&o.paths());
    assert!(
        v.passed,
        "tidelet's objects fail kubernetes-validate --strict {}:\n{}",
        tidelet::manifest::KUBERNETES_API,
        v.report
    );
    assert_eq!(
        v.ok_count(),
        o.objects(),
        "every object written was checked:\n{}",
        v.report
    );
    eprintln!(
        "kubernetes-validate: {}",
        v.report.lines().last().unwrap_or_default()
    );

    let mut bad = vec![];
    for p in &listed {
        bad.extend(pod_api_violations(p));
    }
    let node: Value = serde_json::from_slice(&cli_out(&a, &["get", "node", "-o", "json"])).unwrap();
    bad.extend(node_api_violations(&node));
    assert!(
        bad.is_empty(),
        "statuses Kubernetes would not accept:\n{}",
        bad.join("\n")
    );

    // The check can fail: the same real pod with what Kubernetes would refuse (a field it does
    // not have, a string where it wants an integer, a container status without its required
    // `image`) is rejected, each named.
    let mut broken = listed
        .iter()
        .find(|p| p["metadata"]["name"] == full("crash"))
        .unwrap()
        .clone();
    broken["status"]["podIPv4"] = "10.0.0.1".into();
    broken["status"]["containerStatuses"][0]["restartCount"] = "1".into();
    broken["status"]["containerStatuses"][0]
        .as_object_mut()
        .unwrap()
        .remove("image");
    let bad_file = tmp.path().join("broken-pod.json");
    std::fs::write(&bad_file, serde_json::to_vec(&broken).unwrap()).unwrap();
    let v = kubernetes_validate(&[bad_file]);
    assert!(!v.passed, "a broken pod passed:\n{}", v.report);
    for want in [
        "'podIPv4' was unexpected",
        "restartCount: '1' is not of type 'integer'",
        "'image' is a required property",
    ] {
        assert!(v.report.contains(want), "want {want:?} in:\n{}", v.report);
    }
    a.stop_all();
}
