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
        remote_pod_policy: None,
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
    // Local inputs first: a bad manifest needs no broker.
    let manifest = match &cmd {
        Cmd::Apply { file, .. } => {
            Some(
                apply::read_manifest(file).map_err(|reason| FleetError::Manifest {
                    path: file.clone(),
                    reason,
                })?,
            )
        }
        Cmd::Delete { pod, namespace, .. } => {
            for (flag, v) in [("POD", pod), ("--namespace", namespace)] {
                apply::check_topic_level("the name", v)
                    .map_err(|reason| FleetError::Usage { flag, reason })?;
            }
            None
        }
        _ => None,
    };
    if let Some(node) = match &cmd {
        Cmd::Apply { node, .. } | Cmd::Delete { node, .. } => Some(node.as_str()),
        Cmd::Pods { node } | Cmd::Watch { node } => node.as_deref(),
        Cmd::Nodes => None,
    } {
        apply::check_topic_level("the node name", node).map_err(|reason| FleetError::Usage {
            flag: "--node",
            reason,
        })?;
    }
    let options = mqtt_options(o)?;
    let mut s = Session::connect(options, &o.broker, o.connect_timeout)?;
    let code = match cmd {
        Cmd::Nodes => nodes(o, &mut s, out)?,
        Cmd::Pods { node } => pods(o, &mut s, node.as_deref(), out)?,
        Cmd::Apply {
            node,
            file: _,
            timeout,
        } => {
            let (bytes, info) = manifest.expect("read above");
            let expect = Expect {
                namespace: info.namespace.clone(),
                name: info.name.clone(),
                generation: info.generation,
                resource_version: info.resource_version.clone(),
                delete: false,
            };
            desire(o, &mut s, &node, expect, bytes, timeout, out, err)?
        }
        Cmd::Delete {
            node,
            pod,
            namespace,
            timeout,
        } => {
            let expect = Expect {
                namespace,
                name: pod,
                generation: None,
                resource_version: None,
                delete: true,
            };
            desire(o, &mut s, &node, expect, Vec::new(), timeout, out, err)?
        }
        Cmd::Watch { node } => return watch(o, s, node.as_deref(), out, err),
    };
    s.close();
    Ok(code)
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
        Format::Yaml => serde_yaml::to_string(v).map_err(|e| FleetError::Encode(e.to_string()))?,
        _ => serde_json::to_string_pretty(v).map_err(|e| FleetError::Encode(e.to_string()))? + "\n",
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

fn nodes(o: &Options, s: &mut Session, out: &mut dyn Write) -> Result<i32, FleetError> {
    let filters: Vec<String> = [topics::ONLINE, topics::NODE, topics::LEASE, "pods/+/+"]
        .iter()
        .map(|t| format!("{}+/{t}", o.root))
        .collect();
    let snap = collect(o, s, &filters)?;
    let now = now();
    let rows = view::node_rows(&snap, now);
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
) -> Result<i32, FleetError> {
    let filter = format!("{}{}/pods/+/+", o.root, node.unwrap_or("+"));
    let snap = collect(o, s, &[filter])?;
    let now = now();
    let pods = view::pods_of(&snap, node);
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
#[allow(clippy::too_many_arguments)]
fn desire(
    o: &Options,
    s: &mut Session,
    node: &str,
    expect: Expect,
    payload: Vec<u8>,
    timeout: Duration,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, FleetError> {
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
                        let y = serde_yaml::to_string(&v)
                            .map_err(|e| FleetError::Encode(e.to_string()))?;
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
mod tests {
    use super::*;
    use rumqttc::{ConnectReturnCode, ConnectionError};
    use std::io::{Error, ErrorKind};

    fn opts() -> Options {
        Options {
            broker: "mqtt://127.0.0.1:1883".into(),
            ca: None,
            cert: None,
            key: None,
            username: None,
            password_file: None,
            root: "tidelet/".into(),
            client_id: None,
            output: Format::Table,
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn bad_options_name_the_flag() {
        type Edit = fn(&mut Options);
        let cases: &[(Edit, &str)] = &[
            (|o| o.broker = "tcp://x".into(), "--broker"),
            (|o| o.root = "tidelet".into(), "--root"),
            (|o| o.root = "a/+/".into(), "--root"),
            (|o| o.ca = Some("/ca".into()), "--ca"),
            (|o| o.cert = Some("/c".into()), "--cert"),
            (
                |o| {
                    o.broker = "mqtts://x".into();
                    o.cert = Some("/c".into());
                },
                "--key",
            ),
            (|o| o.password_file = Some("/p".into()), "--password-file"),
            (|o| o.client_id = Some("a/b".into()), "--client-id"),
        ];
        for (edit, flag) in cases {
            let mut o = opts();
            edit(&mut o);
            match mqtt_options(&o) {
                Err(FleetError::Usage { flag: f, .. }) => assert_eq!(f, *flag),
                Err(e) => panic!("{flag}: {e}"),
                Ok(_) => panic!("{flag}: accepted"),
            }
        }
        let m = mqtt_options(&opts()).unwrap();
        assert!(m.clean_session());
        assert!(m.client_id().starts_with("tidelet-fleet-"));
        // A missing CA file is named before any connection is tried.
        let mut o = opts();
        o.broker = "mqtts://127.0.0.1".into();
        o.ca = Some("/nonexistent/ca.pem".into());
        let e = mqtt_options(&o).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn connection_errors_are_told_apart() {
        let cases: Vec<(ConnectionError, &str, bool)> = vec![
            (
                ConnectionError::Io(Error::from(ErrorKind::ConnectionRefused)),
                "connection refused",
                true,
            ),
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
                "not authorised",
                false,
            ),
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
                "bad user name or password",
                false,
            ),
            (
                ConnectionError::Io(Error::new(
                    ErrorKind::InvalidData,
                    "invalid peer certificate",
                )),
                "TLS handshake failed: invalid peer certificate",
                false,
            ),
            (
                ConnectionError::Io(Error::from(ErrorKind::UnexpectedEof)),
                "closed the connection",
                true,
            ),
            (ConnectionError::NetworkTimeout, "no answer", true),
        ];
        for (e, want, retry) in cases {
            let (reason, r) = session::classify(&e);
            assert!(reason.contains(want), "{e}: {reason}");
            assert_eq!(r, retry, "{e}");
        }
    }

    #[test]
    fn local_input_errors_need_no_broker() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("svc.yaml");
        std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n").unwrap();
        // A broker port nobody listens on: the error must come before any connection.
        let mut o = opts();
        o.broker = "mqtt://127.0.0.1:9".into();
        let cmd = Cmd::Apply {
            node: "n1".into(),
            file: f.clone(),
            timeout: Duration::from_secs(1),
        };
        let e = run(&o, cmd, &mut Vec::new(), &mut Vec::new()).unwrap_err();
        assert!(matches!(e, FleetError::Manifest { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("svc.yaml") && e.contains("\"Service\" is not Pod"),
            "{e}"
        );
        let cmd = Cmd::Delete {
            node: "n/1".into(),
            pod: "web".into(),
            namespace: "default".into(),
            timeout: Duration::from_secs(1),
        };
        let e = run(&o, cmd, &mut Vec::new(), &mut Vec::new()).unwrap_err();
        assert!(matches!(e, FleetError::Usage { flag: "--node", .. }), "{e}");
    }
}
