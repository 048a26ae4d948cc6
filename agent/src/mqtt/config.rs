//! The `mqtt:` section of the agent's config file (absent: MQTT is off and tidelet runs
//! local-only) and the broker URL, shared with `tidelet fleet`. Errors name the key
//! (`mqtt.caFile`) and the reason; the caller adds the file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883); IPv6 hosts in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(s: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "{s:?} is not a broker URL (mqtt://host[:port] or mqtts://host[:port])"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: unclosed '[' in the host"))?;
            match after {
                "" => (h, None),
                p => (
                    h,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| format!("{s:?}: expected ':port' after ']'"))?,
                    ),
                ),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
            return Err(format!("{s:?}: {host:?} is not a host name or address"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{s:?}: {p:?} is not a port number"))?,
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

/// How the agent talks to the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    pub broker: BrokerUrl,
    /// Default: the node name.
    pub client_id: String,
    /// Always ends in `/`; default `tidelet/<nodeName>/`.
    pub topic_prefix: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub keep_alive: Duration,
    /// The lease is renewed this often; `leaseDurationSeconds` is four times it.
    pub lease_period: Duration,
    /// Largest packet sent or accepted (the largest Pod status tidelet sends must fit).
    pub max_packet_size: usize,
    /// Events kept while offline; the oldest are dropped (and counted) beyond it.
    pub event_buffer: usize,
    /// The ceiling of the reconnect back-off (500 ms doubling, full jitter). The default is
    /// short so that the back-end's view is back within about a second of the broker's
    /// return; a fleet of thousands of nodes on one broker should raise it (docs/mqtt.md).
    pub reconnect_max_delay: Duration,
    /// What desired pods from the control plane may ask for (`remotePodPolicy`).
    pub remote_pod_policy: crate::source::RemotePolicy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Raw {
    broker: Option<String>,
    client_id: Option<String>,
    topic_prefix: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    keep_alive: Option<String>,
    lease_period: Option<String>,
    max_packet_size: Option<serde_json::Value>,
    event_buffer: Option<i64>,
    reconnect_max_delay: Option<String>,
    remote_pod_policy: Option<serde_json::Value>,
}

/// A bad key: `(field, reason)`, the field in the file's spelling (`mqtt.keepAlive`).
pub type FieldError = (String, String);

fn bad(field: &str, reason: impl Into<String>) -> FieldError {
    (format!("mqtt.{field}"), reason.into())
}

pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(60);
pub const DEFAULT_LEASE_PERIOD: Duration = Duration::from_secs(60);
/// 1 MiB: far above the largest Pod status (a pod of 20 containers is ~30 KiB) and well under
/// Mosquitto's default `max_packet_size` (none) and the MQTT limit (256 MiB).
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1 << 20;
pub const DEFAULT_EVENT_BUFFER: usize = 256;
pub const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);

impl MqttConfig {
    /// Parse the `mqtt:` map. `node_name` gives the defaults of `clientId` and `topicPrefix`.
    pub fn parse(v: &serde_json::Value, node_name: &str) -> Result<MqttConfig, FieldError> {
        let raw: Raw = serde_path_to_error::deserialize(v).map_err(|e| {
            (
                crate::yaml::join("mqtt", &crate::yaml::path_of(e.path())),
                e.into_inner().to_string(),
            )
        })?;
        let broker = raw
            .broker
            .as_deref()
            .ok_or_else(|| bad("broker", "is required when the mqtt section is given"))?;
        let broker = BrokerUrl::parse(broker).map_err(|r| bad("broker", r))?;
        let client_id = raw.client_id.unwrap_or_else(|| node_name.to_string());
        // MQTT 3.1.1 servers must accept 1-23 byte ids and may accept longer ones; Mosquitto
        // takes up to 65535. Reject only what no broker takes.
        if client_id.is_empty() || client_id.len() > 65535 || client_id.contains('\0') {
            return Err(bad(
                "clientId",
                format!("{client_id:?} is not a usable client id"),
            ));
        }
        let topic_prefix = raw
            .topic_prefix
            .unwrap_or_else(|| super::topics::default_prefix(node_name));
        super::topics::check_prefix(&topic_prefix).map_err(|r| bad("topicPrefix", r))?;
        if raw.cert_file.is_some() != raw.key_file.is_some() {
            return Err(bad(
                if raw.cert_file.is_some() {
                    "keyFile"
                } else {
                    "certFile"
                },
                "mutual TLS needs both certFile and keyFile",
            ));
        }
        if !broker.tls {
            for (k, set) in [
                ("caFile", raw.ca_file.is_some()),
                ("certFile", raw.cert_file.is_some()),
            ] {
                if set {
                    return Err(bad(
                        k,
                        "given, but the broker URL is mqtt:// (use mqtts:// for TLS)",
                    ));
                }
            }
        }
        if raw.password_file.is_some() && raw.username.is_none() {
            return Err(bad("passwordFile", "given without a username"));
        }
        let duration = |key: &str,
                        v: Option<String>,
                        default: Duration|
         -> Result<Duration, FieldError> {
            match v {
                None => Ok(default),
                Some(s) => crate::quantity::parse_duration(&s)
                    .filter(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(65535))
                    .ok_or_else(|| bad(key, format!("{s:?} is not a duration between 1s and 18h"))),
            }
        };
        let keep_alive = duration("keepAlive", raw.keep_alive, DEFAULT_KEEP_ALIVE)?;
        let lease_period = duration("leasePeriod", raw.lease_period, DEFAULT_LEASE_PERIOD)?;
        let reconnect_max_delay = duration(
            "reconnectMaxDelay",
            raw.reconnect_max_delay,
            DEFAULT_RECONNECT_MAX_DELAY,
        )?;
        let max_packet_size = match raw.max_packet_size {
            None => DEFAULT_MAX_PACKET_SIZE,
            Some(v) => {
                let s = match &v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    other => return Err(bad("maxPacketSize", format!("{other:?} is not a size"))),
                };
                let n = crate::quantity::parse_units(&s)
                    .map_err(|e| bad("maxPacketSize", e.to_string()))?;
                if !(64 << 10..=256 << 20).contains(&n) {
                    return Err(bad(
                        "maxPacketSize",
                        format!("{s:?} is outside 64Ki..256Mi"),
                    ));
                }
                n as usize
            }
        };
        let event_buffer = match raw.event_buffer {
            None => DEFAULT_EVENT_BUFFER,
            Some(n) if (1..=100_000).contains(&n) => n as usize,
            Some(n) => return Err(bad("eventBuffer", format!("{n} is outside 1..100000"))),
        };
        Ok(MqttConfig {
            broker,
            client_id,
            topic_prefix,
            ca_file: raw.ca_file,
            cert_file: raw.cert_file,
            key_file: raw.key_file,
            username: raw.username,
            password_file: raw.password_file,
            keep_alive,
            lease_period,
            max_packet_size,
            event_buffer,
            reconnect_max_delay,
            remote_pod_policy: match &raw.remote_pod_policy {
                None => Default::default(),
                Some(v) => crate::source::RemotePolicy::from_yaml(v)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let ok: &[(&str, bool, &str, u16)] = &[
            ("mqtt://127.0.0.1", false, "127.0.0.1", 1883),
            ("mqtts://broker.example", true, "broker.example", 8883),
            ("mqtt://h:1884", false, "h", 1884),
            ("mqtts://[::1]:9000", true, "::1", 9000),
            ("mqtt://[fe80::1]", false, "fe80::1", 1883),
            ("mqtt://h:1884/", false, "h", 1884),
        ];
        for (s, tls, host, port) in ok {
            let u = BrokerUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(
                (u.tls, u.host.as_str(), u.port),
                (*tls, *host, *port),
                "{s}"
            );
        }
        for s in [
            "tcp://h",
            "h:1883",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://h:x",
            "mqtt://[::1",
            "mqtt://u@h",
            "mqtt://h/path",
        ] {
            assert!(BrokerUrl::parse(s).is_err(), "{s}");
        }
    }

    fn parse(y: &str) -> Result<MqttConfig, FieldError> {
        MqttConfig::parse(&crate::yaml::from_str(y).unwrap(), "node1")
    }

    #[test]
    fn defaults_follow_the_node() {
        let c = parse("broker: mqtt://127.0.0.1:1883").unwrap();
        assert_eq!(c.client_id, "node1");
        assert_eq!(c.topic_prefix, "tidelet/node1/");
        assert_eq!(c.keep_alive, DEFAULT_KEEP_ALIVE);
        assert_eq!(c.max_packet_size, DEFAULT_MAX_PACKET_SIZE);
        assert_eq!(c.event_buffer, DEFAULT_EVENT_BUFFER);
        let c = parse("broker: mqtts://b\ncaFile: /ca\ncertFile: /c\nkeyFile: /k\nkeepAlive: 30s\nmaxPacketSize: 2Mi\neventBuffer: 10\ntopicPrefix: site/n1/\nusername: u\npasswordFile: /p").unwrap();
        assert_eq!(c.keep_alive, Duration::from_secs(30));
        assert_eq!(c.max_packet_size, 2 << 20);
        assert_eq!(c.topic_prefix, "site/n1/");
    }

    #[test]
    fn bad_keys_are_named() {
        let cases: &[(&str, &str)] = &[
            ("clientId: x", "mqtt.broker"),
            ("broker: tcp://x", "mqtt.broker"),
            ("broker: mqtt://x\ntopicPrefix: a", "mqtt.topicPrefix"),
            ("broker: mqtts://x\ncertFile: /c", "mqtt.keyFile"),
            ("broker: mqtts://x\nkeyFile: /k", "mqtt.certFile"),
            ("broker: mqtt://x\ncaFile: /ca", "mqtt.caFile"),
            ("broker: mqtt://x\npasswordFile: /p", "mqtt.passwordFile"),
            ("broker: mqtt://x\nkeepAlive: soon", "mqtt.keepAlive"),
            ("broker: mqtt://x\nkeepAlive: 0s", "mqtt.keepAlive"),
            ("broker: mqtt://x\nleasePeriod: 100h", "mqtt.leasePeriod"),
            ("broker: mqtt://x\nmaxPacketSize: 1Ki", "mqtt.maxPacketSize"),
            (
                "broker: mqtt://x\nmaxPacketSize: lots",
                "mqtt.maxPacketSize",
            ),
            ("broker: mqtt://x\neventBuffer: 0", "mqtt.eventBuffer"),
            ("broker: mqtt://x\nbrokr: y", "mqtt.brokr"),
            (
                "broker: mqtt://x\nremotePodPolicy:\n  allowedHostPaths: [data]",
                "mqtt.remotePodPolicy.allowedHostPaths[0]",
            ),
        ];
        for (y, field) in cases {
            match parse(y) {
                Err((f, _)) => assert_eq!(&f, field, "{y}"),
                Ok(c) => panic!("{y}: accepted: {c:?}"),
            }
        }
    }
}
