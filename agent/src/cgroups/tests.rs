//! Tests of the file-writing logic against temp dirs laid out like v1 and v2 hierarchies.
//!
//! `mkdir` on a temp dir does not create interface files the way the kernel does, so each test
//! lays out the cgroup directories with their files and default values first (`fake_tree`);
//! the backend then finds the directories present, writes the values, and the test reads them
//! back. The privileged tests on the host's real cgroups are in `privileged.rs`.

use std::fs;
use std::path::Path;

use super::*;

const PATH: &str = "tidelet/kubepods/burstable/podx/c1";

/// Create `base/<each prefix of PATH>` with `files` (name, default value), like the kernel.
fn fake_tree(base: &Path, files: &[(&str, &str)]) {
    let mut dir = base.to_path_buf();
    fs::create_dir_all(&dir).unwrap();
    for f in files {
        fs::write(dir.join(f.0), f.1).unwrap();
    }
    for component in PATH.split('/') {
        dir.push(component);
        fs::create_dir_all(&dir).unwrap();
        for f in files {
            fs::write(dir.join(f.0), f.1).unwrap();
        }
    }
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p).unwrap()
}

fn mountinfo(dir: &Path, lines: &[(&str, &str, &str)]) -> std::path::PathBuf {
    let mut text = format!("20 1 0:20 / {} rw - tmpfs tmpfs rw\n", dir.display());
    for (i, (point, fs_type, opts)) in lines.iter().enumerate() {
        let point = if point.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(point)
        };
        text += &format!(
            "{} 20 0:{} / {} rw - {fs_type} {fs_type} {opts}\n",
            30 + i,
            30 + i,
            point.display()
        );
    }
    let file = dir.join("mountinfo");
    fs::write(&file, text).unwrap();
    file
}

fn limits() -> Resources {
    Resources {
        memory_limit: Some(64 << 20),
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        pids_limit: Some(100),
    }
}

/// A v1 layout with combined `cpu,cpuacct` and the hybrid's unified mount.
fn fake_v1(t: &Path) -> Box<dyn Cgroups> {
    let root = t.join("cg");
    fs::create_dir(&root).unwrap();
    fake_tree(
        &root.join("memory"),
        &[
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.use_hierarchy", "1\n"),
            ("cgroup.procs", ""),
        ],
    );
    fake_tree(
        &root.join("cpu,cpuacct"),
        &[
            ("cpu.shares", "1024\n"),
            ("cpu.cfs_quota_us", "-1\n"),
            ("cpu.cfs_period_us", "100000\n"),
            ("cgroup.procs", ""),
        ],
    );
    fake_tree(
        &root.join("pids"),
        &[("pids.max", "max\n"), ("cgroup.procs", "")],
    );
    fake_tree(
        &root.join("cpuset"),
        &[
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
            ("cgroup.procs", ""),
        ],
    );
    fs::write(root.join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
    fs::write(root.join("cpuset/cpuset.mems"), "0\n").unwrap();
    fs::create_dir(root.join("unified")).unwrap();
    fs::create_dir(root.join("systemd")).unwrap();
    let mi = mountinfo(
        &root,
        &[
            ("memory", "cgroup", "rw,memory"),
            ("cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
            ("pids", "cgroup", "rw,pids"),
            ("cpuset", "cgroup", "rw,cpuset"),
            ("systemd", "cgroup", "rw,xattr,name=systemd"),
            ("unified", "cgroup2", "rw"),
        ],
    );
    detect(&root, &mi).unwrap()
}

#[test]
fn v1_apply_writes_each_controller_and_inherits_cpuset() {
    let t = tempfile::tempdir().unwrap();
    let cg = fake_v1(t.path());
    let root = t.path().join("cg");
    assert_eq!(cg.version(), Version::V1);
    cg.apply(PATH, &limits()).unwrap();
    assert_eq!(
        read(root.join("memory").join(PATH).join("memory.limit_in_bytes")),
        "67108864"
    );
    let cpu = root.join("cpu,cpuacct").join(PATH);
    assert_eq!(read(cpu.join("cpu.shares")), "512");
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(root.join("pids").join(PATH).join("pids.max")), "100");
    // Every level below the cpuset root got the root's cpus and mems.
    let mut dir = root.join("cpuset");
    for c in PATH.split('/') {
        dir.push(c);
        assert_eq!(read(dir.join("cpuset.cpus")), "0-3", "{}", dir.display());
        assert_eq!(read(dir.join("cpuset.mems")), "0", "{}", dir.display());
    }
    // The parent keeps its defaults: limits go to the path only.
    let parent = root.join("memory/tidelet/kubepods/burstable/podx/memory.limit_in_bytes");
    assert_eq!(read(parent), "9223372036854771712\n");

    // Again with new values; `None` leaves what is there.
    let again = Resources {
        memory_limit: Some(128 << 20),
        cpu_quota: Some(-1),
        pids_limit: Some(0),
        ..Default::default()
    };
    cg.apply(PATH, &again).unwrap();
    assert_eq!(
        read(root.join("memory").join(PATH).join("memory.limit_in_bytes")),
        "134217728"
    );
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "-1");
    assert_eq!(read(cpu.join("cpu.shares")), "512");
    assert_eq!(read(root.join("pids").join(PATH).join("pids.max")), "max");
}

