//! The MQTT session's protocol state, free of I/O, as rumqttc keeps its `MqttState`: the
//! [`SessionState`] takes one [`Input`] at a time (a CONNACK, a PUBACK, an incoming publish,
//! the link going down, a lease tick, the agent setting an object, ...) and returns the
//! [`Effect`]s to carry out (publish this, subscribe to that, send this down to the agent,
//! wake whoever waits for progress). `session.rs` is the thin loop that feeds it rumqttc's
//! events and executes its effects with rumqttc's client.
//!
//! What it owns:
//! - **Packet-id pairing.** rumqttc assigns packet ids itself and reports them only as
//!   `Outgoing::Publish(pkid)`, in the order the publish requests reached it. Each requested
//!   publish is queued here (its outbox [`Token`], or `None` for the sync marker, which the
//!   outbox does not track) and paired with the next `Outgoing::Publish`; the PUBACK of that
//!   packet id then acknowledges the token in the [`Outbox`].
//! - **Acknowledgement collisions.** When the broker acknowledges out of order, rumqttc may
//!   pick a packet id still in flight: it reports `Outgoing::AwaitAck(pkid)`, holds the
//!   request back, and sends it (with an `Outgoing::Publish`) right after that id's PUBACK.
//!   The held request is set aside here so that later requests keep their pairing.
//! - **The sync sweep.** On every CONNACK the node subscribes to its desired pods, its own
//!   pod topics and `sync`, and publishes a nonce to `sync`. The broker sends a
//!   subscription's retained messages before it handles a later publish of the same client,
//!   so when the nonce comes back every retained topic has been seen: the desired keys go
//!   down as [`Down::Synced`], pod topics the agent does not hold are cleared, and the pod and
//!   sync topics are unsubscribed (so the agent's own updates are not echoed). No nonce
//!   within [`SYNC_TIMEOUT`]: no sweep on this connection.
//! - **The held sweep.** While the agent is still adopting its pods after a restart, stale
//!   pod topics found by a sync are kept aside until [`Input::PodsReady`], instead of
//!   flickering away and back.
//! - **Reconnection.** A link that goes down forgets every packet id and request, makes the
//!   outbox send its current truth again, and has rumqttc's replay discarded; after an
//!   oversized incoming message the next connection starts a clean session (once).
//! - **The lease.** Renewed on each tick only while the agent's main loop is alive.
//!
//! No clock and no randomness: the nonce, the time and the loop's idleness come in with the
//! inputs, so every transition is a row of a table test (`state_tests.rs`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use super::outbox::{DroppedEvent, Outbox, Token};
use super::{payload, topics};

/// How long the sync marker may take before the sweep is skipped.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// What comes down from the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// A desired pod's payload (a manifest; empty = remove), live or retained.
    Desired {
        namespace: String,
        name: String,
        payload: Vec<u8>,
    },
    /// After each (re)subscription: the keys of every retained desired pod the broker holds
    /// for this node (for RemoteSource::sweep).
    Synced { present: BTreeSet<String> },
}

/// One thing that happened, for [`SessionState::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The agent sets the retained object at `P <suffix>` (`None` clears the topic); with
    /// `again`, sent even if the broker already holds this payload.
    SetRetained {
        suffix: String,
        payload: Option<Vec<u8>>,
        again: bool,
    },
    /// The agent reports an event for `P events`.
    Event(Vec<u8>),
    /// Every pod the agent runs has been handed over: the held sweep may clear.
    PodsReady,
    /// The lease timer fired; the agent's main loop last said it was alive `since_alive` ago.
    LeaseTick { since_alive: Duration, now_ns: i64 },
    /// rumqttc: CONNACK. `nonce` is this connection's sync marker (unique per connection).
    ConnAck { nonce: String },
    /// rumqttc: `Outgoing::Publish(pkid)`, the next requested publish went out as `pkid`.
    PublishSent { pkid: u16 },
    /// rumqttc: `Outgoing::AwaitAck(pkid)`, a packet-id collision: the next requested publish
    /// is held back until `pkid` is acknowledged.
    PublishHeld { pkid: u16 },
    /// rumqttc: a PUBACK.
    PubAck { pkid: u16 },
    /// rumqttc: an incoming PUBLISH.
    Message { topic: String, payload: Vec<u8> },
    /// rumqttc: the connection failed (`oversized`: an incoming packet was over the limit).
    LinkDown { oversized: bool },
    /// rumqttc: our DISCONNECT went out (a clean stop).
    Disconnected,
    /// The executor: rumqttc's request channel refused the publish of `token` (from an
    /// [`Effect::Publish`] of this state).
    Refused { token: Option<Token> },
    /// The executor: [`SYNC_TIMEOUT`] passed since the [`Effect::SyncTimer`] for `nonce`.
    SyncTimeout { nonce: String },
}

