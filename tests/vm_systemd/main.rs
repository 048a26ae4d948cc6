//! tidelet as a systemd service on an aarch64 board: a QEMU guest (`-M virt -cpu cortex-a72`,
//! TCG) boots Debian's arm64 kernel, a tiny initrd that mounts the root disk read-only, and
//! Debian 12's systemd 252 from that disk, with tidelet installed from `dist/` as the Yocto
//! recipe installs it (`tidelet.service`, `/etc/tidelet/config.yaml`) and a static pod baked
//! into the image. `tidelet-vmtest.service` (tests/vm_systemd/guest/vmtest.sh) checks the
//! service, the pod's cgroup inside the delegated subtree, the pod's network (tidelet's
//! built-in CNI network with Debian's containernetworking-plugins and iptables-nft from the
//! image), a `systemctl restart tidelet`, the missing-controllers error and the read-only
//! root, and prints `TIDELET-VMSD key=value` console lines that this test asserts on.
//!
//! Inputs: the cross-built binary (`$TIDELET_AARCH64_BIN`, else
//! `target/cross/aarch64-unknown-linux-gnu/release/tidelet` from scripts/cross-build.sh).
//! The guest is built by `build-rootfs.sh` into `target/vm/aarch64-systemd/` (cached); the
//! console is kept in `target/vm/console-systemd-aarch64.log`. Root is needed; without it the
//! test skips unless `TIDELET_REQUIRE_PRIVILEGED=1`, which also makes a missing binary fatal.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../vm/markers.rs"]
mod markers;
#[allow(dead_code)]
#[path = "../vm/qemu.rs"]
mod qemu;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidelet_e2e::{privileged, workspace};

const MARK: &str = "TIDELET-VMSD ";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Hard limit for the boot (`TIDELET_VMSD_TIMEOUT`, default 420 s).
fn timeout() -> Duration {
    let secs = std::env::var("TIDELET_VMSD_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(420);
    Duration::from_secs(secs)
}

/// The `TIDELET-VMSD key=value` lines; a later line wins. Lines may be preceded by other
/// console output on the same line (systemd's status, the kernel).
fn markers(console: &str) -> BTreeMap<String, String> {
    markers::parse_prefixed(MARK, console)
}

/// Run build-rootfs.sh for `systemd` (its TIDELET_VMSD_SYSTEMD: `stable` or `backports`);
/// returns (kernel, initrd, disk).
fn build(tidelet: &Path, systemd: &str) -> (PathBuf, PathBuf, PathBuf) {
    let script = workspace().join("tests/vm_systemd/build-rootfs.sh");
    let out_dir = target_dir().join(format!("vm/aarch64-systemd-{systemd}"));
    let start = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg(&out_dir)
        .env("TIDELET_AARCH64_BIN", tidelet)
        .env("TIDELET_VMSD_SYSTEMD", systemd);
    let p = qemu::build_outputs(&mut cmd, &["kernel", "initrd", "disk"]);
    eprintln!("vm_systemd: guest built in {:.1?}", start.elapsed());
    match p.as_slice() {
        [k, i, d] => (k.clone(), i.clone(), d.clone()),
        _ => unreachable!("build_outputs returns one path per name"),
    }
}

fn qemu_args(arch: &qemu::Arch, kernel: &Path, initrd: &Path, disk: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["-accel".into(), "tcg".into()];
    a.extend(arch.machine.iter().map(|s| s.to_string()));
    let drive = format!(
        "file={},if=none,id=root,format=raw,readonly=on",
        disk.display()
    );
    a.extend(
        [
            "-m",
            "512",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
            "-drive",
            &drive,
            "-device",
            "virtio-blk-device,drive=root",
            "-kernel",
            &kernel.display().to_string(),
            "-initrd",
            &initrd.display().to_string(),
            "-append",
            &format!(
                "console={} panic=-1 quiet loglevel=3 systemd.show_status=error",
                arch.console
            ),
        ]
        .map(String::from),
    );
    a
}

fn get<'a>(m: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    m.get(key)
        .unwrap_or_else(|| panic!("no `{MARK}{key}=` marker; markers: {m:#?}"))
}

