//! Node capacity, node allocatable and admission by requests (pure), as kubelet computes them:
//!
//! - allocatable = capacity - systemReserved - kubeReserved - the hard eviction threshold
//!   (memory.available for memory, nodefs.available for ephemeral-storage);
//! - the pods' top cgroup `kubepods` is limited to capacity - reservations, *not* minus the
//!   eviction threshold: the gap between the two is where eviction acts before the kernel's
//!   OOM killer would;
//! - a pod is admitted when its requests fit allocatable minus what the admitted pods request;
//!   else it is rejected with `OutOf<resource>`.

use super::config::{EvictionConfig, Reservation, Signal};

/// What the node has (cpu in millicores, memory and storage in bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resources {
    pub cpu_milli: i64,
    pub memory: i64,
    pub pods: i64,
    pub ephemeral_storage: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeResources {
    pub capacity: Resources,
    pub allocatable: Resources,
    /// Limits of `kubepods`: memory bytes (capacity - reservations), cpu millicores.
    pub pods_memory_limit: i64,
    pub pods_cpu_milli: i64,
    /// `kubepods`' pids limit when a pid reservation is given.
    pub pods_pids_limit: Option<i64>,
}

fn hard_value(cfg: &EvictionConfig, signal: Signal, capacity: i64) -> i64 {
    cfg.thresholds
        .iter()
        .filter(|t| t.hard && t.signal == signal)
        .map(|t| t.value.resolve(capacity))
        .max()
        .unwrap_or(0)
}

/// A configuration that cannot work on this node (checked at start, naming the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FitError {
    pub field: String,
    pub reason: String,
}

fn mib(b: i64) -> String {
    format!("{:.1}Mi", b as f64 / (1 << 20) as f64)
}

/// Compute allocatable and the `kubepods` limits; errors when reservations or thresholds do
/// not fit the machine (`pid_max` is the node's pid capacity).
pub fn node_resources(
    capacity: Resources,
    pid_max: i64,
    system: &Reservation,
    kube: &Reservation,
    cfg: &EvictionConfig,
) -> Result<NodeResources, FitError> {
    let reserved_mem = system.memory + kube.memory;
    let reserved_cpu = system.cpu_milli + kube.cpu_milli;
    let reserved_disk = system.ephemeral_storage + kube.ephemeral_storage;
    let reserved_pids = system.pids + kube.pids;
    let which = |what: &str| {
        if kube.memory == 0 && kube.cpu_milli == 0 && kube.ephemeral_storage == 0 && kube.pids == 0
        {
            format!("systemReserved[{what}]")
        } else {
            format!("systemReserved[{what}] + kubeReserved[{what}]")
        }
    };
    if reserved_mem >= capacity.memory {
        return Err(FitError {
            field: which("memory"),
            reason: format!(
                "reserves {} but the node has only {} of memory",
                mib(reserved_mem),
                mib(capacity.memory)
            ),
        });
    }
    if reserved_cpu >= capacity.cpu_milli {
        return Err(FitError {
            field: which("cpu"),
            reason: format!(
                "reserves {}m but the node has only {}m of cpu",
                reserved_cpu, capacity.cpu_milli
            ),
        });
    }
    if capacity.ephemeral_storage > 0 && reserved_disk >= capacity.ephemeral_storage {
        return Err(FitError {
            field: which("ephemeral-storage"),
            reason: format!(
                "reserves {} but the state directory's file system has {}",
                mib(reserved_disk),
                mib(capacity.ephemeral_storage)
            ),
        });
    }
    if reserved_pids >= pid_max {
        return Err(FitError {
            field: which("pid"),
            reason: format!("reserves {reserved_pids} pids but pid_max is {pid_max}"),
        });
    }
    let pods_memory_limit = capacity.memory - reserved_mem;
    let mem_hard = hard_value(cfg, Signal::MemoryAvailable, capacity.memory);
    if mem_hard >= pods_memory_limit {
        return Err(FitError {
            field: "evictionHard[memory.available]".into(),
            reason: format!(
                "{} is not below the memory left for pods ({} of {} after reservations)",
                mib(mem_hard),
                mib(pods_memory_limit),
                mib(capacity.memory)
            ),
        });
    }
    for t in &cfg.thresholds {
        let (cap, key) = match t.signal {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => {
                (capacity.memory, "memory.available")
            }
            Signal::PidAvailable => (pid_max, "pid.available"),
            _ => continue,
        };
        let v = t.value.resolve(cap);
        if v >= cap {
            let map = if t.hard {
                "evictionHard"
            } else {
                "evictionSoft"
            };
            return Err(FitError {
                field: format!("{map}[{key}]"),
                reason: format!("{} is not below the node's capacity {cap}", t.value),
            });
        }
    }
    let disk_hard = hard_value(cfg, Signal::NodeFsAvailable, capacity.ephemeral_storage);
    let allocatable = Resources {
        cpu_milli: capacity.cpu_milli - reserved_cpu,
        memory: pods_memory_limit - mem_hard,
        pods: capacity.pods,
        ephemeral_storage: (capacity.ephemeral_storage - reserved_disk - disk_hard).max(0),
    };
    Ok(NodeResources {
        capacity,
        allocatable,
        pods_memory_limit,
        pods_cpu_milli: capacity.cpu_milli - reserved_cpu,
        pods_pids_limit: (reserved_pids > 0).then_some(pid_max - reserved_pids),
    })
}

/// A pod's requests as admission counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub cpu_milli: i64,
    pub memory: i64,
}

/// Why a pod does not fit: kubelet's reason (`OutOfcpu`, `OutOfmemory`, `OutOfpods`) and
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

