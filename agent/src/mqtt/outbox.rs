//! What the session still has to tell the broker, kept so that it never grows without bound
//! and converges to the current truth after any outage (rumqttc's own queue is not relied on:
//! it is dropped on a clean-session reconnect).
//!
//! - Retained objects (`online`, `node`, `lease`, `pods/ns/name`, `desired/results/ns/name`)
//!   are keyed by topic suffix and hold only their latest payload. One that equals what the
//!   broker last acknowledged is not sent again; removal is an empty retained payload, a
//!   tombstone kept until acknowledged and then forgotten. At most one message per object is
//!   in flight, so the broker ends with the last one sent.
//! - Events go to a ring of `capacity`: the oldest are dropped and counted; the count is
//!   reported by an `EventsDropped` event sent before the next event, and reset once that is
//!   acknowledged.
//! - A message is delivered only on its PUBACK (QoS 1). On a disconnect, un-acked objects are
//!   dirty again and un-acked events go back to the front of the ring; on every CONNACK every
//!   object is dirty (the broker may have lost it, or hold a stale one): the current truth is
//!   sent once, one message per object, never a replay of history.
//! - At most `max_inflight` messages are out at once, so a burst never floods rumqttc.
//!
//! Pure: no I/O and no clock; the session drives it.

use std::collections::{BTreeMap, VecDeque};

/// Identifies a message handed out by [`Outbox::next_message`], for [`Outbox::ack`].
pub type Token = u64;

/// One message to publish (QoS 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub token: Token,
    /// Under the node's prefix: `node`, `pods/ns/name`, `events`, ...
    pub suffix: String,
    /// Empty for a tombstone.
    pub payload: Vec<u8>,
    pub retain: bool,
}

#[derive(Debug)]
struct Retained {
    /// The latest payload; `None` is a removal.
    want: Option<Vec<u8>>,
    /// What the broker acknowledged last, if known in this connection.
    acked: Option<Option<Vec<u8>>>,
    dirty: bool,
    inflight: bool,
}

#[derive(Debug)]
enum Sent {
    Retained {
        suffix: String,
        payload: Option<Vec<u8>>,
    },
    Event(Vec<u8>),
    Dropped(u64),
}

/// Builds the `EventsDropped` event's payload for a count.
pub type DroppedEvent = Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>;

pub struct Outbox {
    retained: BTreeMap<String, Retained>,
    events: VecDeque<Vec<u8>>,
    capacity: usize,
    /// Events dropped and not yet reported (the count in flight is in `inflight`).
    dropped: u64,
    dropped_event: DroppedEvent,
    inflight: BTreeMap<Token, Sent>,
    max_inflight: usize,
    next_token: Token,
    connected: bool,
}

/// The topic suffix of events.
pub const EVENTS: &str = super::topics::EVENTS;
/// Where a retained object comes in a (re)publish, as docs/mqtt.md gives it: `online`, the
/// node, its lease, the pods, then the answers to desired pods (and anything else); the events
/// after all of them. A back-end reading in order sees the node before its pods. `min_by_key`
/// keeps the first of equals, so within a kind the order is the topics'.
fn rank(suffix: &str) -> u8 {
    use super::topics::{LEASE, NODE, ONLINE, PODS};
    match suffix {
        ONLINE => 0,
        NODE => 1,
        LEASE => 2,
        s if s.starts_with(PODS) => 3,
        _ => 4,
    }
}

impl Outbox {
    /// `capacity`: events kept while they cannot be sent; `max_inflight`: messages out at once.
    pub fn new(capacity: usize, max_inflight: usize, dropped_event: DroppedEvent) -> Outbox {
        Outbox {
            retained: BTreeMap::new(),
            events: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
            dropped_event,
            inflight: BTreeMap::new(),
            max_inflight: max_inflight.max(1),
            next_token: 1,
            connected: false,
        }
    }

    /// The latest payload of a retained object; `None` clears its topic.
    pub fn set_retained(&mut self, suffix: &str, payload: Option<Vec<u8>>) {
        match self.retained.get_mut(suffix) {
            Some(r) => {
                if r.want == payload {
                    return;
                }
                r.dirty = r.acked.as_ref() != Some(&payload);
                r.want = payload;
            }
            None => {
                self.retained.insert(
                    suffix.to_string(),
                    Retained {
                        want: payload,
                        acked: None,
                        dirty: true,
                        inflight: false,
                    },
                );
            }
        }
    }

    /// `set_retained`, but sent again even when the broker already holds this payload: an
    /// answer someone waits for (a desired pod's result, re-sent when the same manifest is
    /// applied again) must arrive as a live message, not only sit retained. (If an identical
    /// copy is in flight at that moment, its acknowledgement stands for both.)
    pub fn set_retained_again(&mut self, suffix: &str, payload: Option<Vec<u8>>) {
        self.set_retained(suffix, payload);
        if let Some(r) = self.retained.get_mut(suffix) {
            r.dirty = true;
        }
    }

