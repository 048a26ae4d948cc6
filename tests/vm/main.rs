//! tidelet on a real cgroup v2 host, on both architectures it ships for: a QEMU guest (TCG, no
//! KVM) boots Debian's kernel with an initramfs holding busybox, the real tidelet binary (for
//! aarch64 the cross-built one, with its shared libraries), the busybox test image of the
//! guest's architecture and the kernel modules tidelet needs. Its `/init` (`tests/vm/init`,
//! `tests/vm/stage2`) mounts cgroup2 with `cpu memory pids` enabled, runs `tidelet run` on
//! static pods (`tests/vm/pods/`, five at once) and prints what tidelet did as
//! `TIDELET-VM key=value` console lines; this test checks them: modules loaded, the pods'
//! namespaces apart from the host's, their cgroup v2 limits, their status, OOM handling,
//! cleanup, a TCP exchange with the host's loopback through QEMU's restricted user network, and
//! (a figure, not an assertion) tidelet's RSS. Then the same guest restarts tidelet with node
//! allocatable and a hard eviction threshold and checks eviction under memory pressure on
//! cgroup v2 (`pressure.rs`: the BestEffort hog goes, Guaranteed and Burstable stay, no kernel
//! OOM kill, `MemoryPressure` True then False). Before that, with the five pods running, the
//! real `tidelet-generic-plugin` hands a device node to one pod while another is denied it by
//! the eBPF device program of its cgroup (`devices.rs`), and a default pod checks its own
//! confinement (`security.rs`: containerd's capabilities, RuntimeDefault seccomp compiled for
//! the guest's architecture, runc's masked and read-only paths, a Localhost profile denying
//! mkdir). Last, it restarts tidelet with MQTT to a real Mosquitto on the host (a second
//! `guestfwd`) and jumps the guest's wall clock a day forward and two days back (`mqtt.rs`: the
//! pod and the agent untouched, the broker's view of the node, `online`, the pod and the lease
//! renewals through both jumps).
//!
//! Two tests, one guest each: x86_64 (the host's `target/debug/tidelet` and
//! `tidelet-generic-plugin`, 512 MiB) and aarch64 (`qemu-system-aarch64 -M virt -cpu
//! cortex-a72`, 256 MiB: the small-board fit), whose binaries are `$TIDELET_AARCH64_BIN` and
//! `$TIDELET_AARCH64_PLUGIN`, or `tidelet` and `tidelet-generic-plugin` in
//! `target/cross/aarch64-unknown-linux-gnu/release/` from `scripts/cross-build.sh`. The console is kept in `target/vm/console-<test>-<arch>.log` and
//! its tail is printed when a test fails. They need root (apt downloads the kernels) and QEMU:
//! without root they skip unless `TIDELET_REQUIRE_PRIVILEGED=1`; without the cross-built
//! binaries the aarch64 test skips, or fails under `TIDELET_REQUIRE_PRIVILEGED=1`.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

mod devices;
mod hostecho;
mod markers;
mod mqtt;
mod podnet;
mod pressure;
mod qemu;
mod security;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidelet_e2e::{bin, privileged, workspace};

use hostecho::HostEcho;
use markers::{shares_from_millicpu, weight_from_shares};
use qemu::{Arch, HostPort, Options, AARCH64, X86_64};

/// Hard limit for one boot (TCG is slow; a run takes ~25 s here on either architecture).
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

use tidelet_testgate::required;

/// A cross-built aarch64 binary: `$ENV`, else scripts/cross-build.sh's output `NAME`. `None`
/// (skip) if missing, unless the test is required (CI): then it fails.
fn aarch64_bin(name: &str, env: &str) -> Option<PathBuf> {
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        workspace().join(format!(
            "target/cross/aarch64-unknown-linux-gnu/release/{name}"
        ))
    });
    if p.is_file() {
        return Some(p);
    }
    let msg = format!(
        "the aarch64 {name} {} does not exist: run scripts/cross-build.sh first (or set {env})",
        p.display()
    );
    assert!(!required(), "{msg} (TIDELET_REQUIRE_PRIVILEGED=1)");
    eprintln!("skipping: {msg}");
    None
}

