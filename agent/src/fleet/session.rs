//! The operator's MQTT session: a clean session (nothing is kept on the broker for a CLI that
//! comes and goes), connected within a deadline, with the few blocking steps the commands
//! need: subscribe and collect the retained messages up to a sync marker, publish and wait for
//! the broker's acknowledgement, and wait for messages until a deadline.
//!
//! The sync marker: after the SUBACK, the broker sends the retained messages of the new
//! subscriptions; a nonce published to our own topic (outside the fleet root, so no agent sees
//! it, and not a `$` topic, which brokers keep for themselves) comes back after them, because
//! a broker delivers one client's messages in order.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, ConnectReturnCode, Connection, ConnectionError, Event, MqttOptions, Packet, QoS,
    RecvTimeoutError, SubscribeReasonCode,
};

use super::view::Msg;
use super::FleetError;

/// Largest packet accepted from the broker: far above any Pod status or Node.
pub const MAX_INCOMING: usize = 16 << 20;

pub struct Session {
    client: Client,
    conn: Connection,
    url: String,
    sync_topic: String,
    nonce: u64,
    /// Messages that arrived while waiting for an acknowledgement, handed out first.
    pending: VecDeque<Msg>,
}

/// Why a connection attempt failed, and whether trying again before the deadline can help
/// (a broker starting up refuses connections; a bad certificate or password stays bad).
pub fn classify(e: &ConnectionError) -> (String, bool) {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword => "bad user name or password",
                ConnectReturnCode::NotAuthorized => "not authorised",
                ConnectReturnCode::BadClientId => "client id rejected",
                ConnectReturnCode::RefusedProtocolVersion => "MQTT 3.1.1 not supported",
                ConnectReturnCode::ServiceUnavailable => "broker unavailable",
                ConnectReturnCode::Success => "refused",
            };
            (
                format!("the broker refused the connection: {why}"),
                *code == ConnectReturnCode::ServiceUnavailable,
            )
        }
        ConnectionError::Tls(t) => (format!("TLS: {t}"), false),
        ConnectionError::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => ("connection refused".into(), true),
            ErrorKind::InvalidData => (format!("TLS handshake failed: {io}"), false),
            ErrorKind::TimedOut => ("no answer (timed out)".into(), true),
            ErrorKind::ConnectionReset
            | ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionAborted => (
                format!(
                    "the broker closed the connection ({io}): a TLS or authentication problem?"
                ),
                true,
            ),
            _ => (io.to_string(), true),
        },
        ConnectionError::NetworkTimeout => ("no answer (network timeout)".into(), true),
        other => {
            // A TLS alert after the handshake (TLS 1.3 sends the server's verdict on our
            // certificate then) surfaces as a read error of the MQTT state.
            let text = other.to_string();
            match text.find("received fatal alert") {
                Some(i) => (
                    format!(
                        "TLS: the broker ended the session ({}): it wants a client certificate it trusts (--cert/--key)",
                        &text[i..]
                    ),
                    false,
                ),
                None => (text, true),
            }
        }
    }
}

