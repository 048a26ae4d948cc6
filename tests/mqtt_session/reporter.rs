//! The status reporter on a real broker, fed by a stand-in for the agent: a pod change
//! arrives, a removed pod's topic is cleared, a node event goes out, and an idle node sends
//! only its lease and keep-alives (never its node or pods again).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidelet::mqtt::reporter;
use tidelet::mqtt::session::{self, Down, Link};
use tidelet::pod::events::Events;
use tidelet::pod::view::{PodView, Shared};
use tidelet_e2e::broker::{Broker, BrokerOpts};
use tokio::sync::mpsc::Receiver;

use super::proxy::{recording_proxy, PINGREQ, PUBLISH};
use super::*;

/// A stand-in for the agent's `Ctx`: the reporter only reads these.
#[derive(Default)]
struct FakeAgent {
    shared: Shared,
    node_events: Mutex<Events>,
}

impl reporter::StatusSource for FakeAgent {
    fn node_name(&self) -> String {
        NODE.into()
    }
    fn node_object(&self) -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(serde_json::json!({"metadata": {"name": NODE}})).unwrap()
    }
    fn shared(&self) -> &Shared {
        &self.shared
    }
    fn node_events(&self) -> Events {
        self.node_events.lock().unwrap().clone()
    }
}

fn view(name: &str, generation: i64) -> PodView {
    PodView {
        pod: serde_json::from_value(pod_json(name, generation)).unwrap(),
        ..Default::default()
    }
}

/// An agent with ten running pods `default/p0`..`p9`, its session on `broker` (a URL) with
/// `extra` config, and its reporter: returned once the session has synced.
async fn reporting_agent(
    broker: &str,
    extra: serde_json::Value,
) -> (Arc<FakeAgent>, Link, Receiver<Down>) {
    init_tracing();
    let agent = Arc::new(FakeAgent::default());
    for i in 0..10 {
        let name = format!("p{i}");
        agent
            .shared
            .publish(&format!("default/{name}"), view(&name, 1));
    }
    let (link, mut rx) = session::start(&config(broker, extra), NODE).unwrap();
    reporter::spawn(agent.clone(), link.clone());
    until_synced(&mut rx).await;
    (agent, link, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reporter_puts_each_change_on_the_broker() {
    let broker = Broker::new(BrokerOpts::default());
    let (agent, _link, _rx) = reporting_agent(&broker.url(), serde_json::json!({})).await;
    let mut p0 = broker.subscribe(&format!("{P}pods/default/p0"), "operator");
    let mut events = broker.subscribe(&format!("{P}events"), "operator");
    for g in 2..12 {
        agent.shared.publish("default/p0", view("p0", g));
        let needle = format!("\"generation\":{g}");
        p0.wait_for(&format!("generation {g}"), HANG, |m| {
            m.text().contains(&needle)
        });
    }
    // Removing a pod clears its topic; an event on the node goes out.
    agent.shared.remove("default/p9");
    agent
        .node_events
        .lock()
        .unwrap()
        .push(true, "Evicting", "memory pressure".into(), 1);
    agent.shared.touch();
    let mut want: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    want.insert("online", payload::online());
    let pods: Vec<String> = (0..9).map(|i| format!("pods/default/p{i}")).collect();
    for (i, topic) in pods.iter().enumerate() {
        want.insert(
            topic,
            pod_payload(&format!("p{i}"), if i == 0 { 11 } else { 1 }),
        );
    }
    let node = status(&broker).remove(&format!("{P}node")).expect("a node");
    want.insert("node", node.into_bytes());
    converge(&broker, &expected(&want));
    let ev = events.wait_for("the Evicting event", HANG, |m| {
        m.text().contains("Evicting")
    });
    let ev = ev.json().expect("an event is JSON");
    assert_eq!(ev["message"], "memory pressure", "{ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_sends_only_its_lease_and_keep_alives() {
    let broker = Broker::new(BrokerOpts::default());
    let (front, sent) = recording_proxy(broker.port()).await;
    // Periods much shorter than the defaults (60 s) to see several within the test.
    let extra = serde_json::json!({"keepAlive": "3s", "leasePeriod": "1s"});
    let (agent, link, _rx) = reporting_agent(&format!("mqtt://127.0.0.1:{front}"), extra).await;
    let beat = heartbeat(&link);
    tidelet_e2e::wait_for("the session to be idle", HANG, || link.idle().then_some(()));
    // The proxy understood the start: every pod went out once.
    let topics = |from: usize| -> Vec<String> {
        let sent = sent.lock().unwrap();
        sent[from..]
            .iter()
            .filter_map(|p| p.topic.clone())
            .collect()
    };
    for i in 0..10 {
        let t = format!("{P}pods/default/p{i}");
        assert!(topics(0).contains(&t), "{t} not sent: {:?}", topics(0));
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
    let start = sent.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(7)).await;
    poke.abort();
    beat.abort();
    let idle: Vec<_> = sent.lock().unwrap()[start..].to_vec();
    let lease = format!("{P}lease");
    let other: Vec<_> = idle
        .iter()
        .filter(|p| !(p.kind == PINGREQ || p.kind == PUBLISH && p.topic.as_ref() == Some(&lease)))
        .collect();
    assert!(
        other.is_empty(),
        "sent while idle besides lease and pings: {other:?}"
    );
    let leases = idle.iter().filter(|p| p.kind == PUBLISH).count();
    assert!(
        leases >= 2,
        "the lease was not renewed while idle: {idle:?}"
    );
}
