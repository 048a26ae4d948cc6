//! `tidelet fleet` against a real Mosquitto (the shared [`Broker`] of the harness): the real
//! binary reads retained node topics that test clients left (a fresh node, an offline one, a
//! stuck one with an expired lease), publishes desired pods that a fake node (a subscription
//! and a publisher) answers, streams live changes, and logs in with TLS, a password or a
//! client certificate. These need no root. [`agent`] drives the real agent (as root) over
//! mutual TLS with the shipped ACL: apply, nodes, pods, a policy rejection, delete, and the
//! last will of a killed agent.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidelet_e2e::broker::{Broker, BrokerOpts, Identity, Message, Subscription};
use tidelet_e2e::*;

mod agent;

/// `tidelet fleet --broker URL ARGS` as an anonymous client (the brokers here without an ACL
/// let anyone in).
fn fleet(b: &Broker, args: &[&str]) -> Output {
    fleet_as(b, Identity::Anonymous, args)
}

/// `tidelet fleet` with the connection flags of `who` ([`Broker::fleet_args`]).
fn fleet_as(b: &Broker, who: impl Into<Identity>, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("fleet")
        .args(b.fleet_args(who))
        .args(args)
        .env_remove("TIDELET_FLEET_BROKER")
        .output()
        .unwrap()
}

/// `tidelet fleet apply --node NODE FILE --timeout TIMEOUT` as `who`.
fn apply_as(b: &Broker, who: impl Into<Identity>, node: &str, file: &str, timeout: &str) -> Output {
    fleet_as(
        b,
        who,
        &["apply", "--node", node, file, "--timeout", timeout],
    )
}

/// Publish `payload` as an anonymous client; an empty retained payload clears the topic.
fn put(b: &Broker, topic: &str, payload: &str, retain: bool) {
    b.publish(topic, payload.as_bytes(), retain, Identity::Anonymous);
}

/// The retained message on `topic`, if any (what a fresh subscriber sees).
fn retained_text(b: &Broker, topic: &str) -> Option<String> {
    b.retained(topic, Identity::Anonymous)
        .remove(topic)
        .map(|p| String::from_utf8_lossy(&p).into_owned())
}

/// A fake node on `sub` (already subscribed): in the background it waits for the message
/// `is_trigger` picks, then publishes each of `answers` on `result`, retained, in order;
/// meanwhile `run` runs. Returns what `run` returned and the trigger message.
fn fake_node<T>(
    b: &Broker,
    mut sub: Subscription,
    is_trigger: impl Fn(&Message) -> bool + Send,
    result: &str,
    answers: Vec<Value>,
    run: impl FnOnce() -> T,
) -> (T, Message) {
    std::thread::scope(|s| {
        let node = s.spawn(move || {
            let m = sub.wait_for(
                "the fake node's trigger",
                Duration::from_secs(30),
                is_trigger,
            );
            for a in answers {
                b.publish(result, a.to_string().as_bytes(), true, Identity::Anonymous);
            }
            m
        });
        let out = run();
        (out, node.join().unwrap())
    })
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Rows of a table printed by `fleet`, split on runs of spaces, header first.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn rfc3339(secs_ago: u64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", unix_now() - secs_ago),
            "+%Y-%m-%dT%H:%M:%S.000000Z",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn lease(node: &str, secs_ago: u64, duration: u64) -> String {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": node, "namespace": "kube-node-lease"},
           "spec": {"holderIdentity": node, "renewTime": rfc3339(secs_ago),
                    "leaseDurationSeconds": duration}})
    .to_string()
}

fn node_obj(node: &str, conditions: &[(&str, &str)]) -> String {
    let conds: Vec<Value> = conditions
        .iter()
        .map(|(t, s)| json!({"type": t, "status": s}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
           "status": {"capacity": {"cpu": "4", "memory": "2Gi"},
                      "allocatable": {"cpu": "3500m", "memory": "1800Mi"},
                      "conditions": conds}})
    .to_string()
}

