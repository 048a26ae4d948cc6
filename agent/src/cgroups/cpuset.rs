//! The cpuset controller: `cpuset.cpus` of a cgroup (the same file on v1 and v2), for the CPU
//! manager's exclusive CPUs and shared pool.
//!
//! v1: the `cpuset` hierarchy is optional (tidelet runs without it unless
//! `cpuManagerPolicy: static` asks for cpusets); new cgroups there already copy their parent's
//! `cpuset.cpus`/`cpuset.mems` when created (`v1::V1::apply`), so only the leaf is written.
//! v2: `cpuset` is not among the controllers tidelet always enables; it is enabled in each
//! ancestor's `cgroup.subtree_control` here, the first time a cpuset is set below it.

use std::path::Path;

use super::common::{read, write};
use super::{Error, Result};

pub(crate) const CPUS: &str = "cpuset.cpus";

/// Write `cpus` into `dir/cpuset.cpus`; `dir` must exist.
pub(crate) fn set_cpus(dir: &Path, cpus: &str) -> Result<()> {
    write(dir, CPUS, cpus)
}

/// Why v1 cannot set cpusets: the host mounts no cpuset hierarchy.
pub(crate) fn v1_missing(mount_root: &Path) -> Error {
    Error::MissingControllers {
        root: mount_root.to_path_buf(),
        missing: "cpuset".into(),
        hint: "cpuManagerPolicy static needs the cpuset hierarchy: mount it (`mount -t cgroup \
               -o cpuset cgroup /sys/fs/cgroup/cpuset`) or enable CONFIG_CPUSETS"
            .into(),
    }
}

/// v2: make sure `cpuset` is offered at `root` and enabled in `cgroup.subtree_control` of
/// `root` and of every directory of `rel` but its last component (the leaf itself holds
/// processes, so it must not enable controllers for children).
pub(crate) fn enable_v2(root: &Path, rel: &Path) -> Result<()> {
    let offered = read(&root.join("cgroup.controllers"))?;
    if !offered.split_whitespace().any(|c| c == "cpuset") {
        return Err(Error::MissingControllers {
            root: root.to_path_buf(),
            missing: "cpuset".into(),
            hint: format!(
                "{} lists only {:?}; {}",
                root.join("cgroup.controllers").display(),
                offered.trim(),
                super::v2::ENABLE_HINT
            ),
        });
    }
    let mut dir = root.to_path_buf();
    let components: Vec<_> = rel.components().collect();
    for (i, component) in components.iter().enumerate() {
        let enabled = read(&dir.join("cgroup.subtree_control"))?;
        if !enabled.split_whitespace().any(|c| c == "cpuset") {
            write(&dir, "cgroup.subtree_control", "+cpuset").map_err(|e| match e {
                Error::Write { path, source, .. } => Error::EnableControllers {
                    path,
                    controllers: "cpuset".into(),
                    source,
                },
                other => other,
            })?;
        }
        if i + 1 < components.len() {
            dir.push(component);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake v2 tree laid out as the kernel would: `root/a/b` with interface files.
    fn tree(offered: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("cgroup.controllers"), offered).unwrap();
        for d in ["", "a", "a/b"] {
            let dir = t.path().join(d);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
            fs::write(dir.join(CPUS), "").unwrap();
        }
        t
    }

    #[test]
    fn v2_enables_cpuset_in_the_ancestors_only() {
        let t = tree("cpuset cpu memory pids\n");
        enable_v2(t.path(), Path::new("a/b")).unwrap();
        let sc =
            |d: &str| fs::read_to_string(t.path().join(d).join("cgroup.subtree_control")).unwrap();
        assert_eq!(sc(""), "+cpuset");
        assert_eq!(sc("a"), "+cpuset");
        assert_eq!(sc("a/b"), "", "the leaf must not enable controllers");
        // Already enabled (the kernel lists it without `+`): not written again.
        for d in ["", "a"] {
            fs::write(
                t.path().join(d).join("cgroup.subtree_control"),
                "cpu cpuset\n",
            )
            .unwrap();
        }
        enable_v2(t.path(), Path::new("a/b")).unwrap();
        assert_eq!(sc(""), "cpu cpuset\n");
        set_cpus(&t.path().join("a/b"), "1").unwrap();
        assert_eq!(
            fs::read_to_string(t.path().join("a/b").join(CPUS)).unwrap(),
            "1"
        );
    }

    #[test]
    fn v2_without_cpuset_names_the_controller() {
        let t = tree("cpu memory pids\n");
        let e = enable_v2(t.path(), Path::new("a/b"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing controller(s) cpuset"), "{e}");
        assert!(
            e.contains("cgroup.controllers lists only \"cpu memory pids\""),
            "{e}"
        );
    }

    #[test]
    fn set_cpus_into_a_missing_cgroup_is_not_found() {
        let t = tempfile::tempdir().unwrap();
        match set_cpus(&t.path().join("gone"), "0") {
            Err(Error::Write { source, value, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
                assert_eq!(value, "0");
            }
            other => panic!("{other:?}"),
        }
    }

    fn hierarchy(root: &Path, name: &str) -> super::super::mountinfo::Hierarchy {
        let mount_point = root.join(name);
        fs::create_dir_all(mount_point.join("pod/app")).unwrap();
        super::super::mountinfo::Hierarchy {
            mount_point,
            controllers: vec![name.to_string()],
        }
    }

    #[test]
    fn v1_writes_the_cpuset_hierarchy_or_names_it_missing() {
        use super::super::{Cgroups, V1};
        let t = tempfile::tempdir().unwrap();
        let base: Vec<_> = ["memory", "cpu", "pids"]
            .iter()
            .map(|c| hierarchy(t.path(), c))
            .collect();
        let without = V1::new(base.clone()).unwrap();
        let e = without.set_cpuset("pod/app", "1").unwrap_err().to_string();
        assert!(
            e.contains("missing controller(s) cpuset")
                && e.contains(&t.path().display().to_string()),
            "{e}"
        );
        let mut all = base;
        all.push(hierarchy(t.path(), "cpuset"));
        let with = V1::new(all).unwrap();
        let file = t.path().join("cpuset/pod/app").join(CPUS);
        fs::write(&file, "0-1\n").unwrap();
        with.set_cpuset("/pod/app/", "1").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "1");
        assert!(with.set_cpuset("pod/../x", "1").is_err());
        // The process joins the cpuset hierarchy too.
        assert!(with
            .procs_files("pod/app")
            .contains(&t.path().join("cpuset/pod/app/cgroup.procs")));
    }
}
