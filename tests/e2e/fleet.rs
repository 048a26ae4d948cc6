//! `tidelet fleet` against a real Mosquitto: the real binary reads retained node topics that
//! `mosquitto_pub -r` left (a fresh node, an offline one, a stuck one with an expired lease),
//! publishes desired pods that a fake node (a `mosquitto_sub` + `mosquitto_pub` responder)
//! answers, and streams live changes. No root needed: these run everywhere Mosquitto is
//! installed (`apt-get install mosquitto mosquitto-clients openssl`).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidelet_e2e::*;

/// A Mosquitto of our own on a free loopback port, stopped (by its pid) when dropped.
struct Broker {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} not found: apt-get install mosquitto mosquitto-clients openssl"
    );
}

impl Broker {
    fn start() -> Broker {
        Self::start_with("")
    }

    /// Start with extra lines for the listener (TLS); anonymous clients allowed.
    fn start_with(extra: &str) -> Broker {
        for t in ["mosquitto", "mosquitto_pub", "mosquitto_sub"] {
            need(t);
        }
        let dir = tempfile::Builder::new()
            .prefix("tidelet-fleet-mqtt-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\npersistence false\n{}{extra}",
                if extra.contains("allow_anonymous") {
                    ""
                } else {
                    "allow_anonymous true\n"
                }
            ),
        )
        .unwrap();
        let child = Self::spawn(dir.path());
        let mut b = Broker { child, port, dir };
        b.wait_listening();
        b
    }

    fn spawn(dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("mosquitto.log"))
            .unwrap();
        Command::new("mosquitto")
            .arg("-c")
            .arg(dir.join("mosquitto.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mosquitto")
    }

    /// Stop the broker (its retained messages go: no persistence) and start it again on the
    /// same port after `down`.
    fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = Self::spawn(self.dir.path());
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let port = self.port;
        let b = self;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = b.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "mosquitto did not start ({exited:?}):\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mosquitto_pub` (retained or not); an empty payload clears a retained topic.
    fn publish(&self, topic: &str, payload: &str, retain: bool) {
        let mut c = Command::new("mosquitto_pub");
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1"]);
        c.args(["-t", topic]);
        if payload.is_empty() {
            c.arg("-n");
        } else {
            c.args(["-m", payload]);
        }
        if retain {
            c.arg("-r");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "mosquitto_pub {topic}: {out:?}");
    }

    fn publish_as(&self, user: &str, password: &str, topic: &str, payload: &str) {
        let out = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-q",
                "1",
                "-r",
            ])
            .args(["-u", user, "-P", password, "-t", topic, "-m", payload])
            .output()
            .unwrap();
        assert!(out.status.success(), "mosquitto_pub {topic}: {out:?}");
    }

    /// The retained message on `topic`, if any (what a fresh subscriber sees).
    fn retained(&self, topic: &str) -> Option<String> {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-t", topic, "-C", "1", "-W", "2", "--retained-only"])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        (!s.is_empty()).then_some(s)
    }

    /// A fake node: waits (in the background) for the desired message on `desired` (retained
    /// or not) and answers each of `answers` on `result`, retained, in order.
    fn responder(
        &self,
        desired: &str,
        result: &str,
        answers: Vec<Value>,
    ) -> std::thread::JoinHandle<()> {
        let port = self.port.to_string();
        let (desired, result) = (desired.to_string(), result.to_string());
        let mut sub = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                &desired,
                "-C",
                "1",
                "-W",
                "30",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::spawn(move || {
            let st = sub.wait().unwrap();
            assert!(st.success(), "the fake node saw no desired message: {st}");
            for a in answers {
                let out = Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-r"])
                    .args(["-t", &result, "-m", &a.to_string()])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
            }
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fleet(b: &Broker, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("fleet")
        .args(["--broker", &b.url()])
        .args(args)
        .env_remove("TIDELET_FLEET_BROKER")
        .output()
        .unwrap()
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
    b.publish(
        "tidelet/fresh/online",
        r#"{"online":true,"agent":"tidelet/0.1.0"}"#,
        true,
    );
    b.publish("tidelet/fresh/lease", &lease("fresh", 1, 240), true);
    b.publish(
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
    b.publish(
        "tidelet/fresh/pods/default/web",
        &pod_status(
            "web",
            json!({"running": {"startedAt": rfc3339(200)}}),
            true,
            0,
        ),
        true,
    );
    b.publish(
        "tidelet/fresh/pods/default/crashy",
        &pod_status(
            "crashy",
            json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            false,
            4,
        ),
        true,
    );
    b.publish(
        "tidelet/gone/online",
        r#"{"online":false,"reason":"connection lost"}"#,
        true,
    );
    b.publish(
        "tidelet/gone/node",
        &node_obj("gone", &[("Ready", "True")]),
        true,
    );
    b.publish(
        "tidelet/stuck/online",
        r#"{"online":true,"agent":"tidelet/0.1.0"}"#,
        true,
    );
    b.publish("tidelet/stuck/lease", &lease("stuck", 600, 240), true);
    b.publish(
        "tidelet/stuck/node",
        &node_obj("stuck", &[("Ready", "True")]),
        true,
    );
    // Not a node of this fleet: another root.
    b.publish("elsewhere/alien/online", r#"{"online":true}"#, true);
}

#[test]
fn fleet_nodes_shows_online_offline_and_stale_nodes() {
    let b = Broker::start();
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
    let b = Broker::start();
    three_nodes(&b);
    b.publish(
        "tidelet/gone/pods/kube-system/agent",
        &pod_status("agent", json!({"running": {}}), true, 1),
        true,
    );
    // A pod that is gone: its topic was cleared.
    b.publish(
        "tidelet/fresh/pods/default/old",
        &pod_status("old", json!({"running": {}}), true, 0),
        true,
    );
    b.publish("tidelet/fresh/pods/default/old", "", true);
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
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let f = manifest(dir.path(), "web", "  generation: 5\n");
    b.publish("tidelet/n1/online", r#"{"online":true}"#, true);
    let desired = "tidelet/n1/desired/pods/default/web";
    let result_topic = "tidelet/n1/desired/results/default/web";
    // History on the broker: a retained rejection of an earlier version must not count.
    b.publish(
        result_topic,
        &result("web", false, "Invalid", Some(4)).to_string(),
        true,
    );
    // The node first answers a late, older generation (a rejection), then ours.
    let node = b.responder(
        desired,
        result_topic,
        vec![
            result("web", false, "PolicyViolation", Some(4)),
            result("web", true, "Accepted", Some(5)),
        ],
    );
    let out = fleet(
        &b,
        &[
            "apply",
            "--node",
            "n1",
            f.to_str().unwrap(),
            "--timeout",
            "20s",
        ],
    );
    node.join().unwrap();
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}{se}");
    assert_eq!(so.trim(), "pod/web accepted on n1 (uid 3f2a-uid)", "{se}");
    // The manifest stays retained, byte for byte, for the node's next start.
    let kept = b.retained(desired).expect("desired pod retained");
    assert_eq!(
        kept.trim_end(),
        std::fs::read_to_string(&f).unwrap().trim_end()
    );
}

#[test]
fn fleet_apply_prints_a_rejection_with_its_errors_and_exits_1() {
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let f = manifest(dir.path(), "priv", "");
    let node = b.responder(
        "tidelet/n2/desired/pods/default/priv",
        "tidelet/n2/desired/results/default/priv",
        vec![result("priv", false, "PolicyViolation", None)],
    );
    let out = fleet(
        &b,
        &[
            "apply",
            "--node",
            "n2",
            f.to_str().unwrap(),
            "--timeout",
            "20s",
        ],
    );
    node.join().unwrap();
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
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let f = manifest(dir.path(), "later", "");
    b.publish(
        "tidelet/away/online",
        r#"{"online":false,"reason":"connection lost"}"#,
        true,
    );
    let start = Instant::now();
    let out = fleet(
        &b,
        &[
            "apply",
            "--node",
            "away",
            f.to_str().unwrap(),
            "--timeout",
            "2s",
        ],
    );
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
    assert!(b
        .retained("tidelet/away/desired/pods/default/later")
        .is_some());
}

#[test]
fn fleet_delete_clears_the_retained_desired_pod_and_waits_for_removed() {
    let b = Broker::start();
    let desired = "tidelet/n3/desired/pods/apps/web";
    b.publish(
        desired,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"apps"}}"#,
        true,
    );
    b.publish(
        "tidelet/n3/pods/apps/web",
        &pod_status("web", json!({"running": {}}), true, 0),
        true,
    );
    // The fake node: a subscriber that has seen the retained manifest (so it is subscribed)
    // before the delete runs, and answers `Removed` once the empty message arrives.
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &b.port.to_string(),
            "-t",
            desired,
            "-C",
            "2",
            "-W",
            "30",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut sub);
    next_matching(&rx, "the retained manifest", |l| {
        l.contains("\"kind\":\"Pod\"")
    });
    let removed = json!({"namespace": "apps", "name": "web", "accepted": true, "reason": "Removed",
                         "message": "removed", "errors": [], "generation": null,
                         "resourceVersion": null, "uid": null});
    let answer = {
        let port = b.port;
        let mut sub = sub;
        std::thread::spawn(move || {
            // mosquitto_sub prints nothing for an empty payload: its exit after the second
            // message (-C 2) is the sign.
            let empty = rx.recv_timeout(Duration::from_secs(30));
            let st = sub.wait().unwrap();
            assert!(st.success(), "the fake node saw no second message: {st}");
            let out = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-r"])
                .args([
                    "-t",
                    "tidelet/n3/desired/results/apps/web",
                    "-m",
                    &removed.to_string(),
                ])
                .output()
                .unwrap();
            assert!(out.status.success());
            empty
        })
    };
    let out = fleet(
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
    );
    let empty = answer.join().unwrap();
    assert!(
        matches!(
            empty.as_deref(),
            Ok("") | Err(mpsc::RecvTimeoutError::Disconnected)
        ),
        "the node saw a message that is not empty: {empty:?}"
    );
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}{se}");
    assert_eq!(so.trim(), "pod/web removed from n3");
    assert_eq!(
        b.retained(desired),
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
    let b = Broker::start();
    b.publish("tidelet/w1/online", r#"{"online":true}"#, true);
    b.publish("tidelet/w2/online", r#"{"online":true}"#, true);
    let mut child = watch(&b, &["--node", "w1", "-o", "json"]);
    let rx = lines_of(&mut child);
    let first: Value = serde_json::from_str(&next_matching(&rx, "w1 online", |l| {
        l.contains("tidelet/w1/online")
    }))
    .unwrap();
    assert_eq!(first["retained"], true);
    assert_eq!(first["payload"]["online"], true);
    b.publish(
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
    b.publish("tidelet/w1/pods/default/web", "", true);
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
    let b = Broker::start();
    b.publish("tidelet/w3/online", r#"{"online":true}"#, true);
    let mut child = watch(&b, &[]);
    let rx = lines_of(&mut child);
    next_matching(&rx, "w3 online", |l| l.ends_with("w3  online"));
    let ev = json!({"apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": "BackOff",
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web"},
        "message": "Back-off restarting failed container main"});
    b.publish("tidelet/w3/events", &ev.to_string(), false);
    next_matching(&rx, "the event", |l| {
        l.contains("w3  Warning BackOff pod/default/web: Back-off restarting failed container main")
    });
    b.publish(
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
    let port = free_port();
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
    assert!(took < Duration::from_secs(8), "bounded wait: {took:?}");
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
    let out = Command::new(bin())
        .args([
            "fleet",
            "--broker",
            &format!("mqtt://127.0.0.1:{}", free_port()),
        ])
        .args(["apply", "--node", "n1", f.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(se.contains("two.yaml: holds 2 documents"), "{se}");
}

/// A CA and a server certificate for 127.0.0.1 (openssl), in `dir`.
fn make_certs(dir: &Path, ca_name: &str) {
    let run = |args: &str| {
        let out = Command::new("sh")
            .args(["-c", &format!("cd {} && openssl {args}", dir.display())])
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args}: {out:?}");
    };
    run(&format!(
        "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN={ca_name} -keyout {ca_name}.key -out {ca_name}.pem"
    ));
    if ca_name == "ca" {
        run("req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr");
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.pem");
        run("req -newkey rsa:2048 -nodes -subj /CN=operator -keyout client.key -out client.csr");
        // An extension makes it X.509 v3 (webpki refuses v1 certificates).
        std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
        run("x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile client.cnf -out client.pem");
    }
}

#[test]
fn fleet_over_tls_verifies_the_broker_with_the_given_ca() {
    need("openssl");
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path(), "ca");
    make_certs(certs.path(), "other");
    // Run as root, Mosquitto drops to its own user: let it read these throw-away files.
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(certs.path()).unwrap() {
        let e = e.unwrap();
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = |f: &str| certs.path().join(f).display().to_string();
    let b = Broker::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        p("ca.pem"),
        p("server.pem"),
        p("server.key")
    ));
    let url = format!("mqtts://127.0.0.1:{}", b.port);
    let run = |ca: &str| {
        Command::new(bin())
            .args([
                "fleet",
                "--broker",
                &url,
                "--ca",
                ca,
                "--connect-timeout",
                "5s",
                "nodes",
            ])
            .output()
            .unwrap()
    };
    let out = run(&p("ca.pem"));
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}{se}\n{}", b.log());
    assert!(so.starts_with("NODE"), "{so}");
    // An empty broker: the table is empty and stderr says why it may be.
    assert!(se.contains("no nodes under tidelet/ on mqtts://"), "{se}");
    let start = Instant::now();
    let out = run(&p("other.pem"));
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{so}{se}");
    assert!(
        se.contains(&format!("cannot connect to {url}")) && se.contains("TLS"),
        "{se}"
    );
    // A certificate that does not verify is not retried until the deadline.
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn fleet_watch_carries_on_across_a_broker_restart() {
    let mut b = Broker::start();
    b.publish("tidelet/r1/online", r#"{"online":true}"#, true);
    let mut child = watch(&b, &["--node", "r1"]);
    let rx = lines_of(&mut child);
    next_matching(&rx, "r1 online", |l| l.ends_with("r1  online"));
    b.restart(Duration::from_secs(1));
    // The node comes back to the new broker and says so: watch resubscribed by itself.
    b.publish(
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
    need("mosquitto_passwd");
    let auth = tempfile::tempdir().unwrap();
    let pw = auth.path().join("passwd");
    let out = Command::new("mosquitto_passwd")
        .args(["-c", "-b", pw.to_str().unwrap(), "operator", "s3cret"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Run as root, Mosquitto drops to its own user before it reads the password file.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(auth.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let b = Broker::start_with(&format!(
        "allow_anonymous false\npassword_file {}\n",
        pw.display()
    ));
    b.publish_as(
        "operator",
        "s3cret",
        "tidelet/p1/online",
        r#"{"online":true}"#,
    );
    let good = auth.path().join("good");
    std::fs::write(&good, "s3cret\n").unwrap();
    let bad = auth.path().join("bad");
    std::fs::write(&bad, "guess\n").unwrap();
    let run = |user: Option<&str>, file: &Path| {
        let mut c = Command::new(bin());
        c.args(["fleet", "--broker", &b.url(), "--connect-timeout", "5s"]);
        if let Some(u) = user {
            c.args(["--username", u, "--password-file", file.to_str().unwrap()]);
        }
        c.arg("nodes").output().unwrap()
    };
    let out = run(Some("operator"), &good);
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}{se}");
    assert!(
        so.lines()
            .any(|l| l.starts_with("p1 ") && l.contains("Online")),
        "{so}"
    );
    for (user, file) in [(Some("operator"), &bad), (None, &bad)] {
        let start = Instant::now();
        let out = run(user, file);
        let (so, se) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{so}{se}");
        assert!(
            se.contains(&format!(
                "cannot connect to {}: the broker refused the connection",
                b.url()
            )),
            "{se}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "refusals are final: {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn fleet_with_mutual_tls_presents_its_certificate() {
    need("openssl");
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path(), "ca");
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(certs.path()).unwrap() {
        let e = e.unwrap();
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = |f: &str| certs.path().join(f).display().to_string();
    let b = Broker::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        p("ca.pem"),
        p("server.pem"),
        p("server.key")
    ));
    let url = format!("mqtts://127.0.0.1:{}", b.port);
    let base = [
        "fleet",
        "--broker",
        &url,
        "--ca",
        &p("ca.pem"),
        "--connect-timeout",
        "3s",
    ];
    let out = Command::new(bin())
        .args(base)
        .args([
            "--cert",
            &p("client.pem"),
            "--key",
            &p("client.key"),
            "pods",
        ])
        .output()
        .unwrap();
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}{se}\n{}", b.log());
    assert!(so.starts_with("NODE"), "{so}");
    let out = Command::new(bin()).args(base).arg("pods").output().unwrap();
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{so}{se}");
    assert!(
        se.contains(&format!("cannot connect to {url}: TLS: "))
            && se.contains("CertificateRequired"),
        "{se}"
    );
    // A TLS refusal is final: no retrying until the deadline.
    assert!(!se.contains("gave up after"), "{se}");
}
