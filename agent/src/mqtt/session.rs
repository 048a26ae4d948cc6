//! The agent's MQTT connection: the thin loop around the pure [`SessionState`]
//! (`state.rs`). One task drives rumqttc's event loop (never cancelled mid-poll, so no packet
//! is half-written), reconnecting with [`super::backoff`] after any error; every rumqttc event
//! and every call of the agent's [`Link`] becomes one [`Input`], and the [`Effect`]s it
//! returns are executed here with rumqttc's client, under the state's lock, so publish
//! requests reach rumqttc in the order the state queued them for packet-id pairing.
//!
//! What the protocol does (the sync and held sweeps, collisions, the outbox) is described in
//! `state.rs` and docs/mqtt.md; this file holds the I/O only: the client, the event loop, the
//! timers (sync timeout, lease), the nonce, the back-off and the operator's error messages.
//! Timers use monotonic time only.
//!
//! Both long-lived tasks, the connection loop and the lease timer, are supervised
//! (`crate::supervise`): a panic is reported and the task started again, never left as an
//! agent that looks healthy with MQTT dead. The [`SessionState`] (and its outbox, the latest
//! payload of every retained object and the bounded event ring) lives in [`Inner`], not in the
//! loop, so it survives a restart: the panicked loop's event loop and connection are gone, the
//! state is told the link went down (as on any connection loss), and the restarted loop
//! connects with a new client; its CONNACK republishes every retained object once, at its
//! latest value, and the events not yet acknowledged, while the subscription brings the
//! retained desired pods down again and the sync sweeps as after any reconnect.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    StateError,
};
use tokio::sync::mpsc;

use super::backoff::{Backoff, Policy, XorShift};
use super::state::{Effect, Input, SessionState, Settings};
use super::tls::TlsError;
use super::{payload, topics, MqttConfig};
use crate::supervise::{self, Kind, Supervisor};

pub use super::state::{Down, SYNC_TIMEOUT};

/// Messages in flight at once (a burst never floods rumqttc's request channel).
pub const MAX_INFLIGHT: usize = 32;
/// Capacity of the channel of [`Down`] messages.
pub const DOWN_CAPACITY: usize = 64;
/// Incoming packets are accepted up to this many times `maxPacketSize` (capped at MQTT's
/// 256 MiB); beyond it rumqttc fails the connection and the session reconnects with back-off.
pub const INCOMING_FACTOR: usize = 4;
/// rumqttc's request channel: the in-flight publishes plus subscriptions and the marker.
const REQUEST_CAPACITY: usize = MAX_INFLIGHT * 2 + 16;

struct Inner {
    /// The client of the current loop's event loop; a restarted loop brings its own.
    client: Mutex<AsyncClient>,
    state: Mutex<SessionState>,
    /// `mqtt.maxPacketSize` (for the operator's messages).
    max_packet: usize,
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
    /// Feeds `input` to the state and executes its effects under the state's lock. Returns
    /// what goes down to the agent (sent by the caller, outside the lock). `eventloop` is the
    /// run loop's, for the effects on it; only its inputs (link down, CONNACK) produce those.
    fn step(self: &Arc<Self>, input: Input, eventloop: Option<&mut EventLoop>) -> Vec<Down> {
        let mut st = lock(&self.state);
        let effects = st.step(input);
        self.execute(&mut st, effects, eventloop)
    }

