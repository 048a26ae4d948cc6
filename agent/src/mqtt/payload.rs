//! The JSON payloads the agent publishes: the `v1` Node, each `v1` Pod with its status, `v1`
//! Events, the `coordination.k8s.io/v1` Lease and the `online` marker. Every object carries
//! `apiVersion` and `kind` (k8s-openapi writes them), so Kubernetes tooling accepts them.
//!
//! Retained payloads must only change when the object does, or an idle node would republish
//! forever: the node's conditions get `lastHeartbeatTime` = `lastTransitionTime` (the
//! heartbeat is the lease's job). Events are a pure diff of the pods' and node's event rings
//! between two snapshots: new ones, and those whose count went up, are published again under
//! the same name (as the API server aggregates them).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event as KEvent, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

use crate::pod::events::{Event, Events};

/// The agent's name in payloads (`online.agent`, `Event.source.component` is `tidelet`).
pub const AGENT: &str = concat!("tidelet/", env!("CARGO_PKG_VERSION"));
pub const COMPONENT: &str = "tidelet";

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // k8s-openapi types and our own maps always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The node with volatile fields made stable: `lastHeartbeatTime` = `lastTransitionTime`.
pub fn stable_node(mut node: Node) -> Node {
    if let Some(conds) = node.status.as_mut().and_then(|s| s.conditions.as_mut()) {
        for c in conds {
            c.last_heartbeat_time = c.last_transition_time.clone();
        }
    }
    node
}

/// `P node`.
pub fn node(node: Node) -> Vec<u8> {
    json(&stable_node(node))
}

/// `P pods/<ns>/<name>`.
pub fn pod(pod: &Pod) -> Vec<u8> {
    json(pod)
}

/// `P online` while connected.
pub fn online() -> Vec<u8> {
    json(&serde_json::json!({"online": true, "agent": AGENT}))
}

/// `P online` in the last will and on a clean stop.
pub fn offline(reason: &str) -> Vec<u8> {
    json(&serde_json::json!({"online": false, "reason": reason}))
}

fn micro_time(ns: i64) -> Option<MicroTime> {
    k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(ns))
        .ok()
        .map(MicroTime)
}

/// `P lease`: namespace `kube-node-lease`, name and holder the node, duration 4 x period.
pub fn lease(node_name: &str, period: Duration, now_ns: i64) -> Vec<u8> {
    let l = Lease {
        metadata: ObjectMeta {
            name: Some(node_name.to_string()),
            namespace: Some("kube-node-lease".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node_name.to_string()),
            lease_duration_seconds: Some(
                (period.as_secs().saturating_mul(4)).min(i32::MAX as u64) as i32
            ),
            renew_time: micro_time(now_ns),
            ..Default::default()
        }),
    };
    json(&l)
}

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Involved {
    /// `Pod` or `Node`.
    pub kind: &'static str,
    /// Empty for the node.
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Involved {
    pub fn node(name: &str) -> Involved {
        Involved {
            kind: "Node",
            namespace: String::new(),
            name: name.to_string(),
            uid: name.to_string(),
        }
    }

    pub fn pod(p: &Pod) -> Involved {
        Involved {
            kind: "Pod",
            namespace: p
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: p.metadata.name.clone().unwrap_or_default(),
            uid: p.metadata.uid.clone().unwrap_or_default(),
        }
    }
}

/// An event's identity across snapshots: its object, and its type, reason, message and
/// first time (a ring folds repeats of the same type/reason/message into a count).
type EventId = (Involved, String, String, String, i64);

/// The counts seen last time, by event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSnapshot(BTreeMap<EventId, u32>);

/// The events of `now` that are new or whose count went up since `prev`, and the snapshot to
/// keep for next time (only what the rings still hold: bounded by them).
pub fn diff_events<'a>(
    prev: &EventSnapshot,
    now: impl IntoIterator<Item = (&'a Involved, &'a Events)>,
) -> (Vec<(Involved, Event)>, EventSnapshot) {
    let mut next = BTreeMap::new();
    let mut out = Vec::new();
    for (obj, events) in now {
        for e in events.iter() {
            let id = (
                obj.clone(),
                e.type_.clone(),
                e.reason.clone(),
                e.message.clone(),
                e.first_ns,
            );
            if prev.0.get(&id).is_none_or(|c| *c < e.count) {
                out.push((obj.clone(), e.clone()));
            }
            next.insert(id, e.count);
        }
    }
    out.sort_by_key(|(_, e)| e.last_ns);
    (out, EventSnapshot(next))
}

fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A `v1` Event about `obj` on `node_name`: named `<obj>.<first time in hex><hash>`, stable
/// across count updates so consumers can aggregate as the API server does.
pub fn event_object(node_name: &str, obj: &Involved, e: &Event) -> KEvent {
    let t = crate::pod::status::time;
    let suffix = format!(
        "{:x}{:04x}",
        e.first_ns,
        fnv(&[&e.type_, &e.reason, &e.message]) & 0xffff
    );
    let namespace = if obj.namespace.is_empty() {
        "default".to_string()
    } else {
        obj.namespace.clone()
    };
    KEvent {
        metadata: ObjectMeta {
            name: Some(format!("{}.{suffix}", obj.name)),
            namespace: Some(namespace),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some(obj.kind.into()),
            namespace: (!obj.namespace.is_empty()).then(|| obj.namespace.clone()),
            name: Some(obj.name.clone()),
            uid: (!obj.uid.is_empty()).then(|| obj.uid.clone()),
            ..Default::default()
        },
        reason: Some(e.reason.clone()),
        message: Some(e.message.clone()),
        type_: Some(e.type_.clone()),
        count: Some(e.count.min(i32::MAX as u32) as i32),
        first_timestamp: t(e.first_ns),
        last_timestamp: t(e.last_ns),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node_name.to_string()),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node_name.to_string()),
        ..Default::default()
    }
}

/// `P events`: one event.
pub fn event(node_name: &str, obj: &Involved, e: &Event) -> Vec<u8> {
    json(&event_object(node_name, obj, e))
}

