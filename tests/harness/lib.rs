//! Test harness for tidelet's end-to-end tests: it starts the real `tidelet` binary as root on
//! a temporary root directory, static-pod directory and cgroup root, so tests can run side by
//! side, and it checks what tidelet did from the outside (`/proc`, cgroup files).
//!
//! Privileged tests call `privileged()` first: without root they skip, unless
//! `TIDELET_REQUIRE_PRIVILEGED=1` (CI) makes that a failure.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

pub mod amqtt;
pub mod broker;
pub mod plugin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Whether this test may run (the one gate, `tidelet_testgate`): as root; elsewhere a skip,
/// or a failure where `TIDELET_REQUIRE_PRIVILEGED` demands privileged tests.
pub fn privileged() -> bool {
    tidelet_testgate::privileged_here()
}

/// How a bench target runs. `cargo bench` passes `--bench`: a real run, its counts and windows
/// from the environment. Without it (`cargo test -p tidelet-e2e --benches`, as CI runs them) it
/// is a smoke run: every part once with the smallest counts, against the debug build, so that
/// no bench stops working unseen; its figures mean nothing, its checks are checked.
#[derive(Debug, Clone, Copy)]
pub struct BenchMode {
    pub smoke: bool,
}

impl BenchMode {
    pub fn from_args() -> BenchMode {
        BenchMode {
            smoke: !std::env::args().any(|a| a == "--bench"),
        }
    }

    /// `$key` as a number, else `default`; in a smoke run `smoke_value`, whatever the
    /// environment says.
    pub fn knob(self, key: &str, default: u64, smoke_value: u64) -> u64 {
        if self.smoke {
            return smoke_value;
        }
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

/// What a set-up script of the repository (`tests/plugins/python/venv.sh`,
/// `tests/plugins/go/build.sh`, ...) prints on stdout, its one line: the venv or binary it made.
/// Run once per test process and script (the scripts reuse their work across runs); its stderr
/// is shown, and its failure fails the test.
pub fn set_up(script: &str) -> PathBuf {
    static DONE: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    // Held while the script runs: tests that need the same one wait for it, not run it twice.
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = done.get(script) {
        return p.clone();
    }
    let out = Command::new(workspace().join(script))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(out.status.success(), "{script} failed (above)");
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    done.insert(script.to_string(), p.clone());
    p
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The tidelet binary under test: `$TIDELET_BIN`, else `target/debug/tidelet`.
/// One of tidelet's device-plugin binaries (`tidelet-gpu-plugin`, `tidelet-generic-plugin`),
/// built by `cargo build --workspace`; `$TIDELET_PLUGIN_DIR/<name>` when set.
pub fn plugin_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("TIDELET_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin().parent().unwrap().to_path_buf());
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} does not exist: run cargo build --workspace first",
        p.display()
    );
    p
}

pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TIDELET_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let p = target.join("debug/tidelet");
    assert!(
        p.exists(),
        "{} not found: run `cargo build` first (or set TIDELET_BIN)",
        p.display()
    );
    p
}

