//! MQTT from inside the guest, through wall-clock jumps (issue 5; the end of `tests/vm/stage2`,
//! `mqtt.*` markers). A clock jump cannot be made on the CI host (it would break every other
//! test and TLS), but a QEMU guest's clock is its own: the guest restarts tidelet with an
//! `mqtt:` section for a real Mosquitto on the host (reached through a second `guestfwd`,
//! `tidelet.mqttport=PORT`), a 1 s lease and one more static pod (`clock`), then sets its
//! clock a day forward and, ~2 s later, two days back, and finally stops tidelet with SIGTERM.
//!
//! What must hold: the pod runs throughout (the guest's view: phase, uid and restartCount
//! before and after each jump; the broker's: every retained update of the pod), the agent keeps
//! its pid and exits cleanly, and the broker received the node (a `v1` Node), `online` true and
//! at the end `online` false "agent stopped", and lease renewals before, after the forward
//! jump (a `renewTime` a day ahead of the host's clock) and after the backward one (a day
//! behind), in that order. How many leases arrived is a figure, printed.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tidelet::fleet::view::lease_times;
use tidelet_e2e::broker::{Broker, BrokerOpts, Message, Subscription};

use crate::get;

const DAY: i64 = 86_400;
/// How far the guest's clock (the RTC at boot, then `date -s` in whole seconds) and the
/// moments the host reads its own may differ, in seconds.
const SLACK: i64 = 120;
/// The guest's node name (the stage reuses the earlier stages' root and pods); its topics are
/// under `tidelet/vm-<arch>/`.
const NODE: &str = "vm";
/// The static pod of the stage (`tests/vm/pods/clock.yaml`, full name `clock-vm`).
const POD: &str = "clock-vm";

/// The host's clock, whole seconds since the epoch.
fn host_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the host's clock is after 1970")
        .as_secs() as i64
}

/// The broker for one guest and a subscriber to its node's topics, started before the boot.
pub struct Observer {
    broker: Broker,
    sub: Subscription,
    prefix: String,
    host_start: i64,
}

/// What the broker had for the guest's node once the guest ended.
pub struct Seen {
    /// Every message under the prefix, in arrival order.
    pub messages: Vec<Message>,
    /// The retained messages under the prefix at the end: topic → payload.
    pub retained: BTreeMap<String, Vec<u8>>,
    pub prefix: String,
    /// The host's clock just before the boot and after the guest ended.
    pub host_start: i64,
    pub host_end: i64,
}

impl Observer {
    /// A fresh Mosquitto on the host's loopback (no TLS: the guest's link is QEMU's user
    /// network to 127.0.0.1) and a subscription to `tidelet/vm-<arch>/#`.
    pub fn start(arch: &str) -> Observer {
        let broker = Broker::new(BrokerOpts::default());
        let prefix = format!("tidelet/vm-{arch}/");
        let sub = broker.subscribe(&format!("{prefix}#"), "operator");
        Observer {
            broker,
            sub,
            prefix,
            host_start: host_now(),
        }
    }

    /// The broker's port on 127.0.0.1 (the guest's `10.0.2.100:PORT`).
    pub fn port(&self) -> u16 {
        self.broker.port()
    }

    /// After the guest ended: every message the subscriber got (until 2 s pass without one)
    /// and the retained ones.
    pub fn finish(mut self) -> Seen {
        let host_end = host_now();
        let mut messages = Vec::new();
        while let Some(m) = self.sub.next(Duration::from_secs(2)) {
            messages.push(m);
        }
        let retained = self
            .broker
            .retained(&format!("{}#", self.prefix), "operator");
        Seen {
            messages,
            retained,
            prefix: self.prefix,
            host_start: self.host_start,
            host_end,
        }
    }
}

/// Which clock a lease's `renewTime` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The guest's clock as booted (the host's).
    Before,
    /// A day ahead.
    Forward,
    /// A day behind.
    Back,
}

/// The phase of a `renewTime` (seconds) read while the host's clock went from `start` to `end`;
/// `None` if it fits none (the clock jumped by something else than the stage's days).
pub fn phase(renew: i64, start: i64, end: i64) -> Option<Phase> {
    let within = |shift: i64| renew >= start + shift - SLACK && renew <= end + shift + SLACK;
    [
        (0, Phase::Before),
        (DAY, Phase::Forward),
        (-DAY, Phase::Back),
    ]
    .into_iter()
    .find(|(shift, _)| within(*shift))
    .map(|(_, p)| p)
}

