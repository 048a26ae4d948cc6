//! The agent's MQTT session against a real Mosquitto (Debian's `mosquitto` package), checked
//! with the real `mosquitto_sub`/`mosquitto_pub`: retained status converges after a broker
//! killed with SIGKILL, stale pod topics are swept, desired pods come down, the last will
//! marks the node offline, the lease stops when the agent's loop does, oversized packets and a
//! refusing broker only cause retries. Not privileged: each test starts its own broker on a
//! free loopback port (never the system service).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidelet::mqtt::reporter;
use tidelet::mqtt::session::{self, Down, Link};
use tidelet::mqtt::{payload, MqttConfig};
use tokio::sync::mpsc::Receiver;

const NODE: &str = "n1";
const P: &str = "tidelet/n1/";

fn need(bin: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).exists()))
        .unwrap_or(false);
    assert!(
        found || Path::new("/usr/sbin").join(bin).exists(),
        "{bin} is missing: apt-get install -y mosquitto mosquitto-clients"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Mosquitto on a loopback port. Persistence is on and saved every second, so that a
/// SIGKILL keeps what the broker held a second before: stale retained topics the agent must
/// correct, and the event watcher's queued session.
struct Broker {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Broker {
    fn start(dir: &Path, port: u16) -> Broker {
        need("mosquitto");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n\
                 persistence true\npersistence_location {}/\nautosave_interval 1\n\
                 log_dest file {}/mosquitto.log\n",
                dir.display(),
                dir.display()
            ),
        )
        .unwrap();
        let bin = if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the broker has saved its database twice after this call (a save under
    /// way at the call may hold older state).
    fn wait_saved(&self) {
        let db = self.dir.join("mosquitto.db");
        let mtime = || std::fs::metadata(&db).and_then(|m| m.modified()).ok();
        let t0 = Instant::now();
        let mut last = Some(std::time::SystemTime::now());
        for _ in 0..2 {
            loop {
                let m = mtime();
                if m > last {
                    last = m;
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(15),
                    "{} not saved",
                    db.display()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn restart(&mut self) {
        self.kill9();
        let b = Broker::start(&self.dir.clone(), self.port);
        *self = b;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn config(port: u16, extra: &str) -> MqttConfig {
    let y = format!("broker: mqtt://127.0.0.1:{port}\n{extra}");
    MqttConfig::parse(&serde_yaml::from_str(&y).unwrap(), NODE).unwrap()
}

fn publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), payload).unwrap();
    let mut c = Command::new("mosquitto_pub");
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-t",
        topic,
    ]);
    if payload.is_empty() {
        c.arg("-n");
    } else {
        c.arg("-f").arg(file.path());
    }
    if retain {
        c.arg("-r");
    }
    let st = c.status().unwrap();
    assert!(st.success(), "mosquitto_pub {topic}: {st}");
}

/// The retained messages under the node's status topics, as `mosquitto_sub -v
/// --retained-only` sees them: topic -> payload.
fn retained(port: u16) -> BTreeMap<String, String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v"])
        .args(["--retained-only", "-W", "1"])
        .args(["-t", &format!("{P}online"), "-t", &format!("{P}node")])
        .args(["-t", &format!("{P}lease"), "-t", &format!("{P}pods/#")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect()
}

/// The status topics we set (lease aside: it moves), as `retained` would show them.
fn expected(set: &BTreeMap<&str, Vec<u8>>) -> BTreeMap<String, String> {
    set.iter()
        .map(|(s, p)| (format!("{P}{s}"), String::from_utf8(p.clone()).unwrap()))
        .collect()
}

/// Waits until the broker's retained status (lease aside) equals `want`.
fn converge(port: u16, want: &BTreeMap<String, String>, within: Duration) -> Duration {
    let t0 = Instant::now();
    let mut last = BTreeMap::new();
    while t0.elapsed() < within {
        let mut got = retained(port);
        got.remove(&format!("{P}lease"));
        if &got == want {
            return t0.elapsed();
        }
        last = got;
    }
    panic!("retained topics did not converge in {within:?}:\n got {last:#?}\nwant {want:#?}");
}

/// A `mosquitto_sub` of the events topic with a persistent session (QoS 1), so events sent
/// while it reconnects after a broker restart are queued for it. Lines go to a file.
struct Watcher {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Watcher {
    fn start(port: u16, topic: &str, id: &str) -> Watcher {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-c", "-i", id, "-t", topic])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(l);
            }
        });
        // Subscribed once its session shows up: give it a moment.
        std::thread::sleep(Duration::from_millis(300));
        Watcher { child, lines }
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&[String]) -> bool, within: Duration) {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if pred(&self.lines.lock().unwrap()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{what}: not seen in {within:?}: {:#?}",
            self.lines.lock().unwrap()
        );
    }

    fn json(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn recv(rx: &mut Receiver<Down>, within: Duration) -> Down {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("no Down message in time")
        .expect("session channel closed")
}

/// Waits for the next `Synced`, collecting the `Desired` before it.
async fn until_synced(rx: &mut Receiver<Down>) -> (Vec<(String, usize)>, BTreeSet<String>) {
    let mut desired = Vec::new();
    loop {
        match recv(rx, Duration::from_secs(15)).await {
            Down::Desired {
                namespace,
                name,
                payload,
            } => desired.push((format!("{namespace}/{name}"), payload.len())),
            Down::Synced { present } => return (desired, present),
        }
    }
}

fn pod_payload(name: &str, phase: &str) -> Vec<u8> {
    let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "image": "busybox:test"}]},
        "status": {"phase": phase}
    }))
    .unwrap();
    payload::pod(&p)
}

