//! tidelet on a real cgroup v2 host: a QEMU guest (TCG, no KVM) boots Debian's kernel with an
//! initramfs holding busybox, the real tidelet binary and the busybox test image. Its `/init`
//! (`tests/vm/init`, `tests/vm/stage2`) mounts cgroup2 with `cpu memory pids` enabled, runs
//! `tidelet run` on two static pods (`tests/vm/pods/`) and prints what tidelet wrote into the
//! cgroup files as `TIDELET-VM key=value` console lines; this test checks them.
//!
//! The console is kept in `target/vm/console-<test>-<arch>.log`. The guest architecture is
//! `$TIDELET_VM_ARCH` (default: the host's; see `qemu::Arch`). It needs root (apt downloads
//! the kernel) and QEMU: without root it skips unless `TIDELET_REQUIRE_PRIVILEGED=1`.

mod markers;
mod qemu;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tidelet_e2e::{bin, privileged, workspace};

use markers::{shares_from_millicpu, weight_from_shares};
use qemu::Arch;

/// Hard limit for one boot (TCG is slow; the run takes ~25 s on x86_64 here).
fn timeout() -> Duration {
    let secs = std::env::var("TIDELET_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    Duration::from_secs(secs)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Build, boot and parse; panics with the console's tail if the guest did not finish.
fn run_guest(test: &str, arch: &Arch) -> BTreeMap<String, String> {
    assert!(
        qemu::on_path(arch.qemu),
        "{} not found: install {} (scripts/test.sh does)",
        arch.qemu,
        arch.qemu_package
    );
    let vm_dir = target_dir().join("vm");
    let (kernel, initrd) = qemu::build(
        &workspace().join("tests/vm/build-initramfs.sh"),
        &vm_dir.join(arch.name),
        arch,
        &bin(),
    );
    let log = vm_dir.join(format!("console-{test}-{}.log", arch.name));
    eprintln!("vm: console log: {}", log.display());
    let boot = qemu::boot(arch, &kernel, &initrd, &log, timeout());
    let m = markers::parse(&boot.console);
    eprintln!(
        "vm: QEMU ran {:.1?} (guest booted at {} s, pods running at {} s, done at {} s)",
        boot.elapsed,
        m.get("boot.uptime").map_or("?", String::as_str),
        m.get("web.running_at").map_or("?", String::as_str),
        m.get("uptime.end").map_or("?", String::as_str),
    );
    let problem = if boot.timed_out {
        Some(format!("QEMU killed after {:?}", timeout()))
    } else if let Some(f) = m.get("fail") {
        Some(format!("the guest failed: {f}"))
    } else if !m.contains_key("done") {
        Some(format!(
            "the guest ended ({:?}) before `TIDELET-VM done`",
            boot.status
        ))
    } else {
        None
    };
    if let Some(p) = problem {
        panic!(
            "{p}\n---- console tail ({}) ----\n{}",
            log.display(),
            markers::tail(&boot.console, 120)
        );
    }
    m
}

fn get<'a>(m: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    m.get(key)
        .unwrap_or_else(|| panic!("no `TIDELET-VM {key}=` marker; markers: {m:#?}"))
}

fn json(m: &BTreeMap<String, String>, key: &str) -> Value {
    serde_json::from_str(get(m, key))
        .unwrap_or_else(|e| panic!("{key}: not JSON ({e}): {}", get(m, key)))
}

#[test]
fn cgroup_v2_limits_oom_and_cleanup_in_a_vm() {
    if !privileged() {
        return;
    }
    let arch = Arch::selected();
    let m = run_guest("cgroup_v2", &arch);
    for (k, v) in &m {
        if !k.ends_with(".json") {
            eprintln!("vm: {k}={v}");
        }
    }
    assert_eq!(get(&m, "arch"), arch.name);
    let controllers: Vec<&str> = get(&m, "cgroup.controllers").split_whitespace().collect();
    for c in ["cpu", "memory", "pids"] {
        assert!(
            controllers.contains(&c),
            "guest cgroup2 lacks {c}: {controllers:?}"
        );
    }

    // The Burstable pod: requests cpu 100m memory 32Mi, limits cpu 250m memory 64Mi.
    let web = json(&m, "web.json");
    let uid = web["metadata"]["uid"].as_str().expect("web has a uid");
    assert_eq!(web["status"]["phase"], "Running", "{web}");
    assert_eq!(web["status"]["qosClass"], "Burstable", "{web}");
    assert_eq!(
        get(&m, "web.app.proc_cgroup"),
        format!("0::/kubepods/burstable/pod{uid}/app"),
        "the container process's /proc/PID/cgroup"
    );
    let pid = get(&m, "web.app.pid");
    assert!(
        get(&m, "web.container.procs")
            .split_whitespace()
            .any(|p| p == pid),
        "container cgroup.procs lacks its pid {pid}"
    );
    let weight = weight_from_shares(shares_from_millicpu(100)).to_string();
    for level in ["container", "pod"] {
        let f = |file: &str| get(&m, &format!("web.{level}.{file}"));
        assert_eq!(
            f("memory.max"),
            (64u64 << 20).to_string(),
            "{level} memory.max"
        );
        assert_eq!(f("cpu.max"), "25000 100000", "{level} cpu.max");
        assert_eq!(
            f("cpu.weight"),
            weight,
            "{level} cpu.weight (kubelet's conversion of 102 shares)"
        );
        let pids = f("pids.max");
        assert!(
            pids == "max" || pids.parse::<u64>().is_ok(),
            "{level} pids.max = {pids:?}"
        );
    }
    for ancestor in ["kubepods", "burstable", "web.pod"] {
        let enabled = get(&m, &format!("{ancestor}.subtree_control"));
        for c in ["cpu", "memory", "pids"] {
            assert!(
                enabled.split_whitespace().any(|e| e == c),
                "{ancestor} subtree_control lacks {c}: {enabled:?}"
            );
        }
    }

    // The pod whose container the kernel OOM-kills under its 16Mi limit.
    let oom = json(&m, "oom.json");
    let t = &oom["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{oom}");
    assert_eq!(t["exitCode"], 137, "{oom}");
    assert_eq!(oom["status"]["phase"], "Failed", "{oom}");
    let kills: u64 = get(&m, "oom.memory.events")
        .strip_prefix("oom_kill ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        kills >= 1,
        "memory.events of the oom pod: {:?}",
        get(&m, "oom.memory.events")
    );

    // oom_score_adj as kubelet's policy says (the guest's tidelet has CAP_SYS_RESOURCE).
    let gpod = json(&m, "gpod.json");
    assert_eq!(gpod["status"]["qosClass"], "Guaranteed", "{gpod}");
    assert_eq!(get(&m, "gpod.app.oom_score_adj"), "-997");
    assert_eq!(get(&m, "gpod.infra.oom_score_adj"), "-998");
    let mem: i64 = get(&m, "mem_total_kib").parse::<i64>().unwrap() * 1024;
    let burstable = (1000 - 1000 * (32i64 << 20) / mem).clamp(3, 999);
    assert_eq!(
        get(&m, "web.app.oom_score_adj"),
        burstable.to_string(),
        "Burstable formula"
    );

    // Removing the manifests removed the pods, their processes and their cgroups.
    assert_eq!(get(&m, "web.pod_cgroup_removed"), "yes");
    assert_eq!(get(&m, "oom.pod_cgroup_removed"), "yes");
    assert_eq!(get(&m, "web.app.process_gone"), "yes");
    assert_eq!(
        get(&m, "kubepods.left"),
        "",
        "pod cgroups left under kubepods"
    );
}
