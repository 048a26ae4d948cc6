//! Host ports: what a pod asks for, kubelet's `NodePorts` admission rule, the portmap
//! plugin's `portMappings`, and holding a port on the host for as long as the pod has it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{json, Value};

/// One host port a pod uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    /// `TCP`, `UDP` or `SCTP`, as the manifest says (`TCP` when unset).
    pub protocol: String,
    /// `0.0.0.0` when unset: every address of the node.
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.host_ip, self.host_port, self.protocol)
    }
}

/// The host ports of a pod: each container port with a `hostPort`, and with `hostNetwork`
/// every container port (the API server defaults `hostPort` to `containerPort` there).
pub fn host_ports(s: &PodSpec) -> Vec<HostPort> {
    let host_network = s.host_network == Some(true);
    let mut out = Vec::new();
    for c in &s.containers {
        for p in c.ports.iter().flatten() {
            let hp = match p.host_port {
                Some(hp) if hp > 0 => hp,
                _ if host_network => p.container_port,
                _ => continue,
            };
            let (Ok(host_port), Ok(container_port)) =
                (u16::try_from(hp), u16::try_from(p.container_port))
            else {
                continue;
            };
            let host_ip = p
                .host_ip
                .as_deref()
                .filter(|s| !s.is_empty())
                .and_then(|s| s.parse().ok())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            out.push(HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                host_ip,
                host_port,
                container_port,
            });
        }
    }
    out
}

/// Whether two host ports collide (the scheduler's and kubelet's `NodePorts` rule): same
/// protocol and port, and addresses that overlap (the unspecified address overlaps all).
pub fn conflict(a: &HostPort, b: &HostPort) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && (a.host_ip == b.host_ip || a.host_ip.is_unspecified() || b.host_ip.is_unspecified())
}

/// kubelet's reason and message for a pod whose host ports are taken by an admitted pod.
pub const NODE_PORTS_REASON: &str = "NodePorts";
pub const NODE_PORTS_MESSAGE: &str =
    "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports";

/// The portmap plugin's `portMappings` capability argument (protocol in lower case, as
/// containerd sends it); `None` when the pod maps no port.
pub fn port_mappings(ports: &[HostPort]) -> Option<Value> {
    if ports.is_empty() {
        return None;
    }
    Some(Value::Array(
        ports
            .iter()
            .map(|p| {
                let mut m = json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol.to_lowercase(),
                });
                if !p.host_ip.is_unspecified() {
                    m["hostIP"] = Value::String(p.host_ip.to_string());
                }
                m
            })
            .collect(),
    ))
}

/// Bind each host port on the host, as kubelet's host-port manager did for kubenet: a port a
/// host process already uses is refused with a clear reason (portmap would quietly take its
/// traffic), and while the pod holds the socket no host process can take the port from it.
/// The sockets are bound, never listening: the pod's traffic is redirected before it could
/// reach them.
pub fn reserve(ports: &[HostPort]) -> Result<Vec<OwnedFd>, String> {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let mut held = Vec::with_capacity(ports.len());
    for p in ports {
        let ty = match p.protocol.as_str() {
            "TCP" => SockType::Stream,
            "UDP" => SockType::Datagram,
            // SCTP needs the kernel module; kubelet never held those either.
            _ => continue,
        };
        let family = if p.host_ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| format!("hostPort {p}: socket: {}", e.desc()))?;
        let addr = SockaddrStorage::from(SocketAddr::new(p.host_ip, p.host_port));
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).map_err(|e| {
            format!(
                "hostPort {p}: cannot be held on the node: {} (a host process uses it?)",
                e.desc()
            )
        })?;
        held.push(fd);
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn hp(proto: &str, ip: &str, port: u16) -> HostPort {
        HostPort {
            protocol: proto.into(),
            host_ip: ip.parse().unwrap(),
            host_port: port,
            container_port: 80,
        }
    }

    #[test]
    fn host_ports_come_from_host_port_or_from_host_network() {
        let s = spec(json!({"containers": [
            {"name": "a", "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"containerPort": 9000}
            ]},
            {"name": "b", "ports": [{"containerPort": 81, "hostPort": 0}]}
        ]}));
        assert_eq!(
            host_ports(&s)
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            ["0.0.0.0:8080/TCP", "127.0.0.1:5353/UDP"]
        );
        let s = spec(
            json!({"hostNetwork": true, "containers": [{"name": "a", "ports": [{"containerPort": 9000}]}]}),
        );
        assert_eq!(host_ports(&s)[0].to_string(), "0.0.0.0:9000/TCP");
    }

    #[test]
    fn conflicts_need_the_same_protocol_and_port_and_overlapping_addresses() {
        let cases = [
            (hp("TCP", "0.0.0.0", 80), hp("TCP", "0.0.0.0", 80), true),
            (hp("TCP", "0.0.0.0", 80), hp("TCP", "127.0.0.1", 80), true),
            (hp("TCP", "10.0.0.1", 80), hp("TCP", "127.0.0.1", 80), false),
            (hp("TCP", "127.0.0.1", 80), hp("TCP", "127.0.0.1", 80), true),
            (hp("TCP", "0.0.0.0", 80), hp("UDP", "0.0.0.0", 80), false),
            (hp("TCP", "0.0.0.0", 80), hp("TCP", "0.0.0.0", 81), false),
        ];
        for (a, b, want) in cases {
            assert_eq!(conflict(&a, &b), want, "{a} vs {b}");
            assert_eq!(conflict(&b, &a), want, "{b} vs {a}");
        }
    }

    #[test]
    fn port_mappings_are_portmaps_shape() {
        assert_eq!(port_mappings(&[]), None);
        assert_eq!(
            port_mappings(&[hp("TCP", "0.0.0.0", 8080), hp("UDP", "127.0.0.1", 5353)]).unwrap(),
            json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 80, "protocol": "udp", "hostIP": "127.0.0.1"}
            ])
        );
    }

    #[test]
    fn a_port_in_use_cannot_be_reserved_and_a_reserved_port_is_held() {
        // Ports from the kernel, on loopback only.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let e = reserve(&[hp("TCP", "127.0.0.1", port)]).unwrap_err();
        assert!(
            e.contains(&format!("hostPort 127.0.0.1:{port}/TCP: cannot be held")),
            "{e}"
        );
        drop(l);
        let held = reserve(&[hp("TCP", "127.0.0.1", port)]).unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        drop(held);
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
