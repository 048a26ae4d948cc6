//! The agent's MQTT connection: one task drives rumqttc's event loop (never cancelled
//! mid-poll, so no packet is half-written), reconnecting with [`super::backoff`] after any
//! error; the [`Link`] the agent holds feeds the [`Outbox`] and publishes straight from it
//! while connected, under one lock, so publish requests and the event loop's
//! `Outgoing::Publish(pkid)` notifications pair up in order and every PUBACK finds its
//! object.
//!
//! On each CONNACK: `online` is set, the node subscribes to its desired pods, its own pod
//! topics and `sync`, and publishes a nonce to `sync`. Retained messages come before the
//! nonce; when it arrives the desired keys go down as [`Down::Synced`], retained pod topics
//! the agent does not hold are cleared (a pod deleted while offline leaves nothing stale),
//! and the pod and sync topics are unsubscribed so the agent's own updates are not echoed.
//! rumqttc's replay of un-acked publishes is discarded after each error: the outbox sends
//! the current truth instead. Timers use monotonic time only.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, Outgoing, QoS, StateError,
};
use tokio::sync::mpsc;

use super::backoff::{Backoff, Policy, XorShift};
use super::outbox::{Outbox, Token};
use super::tls::TlsError;
use super::{payload, topics, MqttConfig};

/// Messages in flight at once (a burst never floods rumqttc's request channel).
pub const MAX_INFLIGHT: usize = 32;
/// Capacity of the channel of [`Down`] messages.
pub const DOWN_CAPACITY: usize = 64;
/// How long the sync marker may take before the sweep is skipped.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Incoming packets are accepted up to this many times `maxPacketSize` (capped at MQTT's
/// 256 MiB); beyond it rumqttc fails the connection and the session reconnects with back-off.
pub const INCOMING_FACTOR: usize = 4;
/// rumqttc's request channel: the in-flight publishes plus subscriptions and the marker.
const REQUEST_CAPACITY: usize = MAX_INFLIGHT * 2 + 16;

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

/// The sweep after a subscription, until the marker comes back.
#[derive(Debug)]
struct Sync {
    nonce: String,
    desired: BTreeSet<String>,
    pods: BTreeSet<String>,
}

struct State {
    outbox: Outbox,
    connected: bool,
    /// Publish requests handed to rumqttc, awaiting their `Outgoing::Publish(pkid)`;
    /// `None` for those the outbox does not track (the marker).
    requested: VecDeque<Option<Token>>,
    /// The request rumqttc holds back on a packet-id collision.
    collided: Option<Option<Token>>,
    /// Awaiting their PUBACK.
    pkids: HashMap<u16, Token>,
    sync: Option<Sync>,
    /// `Some` while the agent is still adopting its pods: stale pod topics found by a sync
    /// wait here instead of being cleared (see [`StartOptions::hold_sweep`]).
    held: Option<BTreeSet<String>>,
}

struct Inner {
    client: AsyncClient,
    prefix: String,
    node: String,
    max_packet: usize,
    state: Mutex<State>,
    /// Monotonic milliseconds since `epoch` of the last `alive()`.
    alive_ms: AtomicU64,
    epoch: Instant,
    stopping: AtomicBool,
    /// Bumped on every PUBACK and on every change of connection (shutdown waits on it).
    progress: tokio::sync::watch::Sender<u64>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    nonces: AtomicU64,
}

/// The agent's handle on the session.
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn topic(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// Publish from the outbox while connected and under the in-flight cap.
    fn pump(&self, st: &mut State) {
        if !st.connected {
            return;
        }
        while let Some(m) = st.outbox.next_message() {
            let topic = self.topic(&m.suffix);
            match self
                .client
                .try_publish(topic.clone(), QoS::AtLeastOnce, m.retain, m.payload)
            {
                Ok(()) => st.requested.push_back(Some(m.token)),
                // Cannot happen with the channel sized above the in-flight cap; the object
                // stays in flight and is sent again after the next reconnect.
                Err(e) => {
                    tracing::error!(topic = %topic, error = %e, "MQTT request channel refused a publish");
                    break;
                }
            }
        }
    }

    fn fits(&self, suffix: &str, len: usize) -> bool {
        // Fixed header (<= 5), topic length (2), packet id (2).
        self.prefix.len() + suffix.len() + len + 9 <= self.max_packet
    }
}

