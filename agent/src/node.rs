//! Facts about the node that pods' specs and statuses need.

use std::net::IpAddr;

/// The node as tidelet sees it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// `status.hostIP`.
    pub ip: String,
    /// The host's hostname (what hostNetwork pods see).
    pub hostname: String,
    /// Bytes of memory (`MemTotal`), for oom_score_adj.
    pub memory_capacity: i64,
    pub cpus: usize,
    /// Whether tidelet holds CAP_SYS_RESOURCE, without which negative `oom_score_adj` values
    /// (Guaranteed pods, the infra process) cannot be applied.
    pub can_lower_oom_score: bool,
    /// The capabilities tidelet itself holds (`CapPrm`): what `ALL` and privileged containers
    /// get (containerd's `cap.Current()`), and the most any container can get.
    pub caps: crate::security::CapSet,
}

impl crate::pod::layout::HostName for Node {
    fn hostname(&self) -> &str {
        &self.hostname
    }
}

impl Node {
    pub fn detect(name: &str, ip: Option<&str>) -> Node {
        let memory_capacity = procfs_memtotal().unwrap_or(1 << 30);
        Node {
            name: name.to_string(),
            ip: ip.map(str::to_string).unwrap_or_else(detect_ip),
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| name.to_string()),
            memory_capacity,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            can_lower_oom_score: has_capability(CAP_SYS_RESOURCE),
            caps: crate::security::caps::own_permitted(std::path::Path::new("/proc")),
        }
    }
}

fn procfs_memtotal() -> Option<i64> {
    use procfs::Current;
    procfs::Meminfo::current().ok().map(|m| m.mem_total as i64)
}

/// The first IPv4 address of an interface that is up and not loopback; else 127.0.0.1.
/// (Read from the interfaces, never by sending anything.)
fn detect_ip() -> String {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return "127.0.0.1".into();
    };
    let mut v6 = None;
    for a in addrs {
        let up = a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
        let lo = a
            .flags
            .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK);
        if !up || lo {
            continue;
        }
        let Some(addr) = a.address else { continue };
        if let Some(sin) = addr.as_sockaddr_in() {
            return IpAddr::V4(sin.ip()).to_string();
        }
        if let Some(sin6) = addr.as_sockaddr_in6() {
            if !sin6.ip().is_unicast_link_local() && v6.is_none() {
                v6 = Some(IpAddr::V6(sin6.ip()).to_string());
            }
        }
    }
    v6.unwrap_or_else(|| "127.0.0.1".into())
}

const CAP_SYS_RESOURCE: u32 = 24;

/// Whether the effective capability set of this process has `cap`.
pub fn has_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

/// `/proc/sys/kernel/pid_max`: the node's pid capacity (kubelet's `pid.available` capacity).
pub fn pid_max(path: &std::path::Path) -> i64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768)
}

/// Bytes of the file system holding `path` (the node's `ephemeral-storage` capacity).
pub fn fs_capacity(path: &std::path::Path) -> i64 {
    nix::sys::statvfs::statvfs(path)
        .map(|s| (s.blocks() as i64).saturating_mul(s.fragment_size() as i64))
        .unwrap_or(0)
}

