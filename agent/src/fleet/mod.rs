//! `tidelet fleet`: the control-plane operator's view of a fleet over MQTT, with no code to
//! write. It connects to the broker the nodes use (clean session, its own client id), reads
//! the retained topics of the tree in docs/mqtt.md (`fleet nodes`, `fleet pods`), publishes
//! desired pods and waits for the node's `DesiredPodResult` (`fleet apply`, `fleet delete`),
//! and streams changes (`fleet watch`).
//!
//! `view`, `apply` and `watch` hold the decisions (rows, staleness, status columns, which
//! result answers a publish, which change is worth a line) as pure functions; `session` is
//! the only part that talks to the broker. Output goes to the writers the caller passes in.
//! Exit codes: 0 done/accepted, 1 rejected or an error, 2 no answer in time.

pub mod apply;
pub mod session;
pub mod view;
pub mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::mqtt::{tls, topics, BrokerUrl, MqttConfig};
use apply::{Expect, Verdict};
use session::{Session, WaitResult};
use view::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A local input (a flag's value) is wrong.
    #[error("{flag}: {reason}")]
    Usage { flag: &'static str, reason: String },
    /// The manifest given to `fleet apply` is not one Pod with a name.
    #[error("{}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The session failed after connecting (lost, a refused subscription, no PUBACK).
    #[error("{url}: {reason}")]
    Session { url: String, reason: String },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot encode the output: {0}")]
    Encode(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// How to reach the broker, and where the fleet lives on it.
#[derive(Debug, Clone)]
pub struct Options {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub broker: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The fleet root (`tidelet/`): nodes are `<root><node>/`.
    pub root: String,
    /// Default `tidelet-fleet-<pid>`.
    pub client_id: Option<String>,
    pub output: Format,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum Cmd {
    Nodes,
    Pods {
        node: Option<String>,
    },
    Apply {
        node: String,
        file: PathBuf,
        timeout: Duration,
    },
    Delete {
        node: String,
        pod: String,
        namespace: String,
        timeout: Duration,
    },
    Watch {
        node: Option<String>,
    },
}

/// Check the options and build the client's MQTT options (the agent's TLS set-up, with a
/// clean session and room for the largest manifest).
pub fn mqtt_options(o: &Options) -> Result<rumqttc::MqttOptions, FleetError> {
    let usage = |flag, reason: String| FleetError::Usage { flag, reason };
    let broker = BrokerUrl::parse(&o.broker).map_err(|r| usage("--broker", r))?;
    topics::check_prefix(&o.root).map_err(|r| usage("--root", r))?;
    if !broker.tls && (o.ca.is_some() || o.cert.is_some()) {
        return Err(usage(
            if o.ca.is_some() { "--ca" } else { "--cert" },
            format!("given, but {} is not mqtts://", o.broker),
        ));
    }
    if o.cert.is_some() != o.key.is_some() {
        return Err(usage(
            if o.cert.is_some() { "--key" } else { "--cert" },
            "mutual TLS needs both --cert and --key".into(),
        ));
    }
    if o.password_file.is_some() && o.username.is_none() {
        return Err(usage("--password-file", "given without --username".into()));
    }
    let client_id = o
        .client_id
        .clone()
        .unwrap_or_else(|| format!("tidelet-fleet-{}", std::process::id()));
    if client_id.is_empty() || client_id.contains(['/', '+', '#', '\0']) {
        return Err(usage(
            "--client-id",
            format!("{client_id:?} cannot be a client id here (it names a topic level)"),
        ));
    }
    let max_out = crate::manifest::MAX_MANIFEST_BYTES as usize + (64 << 10);
    let cfg = MqttConfig {
        broker,
        client_id,
        topic_prefix: o.root.clone(),
        ca_file: o.ca.clone(),
        cert_file: o.cert.clone(),
        key_file: o.key.clone(),
        username: o.username.clone(),
        password_file: o.password_file.clone(),
        keep_alive: Duration::from_secs(30),
        lease_period: crate::mqtt::config::DEFAULT_LEASE_PERIOD,
        max_packet_size: max_out,
        event_buffer: 1,
        remote_pod_policy: Default::default(),
        reconnect_max_delay: crate::mqtt::config::DEFAULT_RECONNECT_MAX_DELAY,
    };
    let mut m = tls::mqtt_options(&cfg, None)?;
    m.set_clean_session(true);
    m.set_max_packet_size(session::MAX_INCOMING, max_out);
    Ok(m)
}

/// Run one command; the exit code (0 ok, 1 rejected, 2 no answer in time).
pub fn run(
    o: &Options,
    cmd: Cmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, FleetError> {
    // Local inputs first: a bad manifest or name needs no broker.
    let plan = plan(cmd)?;
    let options = mqtt_options(o)?;
    let mut s = Session::connect(options, &o.broker, o.connect_timeout)?;
    let code = match plan {
        Plan::Nodes => nodes(o, &mut s, out, err)?,
        Plan::Pods { node } => pods(o, &mut s, node.as_deref(), out, err)?,
        Plan::Desire(d) => desire(o, &mut s, d, out, err)?,
        Plan::Watch { node } => return watch(o, s, node.as_deref(), out, err),
    };
    s.close();
    Ok(code)
}

/// A command with its local inputs checked and read.
enum Plan {
    Nodes,
    Pods { node: Option<String> },
    Desire(Desire),
    Watch { node: Option<String> },
}

/// A desired pod (or its removal: an empty payload) to publish, and the answer awaited.
struct Desire {
    node: String,
    expect: Expect,
    payload: Vec<u8>,
    timeout: Duration,
}

fn plan(cmd: Cmd) -> Result<Plan, FleetError> {
    let check = |flag: &'static str, what: &str, v: &str| {
        apply::check_topic_level(what, v).map_err(|reason| FleetError::Usage { flag, reason })
    };
    let node_ok = |n: &Option<String>| match n {
        Some(n) => check("--node", "the node name", n),
        None => Ok(()),
    };
    Ok(match cmd {
        Cmd::Nodes => Plan::Nodes,
        Cmd::Pods { node } => {
            node_ok(&node)?;
            Plan::Pods { node }
        }
        Cmd::Watch { node } => {
            node_ok(&node)?;
            Plan::Watch { node }
        }
        Cmd::Apply {
            node,
            file,
            timeout,
        } => {
            check("--node", "the node name", &node)?;
            let (payload, info) =
                apply::read_manifest(&file).map_err(|reason| FleetError::Manifest {
                    path: file.clone(),
                    reason,
                })?;
            Plan::Desire(Desire {
                node,
                expect: Expect {
                    namespace: info.namespace,
                    name: info.name,
                    generation: info.generation,
                    resource_version: info.resource_version,
                    delete: false,
                },
                payload,
                timeout,
            })
        }
        Cmd::Delete {
            node,
            pod,
            namespace,
            timeout,
        } => {
            check("--node", "the node name", &node)?;
            check("POD", "the pod name", &pod)?;
            check("--namespace", "the namespace", &namespace)?;
            Plan::Desire(Desire {
                node,
                expect: Expect {
                    namespace,
                    name: pod,
                    generation: None,
                    resource_version: None,
                    delete: true,
                },
                payload: Vec::new(),
                timeout,
            })
        }
    })
}

/// The wall clock, to the second (the ages shown are in seconds at best).
fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn collect(o: &Options, s: &mut Session, filters: &[String]) -> Result<Snapshot, FleetError> {
    let deadline = Instant::now() + o.connect_timeout.max(Duration::from_secs(5));
    let mut snap = Snapshot::default();
    for m in s.snapshot(filters, deadline)? {
        if let Err(why) = snap.ingest(&o.root, &m.topic, &m.payload) {
            tracing::debug!(topic = %m.topic, ?why, "message skipped");
        }
    }
    Ok(snap)
}

fn encode(o: &Options, v: &Value, out: &mut dyn Write) -> Result<(), FleetError> {
    let text = match o.output {
        Format::Yaml => crate::yaml_out::to_string(v),
        _ => serde_json::to_string_pretty(v).map_err(|e| FleetError::Encode(e.to_string()))? + "\n",
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// Said on stderr when nothing was found: Mosquitto grants a subscription its ACL denies and
/// then delivers nothing, so an empty answer may be a permission problem.
fn nothing_found(o: &Options, what: &str, err: &mut dyn Write) -> Result<(), FleetError> {
    writeln!(
        err,
        "no {what} under {} on {} (no node has reported there, a wrong --root, or an ACL that hides the topics)",
        o.root, o.broker
    )?;
    Ok(())
}

fn nodes(
    o: &Options,
    s: &mut Session,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, FleetError> {
    let filters: Vec<String> = [topics::ONLINE, topics::NODE, topics::LEASE, "pods/+/+"]
        .iter()
        .map(|t| format!("{}+/{t}", o.root))
        .collect();
    let snap = collect(o, s, &filters)?;
    let now = now();
    let rows = view::node_rows(&snap, now);
    if rows.is_empty() {
        nothing_found(o, "nodes", err)?;
    }
    if o.output == Format::Table {
        let cells: Vec<_> = rows.iter().map(|r| view::node_cells(r, now)).collect();
        out.write_all(view::table(view::NODE_HEADERS, &cells).as_bytes())?;
    } else {
        let items: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                v["nodeObject"] = snap.nodes[&r.node].node.clone().unwrap_or(Value::Null);
                v
            })
            .collect();
        encode(o, &Value::Array(items), out)?;
    }
    Ok(0)
}

fn pods(
    o: &Options,
    s: &mut Session,
    node: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, FleetError> {
    let filter = format!("{}{}/pods/+/+", o.root, node.unwrap_or("+"));
    let snap = collect(o, s, &[filter])?;
    let now = now();
    let pods = view::pods_of(&snap, node);
    if pods.is_empty() {
        nothing_found(o, "pods", err)?;
    }
    if o.output == Format::Table {
        let cells: Vec<_> = pods
            .iter()
            .map(|(n, k, p)| view::pod_cells(n, k, p, now))
            .collect();
        out.write_all(view::table(view::POD_HEADERS, &cells).as_bytes())?;
    } else {
        let items: Vec<Value> = pods.iter().map(|(_, _, p)| (*p).clone()).collect();
        encode(
            o,
            &json!({"apiVersion": "v1", "kind": "List", "items": items}),
            out,
        )?;
    }
    Ok(0)
}

/// Publish a desired pod (or its removal, an empty payload) retained, and wait for the
/// node's answer to it.
fn desire(
    o: &Options,
    s: &mut Session,
    d: Desire,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, FleetError> {
    let Desire {
        node,
        expect,
        payload,
        timeout,
    } = d;
    let node = node.as_str();
    let prefix = format!("{}{node}/", o.root);
    let key = format!("{}/{}", expect.namespace, expect.name);
    let desired = topics::desired_pod(&prefix, &key);
    let result_topic = topics::desired_result(&prefix, &key);
    let online_topic = format!("{prefix}{}", topics::ONLINE);
    let pod_topic = topics::pod(&prefix, &key);
    let start = Instant::now();
    let deadline = start + timeout;
    // Subscribe before publishing, so no answer can slip between the two.
    let mut filters = vec![result_topic.clone(), online_topic.clone()];
    if expect.delete {
        filters.push(pod_topic.clone());
    }
    s.subscribe(&filters, deadline.max(Instant::now() + o.connect_timeout))?;
    s.publish_acked(
        &desired,
        payload,
        true,
        Instant::now() + o.connect_timeout.max(Duration::from_secs(5)),
    )?;
    tracing::debug!(topic = %desired, "desired message published");
    let mut online: Option<Value> = None;
    while let Some(m) = s.next(deadline)? {
        if m.topic == online_topic {
            online = serde_json::from_slice(&m.payload).ok();
        } else if m.topic == pod_topic && expect.delete && !m.retained && m.payload.is_empty() {
            writeln!(out, "pod/{} removed from {node}", expect.name)?;
            return Ok(0);
        } else if m.topic == result_topic {
            let r: apply::DesiredPodResult = match serde_json::from_slice(&m.payload) {
                Ok(r) => r,
                Err(e) => {
                    if !m.retained && !m.payload.is_empty() {
                        writeln!(err, "warning: unreadable result on {result_topic}: {e}")?;
                    }
                    continue;
                }
            };
            match apply::judge(&expect, &r, m.retained) {
                Verdict::Ignore(why) => tracing::debug!(why, "result ignored"),
                Verdict::Answer => {
                    if o.output == Format::Table {
                        for l in apply::answer_lines(&r, node, expect.delete) {
                            writeln!(out, "{l}")?;
                        }
                    } else {
                        encode(o, &serde_json::to_value(&r).unwrap_or(Value::Null), out)?;
                    }
                    return Ok(if r.accepted { 0 } else { 1 });
                }
            }
        }
    }
    for l in apply::timeout_lines(node, timeout, online.as_ref(), &desired, expect.delete) {
        writeln!(err, "{l}")?;
    }
    Ok(2)
}

fn watch(
    o: &Options,
    mut s: Session,
    node: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, FleetError> {
    let filters = watch::filters(&o.root, node);
    s.subscribe(&filters, Instant::now() + o.connect_timeout)?;
    let mut w = watch::Watch::default();
    let mut backoff = Duration::from_millis(500);
    loop {
        match s.wait() {
            WaitResult::Msg(m) => {
                backoff = Duration::from_millis(500);
                let time = now().to_string();
                match o.output {
                    Format::Table => {
                        if let Some(l) = w.line(&o.root, &m.topic, &m.payload) {
                            writeln!(out, "{time}  {l}")?;
                        }
                    }
                    Format::Json => {
                        let v = watch::json_line(&time, &m.topic, &m.payload, m.retained);
                        writeln!(out, "{v}")?;
                    }
                    Format::Yaml => {
                        let v = watch::json_line(&time, &m.topic, &m.payload, m.retained);
                        let y = crate::yaml_out::to_string(&v);
                        write!(out, "---\n{y}")?;
                    }
                }
                out.flush()?;
            }
            WaitResult::Reconnected => {
                writeln!(err, "reconnected to {}", o.broker)?;
                s.resubscribe(&filters)?;
            }
            WaitResult::Other => {}
            WaitResult::Lost(reason) => {
                writeln!(
                    err,
                    "lost {}: {reason}; retrying in {:.1}s",
                    o.broker,
                    backoff.as_secs_f32()
                )?;
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            WaitResult::Closed => return Ok(1),
        }
    }
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