/// The test images (`busybox.oci.tar`, `busybox.docker.tar`, `layered.oci.tar`), built once.
pub fn images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = workspace().join("target/test-images");
        let out = Command::new("bash")
            .arg(workspace().join("images/build-test-images.sh"))
            .arg(&dir)
            .output()
            .expect("run build-test-images.sh");
        assert!(
            out.status.success(),
            "build-test-images.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// Poll `f` every 20 ms until it returns `Some`, or panic with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn random_suffix() -> String {
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A running tidelet on its own directories and cgroup root.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub manifests: PathBuf,
    pub cgroup_root: String,
    pub node: String,
    /// KubeletConfiguration-style file passed with `--config`, if any.
    pub config: Option<PathBuf>,
    /// Extra environment of the agent process.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Agent {
    /// Start an agent with the busybox test image imported.
    pub fn start() -> Agent {
        Self::start_with_config(None)
    }

    /// Start an agent with a config file of this content (KubeletConfiguration keys).
    pub fn start_with_config(config: Option<&str>) -> Agent {
        Self::start_with(config, &[])
    }

    /// Start an agent with a config file and extra environment variables.
    pub fn start_with(config: Option<&str>, env: &[(&str, &str)]) -> Agent {
        let mut a = Self::prepare(config, env);
        a.spawn();
        a
    }

    /// Everything `start_with` does but starting the agent (`spawn` does): for tests that
    /// need manifests or images in place before the agent's first look.
    pub fn prepare(config: Option<&str>, env: &[(&str, &str)]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("tidelet-e2e-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        let mut a = Agent {
            root,
            manifests,
            cgroup_root: format!("/tidelet-e2e-{}", random_suffix()),
            node: "e2e".into(),
            config: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dir,
            child: None,
        };
        let p = a.dir.path().join("config.yaml");
        let mut text = with_disk_signals_off(config.unwrap_or(""));
        if !text.contains("cniConfDir") {
            // The machine's own CNI configs (Podman installs one) are not the test's: pods get
            // tidelet's built-in network unless the test writes a config of its own.
            let dir = a.dir.path().join("cni-conf");
            text.push_str(&format!("\ncniConfDir: {}\n", dir.display()));
        }
        std::fs::write(&p, text).unwrap();
        a.config = Some(p);
        let imp = a.cli(&[
            "image",
            "import",
            images().join("busybox.oci.tar").to_str().unwrap(),
        ]);
        assert!(
            imp.status.success(),
            "image import: {}",
            String::from_utf8_lossy(&imp.stderr)
        );
        a
    }

    /// This agent's device-plugin directory (`kubelet.sock` and the plugins' sockets).
    pub fn device_plugin_dir(&self) -> PathBuf {
        self.dir.path().join("device-plugins")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// (Re)start the agent process.
    pub fn spawn(&mut self) {
        let child = self
            .command(self.config.as_deref())
            .spawn()
            .expect("start tidelet");
        self.child = Some(child);
        let sock = self.root.join("tidelet.sock");
        wait_for("the agent's API socket", Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&sock)
                .ok()
                .map(|_| ())
        });
    }

    /// The agent's command line with config file `config`, its output appended to its log.
    fn command(&self, config: Option<&Path>) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(bin());
        cmd.args([
            "--root-dir",
            self.root.to_str().unwrap(),
            "run",
            "--static-pod-path",
            self.manifests.to_str().unwrap(),
        ])
        .args([
            "--node-name",
            &self.node,
            "--cgroup-root",
            &self.cgroup_root,
        ])
        .arg("--device-plugin-dir")
        .arg(self.device_plugin_dir())
        .args(
            config
                .iter()
                .flat_map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()]),
        )
        .env("TIDELET_LOG", "info,tidelet::agent=debug")
        .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        cmd
    }

    /// The pods' networks this agent attached and did not release (the test ended with its
    /// pods running, or killed the agent): an agent started once more on this root, with no
    /// manifest and the pods' processes gone, DELs every attachment from its record, so that
    /// no test leaves veths, IPAM leases or pinned namespaces on the machine. Best effort,
    /// never a panic: it runs from `drop`.
    fn release_networks(&mut self) {
        let entries = |d: &str| {
            std::fs::read_dir(self.root.join(d))
                .map(|r| {
                    r.flatten()
                        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                        .count()
                })
                .unwrap_or(0)
        };
        if entries("networks") + entries("netns") == 0 {
            return;
        }
        if let Ok(rd) = std::fs::read_dir(&self.manifests) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        // Nor the pods a control plane gave it (persisted, and retained at a broker that may
        // still run): the releasing agent gets the test's network keys only, no `mqtt:`.
        let _ = std::fs::remove_dir_all(self.root.join("remote-pods"));
        let text = self
            .config
            .as_deref()
            .and_then(|c| std::fs::read_to_string(c).ok())
            .unwrap_or_default();
        let mut release = with_disk_signals_off("");
        for l in text.lines() {
            if ["cniConfDir:", "cniBinDir:", "cniTimeout:", "podCIDR:"]
                .iter()
                .any(|k| l.starts_with(k))
            {
                release.push_str(l);
                release.push('\n');
            }
        }
        let cfg = self.dir.path().join("release.yaml");
        if std::fs::write(&cfg, release).is_err() {
            return;
        }
        let Ok(mut child) = self.command(Some(&cfg)).spawn() else {
            return;
        };
        let _ = wait_for_quiet(Duration::from_secs(20), || {
            entries("networks") + entries("netns") == 0
        });
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM the agent (a clean stop, as systemd does) and wait for it to exit.
    pub fn kill_term(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("the agent did not stop within 20 s of SIGTERM");
        }
    }

    /// SIGKILL the agent (pods must keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the agent process is still alive (it must never die on bad input).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Wait up to `timeout` for the agent to exit on its own; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let c = self.child.as_mut().expect("the agent was started");
        let status = wait_for("the agent to exit", timeout, || c.try_wait().unwrap());
        self.child = None;
        status
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The first line of the agent's log containing `needle`, waiting up to `timeout`.
    pub fn wait_log_line(&self, needle: &str, timeout: Duration) -> String {
        wait_for(&format!("{needle:?} in the agent's log"), timeout, || {
            self.agent_log()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string)
        })
    }

    /// `prepare`, one static pod `name` that sleeps, `spawn`, and wait until it runs.
    pub fn start_with_one_pod(config: Option<&str>, name: &str) -> Agent {
        let mut a = Agent::prepare(config, &[]);
        a.write(
            &format!("{name}.yaml"),
            &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: localhost/busybox:1.35\n    imagePullPolicy: Never\n    command: [\"sleep\", \"3600\"]\n"),
        );
        a.spawn();
        let full = a.full_name(name);
        a.wait_running(&full);
        a
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--root-dir")
            .arg(&self.root)
            .args(args)
            .output()
            .expect("run tidelet")
    }

    pub fn write(&self, file: &str, content: &str) {
        // Write beside and rename in, as a careful tool would (tests of partial writes write
        // directly).
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.manifests.join(file)).unwrap();
    }

    pub fn write_bytes(&self, file: &str, content: &[u8]) {
        std::fs::write(self.manifests.join(file), content).unwrap();
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.manifests.join(file)).unwrap();
    }

    pub fn full_name(&self, name: &str) -> String {
        format!("{name}-{}", self.node)
    }

    /// `tidelet get pod NAME -o json`, or None if the agent does not know it.
    pub fn pod(&self, name: &str) -> Option<Value> {
        let out = self.cli(&["get", "pod", name, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("get pod -o json gives JSON"))
    }

    pub fn pods(&self) -> Vec<Value> {
        let out = self.cli(&["get", "pods", "-o", "json"]);
        assert!(
            out.status.success(),
            "get pods: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Wait until every container of the pod runs; returns the pod JSON.
    pub fn wait_running(&self, name: &str) -> Value {
        self.wait_pod(name, "all containers running", all_running)
    }

    pub fn wait_pod(&self, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        wait_for(
            &format!("pod {name}: {what}"),
            Duration::from_secs(30),
            || self.pod(name).filter(|p| f(p)),
        )
    }

    /// Wait until pod `name`'s first container waits with `reason`; its message.
    pub fn waiting_message(&self, name: &str, reason: &str) -> String {
        let p = self.wait_pod(name, &format!("waiting with {reason}"), |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == reason
        });
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn container_status<'a>(pod: &'a Value, c: &str) -> &'a Value {
        pod["status"]["containerStatuses"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == c))
            .unwrap_or_else(|| panic!("no status for container {c} in {pod}"))
    }

    /// Host pid of a running container's init, from `describe` output's source (`get -o json`
    /// carries no pids, so ask the agent's view through `describe`).
    pub fn container_pid(&self, pod: &str, c: &str) -> i32 {
        let out = self.cli(&["describe", "pod", pod]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut in_c = false;
        for line in text.lines() {
            if line.trim_end() == format!("  {c}:") {
                in_c = true;
            } else if in_c && line.trim_start().starts_with("PID:") {
                return line.split_whitespace().last().unwrap().parse().unwrap();
            } else if in_c && line.starts_with("  ") && !line.starts_with("    ") {
                break;
            }
        }
        panic!("no PID for container {c} of {pod} in:\n{text}");
    }

    /// The agent's pid, while it runs (the agent may execute itself again at start, under
    /// the same pid: see agent/src/malloc.rs).
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Pids of supervisor processes of this agent (their command line names our root).
    pub fn supervisor_pids(&self) -> Vec<i32> {
        processes_mentioning(&format!("shim\0--pod-dir\0{}/pods/", self.root.display()))
    }

    /// Paths of this agent's cgroups on every v1 hierarchy (or v2) that still exist.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut out = vec![];
        let base = Path::new("/sys/fs/cgroup");
        let rel = self.cgroup_root.trim_start_matches('/');
        if base.join("cgroup.controllers").exists() {
            let p = base.join(rel);
            if p.exists() {
                out.push(p);
            }
        } else if let Ok(rd) = std::fs::read_dir(base) {
            for e in rd.flatten() {
                let p = e.path().join(rel);
                if p.exists() {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The cgroup directory of `rel` (under the cgroup root) in `controller`'s v1 hierarchy,
    /// or in the unified hierarchy on cgroup v2.
    pub fn controller_cgroup(&self, controller: &str, rel: &str) -> PathBuf {
        let base = Path::new("/sys/fs/cgroup");
        let root = self.cgroup_root.trim_start_matches('/');
        if base.join("cgroup.controllers").exists() {
            base.join(root).join(rel)
        } else {
            base.join(controller).join(root).join(rel)
        }
    }

    pub fn memory_cgroup(&self, rel: &str) -> PathBuf {
        self.controller_cgroup("memory", rel)
    }

    pub fn cpu_cgroup(&self, rel: &str) -> PathBuf {
        self.controller_cgroup("cpu", rel)
    }

    /// A power cut: the agent and every pod's processes SIGKILLed and the pods' cgroups
    /// removed, as after a reboot; the state directory stays. (Mounts stay too: the agent must
    /// cope with leftovers either way.)
    pub fn power_cut(&mut self) {
        self.kill9();
        self.kill_pods();
    }

    /// SIGKILL every supervisor and every process in this agent's cgroups; remove them.
    fn kill_pods(&mut self) {
        for pid in self.supervisor_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        for dir in self.cgroup_dirs() {
            kill_and_remove_cgroup(&dir);
        }
    }

    /// Remove every manifest and wait for every pod to be gone; then stop the agent.
    pub fn stop_all(&mut self) {
        for e in std::fs::read_dir(&self.manifests).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        if self.alive() {
            let _ = wait_for_quiet(Duration::from_secs(60), || {
                self.pods().is_empty() && self.supervisor_pids().is_empty()
            });
        }
        self.kill9();
    }
}

fn wait_for_quiet(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        // The log as the test left it (the release below appends to it).
        let log = std::thread::panicking().then(|| self.agent_log());
        // Best effort after a failed test: kill what this agent left, then its cgroups; then
        // the pods' networks, and what that last agent's clean-up may have left.
        self.kill_pods();
        self.release_networks();
        self.kill_pods();
        if let Some(log) = log {
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("---- agent log (last 80 lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn kill_and_remove_cgroup(dir: &Path) {
    let mut dirs = vec![];
    collect_dirs(dir, &mut dirs);
    for pid in dirs.iter().flat_map(|d| procs_of(d)) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// The pids in one cgroup directory's `cgroup.procs`.
fn procs_of(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.parse().ok()).collect())
        .unwrap_or_default()
}

/// Every pid in the cgroup directory `dir` and below.
pub fn cgroup_tree_pids(dir: &Path) -> Vec<i32> {
    let mut dirs = vec![];
    collect_dirs(dir, &mut dirs);
    dirs.iter().flat_map(|d| procs_of(d)).collect()
}

/// Pids whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&c).contains(needle) && pid != std::process::id() as i32 {
                out.push(pid);
            }
        }
    }
    out
}

