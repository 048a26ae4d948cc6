//! Eviction thresholds and node reservations as KubeletConfiguration writes them, parsed into
//! typed values (pure). Key names, defaults and meaning follow kubelet:
//!
//! ```yaml
//! evictionHard: {memory.available: "100Mi", nodefs.available: "10%"}
//! evictionSoft: {memory.available: "200Mi"}
//! evictionSoftGracePeriod: {memory.available: "30s"}
//! evictionMinimumReclaim: {memory.available: "50Mi"}
//! evictionPressureTransitionPeriod: 5m
//! evictionMaxPodGracePeriod: 0
//! systemReserved: {memory: 128Mi, cpu: 100m}
//! kubeReserved: {memory: 64Mi}
//! ```
//!
//! As in kubelet, giving `evictionHard` replaces the whole default map (a signal left out has
//! no hard threshold), and a threshold of `0` or `0%` switches that signal off.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::quantity;

/// What an eviction threshold watches (kubelet's eviction signals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Signal {
    /// Node memory: capacity minus the node's working set.
    MemoryAvailable,
    /// The pods' memory: `kubepods`' limit (capacity minus reservations) minus its working
    /// set. kubelet derives it from `memory.available`'s thresholds; so does tidelet.
    AllocatableMemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    /// tidelet's images live on the state directory's file system; these watch the file
    /// system of the image store, which is usually the same one.
    ImageFsAvailable,
    ImageFsInodesFree,
    PidAvailable,
}

/// The node condition a signal's pressure raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Condition {
    MemoryPressure,
    DiskPressure,
    PIDPressure,
}

impl Condition {
    pub const ALL: [Condition; 3] = [
        Condition::MemoryPressure,
        Condition::DiskPressure,
        Condition::PIDPressure,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::MemoryPressure => "MemoryPressure",
            Condition::DiskPressure => "DiskPressure",
            Condition::PIDPressure => "PIDPressure",
        }
    }
}

impl Signal {
    /// Every signal a config may name (allocatableMemory.available is derived, never named).
    pub const CONFIGURABLE: [Signal; 6] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::AllocatableMemoryAvailable => "allocatableMemory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        Signal::CONFIGURABLE.into_iter().find(|x| x.as_str() == s)
    }

    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => {
                Condition::MemoryPressure
            }
            Signal::PidAvailable => Condition::PIDPressure,
            _ => Condition::DiskPressure,
        }
    }

    /// The resource named in events and eviction messages.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => "memory",
            Signal::PidAvailable => "pids",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            _ => "ephemeral-storage",
        }
    }

    /// Whether the signal counts bytes (memory, disk space) rather than inodes or pids.
    pub fn in_bytes(self) -> bool {
        matches!(
            self,
            Signal::MemoryAvailable
                | Signal::AllocatableMemoryAvailable
                | Signal::NodeFsAvailable
                | Signal::ImageFsAvailable
        )
    }

    /// The order kubelet acts in when several thresholds are met: memory first.
    pub fn priority(self) -> u8 {
        match self {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => 0,
            Signal::PidAvailable => 1,
            Signal::NodeFsAvailable | Signal::NodeFsInodesFree => 2,
            Signal::ImageFsAvailable | Signal::ImageFsInodesFree => 3,
        }
    }
}

/// A threshold's value: an absolute quantity or a fraction of the signal's capacity.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Value {
    Quantity(i64),
    /// 0 < p <= 1.
    Percentage(f64),
}

impl Value {
    /// The value in the signal's units, given its capacity.
    pub fn resolve(self, capacity: i64) -> i64 {
        match self {
            Value::Quantity(q) => q,
            Value::Percentage(p) => (capacity as f64 * p).round() as i64,
        }
    }

    fn is_zero(self) -> bool {
        match self {
            Value::Quantity(q) => q == 0,
            Value::Percentage(p) => p == 0.0,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Quantity(q) => write!(f, "{q}"),
            Value::Percentage(p) => write!(f, "{}%", p * 100.0),
        }
    }
}

/// "signal < value": met while the signal's available amount is below the value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Threshold {
    pub signal: Signal,
    pub value: Value,
    /// How long it must be met before pods are evicted (0 for hard thresholds).
    pub grace: Duration,
    /// Once met, it stays met until the signal is this much above the value.
    pub min_reclaim: Option<Value>,
    pub hard: bool,
}