/// One thing to do, in order, for the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Request a QoS 1 publish (every publish of the agent is QoS 1). `token`: the outbox's
    /// (`None` for the sync marker). The state has already queued it for pairing: a refusal
    /// must come back as [`Input::Refused`].
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
        token: Option<Token>,
    },
    /// Subscribe to these filters, QoS 1, in one SUBSCRIBE.
    Subscribe(Vec<String>),
    Unsubscribe(String),
    /// Feed [`Input::SyncTimeout`] with this nonce after [`SYNC_TIMEOUT`].
    SyncTimer {
        nonce: String,
    },
    /// Hand this to the agent.
    Down(Down),
    /// Wake whoever waits on the session's progress (a PUBACK, a change of connection).
    Progress,
    /// Drop what rumqttc would replay (un-acked publishes, queued requests, a held
    /// collision): the outbox sends the current truth instead.
    DiscardReplay,
    /// Whether the next CONNECT asks for a clean session.
    CleanSession(bool),
}

/// What a session is, beyond its broker: where its topics are and what it may send.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The node's topic prefix, `P`.
    pub prefix: String,
    /// The node's name (in the lease).
    pub node: String,
    /// The largest packet sent (`mqtt.maxPacketSize`).
    pub max_packet: usize,
    pub lease_period: Duration,
    /// Events kept while they cannot be sent (`mqtt.eventBuffer`).
    pub event_buffer: usize,
    /// Messages in flight at once.
    pub max_inflight: usize,
    /// Start with the held sweep (the agent adopts its pods first).
    pub hold_sweep: bool,
}

/// The sweep after a subscription, until the marker comes back.
#[derive(Debug)]
struct Sync {
    nonce: String,
    desired: BTreeSet<String>,
    pods: BTreeSet<String>,
}

/// The session's protocol state; see the module comment.
pub struct SessionState {
    settings: Settings,
    outbox: Outbox,
    connected: bool,
    /// Publish requests handed to rumqttc, awaiting their `Outgoing::Publish(pkid)`;
    /// `None` for those the outbox does not track (the marker).
    requested: VecDeque<Option<Token>>,
    /// The request rumqttc holds back on a packet-id collision.
    collided: Option<Option<Token>>,
    /// Awaiting their PUBACK. At most `max_inflight` + 1 (the marker) entries: rumqttc
    /// reuses an id only once it is acknowledged or the link is gone.
    pkids: HashMap<u16, Token>,
    sync: Option<Sync>,
    /// `Some` while the agent is still adopting its pods: stale pod topics found by a sync
    /// wait here instead of being cleared.
    held: Option<BTreeSet<String>>,
    /// The next CONNECT is a clean start (after an oversized incoming message).
    clean_next: bool,
    /// The lease is not being renewed (the agent's loop is stuck).
    stalled: bool,
}

impl SessionState {
    pub fn new(settings: Settings, dropped_event: DroppedEvent) -> SessionState {
        let outbox = Outbox::new(settings.event_buffer, settings.max_inflight, dropped_event);
        SessionState {
            held: settings.hold_sweep.then(BTreeSet::new),
            settings,
            outbox,
            connected: false,
            requested: VecDeque::new(),
            collided: None,
            pkids: HashMap::new(),
            sync: None,
            clean_next: false,
            stalled: false,
        }
    }

