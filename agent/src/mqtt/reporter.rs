//! The reporter: turns the agent's published state (the node object, every pod's view, the
//! node's and pods' event rings) into the session's retained objects and events. It wakes on
//! `Shared::changes()`, waits a few milliseconds so a burst of changes becomes one snapshot,
//! and only reads a [`StatusSource`] (the agent's `Ctx`): it never blocks the agent. What changed is decided by a pure
//! [`Reporter::step`]; the outbox drops payloads equal to what the broker already holds.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;

use super::payload::{self, EventSnapshot, Involved};
use super::session::Link;
use super::topics;
use crate::pod::events::Events;
use crate::pod::view::PodView;

/// How long a change waits for the ones right behind it (the median change-to-broker
/// latency budget is 50 ms).
pub const COALESCE: Duration = Duration::from_millis(5);

/// What to hand to the link for one snapshot.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `(suffix, payload)`; `None` clears the topic of a pod that is gone.
    pub retained: Vec<(String, Option<Vec<u8>>)>,
    pub events: Vec<Vec<u8>>,
}

/// What the last snapshot published.
#[derive(Debug, Default)]
pub struct Reporter {
    pods: BTreeSet<String>,
    events: EventSnapshot,
}

impl Reporter {
    /// The payloads of a snapshot: the node, every pod (pods gone since the last snapshot
    /// cleared), and the events that are new or counted up.
    pub fn step(
        &mut self,
        node_name: &str,
        node: Node,
        views: &[PodView],
        node_events: &Events,
    ) -> Report {
        let mut r = Report::default();
        r.retained
            .push((topics::NODE.to_string(), Some(payload::node(node))));
        let mut pods = BTreeSet::new();
        let mut objects: Vec<(Involved, &Events)> = vec![(Involved::node(node_name), node_events)];
        for v in views {
            let obj = Involved::pod(&v.pod);
            let key = format!("{}/{}", obj.namespace, obj.name);
            if obj.name.is_empty() || !pods.insert(key.clone()) {
                continue;
            }
            r.retained
                .push((format!("{}{key}", topics::PODS), Some(payload::pod(&v.pod))));
            objects.push((obj, &v.events));
        }
        for gone in self.pods.difference(&pods) {
            r.retained.push((format!("{}{gone}", topics::PODS), None));
        }
        let (new, snap) = payload::diff_events(&self.events, objects.iter().map(|(o, e)| (o, *e)));
        r.events = new
            .iter()
            .map(|(obj, e)| payload::event(node_name, obj, e))
            .collect();
        self.pods = pods;
        self.events = snap;
        r
    }
}

fn apply(link: &Link, r: Report) {
    for (suffix, p) in r.retained {
        link.set_retained(&suffix, p);
    }
    for e in r.events {
        link.event(e);
    }
}

/// What the reporter reads. The mqtt layer owns this trait and the agent implements it
/// (`agent/status_source.rs`), so the reporter depends on nothing above it; tests pass a fake.
pub trait StatusSource: Send + Sync + 'static {
    fn node_name(&self) -> String;
    /// The node as a Kubernetes object (volatile fields are made stable by the payload).
    fn node_object(&self) -> Node;
    /// The published pods and the change notifications.
    fn shared(&self) -> &crate::pod::view::Shared;
    fn node_events(&self) -> Events;
}

/// Reports `src`'s state through `link` on every change, until its `Shared` is gone.
/// Generic (and `?Sized`) so that the agent passes its `Arc<Ctx>` and a test its fake, or
/// either as an `Arc<dyn StatusSource>`.
pub fn spawn<S: StatusSource + ?Sized>(src: Arc<S>, link: Link) -> tokio::task::JoinHandle<()> {
    let mut changes = src.shared().changes();
    tokio::spawn(async move {
        let mut rep = Reporter::default();
        let name = src.node_name();
        loop {
            changes.borrow_and_update();
            let report = rep.step(
                &name,
                src.node_object(),
                &src.shared().list(),
                &src.node_events(),
            );
            apply(&link, report);
            if changes.changed().await.is_err() {
                return;
            }
            tokio::time::sleep(COALESCE).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn view(ns: &str, name: &str, phase: &str, events: &[&str]) -> PodView {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "c", "image": "busybox:test"}]},
            "status": {"phase": phase}
        }))
        .unwrap();
        let mut ev = Events::default();
        for (i, r) in events.iter().enumerate() {
            ev.push(false, r, format!("{r} {name}"), 1_000 + i as i64);
        }
        PodView {
            pod,
            events: ev,
            ..Default::default()
        }
    }

    fn node() -> Node {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "n1"}})).unwrap()
    }

    /// (suffix, live?) and event reasons of a report.
    fn summary(r: &Report) -> (Vec<(String, bool)>, Vec<String>) {
        (
            r.retained
                .iter()
                .map(|(s, p)| (s.clone(), p.is_some()))
                .collect(),
            r.events
                .iter()
                .map(|e| {
                    let v: serde_json::Value = serde_json::from_slice(e).unwrap();
                    format!(
                        "{}:{}",
                        v["involvedObject"]["name"].as_str().unwrap(),
                        v["reason"].as_str().unwrap()
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn snapshots_publish_pods_clear_the_gone_and_send_new_events_once() {
        let s = |x: &str| x.to_string();
        type Case = (&'static str, Vec<PodView>, Vec<(String, bool)>, Vec<String>);
        let cases: Vec<Case> = vec![
            (
                "two pods",
                vec![
                    view("default", "a", "Running", &["Started"]),
                    view("prod", "b", "Pending", &[]),
                ],
                vec![
                    (s("node"), true),
                    (s("pods/default/a"), true),
                    (s("pods/prod/b"), true),
                ],
                vec![s("a:Started")],
            ),
            (
                "b gone, a has a new event",
                vec![view("default", "a", "Running", &["Started", "Killing"])],
                vec![
                    (s("node"), true),
                    (s("pods/default/a"), true),
                    (s("pods/prod/b"), false),
                ],
                vec![s("a:Killing")],
            ),
            (
                "unchanged: no tombstone again, no event",
                vec![view("default", "a", "Running", &["Started", "Killing"])],
                vec![(s("node"), true), (s("pods/default/a"), true)],
                vec![],
            ),
        ];
        let mut rep = Reporter::default();
        let mut node_events = Events::default();
        for (i, (what, views, retained, events)) in cases.into_iter().enumerate() {
            if i == 0 {
                node_events.push(false, "Starting", "tidelet started".into(), 1);
            }
            let r = rep.step("n1", node(), &views, &node_events);
            let (got_r, got_e) = summary(&r);
            assert_eq!(got_r, retained, "{what}");
            let mut want_e = events.clone();
            if i == 0 {
                want_e.insert(0, s("n1:Starting"));
            }
            assert_eq!(got_e, want_e, "{what}");
        }
    }
}