/// Everything the eviction manager is configured with.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EvictionConfig {
    pub thresholds: Vec<Threshold>,
    /// How long a node condition stays set after its threshold was last met.
    pub pressure_transition_period: Duration,
    /// Longest grace period a soft eviction gives a pod (hard evictions kill at once).
    pub max_pod_grace_period: Duration,
}

impl Default for EvictionConfig {
    /// kubelet's defaults: what an empty config gives.
    fn default() -> Self {
        parse(&RawEviction::default()).expect("the defaults parse")
    }
}

/// kubelet's default `evictionHard`.
pub fn default_hard() -> Vec<(Signal, Value)> {
    vec![
        (Signal::MemoryAvailable, Value::Quantity(100 << 20)),
        (Signal::NodeFsAvailable, Value::Percentage(0.10)),
        (Signal::NodeFsInodesFree, Value::Percentage(0.05)),
        (Signal::ImageFsAvailable, Value::Percentage(0.15)),
    ]
}

/// The eviction keys of the config file, as read.
#[derive(Debug, Default, Clone)]
pub struct RawEviction {
    pub hard: Option<BTreeMap<String, String>>,
    pub soft: Option<BTreeMap<String, String>>,
    pub soft_grace_period: Option<BTreeMap<String, String>>,
    pub minimum_reclaim: Option<BTreeMap<String, String>>,
    pub pressure_transition_period: Option<String>,
    pub max_pod_grace_period: Option<i64>,
}

/// A config key that cannot be used: `field` is the key as written (`evictionHard[memory.available]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

fn ferr(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parse a threshold value: a quantity (`100Mi`, `1000` pids) or a percentage (`10%`).
pub fn parse_value(s: &str) -> Result<Value, String> {
    if let Some(p) = s.strip_suffix('%') {
        let v: f64 = p
            .parse()
            .map_err(|_| format!("{s:?} is not a percentage like 10%"))?;
        if !(0.0..=100.0).contains(&v) || !v.is_finite() {
            return Err(format!("{s:?} must be between 0% and 100%"));
        }
        return Ok(Value::Percentage(v / 100.0));
    }
    let q = quantity::parse_units(s).map_err(|e| e.to_string())?;
    if q < 0 {
        return Err(format!("{s:?} must not be negative"));
    }
    Ok(Value::Quantity(q))
}

fn signal_of(map: &str, key: &str) -> Result<Signal, FieldError> {
    Signal::parse(key).ok_or_else(|| {
        let known: Vec<_> = Signal::CONFIGURABLE.iter().map(|s| s.as_str()).collect();
        ferr(
            format!("{map}[{key}]"),
            format!("unknown eviction signal; known: {}", known.join(", ")),
        )
    })
}

fn duration(field: String, s: &str) -> Result<Duration, FieldError> {
    crate::quantity::parse_duration(s)
        .ok_or_else(|| ferr(field, format!("{s:?} is not a duration like 30s")))
}

/// Turn the raw keys into thresholds, checking every name and value (kubelet's rules: a soft
/// threshold needs a grace period, a grace period or minimum reclaim needs a threshold).
pub fn parse(raw: &RawEviction) -> Result<EvictionConfig, FieldError> {
    let mut out = EvictionConfig {
        thresholds: Vec::new(),
        pressure_transition_period: Duration::from_secs(300),
        max_pod_grace_period: Duration::ZERO,
    };
    let mut thresholds = Vec::new();
    let hard: Vec<(Signal, Value)> = match &raw.hard {
        None => default_hard(),
        Some(m) => {
            let mut v = Vec::new();
            for (k, s) in m {
                let sig = signal_of("evictionHard", k)?;
                let val = parse_value(s).map_err(|r| ferr(format!("evictionHard[{k}]"), r))?;
                v.push((sig, val));
            }
            v
        }
    };
    let mut grace = BTreeMap::new();
    for (k, s) in raw.soft_grace_period.iter().flatten() {
        let sig = signal_of("evictionSoftGracePeriod", k)?;
        grace.insert(sig, duration(format!("evictionSoftGracePeriod[{k}]"), s)?);
    }
    let mut reclaim = BTreeMap::new();
    for (k, s) in raw.minimum_reclaim.iter().flatten() {
        let sig = signal_of("evictionMinimumReclaim", k)?;
        let v = parse_value(s).map_err(|r| ferr(format!("evictionMinimumReclaim[{k}]"), r))?;
        reclaim.insert(sig, v);
    }
    for (signal, value) in hard {
        if value.is_zero() {
            continue;
        }
        thresholds.push(Threshold {
            signal,
            value,
            grace: Duration::ZERO,
            min_reclaim: reclaim.get(&signal).copied(),
            hard: true,
        });
    }
    for (k, s) in raw.soft.iter().flatten() {
        let signal = signal_of("evictionSoft", k)?;
        let value = parse_value(s).map_err(|r| ferr(format!("evictionSoft[{k}]"), r))?;
        let g = grace.get(&signal).copied().ok_or_else(|| {
            ferr(
                format!("evictionSoft[{k}]"),
                format!("a soft threshold needs a grace period: add evictionSoftGracePeriod[{k}]"),
            )
        })?;
        if value.is_zero() {
            continue;
        }
        thresholds.push(Threshold {
            signal,
            value,
            grace: g,
            min_reclaim: reclaim.get(&signal).copied(),
            hard: false,
        });
    }
    for sig in grace.keys() {
        if !raw.soft.iter().flatten().any(|(k, _)| k == sig.as_str()) {
            return Err(ferr(
                format!("evictionSoftGracePeriod[{}]", sig.as_str()),
                "no evictionSoft threshold for this signal",
            ));
        }
    }
    // kubelet: the pods' memory is watched with memory.available's thresholds too, against
    // node allocatable.
    let derived: Vec<_> = thresholds
        .iter()
        .filter(|t| t.signal == Signal::MemoryAvailable)
        .map(|t| Threshold {
            signal: Signal::AllocatableMemoryAvailable,
            ..t.clone()
        })
        .collect();
    thresholds.extend(derived);
    // One order whatever the map's: equal configs compare equal.
    thresholds.sort_by_key(|t| (t.signal, !t.hard));
    out.thresholds = thresholds;
    if let Some(s) = &raw.pressure_transition_period {
        out.pressure_transition_period = duration("evictionPressureTransitionPeriod".into(), s)?;
    }
    if let Some(v) = raw.max_pod_grace_period {
        if v < 0 {
            return Err(ferr(
                "evictionMaxPodGracePeriod",
                format!("{v} must not be negative"),
            ));
        }
        out.max_pod_grace_period = Duration::from_secs(v as u64);
    }
    Ok(out)
}

/// Resources a reservation may hold back (`systemReserved`, `kubeReserved`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reservation {
    pub cpu_milli: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pids: i64,
}