impl Link {
    /// The latest payload of the retained object at `P <suffix>`; `None` clears the topic.
    /// A payload that would not fit in `maxPacketSize` is refused (logged), never sent.
    pub fn set_retained(&self, suffix: &str, payload: Option<Vec<u8>>) {
        self.retained(suffix, payload, false);
    }

    /// `set_retained`, sent again even if the broker holds the same payload already
    /// (`Outbox::set_retained_again`).
    pub fn set_retained_again(&self, suffix: &str, payload: Option<Vec<u8>>) {
        self.retained(suffix, payload, true);
    }

    fn retained(&self, suffix: &str, payload: Option<Vec<u8>>, again: bool) {
        let len = payload.as_ref().map_or(0, Vec::len);
        if !self.inner.fits(suffix, len) {
            tracing::error!(
                topic = %self.inner.topic(suffix),
                bytes = len,
                max_packet_size = self.inner.max_packet,
                "status payload larger than mqtt.maxPacketSize: not published"
            );
            return;
        }
        let mut st = lock(&self.inner.state);
        if again {
            st.outbox.set_retained_again(suffix, payload);
        } else {
            st.outbox.set_retained(suffix, payload);
        }
        self.inner.pump(&mut st);
    }

    /// One event for `P events` (kept in the bounded ring while offline).
    pub fn event(&self, payload: Vec<u8>) {
        if !self.inner.fits(topics::EVENTS, payload.len()) {
            tracing::error!(
                bytes = payload.len(),
                "event larger than mqtt.maxPacketSize: not published"
            );
            return;
        }
        let mut st = lock(&self.inner.state);
        st.outbox.event(payload);
        self.inner.pump(&mut st);
    }

    /// The agent's main loop calls this on every iteration; the lease is renewed only
    /// while it keeps being called (a stuck agent with a live TCP connection stops renewing).
    pub fn alive(&self) {
        let ms = self.inner.epoch.elapsed().as_millis() as u64;
        self.inner.alive_ms.store(ms, Ordering::Relaxed);
    }

    pub fn connected(&self) -> bool {
        lock(&self.inner.state).connected
    }

    /// Whether everything set so far has been acknowledged by the broker.
    pub fn idle(&self) -> bool {
        let st = lock(&self.inner.state);
        st.connected && st.outbox.idle()
    }

    /// Every pod the agent runs has been handed to the link: clear the stale pod topics the
    /// syncs found meanwhile (those still without a live pod).
    pub fn pods_ready(&self) {
        let mut st = lock(&self.inner.state);
        if let Some(seen) = st.held.take() {
            let n = sweep(&mut st, &seen);
            tracing::info!(stale_pods_cleared = n, "pods ready: held sweep done");
            self.inner.pump(&mut st);
        }
    }

    /// Publish online=false (retained) and disconnect, waiting at most `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        self.set_retained(topics::ONLINE, Some(payload::offline("agent stopped")));
        let mut progress = inner.progress.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let offline = payload::offline("agent stopped");
        loop {
            {
                let st = lock(&inner.state);
                if !st.connected || st.outbox.delivered(topics::ONLINE, &offline) {
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, progress.changed())
                .await
                .map_or(true, |r| r.is_err())
            {
                tracing::warn!("MQTT: online=false not acknowledged before the shutdown timeout");
                break;
            }
        }
        let task = lock(&inner.task).take();
        let Some(mut task) = task else { return };
        // Connected: a clean DISCONNECT (the broker then keeps `online=false`, not the
        // will). Not connected: nothing to say to anyone, stop retrying now.
        if self.connected() && inner.client.try_disconnect().is_ok() {
            if tokio::time::timeout_at(deadline, &mut task).await.is_ok() {
                return;
            }
            tracing::warn!("MQTT: no clean disconnect before the shutdown timeout");
        }
        task.abort();
    }
}

fn too_large(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(_)
        ))
    )
}