/// The `EventsDropped` warning about the node, sent before the next event after drops.
pub fn events_dropped(node_name: &str, dropped: u64, now_ns: i64) -> Vec<u8> {
    let e = Event {
        type_: "Warning".into(),
        reason: "EventsDropped".into(),
        message: format!("{dropped} events were dropped while the control plane was unreachable"),
        count: 1,
        first_ns: now_ns,
        last_ns: now_ns,
    };
    event(node_name, &Involved::node(node_name), &e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn node_at(now_ns: i64) -> Node {
        let n = crate::node::Node {
            name: "board-1".into(),
            hostname: "board-1".into(),
            ip: "10.0.0.2".into(),
            memory_capacity: 1 << 30,
            cpus: 2,
            can_lower_oom_score: true,
            caps: crate::security::CapSet::all(40),
        };
        let r = crate::eviction::allocatable::Resources {
            cpu_milli: 2000,
            memory: 1 << 30,
            pods: 110,
            ephemeral_storage: 1 << 34,
        };
        let res = crate::eviction::allocatable::NodeResources {
            capacity: r,
            allocatable: r,
            pods_memory_limit: 1 << 30,
            pods_cpu_milli: 2000,
            pods_pids_limit: None,
        };
        crate::node::node_object(
            &n,
            &res,
            &Default::default(),
            1_700_000_000_000_000_000,
            now_ns,
        )
    }

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn the_node_payload_is_stable_across_heartbeats() {
        let a = node(node_at(1_700_000_100_000_000_000));
        let b = node(node_at(1_700_000_900_000_000_000));
        assert_eq!(a, b);
        let v = parse(&a);
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Node");
        assert_eq!(v["metadata"]["name"], "board-1");
        let ready = &v["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["lastHeartbeatTime"], ready["lastTransitionTime"]);
        // The heartbeat really was volatile before.
        assert_ne!(
            json(&node_at(1_700_000_100_000_000_000)),
            json(&node_at(1_700_000_900_000_000_000))
        );
    }

    #[test]
    fn pods_lease_and_online_are_kubernetes_shaped() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox:test"}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        let v = parse(&pod(&p));
        assert_eq!(
            (v["apiVersion"].as_str(), v["kind"].as_str()),
            (Some("v1"), Some("Pod"))
        );
        assert_eq!(v["status"]["phase"], "Running");

        let v = parse(&lease(
            "board-1",
            Duration::from_secs(15),
            1_700_000_000_123_456_789,
        ));
        assert_eq!(v["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(v["kind"], "Lease");
        assert_eq!(v["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(v["metadata"]["name"], "board-1");
        assert_eq!(v["spec"]["holderIdentity"], "board-1");
        assert_eq!(v["spec"]["leaseDurationSeconds"], 60);
        assert_eq!(v["spec"]["renewTime"], "2023-11-14T22:13:20.123456Z");

        let v = parse(&online());
        assert_eq!(v["online"], true);
        assert!(v["agent"].as_str().unwrap().starts_with("tidelet/"));
        let v = parse(&offline("connection lost"));
        assert_eq!(
            v,
            serde_json::json!({"online": false, "reason": "connection lost"})
        );
    }

    fn events(list: &[(&str, u32, i64)]) -> Events {
        let mut ev = Events::default();
        for (reason, count, t) in list {
            for i in 0..*count {
                ev.push(
                    false,
                    reason,
                    format!("{reason} happened"),
                    t + i64::from(i),
                );
            }
        }
        ev
    }

    #[test]
    fn event_diff_finds_new_and_bumped_events_only() {
        let web = Involved {
            kind: "Pod",
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
        };
        let node = Involved::node("board-1");
        type Case<'a> = (&'a str, Vec<(Involved, Events)>, Vec<(&'a str, u32)>);
        let cases: Vec<Case> = vec![
            (
                "first snapshot: everything is new",
                vec![
                    (
                        web.clone(),
                        events(&[("Pulled", 1, 10), ("Started", 1, 20)]),
                    ),
                    (node.clone(), events(&[("Starting", 1, 5)])),
                ],
                vec![("Starting", 1), ("Pulled", 1), ("Started", 1)],
            ),
            (
                "unchanged: nothing",
                vec![
                    (
                        web.clone(),
                        events(&[("Pulled", 1, 10), ("Started", 1, 20)]),
                    ),
                    (node.clone(), events(&[("Starting", 1, 5)])),
                ],
                vec![],
            ),
            (
                "count bumped and a new one",
                vec![
                    (
                        web.clone(),
                        events(&[("Pulled", 1, 10), ("Started", 3, 20), ("Killing", 1, 90)]),
                    ),
                    (node.clone(), events(&[("Starting", 1, 5)])),
                ],
                vec![("Started", 3), ("Killing", 1)],
            ),
            (
                "a pod gone: nothing, and forgotten",
                vec![(node.clone(), events(&[("Starting", 1, 5)]))],
                vec![],
            ),
            (
                "the same pod back: its events are new again",
                vec![
                    (web.clone(), events(&[("Pulled", 1, 10)])),
                    (node.clone(), events(&[("Starting", 1, 5)])),
                ],
                vec![("Pulled", 1)],
            ),
        ];
        let mut snap = EventSnapshot::default();
        for (what, now, want) in cases {
            let (out, next) = diff_events(&snap, now.iter().map(|(o, e)| (o, e)));
            let got: Vec<(&str, u32)> = out
                .iter()
                .map(|(_, e)| (e.reason.as_str(), e.count))
                .collect();
            assert_eq!(got, want, "{what}");
            snap = next;
        }
    }

    #[test]
    fn events_name_their_object_and_keep_their_name_across_counts() {
        let p = Involved {
            kind: "Pod",
            namespace: "prod".into(),
            name: "web".into(),
            uid: "u1".into(),
        };
        let mut ev = events(&[("BackOff", 1, 1_700_000_000_000_000_000)]);
        let a = parse(&event("board-1", &p, ev.iter().next().unwrap()));
        ev.push(
            false,
            "BackOff",
            "BackOff happened".into(),
            1_700_000_060_000_000_000,
        );
        let b = parse(&event("board-1", &p, ev.iter().next().unwrap()));
        assert_eq!(a["metadata"]["name"], b["metadata"]["name"]);
        assert!(a["metadata"]["name"].as_str().unwrap().starts_with("web."));
        assert_eq!(b["count"], 2);
        assert_eq!(b["apiVersion"], "v1");
        assert_eq!(b["kind"], "Event");
        assert_eq!(b["metadata"]["namespace"], "prod");
        assert_eq!(
            b["involvedObject"],
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "namespace": "prod", "name": "web", "uid": "u1"})
        );
        assert_eq!(
            b["source"],
            serde_json::json!({"component": "tidelet", "host": "board-1"})
        );
        assert_eq!(b["firstTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(b["lastTimestamp"], "2023-11-14T22:14:20Z");
        let d = parse(&events_dropped("board-1", 7, 1_700_000_000_000_000_000));
        assert_eq!(d["reason"], "EventsDropped");
        assert_eq!(d["type"], "Warning");
        assert_eq!(
            d["message"],
            "7 events were dropped while the control plane was unreachable"
        );
        assert_eq!(d["involvedObject"]["kind"], "Node");
    }
}
