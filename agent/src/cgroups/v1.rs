//! The cgroup v1 backend: one hierarchy per controller (or combined ones such as
//! `cpu,cpuacct`), each mounted below the mount root. A tidelet cgroup path exists in every
//! hierarchy tidelet uses, and a process joins it by being written to each one's
//! `cgroup.procs`.
//!
//! New `cpuset` cgroups start with empty `cpuset.cpus`/`cpuset.mems`, and the kernel refuses
//! tasks in them, so every level copies its parent's values when its own are empty.

use std::path::{Path, PathBuf};

use super::common::{checked, kill_until_empty, mkdir, read, rel, remove_trees, tree_pids, write};
use super::devices::{self, DeviceRule};
use super::mountinfo::Hierarchy;
use super::{cpu, cpuset, memory, pids, Cgroups, Error, Resources, Result, Version};

/// Controllers tidelet needs to set its limits.
pub const REQUIRED: &[&str] = &["memory", "cpu", "pids"];
/// Hierarchies a tidelet cgroup is created in when the host mounts them.
pub const USED: &[&str] = &[
    "memory", "cpu", "cpuacct", "pids", "cpuset", "freezer", "devices", "blkio",
];

#[derive(Debug, Clone)]
pub struct V1 {
    /// The used hierarchies, one entry per mount.
    hierarchies: Vec<Hierarchy>,
}

impl V1 {
    /// Keep the hierarchies tidelet uses; fails naming the required controllers that none of
    /// them carries.
    pub fn new(hierarchies: Vec<Hierarchy>) -> Result<V1> {
        let used: Vec<Hierarchy> = hierarchies
            .into_iter()
            .filter(|h| h.controllers.iter().any(|c| USED.contains(&c.as_str())))
            .collect();
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|r| !used.iter().any(|h| h.controllers.iter().any(|c| c == r)))
            .collect();
        if !missing.is_empty() {
            let root = used
                .first()
                .and_then(|h| h.mount_point.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default();
            return Err(Error::MissingControllers {
                root,
                missing: missing.join(", "),
                hint:
                    "cgroup v1: mount each as its own hierarchy (e.g. `mount -t cgroup -o memory \
                       cgroup /sys/fs/cgroup/memory`) or enable it in the kernel (CONFIG_MEMCG, \
                       CONFIG_CFS_BANDWIDTH, CONFIG_CGROUP_PIDS)"
                        .into(),
            });
        }
        Ok(V1 { hierarchies: used })
    }

    fn mount_of(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.mount_point.as_path())
    }

    fn dir(&self, controller: &str, path: &Path) -> Option<PathBuf> {
        self.mount_of(controller).map(|m| m.join(path))
    }

    fn bases(&self, path: &Path) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| h.mount_point.join(path))
            .collect()
    }

    /// Create `path` level by level in hierarchy `h`.
    fn create(&self, h: &Hierarchy, path: &Path) -> Result<()> {
        let has = |c: &str| h.controllers.iter().any(|x| x == c);
        let mut dir = h.mount_point.clone();
        for component in path.components() {
            let parent = dir.clone();
            dir.push(component);
            let created = mkdir(&dir)?;
            if has("cpuset") {
                inherit_cpuset(&parent, &dir)?;
            }
            if created && has("memory") {
                memory::use_hierarchy_v1(&dir);
            }
        }
        Ok(())
    }
}

/// Copy `cpuset.cpus` and `cpuset.mems` from `parent` where `dir`'s are empty.
fn inherit_cpuset(parent: &Path, dir: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if read(&dir.join(file))?.trim().is_empty() {
            let value = read(&parent.join(file))?;
            write(dir, file, value.trim())?;
        }
    }
    Ok(())
}

impl Cgroups for V1 {
    fn version(&self) -> Version {
        Version::V1
    }

    fn apply(&self, path: &str, res: &Resources) -> Result<()> {
        let p = checked(path)?;
        for h in &self.hierarchies {
            self.create(h, p)?;
        }
        let dir = |c| {
            self.dir(c, p)
                .expect("V1::new checked the required controllers")
        };
        memory::apply_v1(&dir("memory"), res)?;
        cpu::apply_v1(&dir("cpu"), res)?;
        pids::apply(&dir("pids"), res)?;
        tracing::debug!(cgroup = path, ?res, "cgroup v1 applied");
        Ok(())
    }

    fn procs_files(&self, path: &str) -> Vec<PathBuf> {
        self.bases(rel(path))
            .into_iter()
            .map(|b| b.join("cgroup.procs"))
            .collect()
    }

    fn oom_kill_file(&self, path: &str) -> PathBuf {
        let dir = self.dir("memory", rel(path));
        dir.expect("V1::new checked the required controllers")
            .join(memory::OOM_FILE_V1)
    }

    fn pids(&self, path: &str) -> Result<Vec<i32>> {
        tree_pids(&self.bases(rel(path)))
    }

    fn kill_all(&self, path: &str) -> Result<()> {
        let p = checked(path)?;
        let bases = self.bases(p);
        kill_until_empty(p, || Ok(()), || tree_pids(&bases))
    }

    fn remove(&self, path: &str) -> Result<()> {
        let p = checked(path)?;
        remove_trees(p, &self.bases(p))
    }

    fn memory_sample(&self, path: &str) -> Result<super::MemorySample> {
        let dir = self.dir("memory", rel(path));
        memory::sample_v1(&dir.expect("V1::new checked the required controllers"))
    }

    fn memory_files(&self, path: &str) -> super::MemoryFiles {
        let dir = self.dir("memory", rel(path));
        let dir = dir.expect("V1::new checked the required controllers");
        super::MemoryFiles::V1 {
            usage: dir.join(memory::USAGE_V1),
            event_control: dir.join("cgroup.event_control"),
        }
    }

    fn set_cpuset(&self, path: &str, cpus: &str) -> Result<()> {
        let p = checked(path)?;
        let dir = self.dir("cpuset", p).ok_or_else(|| {
            let root = self
                .hierarchies
                .first()
                .and_then(|h| h.mount_point.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default();
            cpuset::v1_missing(&root)
        })?;
        cpuset::set_cpus(&dir, cpus)?;
        tracing::debug!(cgroup = path, cpus, "cpuset set");
        Ok(())
    }

    fn set_devices(&self, path: &str, rules: &[DeviceRule]) -> Result<()> {
        let p = checked(path)?;
        let dir = self
            .dir("devices", p)
            .ok_or_else(|| Error::MissingControllers {
                root: self
                    .hierarchies
                    .first()
                    .and_then(|h| h.mount_point.parent())
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                missing: "devices".into(),
                hint: "cgroup v1: mount it (`mount -t cgroup -o devices cgroup \
                   /sys/fs/cgroup/devices`) or enable CONFIG_CGROUP_DEVICE"
                    .into(),
            })?;
        // One line per write: the kernel parses one rule per write(2).
        for (file, line) in devices::v1_lines(rules) {
            write(&dir, file, &line)?;
        }
        tracing::debug!(cgroup = path, rules = rules.len(), "device rules written");
        Ok(())
    }
}
