//! Control groups behind one interface, v1 and v2, chosen by what the host mounts.
//!
//! Paths handed to a `Cgroups` are relative to each hierarchy's root, e.g.
//! `tidelet/kubepods/burstable/pod<uid>/app`; the mount root (`/sys/fs/cgroup`) and the
//! mountinfo file are parameters so that tests can run on temp dirs.
//!
//! Layout, as in youki: `mountinfo` decides v1 or v2 (pure), `v1` and `v2` are the two
//! backends behind the `Cgroups` trait, `memory`, `cpu` and `pids` turn `Resources` into each
//! controller's file values, and `common` holds the bounded file, kill and removal helpers.
//! `delegation` decides where the pods' tree goes under systemd on cgroup v2.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod bpf;
mod common;
mod cpu;
mod cpuset;
pub mod delegation;
pub mod devices;
mod memory;
pub mod mountinfo;
mod pids;
pub mod v1;
pub mod v2;

pub use cpu::{shares_to_weight, MAX_SHARES, MIN_SHARES};
pub use v1::V1;
pub use v2::V2;

/// Limits for one cgroup; `None` leaves the current value in place (the kernel's default,
/// unlimited, in a new cgroup). Memory, quota and pids limits of 0 or below mean unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Bytes.
    pub memory_limit: Option<i64>,
    /// v1 `cpu.shares` (v2 `cpu.weight` is derived from it as kubelet does).
    pub cpu_shares: Option<u64>,
    /// Microseconds per period.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub pids_limit: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An interface file refused a value (or is missing: the controller is not there).
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroups: {0}")]
    Unsupported(String),
    #[error("{path}: line {line}: {reason}")]
    Mountinfo {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    /// An interface file whose contents are not what the kernel writes there.
    #[error("{path}: field {field:?} has value {value:?}: {reason}")]
    Malformed {
        path: PathBuf,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("cgroup path {path:?} {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("cgroups at {root}: missing controller(s) {missing}: {hint}")]
    MissingControllers {
        root: PathBuf,
        missing: String,
        hint: String,
    },
    #[error("enabling {controllers} in {path}: {source}; {}", v2::ENABLE_HINT)]
    EnableControllers {
        path: PathBuf,
        controllers: String,
        #[source]
        source: std::io::Error,
    },
    /// The v2 device program could not be loaded or attached (names the cgroup and step).
    #[error(transparent)]
    Bpf(#[from] bpf::Error),
    /// Processes that would not go away in time (`kill_all`), or a cgroup the kernel still
    /// reports busy (`remove`).
    #[error("{path}: processes {pids:?} still there after {waited:?}")]
    Busy {
        path: PathBuf,
        pids: Vec<i32>,
        waited: Duration,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// True when a file of the cgroup was missing or vanished while being read (`ENOENT`, or
    /// `ENODEV` for a file of a cgroup removed while open): the cgroup is gone (a pod exiting),
    /// which a caller sampling many cgroups skips rather than treats as a failure.
    pub fn is_gone(&self) -> bool {
        matches!(self, Error::Io { source, .. } if io_is_gone(source))
    }
}

pub(crate) use common::read_bounded;
pub use common::{io_is_gone, MAX_FILE};
pub use memory::{working_set, MemorySample};

/// The files of a cgroup's memory controller that pressure triggers watch
/// (`Cgroups::memory_files`; `signals::TriggerSpec::for_cgroup` turns them into a spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryFiles {
    /// A usage threshold is registered with `usage` (`memory.usage_in_bytes`) through
    /// `event_control` (`cgroup.event_control`).
    V1 {
        usage: PathBuf,
        event_control: PathBuf,
    },
    /// `memory.events` (kernfs change notification) and `memory.pressure` (PSI triggers).
    V2 { events: PathBuf, pressure: PathBuf },
}

/// The operations tidelet needs on cgroups.
pub trait Cgroups: Send + Sync {
    fn version(&self) -> Version;
    /// Create `path` (and missing parents) and write `res` into it. Idempotent, and may be
    /// called again with new values. `path` must be below the hierarchy root, with plain
    /// components only (`InvalidPath` otherwise). On v2 the controllers are enabled in every
    /// ancestor of `path` but not in `path` itself: processes may only join leaves (a cgroup
    /// that has processes cannot later get child cgroups with limits).
    fn apply(&self, path: &str, res: &Resources) -> Result<()>;
    /// The `cgroup.procs` files a process must be written to in order to join `path`
    /// (one per v1 hierarchy tidelet uses; one on v2).
    fn procs_files(&self, path: &str) -> Vec<PathBuf>;
    /// The file whose `oom_kill N` line counts OOM kills in `path`
    /// (v2 `memory.events`, v1 `memory.oom_control`); see `read_oom_kills`.
    fn oom_kill_file(&self, path: &str) -> PathBuf;
    /// Every pid in `path` and below.
    fn pids(&self, path: &str) -> Result<Vec<i32>>;
    /// SIGKILL every process in `path` and below (v2: `cgroup.kill` where the kernel has
    /// it), repeating until none is left; `Busy` after 5 s. A missing `path` is fine.
    fn kill_all(&self, path: &str) -> Result<()>;
    /// Remove `path` and everything below it (children first). Missing is fine. While the
    /// kernel still reports a cgroup busy (processes exiting) it is retried, up to 3 s in
    /// total, then `Busy` names it and its pids.
    fn remove(&self, path: &str) -> Result<()>;
    /// Memory of `path` with kubelet's meaning: usage (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`), working set (usage minus v1 `total_inactive_file` / v2
    /// `inactive_file` of `memory.stat`, floored at 0) and capacity (the limit; `u64::MAX`
    /// when unlimited). A cgroup that is missing or vanishes while being read gives an error
    /// whose `is_gone()` is true. The v2 root has no such files: use `signals::node_memory`.
    fn memory_sample(&self, path: &str) -> Result<MemorySample>;
    /// The files pressure triggers on `path` use (see `MemoryFiles`).
    fn memory_files(&self, path: &str) -> MemoryFiles;
    /// Write `cpus` (a CPU list such as `0-1,4`) into `cpuset.cpus` of the existing cgroup
    /// `path` (created by `apply`). v1 needs the host's cpuset hierarchy, v2 the `cpuset`
    /// controller, which is enabled along the path here; `MissingControllers` otherwise. A
    /// missing `path` gives `Write` with `NotFound`.
    fn set_cpuset(&self, path: &str, cpus: &str) -> Result<()>;
    /// Restrict the device nodes processes in the existing cgroup `path` (created by `apply`)
    /// may open or create to `rules` (normally `devices::default_rules()` plus the allows of
    /// the container's devices), replacing earlier rules. v1 writes `devices.deny` /
    /// `devices.allow` (the kernel refuses to allow what an ancestor denies, and a leading
    /// deny-all only on a cgroup without children); v2 attaches an eBPF device program
    /// (`bpf`), replacing the one set before. A missing `path` is an error.
    fn set_devices(&self, path: &str, rules: &[devices::DeviceRule]) -> Result<()>;
}

/// Detect the cgroup version from `mountinfo` (normally `/proc/self/mountinfo`) for a cgroup
/// file system mounted at `mount_root` (normally `/sys/fs/cgroup`).
/// cgroup2 at `mount_root` itself gives v2 (which must offer memory, cpu and pids); cgroup v1
/// hierarchies below it give v1 (a hybrid host's cgroup2 at `mount_root/unified` is ignored).
pub fn detect(mount_root: &Path, mountinfo: &Path) -> Result<Box<dyn Cgroups>> {
    let text = std::fs::read_to_string(mountinfo).map_err(|source| Error::Io {
        path: mountinfo.to_path_buf(),
        source,
    })?;
    let mounts = mountinfo::parse(&text).map_err(|e| Error::Mountinfo {
        path: mountinfo.to_path_buf(),
        line: e.line,
        reason: e.reason,
    })?;
    let layout = mountinfo::layout(mount_root, &mounts).map_err(Error::Unsupported)?;
    tracing::info!(root = %mount_root.display(), ?layout, "cgroups detected");
    Ok(match layout {
        mountinfo::Layout::V2 { root } => Box::new(V2::new(&root)?),
        mountinfo::Layout::V1 { hierarchies } => Box::new(V1::new(hierarchies)?),
    })
}

/// Parse the OOM-kill count from the contents of a `memory.events` or `memory.oom_control` file.
pub fn parse_oom_kills(contents: &str) -> u64 {
    contents
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Read the OOM-kill count of a cgroup from the file `Cgroups::oom_kill_file` names.
pub fn read_oom_kills(file: &Path) -> std::io::Result<u64> {
    Ok(parse_oom_kills(&std::fs::read_to_string(file)?))
}

#[cfg(test)]
mod devices_tests;
#[cfg(test)]
mod privileged;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