/// Why a connection failed, in words an operator acts on; logged once per change.
pub fn reason(e: &ConnectionError) -> String {
    use rumqttc::mqttbytes::Error as M;
    use rumqttc::ConnectReturnCode as C;
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            C::BadUserNamePassword => "broker refused: bad user name or password".into(),
            C::NotAuthorized => "broker refused: not authorized".into(),
            C::BadClientId => "broker refused: client id rejected".into(),
            C::ServiceUnavailable => "broker refused: service unavailable".into(),
            other => format!("broker refused: {other:?}"),
        },
        ConnectionError::Tls(t) => format!("TLS/certificate error: {t}"),
        ConnectionError::Io(io) => io_reason(io),
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => "network timeout".into(),
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "keep-alive expired (no PINGRESP)".into()
        }
        ConnectionError::MqttState(StateError::Io(io)) => io_reason(io),
        ConnectionError::MqttState(StateError::Deserialization(d)) => match d {
            M::Io(io) => io_reason(io),
            M::PayloadSizeLimitExceeded(n) => format!(
                "an incoming packet of {n} bytes is over the limit ({INCOMING_FACTOR} x mqtt.maxPacketSize)"
            ),
            M::OutgoingPacketTooLarge { pkt_size, max } => {
                format!("an outgoing packet of {pkt_size} bytes is over the limit of {max}")
            }
            other => format!("protocol error: {other}"),
        },
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            "connection closed by the broker".into()
        }
        other => other.to_string(),
    }
}

fn io_reason(io: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let msg = io.to_string();
    let lower = msg.to_ascii_lowercase();
    match io.kind() {
        K::ConnectionRefused => "connection refused (no broker listening)".into(),
        _ if lower.contains("close_notify") => {
            "connection closed by the broker (TLS, without close_notify)".into()
        }
        _ if lower.contains("certificate") || lower.contains("alert") || lower.contains("tls") => {
            format!("TLS/certificate error: {msg}")
        }
        K::ConnectionReset | K::UnexpectedEof | K::BrokenPipe => {
            "connection closed by the broker".into()
        }
        _ if lower.contains("lookup") || lower.contains("resolve") => format!("DNS: {msg}"),
        _ => format!("I/O: {msg}"),
    }
}

/// Spawns the session on the current tokio runtime. Errors only for bad local set-up (TLS
/// files): a broker that is down or refuses is retried forever with the back-off, logged
/// clearly once per change of reason, never fatal.
pub fn start(cfg: &MqttConfig, node_name: &str) -> Result<(Link, mpsc::Receiver<Down>), TlsError> {
    start_with(cfg, node_name, StartOptions::default())
}

/// How a session starts, beyond its config.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The reconnect back-off (default: 500 ms doubling to 60 s). A smaller cap shortens the
    /// wait after a long outage at the cost of a harder reconnection storm when a whole
    /// fleet's broker comes back.
    pub backoff: Policy,
    /// The agent's pods are not all published yet (adoption after a restart): retained pod
    /// topics found on the broker without a live pod are kept until [`Link::pods_ready`],
    /// instead of flickering away and back. Set here, before the session can connect: set
    /// later, a fast first sync could sweep them first.
    pub hold_sweep: bool,
}