    fn execute(
        self: &Arc<Self>,
        st: &mut SessionState,
        effects: Vec<Effect>,
        mut eventloop: Option<&mut EventLoop>,
    ) -> Vec<Down> {
        let client = lock(&self.client).clone();
        let mut downs = Vec::new();
        for e in effects {
            match e {
                Effect::Publish {
                    topic,
                    payload,
                    retain,
                    token,
                } => {
                    if let Err(e) =
                        client.try_publish(topic.clone(), QoS::AtLeastOnce, retain, payload)
                    {
                        // Cannot happen with the channel sized above the in-flight cap; an
                        // object stays in flight and is sent again after the next reconnect.
                        tracing::error!(topic = %topic, error = %e, "MQTT request channel refused a publish");
                        st.step(Input::Refused { token });
                    }
                }
                Effect::Subscribe(filters) => {
                    let filters = filters
                        .into_iter()
                        .map(|t| rumqttc::SubscribeFilter::new(t, QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        tracing::error!(error = %e, "MQTT subscribe request refused");
                    }
                }
                Effect::Unsubscribe(t) => {
                    if let Err(e) = client.try_unsubscribe(t) {
                        tracing::error!(error = %e, "MQTT unsubscribe request refused");
                    }
                }
                Effect::SyncTimer { nonce } => {
                    let weak = Arc::downgrade(self);
                    tokio::spawn(async move {
                        tokio::time::sleep(SYNC_TIMEOUT).await;
                        if let Some(inner) = weak.upgrade() {
                            inner.step(Input::SyncTimeout { nonce }, None);
                        }
                    });
                }
                Effect::Down(d) => downs.push(d),
                Effect::Progress => self.progress.send_modify(|n| *n += 1),
                Effect::DiscardReplay => {
                    if let Some(el) = eventloop.as_deref_mut() {
                        // rumqttc keeps un-acked publishes (and requests still in its
                        // channel) to replay them: the outbox sends the current truth instead.
                        el.clean();
                        el.pending.clear();
                        el.state.collision = None;
                        el.state.events.clear();
                    }
                }
                Effect::CleanSession(clean) => {
                    if let Some(el) = eventloop.as_deref_mut() {
                        el.mqtt_options.set_clean_session(clean);
                    }
                }
            }
        }
        downs
    }

    /// A new client and event loop for a restarted loop: the panicked one took its event
    /// loop, and the connection, with it. The link is already down in the state (see
    /// [`supervised_run`]); a clean start still owed (after an oversized message) is kept.
    fn renew(&self, base: &MqttOptions) -> EventLoop {
        let mut opts = base.clone();
        if lock(&self.state).clean_start() {
            opts.set_clean_session(true);
        }
        let (client, eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
        *lock(&self.client) = client;
        eventloop
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
        let input = Input::SetRetained {
            suffix: suffix.to_string(),
            payload,
            again,
        };
        self.inner.step(input, None);
    }

    /// One event for `P events` (kept in the bounded ring while offline).
    pub fn event(&self, payload: Vec<u8>) {
        self.inner.step(Input::Event(payload), None);
    }

    /// The agent's main loop calls this on every iteration; the lease is renewed only
    /// while it keeps being called (a stuck agent with a live TCP connection stops renewing).
    pub fn alive(&self) {
        let ms = self.inner.epoch.elapsed().as_millis() as u64;
        self.inner.alive_ms.store(ms, Ordering::Relaxed);
    }

    pub fn connected(&self) -> bool {
        lock(&self.inner.state).connected()
    }

    /// Whether everything set so far has been acknowledged by the broker.
    pub fn idle(&self) -> bool {
        lock(&self.inner.state).idle()
    }

    /// Every pod the agent runs has been handed to the link: clear the stale pod topics the
    /// syncs found meanwhile (those still without a live pod).
    pub fn pods_ready(&self) {
        self.inner.step(Input::PodsReady, None);
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
                if !st.connected() || st.delivered(topics::ONLINE, &offline) {
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
        let client = lock(&inner.client).clone();
        if self.connected() && client.try_disconnect().is_ok() {
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
    /// Supervises the connection loop and the lease timer (the agent's, so that a panic
    /// becomes a node event and counts against its restart limit). `None`: a supervisor of
    /// the session's own, which logs panics, restarts with the default policy and, past its
    /// limit, leaves the session down.
    pub supervisor: Option<Supervisor>,
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
        supervisor,
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
    let (client, eventloop) = AsyncClient::new(opts.clone(), REQUEST_CAPACITY);
    let node = node_name.to_string();
    let dropped_node = node.clone();
    let settings = Settings {
        prefix: cfg.topic_prefix.clone(),
        node,
        max_packet: cfg.max_packet_size,
        lease_period: cfg.lease_period,
        event_buffer: cfg.event_buffer,
        max_inflight: MAX_INFLIGHT,
        hold_sweep,
    };
    let state = SessionState::new(
        settings,
        Box::new(move |n| payload::events_dropped(&dropped_node, n, crate::clock::now_ns())),
    );
    let inner = Arc::new(Inner {
        client: Mutex::new(client),
        state: Mutex::new(state),
        max_packet: cfg.max_packet_size,
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
    let sup = supervisor.unwrap_or_else(|| {
        let quiet: supervise::Hook = Arc::new(|_: &supervise::Incident| {});
        Supervisor::new(supervise::policy::DEFAULT, quiet.clone(), quiet)
    });
    let mut first = Some(eventloop);
    let (run_inner, broker) = (inner.clone(), cfg.broker.clone());
    let task = supervise::task(&sup, Kind::Session, "", move || {
        let eventloop = first.take().unwrap_or_else(|| run_inner.renew(&opts));
        supervised_run(
            run_inner.clone(),
            eventloop,
            tx.clone(),
            broker.clone(),
            backoff,
        )
    });
    *lock(&inner.task) = Some(task);
    let (lease_link, period) = (link.clone(), cfg.lease_period);
    supervise::task(&sup, Kind::SessionLease, "", move || {
        lease(lease_link.clone(), period)
    });
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

/// Feeds a lease tick to the state every `period` (the state renews the lease only while
/// the agent's loop is alive).
async fn lease(link: Link, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        supervise::inject::fire("session-lease", "");
        let inner = &link.inner;
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = inner.epoch.elapsed();
        let last = Duration::from_millis(inner.alive_ms.load(Ordering::Relaxed));
        let input = Input::LeaseTick {
            since_alive: now.saturating_sub(last),
            now_ns: crate::clock::now_ns(),
        };
        inner.step(input, None);
    }
}

/// This connection's sync marker: unique across connections and agent restarts.
fn nonce(inner: &Inner) -> String {
    let n = inner.nonces.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}-{}-{n}",
        std::process::id(),
        inner.epoch.elapsed().as_nanos()
    )
}

/// [`run`], and after its panic the link marked down before the panic goes on to the
/// supervisor: until the restart nothing is published on the dead client, `connected()` is
/// false, and the next CONNACK sends the outbox's whole truth again.
async fn supervised_run(
    inner: Arc<Inner>,
    eventloop: EventLoop,
    tx: mpsc::Sender<Down>,
    broker: super::BrokerUrl,
    policy: Policy,
) {
    let ran = supervise::catch(run(inner.clone(), eventloop, tx, broker, policy)).await;
    if let Err(panic) = ran {
        inner.step(Input::LinkDown { oversized: false }, None);
        std::panic::resume_unwind(panic);
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
        let input = match ev {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                backoff.connected(inner.epoch.elapsed());
                if !last_reason.is_empty() || backoff.failures() == 0 {
                    tracing::info!(broker = %broker, "MQTT connected");
                }
                last_reason.clear();
                Input::ConnAck {
                    nonce: nonce(&inner),
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                inner.step(Input::Disconnected, None);
                return;
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Input::PublishSent { pkid },
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => Input::PublishHeld { pkid },
            Ok(Event::Incoming(Incoming::PubAck(ack))) => Input::PubAck { pkid: ack.pkid },
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                // Here the message is lost with the panic: the restart must bring it back.
                supervise::inject::fire("session", "");
                Input::Message {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                }
            }
            Ok(_) => continue,
            Err(e) => {
                let oversized = too_large(&e);
                inner.step(Input::LinkDown { oversized }, Some(&mut eventloop));
                if inner.stopping.load(Ordering::SeqCst) {
                    return;
                }
                if oversized {
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
        };
        for d in inner.step(input, Some(&mut eventloop)) {
            // Back-pressure: the agent consumes these promptly; the broker holds the rest.
            if tx.send(d).await.is_err() {
                break;
            }
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
