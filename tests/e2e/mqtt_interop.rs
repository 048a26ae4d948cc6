//! The agent's MQTT contract (docs/mqtt.md) checked from outside by another client stack,
//! paho-mqtt (`tests/mqtt/python/client.py`), through two broker implementations: Mosquitto
//! and amqtt (`tidelet_e2e::amqtt`). The agent's own tests (`mqtt.rs`) use Mosquitto's tools;
//! here a control plane written with paho sees the same answers: a desired pod that clashes
//! with a static pod answered `Conflict` once and never `Accepted`, `Removed` with the removed
//! pod's uid, the status topics; and after a broker restart that replays its retained
//! messages, the agent's end state is right. amqtt replays them more than asked: on every
//! connection it sends the retained messages matching every client's subscriptions (so the
//! agent gets its own pod topics, results and node again, after it unsubscribed from them, and
//! some twice). They run, never skip, as root (`TIDELET_REQUIRE_PRIVILEGED=1`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidelet_e2e::amqtt::{self, Amqtt};
use tidelet_e2e::broker::{Broker, BrokerOpts};
use tidelet_e2e::*;

use crate::pod_yaml;

const WAIT: Duration = Duration::from_secs(30);
const P: &str = "tidelet/e2e/";

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::Null)
}

fn phase(s: &str) -> String {
    json_of(s)["status"]["phase"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A desired pod manifest at `generation` (no `-<node>` suffix: run under the name given).
fn desired(name: &str, generation: i64) -> String {
    pod_yaml(name, "", &[("c", "sleep 3600", "")]).replacen(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  generation: {generation}\n"),
        1,
    )
}

/// The broker under test.
enum Server {
    Mosquitto(Broker),
    Amqtt(Amqtt),
}

impl Server {
    fn mosquitto() -> Server {
        // Plain TCP and anonymous, as amqtt is run: the TLS and ACL side is mqtt.rs's. With
        // persistence, so that a restart keeps the retained messages, as amqtt's wrapper does.
        Server::Mosquitto(Broker::new(BrokerOpts {
            persistence: true,
            ..Default::default()
        }))
    }

    fn port(&self) -> u16 {
        match self {
            Server::Mosquitto(b) => b.port(),
            Server::Amqtt(b) => b.port(),
        }
    }

    fn agent_config(&self) -> String {
        let mqtt = match self {
            Server::Mosquitto(b) => b.agent_config("e2e"),
            Server::Amqtt(b) => b.agent_config("e2e"),
        };
        format!("{mqtt}  leasePeriod: 2s\n")
    }

    fn stop(&mut self) {
        match self {
            Server::Mosquitto(b) => b.stop(),
            Server::Amqtt(b) => b.stop(),
        }
    }

    fn start(&mut self) {
        match self {
            Server::Mosquitto(b) => b.start(),
            Server::Amqtt(b) => b.start(),
        }
    }

    fn log(&self) -> String {
        match self {
            Server::Mosquitto(b) => b.log(),
            Server::Amqtt(b) => b.log(),
        }
    }
}

/// The control plane: `client.py`, one long-lived paho connection subscribed to the node's
/// whole tree, driven by JSON lines on its stdin; everything it reports is kept in order.
struct Paho {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<Value>,
    /// Every event so far (`connected`, `message`, `published`...).
    seen: Vec<Value>,
    /// The last payload of each topic seen: the retained state as a subscriber follows it.
    state: BTreeMap<String, String>,
    next_id: u64,
    stderr: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Paho {
    /// Connect as `operator`, subscribe to `filter` and wait for the SUBACK.
    fn start(port: u16, filter: &str) -> Paho {
        let tmp = tempfile::tempdir().unwrap();
        let stderr = tmp.path().join("client.stderr");
        let mut child = Command::new(amqtt::python())
            .arg(workspace().join("tests/mqtt/python/client.py"))
            .args(["--port", &port.to_string(), "--subscribe", filter])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start client.py");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let v = serde_json::from_str(&line).unwrap_or_else(
                    |e| json!({"event": "garbled", "line": line, "error": e.to_string()}),
                );
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let mut p = Paho {
            child,
            stdin,
            rx,
            seen: vec![],
            state: BTreeMap::new(),
            next_id: 0,
            stderr,
            _tmp: tmp,
        };
        p.wait("paho's SUBACK", |e| e["event"] == "subscribed");
        p
    }

    fn send(&mut self, cmd: Value) {
        writeln!(self.stdin, "{cmd}").expect("write to client.py");
        self.stdin.flush().unwrap();
    }

    /// The next event within `timeout`, recorded.
    fn next(&mut self, timeout: Duration) -> Option<Value> {
        let e = self.rx.recv_timeout(timeout).ok()?;
        if e["event"] == "message" {
            let topic = e["topic"].as_str().unwrap().to_string();
            self.state
                .insert(topic, e["payload"].as_str().unwrap().to_string());
        }
        assert!(
            e["event"] != "garbled" && e["event"] != "error",
            "client.py: {e}"
        );
        self.seen.push(e.clone());
        Some(e)
    }

    /// The first new event that satisfies `f`; panics after [`WAIT`] with paho's stderr.
    fn wait(&mut self, what: &str, mut f: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(e) if f(&e) => return e,
                Some(_) => {}
                None => panic!(
                    "timed out after {WAIT:?} waiting for {what}; paho's stderr:\n{}\nlast events:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                    self.tail(15)
                ),
            }
        }
    }

    fn tail(&self, n: usize) -> String {
        let from = self.seen.len().saturating_sub(n);
        self.seen[from..]
            .iter()
            .map(|e| format!("  {e}\n"))
            .collect()
    }

    /// Wait until the payload last seen on `topic` (empty if none) satisfies `f`.
    fn wait_topic(&mut self, topic: &str, mut f: impl FnMut(&str) -> bool) -> String {
        let current = self.state.get(topic).cloned().unwrap_or_default();
        if f(&current) {
            return current;
        }
        let e = self.wait(&format!("{topic} to match"), |e| {
            e["event"] == "message" && e["topic"] == topic && f(e["payload"].as_str().unwrap())
        });
        e["payload"].as_str().unwrap().to_string()
    }

    /// Publish at QoS 1 and wait for the broker's PUBACK.
    fn publish(&mut self, topic: &str, payload: &str, retain: bool) {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"op": "publish", "id": id, "topic": topic, "payload": payload, "retain": retain}));
        self.wait(&format!("the PUBACK of {topic}"), |e| {
            e["event"] == "published" && e["id"] == id
        });
    }

    /// The retained messages under `filter` as a fresh connection gets them; with what the
    /// broker sent twice or outside the filter (printed, as amqtt does it and Mosquitto does
    /// not: a later amqtt may stop).
    fn retained(&mut self, filter: &str) -> BTreeMap<String, String> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"op": "retained", "id": id, "filter": filter}));
        let e = self.wait(&format!("the retained messages under {filter}"), |e| {
            e["event"] == "retained" && e["id"] == id
        });
        let dups = e["duplicates"].as_array().map_or(0, Vec::len);
        let outside = e["outside"].as_array().map_or(0, Vec::len);
        if dups + outside > 0 {
            eprintln!(
                "retained {filter}: the broker sent {dups} twice and {outside} outside the filter"
            );
        }
        serde_json::from_value(e["topics"].clone()).unwrap()
    }

    /// Publish a desired pod and wait for the answer about `generation`.
    fn apply(&mut self, key: &str, manifest: &str, generation: i64) -> Value {
        self.publish(&format!("{P}desired/pods/{key}"), manifest, true);
        json_of(&self.wait_topic(&format!("{P}desired/results/{key}"), |s| {
            json_of(s)["generation"] == generation
        }))
    }

    /// Clear a desired pod (an empty retained message) and wait for a `Removed` answer.
    fn remove(&mut self, key: &str) -> Value {
        self.publish(&format!("{P}desired/pods/{key}"), "", true);
        json_of(&self.wait_topic(&format!("{P}desired/results/{key}"), |s| {
            json_of(s)["reason"] == "Removed"
        }))
    }

    /// The payloads of the messages on `topic` among the events from index `from` on.
    fn messages_since(&self, from: usize, topic: &str) -> Vec<Value> {
        self.seen[from..]
            .iter()
            .filter(|e| e["event"] == "message" && e["topic"] == topic)
            .map(|e| json_of(e["payload"].as_str().unwrap()))
            .collect()
    }
}