/// Parse `systemReserved` / `kubeReserved` (`map` names which, for errors).
pub fn parse_reservation(
    map: &str,
    raw: Option<&BTreeMap<String, String>>,
) -> Result<Reservation, FieldError> {
    let mut r = Reservation::default();
    for (k, v) in raw.into_iter().flatten() {
        let field = format!("{map}[{k}]");
        let q = |s: &str| -> Result<i64, FieldError> {
            let n = if k == "cpu" {
                quantity::parse_milli(s)
            } else {
                quantity::parse_units(s)
            }
            .map_err(|e| ferr(field.clone(), e.to_string()))?;
            if n < 0 {
                return Err(ferr(field.clone(), format!("{s:?} must not be negative")));
            }
            Ok(n)
        };
        match k.as_str() {
            "cpu" => r.cpu_milli = q(v)?,
            "memory" => r.memory = q(v)?,
            "ephemeral-storage" => r.ephemeral_storage = q(v)?,
            "pid" => r.pids = q(v)?,
            _ => {
                return Err(ferr(
                    field,
                    "unknown resource; known: cpu, memory, ephemeral-storage, pid",
                ))
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn values_parse_like_kubelet() {
        let cases: &[(&str, Result<Value, ()>)] = &[
            ("100Mi", Ok(Value::Quantity(100 << 20))),
            ("10%", Ok(Value::Percentage(0.10))),
            ("0.5%", Ok(Value::Percentage(0.005))),
            ("0", Ok(Value::Quantity(0))),
            ("1000", Ok(Value::Quantity(1000))),
            ("101%", Err(())),
            ("-1%", Err(())),
            ("-5Mi", Err(())),
            ("lots", Err(())),
            ("%", Err(())),
            ("", Err(())),
        ];
        for (s, want) in cases {
            assert_eq!(parse_value(s).map_err(|_| ()), *want, "{s:?}");
        }
        assert_eq!(Value::Percentage(0.1).resolve(1000), 100);
        assert_eq!(Value::Quantity(7).resolve(1000), 7);
    }

    #[test]
    fn defaults_are_kubelets() {
        let c = EvictionConfig::default();
        assert_eq!(c, parse(&RawEviction::default()).unwrap());
        let names: Vec<_> = c
            .thresholds
            .iter()
            .map(|t| (t.signal.as_str(), t.value.to_string(), t.hard))
            .collect();
        assert_eq!(
            names,
            [
                ("memory.available", "104857600".to_string(), true),
                ("allocatableMemory.available", "104857600".into(), true),
                ("nodefs.available", "10%".into(), true),
                ("nodefs.inodesFree", "5%".into(), true),
                ("imagefs.available", "15%".into(), true),
            ]
        );
        assert_eq!(c.pressure_transition_period, Duration::from_secs(300));
    }

    #[test]
    fn hard_replaces_defaults_and_zero_switches_off() {
        let raw = RawEviction {
            hard: map(&[("memory.available", "200Mi"), ("nodefs.available", "0%")]),
            ..Default::default()
        };
        let c = parse(&raw).unwrap();
        let sigs: Vec<_> = c.thresholds.iter().map(|t| t.signal).collect();
        assert_eq!(
            sigs,
            [Signal::MemoryAvailable, Signal::AllocatableMemoryAvailable]
        );
    }

    #[test]
    fn soft_thresholds_need_grace_periods() {
        let raw = RawEviction {
            hard: map(&[]),
            soft: map(&[("memory.available", "300Mi"), ("pid.available", "10%")]),
            soft_grace_period: map(&[("memory.available", "30s"), ("pid.available", "1m")]),
            minimum_reclaim: map(&[("memory.available", "50Mi")]),
            pressure_transition_period: Some("10s".into()),
            max_pod_grace_period: Some(5),
        };
        let c = parse(&raw).unwrap();
        let mem = c
            .thresholds
            .iter()
            .find(|t| t.signal == Signal::MemoryAvailable)
            .unwrap();
        assert!(!mem.hard);
        assert_eq!(mem.grace, Duration::from_secs(30));
        assert_eq!(mem.min_reclaim, Some(Value::Quantity(50 << 20)));
        assert_eq!(c.pressure_transition_period, Duration::from_secs(10));
        assert_eq!(c.max_pod_grace_period, Duration::from_secs(5));
    }

    #[test]
    fn bad_keys_and_values_name_the_field() {
        let cases: Vec<(RawEviction, &str)> = vec![
            (
                RawEviction {
                    hard: map(&[("memory.avail", "1Mi")]),
                    ..Default::default()
                },
                "evictionHard[memory.avail]",
            ),
            (
                RawEviction {
                    hard: map(&[("memory.available", "1 Mi")]),
                    ..Default::default()
                },
                "evictionHard[memory.available]",
            ),
            (
                RawEviction {
                    soft: map(&[("memory.available", "1Mi")]),
                    ..Default::default()
                },
                "evictionSoft[memory.available]",
            ),
            (
                RawEviction {
                    soft_grace_period: map(&[("memory.available", "1m")]),
                    ..Default::default()
                },
                "evictionSoftGracePeriod[memory.available]",
            ),
            (
                RawEviction {
                    soft: map(&[("memory.available", "1Mi")]),
                    soft_grace_period: map(&[("memory.available", "soon")]),
                    ..Default::default()
                },
                "evictionSoftGracePeriod[memory.available]",
            ),
            (
                RawEviction {
                    minimum_reclaim: map(&[("nodefs.available", "200%")]),
                    ..Default::default()
                },
                "evictionMinimumReclaim[nodefs.available]",
            ),
            (
                RawEviction {
                    pressure_transition_period: Some("5 minutes".into()),
                    ..Default::default()
                },
                "evictionPressureTransitionPeriod",
            ),
            (
                RawEviction {
                    max_pod_grace_period: Some(-1),
                    ..Default::default()
                },
                "evictionMaxPodGracePeriod",
            ),
        ];
        for (raw, field) in cases {
            let e = parse(&raw).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn reservations() {
        let r = parse_reservation(
            "systemReserved",
            map(&[("cpu", "500m"), ("memory", "1Gi"), ("pid", "100")]).as_ref(),
        )
        .unwrap();
        assert_eq!(
            r,
            Reservation {
                cpu_milli: 500,
                memory: 1 << 30,
                ephemeral_storage: 0,
                pids: 100
            }
        );
        for (k, v) in [("gpu", "1"), ("memory", "-1Gi"), ("cpu", "x")] {
            let e = parse_reservation("kubeReserved", map(&[(k, v)]).as_ref()).unwrap_err();
            assert_eq!(e.field, format!("kubeReserved[{k}]"));
        }
    }
}
