//! The operator's tables, built from retained messages: a `Snapshot` of every node's `online`,
//! `node`, `lease` and `pods/<ns>/<name>` topics, and the rows of `fleet nodes` and
//! `fleet pods` computed from it and a given `now`. Pure: no I/O, no clock; table-tested.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use crate::mqtt::topics;

/// One message as received: topic, payload, and whether the broker delivered it as retained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retained: bool,
}

/// What the retained topics say about one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeState {
    /// The `online` payload (`{"online":bool,...}`).
    pub online: Option<Value>,
    /// The `v1` Node.
    pub node: Option<Value>,
    /// The `coordination.k8s.io/v1` Lease.
    pub lease: Option<Value>,
    /// `namespace/name` -> the `v1` Pod; cleared topics are absent.
    pub pods: BTreeMap<String, Value>,
}

/// Every node seen under the fleet root.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub nodes: BTreeMap<String, NodeState>,
}

/// Why a message was not taken into the snapshot (reported at debug level, never fatal: one
/// broken node must not hide the others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    NotOurs,
    BadJson(String),
}

impl Snapshot {
    /// Take in one message from under `root`. An empty payload clears the topic.
    pub fn ingest(&mut self, root: &str, topic: &str, payload: &[u8]) -> Result<(), Skipped> {
        let (node, rest) = topics::node_of(root, topic).ok_or(Skipped::NotOurs)?;
        let value = if payload.is_empty() {
            None
        } else {
            Some(
                serde_json::from_slice::<Value>(payload)
                    .map_err(|e| Skipped::BadJson(format!("{topic}: {e}")))?,
            )
        };
        let prefix = format!("{root}{node}/");
        fn slot<'s>(s: &'s mut Snapshot, node: &str) -> &'s mut NodeState {
            s.nodes.entry(node.to_string()).or_default()
        }
        match rest {
            topics::ONLINE => slot(self, node).online = value,
            topics::NODE => slot(self, node).node = value,
            topics::LEASE => slot(self, node).lease = value,
            _ => {
                let (ns, name) =
                    topics::key_of(&prefix, topics::PODS, topic).ok_or(Skipped::NotOurs)?;
                let key = format!("{ns}/{name}");
                match value {
                    Some(v) => {
                        slot(self, node).pods.insert(key, v);
                    }
                    None => {
                        if let Some(n) = self.nodes.get_mut(node) {
                            n.pods.remove(&key);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A node's state as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NodeStatus {
    /// `online: true` and the lease (if any) is current.
    Online,
    /// `online: false` (a clean stop or the last will).
    Offline,
    /// `online: true` but the lease expired: the agent holds its connection but its main loop
    /// no longer renews the lease (a stuck agent).
    Stale,
    /// No `online` message at all.
    Unknown,
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeStatus::Online => "Online",
            NodeStatus::Offline => "Offline",
            NodeStatus::Stale => "Stale",
            NodeStatus::Unknown => "Unknown",
        })
    }
}

/// `spec.renewTime` and `spec.leaseDurationSeconds` of a Lease.
pub fn lease_times(lease: &Value) -> Option<(Timestamp, i64)> {
    let spec = lease.get("spec")?;
    let renew = spec.get("renewTime")?.as_str()?.parse::<Timestamp>().ok()?;
    let secs = spec.get("leaseDurationSeconds")?.as_i64()?;
    Some((renew, secs))
}

/// Whether a lease renewed at `renew` for `secs` seconds has run out at `now`.
pub fn lease_expired(renew: Timestamp, secs: i64, now: Timestamp) -> bool {
    now.as_second() > renew.as_second().saturating_add(secs.max(0))
}

/// The STATUS column: `online` decides Online/Offline; a lease that ran out turns Online into
/// Stale. A lease that cannot be read does not make a node stale (older agents, other tools).
pub fn node_status(online: Option<&Value>, lease: Option<&Value>, now: Timestamp) -> NodeStatus {
    match online
        .and_then(|o| o.get("online"))
        .and_then(Value::as_bool)
    {
        None => NodeStatus::Unknown,
        Some(false) => NodeStatus::Offline,
        Some(true) => match lease.and_then(lease_times) {
            Some((renew, secs)) if lease_expired(renew, secs, now) => NodeStatus::Stale,
            _ => NodeStatus::Online,
        },
    }
}

/// The types of a Node's conditions whose status is `True`, in the Node's order.
pub fn true_conditions(node: &Value) -> Vec<String> {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter(|c| c.get("status").and_then(Value::as_str) == Some("True"))
                .filter_map(|c| c.get("type").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A row of `fleet nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub node: String,
    pub status: NodeStatus,
    pub conditions: Vec<String>,
    /// Pods whose STATUS (as `fleet pods` shows it) is `Running`: a pod in phase Running with
    /// a container in CrashLoopBackOff does not count.
    pub pods_running: usize,
    pub pods_total: usize,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    /// The lease's `renewTime`, as written.
    pub last_seen: Option<String>,
    /// `reason` of an `online: false` message (the will's or a clean stop's).
    pub offline_reason: Option<String>,
}

fn pod_phase(pod: &Value) -> Option<&str> {
    pod.pointer("/status/phase").and_then(Value::as_str)
}

pub fn node_rows(s: &Snapshot, now: Timestamp) -> Vec<NodeRow> {
    s.nodes
        .iter()
        .map(|(name, n)| {
            let alloc = |k: &str| {
                n.node
                    .as_ref()
                    .and_then(|v| v.pointer(&format!("/status/allocatable/{k}")))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            NodeRow {
                node: name.clone(),
                status: node_status(n.online.as_ref(), n.lease.as_ref(), now),
                conditions: n.node.as_ref().map(true_conditions).unwrap_or_default(),
                pods_running: n
                    .pods
                    .values()
                    .filter(|p| pod_columns(p).status == "Running")
                    .count(),
                pods_total: n.pods.len(),
                cpu: alloc("cpu"),
                memory: alloc("memory"),
                last_seen: n
                    .lease
                    .as_ref()
                    .and_then(|l| l.pointer("/spec/renewTime"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                offline_reason: n
                    .online
                    .as_ref()
                    .filter(|o| o.get("online").and_then(Value::as_bool) == Some(false))
                    .and_then(|o| o.get("reason"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }
        })
        .collect()
}

/// The text cells of a node row, in the order of `NODE_HEADERS`.
pub const NODE_HEADERS: &[&str] = &[
    "NODE",
    "STATUS",
    "CONDITIONS",
    "PODS",
    "CPU",
    "MEMORY",
    "LAST-SEEN",
];

pub fn node_cells(r: &NodeRow, now: Timestamp) -> Vec<String> {
    let none = || "<none>".to_string();
    vec![
        r.node.clone(),
        r.status.to_string(),
        if r.conditions.is_empty() {
            none()
        } else {
            r.conditions.join(",")
        },
        format!("{}/{}", r.pods_running, r.pods_total),
        r.cpu.clone().unwrap_or_else(none),
        r.memory.clone().unwrap_or_else(none),
        r.last_seen
            .as_deref()
            .map(|t| age_since(t, now))
            .unwrap_or_else(|| "<unknown>".to_string()),
    ]
}

/// The columns kubectl shows for a pod, computed the way `kubectl get pods` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodColumns {
    pub ready: usize,
    pub total: usize,
    pub status: String,
    pub restarts: i64,
}

fn terminated_reason(t: &Value) -> String {
    if let Some(r) = t
        .get("reason")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        return r.to_string();
    }
    match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
        Some(sig) => format!("Signal:{sig}"),
        None => format!(
            "ExitCode:{}",
            t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
        ),
    }
}

fn statuses<'a>(pod: &'a Value, which: &str) -> &'a [Value] {
    pod.pointer(&format!("/status/{which}"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// READY, STATUS and RESTARTS of a Pod (kubectl's `printPod`): the pod's reason or phase,
/// overridden by the first failing or waiting init container (`Init:...`), else by the last
/// container with a waiting or terminated reason; `Terminating` once deletion started.
pub fn pod_columns(pod: &Value) -> PodColumns {
    let mut reason = pod
        .pointer("/status/reason")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .or_else(|| pod_phase(pod))
        .unwrap_or("Unknown")
        .to_string();
    let inits = statuses(pod, "initContainerStatuses");
    let containers = statuses(pod, "containerStatuses");
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(containers.len())
        .max(containers.len());
    let restarts = inits
        .iter()
        .chain(containers)
        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
        .sum();
    let mut initializing = false;
    for (i, c) in inits.iter().enumerate() {
        let term = c.pointer("/state/terminated");
        if term.and_then(|t| t.get("exitCode")).and_then(Value::as_i64) == Some(0) {
            continue;
        }
        let waiting = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "PodInitializing");
        reason = match (term, waiting) {
            (Some(t), _) => format!("Init:{}", terminated_reason(t)),
            (None, Some(w)) => format!("Init:{w}"),
            (None, None) => format!("Init:{i}/{}", inits.len()),
        };
        initializing = true;
        break;
    }
    let mut ready = 0;
    if !initializing {
        let mut has_running = false;
        for c in containers.iter().rev() {
            let waiting = c
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty());
            if let Some(w) = waiting {
                reason = w.to_string();
            } else if let Some(t) = c.pointer("/state/terminated") {
                reason = terminated_reason(t);
            } else if c.pointer("/state/running").is_some()
                && c.get("ready").and_then(Value::as_bool) == Some(true)
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    PodColumns {
        ready,
        total,
        status: reason,
        restarts,
    }
}

pub const POD_HEADERS: &[&str] = &[
    "NODE",
    "NAMESPACE",
    "NAME",
    "READY",
    "STATUS",
    "RESTARTS",
    "AGE",
];

/// Pods of every node (or of `only`), sorted by node then key: `(node, key, pod)`.
pub fn pods_of<'a>(s: &'a Snapshot, only: Option<&str>) -> Vec<(&'a str, &'a str, &'a Value)> {
    s.nodes
        .iter()
        .filter(|(n, _)| only.is_none_or(|o| o == n.as_str()))
        .flat_map(|(n, st)| {
            st.pods
                .iter()
                .map(move |(k, p)| (n.as_str(), k.as_str(), p))
        })
        .collect()
}

pub fn pod_cells(node: &str, key: &str, pod: &Value, now: Timestamp) -> Vec<String> {
    let (ns, name) = key.split_once('/').unwrap_or(("default", key));
    let c = pod_columns(pod);
    let created = pod
        .pointer("/metadata/creationTimestamp")
        .or_else(|| pod.pointer("/status/startTime"))
        .and_then(Value::as_str);
    vec![
        node.to_string(),
        ns.to_string(),
        name.to_string(),
        format!("{}/{}", c.ready, c.total),
        c.status,
        c.restarts.to_string(),
        created
            .map(|t| age_since(t, now))
            .unwrap_or_else(|| "<unknown>".into()),
    ]
}

/// kubectl's short human duration: `45s`, `3m20s`, `12m`, `5h4m`, `20h`, `3d2h`, `40d`, `2y30d`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    let h = m / 60;
    let d = h / 24;
    let join = |a: i64, ua: &str, b: i64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    if m < 10 {
        join(m, "m", s % 60, "s")
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        join(h, "h", m % 60, "m")
    } else if h < 48 {
        format!("{h}h")
    } else if h < 192 {
        join(d, "d", h % 24, "h")
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        join(d / 365, "y", d % 365, "d")
    } else {
        format!("{}y", d / 365)
    }
}

/// The age of an RFC 3339 time at `now`, or `<invalid>` when it does not parse.
pub fn age_since(t: &str, now: Timestamp) -> String {
    match t.parse::<Timestamp>() {
        Ok(t) => human_duration(now.as_second() - t.as_second()),
        Err(_) => "<invalid>".into(),
    }
}

/// Left-aligned columns separated by three spaces, as kubectl prints them.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i + 1 < widths.len() {
                l.push_str(&format!("{c:<w$}   ", w = widths[i]));
            } else {
                l.push_str(c);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for r in rows {
        line(&mut out, &mut r.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
