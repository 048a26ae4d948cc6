//! The agent's local API: one JSON request and one JSON response per line over a unix socket
//! in the root directory (`tidelet.sock`, mode 0600: only root talks to the agent).

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::pod::view::PodView;

/// The node: its Kubernetes object (capacity, allocatable, conditions) and its events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub node: k8s_openapi::api::core::v1::Node,
    pub events: crate::pod::events::Events,
    /// Extended resources from device plugins, with their devices and holders.
    #[serde(default)]
    pub devices: Vec<crate::devices::manager::ResourceView>,
}

/// Longest request or response line accepted.
pub const MAX_LINE: usize = 16 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    ListPods,
    /// `name` is the pod's name (`<name>-<node>`) or its manifest name (`<name>`).
    GetPod {
        name: String,
        namespace: Option<String>,
    },
    GetNode,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Response {
    Pods { pods: Vec<PodView> },
    Pod { pod: Box<PodView> },
    Node { node: Box<NodeView> },
    Error { message: String },
}