fn event_payload(reason: &str, i: i64) -> Vec<u8> {
    let mut ev = tidelet::pod::events::Events::default();
    ev.push(
        false,
        reason,
        format!("{reason} number {i}"),
        1_700_000_000_000_000_000 + i,
    );
    let obj = payload::Involved::node(NODE);
    let e = ev.iter().next().unwrap().clone();
    payload::event(NODE, &obj, &e)
}

async fn wait_connected(link: &Link, want: bool, within: Duration) {
    let t0 = Instant::now();
    while link.connected() != want {
        assert!(
            t0.elapsed() < within,
            "connected() != {want} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tidelet=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_converges_after_a_broker_killed_and_restarted() {
    init_tracing();
    need("mosquitto_sub");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Broker::start(dir.path(), port);
    // Left by a previous life of the agent: must be cleared after the sync.
    publish(
        port,
        &format!("{P}pods/default/ghost"),
        b"{\"stale\":true}",
        true,
    );
    // Held for this node by the back-end.
    publish(
        port,
        &format!("{P}desired/pods/default/d1"),
        b"kind: Pod",
        true,
    );
    publish(
        port,
        &format!("{P}desired/pods/prod/d2"),
        b"{\"kind\":\"Pod\"}",
        true,
    );
    let events = Watcher::start(port, &format!("{P}events"), "events-watcher");

    let cfg = config(port, "eventBuffer: 5\nkeepAlive: 5s\nleasePeriod: 1s\n");
    let (link, mut rx) = session::start(&cfg, NODE).unwrap();
    link.alive();
    let mut set: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    set.insert("online", payload::online());
    set.insert(
        "node",
        b"{\"kind\":\"Node\",\"apiVersion\":\"v1\"}".to_vec(),
    );
    for (name, phase) in [("a", "Pending"), ("b", "Running"), ("c", "Running")] {
        set.insert(
            match name {
                "a" => "pods/default/a",
                "b" => "pods/default/b",
                _ => "pods/default/c",
            },
            pod_payload(name, phase),
        );
    }
    for (s, p) in &set {
        if *s != "online" {
            link.set_retained(s, Some(p.clone()));
        }
    }
    link.event(event_payload("Started", 0));

    let (desired, present) = until_synced(&mut rx).await;
    let keys: BTreeSet<&str> = desired.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(["default/d1", "prod/d2"]));
    assert_eq!(
        present,
        BTreeSet::from(["default/d1".to_string(), "prod/d2".to_string()])
    );
    converge(port, &expected(&set), Duration::from_secs(10));
    let lease = retained(port)
        .remove(&format!("{P}lease"))
        .expect("a lease is retained");
    let lease: serde_json::Value = serde_json::from_str(&lease).unwrap();
    assert_eq!(lease["kind"], "Lease");
    assert_eq!(lease["spec"]["holderIdentity"], NODE);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 4);
    events.wait_for(
        "the first event",
        |l| l.iter().any(|l| l.contains("Started number 0")),
        Duration::from_secs(5),
    );

    // A desired pod published live, and a removal.
    publish(
        port,
        &format!("{P}desired/pods/default/d3"),
        b"kind: Pod",
        true,
    );
    match recv(&mut rx, Duration::from_secs(5)).await {
        Down::Desired {
            namespace,
            name,
            payload,
        } => assert_eq!(
            (namespace.as_str(), name.as_str(), &payload[..]),
            ("default", "d3", &b"kind: Pod"[..])
        ),
        other => panic!("{other:?}"),
    }
    publish(port, &format!("{P}desired/pods/prod/d2"), b"", true);
    match recv(&mut rx, Duration::from_secs(5)).await {
        Down::Desired { name, payload, .. } => {
            assert_eq!((name.as_str(), payload.len()), ("d2", 0))
        }
        other => panic!("{other:?}"),
    }

    // The broker dies (after its autosave, so it comes back with the old retained state).
    broker.wait_saved();
    broker.kill9();
    wait_connected(&link, false, Duration::from_secs(15)).await;
    let a2 = pod_payload("a", "Running");
    link.set_retained("pods/default/a", Some(a2.clone()));
    set.insert("pods/default/a", a2);
    link.set_retained("pods/default/b", None);
    set.remove("pods/default/b");
    for i in 1..=8 {
        link.event(event_payload("Tick", i));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart();
    let t0 = Instant::now();
    wait_connected(&link, true, Duration::from_secs(20)).await;
    let (_, present) = until_synced(&mut rx).await;
    assert_eq!(
        present,
        BTreeSet::from(["default/d1".to_string(), "default/d3".to_string()])
    );
    let took = converge(port, &expected(&set), Duration::from_secs(10));
    eprintln!(
        "converged {:?} after the broker's return ({:?} after the reconnect)",
        t0.elapsed(),
        took
    );
    // 8 events into a ring of 5: 3 dropped, reported first, then the 5 newest.
    events.wait_for(
        "the events after the outage",
        |l| l.iter().any(|l| l.contains("Tick number 8")),
        Duration::from_secs(10),
    );
    let seen = events.json();
    let after: Vec<String> = seen
        .iter()
        .skip_while(|e| e["reason"] != "EventsDropped")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        after,
        [
            "3 events were dropped while the control plane was unreachable",
            "Tick number 4",
            "Tick number 5",
            "Tick number 6",
            "Tick number 7",
            "Tick number 8"
        ],
        "{seen:#?}"
    );
    assert!(link.idle());

    link.shutdown(Duration::from_secs(5)).await;
    let got = retained(port);
    let online: serde_json::Value = serde_json::from_str(&got[&format!("{P}online")]).unwrap();
    assert_eq!(online["online"], false);
    assert_eq!(online["reason"], "agent stopped");
}