/// [`start`] with [`StartOptions`].
pub fn start_with(
    cfg: &MqttConfig,
    node_name: &str,
    options: StartOptions,
) -> Result<(Link, mpsc::Receiver<Down>), TlsError> {
    let StartOptions {
        backoff,
        hold_sweep,
    } = options;
    let will = LastWill::new(
        topics_online(&cfg.topic_prefix),
        payload::offline("connection lost"),
        QoS::AtLeastOnce,
        true,
    );
    let mut opts = super::tls::mqtt_options(cfg, Some(will))?;
    opts.set_inflight(MAX_INFLIGHT as u16 + 8);
    // Desired pods up to INCOMING_FACTOR x maxPacketSize still arrive, so the remote source
    // can answer `TooLarge` instead of the connection failing on them.
    opts.set_max_packet_size(incoming_limit(cfg.max_packet_size), cfg.max_packet_size);
    let (client, eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
    let node = node_name.to_string();
    let dropped_node = node.clone();
    let outbox = Outbox::new(
        cfg.event_buffer,
        MAX_INFLIGHT,
        Box::new(move |n| payload::events_dropped(&dropped_node, n, crate::clock::now_ns())),
    );
    let inner = Arc::new(Inner {
        client,
        prefix: cfg.topic_prefix.clone(),
        node,
        max_packet: cfg.max_packet_size,
        state: Mutex::new(State {
            outbox,
            connected: false,
            requested: VecDeque::new(),
            collided: None,
            pkids: HashMap::new(),
            sync: None,
            held: hold_sweep.then(BTreeSet::new),
        }),
        alive_ms: AtomicU64::new(0),
        epoch: Instant::now(),
        stopping: AtomicBool::new(false),
        progress: tokio::sync::watch::Sender::new(0),
        task: Mutex::new(None),
        nonces: AtomicU64::new(0),
    });
    let (tx, rx) = mpsc::channel(DOWN_CAPACITY);
    let link = Link {
        inner: inner.clone(),
    };
    link.set_retained(topics::ONLINE, Some(payload::online()));
    let task = tokio::spawn(run(
        inner.clone(),
        eventloop,
        tx,
        cfg.broker.clone(),
        backoff,
    ));
    *lock(&inner.task) = Some(task);
    tokio::spawn(lease(link.clone(), cfg.lease_period));
    Ok((link, rx))
}

/// The largest incoming packet accepted for a configured `maxPacketSize`.
pub fn incoming_limit(max_packet_size: usize) -> usize {
    max_packet_size
        .saturating_mul(INCOMING_FACTOR)
        .min(256 << 20)
}

fn topics_online(prefix: &str) -> String {
    format!("{prefix}{}", topics::ONLINE)
}

/// Renews the lease every `period` while the agent's loop is alive.
async fn lease(link: Link, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled = false;
    loop {
        tick.tick().await;
        let inner = &link.inner;
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = inner.epoch.elapsed();
        let last = Duration::from_millis(inner.alive_ms.load(Ordering::Relaxed));
        if now.saturating_sub(last) <= period * 2 {
            if stalled {
                tracing::info!("agent loop alive again: lease renewal resumes");
                stalled = false;
            }
            link.set_retained(
                topics::LEASE,
                Some(payload::lease(&inner.node, period, crate::clock::now_ns())),
            );
        } else if !stalled {
            stalled = true;
            tracing::warn!(
                since_secs = now.saturating_sub(last).as_secs(),
                "agent loop not alive: lease no longer renewed"
            );
        }
    }
}

async fn run(
    inner: Arc<Inner>,
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Down>,
    broker: super::BrokerUrl,
    policy: Policy,
) {
    let mut backoff = Backoff::new(policy, XorShift::from_entropy());
    let mut last_reason = String::new();
    let broker = format!("{}:{}", broker.host, broker.port);
    loop {
        let ev = eventloop.poll().await;
        let mut downs = Vec::new();
        match ev {
            Ok(ev) => {
                if matches!(ev, Event::Incoming(Incoming::ConnAck(_))) {
                    backoff.connected(inner.epoch.elapsed());
                    // A clean start (after an oversized message) is needed once only.
                    eventloop.mqtt_options.set_clean_session(false);
                    if !last_reason.is_empty() || backoff.failures() == 0 {
                        tracing::info!(broker = %broker, "MQTT connected");
                    }
                    last_reason.clear();
                }
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    let mut st = lock(&inner.state);
                    st.connected = false;
                    inner.progress.send_modify(|n| *n += 1);
                    return;
                }
                handle(&inner, ev, &mut downs);
            }
            Err(e) => {
                {
                    let mut st = lock(&inner.state);
                    st.connected = false;
                    st.outbox.disconnected();
                    st.requested.clear();
                    st.collided = None;
                    st.pkids.clear();
                    st.sync = None;
                    // rumqttc keeps un-acked publishes (and requests still in its channel)
                    // to replay them: the outbox sends the current truth instead.
                    eventloop.clean();
                    eventloop.pending.clear();
                    eventloop.state.collision = None;
                    eventloop.state.events.clear();
                }
                inner.progress.send_modify(|n| *n += 1);
                if inner.stopping.load(Ordering::SeqCst) {
                    return;
                }
                if too_large(&e) {
                    // The broker redelivers an un-acked QoS 1 message on every resumed
                    // session: start the next one clean so it is discarded. Desired pods are
                    // retained and come back on the subscription (and the sync sweep catches
                    // deletions), so nothing the agent needs is lost.
                    eventloop.mqtt_options.set_clean_session(true);
                    tracing::warn!(
                        limit = incoming_limit(inner.max_packet),
                        "an incoming message exceeded the packet limit; the next connection \
                         starts a clean session to discard it"
                    );
                }
                let why = reason(&e);
                let delay = backoff.failed(inner.epoch.elapsed());
                if why != last_reason {
                    tracing::warn!(broker = %broker, reason = %why, retry_in_ms = delay.as_millis() as u64, "MQTT connection failed; retrying with back-off");
                    last_reason = why;
                } else {
                    tracing::debug!(broker = %broker, reason = %why, retry_in_ms = delay.as_millis() as u64, attempt = backoff.failures(), "MQTT retry");
                }
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        for d in downs {
            // Back-pressure: the agent consumes these promptly; the broker holds the rest.
            if tx.send(d).await.is_err() {
                break;
            }
        }
    }
}

fn handle(inner: &Arc<Inner>, ev: Event, downs: &mut Vec<Down>) {
    let mut st = lock(&inner.state);
    match ev {
        Event::Incoming(Incoming::ConnAck(_)) => {
            st.connected = true;
            st.requested.clear();
            st.pkids.clear();
            st.collided = None;
            st.outbox.connected();
            let n = inner.nonces.fetch_add(1, Ordering::Relaxed);
            let nonce = format!(
                "{}-{}-{n}",
                std::process::id(),
                inner.epoch.elapsed().as_nanos()
            );
            let p = &inner.prefix;
            let subs = [
                format!("{p}{}+/+", topics::DESIRED_PODS),
                format!("{p}{}+/+", topics::PODS),
                format!("{p}{}", topics::SYNC),
            ];
            let filters = subs
                .iter()
                .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
            if let Err(e) = inner.client.try_subscribe_many(filters) {
                tracing::error!(error = %e, "MQTT subscribe request refused");
            }
            match inner.client.try_publish(
                inner.topic(topics::SYNC),
                QoS::AtLeastOnce,
                false,
                nonce.clone().into_bytes(),
            ) {
                Ok(()) => {
                    st.requested.push_back(None);
                    st.sync = Some(Sync {
                        nonce: nonce.clone(),
                        desired: BTreeSet::new(),
                        pods: BTreeSet::new(),
                    });
                    let weak = Arc::downgrade(inner);
                    tokio::spawn(async move {
                        tokio::time::sleep(SYNC_TIMEOUT).await;
                        if let Some(inner) = weak.upgrade() {
                            sync_timeout(&inner, &nonce);
                        }
                    });
                }
                Err(e) => tracing::error!(error = %e, "MQTT sync marker request refused"),
            }
            inner.pump(&mut st);
            drop(st);
            inner.progress.send_modify(|n| *n += 1);
        }
        Event::Outgoing(Outgoing::Publish(pkid)) => {
            let req = match st.collided.take() {
                Some(r) => Some(r),
                None => st.requested.pop_front(),
            };
            if let Some(Some(token)) = req {
                st.pkids.insert(pkid, token);
            }
        }
        Event::Outgoing(Outgoing::AwaitAck(_)) => {
            // A packet-id collision: rumqttc holds this request and emits its Publish later.
            st.collided = st.requested.pop_front();
        }
        Event::Incoming(Incoming::PubAck(ack)) => {
            if let Some(token) = st.pkids.remove(&ack.pkid) {
                st.outbox.ack(token);
                inner.pump(&mut st);
                drop(st);
                inner.progress.send_modify(|n| *n += 1);
            }
        }
        Event::Incoming(Incoming::Publish(p)) => {
            incoming(inner, &mut st, &p.topic, &p.payload, downs);
            inner.pump(&mut st);
        }
        _ => {}
    }
}

fn incoming(inner: &Inner, st: &mut State, topic: &str, body: &[u8], downs: &mut Vec<Down>) {
    let p = &inner.prefix;
    if let Some((ns, name)) = topics::key_of(p, topics::DESIRED_PODS, topic) {
        let key = format!("{ns}/{name}");
        if let Some(s) = st.sync.as_mut() {
            if body.is_empty() {
                s.desired.remove(&key);
            } else {
                s.desired.insert(key);
            }
        }
        downs.push(Down::Desired {
            namespace: ns.to_string(),
            name: name.to_string(),
            payload: body.to_vec(),
        });
    } else if let Some((ns, name)) = topics::key_of(p, topics::PODS, topic) {
        if let Some(s) = st.sync.as_mut() {
            let key = format!("{ns}/{name}");
            if body.is_empty() {
                s.pods.remove(&key);
            } else {
                s.pods.insert(key);
            }
        }
    } else if topic.strip_prefix(p.as_str()) == Some(topics::SYNC) {
        let ours = st.sync.as_ref().is_some_and(|s| s.nonce.as_bytes() == body);
        if !ours {
            return;
        }
        let Some(s) = st.sync.take() else { return };
        let cleared = match st.held.as_mut() {
            Some(held) => {
                held.extend(s.pods.iter().cloned());
                0
            }
            None => sweep(st, &s.pods),
        };
        tracing::info!(
            desired = s.desired.len(),
            stale_pods_cleared = cleared,
            sweep_held = st.held.is_some(),
            "MQTT subscriptions synced"
        );
        unsubscribe_sync(inner);
        downs.push(Down::Synced { present: s.desired });
    }
}

/// Clears the retained pod topics among `seen` that the outbox does not hold as live pods.
fn sweep(st: &mut State, seen: &BTreeSet<String>) -> usize {
    let mut cleared = 0;
    for key in seen {
        let suffix = format!("{}{key}", topics::PODS);
        if st.outbox.live(&suffix).is_none() {
            tracing::info!(pod = %key, "clearing a stale retained pod topic");
            st.outbox.set_retained(&suffix, None);
            cleared += 1;
        }
    }
    cleared
}

fn unsubscribe_sync(inner: &Inner) {
    for t in [
        format!("{}{}+/+", inner.prefix, topics::PODS),
        inner.topic(topics::SYNC),
    ] {
        if let Err(e) = inner.client.try_unsubscribe(t) {
            tracing::error!(error = %e, "MQTT unsubscribe request refused");
        }
    }
}

fn sync_timeout(inner: &Inner, nonce: &str) {
    let mut st = lock(&inner.state);
    if st.sync.as_ref().is_some_and(|s| s.nonce == nonce) {
        st.sync = None;
        tracing::warn!(
            timeout_secs = SYNC_TIMEOUT.as_secs(),
            "MQTT sync marker did not come back: skipping the sweep of remote pods and stale topics"
        );
        if st.connected {
            unsubscribe_sync(inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::ConnectReturnCode as C;
    use std::io::{Error, ErrorKind};

    #[test]
    fn connection_errors_are_named_for_the_operator() {
        let cases: Vec<(ConnectionError, &str)> = vec![
            (
                ConnectionError::Io(Error::new(ErrorKind::ConnectionRefused, "x")),
                "connection refused (no broker listening)",
            ),
            (
                ConnectionError::ConnectionRefused(C::BadUserNamePassword),
                "broker refused: bad user name or password",
            ),
            (
                ConnectionError::ConnectionRefused(C::NotAuthorized),
                "broker refused: not authorized",
            ),
            (
                ConnectionError::Io(Error::other("failed to lookup address information")),
                "DNS: failed to lookup address information",
            ),
            (ConnectionError::NetworkTimeout, "network timeout"),
            (
                ConnectionError::MqttState(StateError::AwaitPingResp),
                "keep-alive expired (no PINGRESP)",
            ),
            (
                ConnectionError::MqttState(StateError::ConnectionAborted),
                "connection closed by the broker",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(reason(&e), want, "{e:?}");
        }
        let big = ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(1 << 30),
        ));
        assert!(too_large(&big));
        assert!(reason(&big).contains("maxPacketSize"));
        let alert =
            ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(
                Error::other("received fatal alert: CertificateRequired"),
            )));
        assert_eq!(
            reason(&alert),
            "TLS/certificate error: received fatal alert: CertificateRequired"
        );
        assert!(!too_large(&ConnectionError::NetworkTimeout));
    }

    #[test]
    fn the_incoming_limit_leaves_room_for_too_large_answers() {
        assert_eq!(incoming_limit(1 << 20), 4 << 20);
        assert_eq!(incoming_limit(256 << 20), 256 << 20);
    }
}