/// The message a PUBLISH from the broker carries.
fn msg(p: rumqttc::Publish) -> Msg {
    Msg {
        topic: p.topic,
        payload: p.payload.to_vec(),
        retained: p.retain,
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

impl Session {
    /// Connect within `timeout`, retrying what may pass (refused while a broker starts) and
    /// failing at once on what will not (TLS, credentials).
    pub fn connect(
        options: MqttOptions,
        url: &str,
        timeout: Duration,
    ) -> Result<Session, FleetError> {
        let sync_topic = format!("tidelet-fleet/{}/sync", options.client_id());
        let (client, mut conn) = Client::new(options, 16);
        let deadline = Instant::now() + timeout;
        let fail = |reason: String| FleetError::Connect {
            url: url.to_string(),
            reason,
        };
        let mut last: Option<String> = None;
        loop {
            match conn.recv_timeout(remaining(deadline)) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    let (reason, retry) = classify(&e);
                    tracing::debug!(url, error = %e, retry, "connect attempt failed");
                    if !retry {
                        return Err(fail(reason));
                    }
                    last = Some(reason);
                    std::thread::sleep(remaining(deadline).min(Duration::from_millis(300)));
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(fail(format!(
                        "{} (gave up after {}s)",
                        last.unwrap_or_else(|| "no answer".into()),
                        timeout.as_secs_f32()
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "{} (gave up after {}s)",
                    last.unwrap_or_else(|| "no answer".into()),
                    timeout.as_secs_f32()
                )));
            }
        }
        let nonce = u64::from(std::process::id()) << 32
            | u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .subsec_nanos(),
            );
        Ok(Session {
            client,
            conn,
            url: url.to_string(),
            sync_topic,
            nonce,
            pending: VecDeque::new(),
        })
    }

    fn lost(&self, reason: impl std::fmt::Display) -> FleetError {
        FleetError::Session {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// The next message before `deadline`; `None` at the deadline. Acknowledgements and
    /// pings are consumed here.
    pub fn next(&mut self, deadline: Instant) -> Result<Option<Msg>, FleetError> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(Some(m));
        }
        loop {
            let left = remaining(deadline);
            if left.is_zero() {
                return Ok(None);
            }
            match self.conn.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => return Ok(Some(msg(p))),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.lost(format!("connection lost: {e}"))),
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Err(self.lost("client closed")),
            }
        }
    }

    /// Subscribe (QoS 1) to `filters` and wait for the SUBACK; a refused filter (an ACL) is
    /// an error naming it.
    pub fn subscribe(&mut self, filters: &[String], deadline: Instant) -> Result<(), FleetError> {
        let subs: Vec<_> = filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
            .collect();
        self.client
            .subscribe_many(subs)
            .map_err(|e| self.lost(format!("cannot subscribe: {e}")))?;
        let ack = self.await_ack(deadline, "no SUBACK from the broker in time", |p| match p {
            Packet::SubAck(ack) => Some(ack),
            _ => None,
        })?;
        for (f, code) in filters.iter().zip(&ack.return_codes) {
            if *code == SubscribeReasonCode::Failure {
                return Err(self.lost(format!(
                    "the broker refused the subscription to {f} (an ACL?)"
                )));
            }
        }
        Ok(())
    }

    /// Subscribe to `filters` and return every retained message they hold, stopping at the
    /// sync marker.
    pub fn snapshot(
        &mut self,
        filters: &[String],
        deadline: Instant,
    ) -> Result<Vec<Msg>, FleetError> {
        let mut all = filters.to_vec();
        all.push(self.sync_topic.clone());
        self.subscribe(&all, deadline)?;
        let nonce = self.nonce.to_string();
        self.client
            .publish(
                self.sync_topic.clone(),
                QoS::AtLeastOnce,
                false,
                nonce.clone(),
            )
            .map_err(|e| self.lost(format!("cannot publish the sync marker: {e}")))?;
        let mut msgs = Vec::new();
        while let Some(m) = self.next(deadline)? {
            if m.topic == self.sync_topic {
                if m.payload == nonce.as_bytes() {
                    return Ok(msgs);
                }
                continue;
            }
            msgs.push(m);
        }
        Err(self.lost(format!(
            "the sync marker on {} did not come back in time (an ACL denying it?)",
            self.sync_topic
        )))
    }

    /// Publish and wait until the broker has it (PUBACK, QoS 1).
    pub fn publish_acked(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
        deadline: Instant,
    ) -> Result<(), FleetError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .map_err(|e| self.lost(format!("cannot publish to {topic}: {e}")))?;
        let late = format!("no PUBACK for {topic} in time");
        self.await_ack(deadline, &late, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
    }

    /// Wait for the acknowledgement `ack` picks out of the incoming packets; the messages
    /// that come meanwhile are kept for [`next`](Self::next) and [`wait`](Self::wait), so none
    /// is lost. `late` is the error at `deadline`.
    fn await_ack<T>(
        &mut self,
        deadline: Instant,
        late: &str,
        mut ack: impl FnMut(Packet) -> Option<T>,
    ) -> Result<T, FleetError> {
        loop {
            if remaining(deadline).is_zero() {
                return Err(self.lost(late));
            }
            match self.conn.recv_timeout(remaining(deadline)) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => self.pending.push_back(msg(p)),
                Ok(Ok(Event::Incoming(packet))) => {
                    if let Some(v) = ack(packet) {
                        return Ok(v);
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.lost(format!("connection lost: {e}"))),
                Err(_) => return Err(self.lost(late)),
            }
        }
    }

    /// Block for the next event, for `watch`: `Ok(Some(msg))`, `Ok(None)` for any other
    /// event, a reconnection (`ConnAck`) reported as `Err(None)` so the caller resubscribes.
    pub fn wait(&mut self) -> WaitResult {
        if let Some(m) = self.pending.pop_front() {
            return WaitResult::Msg(m);
        }
        match self.conn.recv() {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => WaitResult::Msg(msg(p)),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => WaitResult::Reconnected,
            Ok(Ok(_)) => WaitResult::Other,
            Ok(Err(e)) => WaitResult::Lost(classify(&e).0),
            Err(_) => WaitResult::Closed,
        }
    }

    /// Subscribe again after a reconnection (a clean session forgets subscriptions), without
    /// waiting: `wait` sees the SUBACK and the retained messages.
    pub fn resubscribe(&mut self, filters: &[String]) -> Result<(), FleetError> {
        let subs: Vec<_> = filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
            .collect();
        self.client
            .try_subscribe_many(subs)
            .map_err(|e| self.lost(format!("cannot subscribe: {e}")))
    }

    /// Say goodbye (DISCONNECT), so the broker drops the session at once.
    pub fn close(mut self) {
        if self.client.disconnect().is_ok() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while let Ok(Ok(ev)) = self.conn.recv_timeout(remaining(deadline)) {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        }
    }
}

pub enum WaitResult {
    Msg(Msg),
    Reconnected,
    Other,
    Lost(String),
    Closed,
}