fn pod_status(name: &str, state: Value, ready: bool, restarts: u32) -> String {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "creationTimestamp": rfc3339(600)},
           "spec": {"containers": [{"name": "main", "image": "busybox:test"}]},
           "status": {"phase": "Running", "containerStatuses": [
               {"name": "main", "ready": ready, "restartCount": restarts, "state": state}]}})
    .to_string()
}

/// Three nodes: `fresh` (online, lease renewed just now, two pods), `gone` (offline, its last
/// will), `stuck` (online, but its lease ran out ten minutes ago).
fn three_nodes(b: &Broker) {
    put(
        b,
        "tidelet/fresh/online",
        r#"{"online":true,"agent":"tidelet/0.1.0"}"#,
        true,
    );
    put(b, "tidelet/fresh/lease", &lease("fresh", 1, 240), true);
    put(
        b,
        "tidelet/fresh/node",
        &node_obj(
            "fresh",
            &[
                ("Ready", "True"),
                ("MemoryPressure", "True"),
                ("DiskPressure", "False"),
            ],
        ),
        true,
    );
    put(
        b,
        "tidelet/fresh/pods/default/web",
        &pod_status(
            "web",
            json!({"running": {"startedAt": rfc3339(200)}}),
            true,
            0,
        ),
        true,
    );
    put(
        b,
        "tidelet/fresh/pods/default/crashy",
        &pod_status(
            "crashy",
            json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            false,
            4,
        ),
        true,
    );
    put(
        b,
        "tidelet/gone/online",
        r#"{"online":false,"reason":"connection lost"}"#,
        true,
    );
    put(
        b,
        "tidelet/gone/node",
        &node_obj("gone", &[("Ready", "True")]),
        true,
    );
    put(
        b,
        "tidelet/stuck/online",
        r#"{"online":true,"agent":"tidelet/0.1.0"}"#,
        true,
    );
    put(b, "tidelet/stuck/lease", &lease("stuck", 600, 240), true);
    put(
        b,
        "tidelet/stuck/node",
        &node_obj("stuck", &[("Ready", "True")]),
        true,
    );
    // Not a node of this fleet: another root.
    put(b, "elsewhere/alien/online", r#"{"online":true}"#, true);
}

#[test]
fn fleet_nodes_shows_online_offline_and_stale_nodes() {
    let b = Broker::new(BrokerOpts::default());
    three_nodes(&b);
    let out = fleet(&b, &["nodes"]);
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}{se}");
    let r = rows(&so);
    assert_eq!(
        r[0],
        [
            "NODE",
            "STATUS",
            "CONDITIONS",
            "PODS",
            "CPU",
            "MEMORY",
            "LAST-SEEN"
        ],
        "{so}"
    );
    assert_eq!(r.len(), 4, "three nodes, no alien: {so}");
    assert_eq!(
        r[1][..6],
        [
            "fresh",
            "Online",
            "Ready,MemoryPressure",
            "1/2",
            "3500m",
            "1800Mi"
        ],
        "{so}"
    );
    assert_eq!(
        r[2][..6],
        ["gone", "Offline", "Ready", "0/0", "3500m", "1800Mi"],
        "{so}"
    );
    assert_eq!(r[2][6], "<unknown>", "{so}");
    assert_eq!(r[3][..2], ["stuck", "Stale"], "{so}");
    assert_eq!(r[3][6], "10m", "{so}");

    let out = fleet(&b, &["nodes", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let status: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap(), n["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        [("fresh", "Online"), ("gone", "Offline"), ("stuck", "Stale")]
    );
    assert_eq!(v[1]["offlineReason"], "connection lost");
    assert_eq!(v[0]["nodeObject"]["kind"], "Node");
}

#[test]
fn fleet_pods_shows_kubectl_columns_per_node() {
    let b = Broker::new(BrokerOpts::default());
    three_nodes(&b);
    put(
        &b,
        "tidelet/gone/pods/kube-system/agent",
        &pod_status("agent", json!({"running": {}}), true, 1),
        true,
    );
    // A pod that is gone: its topic was cleared.
    put(
        &b,
        "tidelet/fresh/pods/default/old",
        &pod_status("old", json!({"running": {}}), true, 0),
        true,
    );
    put(&b, "tidelet/fresh/pods/default/old", "", true);
    let out = fleet(&b, &["pods"]);
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}{se}");
    let r = rows(&so);
    assert_eq!(
        r[0],
        [
            "NODE",
            "NAMESPACE",
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE"
        ]
    );
    assert_eq!(r.len(), 4, "{so}");
    assert_eq!(
        r[1],
        [
            "fresh",
            "default",
            "crashy",
            "0/1",
            "CrashLoopBackOff",
            "4",
            "10m"
        ],
        "{so}"
    );
    assert_eq!(
        r[2],
        ["fresh", "default", "web", "1/1", "Running", "0", "10m"],
        "{so}"
    );
    assert_eq!(
        r[3][..6],
        ["gone", "kube-system", "agent", "1/1", "Running", "1"],
        "{so}"
    );

    let out = fleet(&b, &["pods", "--node", "gone", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "List");
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["agent"]);
}

fn manifest(dir: &Path, name: &str, extra_meta: &str) -> PathBuf {
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &f,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{extra_meta}spec:\n  containers:\n  - name: main\n    image: busybox:test\n    command: [sleep, '3600']\n"
        ),
    )
    .unwrap();
    f
}