#[test]
fn markers_are_parsed_from_noisy_console_lines() {
    let console = "[  OK  ] x\r\nTIDELET-VMSD a=1\r\nnoise TIDELET-VMSD b=x=y \nTIDELET-VMSD done\nTIDELET-VMSD a=2\n";
    let m = markers(console);
    assert_eq!(m.get("a").map(String::as_str), Some("2"));
    assert_eq!(m.get("b").map(String::as_str), Some("x=y"));
    assert_eq!(m.get("done").map(String::as_str), Some(""));
    assert_eq!(m.len(), 3);
}

/// One boot at a time: two TCG guests on a 2-core machine would slow each other past the
/// timeouts.
static ONE_VM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Build and boot the guest with `systemd` (`stable` or `backports`); the markers of a run
/// that reached `done`, else a panic with the console's tail. `None`: no aarch64 binary and
/// TIDELET_REQUIRE_PRIVILEGED unset (skip).
fn run_guest(systemd: &str) -> Option<BTreeMap<String, String>> {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let tidelet = std::env::var_os("TIDELET_AARCH64_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("cross/aarch64-unknown-linux-gnu/release/tidelet"));
    if !tidelet.is_file() {
        let msg = format!(
            "{}: no cross-built aarch64 tidelet; run scripts/cross-build.sh first (or set \
             TIDELET_AARCH64_BIN)",
            tidelet.display()
        );
        if tidelet_testgate::required() {
            panic!("{msg}");
        }
        eprintln!("skipping: {msg} (set TIDELET_REQUIRE_PRIVILEGED=1 to make this a failure)");
        return None;
    }
    // The build script installs what it and the boot need (mmdebstrap, qemu-user-static,
    // qemu-system-arm...) on a fresh machine.
    let (kernel, initrd, disk) = build(&tidelet, systemd);
    let arch = qemu::AARCH64;
    assert!(
        qemu::on_path(arch.qemu),
        "{} not found: install {}",
        arch.qemu,
        arch.qemu_package
    );
    let log = target_dir().join(format!("vm/console-systemd-{systemd}-aarch64.log"));
    eprintln!("vm_systemd: console log: {}", log.display());
    let boot = qemu::run(
        &arch,
        &qemu_args(&arch, &kernel, &initrd, &disk),
        &log,
        timeout(),
    );
    let (console, elapsed, timed_out) = (boot.console, boot.elapsed, boot.timed_out);
    let m = markers(&console);
    eprintln!(
        "vm_systemd: QEMU ran {elapsed:.1?} (systemd at {} s, tidelet active at {} s, pod at {} s, restart {}..{} s, end {} s)",
        m.get("systemd.uptime").map_or("?", String::as_str),
        m.get("service.active_at").map_or("?", String::as_str),
        m.get("pod.running_at").map_or("?", String::as_str),
        m.get("restart.start").map_or("?", String::as_str),
        m.get("restart.done").map_or("?", String::as_str),
        m.get("uptime.end").map_or("?", String::as_str),
    );
    let problem = if timed_out {
        Some(format!("QEMU killed after {:?}", timeout()))
    } else if let Some(f) = m.get("fail") {
        Some(format!("the guest failed: {f}"))
    } else if !m.contains_key("done") {
        Some("the guest ended before `TIDELET-VMSD done`".to_string())
    } else {
        None
    };
    if let Some(p) = problem {
        panic!(
            "{p}\n---- console tail ({}) ----\n{}",
            log.display(),
            markers::tail(&console, 150)
        );
    }
    for (k, v) in &m {
        eprintln!("vm_systemd: {k}={v}");
    }
    Some(m)
}

/// Debian 12's systemd 252: no DelegateSubgroup=, so the pods go beside the unit.
#[test]
fn systemd_252_service_keeps_its_pod_across_a_restart_on_aarch64() {
    if !privileged() {
        return;
    }
    let Some(m) = run_guest("stable") else {
        return;
    };
    assert!(
        get(&m, "systemd.version").starts_with("systemd_252_"),
        "{m:?}"
    );
    check(&m);
}

/// systemd 254+ (bookworm-backports; Yocto scarthgap has 255): DelegateSubgroup=agent, so
/// the pods go inside the unit's delegated cgroup.
#[test]
fn systemd_254_service_keeps_its_pod_inside_its_cgroup_across_a_restart_on_aarch64() {
    if !privileged() {
        return;
    }
    let Some(m) = run_guest("backports") else {
        return;
    };
    let v = get(&m, "systemd.version");
    let major: u32 = v
        .strip_prefix("systemd_")
        .and_then(|r| r.split('_').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("systemd.version {v:?}"));
    assert!(major >= 254, "bookworm-backports gave {v}");
    check(&m);
}

/// True if `ip` is in the built-in network's 10.87.0.0/16.
fn in_pod_subnet(ip: &str) -> bool {
    ip.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| a.octets()[..2] == [10, 87])
}