/// The node as a Kubernetes `Node` object (`tidelet get node -o json`): capacity, allocatable,
/// the pressure conditions and `Ready`.
pub fn node_object(
    node: &Node,
    res: &crate::eviction::allocatable::NodeResources,
    conditions: &std::collections::BTreeMap<
        crate::eviction::config::Condition,
        crate::eviction::policy::ConditionState,
    >,
    started_ns: i64,
    now_ns: i64,
) -> k8s_openapi::api::core::v1::Node {
    use k8s_openapi::api::core::v1::{
        Node as KNode, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;
    let list = |r: &crate::eviction::allocatable::Resources| -> BTreeMap<String, Quantity> {
        let mut m = BTreeMap::new();
        let cpu = if r.cpu_milli % 1000 == 0 {
            (r.cpu_milli / 1000).to_string()
        } else {
            format!("{}m", r.cpu_milli)
        };
        m.insert("cpu".into(), Quantity(cpu));
        m.insert("memory".into(), Quantity(format!("{}Ki", r.memory / 1024)));
        m.insert("pods".into(), Quantity(r.pods.to_string()));
        m.insert(
            "ephemeral-storage".into(),
            Quantity(format!("{}Ki", r.ephemeral_storage / 1024)),
        );
        m
    };
    let t = crate::pod::status::time;
    let mut conds: Vec<NodeCondition> = conditions
        .iter()
        .map(|(c, s)| {
            let (reason, status) = match (c, s.active) {
                (crate::eviction::config::Condition::MemoryPressure, true) => {
                    ("KubeletHasInsufficientMemory", "True")
                }
                (crate::eviction::config::Condition::MemoryPressure, false) => {
                    ("KubeletHasSufficientMemory", "False")
                }
                (crate::eviction::config::Condition::DiskPressure, true) => {
                    ("KubeletHasDiskPressure", "True")
                }
                (crate::eviction::config::Condition::DiskPressure, false) => {
                    ("KubeletHasNoDiskPressure", "False")
                }
                (crate::eviction::config::Condition::PIDPressure, true) => {
                    ("KubeletHasInsufficientPID", "True")
                }
                (crate::eviction::config::Condition::PIDPressure, false) => {
                    ("KubeletHasSufficientPID", "False")
                }
            };
            NodeCondition {
                type_: c.as_str().into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(s.message.clone()),
                last_transition_time: t(s.since_ns),
                last_heartbeat_time: t(now_ns),
            }
        })
        .collect();
    conds.push(NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("tidelet is posting ready status".into()),
        last_transition_time: t(started_ns),
        last_heartbeat_time: t(now_ns),
    });
    let uname = nix::sys::utsname::uname().ok();
    let s = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname
            .as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    KNode {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(node.name.clone()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), node.name.clone()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                ("kubernetes.io/arch".to_string(), host_arch().to_string()),
            ])),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            capacity: Some(list(&res.capacity)),
            allocatable: Some(list(&res.allocatable)),
            conditions: Some(conds),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: node.ip.clone(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: node.hostname.clone(),
                },
            ]),
            node_info: Some(NodeSystemInfo {
                architecture: host_arch().to_string(),
                operating_system: "linux".into(),
                kernel_version: s(|u| u.release()),
                kubelet_version: format!("tidelet/{}", env!("CARGO_PKG_VERSION")),
                container_runtime_version: format!("tidelet://{}", env!("CARGO_PKG_VERSION")),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The node's architecture in Kubernetes (GOARCH) terms.
/// The node is not ready for pods, as kubelet says when its runtime's network is not
/// (`Ready` False, reason `KubeletNotReady`, the runtime's message).
pub fn set_not_ready(n: &mut k8s_openapi::api::core::v1::Node, message: &str) {
    let conds = n
        .status
        .as_mut()
        .and_then(|s| s.conditions.as_mut())
        .into_iter()
        .flatten();
    for c in conds.filter(|c| c.type_ == "Ready") {
        c.status = "False".into();
        c.reason = Some("KubeletNotReady".into());
        c.message = Some(message.to_string());
    }
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Extended resources (device plugins) into the node's capacity (every device) and
/// allocatable (healthy devices), as kubelet reports them.
pub fn add_extended(
    n: &mut k8s_openapi::api::core::v1::Node,
    counts: &std::collections::BTreeMap<String, (u64, u64)>,
) {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let Some(st) = n.status.as_mut() else { return };
    for (name, (capacity, allocatable)) in counts {
        st.capacity
            .get_or_insert_with(Default::default)
            .insert(name.clone(), Quantity(capacity.to_string()));
        st.allocatable
            .get_or_insert_with(Default::default)
            .insert(name.clone(), Quantity(allocatable.to_string()));
    }
}