/// A finished guest run: its markers and its console (for the tail on failure).
struct Run {
    markers: BTreeMap<String, String>,
    console: String,
    log: PathBuf,
    elapsed: Duration,
}

/// The binaries a guest runs: the agent and the generic device plugin.
struct Bins {
    tidelet: PathBuf,
    plugin: PathBuf,
}

/// The host's `target/debug/tidelet-generic-plugin` (`cargo build` builds it: it is a
/// workspace member).
fn host_plugin() -> PathBuf {
    let p = target_dir().join("debug/tidelet-generic-plugin");
    assert!(
        p.is_file(),
        "{} not found: run `cargo build` (or `cargo build -p tidelet-generic-plugin`) first",
        p.display()
    );
    p
}

/// Build, boot and parse; panics with the console's tail if the guest did not finish.
fn run_guest(test: &str, arch: &Arch, bins: &Bins, opts: &Options) -> Run {
    assert!(
        qemu::on_path(arch.qemu),
        "{} not found: install {} (scripts/test.sh does)",
        arch.qemu,
        arch.qemu_package
    );
    let vm_dir = target_dir().join("vm");
    let started = Instant::now();
    let (kernel, initrd) = qemu::build(
        &workspace().join("tests/vm/build-initramfs.sh"),
        &vm_dir.join(arch.name),
        arch,
        &bins.tidelet,
        &bins.plugin,
    );
    eprintln!(
        "vm: {}: kernel and initramfs ready in {:.1?}",
        arch.name,
        started.elapsed()
    );
    let log = vm_dir.join(format!("console-{test}-{}.log", arch.name));
    eprintln!("vm: console log: {}", log.display());
    let boot = qemu::boot_with(arch, &kernel, &initrd, &log, timeout(), opts);
    let m = markers::parse(&boot.console);
    eprintln!(
        "vm: {}: QEMU ran {:.1?} (boot to poweroff; guest up at {} s, five pods running at {} s, \
         done at {} s)",
        arch.name,
        boot.elapsed,
        m.get("boot.uptime").map_or("?", String::as_str),
        m.get("five.running_at").map_or("?", String::as_str),
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
            markers::tail(&boot.console, 100)
        );
    }
    Run {
        markers: m,
        console: boot.console,
        log,
        elapsed: boot.elapsed,
    }
}

/// Run `check` on a finished guest; if it panics, print the console's tail first (the
/// failure output is CI's artefact).
fn checked(run: &Run, check: impl FnOnce(&BTreeMap<String, String>)) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&run.markers)));
    if let Err(e) = result {
        eprintln!(
            "---- console tail ({}) ----\n{}\n---- end of console tail ----",
            run.log.display(),
            markers::tail(&run.console, 100)
        );
        std::panic::resume_unwind(e);
    }
}

fn get<'a>(m: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    m.get(key)
        .unwrap_or_else(|| panic!("no `TIDELET-VM {key}=` marker; markers: {m:#?}"))
}

fn json(m: &BTreeMap<String, String>, key: &str) -> Value {
    serde_json::from_str(get(m, key))
        .unwrap_or_else(|e| panic!("{key}: not JSON ({e}): {}", get(m, key)))
}