#[test]
fn v1_files_and_pids_cover_every_hierarchy() {
    let t = tempfile::tempdir().unwrap();
    let cg = fake_v1(t.path());
    let root = t.path().join("cg");
    let mut procs = cg.procs_files(PATH);
    procs.sort();
    let mut want: Vec<_> = ["cpu,cpuacct", "cpuset", "memory", "pids"]
        .iter()
        .map(|h| root.join(h).join(PATH).join("cgroup.procs"))
        .collect();
    want.sort();
    assert_eq!(procs, want);
    assert_eq!(cg.procs_files(&format!("/{PATH}")), cg.procs_files(PATH));
    assert_eq!(
        cg.oom_kill_file(PATH),
        root.join("memory").join(PATH).join("memory.oom_control")
    );

    fs::write(
        root.join("memory").join(PATH).join("cgroup.procs"),
        "10\n11\n",
    )
    .unwrap();
    fs::write(
        root.join("pids/tidelet/kubepods/burstable/podx/cgroup.procs"),
        "9\n10\n",
    )
    .unwrap();
    assert_eq!(
        cg.pids("tidelet/kubepods/burstable/podx").unwrap(),
        vec![9, 10, 11]
    );
    assert_eq!(cg.pids(PATH).unwrap(), vec![10, 11]);
    assert_eq!(cg.pids("tidelet/missing").unwrap(), Vec::<i32>::new());
}

#[test]
fn refuses_the_root_and_escapes() {
    let t = tempfile::tempdir().unwrap();
    let cg = fake_v1(t.path());
    for p in ["", "/", "tidelet/../../etc"] {
        assert!(
            matches!(cg.apply(p, &limits()), Err(Error::InvalidPath { .. })),
            "{p:?}"
        );
        assert!(
            matches!(cg.kill_all(p), Err(Error::InvalidPath { .. })),
            "{p:?}"
        );
        assert!(
            matches!(cg.remove(p), Err(Error::InvalidPath { .. })),
            "{p:?}"
        );
    }
}

#[test]
fn v1_without_required_controllers_names_them() {
    let t = tempfile::tempdir().unwrap();
    let mi = mountinfo(
        t.path(),
        &[
            ("memory", "cgroup", "rw,memory"),
            ("cpu", "cgroup", "rw,cpu"),
        ],
    );
    let err = detect(t.path(), &mi)
        .err()
        .expect("pids is missing")
        .to_string();
    assert!(
        err.contains("missing controller(s) pids") && err.contains("CONFIG_CGROUP_PIDS"),
        "{err}"
    );
}

fn fake_v2(t: &Path, controllers: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = t.join("cg2");
    fs::create_dir(&root).unwrap();
    fake_tree(
        &root,
        &[
            ("cgroup.subtree_control", ""),
            ("memory.max", "max\n"),
            ("cpu.weight", "100\n"),
            ("cpu.max", "max 100000\n"),
            ("pids.max", "max\n"),
            ("cgroup.procs", ""),
        ],
    );
    fs::write(root.join("cgroup.controllers"), controllers).unwrap();
    let mi = mountinfo(&root, &[("", "cgroup2", "rw,nsdelegate")]);
    (root, mi)
}