/// Whether `pod` fits next to `admitted` (requests of the pods already admitted).
pub fn fits(
    allocatable: &Resources,
    admitted: &[Requests],
    pod: Requests,
) -> Result<(), Rejection> {
    let used_cpu: i64 = admitted.iter().map(|r| r.cpu_milli).sum();
    let used_mem: i64 = admitted.iter().map(|r| r.memory).sum();
    let reject = |res: &str, requested: String, used: String, capacity: String| {
        Rejection {
        reason: format!("OutOf{res}"),
        message: format!(
            "Pod was rejected: Node didn't have enough resource: {res}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
    };
    if admitted.len() as i64 + 1 > allocatable.pods {
        return Err(reject(
            "pods",
            "1".into(),
            admitted.len().to_string(),
            allocatable.pods.to_string(),
        ));
    }
    if pod.cpu_milli > 0 && used_cpu + pod.cpu_milli > allocatable.cpu_milli {
        return Err(reject(
            "cpu",
            pod.cpu_milli.to_string(),
            used_cpu.to_string(),
            allocatable.cpu_milli.to_string(),
        ));
    }
    if pod.memory > 0 && used_mem + pod.memory > allocatable.memory {
        return Err(reject(
            "memory",
            pod.memory.to_string(),
            used_mem.to_string(),
            allocatable.memory.to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::config::{parse, RawEviction};
    use super::*;

    const GI: i64 = 1 << 30;
    const MI: i64 = 1 << 20;

    fn cap() -> Resources {
        Resources {
            cpu_milli: 2000,
            memory: 4 * GI,
            pods: 110,
            ephemeral_storage: 100 * GI,
        }
    }

    #[test]
    fn allocatable_subtracts_reservations_and_hard_thresholds() {
        let cfg = parse(&RawEviction::default()).unwrap();
        let sys = Reservation {
            cpu_milli: 500,
            memory: GI,
            ephemeral_storage: 0,
            pids: 0,
        };
        let kube = Reservation {
            memory: 512 * MI,
            ..Default::default()
        };
        let n = node_resources(cap(), 4_194_304, &sys, &kube, &cfg).unwrap();
        assert_eq!(n.pods_memory_limit, 4 * GI - GI - 512 * MI);
        assert_eq!(n.allocatable.memory, 4 * GI - GI - 512 * MI - 100 * MI);
        assert_eq!(n.allocatable.cpu_milli, 1500);
        assert_eq!(n.allocatable.ephemeral_storage, 90 * GI);
        assert_eq!(n.allocatable.pods, 110);
        assert_eq!(n.pods_pids_limit, None);
    }

    #[test]
    fn impossible_configs_name_the_key() {
        let cfg = parse(&RawEviction::default()).unwrap();
        let big_mem = Reservation {
            memory: 5 * GI,
            ..Default::default()
        };
        let big_cpu = Reservation {
            cpu_milli: 2000,
            ..Default::default()
        };
        let big_pid = Reservation {
            pids: 5_000_000,
            ..Default::default()
        };
        let none = Reservation::default();
        let e = node_resources(cap(), 4_194_304, &big_mem, &none, &cfg).unwrap_err();
        assert_eq!(e.field, "systemReserved[memory]", "{e}");
        let e = node_resources(cap(), 4_194_304, &none, &big_cpu, &cfg).unwrap_err();
        assert_eq!(e.field, "systemReserved[cpu] + kubeReserved[cpu]", "{e}");
        let e = node_resources(cap(), 4_194_304, &big_pid, &none, &cfg).unwrap_err();
        assert_eq!(e.field, "systemReserved[pid]", "{e}");
        let raw = RawEviction {
            hard: Some([("memory.available".to_string(), "5Gi".to_string())].into()),
            ..Default::default()
        };
        let e = node_resources(cap(), 4_194_304, &none, &none, &parse(&raw).unwrap()).unwrap_err();
        assert_eq!(e.field, "evictionHard[memory.available]", "{e}");
        let almost = Reservation {
            memory: 4 * GI - 50 * MI,
            ..Default::default()
        };
        let e = node_resources(cap(), 4_194_304, &almost, &none, &cfg).unwrap_err();
        assert_eq!(e.field, "evictionHard[memory.available]", "{e}");
    }

    #[test]
    fn admission_by_requests() {
        let alloc = Resources {
            cpu_milli: 1000,
            memory: 256 * MI,
            pods: 3,
            ephemeral_storage: 0,
        };
        let r = |cpu, mem| Requests {
            cpu_milli: cpu,
            memory: mem * MI,
        };
        let cases: &[(&[Requests], Requests, Option<&str>)] = &[
            (&[], r(1000, 256), None),
            (&[r(500, 100)], r(500, 156), None),
            (&[r(500, 100)], r(600, 10), Some("OutOfcpu")),
            (&[r(0, 200)], r(0, 57), Some("OutOfmemory")),
            (&[r(0, 0), r(0, 0), r(0, 0)], r(0, 0), Some("OutOfpods")),
            // BestEffort pods request nothing and always fit what is left.
            (&[r(1000, 256)], r(0, 0), None),
        ];
        for (admitted, pod, want) in cases {
            let got = fits(&alloc, admitted, *pod).err().map(|e| e.reason);
            assert_eq!(got.as_deref(), *want, "{admitted:?} + {pod:?}");
        }
        let e = fits(&alloc, &[r(0, 200)], r(0, 57)).unwrap_err();
        assert!(
            e.message.contains("memory, requested: 59768832"),
            "{}",
            e.message
        );
    }
}