    /// Takes one input; returns what to do, in order.
    pub fn step(&mut self, input: Input) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::SetRetained {
                suffix,
                payload,
                again,
            } => {
                self.set_retained(&suffix, payload, again);
                self.pump(&mut fx);
            }
            Input::Event(p) => {
                if self.fits(topics::EVENTS, p.len()) {
                    self.outbox.event(p);
                } else {
                    tracing::error!(
                        bytes = p.len(),
                        "event larger than mqtt.maxPacketSize: not published"
                    );
                }
                self.pump(&mut fx);
            }
            Input::PodsReady => {
                if let Some(seen) = self.held.take() {
                    let n = self.sweep(&seen);
                    tracing::info!(stale_pods_cleared = n, "pods ready: held sweep done");
                    self.pump(&mut fx);
                }
            }
            Input::LeaseTick {
                since_alive,
                now_ns,
            } => self.lease(since_alive, now_ns, &mut fx),
            Input::ConnAck { nonce } => self.connack(nonce, &mut fx),
            Input::PublishSent { pkid } => {
                let req = match self.collided.take() {
                    Some(r) => Some(r),
                    None => self.requested.pop_front(),
                };
                if let Some(Some(token)) = req {
                    self.pkids.insert(pkid, token);
                }
            }
            Input::PublishHeld { .. } => {
                // rumqttc holds this request and emits its Publish after the PUBACK of the
                // id it collided with; the requests behind it pair up meanwhile.
                self.collided = self.requested.pop_front();
            }
            Input::PubAck { pkid } => {
                if let Some(token) = self.pkids.remove(&pkid) {
                    self.outbox.ack(token);
                    self.pump(&mut fx);
                    fx.push(Effect::Progress);
                }
            }
            Input::Message { topic, payload } => {
                self.incoming(&topic, payload, &mut fx);
                self.pump(&mut fx);
            }
            Input::LinkDown { oversized } => {
                self.connected = false;
                self.outbox.disconnected();
                self.requested.clear();
                self.collided = None;
                self.pkids.clear();
                self.sync = None;
                fx.push(Effect::DiscardReplay);
                if oversized {
                    // The broker redelivers an un-acked QoS 1 message on every resumed
                    // session: start the next one clean so it is discarded. Desired pods are
                    // retained and come back on the subscription (and the sync sweep catches
                    // deletions), so nothing the agent needs is lost.
                    self.clean_next = true;
                    fx.push(Effect::CleanSession(true));
                }
                fx.push(Effect::Progress);
            }
            Input::Disconnected => {
                self.connected = false;
                fx.push(Effect::Progress);
            }
            Input::Refused { token } => {
                // It never reached rumqttc, so no `Outgoing::Publish` will pair with it. An
                // outbox message stays in flight there until the next reconnect sends it again.
                if let Some(i) = self.requested.iter().position(|r| *r == token) {
                    self.requested.remove(i);
                }
                if token.is_none() {
                    self.sync = None;
                }
            }
            Input::SyncTimeout { nonce } => {
                if self.sync.as_ref().is_some_and(|s| s.nonce == nonce) {
                    self.sync = None;
                    tracing::warn!(
                        timeout_secs = SYNC_TIMEOUT.as_secs(),
                        "MQTT sync marker did not come back: skipping the sweep of remote pods and stale topics"
                    );
                    if self.connected {
                        self.unsubscribe_sync(&mut fx);
                    }
                }
            }
        }
        fx
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Whether everything set so far has been acknowledged by the broker.
    pub fn idle(&self) -> bool {
        self.connected && self.outbox.idle()
    }

    /// Whether the next CONNECT must be a clean start (for a client made afresh).
    pub fn clean_start(&self) -> bool {
        self.clean_next
    }

    /// Whether the broker acknowledged `payload` as the object's current value.
    pub fn delivered(&self, suffix: &str, payload: &[u8]) -> bool {
        self.outbox.delivered(suffix, payload)
    }

    fn topic(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.settings.prefix)
    }

    fn fits(&self, suffix: &str, len: usize) -> bool {
        // Fixed header (<= 5), topic length (2), packet id (2).
        self.settings.prefix.len() + suffix.len() + len + 9 <= self.settings.max_packet
    }

    fn set_retained(&mut self, suffix: &str, payload: Option<Vec<u8>>, again: bool) {
        let len = payload.as_ref().map_or(0, Vec::len);
        if !self.fits(suffix, len) {
            tracing::error!(
                topic = %self.topic(suffix),
                bytes = len,
                max_packet_size = self.settings.max_packet,
                "status payload larger than mqtt.maxPacketSize: not published"
            );
            return;
        }
        if again {
            self.outbox.set_retained_again(suffix, payload);
        } else {
            self.outbox.set_retained(suffix, payload);
        }
    }

    /// Publish from the outbox while connected and under the in-flight cap.
    fn pump(&mut self, fx: &mut Vec<Effect>) {
        if !self.connected {
            return;
        }
        while let Some(m) = self.outbox.next_message() {
            self.requested.push_back(Some(m.token));
            fx.push(Effect::Publish {
                topic: self.topic(&m.suffix),
                payload: m.payload,
                retain: m.retain,
                token: Some(m.token),
            });
        }
    }

    fn lease(&mut self, since_alive: Duration, now_ns: i64, fx: &mut Vec<Effect>) {
        let period = self.settings.lease_period;
        if since_alive <= period * 2 {
            if self.stalled {
                tracing::info!("agent loop alive again: lease renewal resumes");
                self.stalled = false;
            }
            let p = payload::lease(&self.settings.node, period, now_ns);
            self.set_retained(topics::LEASE, Some(p), false);
            self.pump(fx);
        } else if !self.stalled {
            self.stalled = true;
            tracing::warn!(
                since_secs = since_alive.as_secs(),
                "agent loop not alive: lease no longer renewed"
            );
        }
    }

    fn connack(&mut self, nonce: String, fx: &mut Vec<Effect>) {
        self.connected = true;
        self.requested.clear();
        self.pkids.clear();
        self.collided = None;
        self.outbox.connected();
        if std::mem::take(&mut self.clean_next) {
            // A clean start (after an oversized message) is needed once only.
            fx.push(Effect::CleanSession(false));
        }
        let p = &self.settings.prefix;
        fx.push(Effect::Subscribe(vec![
            format!("{p}{}+/+", topics::DESIRED_PODS),
            format!("{p}{}+/+", topics::PODS),
            format!("{p}{}", topics::SYNC),
        ]));
        self.requested.push_back(None);
        fx.push(Effect::Publish {
            topic: self.topic(topics::SYNC),
            payload: nonce.clone().into_bytes(),
            retain: false,
            token: None,
        });
        self.sync = Some(Sync {
            nonce: nonce.clone(),
            desired: BTreeSet::new(),
            pods: BTreeSet::new(),
        });
        fx.push(Effect::SyncTimer { nonce });
        self.pump(fx);
        fx.push(Effect::Progress);
    }

    fn incoming(&mut self, topic: &str, body: Vec<u8>, fx: &mut Vec<Effect>) {
        let p = self.settings.prefix.as_str();
        if let Some((ns, name)) = topics::key_of(p, topics::DESIRED_PODS, topic) {
            let key = format!("{ns}/{name}");
            if let Some(s) = self.sync.as_mut() {
                if body.is_empty() {
                    s.desired.remove(&key);
                } else {
                    s.desired.insert(key);
                }
            }
            fx.push(Effect::Down(Down::Desired {
                namespace: ns.to_string(),
                name: name.to_string(),
                payload: body,
            }));
        } else if let Some((ns, name)) = topics::key_of(p, topics::PODS, topic) {
            if let Some(s) = self.sync.as_mut() {
                let key = format!("{ns}/{name}");
                if body.is_empty() {
                    s.pods.remove(&key);
                } else {
                    s.pods.insert(key);
                }
            }
        } else if topic.strip_prefix(p) == Some(topics::SYNC) {
            let ours = self
                .sync
                .as_ref()
                .is_some_and(|s| s.nonce.as_bytes() == body);
            if !ours {
                return;
            }
            let Some(s) = self.sync.take() else { return };
            let cleared = match self.held.as_mut() {
                Some(held) => {
                    held.extend(s.pods.iter().cloned());
                    0
                }
                None => self.sweep(&s.pods),
            };
            tracing::info!(
                desired = s.desired.len(),
                stale_pods_cleared = cleared,
                sweep_held = self.held.is_some(),
                "MQTT subscriptions synced"
            );
            self.unsubscribe_sync(fx);
            fx.push(Effect::Down(Down::Synced { present: s.desired }));
        }
    }

    /// Clears the retained pod topics among `seen` that the outbox does not hold as live pods.
    fn sweep(&mut self, seen: &BTreeSet<String>) -> usize {
        let mut cleared = 0;
        for key in seen {
            let suffix = format!("{}{key}", topics::PODS);
            if self.outbox.live(&suffix).is_none() {
                tracing::info!(pod = %key, "clearing a stale retained pod topic");
                self.outbox.set_retained(&suffix, None);
                cleared += 1;
            }
        }
        cleared
    }

    fn unsubscribe_sync(&self, fx: &mut Vec<Effect>) {
        fx.push(Effect::Unsubscribe(format!(
            "{}{}+/+",
            self.settings.prefix,
            topics::PODS
        )));
        fx.push(Effect::Unsubscribe(self.topic(topics::SYNC)));
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
