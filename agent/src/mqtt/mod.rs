//! Sync with a remote control plane over MQTT (3.1.1, through `rumqttc`): the node's and its
//! pods' status up as retained Kubernetes objects, events and a lease beside them, desired pods
//! down, and everything kept working while the link is down.
//!
//! `config` and `tls` are shared by the agent's session and by `tidelet fleet` (the
//! operator's side); `topics` is the topic tree both sides agree on (docs/mqtt.md).
//! The agent's side: `state` (the session's protocol state, pure: inputs in, effects out),
//! `session` (the thin loop executing those effects with rumqttc, and the `Link` the agent
//! holds), `outbox` (what is still to be sent, bounded and coalesced), `backoff` (reconnect
//! delays), `payload` (the Kubernetes-shaped JSON) and `reporter` (the agent's state ->
//! the link, on every change).

pub mod backoff;
pub mod config;
pub mod outbox;
pub mod payload;
pub mod reporter;
pub mod session;
pub mod state;
pub mod tls;
pub mod topics;

pub use config::{BrokerUrl, MqttConfig};