#[test]
fn the_last_will_marks_the_node_offline_when_the_connection_is_cut() {
    init_tracing();
    need("mosquitto_sub");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (link, mut rx) = session::start(&config(port, "keepAlive: 2s\n"), NODE).unwrap();
        until_synced(&mut rx).await;
        wait_connected(&link, true, Duration::from_secs(5)).await;
    });
    let online = retained(port)[&format!("{P}online")].clone();
    let v: serde_json::Value = serde_json::from_str(&online).unwrap();
    assert_eq!(v["online"], true);
    // The agent vanishes without a DISCONNECT: its socket is dropped with the runtime.
    rt.shutdown_background();
    let t0 = Instant::now();
    loop {
        let got = retained(port);
        let v: serde_json::Value =
            serde_json::from_str(&got[&format!("{P}online")]).unwrap_or_default();
        if v["online"] == false {
            assert_eq!(v["reason"], "connection lost");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no last will: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_renewed_only_while_the_agent_is_alive() {
    init_tracing();
    need("mosquitto_sub");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let (link, mut rx) = session::start(&config(port, "leasePeriod: 1s\n"), NODE).unwrap();
    until_synced(&mut rx).await;
    let renew = || -> String {
        let l = retained(port)
            .remove(&format!("{P}lease"))
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_default();
        v["spec"]["renewTime"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // alive() is never called: renewals stop after 2 periods.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stuck = renew();
    assert!(!stuck.is_empty(), "a lease was published at start");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(renew(), stuck, "renewed while the agent's loop was stuck");
    // The loop comes back: renewals resume.
    let beat = {
        let link = link.clone();
        tokio::spawn(async move {
            loop {
                link.alive();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r1 = renew();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r2 = renew();
    beat.abort();
    assert!(r1 > stuck && r2 > r1, "{stuck} {r1} {r2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packets_do_not_kill_the_session() {
    init_tracing();
    need("mosquitto_pub");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let cfg = config(port, "maxPacketSize: 64Ki\n");
    let (link, mut rx) = session::start(&cfg, NODE).unwrap();
    until_synced(&mut rx).await;
    // Too big to send: refused locally, the session goes on.
    link.set_retained("pods/default/big", Some(vec![b'x'; 70 << 10]));
    link.set_retained("pods/default/small", Some(b"{}".to_vec()));
    let mut want = BTreeMap::new();
    want.insert(
        format!("{P}online"),
        String::from_utf8(payload::online()).unwrap(),
    );
    want.insert(format!("{P}pods/default/small"), "{}".to_string());
    converge(port, &want, Duration::from_secs(5));
    // Over maxPacketSize but within the incoming limit: handed down (the source answers
    // TooLarge).
    publish(
        port,
        &format!("{P}desired/pods/default/large"),
        &vec![b'y'; 100 << 10],
        true,
    );
    match recv(&mut rx, Duration::from_secs(5)).await {
        Down::Desired { name, payload, .. } => {
            assert_eq!((name.as_str(), payload.len()), ("large", 100 << 10))
        }
        other => panic!("{other:?}"),
    }
    // Beyond the incoming limit: rumqttc fails the connection; the session keeps retrying.
    let huge = session::incoming_limit(cfg.max_packet_size) + 1024;
    publish(
        port,
        &format!("{P}desired/pods/default/huge"),
        &vec![b'z'; huge],
        true,
    );
    wait_connected(&link, false, Duration::from_secs(5)).await;
    // The back-end removes it: the session reconnects and syncs.
    publish(port, &format!("{P}desired/pods/default/huge"), b"", true);
    wait_connected(&link, true, Duration::from_secs(30)).await;
    let (_, present) = until_synced(&mut rx).await;
    assert_eq!(present, BTreeSet::from(["default/large".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_broker_is_retried_with_back_off_and_no_panic() {
    init_tracing();
    // Something that accepts TCP and closes at once: each attempt is seen, and fails.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let attempts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let a2 = attempts.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            a2.lock().unwrap().push(Instant::now());
            drop(s);
        }
    });
    let (link, _rx) = session::start(&config(port, ""), NODE).unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!link.connected());
    let times = attempts.lock().unwrap().clone();
    // Without back-off this would be thousands; with it (0.25 s floor, doubling ceilings
    // 0.5, 1, 2, 4, 8 s) a handful.
    assert!(
        (3..=14).contains(&times.len()),
        "{} attempts in 8 s",
        times.len()
    );
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(200)),
        "{gaps:?}"
    );
    // Nothing listening at all: refused, retried, no panic.
    let (link2, _rx2) = session::start(&config(free_port(), ""), NODE).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!link2.connected());
    // Stopping while the broker is unreachable does not wait for the timeout.
    let t0 = Instant::now();
    link2.shutdown(Duration::from_secs(10)).await;
    link.shutdown(Duration::from_secs(10)).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

/// A stand-in for the agent's `Ctx`: the reporter only reads these.
struct FakeAgent {
    shared: tidelet::agent::shared::Shared,
    node_events: std::sync::Mutex<tidelet::pod::events::Events>,
}

impl reporter::StatusSource for FakeAgent {
    fn node_name(&self) -> String {
        NODE.into()
    }
    fn node_object(&self) -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(serde_json::json!({"metadata": {"name": NODE}})).unwrap()
    }
    fn shared(&self) -> &tidelet::agent::shared::Shared {
        &self.shared
    }
    fn node_events(&self) -> tidelet::pod::events::Events {
        self.node_events.lock().unwrap().clone()
    }
}

fn view(name: &str, generation: i64) -> tidelet::agent::shared::PodView {
    let pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "generation": generation},
        "spec": {"containers": [{"name": "c", "image": "busybox:test"}]},
        "status": {"phase": "Running"}
    }))
    .unwrap();
    tidelet::agent::shared::PodView {
        pod,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reporter_puts_a_change_on_the_broker_within_50ms_median() {
    init_tracing();
    need("mosquitto_sub");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let agent = std::sync::Arc::new(FakeAgent {
        shared: Default::default(),
        node_events: Default::default(),
    });
    for i in 0..10 {
        agent
            .shared
            .publish(&format!("default/p{i}"), view(&format!("p{i}"), 1));
    }
    let (link, mut rx) = session::start(&config(port, ""), NODE).unwrap();
    reporter::spawn_with(agent.clone(), link.clone());
    until_synced(&mut rx).await;
    let watch = Watcher::start(port, &format!("{P}pods/default/p0"), "latency-watcher");
    let mut lat = Vec::new();
    for g in 2..22 {
        let n = watch.lines.lock().unwrap().len();
        let t0 = Instant::now();
        agent.shared.publish("default/p0", view("p0", g));
        let needle = format!("\"generation\":{g}");
        loop {
            if watch.lines.lock().unwrap()[n..]
                .iter()
                .any(|l| l.contains(&needle))
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "generation {g} never arrived"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        lat.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lat.sort();
    let median = lat[lat.len() / 2];
    eprintln!(
        "change -> broker -> subscriber: median {median:?}, max {:?}",
        lat[lat.len() - 1]
    );
    assert!(median <= Duration::from_millis(50), "{lat:?}");
    // Removing a pod clears its topic; an event on the node goes out once.
    agent.shared.remove("default/p9");
    agent
        .node_events
        .lock()
        .unwrap()
        .push(true, "Evicting", "memory pressure".into(), 1);
    agent.shared.touch();
    let t0 = Instant::now();
    loop {
        let got = retained(port);
        if !got.contains_key(&format!("{P}pods/default/p9"))
            && got.contains_key(&format!("{P}pods/default/p8"))
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{got:?}");
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is needed for the TLS test");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate signed by it for `cn` with `ext` (an extension line).
fn certs(dir: &Path, ca: &str, leaves: &[(&str, &str, &str)]) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_key = format!("{ca}.key");
    let ca_pem = format!("{ca}.pem");
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-days",
        "2",
        "-subj",
        "/CN=tidelet-test-ca",
    ]);
    openssl(dir, &a);
    for (name, cn, ext) in leaves {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let extf = format!("{name}.ext");
        std::fs::write(dir.join(&extf), format!("{ext}\n")).unwrap();
        let subj = format!("/CN={cn}");
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &a);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extf,
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_connects_and_a_wrong_ca_or_missing_client_cert_only_retries() {
    init_tracing();
    need("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certs(
        d,
        "ca",
        &[
            ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1"),
            ("client", NODE, "extendedKeyUsage=clientAuth"),
        ],
    );
    certs(d, "other-ca", &[]);
    let port = free_port();
    std::fs::write(
        d.join("mosquitto.conf"),
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n\
             cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n\
             require_certificate true\nlog_dest file {0}/mosquitto.log\n",
            d.display()
        ),
    )
    .unwrap();
    let mut child = Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(d.join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "mosquitto (TLS) did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let tls = |ca: &str, client: bool| {
        let mut y = format!(
            "broker: mqtts://127.0.0.1:{port}\ncaFile: {}/{ca}.pem\n",
            d.display()
        );
        if client {
            y.push_str(&format!(
                "certFile: {0}/client.pem\nkeyFile: {0}/client.key\n",
                d.display()
            ));
        }
        MqttConfig::parse(&serde_yaml::from_str(&y).unwrap(), NODE).unwrap()
    };
    let (good, mut rx) = session::start(&tls("ca", true), NODE).unwrap();
    let (_, present) = until_synced(&mut rx).await;
    assert!(present.is_empty());
    assert!(good.connected());
    let mut wrong_cfg = tls("other-ca", true);
    wrong_cfg.client_id = "wrong-ca".into();
    let (wrong_ca, _rx1) = session::start(&wrong_cfg, NODE).unwrap();
    let mut anon_cfg = tls("ca", false);
    anon_cfg.client_id = "no-client-cert".into();
    let (no_cert, _rx2) = session::start(&anon_cfg, NODE).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !wrong_ca.connected(),
        "a server cert from an unknown CA was accepted"
    );
    assert!(
        !no_cert.connected(),
        "the broker took a client without a certificate"
    );
    assert!(good.connected());
    // A missing key file is a local set-up error, reported at start with its path.
    let mut bad = tls("ca", true);
    bad.key_file = Some(d.join("missing.key"));
    let err = session::start(&bad, NODE)
        .err()
        .expect("a missing key file is an error");
    assert!(err.to_string().contains("missing.key"), "{err}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Copies `r` to `w`, counting the bytes.
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 << 10];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 || w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        bytes.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
    let _ = w.shutdown().await;
}

/// A TCP proxy to `port` counting the bytes both ways.
async fn counting_proxy(port: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap().port();
    let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let b = bytes.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, b.clone()));
            tokio::spawn(pipe(sr, cw, b.clone()));
        }
    });
    (front, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_sends_only_its_lease_and_keep_alives() {
    use std::sync::atomic::Ordering;
    init_tracing();
    need("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let (front, bytes) = counting_proxy(port).await;
    let agent = std::sync::Arc::new(FakeAgent {
        shared: Default::default(),
        node_events: Default::default(),
    });
    for i in 0..10 {
        agent
            .shared
            .publish(&format!("default/p{i}"), view(&format!("p{i}"), 1));
    }
    // Periods 6x shorter than the defaults (60 s) to see both within the test.
    let (link, mut rx) =
        session::start(&config(front, "keepAlive: 10s\nleasePeriod: 10s\n"), NODE).unwrap();
    reporter::spawn_with(agent.clone(), link.clone());
    let beat = {
        let link = link.clone();
        tokio::spawn(async move {
            loop {
                link.alive();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    until_synced(&mut rx).await;
    let t0 = Instant::now();
    while !link.idle() {
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The agent keeps poking: its state is unchanged, so nothing is republished.
    let poke = {
        let agent = agent.clone();
        tokio::spawn(async move {
            loop {
                agent.shared.touch();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = bytes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let idle = bytes.load(Ordering::Relaxed) - start;
    poke.abort();
    beat.abort();
    let lease = payload::lease(NODE, Duration::from_secs(10), 0).len() as u64;
    // Per 10 s: one lease PUBLISH (+ topic and header ~25 bytes) and its PUBACK (4), one
    // PINGREQ/PINGRESP (4).
    let per_period = lease + 25 + 4 + 4;
    eprintln!(
        "idle, 10 pods: {idle} bytes in 20 s (lease payload {lease} bytes); with the 60 s defaults: ~{per_period} bytes/minute"
    );
    assert!(idle <= 3 * per_period, "{idle} bytes in 20 s");
    assert!(per_period <= 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_sweep_keeps_pod_topics_until_the_pods_are_ready() {
    init_tracing();
    need("mosquitto_pub");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    // Left by the agent's previous life: `web` still runs (adopted late), `gone` does not.
    publish(port, &format!("{P}pods/default/web"), b"{\"old\":1}", true);
    publish(port, &format!("{P}pods/default/gone"), b"{\"old\":1}", true);
    let (link, mut rx) = session::start(&config(port, ""), NODE).unwrap();
    link.hold_sweep();
    until_synced(&mut rx).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = retained(port);
    assert!(got.contains_key(&format!("{P}pods/default/web")), "{got:?}");
    assert!(
        got.contains_key(&format!("{P}pods/default/gone")),
        "{got:?}"
    );
    // Adoption done: web is live again, gone is cleared.
    let web = pod_payload("web", "Running");
    link.set_retained("pods/default/web", Some(web.clone()));
    link.pods_ready();
    let mut want = BTreeMap::new();
    want.insert(
        format!("{P}online"),
        String::from_utf8(payload::online()).unwrap(),
    );
    want.insert(
        format!("{P}pods/default/web"),
        String::from_utf8(web).unwrap(),
    );
    converge(port, &want, Duration::from_secs(5));
}