fn check_network(m: &BTreeMap<String, String>, pod: &Value) {
    // (build-rootfs.sh's NET_MODULES, each in /sys/module once the initrd loaded it)
    let loaded: Vec<&str> = get(m, "initrd.net_modules").split_whitespace().collect();
    for module in [
        "veth",
        "bridge",
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
        assert!(
            loaded.contains(&module),
            "the initrd did not load {module}: {loaded:?}"
        );
    }
    let ip = get(m, "pod.ip");
    assert!(
        in_pod_subnet(ip),
        "the pod's podIP {ip:?} is not in 10.87.0.0/16"
    );
    assert_eq!(pod["status"]["podIP"], ip, "podIP after the restart: {pod}");
    assert_eq!(get(m, "pod.ip.after"), ip, "podIP after the restart");
    let mut links: Vec<&str> = get(m, "app1.net_links").split_whitespace().collect();
    links.sort_unstable();
    assert_eq!(links, ["eth0", "lo"], "the pod's interfaces");
    let addrs: Vec<&str> = get(m, "app1.net_addrs").split_whitespace().collect();
    assert_eq!(addrs, [ip, "127.0.0.1"], "the pod's local addresses");
    assert_eq!(
        get(m, "app2.net_addrs"),
        get(m, "app1.net_addrs"),
        "after the restart"
    );
    assert_eq!(get(m, "net.ip_forward"), "1");
    assert!(
        get(m, "net.iptables.version").contains("nf_tables"),
        "{:?}",
        get(m, "net.iptables.version")
    );
    let comment = "-m comment --comment \"tidelet network tidelet\"";
    let nat: Vec<&str> = get(m, "net.iptables.nat").split('|').collect();
    let masq = format!("-A POSTROUTING -s 10.87.0.0/16 ! -d 10.87.0.0/16 {comment} -j MASQUERADE");
    assert!(nat.contains(&masq.as_str()), "nat POSTROUTING: {nat:#?}");
    let fwd: Vec<&str> = get(m, "net.iptables.filter").split('|').collect();
    for rule in [
        format!("-A FORWARD -s 10.87.0.0/16 {comment} -j ACCEPT"),
        format!(
            "-A FORWARD -d 10.87.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT {comment} -j ACCEPT"
        ),
    ] {
        assert!(fwd.contains(&rule.as_str()), "filter FORWARD lacks {rule}: {fwd:#?}");
    }
    assert_eq!(
        get(m, "pod.tcp_probe"),
        "refused",
        "TCP from the host to the pod"
    );
    assert_eq!(
        get(m, "journal.cni_warnings"),
        "0",
        "network warnings in tidelet's journal"
    );
}

