//! Node allocatable, admission and eviction under resource pressure.
//!
//! The decisions are pure and table-tested: `config` (thresholds and reservations as
//! KubeletConfiguration writes them), `allocatable` (capacity, allocatable, fit), `admission`
//! (which desired pods may run), `policy` (observations -> node conditions and the threshold
//! to act on), `rank` (which pod goes first). `monitor` is the side-effecting half: a thread
//! that is woken by the kernel (PSI, cgroup memory thresholds and events) or by its timer,
//! reads the signals, asks `policy` and evicts. It reaches the agent only through `host`
//! (`EvictionHost`: pods, cgroups, settings, conditions, events, clock; `EvictNotice` is what it
//! hands back), which the agent implements and tests fake.

pub mod admission;
pub mod allocatable;
pub mod config;
pub mod host;
pub mod monitor;
pub mod policy;
pub mod rank;