impl Drop for Paho {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- paho's stderr ----\n{}\n---- its last events ----\n{}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                self.tail(40)
            );
        }
        let _ = self.send_quit();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Paho {
    fn send_quit(&mut self) -> std::io::Result<()> {
        writeln!(self.stdin, "{}", json!({"op": "quit"}))
    }
}

/// An agent on `server` with the static pods `names` (sleeping), not yet started.
fn agent(server: &Server, names: &[&str]) -> Agent {
    let a = Agent::prepare(Some(&server.agent_config()), &[]);
    for n in names {
        a.write(
            &format!("{n}.yaml"),
            &pod_yaml(n, "", &[("c", "sleep 3600", "")]),
        );
    }
    a
}

fn uid(a: &Agent, name: &str) -> Value {
    a.pod(name).unwrap()["metadata"]["uid"].clone()
}

/// The contract as a paho control plane sees it through `server`.
fn contract(server: Server) {
    let mut a = agent(&server, &["local"]);
    // Subscribed before the agent starts: every answer and event is seen live.
    let mut p = Paho::start(server.port(), &format!("{P}#"));
    a.spawn();

    // Status up, as docs/mqtt.md says: online, a v1 Node, a renewed Lease, the pod.
    let online = json_of(&p.wait_topic(&format!("{P}online"), |s| json_of(s)["online"] == true));
    assert!(
        online["agent"]
            .as_str()
            .unwrap_or("")
            .starts_with("tidelet/"),
        "{online}"
    );
    let node = json_of(&p.wait_topic(&format!("{P}node"), |s| !s.is_empty()));
    assert_eq!(
        (node["apiVersion"].as_str(), node["kind"].as_str()),
        (Some("v1"), Some("Node")),
        "{node}"
    );
    assert_eq!(node["metadata"]["name"], "e2e", "{node}");
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("KubeletReady")),
        "{node}"
    );
    let lease = json_of(&p.wait_topic(&format!("{P}lease"), |s| !s.is_empty()));
    assert_eq!(lease["apiVersion"], "coordination.k8s.io/v1", "{lease}");
    assert_eq!(lease["spec"]["holderIdentity"], "e2e", "{lease}");
    assert_eq!(
        lease["spec"]["leaseDurationSeconds"], 8,
        "4 x leasePeriod 2s: {lease}"
    );
    let renewed = lease["spec"]["renewTime"].as_str().unwrap().to_string();
    p.wait_topic(&format!("{P}lease"), |s| {
        json_of(s)["spec"]["renewTime"].as_str() > Some(renewed.as_str())
    });
    let local_uid = a.wait_running("local-e2e")["metadata"]["uid"].clone();
    let local = json_of(&p.wait_topic(&format!("{P}pods/default/local-e2e"), |s| {
        phase(s) == "Running"
    }));
    assert_eq!(local["metadata"]["uid"], local_uid, "{local}");
    let ann = &local["metadata"]["annotations"];
    assert_eq!(ann["kubernetes.io/config.source"], "file", "{local}");
    assert_eq!(ann["kubernetes.io/config.hash"], local_uid, "{local}");

    // Down: a desired pod runs under its name; the answer echoes the generation and the uid.
    let r = p.apply("default/web", &desired("web", 3), 3);
    assert_eq!(
        (r["accepted"].as_bool(), r["reason"].as_str()),
        (Some(true), Some("Accepted")),
        "{r}"
    );
    let web_uid = a.wait_running("web")["metadata"]["uid"].clone();
    assert_eq!(r["uid"], web_uid, "{r}");
    let web = json_of(&p.wait_topic(&format!("{P}pods/default/web"), |s| phase(s) == "Running"));
    assert_eq!(
        web["metadata"]["annotations"]["kubernetes.io/config.source"], "mqtt",
        "{web}"
    );
    // Its events come live (not retained), about that very pod.
    let started = |e: &Value| {
        let ev = json_of(e["payload"].as_str().unwrap_or(""));
        e["event"] == "message"
            && e["topic"] == format!("{P}events")
            && ev["kind"] == "Event"
            && ev["involvedObject"]["name"] == "web"
            && ev["involvedObject"]["uid"] == web_uid
            && ev["reason"] == "Started"
    };
    let ev = match p.seen.iter().find(|e| started(e)).cloned() {
        Some(e) => e,
        None => p.wait("a Started event of web", started),
    };
    assert_eq!(ev["retained"], false, "{ev}");

    // A desired pod clashing with the static pod: one answer, Conflict, never Accepted first.
    // Proof that no second answer follows: the agent takes desired pods in order, so once it
    // has answered a pod published after it (the fence), the clash has had all its answers.
    let mark = p.seen.len();
    let r = p.apply("default/local-e2e", &desired("local-e2e", 7), 7);
    assert_eq!(
        (r["accepted"].as_bool(), r["reason"].as_str()),
        (Some(false), Some("Conflict")),
        "{r}"
    );
    assert!(r["errors"].to_string().contains("metadata.name"), "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or("")
            .contains("local file wins"),
        "{r}"
    );
    let fence = p.apply("default/fence", &desired("fence", 1), 1);
    assert_eq!(fence["reason"], "Accepted", "{fence}");
    let answers = p.messages_since(mark, &format!("{P}desired/results/default/local-e2e"));
    let reasons: Vec<(&str, i64)> = answers
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap_or("?"),
                r["generation"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [("Conflict", 7)],
        "one answer, Conflict: {answers:?}"
    );
    assert_eq!(
        uid(&a, "local-e2e"),
        local_uid,
        "the local pod is untouched"
    );
    assert!(all_running(&a.pod("local-e2e").unwrap()));

    // Removal: `Removed`, with the uid of the pod that was removed; its status topic cleared.
    let mark = p.seen.len();
    let r = p.remove("default/web");
    assert_eq!(
        (r["accepted"].as_bool(), r["reason"].as_str()),
        (Some(true), Some("Removed")),
        "{r}"
    );
    assert!(
        web_uid.is_string() && r["uid"] == web_uid,
        "{r}: uid {web_uid}"
    );
    assert!(
        r["message"]
            .as_str()
            .unwrap_or("")
            .contains(web_uid.as_str().unwrap()),
        "{r}"
    );
    let answers = p.messages_since(mark, &format!("{P}desired/results/default/web"));
    assert!(
        answers.iter().all(|r| r["reason"] == "Removed"),
        "{answers:?}"
    );
    p.wait_topic(&format!("{P}pods/default/web"), str::is_empty);
    wait_for("web gone", WAIT, || a.pod("web").is_none().then_some(()));

    // What a new subscriber finds: exactly the pods that run, and the answers.
    let pods = p.retained(&format!("{P}pods/#"));
    let keys: Vec<&str> = pods.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            format!("{P}pods/default/fence"),
            format!("{P}pods/default/local-e2e")
        ]
    );
    let results = p.retained(&format!("{P}desired/results/#"));
    let reason = |k: &str| {
        json_of(
            results
                .get(&format!("{P}desired/results/{k}"))
                .map_or("", |s| s.as_str()),
        )["reason"]
            .clone()
    };
    assert_eq!(
        (
            reason("default/web"),
            reason("default/local-e2e"),
            reason("default/fence")
        ),
        (json!("Removed"), json!("Conflict"), json!("Accepted")),
        "{results:?}"
    );

    // A clean stop says so, retained.
    a.kill_term();
    let off = json_of(&p.wait_topic(&format!("{P}online"), |s| json_of(s)["online"] == false));
    assert_eq!(off["reason"], "agent stopped", "{off}");
}

