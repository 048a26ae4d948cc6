//! Retained status and desired pods across a broker killed with SIGKILL, the last will, the
//! lease that stops with the agent's loop, oversized packets, and the held sweep.

use std::collections::BTreeMap;
use std::time::Duration;

use tidelet::mqtt::payload;
use tidelet::mqtt::session;
use tidelet_e2e::broker::{Broker, BrokerOpts, Message, Subscription};

use super::*;

fn event_payload(reason: &str, i: i64) -> Vec<u8> {
    let mut ev = tidelet::pod::events::Events::default();
    ev.push(
        false,
        reason,
        format!("{reason} number {i}"),
        1_700_000_000_000_000_000 + i,
    );
    let e = ev.iter().next().unwrap().clone();
    payload::event(NODE, &payload::Involved::node(NODE), &e)
}

/// The messages of `sub` up to and including the first for which `last` holds.
fn until(sub: &mut Subscription, what: &str, last: impl Fn(&Message) -> bool) -> Vec<Message> {
    let mut seen = Vec::new();
    loop {
        let Some(m) = sub.next(HANG) else {
            panic!("{what}: not seen; saw {seen:#?}");
        };
        let done = last(&m);
        seen.push(m);
        if done {
            return seen;
        }
    }
}

fn mentions(m: &Message, text: &str) -> bool {
    m.text().contains(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_converges_after_a_broker_killed_and_restarted() {
    let mut broker = Broker::new(BrokerOpts {
        persistence: true,
        ..Default::default()
    });
    let op = "operator";
    // Left by a previous life of the agent: must be cleared after the sync.
    broker.publish(
        &format!("{P}pods/default/ghost"),
        b"{\"stale\":true}",
        true,
        op,
    );
    // Held for this node by the back-end.
    broker.publish(
        &format!("{P}desired/pods/default/d1"),
        b"kind: Pod",
        true,
        op,
    );
    broker.publish(
        &format!("{P}desired/pods/prod/d2"),
        b"{\"kind\":\"Pod\"}",
        true,
        op,
    );
    // A persistent session: events sent while it reconnects after the restart are queued.
    let mut events = broker.subscribe_durable(&format!("{P}events"), op, "events-watcher");

    init_tracing();
    let extra = serde_json::json!({"eventBuffer": 5, "keepAlive": "5s", "leasePeriod": "1s"});
    let (link, mut rx) = session::start(&config(&broker.url(), extra), NODE).unwrap();
    link.alive();
    let mut set: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    set.insert("online", payload::online());
    set.insert(
        "node",
        b"{\"kind\":\"Node\",\"apiVersion\":\"v1\"}".to_vec(),
    );
    set.insert("pods/default/a", pod_payload("a", 1));
    set.insert("pods/default/b", pod_payload("b", 1));
    set.insert("pods/default/c", pod_payload("c", 1));
    for (s, p) in set.iter().filter(|(s, _)| **s != "online") {
        link.set_retained(s, Some(p.clone()));
    }
    link.event(event_payload("Started", 0));

    let (desired, present) = until_synced(&mut rx).await;
    assert_eq!(desired, keys(&["default/d1", "prod/d2"]));
    assert_eq!(present, keys(&["default/d1", "prod/d2"]));
    converge(&broker, &expected(&set));
    let lease = status(&broker)
        .remove(&format!("{P}lease"))
        .expect("a lease is retained");
    let lease: serde_json::Value = serde_json::from_str(&lease).unwrap();
    assert_eq!(lease["kind"], "Lease");
    assert_eq!(lease["spec"]["holderIdentity"], NODE);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 4);
    until(&mut events, "the first event", |m| {
        mentions(m, "Started number 0")
    });

    // A desired pod published live, and a removal.
    broker.publish(
        &format!("{P}desired/pods/default/d3"),
        b"kind: Pod",
        true,
        op,
    );
    assert_eq!(
        recv_desired(&mut rx).await,
        ("default/d3".to_string(), b"kind: Pod".to_vec())
    );
    broker.publish(&format!("{P}desired/pods/prod/d2"), b"", true, op);
    assert_eq!(recv_desired(&mut rx).await, ("prod/d2".to_string(), vec![]));

    // The broker dies after its autosave, so it comes back with the old retained state.
    broker.wait_saved();
    broker.kill();
    wait_connected(&link, false).await;
    set.insert("pods/default/a", pod_payload("a", 2));
    link.set_retained("pods/default/a", Some(set["pods/default/a"].clone()));
    link.set_retained("pods/default/b", None);
    set.remove("pods/default/b");
    for i in 1..=8 {
        link.event(event_payload("Tick", i));
    }
    broker.start();
    wait_connected(&link, true).await;
    let (_, present) = until_synced(&mut rx).await;
    assert_eq!(present, keys(&["default/d1", "default/d3"]));
    converge(&broker, &expected(&set));
    // 8 events into a ring of 5: 3 dropped, reported first, then the 5 newest.
    let seen = until(&mut events, "the events after the outage", |m| {
        mentions(m, "Tick number 8")
    });
    let after: Vec<String> = seen
        .iter()
        .map(|m| m.json().expect("an event is JSON"))
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

    link.shutdown(HANG).await;
    let online = online(&broker);
    assert_eq!(online["online"], false);
    assert_eq!(online["reason"], "agent stopped");
}

#[test]
fn the_last_will_marks_the_node_offline_when_the_connection_is_cut() {
    let broker = Broker::new(BrokerOpts::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let url = broker.url();
    rt.block_on(async {
        let (link, _rx, _) = synced_session(&url, serde_json::json!({"keepAlive": "2s"})).await;
        wait_connected(&link, true).await;
    });
    assert_eq!(online(&broker)["online"], true);
    // The agent vanishes without a DISCONNECT: its socket is dropped with the runtime.
    rt.shutdown_background();
    let will = broker.wait_retained(
        &format!("{P}online"),
        |p| serde_json::from_slice::<serde_json::Value>(p).is_ok_and(|v| v["online"] == false),
        HANG,
    );
    let will: serde_json::Value = serde_json::from_slice(&will).unwrap();
    assert_eq!(will["reason"], "connection lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_renewed_only_while_the_agent_is_alive() {
    let broker = Broker::new(BrokerOpts::default());
    let (link, _rx, _) =
        synced_session(&broker.url(), serde_json::json!({"leasePeriod": "1s"})).await;
    let renew = || -> String {
        let l = status(&broker)
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
    let beat = heartbeat(&link);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r1 = renew();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r2 = renew();
    beat.abort();
    assert!(r1 > stuck && r2 > r1, "{stuck} {r1} {r2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packets_do_not_kill_the_session() {
    let broker = Broker::new(BrokerOpts::default());
    let cfg = config(&broker.url(), serde_json::json!({"maxPacketSize": "64Ki"}));
    let (link, mut rx, _) =
        synced_session(&broker.url(), serde_json::json!({"maxPacketSize": "64Ki"})).await;
    // Too big to send: refused locally, the session goes on.
    link.set_retained("pods/default/big", Some(vec![b'x'; 70 << 10]));
    link.set_retained("pods/default/small", Some(b"{}".to_vec()));
    let mut want = BTreeMap::new();
    want.insert("online", payload::online());
    want.insert("pods/default/small", b"{}".to_vec());
    converge(&broker, &expected(&want));
    // Over maxPacketSize but within the incoming limit: handed down (the source answers
    // TooLarge).
    let large = vec![b'y'; 100 << 10];
    broker.publish(
        &format!("{P}desired/pods/default/large"),
        &large,
        true,
        "operator",
    );
    assert_eq!(
        recv_desired(&mut rx).await,
        ("default/large".to_string(), large)
    );
    // Beyond the incoming limit: rumqttc fails the connection; the session keeps retrying.
    let huge = vec![b'z'; session::incoming_limit(cfg.max_packet_size) + 1024];
    let topic = format!("{P}desired/pods/default/huge");
    broker.publish(&topic, &huge, true, "operator");
    wait_connected(&link, false).await;
    // The back-end removes it: the session reconnects and syncs.
    broker.publish(&topic, b"", true, "operator");
    wait_connected(&link, true).await;
    let (_, present) = until_synced(&mut rx).await;
    assert_eq!(present, keys(&["default/large"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_sweep_keeps_pod_topics_until_the_pods_are_ready() {
    init_tracing();
    let broker = Broker::new(BrokerOpts::default());
    // Left by the agent's previous life: `web` still runs (adopted late), `gone` does not.
    let old = b"{\"old\":1}";
    broker.publish(&format!("{P}pods/default/web"), old, true, "operator");
    broker.publish(&format!("{P}pods/default/gone"), old, true, "operator");
    let options = session::StartOptions {
        hold_sweep: true,
        ..Default::default()
    };
    let (link, mut rx) =
        session::start_with(&config(&broker.url(), serde_json::json!({})), NODE, options).unwrap();
    until_synced(&mut rx).await;
    // Synced, online published: the held sweep has left both old pod topics (an unheld one
    // would have cleared `gone` with the sync).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut want = BTreeMap::new();
    want.insert("online", payload::online());
    want.insert("pods/default/web", old.to_vec());
    want.insert("pods/default/gone", old.to_vec());
    converge(&broker, &expected(&want));
    // Adoption done: web is live again, gone is cleared.
    let web = pod_payload("web", 1);
    link.set_retained("pods/default/web", Some(web.clone()));
    link.pods_ready();
    want.remove("pods/default/gone");
    want.insert("pods/default/web", web);
    converge(&broker, &expected(&want));
}
