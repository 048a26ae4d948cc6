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