#[test]
fn v2_apply_enables_controllers_top_down_and_writes_limits() {
    let t = tempfile::tempdir().unwrap();
    let (root, mi) = fake_v2(t.path(), "cpuset cpu io memory hugetlb pids rdma misc\n");
    let cg = detect(&root, &mi).unwrap();
    assert_eq!(cg.version(), Version::V2);
    cg.apply(PATH, &limits()).unwrap();
    let leaf = root.join(PATH);
    let mut dir = root.clone();
    for c in PATH.split('/') {
        assert_eq!(
            read(dir.join("cgroup.subtree_control")),
            "+memory +cpu +pids",
            "{}",
            dir.display()
        );
        dir.push(c);
    }
    // The leaf holds processes: nothing is enabled below it.
    assert_eq!(read(leaf.join("cgroup.subtree_control")), "");
    assert_eq!(read(leaf.join("memory.max")), "67108864");
    assert_eq!(read(leaf.join("cpu.weight")), "20");
    assert_eq!(read(leaf.join("cpu.max")), "50000 100000");
    assert_eq!(read(leaf.join("pids.max")), "100");

    // Already enabled (as the kernel lists them) is left alone; new values replace old ones.
    fs::write(root.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
    let again = Resources {
        memory_limit: Some(0),
        cpu_shares: Some(2),
        cpu_period: Some(50_000),
        ..Default::default()
    };
    cg.apply(PATH, &again).unwrap();
    assert_eq!(
        read(root.join("cgroup.subtree_control")),
        "cpu memory pids\n"
    );
    assert_eq!(read(leaf.join("memory.max")), "max");
    assert_eq!(read(leaf.join("cpu.weight")), "1");
    assert_eq!(read(leaf.join("cpu.max")), "50000 50000");
    assert_eq!(read(leaf.join("pids.max")), "100");

    assert_eq!(cg.procs_files(PATH), vec![leaf.join("cgroup.procs")]);
    assert_eq!(cg.oom_kill_file(PATH), leaf.join("memory.events"));
    fs::write(leaf.join("cgroup.procs"), "42\n").unwrap();
    fs::write(root.join("tidelet/cgroup.procs"), "7\n").unwrap();
    assert_eq!(cg.pids("tidelet").unwrap(), vec![7, 42]);
}

#[test]
fn v2_missing_controllers_say_how_to_enable_them() {
    let t = tempfile::tempdir().unwrap();
    let (root, mi) = fake_v2(t.path(), "cpu io\n");
    let err = detect(&root, &mi)
        .err()
        .expect("memory and pids are missing")
        .to_string();
    for want in [
        "memory, pids",
        "+memory",
        "cgroup.subtree_control",
        "Delegate=yes",
        "\"cpu io\"",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
}

#[test]
fn v2_controller_that_cannot_be_enabled_is_named() {
    let t = tempfile::tempdir().unwrap();
    let (root, _) = fake_v2(t.path(), "cpu memory pids\n");
    // A file that refuses writes (/proc/version) stands in for the kernel refusing them.
    let ctl = root.join("tidelet/cgroup.subtree_control");
    fs::remove_file(&ctl).unwrap();
    std::os::unix::fs::symlink("/proc/version", &ctl).unwrap();
    let cg = V2::new(&root).unwrap();
    let err = cg.apply(PATH, &limits()).unwrap_err();
    assert!(
        matches!(&err, Error::EnableControllers { path, controllers, .. } if *path == ctl && controllers == "memory, cpu, pids"),
        "{err}"
    );
    assert!(err.to_string().contains("Delegate=yes"), "{err}");
    fs::remove_file(&ctl).unwrap();
    fs::write(&ctl, "").unwrap();
    // A limit whose file is missing (controller not enabled) names the file and the value.
    fs::remove_file(root.join(PATH).join("pids.max")).unwrap();
    let err = cg.apply(PATH, &limits()).unwrap_err();
    assert!(
        matches!(&err, Error::Write { path, value, .. } if path.ends_with("c1/pids.max") && value == "100"),
        "{err}"
    );
}

#[test]
fn unsupported_and_malformed_hosts_are_explained() {
    let t = tempfile::tempdir().unwrap();
    let mi = mountinfo(t.path(), &[("unified", "cgroup2", "rw")]);
    let err = detect(t.path(), &mi)
        .err()
        .expect("no usable cgroups")
        .to_string();
    assert!(
        err.contains("cgroup2 at") && err.contains("unified") && err.contains("tmpfs at"),
        "{err}"
    );

    let bad = t.path().join("bad");
    fs::write(&bad, "20 1 0:20 / / rw - ext4 /dev/root rw\ngarbage\n").unwrap();
    let err = detect(t.path(), &bad).err().expect("malformed").to_string();
    assert!(err.contains("bad: line 2"), "{err}");

    let err = detect(t.path(), &t.path().join("nope"))
        .err()
        .expect("missing")
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn oom_kill_counts_parse_from_both_versions() {
    let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
    let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n";
    for (text, want) in [
        (v2, 2),
        (v1, 5),
        ("oom_kill_disable 0\nunder_oom 0\n", 0),
        ("", 0),
    ] {
        assert_eq!(parse_oom_kills(text), want, "{text:?}");
    }
}