/// Boot `arch` with `tidelet` in `memory_mb` and check everything the guest reports.
fn guest_test(test: &str, arch: Arch, bins: &Bins, memory_mb: u32) {
    let echo = HostEcho::start();
    let broker = mqtt::Observer::start(arch.name);
    let opts = Options {
        memory_mb,
        host_ports: vec![
            HostPort {
                name: "hostport",
                port: echo.port,
            },
            HostPort {
                name: "mqttport",
                port: broker.port(),
            },
        ],
    };
    let run = run_guest(test, &arch, bins, &opts);
    let seen = broker.finish();
    for (k, v) in &run.markers {
        if !k.ends_with(".json") {
            eprintln!("vm: {k}={v}");
        }
    }
    let host_lines = echo.lines();
    let echo_port = echo.port;
    drop(echo);
    checked(&run, |m| {
        check_guest(m, &arch);
        // (before the devices: a confinement that breaks the containers shows its cause here)
        security::check(m);
        devices::check(m);
        pressure::check(m);
        // The guest reached the host's loopback, and only through the forward; then a pod
        // did, through the guest's forwarding and masquerade.
        let hello = format!("hello from {}", arch.name);
        assert_eq!(
            get(m, "net.reply"),
            format!("ack {hello}"),
            "the guest's TCP exchange"
        );
        podnet::check(m, arch.name);
        eprintln!("vm: the host's 127.0.0.1:{echo_port} received {host_lines:?}");
        podnet::check_host_lines(m, &host_lines, &hello, arch.name);
        mqtt::check(m, &seen);
    });
    let rss = rss_summary(&run.markers);
    println!(
        "vm: {} ({memory_mb} MiB, 5 pods running): {rss}; QEMU boot to poweroff {:.1?}",
        arch.name, run.elapsed
    );
    println!("vm: {}: {}", arch.name, devices::figures(&run.markers));
    println!("vm: {}: {}", arch.name, security::figures(&run.markers));
    println!("vm: {}: {}", arch.name, podnet::figures(&run.markers));
    println!("vm: {}: {}", arch.name, pressure::figures(&run.markers));
    println!("vm: {}: {}", arch.name, mqtt::figures(&run.markers, &seen));
}

/// The RSS figures as one line (KiB): the agent, and the supervisors and infra processes.
fn rss_summary(m: &BTreeMap<String, String>) -> String {
    let g = |k: &str| m.get(k).map_or("?", String::as_str);
    format!(
        "tidelet agent VmRSS {} KiB (peak {} KiB, Pss {} KiB); supervisors (tidelet-shim) {}; \
         infra (tidelet-pid1) {}",
        g("rss.agent_kib"),
        g("rss.agent_hwm_kib"),
        g("rss.agent_pss_kib"),
        g("rss.tidelet-shim"),
        g("rss.tidelet-pid1"),
    )
}

/// Parse `count N total_kib T max_kib M pss_kib P` into (N, T, M, P); `None` if it is not
/// that.
fn rss_group(v: &str) -> Option<(u64, u64, u64, u64)> {
    let w: Vec<&str> = v.split_whitespace().collect();
    let keys = ["count", "total_kib", "max_kib", "pss_kib"];
    if w.len() != 2 * keys.len() || keys.iter().enumerate().any(|(i, k)| w[2 * i] != *k) {
        return None;
    }
    let num = |i: usize| w[2 * i + 1].parse::<u64>().ok();
    Some((num(0)?, num(1)?, num(2)?, num(3)?))
}

#[test]
fn x86_64_vm_runs_five_isolated_pods_with_cgroup_v2_limits() {
    if !privileged() {
        return;
    }
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipping: the x86_64 guest runs the host's tidelet, and the host is not x86_64");
        return;
    }
    let bins = Bins {
        tidelet: bin(),
        plugin: host_plugin(),
    };
    guest_test("cgroup_v2", X86_64, &bins, 512);
}

#[test]
fn aarch64_vm_in_256_mib_runs_five_isolated_pods_with_cgroup_v2_limits() {
    if !privileged() {
        return;
    }
    let Some(tidelet) = aarch64_bin("tidelet", "TIDELET_AARCH64_BIN") else {
        return;
    };
    let Some(plugin) = aarch64_bin("tidelet-generic-plugin", "TIDELET_AARCH64_PLUGIN") else {
        return;
    };
    guest_test("cgroup_v2", AARCH64, &Bins { tidelet, plugin }, 256);
}