fn result(name: &str, accepted: bool, reason: &str, generation: Option<i64>) -> Value {
    json!({"apiVersion": "tidelet.io/v1", "kind": "DesiredPodResult", "namespace": "default",
           "name": name, "accepted": accepted, "reason": reason,
           "message": if accepted { "the pod runs" } else { "remote pods may not be privileged" },
           "errors": if accepted { vec![] } else { vec!["spec.containers[0].securityContext.privileged: not allowed by the node's remotePodPolicy"] },
           "generation": generation, "resourceVersion": null,
           "uid": if accepted { Some("3f2a-uid") } else { None }})
}

#[test]
fn fleet_apply_publishes_retained_and_waits_for_the_answer_to_this_generation() {
    let b = Broker::new(BrokerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let f = manifest(dir.path(), "web", "  generation: 5\n");
    put(&b, "tidelet/n1/online", r#"{"online":true}"#, true);
    let desired = "tidelet/n1/desired/pods/default/web";
    let result_topic = "tidelet/n1/desired/results/default/web";
    // History on the broker: a retained rejection of an earlier version must not count.
    put(
        &b,
        result_topic,
        &result("web", false, "Invalid", Some(4)).to_string(),
        true,
    );
    // The node first answers a late, older generation (a rejection), then ours.
    let sub = b.subscribe(desired, Identity::Anonymous);
    let (out, _) = fake_node(
        &b,
        sub,
        |m| !m.payload.is_empty(),
        result_topic,
        vec![
            result("web", false, "PolicyViolation", Some(4)),
            result("web", true, "Accepted", Some(5)),
        ],
        || apply_as(&b, Identity::Anonymous, "n1", f.to_str().unwrap(), "20s"),
    );
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}{se}");
    assert_eq!(so.trim(), "pod/web accepted on n1 (uid 3f2a-uid)", "{se}");
    // The manifest stays retained, byte for byte, for the node's next start.
    let kept = retained_text(&b, desired).expect("desired pod retained");
    assert_eq!(
        kept.trim_end(),
        std::fs::read_to_string(&f).unwrap().trim_end()
    );
}

#[test]
fn fleet_apply_prints_a_rejection_with_its_errors_and_exits_1() {
    let b = Broker::new(BrokerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let f = manifest(dir.path(), "priv", "");
    let sub = b.subscribe("tidelet/n2/desired/pods/default/priv", Identity::Anonymous);
    let (out, _) = fake_node(
        &b,
        sub,
        |m| !m.payload.is_empty(),
        "tidelet/n2/desired/results/default/priv",
        vec![result("priv", false, "PolicyViolation", None)],
        || apply_as(&b, Identity::Anonymous, "n2", f.to_str().unwrap(), "20s"),
    );
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{so}{se}");
    let lines: Vec<&str> = so.lines().collect();
    assert_eq!(
        lines,
        [
            "pod/priv rejected on n2: PolicyViolation: remote pods may not be privileged",
            "  - spec.containers[0].securityContext.privileged: not allowed by the node's remotePodPolicy"
        ]
    );
}

#[test]
fn fleet_apply_to_an_offline_node_times_out_with_exit_2_and_leaves_the_pod_desired() {
    let b = Broker::new(BrokerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let f = manifest(dir.path(), "later", "");
    put(
        &b,
        "tidelet/away/online",
        r#"{"online":false,"reason":"connection lost"}"#,
        true,
    );
    let start = Instant::now();
    let out = apply_as(&b, Identity::Anonymous, "away", f.to_str().unwrap(), "2s");
    let took = start.elapsed();
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{so}{se}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(
        se.contains("no answer from away within 2s: away is offline (connection lost)"),
        "{se}"
    );
    assert!(
        se.contains("stays retained on tidelet/away/desired/pods/default/later"),
        "{se}"
    );
    assert!(retained_text(&b, "tidelet/away/desired/pods/default/later").is_some());
}

#[test]
fn fleet_delete_clears_the_retained_desired_pod_and_waits_for_removed() {
    let b = Broker::new(BrokerOpts::default());
    let desired = "tidelet/n3/desired/pods/apps/web";
    put(
        &b,
        desired,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"apps"}}"#,
        true,
    );
    put(
        &b,
        "tidelet/n3/pods/apps/web",
        &pod_status("web", json!({"running": {}}), true, 0),
        true,
    );
    // The fake node: a subscriber that has seen the retained manifest (so it is subscribed)
    // before the delete runs, and answers `Removed` once the empty message arrives.
    let mut sub = b.subscribe(desired, Identity::Anonymous);
    sub.wait_for("the retained manifest", Duration::from_secs(15), |m| {
        m.retained && m.text().contains("\"kind\":\"Pod\"")
    });
    let removed = json!({"namespace": "apps", "name": "web", "accepted": true, "reason": "Removed",
                         "message": "removed", "errors": [], "generation": null,
                         "resourceVersion": null, "uid": null});
    let (out, empty) = fake_node(
        &b,
        sub,
        |m| m.payload.is_empty(),
        "tidelet/n3/desired/results/apps/web",
        vec![removed],
        || {
            fleet(
                &b,
                &[
                    "delete",
                    "--node",
                    "n3",
                    "web",
                    "-n",
                    "apps",
                    "--timeout",
                    "20s",
                ],
            )
        },
    );
    assert!(!empty.retained, "the empty message is live: {empty:?}");
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}{se}");
    assert_eq!(so.trim(), "pod/web removed from n3");
    assert_eq!(
        retained_text(&b, desired),
        None,
        "the retained desired pod is gone"
    );
}

