//! Privileged tests on the host's real cgroups: this host is a cgroup v1 hybrid (v1 memory,
//! cpu, pids, ...; cgroup2 without controllers at `/sys/fs/cgroup/unified`). They create
//! `tidelet-test-<random>/...`, move real child processes in and check what the kernel reports.
//! Without root they skip, unless `TIDELET_REQUIRE_PRIVILEGED` is set (CI), where they fail.

use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use super::*;

use super::testing::*;

fn read_trim(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The `/proc/<pid>/cgroup` path of each v1 controller, e.g. `memory` -> `/a/b`.
fn proc_cgroups(pid: u32) -> Vec<(String, String)> {
    let text = read_trim(format!("/proc/{pid}/cgroup"));
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((ctrls.to_string(), path.to_string()))
        })
        .collect()
}

#[test]
fn v1_host_limits_procs_kill_and_remove() {
    if !privileged("v1_host_limits_procs_kill_and_remove") {
        return;
    }
    let cg = detect(Path::new(MOUNT_ROOT), Path::new(MOUNTINFO)).unwrap();
    assert_eq!(cg.version(), Version::V1, "this host is a cgroup v1 hybrid");
    let base = unique_base();
    let _cleanup = Cleanup {
        cg: cg.as_ref(),
        base: base.clone(),
    };
    let pod = format!("{base}/kubepods/burstable/podx");
    let c1 = format!("{pod}/c1");
    let pod_res = Resources {
        memory_limit: Some(200 << 20),
        cpu_shares: Some(1024),
        cpu_quota: Some(200_000),
        cpu_period: Some(100_000),
        pids_limit: Some(64),
    };
    cg.apply(&pod, &pod_res).unwrap();
    let c1_res = Resources {
        memory_limit: Some(50_000_000),
        cpu_shares: Some(256),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        pids_limit: Some(10),
    };
    cg.apply(&c1, &c1_res).unwrap();

    let root = Path::new(MOUNT_ROOT);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .unwrap()
        .unwrap();
    let mem = root.join("memory").join(&c1);
    // The kernel rounds the limit down to whole pages.
    assert_eq!(
        read_trim(mem.join("memory.limit_in_bytes")),
        (50_000_000 / page * page).to_string()
    );
    let cpu = root.join("cpu").join(&c1);
    assert_eq!(read_trim(cpu.join("cpu.shares")), "256");
    assert_eq!(read_trim(cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read_trim(cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(
        read_trim(root.join("pids").join(&c1).join("pids.max")),
        "10"
    );
    assert_eq!(
        read_trim(root.join("pids").join(&pod).join("pids.max")),
        "64"
    );
    assert_eq!(
        read_trim(root.join("cpuset").join(&c1).join("cpuset.cpus")),
        read_trim(root.join("cpuset/cpuset.cpus"))
    );
    for dir in ["cpuacct", "freezer", "devices", "blkio"] {
        assert!(
            root.join(dir).join(&c1).is_dir(),
            "{dir} hierarchy has the path"
        );
    }

    // Again, with new values: raise memory, shorter period (written in an order v1 accepts).
    let again = Resources {
        memory_limit: Some(100 << 20),
        cpu_quota: Some(25_000),
        cpu_period: Some(50_000),
        ..Default::default()
    };
    cg.apply(&c1, &again).unwrap();
    assert_eq!(
        read_trim(mem.join("memory.limit_in_bytes")),
        (100u64 << 20).to_string()
    );
    assert_eq!(read_trim(cpu.join("cpu.cfs_period_us")), "50000");
    assert_eq!(read_trim(cpu.join("cpu.cfs_quota_us")), "25000");
    assert_eq!(read_trim(cpu.join("cpu.shares")), "256");

    // 1.5 CPUs in a 2-CPU pod. Shortening the period first would mean 3 CPUs, which v1 refuses
    // (EINVAL); apply must then write the quota first.
    let wide = Resources {
        cpu_quota: Some(150_000),
        cpu_period: Some(100_000),
        ..Default::default()
    };
    cg.apply(&c1, &wide).unwrap();
    let refused = fs::write(cpu.join("cpu.cfs_period_us"), "50000").unwrap_err();
    assert_eq!(
        refused.raw_os_error(),
        Some(libc::EINVAL),
        "the kernel checks the parent's bandwidth"
    );
    let narrow = Resources {
        cpu_quota: Some(50_000),
        cpu_period: Some(50_000),
        ..Default::default()
    };
    cg.apply(&c1, &narrow).unwrap();
    assert_eq!(read_trim(cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read_trim(cpu.join("cpu.cfs_period_us")), "50000");

    // A real process joins every hierarchy.
    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    join(cg.as_ref(), &c1, child.id());
    let seen = proc_cgroups(child.id());
    for ctrl in ["memory", "cpu", "pids", "cpuset", "freezer"] {
        let (_, path) = seen
            .iter()
            .find(|(c, _)| c.split(',').any(|x| x == ctrl))
            .unwrap_or_else(|| panic!("{ctrl} in {seen:?}"));
        assert_eq!(path, &format!("/{c1}"), "{ctrl}");
    }
    assert_eq!(cg.pids(&c1).unwrap(), vec![child.id() as i32]);
    assert_eq!(cg.pids(&base).unwrap(), vec![child.id() as i32]);

    // Removing a cgroup that still has a process is refused after the bounded wait.
    let busy = cg.remove(&base).unwrap_err();
    assert!(
        matches!(&busy, Error::Busy { pids, .. } if pids == &[child.id() as i32]),
        "{busy}"
    );

    cg.kill_all(&base).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(cg.pids(&base).unwrap().is_empty());
    cg.remove(&base).unwrap();
    for dir in [
        "memory", "cpu", "cpuacct", "pids", "cpuset", "freezer", "devices", "blkio",
    ] {
        assert!(!root.join(dir).join(&base).exists(), "{dir}/{base} is gone");
    }
    cg.remove(&base).unwrap();
}

#[test]
fn v1_kill_all_catches_forking_processes() {
    if !privileged("v1_kill_all_catches_forking_processes") {
        return;
    }
    let cg = detect(Path::new(MOUNT_ROOT), Path::new(MOUNTINFO)).unwrap();
    let base = unique_base();
    let _cleanup = Cleanup {
        cg: cg.as_ref(),
        base: base.clone(),
    };
    let path = format!("{base}/pod/c");
    cg.apply(
        &path,
        &Resources {
            pids_limit: Some(50),
            ..Default::default()
        },
    )
    .unwrap();
    // A shell that keeps starting background sleepers, in a nested cgroup.
    let mut child = gated("while true; do sleep 100 & sleep 0.01; done");
    join(cg.as_ref(), &path, child.id());
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(cg.pids(&base).unwrap().len() > 1, "the shell has forked");
    cg.kill_all(&base).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(cg.pids(&base).unwrap().is_empty());
    cg.remove(&base).unwrap();
}

#[test]
fn v1_oom_kill_is_counted() {
    if !privileged("v1_oom_kill_is_counted") {
        return;
    }
    let cg = detect(Path::new(MOUNT_ROOT), Path::new(MOUNTINFO)).unwrap();
    let base = unique_base();
    let _cleanup = Cleanup {
        cg: cg.as_ref(),
        base: base.clone(),
    };
    let path = format!("{base}/kubepods/podx/hog");
    cg.apply(
        &path,
        &Resources {
            memory_limit: Some(16 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let oom_file = cg.oom_kill_file(&path);
    assert_eq!(read_oom_kills(&oom_file).unwrap(), 0);

    // dd fills a 64 MiB buffer: four times the limit, and this host has no swap to spill to.
    let mut child = gated("exec dd if=/dev/zero of=/dev/null bs=64M count=1");
    join(cg.as_ref(), &path, child.id());
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "dd was OOM-killed: {status:?}"
    );
    assert!(
        read_oom_kills(&oom_file).unwrap() >= 1,
        "{}",
        read_trim(&oom_file)
    );
    cg.remove(&base).unwrap();
}

#[test]
fn v2_paths_on_the_hybrid_unified_hierarchy() {
    if !privileged("v2_paths_on_the_hybrid_unified_hierarchy") {
        return;
    }
    let unified = Path::new(MOUNT_ROOT).join("unified");
    // Its controllers live in v1 hierarchies here: detection says which are missing.
    let err = detect(&unified, Path::new(MOUNTINFO))
        .err()
        .expect("no memory/cpu/pids on unified");
    assert!(
        err.to_string()
            .contains("missing controller(s) memory, cpu, pids"),
        "{err}"
    );

    let cg = V2::with_controllers(&unified, &[]);
    let base = unique_base();
    let _cleanup = Cleanup {
        cg: &cg,
        base: base.clone(),
    };
    let path = format!("{base}/kubepods/podx/c1");
    cg.apply(&path, &Resources::default()).unwrap();
    cg.apply(&path, &Resources::default()).unwrap();
    assert!(unified.join(&path).is_dir());
    assert_eq!(
        cg.procs_files(&path),
        vec![unified.join(&path).join("cgroup.procs")]
    );

    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    join(&cg, &path, child.id());
    let seen = proc_cgroups(child.id());
    assert!(
        seen.contains(&(String::new(), format!("/{path}"))),
        "{seen:?}"
    );
    assert_eq!(cg.pids(&base).unwrap(), vec![child.id() as i32]);
    cg.kill_all(&base).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    cg.remove(&base).unwrap();
    assert!(!unified.join(&base).exists());
}
