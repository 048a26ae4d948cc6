//! The cgroup v2 backend: one unified hierarchy at the mount root.
//!
//! Controllers are distributed top-down: for a cgroup to have `memory.max`, every ancestor
//! from the root down must list `memory` in its `cgroup.subtree_control`. `apply` enables the
//! controllers in each ancestor of the path (never in the path itself: a cgroup with
//! controllers enabled for its children may not hold processes, the "no internal processes"
//! rule, so processes must live in leaves).

use std::path::{Path, PathBuf};

use super::common::{checked, kill_until_empty, mkdir, read, rel, remove_trees, tree_pids, write};
use super::devices::DeviceRule;
use super::{bpf, cpu, cpuset, memory, pids, Cgroups, Error, Resources, Result, Version};

/// Controllers tidelet needs on v2.
pub const REQUIRED: &[&str] = &["memory", "cpu", "pids"];

/// How to make controllers available, for error messages.
pub(crate) const ENABLE_HINT: &str =
    "enable them top-down by writing e.g. `+memory +cpu +pids` into \
    the parent's cgroup.subtree_control (under systemd, give tidelet's unit `Delegate=yes`); a \
    controller missing from the root's cgroup.controllers is not built into the kernel or is \
    still bound to a cgroup v1 hierarchy; a non-root cgroup that already holds processes \
    cannot enable controllers for children (EBUSY): processes belong in leaf cgroups";

#[derive(Debug, Clone)]
pub struct V2 {
    root: PathBuf,
    /// Enabled in the ancestors of every cgroup tidelet creates.
    controllers: Vec<String>,
}

impl V2 {
    /// The hierarchy at `root`, which must offer the `REQUIRED` controllers in its
    /// `cgroup.controllers`.
    pub fn new(root: &Path) -> Result<V2> {
        let file = root.join("cgroup.controllers");
        let available = read(&file)?;
        let available: Vec<&str> = available.split_whitespace().collect();
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|c| !available.contains(c))
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingControllers {
                root: root.to_path_buf(),
                missing: missing.join(", "),
                hint: format!(
                    "{} lists only {:?}; {ENABLE_HINT}",
                    file.display(),
                    available.join(" ")
                ),
            });
        }
        Ok(V2::with_controllers(root, REQUIRED))
    }

    /// The hierarchy at `root`, managing exactly `controllers` without checking that the host
    /// offers them (for hosts and tests with another set; limits of other controllers fail
    /// when written).
    pub fn with_controllers(root: &Path, controllers: &[&str]) -> V2 {
        V2 {
            root: root.to_path_buf(),
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// Make sure `dir`'s children get our controllers.
    fn enable_for_children(&self, dir: &Path) -> Result<()> {
        let file = dir.join("cgroup.subtree_control");
        let current = read(&file)?;
        let enabled: Vec<&str> = current
            .split_whitespace()
            .map(|c| c.trim_start_matches('+'))
            .collect();
        let missing: Vec<&str> = self
            .controllers
            .iter()
            .map(String::as_str)
            .filter(|c| !enabled.contains(c))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let value = missing
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        write(dir, "cgroup.subtree_control", &value).map_err(|e| match e {
            Error::Write { path, source, .. } => Error::EnableControllers {
                path,
                controllers: missing.join(", "),
                source,
            },
            other => other,
        })
    }
}

impl Cgroups for V2 {
    fn version(&self) -> Version {
        Version::V2
    }

    fn apply(&self, path: &str, res: &Resources) -> Result<()> {
        let p = checked(path)?;
        let mut dir = self.root.clone();
        for component in p.components() {
            self.enable_for_children(&dir)?;
            dir.push(component);
            mkdir(&dir)?;
        }
        memory::apply_v2(&dir, res)?;
        cpu::apply_v2(&dir, res)?;
        pids::apply(&dir, res)?;
        tracing::debug!(cgroup = path, ?res, "cgroup v2 applied");
        Ok(())
    }

    fn procs_files(&self, path: &str) -> Vec<PathBuf> {
        vec![self.root.join(rel(path)).join("cgroup.procs")]
    }

    fn oom_kill_file(&self, path: &str) -> PathBuf {
        self.root.join(rel(path)).join(memory::OOM_FILE_V2)
    }

    fn pids(&self, path: &str) -> Result<Vec<i32>> {
        tree_pids(&[self.root.join(rel(path))])
    }

    /// `cgroup.kill` (Linux 5.14+) kills the whole subtree at once, including processes forked
    /// meanwhile; without it every pid is sent SIGKILL until none is left.
    fn kill_all(&self, path: &str) -> Result<()> {
        let p = checked(path)?;
        let dir = self.root.join(p);
        let kill_file = dir.join("cgroup.kill");
        let nudge = || {
            if kill_file.exists() {
                match write(&dir, "cgroup.kill", "1") {
                    Err(Error::Write { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound => {}
                    other => other?,
                }
            }
            Ok(())
        };
        kill_until_empty(p, nudge, || tree_pids(std::slice::from_ref(&dir)))
    }

    fn remove(&self, path: &str) -> Result<()> {
        let p = checked(path)?;
        remove_trees(p, &[self.root.join(p)])
    }

    fn memory_sample(&self, path: &str) -> Result<super::MemorySample> {
        let p = rel(path);
        if p.as_os_str().is_empty() {
            return Err(Error::InvalidPath {
                path: path.to_string(),
                reason: "is the v2 root, which has no memory.current; use signals::node_memory",
            });
        }
        memory::sample_v2(&self.root.join(p))
    }

    fn memory_files(&self, path: &str) -> super::MemoryFiles {
        let dir = self.root.join(rel(path));
        super::MemoryFiles::V2 {
            events: dir.join(memory::EVENTS_V2),
            pressure: dir.join("memory.pressure"),
        }
    }

    fn set_cpuset(&self, path: &str, cpus: &str) -> Result<()> {
        let p = checked(path)?;
        cpuset::enable_v2(&self.root, p)?;
        cpuset::set_cpus(&self.root.join(p), cpus)?;
        tracing::debug!(cgroup = path, cpus, "cpuset set");
        Ok(())
    }

    /// Needs no controller: device programs attach to any cgroup v2 directory.
    fn set_devices(&self, path: &str, rules: &[DeviceRule]) -> Result<()> {
        let p = checked(path)?;
        bpf::apply(&self.root.join(p), rules)?;
        tracing::debug!(cgroup = path, rules = rules.len(), "device program set");
        Ok(())
    }
}
