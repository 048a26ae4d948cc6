//! What the lower layers that publish the agent's state read from it: the MQTT reporter's
//! [`StatusSource`] and the local API's [`api::server::Source`]. Those traits are owned by
//! `mqtt/` and `api/`; implementing them here keeps every dependency pointing down (the
//! layering rule in docs/architecture.md).

use k8s_openapi::api::core::v1::Node;

use super::Ctx;
use crate::api;
use crate::devices::manager::{HeldView, ResourceView};
use crate::mqtt::reporter::StatusSource;
use crate::pod::events::Events;
use crate::pod::view::Shared;

impl StatusSource for Ctx {
    fn node_name(&self) -> String {
        self.node.name.clone()
    }
    fn node_object(&self) -> Node {
        Ctx::node_object(self)
    }
    fn shared(&self) -> &Shared {
        &self.shared
    }
    fn node_events(&self) -> Events {
        Ctx::node_events(self)
    }
}

impl api::server::Source for Ctx {
    /// The configured name (`get pod NAME` finds `NAME-<node>`, as the static pod is named).
    fn node_name(&self) -> &str {
        &self.cfg.node_name
    }
    fn shared(&self) -> &Shared {
        &self.shared
    }
    fn node_object(&self) -> Node {
        Ctx::node_object(self)
    }
    fn node_events(&self) -> Events {
        Ctx::node_events(self)
    }
    fn devices(&self) -> Vec<ResourceView> {
        self.devices.views()
    }
    fn held_by(&self, pod_uid: &str) -> Vec<HeldView> {
        self.devices.held_by(pod_uid)
    }
}