/// The assertions shared by both systemd versions.
fn check(m: &BTreeMap<String, String>) {
    // cgroup v2, tidelet started as a Type=notify service with a watchdog.
    assert_eq!(get(m, "cgroup.fs"), "cgroup2fs");
    assert_eq!(get(m, "service.type"), "notify");
    assert_eq!(get(m, "service.watchdog_usec"), "30s");
    let unit = get(m, "service.cgroup");
    assert_eq!(unit, "/tidelet.slice/tidelet.service");
    let slice = "/tidelet.slice";
    // Debian 12's systemd 252 has no DelegateSubgroup=: tidelet stays in the unit's cgroup,
    // which must stay a leaf (no controllers for children) for systemd to restart it there;
    // the pods go beside it in the slice. systemd 254+ starts it in <unit>/agent instead and
    // the pods go inside the unit.
    let v252 = get(m, "systemd.version").starts_with("systemd_252_");
    let (agent_cg, pods_parent, provider_enabled) = if v252 {
        (
            unit.to_string(),
            slice.to_string(),
            get(m, "slice.subtree_control"),
        )
    } else {
        (
            format!("{unit}/agent"),
            unit.to_string(),
            get(m, "unit.subtree_control"),
        )
    };
    assert_eq!(get(m, "main1.cgroup"), agent_cg);
    if v252 {
        assert_eq!(
            get(m, "unit.subtree_control"),
            "",
            "the unit's cgroup must stay a leaf"
        );
        assert_eq!(
            get(m, "unit.procs"),
            get(m, "main1.pid"),
            "only the agent in the unit"
        );
    } else {
        assert_eq!(
            get(m, "unit.procs"),
            "",
            "processes left in the unit's own cgroup"
        );
    }
    for c in ["cpu", "memory", "pids"] {
        assert!(
            provider_enabled.split_whitespace().any(|e| e == c),
            "{pods_parent}: {provider_enabled:?} lacks {c}"
        );
    }

    // The pod: in the slice (252) or the unit (254+), with its limits (cpu 250m, memory 64Mi).
    let pod: Value = serde_json::from_str(get(m, "pod.json")).expect("pod.json is JSON");
    let uid = pod["metadata"]["uid"].as_str().expect("the pod has a uid");
    let pod_cg = format!("{pods_parent}/kubepods/burstable/pod{uid}");
    assert_eq!(get(m, "app1.cgroup"), format!("{pod_cg}/app"));
    assert_eq!(get(m, "app.memory.max"), (64u64 << 20).to_string());
    assert_eq!(get(m, "pod.memory.max"), (64u64 << 20).to_string());
    assert_eq!(get(m, "app.cpu.max"), "25000 100000");
    assert!(
        get(m, "sup1.cmd").contains("tidelet shim"),
        "{:?}",
        get(m, "sup1.cmd")
    );
    assert_eq!(get(m, "sup1.cgroup"), format!("{pod_cg}/_infra"));

    // The pod's network: an address of the built-in network (10.87.0.0/16) in its status and
    // on its eth0, the agent's rules through iptables-nft, forwarding on (the bridge
    // plugin), and the pod reachable from the host (its kernel refuses a closed port).
    check_network(m, &pod);

    // The restart: a new agent process, in the same place, the same pod process.
    assert_ne!(
        get(m, "main2.pid"),
        get(m, "main1.pid"),
        "the agent was not restarted"
    );
    assert_eq!(get(m, "main2.cgroup"), agent_cg);
    assert_eq!(get(m, "service.result"), "success");
    assert_eq!(get(m, "app2.alive"), "yes");
    assert_eq!(
        get(m, "app2.pid"),
        get(m, "app1.pid"),
        "the pod's process changed"
    );
    assert_eq!(get(m, "app2.cgroup"), get(m, "app1.cgroup"));
    assert_eq!(get(m, "app2.supervisor_alive"), "yes");
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["restartCount"], 0,
        "{pod}"
    );

    // No delegation: the error names the missing controllers and the way to enable them.
    assert_eq!(get(m, "nodelegate.result"), "exit-code");
    let nodelegate = get(m, "nodelegate.output");
    assert!(
        nodelegate.contains("missing controller(s)")
            && nodelegate.contains("Delegate=yes")
            && nodelegate.contains("nodelegate.slice/cgroup.subtree_control"),
        "{nodelegate}"
    );

    // Read-only root from start to end; tidelet wrote only to its state dir and /run.
    assert!(
        get(m, "root.options").split(',').any(|o| o == "ro"),
        "{m:?}"
    );
    assert!(
        get(m, "root.options.end").split(',').any(|o| o == "ro"),
        "{m:?}"
    );
    assert!(
        get(m, "root.touch").contains("Read-only file system"),
        "{m:?}"
    );
    assert_eq!(get(m, "state.fstype"), "tmpfs");
    assert_eq!(
        get(m, "journal.erofs"),
        "0",
        "tidelet hit the read-only root"
    );
}
