//! Start-up and memory figures of tidelet (issue 2), measured the way Podman's are measured by
//! `shared/peer/bench.sh`: the same busybox image and the same Pod YAML.
//!
//! - (a) manifest written -> every container of a 2-container pod running (its own network
//!   from CNI, tidelet's built-in bridge network; and hostNetwork), and the network set-up's
//!   share (CNI ADD and what tidelet does around it, from the agent's log);
//! - (b) 20 single-container pods in one multi-document file -> all running;
//! - (c) agent RSS with those 20 pods running, and the PSS each pod adds (its supervisor, which
//!   is the infra process);
//! - (d) issue 14: what confinement costs the 2-container pod's start: hardened as every pod
//!   is by default (see `hardening`), beside the same pod opted out and privileged, and with
//!   `hostUsers: false`;
//! - (e) issue 16: the agent's RSS idle at start and again once a churn of creates, edits and
//!   deletes has ended and its pods are gone (see `churn`).
//!
//! `PARTS` (a comma list of a, b, c, d, e; all when unset) picks parts; b and c are one part
//! (c measures b's 20 pods).
//!
//! Run with `scripts/bench.sh` (it builds the release binary and runs Podman beside it), or
//! `TIDELET_BIN=target/release/tidelet cargo bench -p tidelet-e2e --bench startup`.
//! "Running" is observed through the agent's API socket, polled every millisecond.
//!
//! Without `--bench` (`cargo test -p tidelet-e2e --bench startup`, against the debug build) it
//! is a smoke run: every part once, no settling, a few seconds; what each confinement variant
//! really gave its containers is checked in both modes.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

#[path = "startup/churn.rs"]
mod churn;
#[path = "startup/hardening.rs"]
mod hardening;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidelet_e2e::Agent;

fn yaml_dir() -> Option<std::path::PathBuf> {
    let p = Path::new("/tmp/peer/yaml");
    p.join("pod2.yaml").exists().then(|| p.to_path_buf())
}

/// The peer's 2-container pod (`shared/peer/setup.sh`), used when its YAML is not on disk.
fn pod2(name: &str, host_network: bool) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  restartPolicy: Always
  hostNetwork: {host_network}
  containers:
  - name: sleeper
    image: localhost/busybox:1.35
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    env: [{{name: FOO, value: "bar"}}]
    resources:
      requests: {{memory: "32Mi", cpu: "100m"}}
      limits:   {{memory: "64Mi", cpu: "250m"}}
  - name: echoer
    image: localhost/busybox:1.35
    imagePullPolicy: Never
    command: ["sh", "-c", "echo hi; sleep 3600"]
    env: [{{name: GREETING, value: "hello"}}]
    resources:
      requests: {{memory: "16Mi", cpu: "50m"}}
      limits:   {{memory: "128Mi", cpu: "500m"}}
"#
    )
}

/// The peer's 20 pods: 50m CPU each, so that all 20 are admitted on a 2-core node (tidelet
/// admits by requests, as kubelet does).
fn pods20() -> String {
    let mut s = String::new();
    for i in 1..=20 {
        s.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i:02}}}\nspec:\n  hostNetwork: false\n  containers:\n  - name: c\n    image: localhost/busybox:1.35\n    imagePullPolicy: Never\n    command: [\"sleep\", \"3600\"]\n    resources: {{limits: {{memory: \"64Mi\", cpu: \"50m\"}}}}\n---\n"
        ));
    }
    s
}

pub(crate) fn api(root: &Path, req: &str) -> Value {
    let mut s = UnixStream::connect(root.join("tidelet.sock")).expect("agent socket");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn running_pods(root: &Path) -> usize {
    let v = api(root, r#"{"op":"listPods"}"#);
    v["pods"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| tidelet_e2e::all_running(&p["pod"]))
                .count()
        })
        .unwrap_or(0)
}

