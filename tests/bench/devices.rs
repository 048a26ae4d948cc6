//! Device figures of tidelet (issue 6), with the real release binaries, as root:
//!
//! 1. what `Allocate` plus the device set-up add to a pod's start: `PODS` pods asking for one
//!    `tidelet.io/serial` device of the real `tidelet-generic-plugin` (serving character nodes
//!    made with mknod in a temp `/dev`, with `/dev/net/tun`'s numbers 10:200) and `PODS` pods
//!    without, alternating, one at a time (each removed and gone before the next), timed the way
//!    `startup.rs` times a pod's start (manifest written -> the container running, polled every
//!    millisecond over the agent's API socket); beside that, the agent's own timings from its
//!    log (`pod devices admitted elapsed_us=`: choose, `Allocate` over gRPC, checkpoint;
//!    `container devices set up elapsed_us=`: edits, cgroup rules, `PreStartContainer`);
//! 2. the same difference for Podman, same run: `podman run --rm --network none [--device
//!    NODE:/dev/ttyUSB0] localhost/busybox:1.35 true`, alternating, when `PODMAN_PEER=1` (the
//!    script sets it once `shared/peer` is set up and its `env.sh` sourced);
//! 3. the idle cost of both plugins, each registered to a running agent (so the agent holds a
//!    `ListAndWatch` stream open): after `SETTLE_SECS` (10) VmRSS, Pss, RssAnon, RssFile, then
//!    CPU (utime + stime ticks, and schedstat nanoseconds) and wake-ups over `IDLE_SECS` (60),
//!    then the memory again; once with the start-up code paged out after registering (the
//!    default) and once with `TIDELET_PLUGIN_NO_TRIM=1` (from copies of the binaries, so the
//!    two variants share no page cache), both pairs side by side on two agents.
//!    For scale: a Rust `sleep` (`REF_SLEEP_BIN`, built by the script) and `/bin/sleep`.
//!
//! Run with `scripts/bench-devices.sh`, or `TIDELET_BIN=target/release/tidelet cargo bench -p
//! tidelet-e2e --bench devices` after `cargo build --release -p tidelet -p
//! tidelet-generic-plugin -p tidelet-gpu-plugin`. Figures are printed, never asserted; the
//! bench fails only when a measurement is impossible (a pod never runs, a plugin never
//! registers, a device is missing in a container that asked for it).
//!
//! Without `--bench` (`cargo test -p tidelet-e2e --bench devices`, against the debug builds of
//! tidelet and both plugins that `cargo build --workspace` makes) it is a smoke run, whatever
//! `PODS`, `SETTLE_SECS` and `IDLE_SECS` say: one pod of each kind after the warm-up pair, the
//! plugins idle for 1 s with no settling; every check on the containers' devices and the
//! plugins' registration is made the same. Podman's part runs only when `PODMAN_PEER=1`, as
//! in a real run.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidelet_e2e::{privileged, wait_for, Agent};

const SERIAL: &str = "tidelet.io/serial";
/// `/dev/net/tun`'s numbers: not in the default container allow list.
const TUN: (u64, u64) = (10, 200);
const SERIAL_NODES: usize = 8;

/// Whether this is a smoke run (no `--bench`); set once by `main`.
static SMOKE: OnceLock<bool> = OnceLock::new();

/// A release binary of this workspace: `$VAR`, else `<target>/release/<name>`; in a smoke run
/// `$VAR`, else the debug build's (`tidelet_e2e::plugin_bin`).
fn release_bin(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    if SMOKE.get() == Some(&true) {
        return tidelet_e2e::plugin_bin(name);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tidelet_e2e::workspace().join("target"));
    let p = target.join("release").join(name);
    assert!(
        p.exists(),
        "{} not found: `cargo build --release -p {name}` first (or set {var})",
        p.display()
    );
    p
}

fn mknod_char(path: &Path, (major, minor): (u64, u64)) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

/// A plugin process, stopped with SIGTERM (then SIGKILL) when dropped.
struct Plugin {
    name: &'static str,
    child: Child,
}

