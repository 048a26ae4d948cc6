//! Pods as tidelet tracks them: restart back-off, events, and the Kubernetes status computed
//! from container states. The per-pod worker (`agent::worker`) drives these.

pub mod backoff;
pub mod events;
pub mod layout;
pub mod lifecycle;
pub mod status;
pub mod view;