#[test]
fn paho_sees_the_agent_contract_through_mosquitto() {
    if !privileged() {
        return;
    }
    contract(Server::mosquitto());
}

#[test]
fn paho_sees_the_agent_contract_through_amqtt() {
    if !privileged() {
        return;
    }
    contract(Server::Amqtt(Amqtt::new()));
}

/// The broker restarts with its retained messages while the node's pods changed: it replays
/// them (amqtt: some twice, and the agent's own topics after it unsubscribed from them), and
/// the end state is the truth. The remote pod keeps running (adopted, not replaced: its
/// desired pod is still retained), every answer about it stays `Accepted`, the clash stays
/// `Conflict`, the static pod deleted while the broker was away loses its topic.
fn restart_converges(mut server: Server) {
    let mut a = agent(&server, &["local", "old"]);
    let mut p = Paho::start(server.port(), &format!("{P}#"));
    a.spawn();
    let r = p.apply("default/web", &desired("web", 1), 1);
    assert_eq!(r["reason"], "Accepted", "{r}");
    let r = p.apply("default/local-e2e", &desired("local-e2e", 2), 2);
    assert_eq!(r["reason"], "Conflict", "{r}");
    let r = p.apply("default/gone", &desired("gone", 1), 1);
    assert_eq!(r["reason"], "Accepted", "{r}");
    let gone_uid = a.wait_running("gone")["metadata"]["uid"].clone();
    assert_eq!(p.remove("default/gone")["uid"], gone_uid);
    for pod in ["local-e2e", "old-e2e", "web"] {
        p.wait_topic(&format!("{P}pods/default/{pod}"), |s| phase(s) == "Running");
    }
    let web_uid = a.wait_running("web")["metadata"]["uid"].clone();
    // Its uid is the manifest's hash, the same for a pod removed and accepted again: its
    // container's pid tells a pod that kept running from one started anew.
    let web_pid = a.container_pid("web", "c");
    let local_uid = uid(&a, "local-e2e");

    server.stop();
    // While the broker is away: a static pod goes, another comes.
    a.remove("old.yaml");
    a.write("new.yaml", &pod_yaml("new", "", &[("c", "sleep 3600", "")]));
    a.wait_running("new-e2e");
    wait_for("old-e2e gone", WAIT, || {
        a.pod("old-e2e").is_none().then_some(())
    });
    let mark = p.seen.len();
    let log_mark = a.agent_log().len();
    server.start();

    let t0 = Instant::now();
    let want = [
        format!("{P}pods/default/local-e2e"),
        format!("{P}pods/default/new-e2e"),
        format!("{P}pods/default/web"),
    ];
    let mut pods = BTreeMap::new();
    wait_for("the retained pods to converge", WAIT, || {
        pods = p.retained(&format!("{P}pods/#"));
        let keys: Vec<&String> = pods.keys().collect();
        (keys == want.iter().collect::<Vec<_>>() && pods.values().all(|s| phase(s) == "Running"))
            .then_some(())
    });
    eprintln!("converged {:?} after the broker's restart", t0.elapsed());
    assert_eq!(json_of(&pods[&want[2]])["metadata"]["uid"], web_uid);
    p.wait_topic(&format!("{P}online"), |s| json_of(s)["online"] == true);

    // The answers a new subscriber finds, and every answer sent since the restart.
    let results = p.retained(&format!("{P}desired/results/#"));
    let result = |k: &str| {
        json_of(
            results
                .get(&format!("{P}desired/results/{k}"))
                .map_or("", |s| s.as_str()),
        )
    };
    let (web, clash, gone) = (
        result("default/web"),
        result("default/local-e2e"),
        result("default/gone"),
    );
    assert_eq!(
        (web["reason"].as_str(), &web["uid"]),
        (Some("Accepted"), &web_uid),
        "{web}"
    );
    assert_eq!(
        (clash["reason"].as_str(), clash["generation"].as_i64()),
        (Some("Conflict"), Some(2)),
        "{clash}"
    );
    assert_eq!(gone["reason"], "Removed", "{gone}");
    let desired_left = p.retained(&format!("{P}desired/pods/#"));
    assert_eq!(
        desired_left.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            format!("{P}desired/pods/default/local-e2e"),
            format!("{P}desired/pods/default/web")
        ]
    );
    let web_answers = p.messages_since(mark, &format!("{P}desired/results/default/web"));
    assert!(
        web_answers
            .iter()
            .all(|r| r["reason"] == "Accepted" && r["uid"] == web_uid),
        "web was answered otherwise after the restart: {web_answers:?}"
    );
    let clash_answers = p.messages_since(mark, &format!("{P}desired/results/default/local-e2e"));
    assert!(
        clash_answers.iter().all(|r| r["reason"] == "Conflict"),
        "the clash was answered otherwise after the restart: {clash_answers:?}"
    );
    eprintln!(
        "after the restart paho saw {} answers about web and {} about the clash",
        web_answers.len(),
        clash_answers.len()
    );

    // The agent itself: web adopted, never restarted; the static pods as the files say.
    let w = a.pod("web").unwrap();
    assert_eq!(w["metadata"]["uid"], web_uid);
    assert!(all_running(&w), "{w}");
    assert_eq!(Agent::container_status(&w, "c")["restartCount"], 0, "{w}");
    assert_eq!(a.container_pid("web", "c"), web_pid, "web was started anew");
    let since = a.agent_log()[log_mark..].to_string();
    assert!(
        !since.contains("remote pod removed pod=default/web"),
        "web was removed after the restart:\n{since}"
    );
    eprintln!(
        "after the restart the agent took web's desired pod {} times",
        since
            .matches("desired pod from the control plane pod=default/web ")
            .count()
    );
    assert_eq!(uid(&a, "local-e2e"), local_uid);
    for absent in ["gone", "old-e2e"] {
        assert!(a.pod(absent).is_none(), "{absent} must not run");
    }
    assert!(a.alive(), "the agent died; broker log:\n{}", server.log());
}

#[test]
fn after_an_amqtt_restart_replaying_retained_messages_the_agent_converges() {
    if !privileged() {
        return;
    }
    restart_converges(Server::Amqtt(Amqtt::new()));
}

#[test]
fn after_a_mosquitto_restart_replaying_retained_messages_the_agent_converges() {
    if !privileged() {
        return;
    }
    restart_converges(Server::mosquitto());
}