pub(crate) fn until(n: usize, root: &Path, t0: Instant) -> Duration {
    loop {
        if running_pods(root) >= n {
            return t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(60) {
            panic!(
                "pods did not start within 60 s: {}",
                api(root, r#"{"op":"listPods"}"#)
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The pause before each timed start: the kernel finishes tearing down the previous run's
/// namespaces and the new agent its start-up. None in a smoke run.
static SETTLE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

pub(crate) fn settle() {
    std::thread::sleep(*SETTLE.get().unwrap_or(&Duration::from_millis(1500)));
}

/// How long each pod's network set-up took, from the agent's log (`pod network attached`,
/// `elapsed_us`): its pin, record and CNI ADD.
fn network_setups(a: &Agent) -> Vec<Duration> {
    a.agent_log()
        .lines()
        .filter(|l| l.contains("pod network attached"))
        .filter_map(|l| {
            l.split("elapsed_us=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .map(Duration::from_micros)
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn kib(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    if !tidelet_e2e::privileged() {
        return;
    }
    let mode = tidelet_e2e::BenchMode::from_args();
    let smoke = mode.smoke;
    let runs = mode.knob("RUNS", 7, 1) as usize;
    let harden_runs = mode.knob("HARDEN_RUNS", 31, 1) as usize;
    let churn_rounds = mode.knob("CHURN_ROUNDS", 3, 1) as usize;
    let churn_pods = mode.knob("CHURN_PODS", 10, 2) as usize;
    let parts = std::env::var("PARTS").unwrap_or_default();
    let part = |p: &str| parts.trim().is_empty() || parts.split(',').any(|x| x.trim() == p);
    if smoke {
        println!("smoke run (no --bench): every part once, no settling; the figures mean nothing");
        SETTLE.set(Duration::ZERO).unwrap();
    }
    let bin = tidelet_e2e::bin();
    println!(
        "tidelet binary: {} ({} bytes)",
        bin.display(),
        std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0)
    );
    let (p2, p2h, p20) = match yaml_dir() {
        Some(d) => {
            println!("Pod YAML: the peer's, from {}", d.display());
            let r = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
            (r("pod2.yaml"), r("pod2-hostnet.yaml"), r("all20.yaml"))
        }
        None => {
            println!("Pod YAML: built in (same content as shared/peer/setup.sh writes)");
            (pod2("bench2", false), pod2("bench2h", true), pods20())
        }
    };

    for (label, yaml) in [
        ("2-container pod", &p2),
        ("2-container pod, hostNetwork", &p2h),
    ] {
        if !part("a") {
            break;
        }
        let mut times = vec![];
        let mut net = vec![];
        for _ in 0..runs {
            // A fresh agent each run; dropping it kills the pod (no 30 s grace to wait out).
            // Let the kernel finish tearing down the previous run's namespaces, and the new
            // agent its start-up, before the clock starts (hyperfine's --prepare does the
            // same for Podman's runs).
            let a = Agent::start();
            settle();
            let t0 = Instant::now();
            std::fs::write(a.manifests.join("pod.yaml"), yaml).unwrap();
            times.push(until(1, &a.root, t0));
            net.extend(network_setups(&a));
        }
        println!("(a) {label}: manifest written -> both containers running: median {} (min {}, max {}, n={runs})",
            ms(median(times.clone())), ms(*times.iter().min().unwrap()), ms(*times.iter().max().unwrap()));
        if !net.is_empty() {
            // The built-in bridge network (the harness gives each agent an empty cniConfDir).
            println!("(a) {label}: of which the network's set-up (pin, record, CNI ADD of bridge+loopback): median {} (min {}, max {}, n={})",
                ms(median(net.clone())), ms(*net.iter().min().unwrap()), ms(*net.iter().max().unwrap()), net.len());
        }
    }

    if part("b") || part("c") {
        twenty_pods(&p20, runs, smoke);
    }
    if part("d") {
        hardening::run(&p2, harden_runs);
    }
    if part("e") {
        churn::run(churn_rounds, churn_pods, smoke);
    }
}

/// (b) 20 pods started at once, and (c) what memory they and the agent hold.
fn twenty_pods(p20: &str, runs: usize, smoke: bool) {
    let mut times = vec![];
    let mut last = None;
    for i in 0..runs.min(5) {
        let a = Agent::start();
        settle();
        let t0 = Instant::now();
        std::fs::write(a.manifests.join("all20.yaml"), p20).unwrap();
        times.push(until(20, &a.root, t0));
        let net = network_setups(&a);
        assert_eq!(net.len(), 20, "every pod got its network");
        if i == 0 {
            println!(
                "(b) the 20 network set-ups (CNI ADD, run in parallel): median {}, max {}",
                ms(median(net.clone())),
                ms(*net.iter().max().unwrap())
            );
        }
        if i == runs.min(5) - 1 {
            last = Some(a);
        }
    }
    println!(
        "(b) 20 pods (one multi-document file) -> all running: median {} (min {}, max {}, n={})",
        ms(median(times.clone())),
        ms(*times.iter().min().unwrap()),
        ms(*times.iter().max().unwrap()),
        times.len()
    );

    let a = last.unwrap();
    std::thread::sleep(if smoke {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(3)
    });
    let agent = churn::Mem::of(churn::agent_pid(&a));
    let sups = a.supervisor_pids();
    let mut pss = 0;
    let mut rss = 0;
    for p in &sups {
        pss += kib(&format!("/proc/{p}/smaps_rollup"), "Pss:");
        rss += kib(&format!("/proc/{p}/smaps_rollup"), "Rss:");
    }
    // Everything in the pods' cgroups: supervisors and the containers' processes (what
    // Podman's figure counts as conmon + catatonit + container processes).
    let all = tidelet_e2e::cgroup_tree_pids(&a.memory_cgroup("kubepods"));
    let (mut all_pss, mut all_rss) = (0, 0);
    for p in &all {
        all_pss += kib(&format!("/proc/{p}/smaps_rollup"), "Pss:");
        all_rss += kib(&format!("/proc/{p}/smaps_rollup"), "Rss:");
    }
    println!("(c) agent RSS with 20 pods running: {agent}");
    println!("(c) per pod, all its processes (supervisor + container): PSS {} KiB, RSS {} KiB ({} processes in 20 pods)",
        all_pss / 20, all_rss / 20, all.len());
    println!(
        "(c) per pod, its supervisor (infra process): PSS {} KiB, RSS {} KiB ({} supervisors)",
        pss / sups.len().max(1) as u64,
        rss / sups.len().max(1) as u64,
        sups.len()
    );
    // Where a supervisor's pages are (one of them, by mapping), for the record.
    if let Some(p) = sups.first() {
        println!("(c) one supervisor's mappings (KiB; Pss, Private_Dirty):");
        for line in supervisor_mappings(*p) {
            println!("(c)   {line}");
        }
    }
    drop(a);
}

/// A supervisor's `/proc/PID/smaps` summed by what is mapped: `name perms: Pss, Private_Dirty`.
fn supervisor_mappings(pid: i32) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out: Vec<(String, u64, u64)> = vec![];
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let perms = words.next().unwrap_or("");
            let name = words.nth(3).unwrap_or("[anon]");
            let name = name.rsplit('/').next().unwrap_or(name);
            out.push((format!("{name} {perms}"), 0, 0));
        } else if let (Some(last), Some(v)) = (out.last_mut(), words.next()) {
            let v: u64 = v.parse().unwrap_or(0);
            match first {
                "Pss:" => last.1 += v,
                "Private_Dirty:" => last.2 += v,
                _ => {}
            }
        }
    }
    let mut merged: Vec<(String, u64, u64)> = vec![];
    for (name, pss, dirty) in out {
        match merged.iter_mut().find(|m| m.0 == name) {
            Some(m) => {
                m.1 += pss;
                m.2 += dirty;
            }
            None => merged.push((name, pss, dirty)),
        }
    }
    merged
        .into_iter()
        .filter(|m| m.1 > 0)
        .map(|(name, pss, dirty)| format!("{name}: {pss}, {dirty}"))
        .collect()
}