impl Plugin {
    fn spawn(name: &'static str, mut cmd: Command, log: &Path, no_trim: bool) -> Plugin {
        if no_trim {
            cmd.env("TIDELET_PLUGIN_NO_TRIM", "1");
        }
        let log = std::fs::File::create(log).unwrap();
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Plugin { name, child }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temp `/dev` with `ttyUSB0..7` (10:200) and the generic plugin's config for them.
struct SerialTree {
    _tmp: tempfile::TempDir,
    dev: PathBuf,
    config: PathBuf,
    dir: PathBuf,
}

fn serial_tree() -> SerialTree {
    let tmp = tempfile::Builder::new()
        .prefix("tidelet-bench-dev-")
        .tempdir()
        .unwrap();
    let dev = tmp.path().join("dev");
    for i in 0..SERIAL_NODES {
        mknod_char(&dev.join(format!("ttyUSB{i}")), TUN);
    }
    let config = tmp.path().join("generic.yaml");
    std::fs::write(
        &config,
        format!("groups:\n- resource: {SERIAL}\n  paths: [\"/dev/ttyUSB*\"]\n  share: 1\n  permissions: rw\n"),
    )
    .unwrap();
    SerialTree {
        dir: tmp.path().to_path_buf(),
        _tmp: tmp,
        dev,
        config,
    }
}

/// The plugin binary to run: for the no-trim variant a copy in `dir`, so that the two
/// variants, running side by side, do not share the executable's page cache (Pss would split
/// the shared pages between them, and `MADV_PAGEOUT` leaves pages another process maps).
fn plugin_bin(var: &str, name: &str, no_trim: bool, dir: &Path) -> PathBuf {
    let bin = release_bin(var, name);
    if !no_trim {
        return bin;
    }
    let copy = dir.join(format!("{name}.copy"));
    if !copy.exists() {
        std::fs::copy(&bin, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", bin.display()));
    }
    copy
}

fn generic_plugin(t: &SerialTree, a: &Agent, log: &str, no_trim: bool) -> Plugin {
    let bin = plugin_bin(
        "GENERIC_PLUGIN_BIN",
        "tidelet-generic-plugin",
        no_trim,
        &t.dir,
    );
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(&t.config)
        .arg("--device-plugin-dir")
        .arg(a.device_plugin_dir())
        .arg("--dev-root")
        .arg(&t.dev);
    Plugin::spawn("generic", cmd, &t.dir.join(log), no_trim)
}

/// The node's allocatable count of `resource` (0 when not listed).
fn allocatable(a: &Agent, resource: &str) -> u64 {
    let out = a.cli(&["get", "node", "-o", "json"]);
    let n: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    n["status"]["allocatable"][resource]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn wait_allocatable(a: &Agent, resource: &str, n: u64) {
    wait_for(
        &format!("{resource}: {n} allocatable"),
        Duration::from_secs(30),
        || (allocatable(a, resource) == n).then_some(()),
    );
}

fn pod_yaml(name: &str, device: bool) -> String {
    let limits = if device {
        format!("    resources: {{limits: {{{SERIAL}: \"1\"}}}}\n")
    } else {
        String::new()
    };
    // `wait` returns on SIGTERM, so a pod goes at once when its manifest is removed.
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: localhost/busybox:1.35\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 3600 & wait\"]\n{limits}")
}

fn running(root: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(root.join("tidelet.sock")) else {
        return false;
    };
    let _ = s.write_all(b"{\"op\":\"listPods\"}\n");
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
    v["pods"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| tidelet_e2e::all_running(&p["pod"])))
}

/// The character nodes with tun's numbers in a running container's `/dev`, and whether its
/// v1 device cgroup allows 10:200 (None on cgroup v2, where the rules are an eBPF program).
fn container_devices(a: &Agent, pod: &str) -> (Vec<String>, Option<bool>) {
    use std::os::unix::fs::MetadataExt;
    let pid = a.container_pid(&a.full_name(pod), "c");
    let dev = PathBuf::from(format!("/proc/{pid}/root/dev"));
    let mut nodes: Vec<String> = std::fs::read_dir(&dev)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.metadata().is_ok_and(|m| {
                m.file_type().is_char_device() && m.rdev() == nix::sys::stat::makedev(TUN.0, TUN.1)
            })
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    nodes.sort();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let allowed = cg
        .lines()
        .find_map(|l| l.split_once(":devices:").map(|(_, p)| p.to_string()))
        .map(|p| {
            std::fs::read_to_string(format!("/sys/fs/cgroup/devices{p}/devices.list"))
                .unwrap_or_default()
                .lines()
                .any(|l| l == "c 10:200 rw" || l == "c 10:200 rwm" || l == "a *:* rwm")
        });
    (nodes, allowed)
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

fn summary(label: &str, unit: &str, v: &[f64]) {
    if v.is_empty() {
        println!("{label}: no values");
        return;
    }
    let s = sorted(v);
    println!(
        "{label}: median {:.3} {unit}, p90 {:.3} {unit}, max {:.3} {unit}, min {:.3} {unit} (n={})",
        pct(&s, 0.5),
        pct(&s, 0.9),
        s[s.len() - 1],
        s[0],
        s.len()
    );
}

/// The `elapsed_us=` values of the agent's log lines containing `what`, in ms.
fn log_elapsed_ms(log: &str, what: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            let at = l.find(" elapsed_us=")? + " elapsed_us=".len();
            l[at..].split(' ').next()?.parse::<f64>().ok()
        })
        .map(|us| us / 1000.0)
        .collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Part 1: pods with and without a device, alternating, on one agent.
fn pod_start(pods: usize, t: &SerialTree) {
    let a = Agent::start();
    let _plugin = generic_plugin(t, &a, "generic-pods.log", false);
    wait_allocatable(&a, SERIAL, SERIAL_NODES as u64);
    println!(
        "(1) generic plugin registered {SERIAL} ({SERIAL_NODES} nodes 10:200); loadavg {}",
        loadavg()
    );
    let (mut with, mut without) = (vec![], vec![]);
    let mut checked = (0, 0);
    // Index 0 of each kind is a warm-up (first use of the image's lower dirs, the plugin's
    // first connection), not counted.
    for i in 0..=pods {
        for device in [true, false] {
            let name = format!("{}{i:02}", if device { "dev" } else { "plain" });
            let file = format!("{name}.yaml");
            wait_for("the previous pod gone", Duration::from_secs(60), || {
                (a.pods().is_empty() && a.supervisor_pids().is_empty()).then_some(())
            });
            std::thread::sleep(Duration::from_millis(300));
            let t0 = Instant::now();
            a.write(&file, &pod_yaml(&name, device));
            while !running(&a.root) {
                assert!(
                    t0.elapsed() < Duration::from_secs(60),
                    "{name} did not start within 60 s"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            // What the container got: a node with tun's numbers and an allow rule for it
            // exactly when it asked for a device.
            let (nodes, allowed) = container_devices(&a, &name);
            assert_eq!(nodes.len(), usize::from(device), "{name}: nodes {nodes:?}");
            if let Some(al) = allowed {
                assert_eq!(al, device, "{name}: devices.list allows 10:200: {al}");
                checked.1 += 1;
            }
            checked.0 += 1;
            if i > 0 {
                if device { &mut with } else { &mut without }.push(ms);
            }
            a.remove(&file);
        }
    }
    let log = a.agent_log();
    // The first line of each is the warm-up pod's.
    let admitted: Vec<f64> = log_elapsed_ms(&log, "pod devices admitted")
        .into_iter()
        .skip(1)
        .collect();
    let set_up: Vec<f64> = log_elapsed_ms(&log, "container devices set up")
        .into_iter()
        .skip(1)
        .collect();
    println!(
        "(1) checked in every container: a 10:200 node in /dev exactly when it asked ({} pods); the v1 devices.list allow rule ({} pods)",
        checked.0, checked.1
    );
    summary(
        "(1) manifest -> running, with a tidelet.io/serial device",
        "ms",
        &with,
    );
    summary("(1) manifest -> running, without a device", "ms", &without);
    let (w, wo) = (sorted(&with), sorted(&without));
    println!(
        "(1) difference: medians {:+.1} ms, p90s {:+.1} ms",
        pct(&w, 0.5) - pct(&wo, 0.5),
        pct(&w, 0.9) - pct(&wo, 0.9)
    );
    let pairs: Vec<f64> = with.iter().zip(&without).map(|(a, b)| a - b).collect();
    summary(
        "(1) per pair (device pod minus the plain pod started right after it)",
        "ms",
        &pairs,
    );
    summary(
        "(1) agent log: pod devices admitted (choose, Allocate over gRPC, checkpoint)",
        "ms",
        &admitted,
    );
    summary(
        "(1) agent log: container devices set up (edits, cgroup rules, PreStartContainer)",
        "ms",
        &set_up,
    );
    let direct: Vec<f64> = admitted.iter().zip(&set_up).map(|(a, b)| a + b).collect();
    summary("(1) agent log: the two together, per pod", "ms", &direct);
    println!("(1) loadavg after: {}", loadavg());
}

fn podman(args: &[&str]) -> f64 {
    let t0 = Instant::now();
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("run podman");
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ms
}

/// Part 2: Podman's device set-up, alternating runs with and without `--device`.
fn podman_peer(runs: usize, t: &SerialTree) {
    let node = t.dev.join("ttyUSB0");
    let spec = format!("{}:/dev/ttyUSB0", node.display());
    let img = "localhost/busybox:1.35";
    let with_args = [
        "run",
        "--rm",
        "--network",
        "none",
        "--device",
        &spec,
        img,
        "true",
    ];
    let without_args = ["run", "--rm", "--network", "none", img, "true"];
    // The node is there, with its numbers, in Podman's container too.
    let check = Command::new("podman")
        .args(["run", "--rm", "--network", "none", "--device", &spec, img])
        .args(["stat", "-c", "%F %t:%T", "/dev/ttyUSB0"])
        .output()
        .expect("run podman");
    println!(
        "(2) podman {}; in its container /dev/ttyUSB0 is: {}",
        String::from_utf8_lossy(
            &Command::new("podman")
                .arg("--version")
                .output()
                .unwrap()
                .stdout
        )
        .trim(),
        String::from_utf8_lossy(&check.stdout).trim()
    );
    let (mut with, mut without) = (vec![], vec![]);
    for i in 0..=runs {
        let (w, wo) = (podman(&with_args), podman(&without_args));
        if i > 0 {
            with.push(w);
            without.push(wo);
        }
    }
    summary(
        "(2) podman run --rm --network none --device NODE:/dev/ttyUSB0 busybox true",
        "ms",
        &with,
    );
    summary(
        "(2) podman run --rm --network none busybox true",
        "ms",
        &without,
    );
    let (w, wo) = (sorted(&with), sorted(&without));
    println!(
        "(2) difference: medians {:+.1} ms, p90s {:+.1} ms",
        pct(&w, 0.5) - pct(&wo, 0.5),
        pct(&w, 0.9) - pct(&wo, 0.9)
    );
    let pairs: Vec<f64> = with.iter().zip(&without).map(|(a, b)| a - b).collect();
    summary("(2) per pair (with minus without)", "ms", &pairs);
}

/// A fake GPU tree: one NVIDIA GPU (with `nvidiactl` and `nvidia-uvm`) and one panfrost
/// render node, as `device-plugins/gpu/tests/plugin.rs` builds it.
fn gpu_tree(base: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (dev, proc, sys) = (base.join("dev"), base.join("proc"), base.join("sys"));
    mknod_char(&dev.join("nvidia0"), TUN);
    mknod_char(&dev.join("nvidiactl"), (1, 3));
    mknod_char(&dev.join("nvidia-uvm"), (1, 5));
    mknod_char(&dev.join("dri/renderD128"), (10, 229));
    let gpu = proc.join("driver/nvidia/gpus/0000:01:00.0");
    std::fs::create_dir_all(&gpu).unwrap();
    std::fs::write(gpu.join("information"), "Model: \t\t Test GPU\nGPU UUID: \t GPU-8f6c1e2a-1111-2222-3333-444455556666\nBus Location: \t 0000:01:00.0\nDevice Minor: \t 0\n").unwrap();
    let d = sys.join("class/drm/renderD128/device");
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::symlink("../../bus/platform/drivers/panfrost", d.join("driver")).unwrap();
    (dev, proc, sys)
}

fn gpu_plugin(base: &Path, a: &Agent, no_trim: bool) -> Plugin {
    let (dev, proc, sys) = gpu_tree(base);
    let bin = plugin_bin("GPU_PLUGIN_BIN", "tidelet-gpu-plugin", no_trim, base);
    let mut cmd = Command::new(bin);
    cmd.arg("--device-plugin-dir")
        .arg(a.device_plugin_dir())
        .arg("--dev-root")
        .arg(dev)
        .arg("--proc-root")
        .arg(proc)
        .arg("--sys-root")
        .arg(sys);
    Plugin::spawn("gpu", cmd, &base.join("gpu.log"), no_trim)
}

/// `key` (KiB) of a `/proc/PID/status`-style file.
fn kib(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn memory(pid: i32) -> String {
    let st = format!("/proc/{pid}/status");
    format!(
        "VmRSS {} KiB, Pss {} KiB, RssAnon {} KiB, RssFile {} KiB",
        kib(&st, "VmRSS:"),
        kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:"),
        kib(&st, "RssAnon:"),
        kib(&st, "RssFile:")
    )
}

/// (utime + stime ticks, schedstat ns, voluntary context switches) of a process, all threads.
fn cpu(pid: i32) -> (u64, u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<u64> = s
        .rfind(')')
        .map(|at| {
            s[at + 2..]
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let (mut ns, mut sw) = (0, 0);
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = t.path();
        ns += std::fs::read_to_string(p.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        sw += kib(
            &p.join("status").to_string_lossy(),
            "voluntary_ctxt_switches:",
        );
    }
    (ticks, ns, sw)
}

/// Part 3: the plugins' idle memory and CPU, with and without the start-up code trim.
fn idle(settle: u64, secs: u64, t: &SerialTree) {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let mut agents = vec![];
    let mut plugins: Vec<(String, Plugin)> = vec![];
    for no_trim in [false, true] {
        let a = Agent::start();
        let base = t.dir.join(if no_trim { "gpu-no-trim" } else { "gpu-trim" });
        let g = generic_plugin(
            t,
            &a,
            if no_trim {
                "generic-no-trim.log"
            } else {
                "generic-trim.log"
            },
            no_trim,
        );
        let p = gpu_plugin(&base, &a, no_trim);
        wait_allocatable(&a, SERIAL, SERIAL_NODES as u64);
        wait_allocatable(&a, "nvidia.com/gpu", 1);
        wait_allocatable(&a, "dri.tidelet.io/panfrost", 1);
        let how = if no_trim {
            "TIDELET_PLUGIN_NO_TRIM=1"
        } else {
            "trim (default)"
        };
        plugins.push((format!("generic, {how}, 1 resource, 8 devices"), g));
        plugins.push((
            format!("gpu, {how}, 2 resources (nvidia.com/gpu, dri.tidelet.io/panfrost)"),
            p,
        ));
        agents.push(a);
    }
    let mut refs = vec![];
    if let Some(bin) = std::env::var_os("REF_SLEEP_BIN") {
        refs.push(("Rust sleep (std::thread::sleep, release)", bin.into()));
    }
    refs.push(("/bin/sleep (GNU coreutils)", PathBuf::from("/bin/sleep")));
    let mut ref_children: Vec<(&str, Child)> = refs
        .into_iter()
        .map(|(n, bin): (&str, PathBuf)| (n, Command::new(bin).arg("3600").spawn().unwrap()))
        .collect();
    println!(
        "(3) {} plugins registered to 2 agents; settling {settle} s; loadavg {}",
        plugins.len(),
        loadavg()
    );
    std::thread::sleep(Duration::from_secs(settle));
    for (label, p) in &plugins {
        println!(
            "(3) after {settle} s, {} [{label}]: {}",
            p.name,
            memory(p.pid())
        );
    }
    for (label, c) in &ref_children {
        println!("(3) reference, {label}: {}", memory(c.id() as i32));
    }
    let before: Vec<_> = plugins.iter().map(|(_, p)| cpu(p.pid())).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let el = t0.elapsed().as_secs_f64();
    for ((label, p), b) in plugins.iter().zip(&before) {
        let a = cpu(p.pid());
        println!(
            "(3) idle {el:.1} s, {} [{label}]: {} ticks of {:.0} ms ({:.3} % of a core), schedstat {:.3} ms ({:.4} %), {:.2} wake-ups/s",
            p.name,
            a.0 - b.0,
            1000.0 / hz,
            (a.0 - b.0) as f64 / hz / el * 100.0,
            (a.1 - b.1) as f64 / 1e6,
            (a.1 - b.1) as f64 / 1e9 / el * 100.0,
            (a.2 - b.2) as f64 / el
        );
    }
    for (label, p) in &plugins {
        println!(
            "(3) after {} s, {} [{label}]: {}",
            settle + secs,
            p.name,
            memory(p.pid())
        );
    }
    for (_, c) in &mut ref_children {
        let _ = c.kill();
        let _ = c.wait();
    }
    // Plugins first (their Drop sends SIGTERM), then the agents.
    drop(plugins);
    drop(agents);
}

fn main() {
    if !privileged() {
        return;
    }
    let mode = tidelet_e2e::BenchMode::from_args();
    let smoke = mode.smoke;
    SMOKE.set(smoke).unwrap();
    let knob = |key: &str, default: u64, smoke_value: u64| mode.knob(key, default, smoke_value);
    let pods = knob("PODS", 20, 1) as usize;
    if smoke {
        println!("smoke run (no --bench): 1 pod of each kind after the warm-up, debug plugins idle 1 s with no settling; the figures mean nothing");
    }
    println!("tidelet binary: {}", tidelet_e2e::bin().display());
    let t = serial_tree();
    pod_start(pods, &t);
    if std::env::var_os("PODMAN_PEER").is_some_and(|v| v == "1") {
        podman_peer(pods, &t);
    } else {
        println!(
            "(2) Podman not measured (PODMAN_PEER is not 1; scripts/bench-devices.sh sets it up)"
        );
    }
    idle(knob("SETTLE_SECS", 10, 0), knob("IDLE_SECS", 60, 1), &t);
}