/// The leases received, as (phase, renewTime) in arrival order; panics on a lease that is not
/// a `coordination.k8s.io/v1` Lease of the node or whose time fits no phase.
fn leases(seen: &Seen) -> Vec<(Phase, String)> {
    let topic = format!("{}lease", seen.prefix);
    seen.messages
        .iter()
        .filter(|m| m.topic == topic && !m.payload.is_empty())
        .map(|m| {
            let l = m
                .json()
                .unwrap_or_else(|| panic!("lease not JSON: {}", m.text()));
            assert_eq!(l["apiVersion"], "coordination.k8s.io/v1", "{l}");
            assert_eq!(l["kind"], "Lease", "{l}");
            assert_eq!(l["spec"]["holderIdentity"], NODE, "{l}");
            assert_eq!(
                l["spec"]["leaseDurationSeconds"], 4,
                "4 x leasePeriod 1s: {l}"
            );
            let renew = l["spec"]["renewTime"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let (renewed, _) =
                lease_times(&l).unwrap_or_else(|| panic!("renewTime {renew:?}: {l}"));
            let secs = renewed.as_second();
            let p = phase(secs, seen.host_start, seen.host_end).unwrap_or_else(|| {
                panic!(
                    "renewTime {renew} is neither the host's time ({}..{}) nor a day ahead or \
                     behind it",
                    seen.host_start, seen.host_end
                )
            });
            (p, renew)
        })
        .collect()
}

/// `PHASE uid=UID restarts=N` (the guest's `clock_state`) as (phase, uid, restarts).
fn pod_state(v: &str) -> (String, String, String) {
    let w: Vec<&str> = v.split_whitespace().collect();
    let field = |k: &str| {
        w.iter()
            .find_map(|x| x.strip_prefix(k))
            .unwrap_or_default()
            .to_string()
    };
    (
        w.first().copied().unwrap_or_default().to_string(),
        field("uid="),
        field("restarts="),
    )
}

/// The assertions on the guest's markers and what the broker received.
pub fn check(m: &BTreeMap<String, String>, seen: &Seen) {
    // The guest's clock started as the host's, and jumped as told.
    let clock = |k: &str| -> i64 {
        get(m, &format!("mqtt.clock.{k}"))
            .parse()
            .unwrap_or_else(|e| panic!("mqtt.clock.{k}: {e}"))
    };
    let start = clock("start");
    assert!(
        start >= seen.host_start - SLACK && start <= seen.host_end + SLACK,
        "the guest's clock at the stage's start ({start}) is not the host's ({}..{}): the \
         day offsets below would mean nothing",
        seen.host_start,
        seen.host_end
    );
    let (fwd, back) = (clock("forward"), clock("back"));
    assert!(
        fwd - start >= DAY && fwd - start < DAY + SLACK,
        "forward jump: {start} -> {fwd}"
    );
    // (`back` is read ~2 s after `forward`, and set from the clock then, minus two days)
    assert!(
        fwd - back > 2 * DAY - SLACK && fwd - back <= 2 * DAY,
        "backward jump: {fwd} -> {back}"
    );

    // The guest's view: the same pod, running, never restarted; the same agent.
    let before = pod_state(get(m, "mqtt.pod.before"));
    assert_eq!(before.0, "Running", "mqtt.pod.before: {before:?}");
    assert!(!before.1.is_empty(), "mqtt.pod.before: no uid: {before:?}");
    assert_eq!(before.2, "0", "mqtt.pod.before: {before:?}");
    for k in ["after_forward", "after_back"] {
        assert_eq!(
            pod_state(get(m, &format!("mqtt.pod.{k}"))),
            before,
            "the pod {k} (phase, uid, restartCount)"
        );
    }
    let agent = get(m, "mqtt.agent.before");
    assert!(agent.ends_with(" tidelet"), "mqtt.agent.before: {agent:?}");
    assert_eq!(
        agent.split_whitespace().next(),
        Some(get(m, "mqtt.agent.pid"))
    );
    for k in ["after_forward", "after_back"] {
        assert_eq!(get(m, &format!("mqtt.agent.{k}")), agent, "the agent {k}");
    }
    assert_eq!(
        get(m, "mqtt.agent.exit"),
        "0",
        "tidelet's exit status on SIGTERM"
    );
    assert_eq!(get(m, "mqtt.panics"), "0", "panics in the agent's log");

    // The broker's view, from the subscription: the node, online true, then false at the end.
    let p = &seen.prefix;
    let on = |t: &str| -> Vec<&Message> {
        let topic = format!("{p}{t}");
        seen.messages.iter().filter(|x| x.topic == topic).collect()
    };
    let node = on("node")
        .last()
        .and_then(|n| n.json())
        .unwrap_or_else(|| panic!("no node message; topics: {:?}", topics(seen)));
    assert_eq!(
        (node["apiVersion"].as_str(), node["kind"].as_str()),
        (Some("v1"), Some("Node"))
    );
    assert_eq!(node["metadata"]["name"], NODE, "{node}");
    let online: Vec<Value> = on("online").iter().filter_map(|o| o.json()).collect();
    assert!(
        online.first().is_some_and(|o| o["online"] == true),
        "first online message: {online:?}"
    );
    let last = online.last().cloned().unwrap_or_default();
    assert_eq!(last["online"], false, "last online message: {online:?}");
    assert_eq!(
        last["reason"], "agent stopped",
        "last online message: {online:?}"
    );
    let retained_json = |t: &str| -> Value {
        let v = seen
            .retained
            .get(&format!("{p}{t}"))
            .unwrap_or_else(|| panic!("no retained {p}{t}; retained: {:?}", seen.retained.keys()));
        serde_json::from_slice(v)
            .unwrap_or_else(|e| panic!("retained {t}: {e}: {}", String::from_utf8_lossy(v)))
    };
    assert_eq!(retained_json("online"), last, "the retained online");

    // The pod: its retained topic shows it Running, the same uid, never restarted; and so did
    // every update of it the broker got.
    let pod_topic = format!("pods/default/{POD}");
    let pod = retained_json(&pod_topic);
    assert_eq!(
        (pod["apiVersion"].as_str(), pod["kind"].as_str()),
        (Some("v1"), Some("Pod"))
    );
    let updates: Vec<Value> = on(&pod_topic).iter().filter_map(|u| u.json()).collect();
    let first_running = updates
        .iter()
        .position(|u| u["status"]["phase"] == "Running")
        .unwrap_or_else(|| panic!("the pod was never published Running: {updates:?}"));
    for u in updates[first_running..].iter().chain([&pod]) {
        assert_eq!(u["status"]["phase"], "Running", "{u}");
        assert_eq!(u["metadata"]["uid"], before.1.as_str(), "{u}");
        assert_eq!(
            u["status"]["containerStatuses"][0]["restartCount"], 0,
            "{u}"
        );
    }

    // Leases before the jumps, after the forward one and after the backward one, in order.
    let leases = leases(seen);
    let phases: Vec<Phase> = leases.iter().map(|(ph, _)| *ph).collect();
    assert!(
        phases.windows(2).all(|w| w[0] <= w[1]),
        "leases out of the clock's order: {leases:?}"
    );
    for want in [Phase::Before, Phase::Forward, Phase::Back] {
        assert!(
            phases.contains(&want),
            "no lease renewed in the {want:?} phase: {leases:?}"
        );
    }
}

/// The topics received, for failure messages.
fn topics(seen: &Seen) -> Vec<&str> {
    seen.messages.iter().map(|m| m.topic.as_str()).collect()
}

/// The figures: leases per phase, messages in all, and the stage's guest time.
pub fn figures(m: &BTreeMap<String, String>, seen: &Seen) -> String {
    let leases = leases(seen);
    let count = |p: Phase| leases.iter().filter(|(ph, _)| *ph == p).count();
    let secs = |k: &str| m.get(k).and_then(|v| v.parse::<f64>().ok());
    let stage = match (secs("mqtt.start_at"), secs("mqtt.done_at")) {
        (Some(a), Some(b)) => format!("{:.1} s", b - a),
        _ => "?".into(),
    };
    format!(
        "MQTT clock-jump stage {stage} of guest time; {} lease messages (before the jumps {}, \
         a day ahead {}, a day behind {}); {} messages in all",
        leases.len(),
        count(Phase::Before),
        count(Phase::Forward),
        count(Phase::Back),
        seen.messages.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_table() {
        let (s, e) = (1_000_000, 1_000_100);
        let cases = [
            (s, Some(Phase::Before)),
            (e + SLACK, Some(Phase::Before)),
            (s - SLACK - 1, None),
            (s + DAY + 5, Some(Phase::Forward)),
            (e + DAY + SLACK + 1, None),
            (s - DAY + 50, Some(Phase::Back)),
            (s - 2 * DAY, None),
            (s + 3600, None),
        ];
        for (t, want) in cases {
            assert_eq!(phase(t, s, e), want, "{t}");
        }
    }

    #[test]
    fn pod_state_parses_the_marker() {
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        let cases = [
            ("Running uid=abc-1 restarts=0", s("Running", "abc-1", "0")),
            ("Pending uid= restarts=", s("Pending", "", "")),
            ("", s("", "", "")),
        ];
        for (v, want) in cases {
            assert_eq!(pod_state(v), want, "{v:?}");
        }
    }
}
