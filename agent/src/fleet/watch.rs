//! `fleet watch`, the pure part: from one message and what was seen before, the line to print
//! (or none when nothing an operator cares about changed: a lease renewal, a pod status whose
//! columns did not move). The state kept is one short summary per node and per pod: bounded
//! by the fleet's size, not by the number of messages.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::apply::DesiredPodResult;
use super::view::{pod_columns, true_conditions};
use crate::mqtt::topics;

/// The topic filters `fleet watch` subscribes to under `root`, for one node or all (`+`).
pub fn filters(root: &str, node: Option<&str>) -> Vec<String> {
    let n = node.unwrap_or("+");
    [
        topics::ONLINE,
        topics::NODE,
        "pods/+/+",
        topics::EVENTS,
        "desired/results/+/+",
    ]
    .iter()
    .map(|t| format!("{root}{n}/{t}"))
    .collect()
}

/// What was last printed about each node and pod.
#[derive(Debug, Default)]
pub struct Watch {
    online: BTreeMap<String, String>,
    conditions: BTreeMap<String, String>,
    /// `node pods/<ns>/<name>` -> `STATUS ready/total restarts`.
    pods: BTreeMap<String, String>,
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

impl Watch {
    /// The line (without the time) for a message on `topic` under `root`, if it says
    /// something new.
    pub fn line(&mut self, root: &str, topic: &str, payload: &[u8]) -> Option<String> {
        let (node, rest) = topics::node_of(root, topic)?;
        let prefix = format!("{root}{node}/");
        let value: Option<Value> = if payload.is_empty() {
            None
        } else {
            match serde_json::from_slice(payload) {
                Ok(v) => Some(v),
                Err(e) => return Some(format!("{node}  unreadable message on {topic}: {e}")),
            }
        };
        match rest {
            topics::ONLINE => {
                let v = value?;
                let text = match v.get("online").and_then(Value::as_bool) {
                    Some(true) => "online".to_string(),
                    Some(false) => match v.get("reason").and_then(Value::as_str) {
                        Some(r) => format!("offline ({r})"),
                        None => "offline".to_string(),
                    },
                    None => "online state unreadable".to_string(),
                };
                changed(&mut self.online, node, &text).then(|| format!("{node}  {text}"))
            }
            topics::NODE => {
                let c = true_conditions(&value?);
                let text = if c.is_empty() {
                    "<none>".to_string()
                } else {
                    c.join(",")
                };
                changed(&mut self.conditions, node, &text)
                    .then(|| format!("{node}  node conditions: {text}"))
            }
            topics::EVENTS => {
                let e = value?;
                let obj = e.get("involvedObject").or_else(|| e.get("regarding"));
                let what = obj
                    .map(|o| {
                        let kind = str_at(o, "/kind").to_lowercase();
                        let ns = str_at(o, "/namespace");
                        let name = str_at(o, "/name");
                        if ns.is_empty() {
                            format!("{kind}/{name}")
                        } else {
                            format!("{kind}/{ns}/{name}")
                        }
                    })
                    .unwrap_or_default();
                let msg = e
                    .get("message")
                    .or_else(|| e.get("note"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Some(format!(
                    "{node}  {} {} {what}: {msg}",
                    str_at(&e, "/type"),
                    str_at(&e, "/reason")
                ))
            }
            _ => {
                if let Some((ns, name)) = topics::key_of(&prefix, topics::PODS, topic) {
                    let key = format!("{node} {ns}/{name}");
                    return match value {
                        None => self
                            .pods
                            .remove(&key)
                            .map(|_| format!("{node}  pod {ns}/{name} gone")),
                        Some(p) => {
                            let c = pod_columns(&p);
                            let text = format!(
                                "{} {}/{} restarts={}",
                                c.status, c.ready, c.total, c.restarts
                            );
                            let before = self.pods.get(&key).cloned();
                            changed(&mut self.pods, &key, &text).then(|| match before {
                                Some(b) => format!("{node}  pod {ns}/{name} {b} -> {text}"),
                                None => format!("{node}  pod {ns}/{name} {text}"),
                            })
                        }
                    };
                }
                if let Some((ns, name)) = topics::key_of(&prefix, topics::DESIRED_RESULTS, topic) {
                    let v = value?;
                    return Some(match serde_json::from_value::<DesiredPodResult>(v) {
                        Ok(r) if r.accepted => {
                            format!("{node}  desired {ns}/{name} {}", r.reason)
                        }
                        Ok(r) => format!(
                            "{node}  desired {ns}/{name} rejected: {}: {}",
                            r.reason, r.message
                        ),
                        Err(e) => format!("{node}  desired {ns}/{name} unreadable result: {e}"),
                    });
                }
                None
            }
        }
    }
}

fn changed(map: &mut BTreeMap<String, String>, key: &str, text: &str) -> bool {
    if map.get(key).map(String::as_str) == Some(text) {
        return false;
    }
    map.insert(key.to_string(), text.to_string());
    true
}

/// The `-o json` line of a message: the topic, the retain flag, the payload as JSON (a string
/// when it is not JSON, `null` when empty: a cleared topic), and the time it was received.
pub fn json_line(time: &str, topic: &str, payload: &[u8], retained: bool) -> Value {
    let payload = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
    };
    json!({"time": time, "topic": topic, "retained": retained, "payload": payload})
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