/// What both guests must show.
fn check_guest(m: &BTreeMap<String, String>, arch: &Arch) {
    assert_eq!(get(m, "arch"), arch.name);
    let controllers: Vec<&str> = get(m, "cgroup.controllers").split_whitespace().collect();
    for c in ["cpu", "memory", "pids"] {
        assert!(
            controllers.contains(&c),
            "guest cgroup2 lacks {c}: {controllers:?}"
        );
    }

    // The Burstable pod: requests cpu 100m memory 32Mi, limits cpu 250m memory 64Mi.
    let web = json(m, "web.json");
    let uid = web["metadata"]["uid"].as_str().expect("web has a uid");
    assert_eq!(web["status"]["phase"], "Running", "{web}");
    assert_eq!(web["status"]["qosClass"], "Burstable", "{web}");
    assert_eq!(
        get(m, "web.app.proc_cgroup"),
        format!("0::/kubepods/burstable/pod{uid}/app"),
        "the container process's /proc/PID/cgroup"
    );
    let pid = get(m, "web.app.pid");
    assert!(
        get(m, "web.container.procs")
            .split_whitespace()
            .any(|p| p == pid),
        "container cgroup.procs lacks its pid {pid}"
    );
    let weight = weight_from_shares(shares_from_millicpu(100)).to_string();
    for level in ["container", "pod"] {
        let f = |file: &str| get(m, &format!("web.{level}.{file}"));
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
    // podPidsLimit: 64 in the guest's config file is the pod's pids.max.
    assert_eq!(
        get(m, "web.pod.pids.max"),
        "64",
        "the pod's pids.max (podPidsLimit)"
    );
    for ancestor in ["kubepods", "burstable", "web.pod"] {
        let enabled = get(m, &format!("{ancestor}.subtree_control"));
        for c in ["cpu", "memory", "pids"] {
            assert!(
                enabled.split_whitespace().any(|e| e == c),
                "{ancestor} subtree_control lacks {c}: {enabled:?}"
            );
        }
    }

    // The pod whose container the kernel OOM-kills under its 16Mi limit.
    let oom = json(m, "oom.json");
    let t = &oom["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{oom}");
    assert_eq!(t["exitCode"], 137, "{oom}");
    assert_eq!(oom["status"]["phase"], "Failed", "{oom}");
    let kills: u64 = get(m, "oom.memory.events")
        .strip_prefix("oom_kill ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        kills >= 1,
        "memory.events of the oom pod: {:?}",
        get(m, "oom.memory.events")
    );

    // oom_score_adj as kubelet's policy says (the guest's tidelet has CAP_SYS_RESOURCE).
    let gpod = json(m, "gpod.json");
    assert_eq!(gpod["status"]["qosClass"], "Guaranteed", "{gpod}");
    assert_eq!(get(m, "gpod.app.oom_score_adj"), "-997");
    assert_eq!(get(m, "gpod.infra.oom_score_adj"), "-998");
    let mem: i64 = get(m, "mem_total_kib").parse::<i64>().unwrap() * 1024;
    let burstable = (1000 - 1000 * (32i64 << 20) / mem).clamp(3, 999);
    assert_eq!(
        get(m, "web.app.oom_score_adj"),
        burstable.to_string(),
        "Burstable formula"
    );

    // Removing the manifests removed the pods, their processes and their cgroups.
    assert_eq!(get(m, "web.pod_cgroup_removed"), "yes");
    assert_eq!(get(m, "oom.pod_cgroup_removed"), "yes");
    assert_eq!(get(m, "web.app.process_gone"), "yes");
    assert_eq!(
        get(m, "kubepods.left"),
        "",
        "pod cgroups left under kubepods"
    );

    // The kernel modules tidelet needs loaded from the initramfs (modules.dep by depmod),
    // the netfilter ones for iptables-nft (the pod network's rules) included.
    for module in [
        "overlay",
        "virtio_pci",
        "virtio_net",
        "veth",
        "bridge",
        "tun",
        "crc32c_generic",
        "nf_tables",
        "nft_compat",
        "nft_chain_nat",
        "nf_nat",
        "nf_conntrack",
        "xt_conntrack",
        "xt_comment",
        "xt_MASQUERADE",
        "xt_nat",
        "xt_addrtype",
        "xt_mark",
        "xt_multiport",
        "xt_tcpudp",
    ] {
        assert_eq!(
            get(m, &format!("module.{module}")),
            "loaded",
            "modprobe {module}"
        );
    }

    // Without overlayfs in the kernel, the agent warned at start and the pod said why in
    // its container status, naming the kernel option.
    let no = json(m, "nooverlay.json");
    // (the failed start, StartError as containerd reports it, is the container's last state)
    let c = &no["status"]["containerStatuses"][0];
    let said = [&c["state"]["waiting"], &c["lastState"]["terminated"]]
        .iter()
        .filter_map(|s| s["message"].as_str())
        .any(|s| s.contains("CONFIG_OVERLAY_FS") && s.contains("modprobe overlay"));
    assert!(said, "{no}");
    assert_ne!(
        get(m, "nooverlay.agent_warned"),
        "0",
        "the agent's start-up warning"
    );

    // Isolation: the container has its own pid, mount, network, UTS and IPC namespaces.
    for ns in ["pid", "mnt", "net", "uts", "ipc"] {
        let v = get(m, &format!("web.ns.{ns}"));
        let (pod, host) = v
            .split_once(" host=")
            .unwrap_or_else(|| panic!("web.ns.{ns}: {v:?}"));
        assert!(pod.starts_with(&format!("{ns}:[")), "web.ns.{ns}: {v:?}");
        assert_ne!(pod, host, "the container shares the host's {ns} namespace");
    }
    let nspid: Vec<&str> = get(m, "web.app.nspid").split_whitespace().collect();
    assert_eq!(
        nspid.len(),
        2,
        "NSpid: the host's pid and the pod's: {nspid:?}"
    );
    assert_eq!(nspid[0], get(m, "web.app.pid"));
    // kubelet's default (no shareProcessNamespace): the container is PID 1 of its own PID
    // namespace.
    assert_eq!(nspid[1], "1", "the app's PID in its own PID namespace");
    assert_eq!(
        get(m, "web.app.hostname"),
        "web-vm",
        "the pod's hostname (UTS)"
    );
    // (its interfaces, lo and eth0, are checked with the pod network in podnet.rs)

    // Five pods at once, each Running; the small ones Burstable (requests below limits).
    let pods = json(m, "pods.json");
    let items = pods["items"].as_array().expect("pods.json has items");
    let mut running: Vec<&str> = items
        .iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    running.sort_unstable();
    assert_eq!(
        running,
        [
            "gpod-vm",
            "small-1-vm",
            "small-2-vm",
            "small-3-vm",
            "web-vm"
        ],
        "pods Running at once"
    );
    for p in items {
        if p["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("small-"))
        {
            assert_eq!(p["status"]["qosClass"], "Burstable", "{p}");
            assert!(
                p["status"]["containerStatuses"][0]["state"]["running"].is_object(),
                "{p}"
            );
        }
    }
    assert_eq!(get(m, "agent.comm"), "tidelet", "agent.pid is the agent");
    let agent_kib: u64 = get(m, "rss.agent_kib").parse().expect("rss.agent_kib");
    assert!(agent_kib > 0, "agent VmRSS {agent_kib}");
    // One supervisor per pod: the five running and the OOM-killed one, which still exists.
    let shim = get(m, "rss.tidelet-shim");
    let (shims, shim_kib, _, _) =
        rss_group(shim).unwrap_or_else(|| panic!("rss.tidelet-shim: {shim:?}"));
    assert_eq!(shims, 6, "tidelet-shim processes: {}", get(m, "procs"));
    assert!(shim_kib > 0, "supervisors' VmRSS");
}

#[test]
fn rss_group_parses_the_marker() {
    let cases = [
        (
            "count 6 total_kib 15972 max_kib 2664 pss_kib 4096",
            Some((6, 15972, 2664, 4096)),
        ),
        (
            "count 0 total_kib 0 max_kib 0 pss_kib 0",
            Some((0, 0, 0, 0)),
        ),
        ("", None),
        ("count x total_kib 1 max_kib 1 pss_kib 1", None),
        ("total_kib 1 count 1 max_kib 1 pss_kib 1", None),
        ("count 1 total_kib 1 max_kib 1", None),
        ("count 1 total_kib 1 max_kib 1 pss_kib 1 extra", None),
    ];
    for (v, want) in cases {
        assert_eq!(rss_group(v), want, "{v:?}");
    }
}
