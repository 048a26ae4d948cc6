//! The agent's MQTT session (`tidelet::mqtt::session`) and its status reporter
//! (`tidelet::mqtt::reporter`) against a real Mosquitto from the shared harness
//! ([`tidelet_e2e::broker::Broker`]), observed with the real `mosquitto_sub`/`mosquitto_pub`:
//! retained status converges after a broker killed with SIGKILL, stale pod topics are swept,
//! desired pods come down, the last will marks the node offline, the lease stops when the
//! agent's loop does, oversized packets and a refusing broker only cause retries, mutual TLS
//! connects and a wrong CA or a missing client certificate does not, and an idle node sends
//! only its lease and keep-alives. Not privileged: each test has its own broker on a free
//! loopback port. How fast any of this is, is the benchmark's business (tests/bench/mqtt.rs):
//! these tests only wait, with generous bounds against hanging.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

mod connect;
mod proxy;
mod reporter;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tidelet::mqtt::session::{self, Down, Link};
use tidelet::mqtt::{payload, MqttConfig};
use tidelet_e2e::broker::Broker;
use tokio::sync::mpsc::Receiver;

const NODE: &str = "n1";
const P: &str = "tidelet/n1/";
/// The status topics under `P` (events, desired pods and sync markers are not status).
const STATUS: &[&str] = &["online", "node", "lease", "pods/"];
/// How long any wait may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(30);

/// The session's config for `broker` (a URL) with `extra` fields of the `mqtt:` map (JSON,
/// which is YAML).
fn config(broker: &str, extra: serde_json::Value) -> MqttConfig {
    let mut map = serde_json::json!({ "broker": broker });
    if let serde_json::Value::Object(extra) = extra {
        map.as_object_mut().unwrap().extend(extra);
    }
    MqttConfig::parse(&serde_json::from_value(map).unwrap(), NODE).unwrap()
}

/// The retained messages on the node's status topics: topic -> payload.
fn status(broker: &Broker) -> BTreeMap<String, String> {
    broker
        .retained(&format!("{P}#"), "operator")
        .into_iter()
        .filter(|(t, _)| STATUS.iter().any(|s| t.starts_with(&format!("{P}{s}"))))
        .map(|(t, p)| (t, String::from_utf8(p).unwrap()))
        .collect()
}

/// The status topics a test set (suffix -> payload), lease aside (it moves), as [`status`]
/// shows them.
fn expected(set: &BTreeMap<&str, Vec<u8>>) -> BTreeMap<String, String> {
    set.iter()
        .map(|(s, p)| (format!("{P}{s}"), String::from_utf8(p.clone()).unwrap()))
        .collect()
}

/// Waits until the broker's retained status (lease aside) equals `want`.
fn converge(broker: &Broker, want: &BTreeMap<String, String>) {
    let mut last = BTreeMap::new();
    let t0 = Instant::now();
    while t0.elapsed() < HANG {
        let mut got = status(broker);
        got.remove(&format!("{P}lease"));
        if &got == want {
            return;
        }
        last = got;
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("retained topics did not converge:\n got {last:#?}\nwant {want:#?}");
}

/// The retained `P online` message as JSON.
fn online(broker: &Broker) -> serde_json::Value {
    serde_json::from_str(&status(broker)[&format!("{P}online")]).unwrap()
}

/// The next message the session hands down.
async fn recv(rx: &mut Receiver<Down>) -> Down {
    tokio::time::timeout(HANG, rx.recv())
        .await
        .expect("no Down message in time")
        .expect("session channel closed")
}

/// The next message, which must be a desired pod: (`namespace/name`, payload).
async fn recv_desired(rx: &mut Receiver<Down>) -> (String, Vec<u8>) {
    match recv(rx).await {
        Down::Desired {
            namespace,
            name,
            payload,
        } => (format!("{namespace}/{name}"), payload),
        other => panic!("a desired pod was expected, not {other:?}"),
    }
}

/// Waits for the next `Synced`: the keys of the desired pods handed down before it, and the
/// keys it says are present.
async fn until_synced(rx: &mut Receiver<Down>) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut desired = BTreeSet::new();
    loop {
        match recv(rx).await {
            Down::Desired {
                namespace, name, ..
            } => {
                desired.insert(format!("{namespace}/{name}"));
            }
            Down::Synced { present } => return (desired, present),
        }
    }
}

fn keys(k: &[&str]) -> BTreeSet<String> {
    k.iter().map(|s| s.to_string()).collect()
}

async fn wait_connected(link: &Link, want: bool) {
    let t0 = Instant::now();
    while link.connected() != want {
        assert!(t0.elapsed() < HANG, "connected() stays {}", !want);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls `link.alive()` every 200 ms, as the agent's main loop does, until aborted.
fn heartbeat(link: &Link) -> tokio::task::JoinHandle<()> {
    let link = link.clone();
    tokio::spawn(async move {
        loop {
            link.alive();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// A Pod with status, as the reporter would publish it.
fn pod_json(name: &str, generation: i64) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "generation": generation},
        "spec": {"containers": [{"name": "c", "image": "busybox:test"}]},
        "status": {"phase": "Running"}
    })
}

fn pod_payload(name: &str, generation: i64) -> Vec<u8> {
    payload::pod(&serde_json::from_value(pod_json(name, generation)).unwrap())
}

/// `RUST_LOG`'s directives (levels, per module; as the agent reads `TIDELET_LOG`), else
/// `tidelet=debug`.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| "tidelet=debug".parse().unwrap());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .try_init();
}

/// Starts the session on `broker` (a URL) with `extra` config, waits for its first sync.
async fn synced_session(
    broker: &str,
    extra: serde_json::Value,
) -> (Link, Receiver<Down>, BTreeSet<String>) {
    init_tracing();
    let (link, mut rx) = session::start(&config(broker, extra), NODE).unwrap();
    let (_, present) = until_synced(&mut rx).await;
    (link, rx, present)
}