/// Lines a child prints, read in the background.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_matching(rx: &mpsc::Receiver<String>, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if f(&l) => return l,
            Ok(l) => seen.push(l),
            Err(_) => break,
        }
    }
    panic!("no line with {what}; saw: {seen:#?}");
}

fn watch(b: &Broker, args: &[&str]) -> Child {
    Command::new(bin())
        .arg("fleet")
        .args(["--broker", &b.url(), "watch"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn fleet_watch_json_streams_retained_state_then_live_changes() {
    let b = Broker::new(BrokerOpts::default());
    put(&b, "tidelet/w1/online", r#"{"online":true}"#, true);
    put(&b, "tidelet/w2/online", r#"{"online":true}"#, true);
    let mut child = watch(&b, &["--node", "w1", "-o", "json"]);
    let rx = lines_of(&mut child);
    let first: Value = serde_json::from_str(&next_matching(&rx, "w1 online", |l| {
        l.contains("tidelet/w1/online")
    }))
    .unwrap();
    assert_eq!(first["retained"], true);
    assert_eq!(first["payload"]["online"], true);
    put(
        &b,
        "tidelet/w1/pods/default/web",
        &pod_status(
            "web",
            json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            false,
            2,
        ),
        true,
    );
    let l = next_matching(&rx, "the pod's change", |l| l.contains("pods/default/web"));
    let v: Value = serde_json::from_str(&l).unwrap();
    assert_eq!(v["topic"], "tidelet/w1/pods/default/web");
    assert_eq!(v["retained"], false);
    assert_eq!(
        v["payload"]["status"]["containerStatuses"][0]["restartCount"],
        2
    );
    put(&b, "tidelet/w1/pods/default/web", "", true);
    let l = next_matching(&rx, "the cleared topic", |l| l.contains("pods/default/web"));
    assert_eq!(
        serde_json::from_str::<Value>(&l).unwrap()["payload"],
        Value::Null
    );
    let _ = child.kill();
    let _ = child.wait();
    // Nothing of w2 was shown (only w1 was watched).
    while let Ok(l) = rx.try_recv() {
        assert!(!l.contains("tidelet/w2/"), "{l}");
    }
}

#[test]
fn fleet_watch_prints_one_line_per_change() {
    let b = Broker::new(BrokerOpts::default());
    put(&b, "tidelet/w3/online", r#"{"online":true}"#, true);
    let mut child = watch(&b, &[]);
    let rx = lines_of(&mut child);
    next_matching(&rx, "w3 online", |l| l.ends_with("w3  online"));
    let ev = json!({"apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": "BackOff",
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web"},
        "message": "Back-off restarting failed container main"});
    put(&b, "tidelet/w3/events", &ev.to_string(), false);
    next_matching(&rx, "the event", |l| {
        l.contains("w3  Warning BackOff pod/default/web: Back-off restarting failed container main")
    });
    put(
        &b,
        "tidelet/w3/online",
        r#"{"online":false,"reason":"stopped"}"#,
        true,
    );
    let l = next_matching(&rx, "offline", |l| l.contains("w3  offline"));
    assert!(l.ends_with("w3  offline (stopped)"), "{l}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn fleet_with_no_broker_says_so_and_exits_1() {
    // Reserved and refusing (a free port could be taken by a parallel test's broker).
    let (_reserved, port) = tidelet_e2e::broker::refused_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let start = Instant::now();
    let out = Command::new(bin())
        .args([
            "fleet",
            "--broker",
            &url,
            "--connect-timeout",
            "2s",
            "nodes",
        ])
        .output()
        .unwrap();
    let took = start.elapsed();
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{so}{se}");
    assert!(
        se.contains(&format!("cannot connect to {url}: connection refused")),
        "{se}"
    );
    // Bounded by --connect-timeout (a guard against hanging, not a speed target).
    assert!(took < Duration::from_secs(30), "bounded wait: {took:?}");
}

#[test]
fn fleet_apply_refuses_a_bad_manifest_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("two.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\n",
    )
    .unwrap();
    // No broker at all: the manifest is judged first.
    let (_reserved, port) = tidelet_e2e::broker::refused_port();
    let out = Command::new(bin())
        .args(["fleet", "--broker", &format!("mqtt://127.0.0.1:{port}")])
        .args(["apply", "--node", "n1", f.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(se.contains("two.yaml: holds 2 documents"), "{se}");
}

#[test]
fn fleet_over_tls_verifies_the_broker_with_the_given_ca() {
    let b = Broker::new(BrokerOpts {
        tls: true,
        ..Default::default()
    });
    let run = |ca: &Path| {
        Command::new(bin())
            .args(["fleet", "--broker", &b.url(), "--ca"])
            .arg(ca)
            .args(["--connect-timeout", "60s", "nodes"])
            .output()
            .unwrap()
    };
    let out = run(&b.ca());
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}{se}\n{}", b.log());
    assert!(so.starts_with("NODE"), "{so}");
    // An empty broker: the table is empty and stderr says why it may be.
    assert!(se.contains("no nodes under tidelet/ on mqtts://"), "{se}");
    let start = Instant::now();
    let out = run(&b.pki().foreign_ca());
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{so}{se}");
    assert!(
        se.contains(&format!("cannot connect to {}", b.url())) && se.contains("TLS"),
        "{se}"
    );
    // A certificate that does not verify is not retried until the (60 s) deadline.
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn fleet_watch_carries_on_across_a_broker_restart() {
    let mut b = Broker::new(BrokerOpts::default());
    put(&b, "tidelet/r1/online", r#"{"online":true}"#, true);
    let mut child = watch(&b, &["--node", "r1"]);
    let rx = lines_of(&mut child);
    next_matching(&rx, "r1 online", |l| l.ends_with("r1  online"));
    // Down for a second, then back on the same port with nothing retained (no persistence).
    b.kill();
    std::thread::sleep(Duration::from_secs(1));
    b.start();
    // The node comes back to the new broker and says so: watch resubscribed by itself.
    put(
        &b,
        "tidelet/r1/online",
        r#"{"online":false,"reason":"restarting"}"#,
        true,
    );
    next_matching(&rx, "r1 offline after the restart", |l| {
        l.ends_with("r1  offline (restarting)")
    });
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("lost ") && err.contains("reconnected to"),
        "{err}"
    );
}

#[test]
fn fleet_with_a_password_broker_logs_in_or_says_why_not() {
    let b = Broker::new(BrokerOpts {
        acl: true,
        users: vec!["p1".into()],
        ..Default::default()
    });
    put_as(&b, "p1", "tidelet/p1/online", r#"{"online":true}"#);
    let out = fleet_as(&b, "operator", &["--connect-timeout", "5s", "nodes"]);
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}{se}");
    assert!(
        so.lines()
            .any(|l| l.starts_with("p1 ") && l.contains("Online")),
        "{so}"
    );
    let bad = b.dir().join("bad-password");
    std::fs::write(&bad, "guess\n").unwrap();
    let wrong_password = [
        "--username",
        "operator",
        "--password-file",
        bad.to_str().unwrap(),
    ];
    for creds in [&wrong_password[..], &[]] {
        let start = Instant::now();
        let out = fleet_as(
            &b,
            Identity::Anonymous,
            &[creds, &["--connect-timeout", "60s", "nodes"]].concat(),
        );
        let (so, se) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{creds:?}: {so}{se}");
        assert!(
            se.contains(&format!(
                "cannot connect to {}: the broker refused the connection",
                b.url()
            )),
            "{creds:?}: {se}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "refusals are final (not retried until the 60 s deadline): {:?}",
            start.elapsed()
        );
    }
}

/// Publish `payload` retained as the password user `who`.
fn put_as(b: &Broker, who: &str, topic: &str, payload: &str) {
    b.publish(topic, payload.as_bytes(), true, who);
}

#[test]
fn fleet_with_mutual_tls_presents_its_certificate() {
    let b = Broker::new(BrokerOpts {
        tls: true,
        require_client_cert: true,
        ..Default::default()
    });
    let out = fleet_as(&b, "operator", &["--connect-timeout", "3s", "pods"]);
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}{se}\n{}", b.log());
    assert!(so.starts_with("NODE"), "{so}");
    // The CA but no certificate of our own.
    let out = fleet_as(
        &b,
        Identity::Anonymous,
        &["--connect-timeout", "3s", "pods"],
    );
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{so}{se}");
    assert!(
        se.contains(&format!("cannot connect to {}: TLS: ", b.url()))
            && se.contains("CertificateRequired"),
        "{se}"
    );
    // A TLS refusal is final: no retrying until the deadline.
    assert!(!se.contains("gave up after"), "{se}");
}