    /// The latest payload of a retained object, if it is live (not a tombstone).
    pub fn live(&self, suffix: &str) -> Option<&[u8]> {
        self.retained.get(suffix)?.want.as_deref()
    }

    /// Whether the broker acknowledged `payload` as the object's current value (in this
    /// connection).
    pub fn delivered(&self, suffix: &str, payload: &[u8]) -> bool {
        self.retained.get(suffix).is_some_and(|r| {
            !r.dirty
                && !r.inflight
                && r.want.as_deref() == Some(payload)
                && r.acked.as_ref().and_then(|a| a.as_deref()) == Some(payload)
        })
    }

    /// Queue an event; beyond `capacity` the oldest is dropped and counted.
    pub fn event(&mut self, payload: Vec<u8>) {
        self.events.push_back(payload);
        self.trim();
    }

    fn trim(&mut self) {
        while self.events.len() > self.capacity {
            self.events.pop_front();
            self.dropped += 1;
        }
    }

    /// A CONNACK: every object is sent again once (its current payload).
    pub fn connected(&mut self) {
        self.connected = true;
        for r in self.retained.values_mut() {
            r.acked = None;
            r.dirty = true;
        }
    }

    /// The connection is gone: whatever was not acknowledged is to be sent again.
    pub fn disconnected(&mut self) {
        self.connected = false;
        let sent = std::mem::take(&mut self.inflight);
        // Newest first, so that pushing to the front restores the original order.
        for (_, s) in sent.into_iter().rev() {
            match s {
                Sent::Retained { suffix, .. } => {
                    if let Some(r) = self.retained.get_mut(&suffix) {
                        r.inflight = false;
                        r.dirty = true;
                    }
                }
                Sent::Event(p) => self.events.push_front(p),
                Sent::Dropped(n) => self.dropped += n,
            }
        }
        for r in self.retained.values_mut() {
            r.acked = None;
        }
        self.trim();
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The next message to publish, if connected and under the in-flight cap: dirty objects
    /// (`online` first), then the drop report, then events, oldest first.
    pub fn next_message(&mut self) -> Option<Message> {
        if !self.connected || self.inflight.len() >= self.max_inflight {
            return None;
        }
        let suffix = self
            .retained
            .iter()
            .filter(|(_, r)| r.dirty && !r.inflight)
            .min_by_key(|(s, _)| rank(s))
            .map(|(s, _)| s.clone());
        let token = self.next_token;
        if let Some(suffix) = suffix {
            let r = self.retained.get_mut(&suffix)?;
            r.dirty = false;
            r.inflight = true;
            let payload = r.want.clone();
            self.inflight.insert(
                token,
                Sent::Retained {
                    suffix: suffix.clone(),
                    payload: payload.clone(),
                },
            );
            self.next_token += 1;
            return Some(Message {
                token,
                suffix,
                payload: payload.unwrap_or_default(),
                retain: true,
            });
        }
        let reporting = self
            .inflight
            .values()
            .any(|s| matches!(s, Sent::Dropped(_)));
        let (sent, payload) = if self.dropped > 0 && !reporting {
            let n = std::mem::take(&mut self.dropped);
            (Sent::Dropped(n), (self.dropped_event)(n))
        } else {
            let p = self.events.pop_front()?;
            (Sent::Event(p.clone()), p)
        };
        self.inflight.insert(token, sent);
        self.next_token += 1;
        Some(Message {
            token,
            suffix: EVENTS.to_string(),
            payload,
            retain: false,
        })
    }

    /// The broker acknowledged `token` (PUBACK). Unknown tokens (from before a disconnect)
    /// are ignored.
    pub fn ack(&mut self, token: Token) {
        let Some(sent) = self.inflight.remove(&token) else {
            return;
        };
        if let Sent::Retained { suffix, payload } = sent {
            let Some(r) = self.retained.get_mut(&suffix) else {
                return;
            };
            r.inflight = false;
            r.dirty = r.want != payload;
            let forget = payload.is_none() && r.want.is_none();
            r.acked = Some(payload);
            if forget {
                self.retained.remove(&suffix);
            }
        }
    }

    /// Messages handed out and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Events waiting (not in flight).
    pub fn queued_events(&self) -> usize {
        self.events.len()
    }

    /// Events dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether everything is delivered: nothing dirty, queued or in flight.
    pub fn idle(&self) -> bool {
        self.inflight.is_empty()
            && self.events.is_empty()
            && self.dropped == 0
            && self.retained.values().all(|r| !r.dirty)
    }

    /// Suffixes of the live objects under `kind` (e.g. `pods/`).
    pub fn live_under<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.retained
            .iter()
            .filter(move |(s, r)| s.starts_with(kind) && r.want.is_some())
            .map(|(s, _)| s.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(cap: usize, inflight: usize) -> Outbox {
        Outbox::new(
            cap,
            inflight,
            Box::new(|n| format!("dropped {n}").into_bytes()),
        )
    }

    /// Everything `next_message` hands out now, as (suffix, payload).
    fn drain(o: &mut Outbox) -> Vec<(String, String, Token)> {
        let mut v = Vec::new();
        while let Some(m) = o.next_message() {
            v.push((m.suffix, String::from_utf8(m.payload).unwrap(), m.token));
        }
        v
    }

    fn ack_all(o: &mut Outbox, sent: &[(String, String, Token)]) {
        for (_, _, t) in sent {
            o.ack(*t);
        }
    }

    fn names(sent: &[(String, String, Token)]) -> Vec<(&str, &str)> {
        sent.iter()
            .map(|(s, p, _)| (s.as_str(), p.as_str()))
            .collect()
    }

    #[test]
    fn nothing_is_sent_while_disconnected_and_only_the_latest_payload_counts() {
        let mut o = outbox(8, 32);
        o.set_retained("node", Some(b"n1".to_vec()));
        o.set_retained("node", Some(b"n2".to_vec()));
        o.set_retained("pods/default/a", Some(b"a1".to_vec()));
        assert_eq!(o.next_message(), None);
        o.connected();
        let sent = drain(&mut o);
        assert_eq!(names(&sent), [("node", "n2"), ("pods/default/a", "a1")]);
        ack_all(&mut o, &sent);
        assert!(o.idle());
    }

    #[test]
    fn a_payload_equal_to_the_acked_one_is_not_sent_again() {
        let mut o = outbox(8, 32);
        o.connected();
        // (action, expected sends): set then ack, the same again, a change, back.
        o.set_retained("node", Some(b"x".to_vec()));
        let s = drain(&mut o);
        assert_eq!(names(&s), [("node", "x")]);
        ack_all(&mut o, &s);
        o.set_retained("node", Some(b"x".to_vec()));
        assert_eq!(drain(&mut o), vec![]);
        // Changed and changed back before anything was sent: nothing to send.
        o.set_retained("node", Some(b"y".to_vec()));
        o.set_retained("node", Some(b"x".to_vec()));
        assert_eq!(drain(&mut o), vec![]);
        o.set_retained("node", Some(b"y".to_vec()));
        let s = drain(&mut o);
        assert_eq!(names(&s), [("node", "y")]);
        // Changed while in flight: sent again only after the ack, with the latest.
        o.set_retained("node", Some(b"z".to_vec()));
        assert_eq!(drain(&mut o), vec![]);
        ack_all(&mut o, &s);
        let s2 = drain(&mut o);
        assert_eq!(names(&s2), [("node", "z")]);
        ack_all(&mut o, &s2);
        assert!(o.idle());
    }

    #[test]
    fn an_answer_set_again_is_sent_again_even_when_unchanged() {
        let mut o = outbox(8, 32);
        o.connected();
        o.set_retained_again("desired/results/default/web", Some(b"ok".to_vec()));
        let s = drain(&mut o);
        assert_eq!(names(&s), [("desired/results/default/web", "ok")]);
        ack_all(&mut o, &s);
        o.set_retained("desired/results/default/web", Some(b"ok".to_vec()));
        assert_eq!(drain(&mut o), vec![], "plain set: the broker has it");
        o.set_retained_again("desired/results/default/web", Some(b"ok".to_vec()));
        let s = drain(&mut o);
        assert_eq!(names(&s), [("desired/results/default/web", "ok")]);
        ack_all(&mut o, &s);
        assert!(o.idle());
    }

    #[test]
    fn every_connack_sends_the_current_truth_once() {
        let mut o = outbox(8, 32);
        o.connected();
        o.set_retained("node", Some(b"n".to_vec()));
        o.set_retained("online", Some(b"on".to_vec()));
        o.set_retained("pods/a/b", Some(b"p1".to_vec()));
        let s = drain(&mut o);
        assert_eq!(s[0].0, "online", "online goes first");
        ack_all(&mut o, &s);
        o.set_retained("pods/a/b", Some(b"p2".to_vec()));
        o.set_retained("pods/a/b", Some(b"p3".to_vec()));
        o.disconnected();
        o.connected();
        let s = drain(&mut o);
        assert_eq!(
            names(&s),
            [("online", "on"), ("node", "n"), ("pods/a/b", "p3")]
        );
    }

    /// docs/mqtt.md's order, whatever the topics' alphabetical order (`desired/...` and
    /// `lease` sort before `node`).
    #[test]
    fn a_reconnect_republishes_online_node_lease_pods_then_results() {
        let mut o = outbox(8, 32);
        for t in [
            "pods/default/b",
            "desired/results/default/r",
            "lease",
            "pods/default/a",
            "node",
            "online",
        ] {
            o.set_retained(t, Some(t.as_bytes().to_vec()));
        }
        o.event(b"e".to_vec());
        o.connected();
        let s = drain(&mut o);
        let order: Vec<&str> = s.iter().map(|(t, _, _)| t.as_str()).collect();
        assert_eq!(
            order,
            [
                "online",
                "node",
                "lease",
                "pods/default/a",
                "pods/default/b",
                "desired/results/default/r",
                "events"
            ]
        );
    }

    #[test]
    fn tombstones_are_kept_until_acked_then_forgotten() {
        let mut o = outbox(8, 32);
        o.connected();
        o.set_retained("pods/a/b", Some(b"p".to_vec()));
        let s = drain(&mut o);
        ack_all(&mut o, &s);
        o.set_retained("pods/a/b", None);
        assert_eq!(o.live("pods/a/b"), None);
        let s = drain(&mut o);
        assert_eq!(names(&s), [("pods/a/b", "")]);
        assert!(s.iter().all(|(_, p, _)| p.is_empty()));
        // Lost before the ack: sent again after the reconnect.
        o.disconnected();
        o.connected();
        let s = drain(&mut o);
        assert_eq!(names(&s), [("pods/a/b", "")]);
        ack_all(&mut o, &s);
        // Forgotten: another connack sends nothing for it.
        o.disconnected();
        o.connected();
        assert_eq!(drain(&mut o), vec![]);
        // A tombstone for something never set (a stale topic found on the broker).
        o.set_retained("pods/x/ghost", None);
        let s = drain(&mut o);
        assert_eq!(names(&s), [("pods/x/ghost", "")]);
        ack_all(&mut o, &s);
        assert!(o.idle());
        assert_eq!(o.live_under("pods/").count(), 0);
    }

    #[test]
    fn the_event_ring_drops_the_oldest_and_reports_the_count_once() {
        let mut o = outbox(3, 32);
        for i in 0..5 {
            o.event(format!("e{i}").into_bytes());
        }
        assert_eq!(o.dropped(), 2);
        assert_eq!(o.queued_events(), 3);
        o.connected();
        let s = drain(&mut o);
        assert_eq!(
            names(&s),
            [
                ("events", "dropped 2"),
                ("events", "e2"),
                ("events", "e3"),
                ("events", "e4")
            ]
        );
        // The report is lost: it is made again, with the drops since.
        o.disconnected();
        assert_eq!(o.dropped(), 2);
        o.event(b"e5".to_vec());
        assert_eq!(o.dropped(), 3, "e2 went out to make room");
        o.connected();
        let s = drain(&mut o);
        assert_eq!(
            names(&s),
            [
                ("events", "dropped 3"),
                ("events", "e3"),
                ("events", "e4"),
                ("events", "e5")
            ]
        );
        ack_all(&mut o, &s);
        assert_eq!(o.dropped(), 0);
        o.event(b"e6".to_vec());
        assert_eq!(names(&drain(&mut o)), [("events", "e6")]);
    }

    #[test]
    fn unacked_events_go_back_to_the_front_in_order() {
        let mut o = outbox(10, 32);
        o.connected();
        for i in 0..4 {
            o.event(format!("e{i}").into_bytes());
        }
        let s = drain(&mut o);
        o.ack(s[1].2);
        o.event(b"e4".to_vec());
        o.disconnected();
        o.connected();
        let s = drain(&mut o);
        assert_eq!(
            names(&s),
            [
                ("events", "e0"),
                ("events", "e2"),
                ("events", "e3"),
                ("events", "e4")
            ]
        );
        // Acks of the old connection mean nothing.
        o.ack(999);
        assert_eq!(o.in_flight(), 4);
    }

    #[test]
    fn the_in_flight_cap_holds_back_the_rest() {
        let mut o = outbox(100, 3);
        o.connected();
        for i in 0..10 {
            o.set_retained(&format!("pods/ns/p{i}"), Some(b"x".to_vec()));
        }
        for i in 0..5 {
            o.event(format!("e{i}").into_bytes());
        }
        let mut total = 0;
        let mut rounds = 0;
        loop {
            let s = drain(&mut o);
            if s.is_empty() {
                break;
            }
            assert!(s.len() <= 3, "{s:?}");
            assert_eq!(o.in_flight(), s.len());
            total += s.len();
            rounds += 1;
            ack_all(&mut o, &s);
        }
        assert_eq!(total, 15);
        assert_eq!(rounds, 5);
        assert!(o.idle());
    }
}