pub fn all_running(p: &Value) -> bool {
    let Some(cs) = p["status"]["containerStatuses"].as_array() else {
        return false;
    };
    !cs.is_empty() && cs.iter().all(|c| c["state"]["running"].is_object())
}

/// The namespace link (`net:[4026531992]`) of a process.
pub fn ns(pid: i32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .to_string()
}

/// The parent pid of a process.
pub fn ppid(pid: i32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub fn read_trim(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// Mounts in the host's mount namespace whose mount point contains `needle`.
pub fn host_mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// The config an e2e agent runs with: the test's own, and, unless it sets `evictionHard`
/// itself, kubelet's memory threshold alone. kubelet's default disk thresholds (nodefs under
/// 10%, imagefs under 15% free) follow the machine's disk, not the test: a CI machine with a
/// fuller disk raised DiskPressure and held every test's new pods. The tests about disk
/// pressure set their thresholds themselves.
pub fn with_disk_signals_off(config: &str) -> String {
    if config.contains("evictionHard") {
        return config.to_string();
    }
    format!("evictionHard:\n  memory.available: 100Mi\n{config}")
}

/// Every `(yaml, want)`: the agent refuses to start with that config, and says `want` and the
/// file's name.
pub fn assert_configs_refused(cases: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, want) in cases {
        let (status, text) = run_with_config(dir.path(), yaml);
        assert!(!status.success(), "{yaml}: the agent must not start");
        assert!(text.contains(want), "{yaml}: want {want:?} in {text}");
        assert!(text.contains("c.yaml"), "{yaml}: the file is named: {text}");
    }
}

/// `tidelet run` with the config file `yaml` (written into `dir`), state under `dir/root`,
/// for tests of configurations the agent must refuse: returns once it exits, with its
/// exit status and its stderr and stdout together.
pub fn run_with_config(dir: &Path, yaml: &str) -> (std::process::ExitStatus, String) {
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = Command::new(bin())
        .arg("--root-dir")
        .arg(dir.join("root"))
        .args(["run", "--static-pod-path"])
        .arg(dir.join("manifests"))
        .args([
            "--cgroup-root",
            &format!("/tidelet-e2e-refused-{}", std::process::id()),
        ])
        .arg("--device-plugin-dir")
        .arg(dir.join("device-plugins"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status, text)
}

/// The kernel's OOM kills under the cgroup v1 memory cgroup `dir`: `memory.oom_control`'s
/// `oom_kill` summed over the tree (v1 counts a kill only in the victim's own cgroup).
pub fn v1_oom_kills_under(dir: &Path) -> u64 {
    let own = std::fs::read_to_string(dir.join("memory.oom_control"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    let children: u64 = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| v1_oom_kills_under(&e.path()))
        .sum();
    own + children
}

/// The host's `MemTotal` in bytes (what the agent takes as memory capacity).
pub fn mem_total() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kb * 1024
}
